"""t2s: a research framework for text-to-SQL.

The Python API does what `t2s run` and `t2s eval` do, for notebooks and scripts:

    from t2s import compose, run_pipeline, evaluate

    cfg = compose(["llm=tiny", "dataset.limit=2"])      # conf/config.yaml + overrides, as `t2s run` composes them
    metrics = run_pipeline(cfg, "outputs/notebook/tiny")   # resumes, or re-reports a finished run, like `t2s run`
    print(metrics["ex"], metrics["scored"])
    scored = evaluate(cfg, "preds.sql", "outputs/notebook/eval")   # any system's predictions, as `t2s eval`

`run_pipeline` and `evaluate` also take the overrides list itself in place of a composed config. (`run` is not a
name here: `t2s.run` is the package of the run machinery.) Their modules are imported on first use, so `import t2s`
loads nothing heavy.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["compose", "run_pipeline", "evaluate", "__version__"]


def _checkout_plugins() -> None:
    """Make `t2s_plugins` importable in a source checkout that was not pip-installed (the GPU recipe runs one so):
    the wheel and an editable install map the folder `plugins/` to the package `t2s_plugins` (setup.py); without
    an install, the name is bound here to that folder. Nothing of `plugins/` but its empty `__init__.py` runs."""
    checkout = Path(__file__).resolve().parents[1]
    init = checkout / "plugins" / "__init__.py"
    if "t2s_plugins" in sys.modules or not init.is_file() or not (checkout / "pyproject.toml").is_file():
        return
    if importlib.util.find_spec("t2s_plugins") is not None:
        return
    spec = importlib.util.spec_from_file_location("t2s_plugins", init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["t2s_plugins"] = module
    spec.loader.exec_module(module)


_checkout_plugins()


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("t2s")
        except PackageNotFoundError:
            return "0+unknown"
    raise AttributeError(f"module 't2s' has no attribute {name!r}")


def compose(overrides: list[str] | tuple[str, ...] | None = None) -> DictConfig:
    """The run config `t2s run <overrides>` would use (`conf/config.yaml` composed with `overrides`)."""
    from t2s.config import compose_config

    return compose_config(list(overrides or []))


def _config(cfg: DictConfig | list[str] | tuple[str, ...]) -> DictConfig:
    if isinstance(cfg, (list, tuple)):
        return compose(cfg)
    return cfg


def run_pipeline(cfg: DictConfig | list[str] | tuple[str, ...], run_dir: str | Path) -> dict[str, Any]:
    """Run the configured pipeline into `run_dir` and return its metrics (the contents of `metrics.json`).

    The directory behaves as `t2s run`'s: a second call resumes an interrupted run or re-reports a finished one, and
    a directory holding results of another config is refused. Raises `t2s.run.store.PipelineErrorsError` after
    writing the results when some question failed on a pipeline error, unless `run.allow_errors=true`.
    """
    from t2s.run.runner import run

    return run(_config(cfg), run_dir=run_dir)


def evaluate(cfg: DictConfig | list[str] | tuple[str, ...], predictions: str | Path, out_dir: str | Path, *,
             fmt: str = "auto") -> dict[str, Any]:
    """Score a predictions file (Spider one-SQL-per-line, JSONL keyed by qid, or BIRD's JSON) on the config's
    dataset with its `eval` settings; writes predictions.jsonl, metrics.json and report.md to `out_dir`."""
    from t2s.eval.evaluate import evaluate as evaluate_file

    return evaluate_file(_config(cfg), predictions, out_dir, fmt=fmt)
