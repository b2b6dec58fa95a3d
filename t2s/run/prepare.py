"""`t2s prepare [overrides]`: build every artifact the configured pipeline needs, for every database of the dataset,
ahead of time (profiles, value indexes, field indexes, example stores), with a progress bar. A second call builds
nothing: artifacts are keyed by content hash and parameters (`t2s.artifacts`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from tqdm.auto import tqdm

from t2s.artifacts import offline_cost
from t2s.data.base import load_dataset
from t2s.run.checks import check_config, option_choices
from t2s.run.pipeline import build_stages
from t2s.run.runner import make_env


def prepare(cfg: DictConfig, *, progress: bool = True) -> dict[str, Any]:
    """Build the artifacts of every configured stage and of the schema format for the dataset's databases. Returns
    the offline cost summary (`t2s.artifacts.offline_cost`) plus `seconds` (wall time of this call) and `artifacts_needed`."""
    start = time.perf_counter()
    choices = option_choices(cfg)
    check_config(cfg, choices)
    data = load_dataset(cfg)
    stages = build_stages(cfg, choices)
    env = make_env(cfg, data.examples, Path(cfg.paths.cache_dir) / "prepare")
    try:
        needs = [art for stage in stages for art in stage.artifacts()] + env.schema_format.artifacts(env)
        plan = [(art, src) for art in needs for src in art.sources(env, data.examples)]
        for art, src in tqdm(plan, desc="artifacts", unit="db", disable=not progress):
            env.artifact(art, src)
        assert env.artifacts is not None
        summary = offline_cost(env.artifacts.records())
    finally:
        env.close()
    summary["seconds"] = time.perf_counter() - start
    summary["artifacts_needed"] = len(plan)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The table `t2s prepare` prints: per artifact, how many, built now, build seconds (whenever built), size."""
    lines = [f"{'artifact':<24} {'count':>6} {'built now':>10} {'build s':>9} {'MB':>9}"]
    for name, a in summary["artifacts"].items():
        lines.append(f"{name:<24} {a['count']:>6} {a['built_now']:>10} {a['build_seconds']:>9.1f} {a['bytes'] / 1e6:>9.2f}")
    if not summary["artifacts"]:
        lines.append("(the configured pipeline needs no artifacts)")
    lines.append(f"{summary['artifacts_needed']} artifact(s) ready in {summary['seconds']:.1f} s")
    return "\n".join(lines)
