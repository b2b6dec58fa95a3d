"""What each correction stage of a run did (issue 11): attribution, calls, and the fixer's rescue of failing SQL.

For each run directory (a `t2s run` output with `predictions.jsonl`, `traces.jsonl`, `metrics.json`) and each stage
among fixer / corrector / verifier that is not `none`, it prints one row from the stage's trace events and the run's
scored stage outcomes (the representative = first candidate before and after the stage, as
`metrics.json["attribution"]` scores it):

- EX of the run, n questions, fixed, broken, overcorrection rate (broken / input correct), changed (questions whose
  first candidate the stage rewrote), LLM calls per question (the stage's calls / n);
- executability of the stage's input and output first candidates, run read-only through `SQLExecutor`:
  `input errors` (the input fails to run: syntax/runtime error or timeout), of those `made executable` (the output
  runs) and `made correct` (the output is correct), and `input empty` (runs, no rows).

    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/correction_stats.py outputs/runs/<dir> [<dir> ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s.db.execute import SQLExecutor  # noqa: E402

STAGES = ("fixer", "corrector", "verifier")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_rows(run_dir: Path, executor: SQLExecutor) -> list[dict[str, Any]]:
    """One row per active correction stage of the run (see the module docstring for the fields)."""
    preds = {r["qid"]: r for r in _jsonl(run_dir / "predictions.jsonl")}
    traces = {t["qid"]: t["events"] for t in _jsonl(run_dir / "traces.jsonl")}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    db_paths = _db_paths(run_dir)
    rows = []
    for stage in STAGES:
        events = {q: next((e for e in ev if e["stage"] == stage), None) for q, ev in traces.items()}
        plugin = next((e["plugin"] for e in events.values() if e), "none")
        if plugin == "none":
            continue
        attr = metrics["attribution"].get(f"{stage}/{plugin}", {})
        pairs = []
        for qid, e in events.items():
            if e is None or qid not in preds or not e["sql_before"]:
                continue
            outcome = next((o for o in preds[qid].get("stage_outcomes", []) if o["stage"] == stage), None)
            pairs.append((qid, e["sql_before"][0], e["sql_after"][0] if e["sql_after"] else "", outcome))
        items = [(db_paths[preds[q]["db_id"]], s) for q, b, a, _ in pairs for s in (b, a)]
        results = executor.execute_many(items)
        errors = made_exec = made_correct = empty = changed = 0
        for k, (_qid, before, after, outcome) in enumerate(pairs):
            rb, ra = results[2 * k], results[2 * k + 1]
            changed += before != after
            if not rb.ok:
                errors += 1
                made_exec += ra.ok
                made_correct += bool(outcome and outcome["after"])
            elif not rb.rows:
                empty += 1
        n = len(traces)
        calls = sum(e["llm_calls"] for e in events.values() if e)
        rows.append({
            "run": run_dir.name, "stage": f"{stage}/{plugin}", "ex": metrics.get("ex"), "n": n,
            "fixed": attr.get("fixed"), "broken": attr.get("broken"), "input_correct": attr.get("input_correct"),
            "overcorrection_rate": attr.get("overcorrection_rate"), "changed": changed,
            "llm_calls": calls, "calls_per_question": calls / n if n else 0.0,
            "input_errors": errors, "made_executable": made_exec, "made_correct": made_correct, "input_empty": empty,
        })
    return rows


def _db_paths(run_dir: Path) -> dict[str, str]:
    """db_id -> SQLite path, from the run's composed config (Spider-style `<root>/database/<id>/<id>.sqlite`)."""
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    ds = cfg["dataset"]
    db_dir = Path(str(ds.get("db_dir") or "database"))
    root = db_dir if db_dir.is_absolute() else Path(str(ds.get("root", ""))) / db_dir
    out: dict[str, str] = {}
    for r in _jsonl(run_dir / "predictions.jsonl"):
        out[r["db_id"]] = str(root / r["db_id"] / f"{r['db_id']}.sqlite")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    executor = SQLExecutor(timeout=30.0, workers=1)
    rows = []
    try:
        for d in args.runs:
            rows += stage_rows(d, executor)
    finally:
        executor.close()
    cols = ["run", "stage", "ex", "n", "fixed", "broken", "input_correct", "overcorrection_rate", "changed",
            "calls_per_question", "input_errors", "made_executable", "made_correct", "input_empty"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
