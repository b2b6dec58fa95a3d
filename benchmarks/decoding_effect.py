"""What constrained decoding changes (issue 23 item 4): run directories side by side, the first as the reference.

For each run: EX, LLM calls, model seconds and completion tokens per question (metrics.json), the error categories
of its wrong answers, how many answers ended by the grammar's end rather than a cut (`finish_reason` of the final
candidate's generation), and against the first run: how many final answers changed, how many of the changed ones
were fixed (wrong -> right) and broken (right -> wrong). Last, the final answers' "no such column" errors by the
reference that failed: a bare column, `alias.column` or `table.column`, and whether the column is in the database at
all (a name out of the query's scope, which a context-free grammar cannot forbid, or a name the database lacks).

    T2S_DATA=/work/shared/data .venv/bin/t2s run dataset=spider_dev_sample100 decoding=free
    T2S_DATA=/work/shared/data .venv/bin/t2s run dataset=spider_dev_sample100 decoding=sql
    .venv/bin/python benchmarks/decoding_effect.py outputs/runs/dataset=spider_dev_sample100,decoding=free \
        outputs/runs/dataset=spider_dev_sample100,decoding=sql
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2s.db.introspect import introspect  # noqa: E402
from t2s.db.types import DatabaseSchema  # noqa: E402

_NO_SUCH_COLUMN = re.compile(r"no such column: (.+)")


def load(run_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    preds = {r["qid"]: r for r in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines())}
    return metrics, preds


def finish(record: dict[str, Any]) -> str:
    """The finish reason of the generation behind the final answer (its first generator candidate)."""
    for c in record.get("candidates", []):
        if c.get("origin", "").startswith("generator/"):
            return str(c.get("meta", {}).get("finish_reason"))
    return "none"


def unknown_columns(run_dir: Path, preds: dict[str, dict[str, Any]]) -> Counter[str]:
    """The final answers' "no such column" errors by kind (see the module docstring), over the run's databases."""
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["dataset"]
    schemas: dict[str, DatabaseSchema] = {}
    kinds: Counter[str] = Counter()
    for r in preds.values():
        m = _NO_SUCH_COLUMN.match(r.get("pred_error") or "")
        if not m:
            continue
        db = r["db_id"]
        if db not in schemas:
            schemas[db] = introspect(str(Path(data["root"]) / data["db_dir"] / db / f"{db}.sqlite"), db)
        schema = schemas[db]
        qualifier, _, column = m.group(1).rpartition(".")
        ref = ("table.column" if schema.table(qualifier) else "alias.column") if qualifier else "bare column"
        known = any(c.name.lower() == column.lower() for t in schema.tables for c in t.columns)
        kinds[f"{ref}, {'in the database' if known else 'not in the database'}"] += 1
    return kinds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories; the first is the reference")
    args = ap.parse_args(argv)
    loaded = [(d, *load(d)) for d in args.runs]
    _, _, ref = loaded[0]
    print("| run | EX | LLM calls / q | model s / q | completion tokens / q | ended / cut | changed | fixed | broken |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d, m, preds in loaded:
        means = m["cost"]["means"]
        common = [q for q in preds if q in ref]
        changed = [q for q in common if preds[q]["final_sql"] != ref[q]["final_sql"]]
        fixed = sum(1 for q in changed if preds[q]["correct"] and not ref[q]["correct"])
        broken = sum(1 for q in changed if ref[q]["correct"] and not preds[q]["correct"])
        ends = Counter(finish(r) for r in preds.values())
        print(f"| {d.name} | {m['ex']:.1f} % | {means['llm_calls_per_question']:.2f} | "
              f"{means['model_seconds_per_question']:.2f} | {means['completion_tokens_per_question']:.1f} | "
              f"{ends.get('stop', 0)} / {sum(ends.values()) - ends.get('stop', 0)} | {len(changed)} | {fixed} | "
              f"{broken} |")
    print("\nError categories of the wrong answers:\n")
    cats = sorted({c for _, m, _ in loaded for c in m.get("error_categories", {})})
    print("| category | " + " | ".join(d.name for d, _, _ in loaded) + " |")
    print("|---|" + "---:|" * len(loaded))
    for c in cats:
        print(f"| {c} | " + " | ".join(str(m.get("error_categories", {}).get(c, 0)) for _, m, _ in loaded) + " |")
    print('\n"no such column" errors of the final answers:\n')
    unknown = [unknown_columns(d, preds) for d, _, preds in loaded]
    print("| reference | " + " | ".join(d.name for d, _, _ in loaded) + " |")
    print("|---|" + "---:|" * len(loaded))
    for k in sorted({k for u in unknown for k in u}):
        print(f"| {k} | " + " | ".join(str(u.get(k, 0)) for u in unknown) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
