"""The Hydra app behind `t2s run` (also `python -m t2s.run`): compose the config, call `t2s.run.runner.run`.

Around the call: secrets given on the command line reach their plugins through the environment
(`t2s.track.secrets.apply_secret_overrides`), and a job that fails before its first question removes the
run directory Hydra made for it (`discard_unused_run_dir`), so failed attempts leave no empty directories.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from t2s.config import CONF_DIR, register_configs
from t2s.run.store import hold_if_unused

register_configs()

#: what a run directory holds before its first question finishes (anything else, e.g. `previous-*/`, is kept)
_UNUSED_ENTRIES = {".hydra", ".lock", ".lock.lease", "run.json", "config.yaml", "wandb"}


def discard_unused_run_dir(run_dir: str | Path) -> bool:
    """Remove `run_dir` when it holds no result: no non-empty `predictions.jsonl`, nothing but Hydra's files,
    `run.json`, `config.yaml`, logs and an offline `wandb/` folder, and no other process holding its lock (`flock`, or
    the lease of `paths.shared_fs=true`: `t2s.run.store.RunDirLock`).
    Returns whether it was removed."""
    d = Path(run_dir)
    if not d.is_dir():
        return False
    for entry in d.iterdir():
        if entry.name in _UNUSED_ENTRIES or (entry.suffix == ".log" and entry.is_file()):
            continue
        if entry.name in ("predictions.jsonl", "traces.jsonl") and entry.stat().st_size == 0:
            continue
        return False
    lock = hold_if_unused(d)
    if lock is None:
        return False  # another t2s process is using it (on this machine, or holding its lease on another)
    try:
        shutil.rmtree(d, ignore_errors=True)
    finally:
        lock.release()
    return True


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> Any:
    """One job: run the pipeline and return its execution accuracy (what Hydra sweepers optimize)."""
    from hydra.core.hydra_config import HydraConfig

    from t2s.run.runner import run
    from t2s.track.secrets import apply_secret_overrides

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        apply_secret_overrides(cfg)
        return run(cfg).get("ex")
    except BaseException:
        discard_unused_run_dir(run_dir)
        raise
