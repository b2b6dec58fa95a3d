"""Shared fixtures: composed configs on a per-session cache, the tiny random model, the demo dataset."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest_llm import *  # noqa: F401,F403  (tiny model fixtures)
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from t2s.config import CONF_DIR, register_configs

SHARED_DATA = Path(os.environ.get("T2S_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("T2S_DATA", str(SHARED_DATA))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

register_configs()


def spider_dev_available() -> bool:
    return (SHARED_DATA / "spider" / "dev.json").is_file()


requires_spider = pytest.mark.skipif(
    not spider_dev_available(), reason=f"Spider dev not found under {SHARED_DATA} (set T2S_DATA to the shared data root)"
)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session (tiny model, demo databases, schemas, LLM responses)."""
    return tmp_path_factory.mktemp("t2s-cache")


def compose_config(overrides: list[str] | None = None, *, cache_dir: Path, output_root: Path | None = None) -> DictConfig:
    """Compose conf/config.yaml like `t2s run` would, with the tiny LLM and the given cache by default."""
    base = [f"paths.cache_dir={cache_dir}", "llm=tiny", "run.progress=false"]
    if output_root is not None:
        base.append(f"paths.output_root={output_root}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*base, *(overrides or [])])


@pytest.fixture
def make_cfg(session_cache: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(overrides: list[str] | None = None, **kw: Any) -> DictConfig:
        return compose_config(overrides, cache_dir=kw.get("cache_dir", session_cache), output_root=tmp_path / "outputs")

    return _make
