"""Does a tournament judge carry a signal? Offline, from the records of a finished `selector=adaptive_tournament` run.

On the questions the tournament played (more than one executing cluster), three ways of reading the same recorded
comparisons are scored against the gold verdicts of the candidates (`candidate_correct` in predictions.jsonl):

- cluster size: the first representative (the largest cluster; what majority voting returns);
- the judge's votes: the run's own winner (most wins, ties by cluster size);
- position-debiased margin: for each pair, log P(A) - log P(B) with x shown first minus the same with y shown first,
  summed per representative (the balanced position calibration of Wang et al., 2023, "Large Language Models are not
  Fair Evaluators", arXiv 2305.17926). A constant preference for position A cancels; what is left is the judge's
  preference for the content. It needs `selector.both_orders=true` and log-probability scoring.

and, for scale, how often any representative was right (the ceiling of any reading). No model call is made.

    T2S_DATA=/work/shared/data .venv/bin/t2s run dataset=spider_dev_sample100 experiment=self_consistency \\
        decoding=sql llm=embedded_1.5b selector=adaptive_tournament selector.both_orders=true
    .venv/bin/python benchmarks/judge_signal.py outputs/runs/<that run>
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def margins(comparisons: list[dict[str, Any]]) -> dict[str, float] | None:
    """Per representative, the summed position-debiased log-probability margin; None without both orders scored."""
    played: dict[tuple[str, str], float] = {}
    for g in comparisons:
        if "logprob_a" not in g:
            return None
        played[(g["a"], g["b"])] = float(g["logprob_a"]) - float(g["logprob_b"])
    score: dict[str, float] = defaultdict(float)
    for (a, b), d in played.items():
        if (b, a) not in played:
            return None
        score[a] += d  # a shown first; its mirror game adds -d' to a through the b-first entry
        score[b] -= d
    return dict(score)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished run directory of selector=adaptive_tournament")
    ap.add_argument("--option", default="adaptive_tournament", help="the selector option's log name")
    args = ap.parse_args(argv)
    log = args.run / "selection" / f"{args.option}.jsonl"
    if not log.exists():
        raise SystemExit(f"{log}: no tournament records here; run with selector=adaptive_tournament first")
    preds = {r["qid"]: r for r in read_jsonl(args.run / "predictions.jsonl")}
    records = {r["qid"]: r for r in read_jsonl(log)}  # the last record per question
    played = [r for r in records.values() if r.get("comparisons")]
    games = [g for r in played for g in r["comparisons"]]
    a_rate = sum(1 for g in games if g.get("choice") == "A") / len(games) if games else 0.0
    right = {"cluster size": 0, "judge votes": 0, "debiased margin": 0, "any representative": 0}
    debiased = True
    for r in played:
        p = preds[r["qid"]]
        ok = {c["id"]: bool(v) for c, v in zip(p["candidates"], p["candidate_correct"])}
        reps = r["representatives"]
        right["cluster size"] += ok[reps[0]]
        right["judge votes"] += ok[r["winner"]]
        right["any representative"] += any(ok[x] for x in reps)
        m = margins(r["comparisons"])
        if m is None:
            debiased = False
        else:
            right["debiased margin"] += ok[max(reps, key=lambda x: (m.get(x, 0.0), -reps.index(x)))]
    print(f"{args.run.name}: {len(records)} questions, {len(played)} played, {len(games)} comparisons, "
          f"A chosen in {a_rate:.0%}")
    print("| reading | right of the played questions |")
    print("|---|---:|")
    for k, v in right.items():
        if k == "debiased margin" and not debiased:
            print(f"| {k} | needs both orders scored by log-probability |")
            continue
        print(f"| {k} | {v} of {len(played)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
