"""What PV-SQL probing finds (issue 10 item 6): probes per question, seconds, and how often a finding holds a value
the gold SQL uses. Runs only the prober stage (`prober=pv`, any other overrides apply), in the run's batches.

Figures, per question (mean over the questions):
- probes: findings per question, and by status (ok, empty, error, timeout, rejected, malformed);
- llm_calls, seconds (the stage's wall time), model_seconds;
- gold-value share: among questions whose gold SQL has a string literal (`t2s.sql.skeleton.sql_literals`), the share
  where some finding's rows hold a cell equal to one of them (case-insensitive; a `LIKE '%x%'` pattern counts as
  found when a cell contains x); also the share among all questions.

LLM answers go through the run's response cache, so running `t2s run` with the same overrides afterwards (e.g. with
a generator) costs no probe calls again, and this script re-run after such a run costs nothing.

    T2S_DATA=/work/shared/data PYTHONPATH=. .venv/bin/python benchmarks/pv_probe.py dataset=spider_dev_sample100 \
        [dataset.limit=30] [llm=embedded] [--out outputs/benchmarks/pv_probe.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s.config import compose_config  # noqa: E402
from t2s.data.base import load_dataset  # noqa: E402
from t2s.run.checks import option_choices  # noqa: E402
from t2s.run.pipeline import Pipeline, build_stage  # noqa: E402
from t2s.run.runner import make_env  # noqa: E402
from t2s.sql.skeleton import sql_literals  # noqa: E402
from t2s.types import Task  # noqa: E402


def gold_strings(sql: str) -> list[tuple[str, bool]]:
    """The gold SQL's string literals, lower-cased, each with whether it was a `%` pattern (matched as a substring)."""
    raw = sql.lower()
    values = [lit.lower() for lit in sql_literals(sql) if isinstance(lit, str)]
    return [(v, f"%{v}" in raw or f"{v}%" in raw) for v in values]


def finds_gold(task: Task) -> bool | None:
    """True when a finding's rows hold a gold string literal; None when the gold SQL has none."""
    wanted = gold_strings(task.example.gold_sql or "")
    if not wanted:
        return None
    cells = [str(v).lower() for f in task.findings for row in f.rows for v in row if v is not None]
    return any((v in c) if pattern else (v == c) for v, pattern in wanted for c in cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "benchmarks" / "pv_probe.json"))
    args = ap.parse_args()
    cfg = compose_config(["prober=pv", *args.overrides])
    data = load_dataset(cfg)
    env = make_env(cfg, data.examples, Path(cfg.paths.cache_dir) / "benchmarks")
    tasks = [Task(example=e) for e in data.examples]
    start = time.perf_counter()
    try:
        stage = build_stage("prober", cfg.prober, option_choices(cfg).get("prober", "pv"))
        pipeline = Pipeline([stage])
        pipeline.setup(env)
        size = max(1, int(cfg.run.batch_size))
        for i in range(0, len(tasks), size):
            pipeline.run_batch(tasks[i:i + size])
            print(f"{min(i + size, len(tasks))}/{len(tasks)} questions, {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        env.close()
    n = len(tasks)
    status = Counter(f.status for t in tasks for f in t.findings)
    found = [finds_gold(t) for t in tasks]
    with_lit = [f for f in found if f is not None]
    ev = [t.trace[0] for t in tasks if t.trace]
    res: dict[str, Any] = {
        "overrides": args.overrides, "questions": n,
        "probes_per_question": sum(len(t.findings) for t in tasks) / n,
        "by_status_per_question": {k: v / n for k, v in status.most_common()},
        "questions_with_a_probe": sum(bool(t.findings) for t in tasks) / n,
        "llm_calls_per_question": sum(e.llm_calls for e in ev) / n,
        "seconds_per_question": sum(e.seconds for e in ev) / n,
        "model_seconds_per_question": sum(e.model_seconds for e in ev) / n,
        "prompt_tokens_per_question": sum(e.prompt_tokens for e in ev) / n,
        "questions_with_gold_string": len(with_lit),
        "gold_value_found_share": (sum(with_lit) / len(with_lit)) if with_lit else None,
        "gold_value_found_share_all": sum(bool(f) for f in found) / n,
        "errors": [t.error for t in tasks if t.error],
        "examples": [{"qid": t.qid, "question": t.example.question, "gold": t.example.gold_sql,
                      "findings": [{"asked": f.asked, "sql": f.sql, "status": f.status, "note": f.note}
                                   for f in t.findings]} for t in tasks[:10]],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps({k: v for k, v in res.items() if k != "examples"}, indent=2, default=str))


if __name__ == "__main__":
    main()
