"""PV-SQL constraint extraction measured against gold SQL: precision, recall, false alarms (issue 11 item 3).

For every question of a split whose database exists (Spider dev: the 972 executable questions, wta_1 skipped;
Spider train: 6,8xx of train_spider.json, baseball_1 and soccer_1 skipped; BIRD dev: questions with evidence,
no database here, so no execution), it extracts the checklist with `t2s_plugins.verifier.pv.constraints.extract_constraints`
and checks the *gold* SQL against it. Per category and overall it prints:

- extracted: constraints extracted; per question: extracted / questions;
- precision: extracted constraints that the gold SQL satisfies (AST check) / extracted;
- recall: questions whose gold SQL uses the category's feature (`gold_features`) and that got a constraint
  of the category / questions whose gold SQL uses it;
- the false-alarm rate on gold SQL: share of questions whose gold SQL fails any check (syntax, execution
  through `SQLExecutor`, result shape, constraints), with the share per stage.

Patterns were developed on Spider train; Spider dev is held out: `--misses` (print the unsatisfied
extractions of one category, for pattern work) is refused on dev.

    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/pv_constraints.py --split dev
    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/pv_constraints.py --split train [--misses order]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s_plugins.verifier.pv.constraints import (  # noqa: E402
    CATEGORIES,
    check_candidates,
    check_syntax,
    constraint_satisfied,
    extract_constraints,
    gold_features,
)

from t2s.db.execute import SQLExecutor  # noqa: E402

Item = tuple[str, str, str, str | None]  # question, evidence, gold sql, db path (None: no database)


def load_split(data: Path, split: str) -> tuple[list[Item], int]:
    """(items whose database exists, number skipped for a missing database)."""
    if split == "bird":
        root = data / "bird"
        if not (root / "dev.json").is_file():
            sys.exit(f"BIRD dev not found under {root}: set T2S_DATA to the shared data directory")
        rows = json.loads((root / "dev.json").read_text())
        return [(r["question"], r.get("evidence", ""), r["SQL"], None) for r in rows], 0
    root = data / "spider"
    name = {"dev": "dev.json", "train": "train_spider.json"}[split]
    if not (root / name).is_file():
        sys.exit(f"Spider {split} not found at {root / name}: set T2S_DATA to the shared data directory")
    items: list[Item] = []
    skipped = 0
    for r in json.loads((root / name).read_text()):
        path = root / "database" / r["db_id"] / f"{r['db_id']}.sqlite"
        if not path.is_file():
            skipped += 1
            continue
        items.append((r["question"], "", r["query"], str(path)))
    return items, skipped


def measure(items: list[Item], *, execute: bool, timeout: float, misses: str | None) -> dict:
    """The figures for one split (see the module docstring)."""
    extracted: Counter[str] = Counter()
    satisfied: Counter[str] = Counter()
    has_feature: Counter[str] = Counter()
    recalled: Counter[str] = Counter()
    checklists = []
    unparsable = 0
    for question, evidence, gold, _ in items:
        cons = extract_constraints(question, evidence)
        checklists.append(cons)
        tree = check_syntax(gold)
        if not hasattr(tree, "find_all"):
            unparsable += 1
            continue
        feats = gold_features(tree)
        cats = {c.category for c in cons}
        for f in feats:
            has_feature[f] += 1
            recalled[f] += f in cats
        for c in cons:
            extracted[c.category] += 1
            ok = constraint_satisfied(c, tree)
            satisfied[c.category] += ok
            if misses == c.category and not ok:
                print(f"MISS [{c.span}] {c.params}\n  Q: {question}\n  G: {gold}")
    out: dict = {"questions": len(items), "gold_unparsable": unparsable, "categories": {}}
    for cat in CATEGORIES:
        out["categories"][cat] = {
            "extracted": extracted[cat],
            "precision": satisfied[cat] / extracted[cat] if extracted[cat] else None,
            "gold_with_feature": has_feature[cat],
            "recall": recalled[cat] / has_feature[cat] if has_feature[cat] else None,
        }
    n_ext = sum(extracted.values())
    out["overall"] = {
        "extracted": n_ext,
        "precision": sum(satisfied.values()) / n_ext if n_ext else None,
        "gold_with_feature": sum(has_feature.values()),
        "recall": sum(recalled.values()) / max(1, sum(has_feature.values())),
        "per_question": n_ext / max(1, len(items)),
        "questions_with_constraints": sum(1 for c in checklists if c) / max(1, len(items)),
    }
    executor = SQLExecutor(timeout=timeout, workers=1) if execute else None
    t0 = time.perf_counter()
    try:
        reports = check_candidates([(gold, cons, db if execute else None)
                                    for (_, _, gold, db), cons in zip(items, checklists, strict=True)], executor)
    finally:
        if executor is not None:
            executor.close()
    stages: Counter[str] = Counter()
    for r in reports:
        for s in {v.stage for v in r.violations}:
            stages[s] += 1
    flagged = sum(1 for r in reports if r.violations)
    out["false_alarm"] = {
        "rate": flagged / max(1, len(items)),
        "flagged": flagged,
        "by_stage": {s: stages[s] / max(1, len(items)) for s in ("syntax", "execution", "shape", "constraint")},
        "executed": execute,
        "check_seconds": time.perf_counter() - t0,
    }
    return out


def _pct(v: float | None) -> str:
    return "   -  " if v is None else f"{100 * v:5.1f}%"


def print_table(split: str, skipped: int, res: dict) -> None:
    print(f"\nPV-SQL constraint extraction on {split}: {res['questions']} questions "
          f"({skipped} skipped: database absent; {res['gold_unparsable']} gold SQL unparsable)")
    print(f"{'category':<14} {'extracted':>9} {'precision':>9} {'gold has':>8} {'recall':>7}")
    for cat, r in [*res["categories"].items(), ("overall", res["overall"])]:
        print(f"{cat:<14} {r['extracted']:>9} {_pct(r['precision']):>9} {r['gold_with_feature']:>8} "
              f"{_pct(r['recall']):>7}")
    o, fa = res["overall"], res["false_alarm"]
    print(f"constraints per question: {o['per_question']:.2f}; questions with >= 1 constraint: "
          f"{_pct(o['questions_with_constraints'])}")
    by = ", ".join(f"{s} {_pct(v).strip()}" for s, v in fa["by_stage"].items())
    print(f"false alarms on gold SQL: {_pct(fa['rate']).strip()} of questions ({fa['flagged']}; by stage: {by}; "
          f"{'executed' if fa['executed'] else 'not executed'}, {fa['check_seconds']:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=["dev", "train", "bird"], default="dev")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per gold query")
    ap.add_argument("--misses", choices=CATEGORIES, help="print unsatisfied extractions of one category "
                    "(pattern development; refused on dev, the held-out split)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    if args.misses and args.split == "dev":
        sys.exit("--misses is for pattern development on train; dev is held out")
    data = Path(os.environ.get("T2S_DATA", ROOT.parent / "shared" / "data"))
    items, skipped = load_split(data, args.split)
    res = measure(items, execute=args.split != "bird", timeout=args.timeout, misses=args.misses)
    res["split"], res["skipped"] = args.split, skipped
    print_table(args.split, skipped, res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
