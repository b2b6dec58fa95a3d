"""Value retrieval measured against the gold SQL's string literals (issue 10 item 2), corpus-level, no LLM by default.

For every question of the dataset (Spider dev: the 972 executable questions over 19 databases), it runs the
configured value retriever (default `value_retriever=lsh`, any override accepted) through a real `Env` and compares
`task.values` with the string literals the gold SQL compares to a column (`t2s.sql.literals.string_literals`; LIKE
patterns count by their text without the end wildcards):

- `recall_value`: gold literals whose text equals (case-insensitively, whitespace-trimmed) some retrieved value;
- `recall_value_column`: the same, with the retrieved value's table.column equal to the literal's column;
- `questions_all_found`: questions with literals all of which were retrieved (value match);
- `in_index`: gold literals that are a stored text value of their column at all (the ceiling of any value index);
- `values_per_question`: mean (and over questions with literals) of `len(task.values)`;
- per database: value-index build seconds and bytes (from the artifact store's records; a second run reports the
  build time recorded when it was built, with `built_now` 0), and retrieval seconds per question.

    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/value_retrieval.py --dataset spider_dev \
        --cache /tmp/t2s-values-cache --out /tmp/value_retrieval.json [override ...]

Thresholds were chosen on Spider train (`--dataset spider_train`); Spider dev is the held-out measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s.config import compose_config  # noqa: E402
from t2s.data.base import load_dataset  # noqa: E402
from t2s.db.introspect import connect_readonly, quote_sqlite_identifier  # noqa: E402
from t2s.run.pipeline import build_stage  # noqa: E402
from t2s.run.runner import make_env  # noqa: E402
from t2s.sql.literals import string_literals  # noqa: E402
from t2s.types import Task  # noqa: E402


def _norm(v: Any) -> str:
    return " ".join(str(v).lower().split())


def _in_column(db_path: str, table: str, column: str, text: str, memo: dict[tuple[str, str, str], set[str]]) -> bool:
    key = (db_path, table, column)
    if key not in memo:
        conn = connect_readonly(db_path)
        try:
            t, c = quote_sqlite_identifier(table), quote_sqlite_identifier(column)
            memo[key] = {_norm(v) for (v,) in conn.execute(f"SELECT DISTINCT {c} FROM {t} WHERE typeof({c}) = 'text'")}
        except Exception:  # noqa: BLE001 - a literal on a column the schema lacks (gold SQL quirks)
            memo[key] = set()
        finally:
            conn.close()
    return _norm(text) in memo[key]


def measure(overrides: list[str], batch: int = 32) -> dict[str, Any]:
    """Run the configured value retriever over the dataset and score it (see the module docstring)."""
    cfg = compose_config(overrides)
    data = load_dataset(cfg)
    stage = build_stage("value_retriever", cfg.value_retriever, cfg.hydra.runtime.choices.value_retriever)
    env = make_env(cfg, data.examples, Path(cfg.paths.cache_dir) / "bench-values")
    totals: dict[str, float] = defaultdict(float)
    per_db_seconds: dict[str, float] = defaultdict(float)
    memo: dict[tuple[str, str, str], set[str]] = {}
    misses: list[dict[str, Any]] = []
    try:
        stage.setup(env)
        # build (or load) every index first, so retrieval time excludes build time
        build_start = time.perf_counter()
        for art in stage.artifacts():
            for src in art.sources(env, data.examples):
                env.artifact(art, src)
        build_wall = time.perf_counter() - build_start
        for i in range(0, len(data.examples), batch):
            tasks = [Task(example=ex) for ex in data.examples[i: i + batch]]
            start = time.perf_counter()
            stage.run(tasks)
            seconds = time.perf_counter() - start
            for t in tasks:
                per_db_seconds[t.example.db_id] += seconds / len(tasks)
                totals["questions"] += 1
                totals["values"] += len(t.values)
                schema = env.schema(t.example)
                lits = [lit for lit in string_literals(t.example.gold_sql or "", schema) if lit.op and lit.text.strip()]
                if not lits:
                    continue
                totals["questions_with_literals"] += 1
                totals["values_on_literal_questions"] += len(t.values)
                got = {_norm(v.value) for v in t.values}
                got_col = {(_norm(v.value), v.table.lower(), v.column.lower()) for v in t.values}
                all_found = True
                for lit in lits:
                    totals["literals"] += 1
                    hit = _norm(lit.text) in got
                    hit_col = (_norm(lit.text), (lit.table or "").lower(), (lit.column or "").lower()) in got_col
                    indexed = bool(lit.table and lit.column and
                                   _in_column(t.example.db_path, lit.table, lit.column, lit.text.strip(), memo))
                    totals["found"] += hit
                    totals["found_column"] += hit_col
                    totals["in_index"] += indexed
                    totals["found_given_indexed"] += hit and indexed
                    all_found &= hit
                    if not hit and len(misses) < 40:
                        misses.append({"qid": t.qid, "question": t.example.question, "literal": lit.value,
                                       "column": f"{lit.table}.{lit.column}", "indexed": indexed})
                totals["questions_all_found"] += all_found
        assert env.artifacts is not None
        records = env.artifacts.records()
    finally:
        env.close()
    n_lit = max(1.0, totals["literals"])
    return {
        "overrides": overrides,
        "questions": int(totals["questions"]),
        "questions_with_literals": int(totals["questions_with_literals"]),
        "literals": int(totals["literals"]),
        "recall_value": totals["found"] / n_lit,
        "recall_value_column": totals["found_column"] / n_lit,
        "in_index": totals["in_index"] / n_lit,
        "recall_given_in_index": totals["found_given_indexed"] / max(1.0, totals["in_index"]),
        "questions_all_found": totals["questions_all_found"] / max(1.0, totals["questions_with_literals"]),
        "values_per_question": totals["values"] / max(1.0, totals["questions"]),
        "values_per_literal_question": totals["values_on_literal_questions"] / max(1.0, totals["questions_with_literals"]),
        "retrieval_seconds_per_question": sum(per_db_seconds.values()) / max(1.0, totals["questions"]),
        "index_build_wall_seconds_this_call": build_wall,
        "indexes": [{"db_id": r.source, "build_seconds": round(r.build_seconds, 3), "bytes": r.bytes,
                     "built_now": r.built_now} for r in records],
        "index_build_seconds_total": sum(r.build_seconds for r in records),
        "index_bytes_total": sum(r.bytes for r in records),
        "misses_sample": misses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="spider_dev")
    parser.add_argument("--cache", default=None, help="cache dir (paths.cache_dir); default: the project's")
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. value_retriever.min_score=0.9")
    args = parser.parse_args()
    overrides = [f"dataset={args.dataset}", "value_retriever=lsh", *args.overrides]
    if args.cache:
        overrides.append(f"paths.cache_dir={args.cache}")
    result = measure(overrides)
    show = {k: v for k, v in result.items() if k not in {"indexes", "misses_sample"}}
    print(json.dumps(show, indent=1))
    for r in result["indexes"]:
        print(f"  {r['db_id']:<28} build {r['build_seconds']:>7.2f} s  {r['bytes'] / 1e6:>8.2f} MB  built_now={r['built_now']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
