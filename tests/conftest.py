"""Shared fixtures: composed configs on a per-session cache, the tiny random model, the demo dataset."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest_llm import *  # noqa: F401,F403  (tiny model fixtures)
from omegaconf import DictConfig

from t2s.config import compose_config as t2s_compose
from t2s.config import register_configs
from t2s.prompts import load_prompt
from t2s.testing import run_if

SHARED_DATA = Path(os.environ.get("T2S_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("T2S_DATA", str(SHARED_DATA))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

register_configs()


#: the one skip for tests that read Spider (see `t2s.testing.run_if` for packages, BIRD, GPUs, model wheels)
requires_spider = run_if(spider=True)
requires_bird = run_if(bird=True)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session (tiny model, demo databases, schemas, LLM responses)."""
    return tmp_path_factory.mktemp("t2s-cache")


def compose_config(overrides: list[str] | None = None, *, cache_dir: Path, output_root: Path | None = None) -> DictConfig:
    """Compose conf/config.yaml like `t2s run` would, with the tiny LLM and the given cache by default."""
    base = [f"paths.cache_dir={cache_dir}", "llm=tiny", "embedder=hashing", "run.progress=false"]
    if output_root is not None:
        base.append(f"paths.output_root={output_root}")
    return t2s_compose([*base, *(overrides or [])])


@pytest.fixture
def make_cfg(session_cache: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(overrides: list[str] | None = None, **kw: Any) -> DictConfig:
        return compose_config(overrides, cache_dir=kw.get("cache_dir", session_cache), output_root=tmp_path / "outputs")

    return _make


def step_instruction(action: str) -> str:
    """A scripted-LLM `when` regex for the instruction `mcts_step_v1` gives for `action`, taken from the template (not
    written in a test), so MCTS rules match the step they answer whatever its wording."""
    return "^" + re.escape(load_prompt("mcts_step_v1").block(action, [{}])) + "$"
