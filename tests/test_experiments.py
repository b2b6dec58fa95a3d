"""Every experiment file in experiments/ composes (as `experiment=<name>`), resolves and says what it reproduces."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from t2s.config import CONF_DIR, PROJECT_ROOT, register_configs
from t2s.run.pipeline import check_arguments
from t2s.stages import STAGE_GROUPS

EXPERIMENTS = sorted((PROJECT_ROOT / "experiments").glob("*.yaml"))


def test_experiments_are_on_the_search_path() -> None:
    assert EXPERIMENTS, "experiments/ holds no experiment files"
    assert (CONF_DIR / "experiment").resolve() == (PROJECT_ROOT / "experiments").resolve()


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_composes(path: Path, tmp_path: Path) -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={path.stem}", f"paths.cache_dir={tmp_path}"])
        plain = compose(config_name="config", overrides=[f"paths.cache_dir={tmp_path}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    for group in STAGE_GROUPS:
        if cfg.get(group) is not None:
            check_arguments(group, cfg[group])
    check_arguments("dataset", cfg.dataset)
    # an LLM given an adapter must be on a backend that loads adapters (llama.cpp refuses at construction)
    llms = {"llm": cfg.llm, **{f"llms.{k}": v for k, v in (cfg.get("llms") or {}).items()}}
    for key, llm in llms.items():
        if isinstance(llm, DictConfig) and llm.get("adapter") is not None:
            assert get_class(llm._target_).supports_adapters, f"{path.name}: {key} has an adapter on {llm._target_}"
    assert cfg.notes and cfg.notes != plain.notes, f"{path.name}: set `notes` (recorded with every run)"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_file_documents_itself(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0] == "# @package _global_", f"{path.name}: first line must be `# @package _global_`"
    header = [ln for ln in lines[1:] if ln.startswith("#")]
    text = " ".join(header)
    assert len(header) >= 2 and "Expected cost" in text, f"{path.name}: top comment must say what it reproduces and its cost"
    assert "COST_" not in text, f"{path.name}: fill in the measured cost"


def test_spider_experiment_switches_the_dataset(tmp_path: Path) -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=zero_shot_spider_dev", "dataset.limit=20",
                                                       f"paths.cache_dir={tmp_path}"])
    assert cfg.dataset.name == "spider_dev" and cfg.dataset.limit == 20
    assert cfg.generator._target_.endswith("ZeroShotGenerator")
