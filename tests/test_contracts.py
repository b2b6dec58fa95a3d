"""One contract per stage kind; every plugin of that kind (every YAML in conf/<stage>/) runs through it.

The contract: a stage mutates only the task fields its kind owns, processes a whole batch, keeps the
types the next stages read, and charges what it does to the task (so traces add up).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import compose_config

from t2s.db.types import SchemaView
from t2s.run.pipeline import Pipeline, build_stage
from t2s.registry import options
from t2s.run.runner import load_dataset, make_env
from t2s.stages import STAGE_GROUPS
from t2s.types import Candidate, Task

OWNED = {
    "value_retriever": {"values"}, "example_retriever": {"examples"}, "schema_linker": {"schemas"},
    "prober": {"findings"}, "generator": {"candidates"}, "fixer": {"candidates"}, "corrector": {"candidates"},
    "verifier": {"candidates"}, "selector": {"final_sql"},
}
FIELDS = ("values", "examples", "schemas", "findings", "candidates", "final_sql")
BAD_SQL = "SELECT no_such_column FROM no_such_table"


@pytest.fixture(scope="module")
def world(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = compose_config(["dataset.limit=4"], cache_dir=session_cache)
    data = load_dataset(cfg)
    run_dir = tmp_path_factory.mktemp("contract-run")
    env = make_env(cfg, data.examples, run_dir)
    preds = run_dir / "preds.jsonl"
    preds.write_text("".join(json.dumps({"qid": e.qid, "sql": e.gold_sql}) + "\n" for e in data.examples))
    yield cfg, data.examples, env, preds
    env.close()


def _tasks(examples: list[Any], group: str) -> list[Task]:
    tasks = [Task(example=ex) for ex in examples]
    if STAGE_GROUPS.index(group) > STAGE_GROUPS.index("generator"):
        for t in tasks:
            t.candidates = [Candidate(sql=t.example.gold_sql or "", origin="generator/test"),
                            Candidate(sql=BAD_SQL, origin="generator/test"),
                            Candidate(sql=t.example.gold_sql or "", origin="generator/test")]
    return tasks


def _check_values(t: Task) -> None:
    assert all({"table", "column", "value"} <= set(v) for v in t.values)


def _check_examples(t: Task) -> None:
    assert all({"question", "sql"} <= set(e) for e in t.examples)


def _check_schemas(t: Task, env: Any) -> None:
    full = {tb.name.lower(): {c.name.lower() for c in tb.columns} for tb in env.schema(t.example).tables}
    for view in t.schemas:
        assert isinstance(view, SchemaView) and view.text
        for tb in view.schema.tables:
            assert tb.name.lower() in full
            assert {c.name.lower() for c in tb.columns} <= full[tb.name.lower()]


def _check_findings(t: Task) -> None:
    assert all("sql" in f for f in t.findings)


def _check_candidates(t: Task) -> None:
    assert all(isinstance(c, Candidate) and isinstance(c.sql, str) and c.origin for c in t.candidates)


def _check_selector(t: Task) -> None:
    assert isinstance(t.final_sql, str)
    assert t.final_sql in {c.sql for c in t.candidates} | {""}


CHECKS: dict[str, Callable[..., None]] = {
    "value_retriever": lambda t, env: _check_values(t),
    "example_retriever": lambda t, env: _check_examples(t),
    "schema_linker": _check_schemas,
    "prober": lambda t, env: _check_findings(t),
    "generator": lambda t, env: _check_candidates(t),
    "fixer": lambda t, env: _check_candidates(t),
    "corrector": lambda t, env: _check_candidates(t),
    "verifier": lambda t, env: _check_candidates(t),
    "selector": lambda t, env: _check_selector(t),
}


@pytest.mark.parametrize("group,option", [(g, o.name) for g in STAGE_GROUPS for o in options(g)])
def test_stage_contract(group: str, option: str, world: Any) -> None:
    cfg, examples, env, preds = world
    extra = [f"generator.path={preds}"] if (group, option) == ("generator", "from_file") else []
    cfg = compose_config([f"{group}={option}", *extra], cache_dir=Path(cfg.paths.cache_dir))
    stage = build_stage(group, cfg[group])
    pipeline = Pipeline([stage])
    pipeline.setup(env)
    tasks = _tasks(examples, group)
    before = [copy.deepcopy({f: getattr(t, f) for f in FIELDS}) for t in tasks]
    pipeline.run_batch(tasks)
    for t, b in zip(tasks, before):
        for f in FIELDS:
            if f not in OWNED[group]:
                assert getattr(t, f) == b[f], f"{group}/{option} changed task.{f}, which it does not own"
        CHECKS[group](t, env)
        assert len(t.trace) == 1
        ev = t.trace[0]
        assert ev.stage == group and ev.plugin == option and ev.seconds >= 0
        assert ev.sql_before == [c.sql for c in b["candidates"]]
        if group == "selector":
            assert ev.sql_after == [t.final_sql]
        else:
            assert ev.sql_after == [c.sql for c in t.candidates]
        if ev.llm_calls:
            assert ev.prompt_tokens > 0
    if option == "none":
        assert all(t.trace[0].change == "unchanged" for t in tasks)
    if group == "generator" and option != "none":
        assert all(t.candidates for t in tasks), f"generator/{option} produced no candidate for some question"
        assert all(c.origin == f"generator/{option}" for t in tasks for c in t.candidates)
