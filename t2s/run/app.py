"""The Hydra app behind `t2s run` (also `python -m t2s.run`): compose the config, call `t2s.run.runner.run`."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from t2s.config import CONF_DIR, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> Any:
    """One job: run the pipeline and return its execution accuracy (what Hydra sweepers optimize)."""
    from t2s.run.runner import run

    return run(cfg).get("ex")

