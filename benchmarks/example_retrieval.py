"""Skeleton match@k of example retrieval on Spider dev (issue 10 item 4): corpus-level, no LLM.

For every question of the evaluation dataset (default: the 972 executable Spider dev questions), the retriever
`example_retriever=<option>` fills `task.examples` with `k_max` examples from the training store (Spider train by
default); match@k is the share of questions whose first k examples hold one whose SQL skeleton
(`t2s.sql.skeleton.sql_skeleton`: literals and identifiers masked) equals the gold SQL's. Also the share of
questions whose gold skeleton occurs in the store at all (the ceiling of any retriever), and the store's build
seconds and size (from its `meta.json`; `--rebuild` builds it afresh into a fresh cache folder to time it).

Variants measured by default: `skeleton_knn` (MiniLM on skeletons), the masking ablation (`mask=false`: MiniLM on raw
questions), lexical hashing vectors on skeletons, and `random` (mean over `--random-seeds` seeds).

    T2S_DATA=/work/shared/data PYTHONPATH=. .venv/bin/python benchmarks/example_retrieval.py \
        [--dataset spider_dev] [--k 1 3 5] [--out outputs/benchmarks/example_retrieval.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s.config import compose_config  # noqa: E402
from t2s.data.base import load_dataset  # noqa: E402
from t2s.run.checks import option_choices  # noqa: E402
from t2s.run.pipeline import build_stage  # noqa: E402
from t2s.run.runner import make_env  # noqa: E402
from t2s.sql.skeleton import sql_skeleton  # noqa: E402
from t2s.types import Task  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "skeleton_knn (minilm, masked)": ["example_retriever=skeleton_knn", "embedder=minilm"],
    "knn on raw questions (minilm, mask=false)": ["example_retriever=skeleton_knn", "embedder=minilm",
                                                  "example_retriever.mask=false"],
    "skeleton_knn (hashing, masked)": ["example_retriever=skeleton_knn", "embedder=hashing"],
    "random": ["example_retriever=random", "embedder=minilm"],
}


def measure(overrides: list[str], ks: list[int], seeds: list[int]) -> dict[str, Any]:
    """match@k (and retrieval seconds) of one retriever configuration, averaged over `seeds` (one seed for knn)."""
    runs = []
    store_meta: dict[str, Any] = {}
    for seed in seeds:
        cfg = compose_config([*overrides, f"seed={seed}", f"example_retriever.k={max(ks)}"])
        data = load_dataset(cfg)
        env = make_env(cfg, data.examples, Path(cfg.paths.cache_dir) / "benchmarks")
        try:
            stage = build_stage("example_retriever", cfg.example_retriever,
                                option_choices(cfg).get("example_retriever"))
            t0 = time.perf_counter()
            stage.setup(env)
            setup_s = time.perf_counter() - t0
            store = stage.store
            gold_in_store = {r.sql_skeleton for r in store.records}
            tasks = [Task(example=e) for e in data.examples]
            t0 = time.perf_counter()
            for i in range(0, len(tasks), 64):
                stage.run(tasks[i:i + 64])
            run_s = time.perf_counter() - t0
            by_source = {f"{store.dataset}:{r.qid}": r.sql_skeleton for r in store.records}
            hits = {k: 0 for k in ks}
            reachable = 0
            for t in tasks:
                gold = sql_skeleton(t.example.gold_sql or "")
                reachable += gold in gold_in_store
                skels = [by_source[e.source] for e in t.examples]
                for k in ks:
                    hits[k] += gold is not None and gold in skels[:k]
            recs = env.artifacts.records() if env.artifacts else []
            if recs:
                meta = json.loads((Path(recs[0].path) / "meta.json").read_text())
                store_meta = {"build_seconds": round(meta["build_seconds"], 1), "bytes": meta["bytes"],
                              "examples": len(store), "built_now": recs[0].built_now, "path": recs[0].path}
            runs.append({"match": {k: hits[k] / len(tasks) for k in ks}, "reachable": reachable / len(tasks),
                         "questions": len(tasks), "setup_seconds": setup_s,
                         "ms_per_question": 1000 * run_s / len(tasks)})
        finally:
            env.close()
    return {"match": {k: statistics.mean(r["match"][k] for r in runs) for k in ks},
            "match_sd": {k: (statistics.stdev(r["match"][k] for r in runs) if len(runs) > 1 else 0.0) for k in ks},
            "reachable": runs[0]["reachable"], "questions": runs[0]["questions"],
            "ms_per_question": statistics.mean(r["ms_per_question"] for r in runs), "store": store_meta,
            "seeds": seeds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="spider_dev")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--random-seeds", type=int, default=5)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help="names from VARIANTS")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "benchmarks" / "example_retrieval.json"))
    args = ap.parse_args()
    results = {}
    for name in args.variants:
        seeds = list(range(args.random_seeds)) if "random" in name else [0]
        res = measure([f"dataset={args.dataset}", *VARIANTS[name]], args.k, seeds)
        results[name] = res
        print(f"{name}: " + ", ".join(f"match@{k} {100 * v:.1f} %" for k, v in res["match"].items())
              + f" (reachable {100 * res['reachable']:.1f} %, {res['questions']} questions, "
                f"{res['ms_per_question']:.1f} ms/question; store {res['store']})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("\n| retriever | " + " | ".join(f"match@{k}" for k in args.k) + " |")
    print("|---|" + "---|" * len(args.k))
    for name, res in results.items():
        cells = [f"{100 * res['match'][k]:.1f} %" + (f" ± {100 * res['match_sd'][k]:.1f}" if res["match_sd"][k] else "")
                 for k in args.k]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
