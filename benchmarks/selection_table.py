"""The selection table of issue 12: one row per candidate pool, one column per selector, from finished runs.

Give it the run directories of one sweep over selectors on the same pools (the generation is cached, so each pool
is sampled once), for example

    t2s run -m dataset=spider_dev_sample100 generator=zero_shot_n8 selector=first,majority,adaptive_tournament
    T2S_DATA=../shared/data .venv/bin/python benchmarks/selection_table.py outputs/multirun/<sweep dir>

Runs are grouped by everything in their `metrics.json["options"]` except the selector (the pool), and for each
pool it prints: questions, the pool's oracle (a correct candidate exists), EX of every selector that ran on it,
the share of questions whose candidates all agree (one cluster), the adaptive tournament's fast-path rate (one
executing cluster: no model call), its comparisons and clusters per question, and the LLM calls and model + database seconds per question of each run (generation included: what the
whole configuration costs). `--json` writes the rows too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s.select import selection_report  # noqa: E402
from t2s.track.compare import find_runs  # noqa: E402


def pool_rows(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per pool (options other than the selector), each selector's EX and cost in it."""
    pools: dict[str, dict[str, Any]] = {}
    for d in run_dirs:
        if not (d / "metrics.json").is_file():
            print(f"skipped {d}: not finished (no metrics.json)", file=sys.stderr)
            continue
        rep = selection_report(d)
        options = dict(rep.get("options") or {})
        selector = str(options.pop("selector", "?")).split("/")[-1]
        key = ", ".join(f"{k}={str(v).split('/')[-1]}" for k, v in sorted(options.items())
                        if v and str(v).split("/")[-1] != "none")
        row = pools.setdefault(key, {"pool": key, "n": rep.get("n"), "oracle": rep.get("oracle"), "selectors": {}})
        row["selectors"][selector] = {k: rep.get(k) for k in ("ex", "llm_calls_per_question", "seconds_per_question",
                                                              "fast_path_rate", "unanimous_rate", "mean_clusters",
                                                              "comparisons_per_question")}
    return list(pools.values())


def fmt(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="run directories or sweep directories")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    rows = pool_rows(find_runs(args.paths))
    order = ["first", "majority", "adaptive_tournament"]
    for row in rows:
        sel = row["selectors"]
        names = [s for s in order if s in sel] + sorted(s for s in sel if s not in order)
        print(f"\npool: {row['pool']}  (questions {row['n']}, oracle {fmt(row['oracle'])} %)")
        print("| selector | EX % | all agree % | fast path % | clusters/q | comparisons/q | LLM calls/q | model+db s/q |")
        print("|---|---|---|---|---|---|---|---|")
        for s in names:
            r = sel[s]
            print(f"| {s} | {fmt(r['ex'])} | {fmt(r['unanimous_rate'])} | {fmt(r['fast_path_rate'])} | "
                  f"{fmt(r['mean_clusters'], 2)} | "
                  f"{fmt(r['comparisons_per_question'], 2)} | {fmt(r['llm_calls_per_question'], 2)} | "
                  f"{fmt(r['seconds_per_question'], 2)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
