"""Execution-accuracy speed on Spider dev: one process vs the worker pool vs the warm gold cache.

Takes the 972 executable Spider dev questions (wta_1's database is absent) and scores two prediction sets
under the test-suite semantics: (a) the gold SQL itself, (b) one perturbation per question written by
`t2s.eval.perturb.perturb_file` (seed 0). For each it prints wall seconds (best and median of `--repeat`
runs; each `score_execution` call includes starting its workers) for:

- `in-process`   workers=0, no cache (no worker process at all; reference only),
- `one process`  workers=1, no cache (one worker process, queries one after another),
- `pool cold`    workers=2, empty gold cache (gold results computed and stored),
- `pool warm`    workers=2, warm gold cache (only the predictions run),

then where the time of one pool run goes (worker start, SQL preparation, hashing, execution, comparison),
and a CPU-bound synthetic load (recursive-CTE queries of ~20 ms each) that shows how the pool scales
when queries, not fixed costs, dominate.

    T2S_DATA=../shared/data .venv/bin/python benchmarks/eval_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s.db.execute import SQLExecutor  # noqa: E402
from t2s.eval.execution import (  # noqa: E402
    file_sha256,
    forget_file_hashes,
    gold_order_matters,
    prepare_sql,
    results_equal,
    score_execution,
    summarize,
)
from t2s.eval.perturb import perturb_file  # noqa: E402

Items = list[tuple[str, str, list[str]]]


def load_spider_dev(data: Path) -> Items:
    """(gold, gold, [db_path]) for every dev question whose database file exists."""
    root = data / "spider"
    if not (root / "dev.json").exists():
        sys.exit(f"Spider dev not found under {root}: set T2S_DATA to the shared data directory")
    items: Items = []
    for ex in json.loads((root / "dev.json").read_text()):
        path = root / "database" / ex["db_id"] / f"{ex['db_id']}.sqlite"
        if path.exists():
            items.append((ex["query"], ex["query"], [str(path)]))
    return items


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process and by its finished, reaped children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, float, float, object]:
    """(best wall, median wall, parent CPU, workers' CPU) seconds over `repeat` calls (CPU per call, median),
    and the last result."""
    times, parent, workers, out = [], [], [], None
    for _ in range(repeat):
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        c1 = cpu_seconds()
        parent.append(c1[0] - c0[0])
        workers.append(c1[1] - c0[1])
    return min(times), statistics.median(times), statistics.median(parent), statistics.median(workers), out


def scenario(name: str, items: Items, repeat: int, workdir: Path) -> None:
    print(f"\n## {name}: {len(items)} questions")
    print(f"{'configuration':<14} {'best s':>8} {'median s':>9} {'speed-up':>9} {'CPU parent':>11} "
          f"{'CPU workers':>12}  accuracy")
    counter = iter(range(10**6))

    def cold(workers: int, cache: bool) -> Callable[[], object]:
        def run() -> object:
            forget_file_hashes()
            cache_dir = workdir / f"cold{next(counter)}" if cache else None
            return score_execution(items, workers=workers, cache_dir=cache_dir)
        return run

    warm_dir = workdir / f"warm-{name}"
    score_execution(items, workers=2, cache_dir=warm_dir)  # fill the cache once
    configs = [("in-process", cold(0, False)), ("one process", cold(1, False)), ("pool cold", cold(2, True)),
               ("pool warm", lambda: score_execution(items, workers=2, cache_dir=warm_dir))]
    base = None
    for label, fn in configs:
        best, median, cpu_parent, cpu_workers, verdicts = timed(fn, repeat)
        if label == "one process":
            base = best
        speed = f"{base / best:8.2f}x" if base else f"{'':9}"
        acc = summarize(verdicts)["accuracy"]  # type: ignore[arg-type]
        print(f"{label:<14} {best:8.3f} {median:9.3f} {speed} {cpu_parent:11.3f} {cpu_workers:12.3f}  {acc:.3f}")


def breakdown(items: Items, workers: int) -> None:
    """Where one cold run's time goes, measured stage by stage (same work as score_execution)."""
    forget_file_hashes()
    t0 = time.perf_counter()
    ex = SQLExecutor(workers=workers, timeout=30, max_rows=100_000, decode_errors="ignore")
    ex.start()
    ex.execute_many([(items[0][2][0], "SELECT 1")] * max(1, workers))
    t_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = [(prepare_sql(g), prepare_sql(p), dbs) for g, p, dbs in items]
    t_prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    for db in {d for _, _, dbs in items for d in dbs}:
        file_sha256(db)
    t_hash = time.perf_counter() - t0
    gold_jobs = list(dict.fromkeys((dbs[0], g) for g, _, dbs in prepared))
    jobs = gold_jobs + [(dbs[0], p) for _, p, dbs in prepared]
    t0 = time.perf_counter()
    results = ex.execute_many(jobs)
    t_exec = time.perf_counter() - t0
    gold = dict(zip(gold_jobs, results[: len(gold_jobs)]))
    t0 = time.perf_counter()
    for (g, _, dbs), pred in zip(prepared, results[len(gold_jobs):]):
        results_equal(gold[(dbs[0], g)].rows, pred.rows, order_matters=gold_order_matters(g))
    t_cmp = time.perf_counter() - t0
    ex.close()
    in_worker = sum(r.seconds for r in results)
    print(f"workers={workers}: start {t_start:.3f} s | prepare SQL {t_prep:.3f} s | hash dbs {t_hash:.3f} s | "
          f"execute {len(jobs)} queries {t_exec:.3f} s (sum of per-query wall {in_worker:.3f} s) | "
          f"compare {t_cmp:.3f} s")


def synthetic(repeat: int, db: str, workdir: Path) -> None:
    """The same configurations on queries that cost ~20 ms each, where execution (not fixed costs) dominates."""
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < {n}) SELECT count(*) FROM c"
    items = [(sql.format(n=150_000 + i), sql.format(n=150_000 + i), [db]) for i in range(100)]
    scenario("synthetic CPU-bound load (gold and prediction ~20 ms each)", items, repeat, workdir)


def free_cores() -> float:
    """How many cores two busy processes get right now: 2.0 on an idle 2-core machine, ~1.0 when other
    work holds one core (then no pool can be faster than one process)."""
    import multiprocessing as mp

    n = 3_000_000
    t0 = time.perf_counter()
    _burn(n)
    one = time.perf_counter() - t0
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_burn, [1, 1])
        t0 = time.perf_counter()
        pool.map(_burn, [n, n])
        two = time.perf_counter() - t0
    return 2 * one / two


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per configuration (best and median are shown)")
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("T2S_DATA", ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    gold_items = load_spider_dev(args.data)
    print(f"Spider dev: {len(gold_items)} executable questions; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}; cores available to two busy processes now: {free_cores():.2f}")
    with tempfile.TemporaryDirectory(prefix="t2s-eval-speed-") as tmp:
        work = Path(tmp)
        lines = [f"{g}\t{Path(dbs[0]).stem}" for g, _, dbs in gold_items]
        records = perturb_file(lines, work / "perturbed.jsonl", seed=0)
        perturbed = [(g, r["sql"], dbs) for (g, _, dbs), r in zip(gold_items, records)]
        scenario("gold as prediction", gold_items, args.repeat, work)
        scenario("perturbed predictions", perturbed, args.repeat, work)
        print("\n## where the time of one cold run goes (gold as prediction)")
        for workers in (1, 2):
            breakdown(gold_items, workers)
        synthetic(max(1, args.repeat // 2), gold_items[0][2][0], work)
    print(f"\nload average {os.getloadavg()[0]:.2f}; cores available to two busy processes: {free_cores():.2f} "
          "(other processes on the machine skew timings)")


if __name__ == "__main__":
    main()
