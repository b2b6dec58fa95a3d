"""`t2s compare`: run discovery, differing columns, cost means, Pareto frontier, files and plots, wandb fallback.

Run directories are written the way `t2s run` writes them (`.hydra/overrides.yaml`, `.hydra/hydra.yaml`,
`config.yaml`, `run.json`, `metrics.json` whose cost and attribution parts come from the scorer's own
`cost_summary` / `attribution`), so a change of that layout breaks these tests.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from t2s.config import PROJECT_ROOT
from t2s.eval.scorer import attribution, cost_summary
from t2s.track.compare import (
    CompareError,
    build_comparison,
    compare_dirs,
    find_runs,
    load_run,
    pareto_front,
    runs_from_wandb,
    sweep_job_dirs,
    unflatten_summary,
    write_comparison,
)
from t2s.track.wandb_logger import flatten
from t2s.types import TraceEvent

BASE_CONFIG: dict[str, Any] = {
    "dataset": {"_target_": "t2s.data.demo.DemoDataset", "limit": 6},
    "schema_format": {"_target_": "t2s_plugins.schema_format.mschema.MSchemaFormat", "include_samples": True},
    "generator": {"_target_": "t2s_plugins.generator.zero_shot.ZeroShotGenerator", "n": 1, "temperature": 0.0},
    "seed": 0,
    "run": {"progress": False, "batch_size": 8},
    "paths": {"output_root": "/somewhere"},
}


def write_run(run_dir: Path, *, overrides: list[str] | None, choices: dict[str, str] | None = None,
              config: dict[str, Any] | None = None, correct: list[bool] | None = None, calls: int = 1,
              tokens: tuple[int, int] = (300, 20), seconds: float = 1.0, fixer: list[tuple[bool, bool]] | None = None,
              status: str = "finished") -> Path:
    """A run directory with n = len(correct) questions, each charged `calls` LLM calls, `tokens` and `seconds`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if overrides is not None:
        (run_dir / ".hydra").mkdir(exist_ok=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
            {"hydra": {"runtime": {"choices": {"schema_format": "mschema", "generator": "zero_shot",
                                               "hydra/launcher": "basic", **(choices or {})}}}}))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config or BASE_CONFIG))
    (run_dir / "run.json").write_text(json.dumps({"status": status}))
    if correct is None:
        return run_dir
    traces, records = {}, []
    for i, ok in enumerate(correct):
        events = [TraceEvent(stage="generator", plugin="zero_shot", change="+1", seconds=seconds, llm_calls=calls,
                             prompt_tokens=tokens[0] * calls, completion_tokens=tokens[1] * calls,
                             model_seconds=0.8 * seconds).to_dict()]
        rec: dict[str, Any] = {"qid": f"q{i}", "correct": ok, "status": "ok",
                               "stage_outcomes": [{"stage": "generator", "plugin": "zero_shot", "before": None,
                                                   "after": ok}]}
        if fixer:
            before, after = fixer[i]
            rec["stage_outcomes"].append({"stage": "fixer", "plugin": "chase", "before": before, "after": after})
        traces[f"q{i}"] = {"qid": f"q{i}", "events": events}
        records.append(rec)
    n_ok = sum(correct)
    metrics = {"dataset": "demo", "n": len(correct), "scored": len(correct), "correct": n_ok,
               "ex": 100.0 * n_ok / len(correct), "exact_match": None, "timeouts": 0, "pred_errors": 0,
               "cost": cost_summary(traces, len(correct)), "attribution": attribution(records)}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def write_sweep(sweep_dir: Path, task: list[str], jobs: dict[str, dict[str, Any]]) -> Path:
    """A basic-sweeper sweep directory: multirun.yaml with the sweep overrides, one job dir per entry."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"task": task, "hydra": ["hydra/launcher=joblib"]}}}))
    for name, kw in jobs.items():
        write_run(sweep_dir / name, **kw)
    return sweep_dir


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """2x2 sweep schema_format x generator.n, with one stray job directory of another sweep in the same folder."""
    task = ["schema_format=ddl,markdown", "generator.n=1,2", "llm=tiny"]
    jobs = {}
    for fmt, acc in (("ddl", [True, True, False, False]), ("markdown", [True, False, False, False])):
        for n in (1, 2):
            name = f"generator.n={n},llm=tiny,schema_format={fmt}"
            jobs[name] = {"overrides": [f"schema_format={fmt}", f"generator.n={n}", "llm=tiny"],
                          "choices": {"schema_format": fmt},
                          "correct": acc if n == 1 else [True, *acc[1:3], True], "calls": n, "seconds": 0.5 * n}
    jobs["llm=tiny,schema_format=mschema"] = {"overrides": ["schema_format=mschema", "llm=tiny"], "correct": [True] * 4}
    return write_sweep(tmp_path / "multirun" / "sweepA", task, jobs)


def test_sweep_dir_yields_only_its_own_jobs_in_job_order(sweep: Path) -> None:
    jobs = sweep_job_dirs(sweep)
    assert [j.name for j in jobs] == [
        "generator.n=1,llm=tiny,schema_format=ddl", "generator.n=2,llm=tiny,schema_format=ddl",
        "generator.n=1,llm=tiny,schema_format=markdown", "generator.n=2,llm=tiny,schema_format=markdown"]
    assert find_runs([sweep]) == jobs


def test_table_has_differing_overrides_metrics_and_cost_means(sweep: Path) -> None:
    cmp = compare_dirs([sweep])
    assert cmp.keys == ["schema_format", "generator.n"]  # llm=tiny is common, not a column
    assert cmp.common == {"llm": "tiny"}
    assert len(cmp.rows) == 4
    row = dict(zip(cmp.header, cmp.rows[1]))  # ddl, n=2: correct = [T, T, F, T]
    assert row["schema_format"] == "ddl" and row["generator.n"] == "2"
    assert row["EX %"] == pytest.approx(75.0)
    assert row["LLM calls/q"] == pytest.approx(2.0)
    assert row["tokens/q"] == pytest.approx(2 * 320)
    assert row["wall s/q"] == pytest.approx(1.0)
    assert row["model s/q"] == pytest.approx(0.8)
    assert row["status"] == "finished"
    assert "exact %" not in cmp.header and "USD/q" not in cmp.header  # no run has them
    assert cmp.header[-1] == "frontier" and "pred errors" in cmp.header


def test_frontier_marks_runs_no_other_run_beats(sweep: Path) -> None:
    cmp = compare_dirs([sweep])
    frontier = dict(zip(cmp.labels(), cmp.column("frontier")))
    # ddl n=1: EX 50 at 1 call; ddl n=2: EX 75 at 2 calls; markdown n=1: 25 at 1 call (dominated); markdown n=2: 50 at 2
    assert "llm_calls" in frontier["ddl,1"] and "llm_calls" in frontier["ddl,2"]
    assert frontier["markdown,1"] == "" and frontier["markdown,2"] == ""
    assert pareto_front([(1, 50), (2, 75), (1, 25), (2, 50), (3, 75)]) == [0, 1]


def test_writes_markdown_csv_and_plots(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    files = write_comparison(compare_dirs([sweep]), out)
    for name in ("ex_vs_llm_calls", "ex_vs_tokens", "ex_vs_seconds", "attribution"):
        assert files[name].is_file() and files[name].read_bytes()[:4] == b"\x89PNG", name
    md = files["markdown"].read_text()
    assert md.count("| finished |") == 4 and "![ex_vs_tokens](ex_vs_tokens.png)" in md
    assert "4. `" + str(sweep / "generator.n=2,llm=tiny,schema_format=markdown") + "`" in md
    rows = list(csv.DictReader(files["csv"].open()))
    assert len(rows) == 4 and float(rows[0]["EX %"]) == pytest.approx(50.0)
    assert rows[0]["path"].endswith("schema_format=ddl") and rows[0]["name"] == "generator.n=1,llm=tiny,schema_format=ddl"


def test_attribution_columns_per_stage(tmp_path: Path) -> None:
    a = write_run(tmp_path / "fixer=none", overrides=["fixer=none"], correct=[True, False, False])
    b = write_run(tmp_path / "fixer=chase", overrides=["fixer=chase"], correct=[True, True, False],
                  fixer=[(True, True), (False, True), (True, False)])
    cmp = compare_dirs([a, b])
    assert cmp.keys == ["fixer"]
    files = write_comparison(cmp, tmp_path / "out")
    assert "| chase | fixer/chase | 3 | 1 | 1 | 1 | 0.5 |" in files["markdown"].read_text()
    assert files["attribution"].is_file()


def test_runs_without_hydra_metadata_differ_by_config(tmp_path: Path) -> None:
    cfg_b = json.loads(json.dumps(BASE_CONFIG))
    cfg_b["schema_format"] = {"_target_": "t2s_plugins.schema_format.ddl.DDLFormat", "include_samples": True}
    cfg_b["generator"]["temperature"] = 0.7
    cfg_b["run"]["progress"] = True  # not a result key: no column
    a = write_run(tmp_path / "a", overrides=None, correct=[True, False])
    write_run(tmp_path / "b", overrides=None, config=cfg_b, correct=[True, True])
    cmp = compare_dirs([tmp_path])  # a folder of runs
    assert [r.name for r in cmp.runs] == ["a", "b"]
    assert set(cmp.keys) == {"schema_format", "generator.temperature"}
    assert cmp.column("schema_format") == ["mschema", "ddl"] and cmp.column("generator.temperature") == ["0.0", "0.7"]
    assert load_run(a).status == "finished"


def test_secret_overrides_never_reach_the_table(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", overrides=["x=1", "llm.api_key=sk-AAA"], correct=[True])
    b = write_run(tmp_path / "b", overrides=["x=2", "llm.api_key=sk-BBB"], correct=[False])
    cmp = compare_dirs([a, b])
    assert cmp.keys == ["x"] and not cmp.common
    files = write_comparison(cmp, tmp_path / "out")
    assert "sk-" not in files["markdown"].read_text() + files["csv"].read_text()


def test_unfinished_runs_are_rows_with_their_status(tmp_path: Path) -> None:
    a = write_run(tmp_path / "x=1", overrides=["x=1"], correct=[True])
    b = write_run(tmp_path / "x=2", overrides=["x=2"], correct=None, status="failed")
    cmp = compare_dirs([a, b])
    assert cmp.column("status") == ["finished", "failed"]
    assert cmp.column("EX %") == [100.0, None]
    write_comparison(cmp, tmp_path / "out")  # plots skip the run without numbers


def test_nothing_to_compare_says_where(tmp_path: Path) -> None:
    with pytest.raises(CompareError, match="no run directories"):
        find_runs([tmp_path])
    with pytest.raises(CompareError, match="no such directory"):
        find_runs([tmp_path / "missing"])


def test_metrics_survive_the_wandb_summary_round_trip(sweep: Path) -> None:
    run = load_run(sweep_job_dirs(sweep)[0])
    back = unflatten_summary(flatten(run.metrics))
    assert back["cost"]["means"] == run.metrics["cost"]["means"]
    assert back["attribution"]["generator/zero_shot"]["fixed"] == run.metrics["attribution"]["generator/zero_shot"]["fixed"]
    assert build_comparison([run]).rows[0][2:] == build_comparison(
        [type(run)(name=run.name, path=run.path, metrics=back, status=run.status)]).rows[0][2:]


def test_wandb_source_without_login_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(CompareError, match="wandb login.*t2s compare outputs/multirun"):
        runs_from_wandb("t2s", "some-sweep")


def test_cli_prints_one_table_and_writes_files(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-out"
    proc = subprocess.run([sys.executable, "-m", "t2s.cli", "compare", str(sweep), "--out", str(out)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + 4 and lines[0].startswith("| # | schema_format | generator.n | status |")
    assert (out / "compare.md").is_file() and (out / "compare.csv").is_file() and (out / "ex_vs_seconds.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "t2s.cli", "compare", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert bad.returncode == 1 and "no such directory" in bad.stderr
