"""Issue 20, item 7 (config values) and issue 22, item 3 (one config check).

A value of the wrong type or out of range, in a root section (`eval.timeout`) or in any `_target_` node
(`llm.batch_size`, `dataset.limit`, a stage option), is refused by `t2s run` before the dataset loads or any model
is built: exit status 1, one line naming the key and the value and the rule, no traceback, no run directory. The
check is one pass over the whole config, run once per run; the stage builder, the loaders and the LLM pool use its
result.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import get_class
from omegaconf import open_dict

from t2s.cli import main as cli_main
from t2s.data.base import Dataset
from t2s.llm.pool import LLMPool
from t2s.registry import groups, options
from t2s.run import checks
from t2s.run.checks import ConfigError, check_arguments, check_config, config_problems
from t2s.run.pipeline import Pipeline
from t2s.run.runner import run

#: (override, what the message shows of key and value, the rule it quotes): the issue's list first, then more of
#: every kind of node (root sections, dataset, LLM, embedder, stage options)
BAD_VALUES = [
    ("dataset.limit=abc", "dataset.limit='abc'", "expected an integer or null"),
    ("llm.batch_size=abc", "llm.batch_size='abc'", "expected an integer"),
    ("llm.batch_size=0", "llm.batch_size=0", "must be >= 1"),
    ("eval.timeout=-1", "eval.timeout=-1", "must be > 0"),
    ("eval.workers=-1", "eval.workers=-1", "must be >= 0"),
    ("db.max_memory_mb=-5", "db.max_memory_mb=-5", "must be >= 0"),
    ("dataset.limit=1.5", "dataset.limit=1.5", "expected an integer or null"),
    ("dataset.sample=-3", "dataset.sample=-3", "must be >= 0"),
    ("llm.num_threads=yes", "llm.num_threads='yes'", "expected an integer or null"),
    ("embedder.dim=abc", "embedder.dim='abc'", "expected an integer"),
    ("generator.temperature=hot", "generator.temperature='hot'", "expected a number"),
    ("generator.use_evidence=yes", "generator.use_evidence='yes'", "expected true or false"),
    ("generator.n=0", "generator.n=0", "must be >= 1"),
    ("generator.top_p=1.5", "generator.top_p=1.5", "must be in (0, 1]"),
    ("run.batch_size=0", "run.batch_size=0", "must be >= 1"),
    ("run.batch_size=abc", "run.batch_size=abc", "could not be converted to Integer"),
    ("db.timeout=0", "db.timeout=0", "must be > 0"),
    ("eval.timeout=abc", "eval.timeout=abc", "could not be converted to Float"),
]


@pytest.fixture()
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T2S_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    # in-process Hydra apps of earlier tests leave logging handlers on streams pytest has closed since
    import logging

    for handler in list(logging.root.handlers):
        if getattr(getattr(handler, "stream", None), "closed", False):
            logging.root.removeHandler(handler)


@pytest.fixture()
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What a run loaded, in order: "dataset" (Dataset.load), "llm" (LLMPool.get), "stages" (Pipeline.setup)."""
    seen: list[str] = []

    def spy(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen.append(name)
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(Dataset, "load", spy("dataset", Dataset.load))
    monkeypatch.setattr(LLMPool, "get", spy("llm", LLMPool.get))
    monkeypatch.setattr(Pipeline, "setup", spy("stages", Pipeline.setup))
    yield seen


def _run_cli(overrides: list[str], out: Path, cache: Path) -> int:
    base = ["llm=tiny", "embedder=hashing", f"paths.output_root={out}", f"paths.cache_dir={cache}",
            "run.progress=false"]
    if not any(o.startswith("dataset.limit=") for o in overrides):
        base.append("dataset.limit=1")
    return cli_main(["run", *base, *overrides])


@pytest.mark.parametrize("override, shown, rule", BAD_VALUES)
def test_a_bad_value_is_refused_in_one_line_before_anything_loads(override: str, shown: str, rule: str,
                                                                  tmp_path: Path, session_cache: Path,
                                                                  no_debug: None, loads: list[str],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    rc = _run_cli([override], out, session_cache)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1, err
    assert len(lines) == 1, err
    assert lines[0].startswith("t2s run: error:") and shown in lines[0] and rule in lines[0], err
    assert "Traceback" not in err and 'File "' not in err and "may be a bug" not in err
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())
    assert loads == [], f"loaded {loads} before refusing {override}"


def test_the_spies_see_what_a_good_run_loads(tmp_path: Path, session_cache: Path, no_debug: None,
                                             loads: list[str]) -> None:
    # the control for the test above: the same command with good values loads the dataset, then the stages and LLMs
    assert _run_cli([], tmp_path / "outputs", session_cache) == 0
    assert loads[0] == "dataset" and "stages" in loads and "llm" in loads


def test_every_bad_value_is_reported_at_once(tmp_path: Path, session_cache: Path, no_debug: None,
                                             loads: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc = _run_cli(["dataset.limit=abc", "llm.batch_size=0", "eval.workers=-1", "+generator.temprature=1"],
                  tmp_path / "outputs", session_cache)
    err = capsys.readouterr().err
    assert rc == 1 and "4 problem(s)" in err and loads == []
    for text in ("dataset.limit='abc'", "llm.batch_size=0", "eval.workers=-1", "temprature"):
        assert text in err
    assert "conf/dataset/demo.yaml" in err and "conf/llm/tiny.yaml" in err and "t2s/config.py" in err


def test_debug_shows_the_traceback_of_a_bad_value(tmp_path: Path, session_cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T2S_DEBUG", "1")
    with pytest.raises(ConfigError, match=r"eval\.workers=-1"):
        _run_cli(["eval.workers=-1"], tmp_path / "outputs", session_cache)


# ---------------------------------------------------------------------- the check itself


def test_types_are_strict_and_null_is_not_range_checked() -> None:
    assert checks.value_problem("limit", None, int | None) is None
    assert checks.value_problem("limit", 0, int | None) is None
    assert "expected an integer" in str(checks.value_problem("limit", True, int | None))
    assert "expected an integer" in str(checks.value_problem("limit", "5", int | None))
    assert checks.value_problem("temperature", 1, float) is None  # an integer is a number
    assert "expected true or false" in str(checks.value_problem("flag", 1, bool))
    assert checks.value_problem("model", 3, str) is None  # strings, paths and classes are left to the constructor
    assert checks.value_problem("mode", "b", typing.Literal["a", "b"]) is None
    assert "one of 'a', 'b'" in str(checks.value_problem("mode", "c", typing.Literal["a", "b"]))
    assert "must be > 0" in str(checks.value_problem("timeout", float("nan"), float))


def test_a_config_is_checked_once_per_run(make_cfg: Callable[..., Any], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    one_pass: list[str] = []
    original = checks.bind
    monkeypatch.setattr(checks, "bind", lambda node: one_pass.append(str(node.get("_target_"))) or original(node))
    config_problems(make_cfg(["dataset.limit=1"]))
    passes: list[int] = []
    original_problems = checks.config_problems
    monkeypatch.setattr(checks, "config_problems", lambda *a, **k: passes.append(1) or original_problems(*a, **k))
    in_run = len(one_pass)
    one_pass.clear()
    run(make_cfg(["dataset.limit=1"]), run_dir=tmp_path / "run")
    # one pass: no node is bound again by build_pipeline, the stage builder, the loaders, the logger or the pool
    assert passes == [1]
    assert len(one_pass) == in_run and "t2s.llm.hf.HFLLM" in one_pass


def test_a_node_changed_after_the_check_is_checked_again(make_cfg: Callable[..., Any]) -> None:
    cfg = make_cfg(["dataset.limit=1"])
    check_config(cfg)
    check_arguments("dataset", cfg.dataset)  # unchanged: nothing to do
    with open_dict(cfg):
        cfg.dataset.limit = "abc"
    with pytest.raises(ConfigError, match=r"dataset\.limit='abc'"):
        check_arguments("dataset", cfg.dataset)
    with pytest.raises(ConfigError, match=r"dataset\.limit='abc'"):
        check_config(cfg)


def test_the_llm_pool_checks_a_config_of_its_own(tmp_path: Path) -> None:
    pool = LLMPool(configs={"generator": {"_target_": "t2s.llm.hf.HFLLM", "model": "tiny", "cache_dir": str(tmp_path),
                                          "batch_size": 0}}, cache_path=None)
    with pytest.raises(ValueError, match=r"llms\.generator.*batch_size=0 must be >= 1"):
        pool.get("generator")


def _annotated_classes() -> list[tuple[str, str]]:
    """(group/option, _target_) of every option of every group whose node has a `_target_`."""
    out = []
    for group in groups():
        if group == "experiment":
            continue
        for opt in options(group):
            if opt.target:
                out.append((f"{group}/{opt.name}", opt.target))
    return out


@pytest.mark.parametrize("option, target", _annotated_classes())
def test_every_annotation_of_every_option_is_read(option: str, target: str) -> None:
    # an annotation the check cannot evaluate (a name imported only under TYPE_CHECKING) would leave its key
    # silently unchecked: every annotated constructor parameter of every option's class must be read
    cls = get_class(target)
    params = inspect.signature(cls.__init__).parameters
    annotated = {n for n, p in params.items() if n != "self" and p.annotation is not inspect.Parameter.empty
                 and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    assert annotated <= set(checks._hints(cls)), f"{option}: unread annotations {annotated - set(checks._hints(cls))}"



def test_every_rule_names_a_key_that_exists_and_the_defaults_keep_them(make_cfg: Callable[..., Any]) -> None:
    # a rule whose name matches no parameter would check nothing (a typo in RULES)
    from t2s.config import T2SConfig

    names = {n for _, target in _annotated_classes() for n in checks._hints(get_class(target))}
    for ann in typing.get_type_hints(T2SConfig).values():
        if isinstance(ann, type) and hasattr(ann, "__dataclass_fields__"):
            names |= set(typing.get_type_hints(ann))
    assert set(checks.RULES) - names == set()
    assert checks.root_problems(make_cfg()) == []


@pytest.mark.parametrize("override, shown", [("eval.timeout=-1", "eval.timeout=-1.0 must be > 0"),
                                             ("eval.workers=-1", "eval.workers=-1 must be >= 0")])
def test_t2s_eval_refuses_a_bad_eval_value_before_reading_the_predictions(override: str, shown: str, tmp_path: Path,
                                                                         no_debug: None, loads: list[str],
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    preds = tmp_path / "p.sql"
    preds.write_text("SELECT 1\n")
    rc = cli_main(["eval", f"predictions={preds}", override, "dataset.limit=1", f"out={tmp_path / 'eval'}"])
    err = capsys.readouterr().err
    assert rc == 1 and shown in err and "SQLExecutor" not in err and "Traceback" not in err, err
    assert loads == [] and not (tmp_path / "eval").exists()
