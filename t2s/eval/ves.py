"""BIRD's efficiency and partial-credit metrics: VES (reward-banded, as in BIRD mini-dev) and Soft-F1.

VES reproduces `evaluation_ves.py` of github.com/bird-bench/mini_dev (`iterated_execute_sql`,
`clean_abnormal`, `compute_ves`):

- the prediction is correct when `set(pred_rows) == set(gold_rows)`; a wrong, failing or timed-out
  prediction gets reward 0;
- otherwise prediction and gold are executed `iterations` times, interleaved (pred, gold, pred, gold, ...;
  upstream's default is 100), each iteration giving the ratio gold_seconds / pred_seconds; ratios outside
  mean +- 3 standard deviations (population std) are dropped and the rest averaged;
- the averaged ratio maps to a reward: >= 2 -> 1.25, >= 1 -> 1, >= 0.5 -> 0.75, >= 0.25 -> 0.5, else 0.25;
- VES = 100 * mean over questions of sqrt(reward).

One deliberate difference: when every ratio is identical (always the case with `iterations=1`), upstream's
filter keeps nothing and divides by zero, which its error handler turns into reward 0; here the unfiltered
mean is used instead. Times are measured inside the worker process around execute + fetch-all, on a
connection kept open (upstream reconnects each time, outside its timer).

Soft-F1 reproduces `calculate_f1_score` of BIRD mini-dev `evaluation_f1.py`: duplicate rows are dropped
keeping first occurrences, the i-th predicted row is matched with the i-th gold row (row order matters),
and within a row pair each value counts as matched if it occurs anywhere in the other row; cells are
normalized by the gold row's width. A failing or timed-out prediction scores 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from t2s.db.execute import SQLExecutor

Row = tuple[Any, ...]


def ves_reward(time_ratio: float) -> float:
    """BIRD mini-dev's reward band for a gold/pred time ratio (0 means "not correct")."""
    if time_ratio == 0:
        return 0.0
    if time_ratio >= 2:
        return 1.25
    if time_ratio >= 1:
        return 1.0
    if time_ratio >= 0.5:
        return 0.75
    if time_ratio >= 0.25:
        return 0.5
    return 0.25


def clean_abnormal(values: Sequence[float]) -> list[float]:
    """Keep values strictly within mean +- 3 population standard deviations (BIRD's `clean_abnormal`)."""
    if not values:
        return []
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [v for v in values if mean - 3 * std < v < mean + 3 * std]


def mean_time_ratio(gold_seconds: Sequence[float], pred_seconds: Sequence[float]) -> float:
    """Average of per-iteration gold/pred time ratios after `clean_abnormal` (all of them if it keeps none)."""
    ratios = [g / max(p, 1e-9) for g, p in zip(gold_seconds, pred_seconds)]
    kept = clean_abnormal(ratios) or ratios
    return sum(kept) / len(kept) if kept else 0.0


@dataclass
class VESResult:
    """One question's VES outcome.

    `status`: "ok" (both ran; `correct` is BIRD's set equality), "timeout" / "error" / "rejected" (the
    prediction), or "gold_error". `time_ratio` is the cleaned mean gold/pred time ratio (0 when not
    correct), `reward` its band (0 when not correct).
    """

    correct: bool
    status: str
    reward: float = 0.0
    time_ratio: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def ves(results: Sequence[VESResult]) -> float:
    """VES in percent: 100 * mean of sqrt(reward) over the questions (BIRD mini-dev `compute_ves`).
    Questions with status "gold_error" are left out (report their number apart)."""
    scored = [r for r in results if r.status != "gold_error"]
    return 100.0 * sum(math.sqrt(r.reward) for r in scored) / len(scored) if scored else 0.0


def score_ves(items: Sequence[tuple[str, str, str]], *, iterations: int = 100, timeout: float = 30.0,
              workers: int = 1, max_rows: int = 1_000_000, executor: SQLExecutor | None = None) -> list[VESResult]:
    """VES outcome for each `(gold_sql, pred_sql, db_path)`.

    `timeout` bounds every single execution (seconds). Correctness runs go through the executor in
    parallel; the timing runs of one question stay in one worker, and with `workers=1` (the default, like
    upstream's `num_cpus=1`) no two questions are timed at once, which keeps ratios stable.
    """
    if iterations < 1:
        raise ValueError(f"score_ves: iterations must be >= 1, got {iterations}")
    own = executor is None
    if executor is None:
        executor = SQLExecutor(timeout=timeout, max_rows=max_rows, workers=workers)
    try:
        runs = executor.execute_many([(db, sql) for gold, pred, db in items for sql in (gold, pred)],
                                     timeout=timeout, max_rows=max_rows)
        out: list[VESResult] = []
        to_time: list[tuple[int, str, list[str]]] = []
        for n, (gold, pred, db) in enumerate(items):
            g, p = runs[2 * n], runs[2 * n + 1]
            if not g.ok or g.truncated:
                out.append(VESResult(correct=False, status="gold_error",
                                     error=g.error or ("gold timed out" if g.timed_out else "gold exceeds max_rows")))
            elif not p.ok:
                out.append(VESResult(correct=False, status=p.status, error=p.error))
            elif p.truncated or set(p.rows) != set(g.rows):
                out.append(VESResult(correct=False, status="ok"))
            else:
                out.append(VESResult(correct=True, status="ok"))
                to_time.append((n, db, [pred, gold]))
        timings = executor.time_many([(db, sqls) for _, db, sqls in to_time], iterations=iterations, timeout=timeout)
        for (n, _, _), t in zip(to_time, timings):
            if not t.ok:
                # correct once, failed while timed (e.g. the total time limit): upstream gives reward 0
                out[n] = VESResult(correct=True, status="timeout" if t.timed_out else "error", error=t.error)
                continue
            ratio = mean_time_ratio(t.times[1], t.times[0])
            out[n].time_ratio, out[n].reward = ratio, ves_reward(ratio)
        return out
    finally:
        if own:
            executor.close()


def _row_match(pred_row: Row, gold_row: Row) -> tuple[float, float, float]:
    """(matched, pred-only, gold-only) cell fractions of one row pair, over the gold row's width."""
    width = len(gold_row)
    matches = sum(1 for v in pred_row if v in gold_row)
    pred_only = len(pred_row) - matches
    gold_only = sum(1 for v in gold_row if v not in pred_row)
    return matches / width, pred_only / width, gold_only / width


def soft_f1(pred_rows: Sequence[Row], gold_rows: Sequence[Row]) -> float:
    """BIRD mini-dev Soft-F1 between two results (1.0 when both are empty)."""
    if not pred_rows and not gold_rows:
        return 1.0
    pred = list(dict.fromkeys(pred_rows))
    gold = list(dict.fromkeys(gold_rows))
    tp = fp = fn = 0.0
    for i, gold_row in enumerate(gold):
        if i >= len(pred):
            fn += 1
            continue
        m, p_only, g_only = _row_match(pred[i], gold_row)
        tp, fp, fn = tp + m, fp + p_only, fn + g_only
    fp += max(0, len(pred) - len(gold))
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def score_soft_f1(items: Sequence[tuple[str, str, str]], *, timeout: float = 30.0, workers: int = 2,
                  max_rows: int = 100_000, executor: SQLExecutor | None = None) -> list[float | None]:
    """Soft-F1 for each `(gold_sql, pred_sql, db_path)`; 0.0 when the prediction fails or times out,
    None when the gold itself fails (not scorable)."""
    own = executor is None
    if executor is None:
        executor = SQLExecutor(timeout=timeout, max_rows=max_rows, workers=workers)
    try:
        runs = executor.execute_many([(db, sql) for gold, pred, db in items for sql in (gold, pred)],
                                     timeout=timeout, max_rows=max_rows)
    finally:
        if own:
            executor.close()
    out: list[float | None] = []
    for n in range(len(items)):
        g, p = runs[2 * n], runs[2 * n + 1]
        out.append(None if not g.ok else (soft_f1(p.rows, g.rows) if p.ok else 0.0))
    return out
