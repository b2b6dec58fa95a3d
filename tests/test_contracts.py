"""One contract per stage kind (`t2s.testing.stage_contract`); every option of every stage group runs through it.

The contract: a stage writes only the task fields its kind declares (`Stage.writes`), processes a whole batch, keeps
the payload types the next stages read, and charges every model call it makes (calls made == calls charged).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import compose_config

from t2s.data.base import load_dataset
from t2s.registry import options
from t2s.run.pipeline import build_stage
from t2s.run.runner import make_env
from t2s.stages import STAGE_GROUPS
from t2s.testing import StageContractSuite, option_overrides, stage_contract


@pytest.fixture(scope="module")
def world(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = compose_config(["dataset.limit=4"], cache_dir=session_cache)
    data = load_dataset(cfg)
    run_dir = tmp_path_factory.mktemp("contract-run")
    env = make_env(cfg, data.examples, run_dir)
    preds = run_dir / "preds.jsonl"
    preds.write_text("".join(json.dumps({"qid": e.qid, "sql": e.gold_sql}) + "\n" for e in data.examples))
    yield cfg, data.examples, env, {"preds": str(preds)}
    env.close()


def _stage(group: str, option: str, world: Any) -> Any:
    cfg, _, _, files = world
    extra = option_overrides(group, option, **files)
    cfg = compose_config([f"{group}={option}", *extra], cache_dir=Path(cfg.paths.cache_dir))
    return build_stage(group, cfg[group], option)


@pytest.mark.parametrize("group,option", [(g, o.name) for g in STAGE_GROUPS for o in options(g)])
def test_stage_contract(group: str, option: str, world: Any) -> None:
    _, examples, env, _ = world
    stage_contract(_stage(group, option, world), env, examples)


class TestZeroShotThroughTheSuite(StageContractSuite):
    """The importable suite, as a plugin author outside t2s would use it."""

    @pytest.fixture
    def contract_case(self, world: Any) -> Any:
        _, examples, env, _ = world
        return _stage("generator", "zero_shot", world), env, examples[:2]


def test_a_stage_that_calls_the_model_behind_envs_back_breaks_the_contract(world: Any) -> None:
    from t2s.llm.base import LLMRequest
    from t2s.stages import Generator
    from t2s.types import Candidate, Task

    class Sneaky(Generator):
        def run(self, tasks: list[Task]) -> None:
            out = self.env.llm("generator").generate([LLMRequest(prompt="x") for _ in tasks])
            for t, r in zip(tasks, out):
                t.candidates.append(Candidate(sql=r.text, origin=self.origin))

    stage = Sneaky()
    stage.name = "sneaky"
    _, examples, env, _ = world
    with pytest.raises(AssertionError, match="made 2 model call.*charged 0"):
        stage_contract(stage, env, examples[:2])


def test_a_stage_writing_a_field_its_kind_does_not_own_breaks_the_contract(world: Any) -> None:
    from t2s.stages import Selector
    from t2s.types import FewShot, Task

    class Greedy(Selector):
        def run(self, tasks: list[Task]) -> None:
            for t in tasks:
                t.final_sql = t.candidates[0].sql
                t.examples.append(FewShot(question="q", sql="SELECT 1"))

    stage = Greedy()
    stage.name = "greedy"
    _, examples, env, _ = world
    with pytest.raises(AssertionError, match="changed task.examples"):
        stage_contract(stage, env, examples[:1])
