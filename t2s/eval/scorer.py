"""Scoring a run's predictions: one record per question, and the metrics summary over a run.

Used by `t2s run` (batch by batch, as questions finish) and by `t2s eval` (any system's predictions),
so both produce the same `metrics.json` and report. Which semantics were used is recorded in every
record (`eval_fingerprint`) and in the metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from t2s.db.execute import SQLExecutor
from t2s.db.introspect import introspect
from t2s.db.types import DatabaseSchema
from t2s.eval.errors import categorize_error
from t2s.eval.exact_match import aggregate_partial, exact_match
from t2s.eval.execution import score_execution
from t2s.eval.features import sql_features
from t2s.eval.hardness import spider_hardness
from t2s.eval.predictions import empty_prediction_summary
from t2s.eval.ves import score_soft_f1, score_ves
from t2s.stages import SQL_STAGES
from t2s.types import Example

log = logging.getLogger("t2s")

#: the keys of a prediction record that are not scores (everything else is recomputed on re-scoring)
RECORD_KEYS = ("qid", "db_id", "question", "evidence", "gold_sql", "final_sql", "pipeline_error", "candidates", "dropped")

#: the stages whose effect on the representative SQL (first candidate; final SQL after the selector) is attributed:
#: those whose kind writes candidates or the final SQL (`t2s.stages.Stage.writes`)
ATTRIBUTED = SQL_STAGES


class Scorer:
    """Scores predictions against gold SQL by execution (`semantics`: "spider" or "bird"), exact-set match,
    Spider hardness, SQL features and error categories; optionally BIRD's VES and Soft-F1."""

    def __init__(self, *, semantics: str = "spider", timeout: float = 30.0, workers: int = 2,
                 keep_distinct: bool = False, exact_match: bool = True, ves: bool = False, ves_iterations: int = 100,
                 soft_f1: bool = False, error_examples: int = 3, max_memory_mb: int = 1024,
                 max_result_mb: float = 256.0, cache_dir: Path | None = None) -> None:
        if semantics not in ("spider", "bird"):
            raise ValueError(f"eval.semantics={semantics!r}: use 'spider' (test-suite) or 'bird' (set comparison)")
        self.semantics = semantics
        self.timeout = timeout
        self.workers = workers
        self.keep_distinct = keep_distinct
        self.use_exact = exact_match
        self.ves = ves
        self.ves_iterations = ves_iterations
        self.soft_f1 = soft_f1
        self.error_examples = error_examples
        self.cache_dir = cache_dir
        self.max_memory_mb = max_memory_mb
        self.max_result_mb = max_result_mb
        self._schemas: dict[str, DatabaseSchema] = {}
        self._executor: SQLExecutor | None = None

    @property
    def executor(self) -> SQLExecutor:
        """One worker pool for the scorer's lifetime (started on first use, stopped by `close`)."""
        if self._executor is None:
            self._executor = SQLExecutor(timeout=self.timeout, max_rows=100_000, workers=self.workers,
                                         decode_errors="ignore" if self.semantics == "spider" else "replace",
                                         max_memory_mb=self.max_memory_mb, max_result_mb=self.max_result_mb)
        return self._executor

    @classmethod
    def from_config(cls, eval_cfg: Any, *, cache_dir: Path | None) -> Scorer:
        c = dict(eval_cfg)
        return cls(**c, cache_dir=cache_dir)

    @property
    def settings(self) -> dict[str, Any]:
        return {"semantics": self.semantics, "timeout": self.timeout, "keep_distinct": self.keep_distinct,
                "exact_match": self.use_exact, "ves": self.ves, "ves_iterations": self.ves_iterations,
                "soft_f1": self.soft_f1}

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:12]

    def schema(self, ex: Example) -> DatabaseSchema | None:
        if ex.db_path not in self._schemas:
            try:
                self._schemas[ex.db_path] = introspect(
                    ex.db_path, ex.db_id, n_samples=0,
                    cache_dir=self.cache_dir / "schemas" if self.cache_dir else None)
            except Exception as e:  # noqa: BLE001 - a broken database must not stop scoring
                log.warning("cannot read the schema of %s (%s): error categories fall back to execution errors", ex.db_path, e)
                return None
        return self._schemas[ex.db_path]

    def _execute(self, items: list[tuple[str, str, list[str]]]) -> list[Any]:
        return score_execution(items, semantics=self.semantics, timeout=self.timeout, workers=self.workers,
                               keep_distinct=self.keep_distinct, cache_dir=self.cache_dir, executor=self.executor)

    def score(self, examples: list[Example], preds: dict[str, str],
              traces: list[list[Any]] | None = None,
              candidates: dict[str, list[str]] | None = None,
              dropped: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        """One score record per example (same order). Examples without gold SQL get `correct: None`.

        With `candidates` ({qid: [sql, ...]}, the final pool, in the record's order), every candidate gets a verdict
        too: `candidate_correct` (same order), and `oracle`: some candidate of the pool, or the final SQL, is correct
        (the pool's upper bound). `dropped` (candidates that left the pool, e.g. a fixer's inputs) get
        `dropped_correct`, so repair chains can be scored. Gold results are cached: one execution per distinct SQL.
        """
        gold = [(i, ex) for i, ex in enumerate(examples) if ex.gold_sql]
        items = [(ex.gold_sql or "", preds.get(ex.qid, ""), list(ex.meta.get("db_paths") or [ex.db_path]))
                 for _, ex in gold]
        verdicts = dict(zip((i for i, _ in gold), self._execute(items))) if items else {}
        out: list[dict[str, Any]] = []
        for i, ex in enumerate(examples):
            pred = preds.get(ex.qid, "")
            rec: dict[str, Any] = {"eval_fingerprint": self.fingerprint, "difficulty": ex.difficulty}
            if i not in verdicts:
                rec.update(correct=None, status="no_gold")
                out.append(rec)
                continue
            v = verdicts[i]
            rec.update(correct=bool(v.correct), status=v.status, pred_error=v.pred_error, gold_error=v.gold_error,
                       exec_seconds=v.seconds)
            gold_sql = ex.gold_sql or ""
            try:
                rec["hardness"] = spider_hardness(gold_sql)
            except Exception:  # noqa: BLE001 - unparsable gold has no hardness
                rec["hardness"] = None
            try:
                rec["features"] = sorted(sql_features(gold_sql))
            except Exception:  # noqa: BLE001
                rec["features"] = []
            schema = self.schema(ex)
            if self.use_exact:
                em = exact_match(pred, gold_sql, schema)
                rec["exact"] = bool(em.exact)
                rec["partial"] = em.partial
            if not v.correct and v.status != "gold_error":
                rec["error_category"] = categorize_error(pred, gold_sql, schema, v.status, v.pred_error)
            out.append(rec)
        bird_items = [(ex.gold_sql or "", preds.get(ex.qid, ""), ex.db_path) for _, ex in gold]
        if self.ves and bird_items:
            # timed runs go one question at a time (upstream's num_cpus=1) so time ratios stay comparable
            with SQLExecutor(timeout=self.timeout, max_rows=1_000_000, workers=1) as timer:
                for (i, _), r in zip(gold, score_ves(bird_items, iterations=self.ves_iterations, timeout=self.timeout,
                                                     executor=timer)):
                    out[i]["ves_reward"] = r.reward if r.status != "gold_error" else None
        if self.soft_f1 and bird_items:
            for (i, _), f1 in zip(gold, score_soft_f1(bird_items, timeout=self.timeout, executor=self.executor)):
                out[i]["soft_f1"] = f1
        if traces is not None:
            self._attribute(examples, traces, out, preds)
        if candidates is not None:
            self._score_candidates(examples, candidates, dropped or {}, out, preds)
        return out

    def _verdicts(self, examples: list[Example], wanted: list[tuple[int, str]],
                  known: dict[tuple[int, str], bool]) -> dict[tuple[int, str], bool]:
        """Correctness of (example index, SQL) pairs, executing only those not in `known`."""
        todo = list(dict.fromkeys(k for k in wanted if k not in known))
        if todo:
            items = [(examples[i].gold_sql or "", s, list(examples[i].meta.get("db_paths") or [examples[i].db_path]))
                     for i, s in todo]
            for k, v in zip(todo, self._execute(items)):
                known[k] = bool(v.correct)
        return known

    def _score_candidates(self, examples: list[Example], candidates: dict[str, list[str]], dropped: dict[str, list[str]],
                          out: list[dict[str, Any]], preds: dict[str, str]) -> None:
        known = {(i, preds.get(ex.qid, "")): out[i]["correct"] for i, ex in enumerate(examples)
                 if out[i]["correct"] is not None}
        wanted = [(i, s) for i, ex in enumerate(examples) if out[i]["correct"] is not None
                  for s in [*candidates.get(ex.qid, []), *dropped.get(ex.qid, [])]]
        known = self._verdicts(examples, wanted, known)
        for i, ex in enumerate(examples):
            if out[i]["correct"] is None:
                continue
            out[i]["candidate_correct"] = [known[(i, s)] for s in candidates.get(ex.qid, [])]
            if dropped.get(ex.qid):
                out[i]["dropped_correct"] = [known[(i, s)] for s in dropped[ex.qid]]
            out[i]["oracle"] = bool(out[i]["correct"]) or any(out[i]["candidate_correct"])

    def _attribute(self, examples: list[Example], traces: list[list[Any]], out: list[dict[str, Any]],
                   preds: dict[str, str]) -> None:
        """Correctness of the representative SQL before and after each attributed stage (`stage_outcomes`)."""
        wanted: dict[tuple[int, str], None] = {}
        plan: list[tuple[int, str, str, str | None, str | None]] = []
        for i, (ex, events) in enumerate(zip(examples, traces)):
            if not ex.gold_sql:
                continue
            for ev in events:
                e = ev if isinstance(ev, dict) else ev.to_dict()
                if e["stage"] not in ATTRIBUTED:
                    continue
                before = e["sql_before"][0] if e["sql_before"] else None
                after = e["sql_after"][0] if e["sql_after"] else None
                plan.append((i, e["stage"], e["plugin"], before, after))
                for s in (before, after):
                    if s is not None:
                        wanted[(i, s)] = None
        known = {(i, preds.get(ex.qid, "")): out[i]["correct"] for i, ex in enumerate(examples) if out[i]["correct"] is not None}
        known = self._verdicts(examples, list(wanted), known)
        for i, stage, plugin, before, after in plan:
            out[i].setdefault("stage_outcomes", []).append({
                "stage": stage, "plugin": plugin,
                "before": None if before is None else known[(i, before)],
                "after": None if after is None else known[(i, after)],
            })

    def rescore_stale(self, examples: list[Example], records: list[dict[str, Any]], store: Any) -> list[dict[str, Any]]:
        """Re-score `records` scored with other eval settings (e.g. `eval.semantics` changed on a resumed run).

        Every score field is recomputed (stage outcomes from the stored traces too); stored records outside
        `records` (questions not selected this time) are kept in `predictions.jsonl` untouched.
        """
        stale = [r for r in records if r.get("eval_fingerprint") != self.fingerprint]
        if not stale:
            return records
        log.info("re-scoring %d prediction(s) with the current eval settings", len(stale))
        by_qid = {ex.qid: ex for ex in examples}
        exs = [by_qid[r["qid"]] for r in stale]
        traces = store.traces()
        scores = self.score(exs, {r["qid"]: r.get("final_sql", "") for r in stale},
                            traces=[traces.get(r["qid"], {}).get("events", []) for r in stale],
                            candidates={r["qid"]: [c["sql"] for c in r.get("candidates") or []] for r in stale},
                            dropped={r["qid"]: [c["sql"] for c in r.get("dropped") or []] for r in stale})
        fresh = {r["qid"]: {**{k: v for k, v in r.items() if k in RECORD_KEYS}, **s} for r, s in zip(stale, scores)}
        store.rewrite_predictions([fresh.get(r["qid"], r) for r in store.records()])
        return [fresh.get(r["qid"], r) for r in records]

    def close(self) -> None:
        """Stop the worker pool."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None


def _pct(num: int, den: int) -> float | None:
    return None if den == 0 else 100.0 * num / den


def _breakdown(records: list[dict[str, Any]], key: Any) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        for k in key(r):
            groups[str(k)].append(bool(r["correct"]))
    return {k: {"n": len(v), "correct": sum(v), "ex": _pct(sum(v), len(v))} for k, v in sorted(groups.items())}


def price_of(model: str, prices: dict[str, Any]) -> dict[str, float] | None:
    """The price entry for a model id: exact key first, then the id before '@' or ':' (e.g. "qwen2.5-coder-0.5b")."""
    for key in (model, model.split("@")[0], model.split(":")[0]):
        if key in prices:
            return prices[key]
    return None


def cost_summary(traces: dict[str, dict[str, Any]], n: int, prices: dict[str, Any] | None = None) -> dict[str, Any]:
    """Totals, per-question means and per-stage totals of LLM calls, tokens and seconds from the traces.

    With a price table (`prices: {model_id: {prompt: USD per 1M tokens, completion: USD per 1M tokens}}`),
    also `usd` totals per stage and overall and `usd_per_question`; models missing from the table are listed
    in `unpriced_models` rather than counted as free.
    """
    fields = ("llm_calls", "cached_calls", "completions", "prompt_tokens", "completion_tokens", "model_seconds", "db_seconds",
              "db_queries", "seconds")
    totals: dict[str, float] = dict.fromkeys(fields, 0)
    per_stage: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(fields, 0))
    unpriced: set[str] = set()
    for t in traces.values():
        for e in t["events"]:
            for f in fields:
                totals[f] += e.get(f, 0)
                per_stage[e["stage"]][f] += e.get(f, 0)
            if prices:
                for model, c in (e.get("models") or {}).items():
                    p = price_of(model, prices)
                    if p is None:
                        unpriced.add(model)
                        continue
                    usd = (c.get("prompt_tokens", 0) * float(p.get("prompt", 0.0))
                           + c.get("completion_tokens", 0) * float(p.get("completion", 0.0))) / 1e6
                    totals["usd"] = totals.get("usd", 0.0) + usd
                    per_stage[e["stage"]]["usd"] = per_stage[e["stage"]].get("usd", 0.0) + usd
    if prices:
        totals.setdefault("usd", 0.0)
    if any("completions" not in e for t in traces.values() for e in t["events"] if e.get("llm_calls")):
        # traces written before completions were counted: unknown, not zero
        totals.pop("completions")
        for s in per_stage.values():
            s.pop("completions", None)
    totals["new_llm_calls"] = totals["llm_calls"] - totals["cached_calls"]
    totals["wall_seconds"] = totals.pop("seconds")
    for s in per_stage.values():
        s["wall_seconds"] = s.pop("seconds")
    means = {f"{k}_per_question": (v / n if n else 0.0) for k, v in totals.items()}
    out: dict[str, Any] = {"totals": totals, "means": means, "per_stage": dict(per_stage)}
    if unpriced:
        out["unpriced_models"] = sorted(unpriced)
    return out


def attribution(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage: fixed (output correct, input wrong), broken (the reverse), unchanged; overcorrection = broken / input correct.

    Questions where the stage had no input SQL (the first generator) count as `no_input`, not as fixed.
    """
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        for o in r.get("stage_outcomes", []):
            key = f"{o['stage']}/{o['plugin']}"
            a = out.setdefault(key, {"stage": o["stage"], "plugin": o["plugin"], "fixed": 0, "broken": 0,
                                     "unchanged": 0, "input_correct": 0, "no_input": 0, "n": 0})
            a["n"] += 1
            if o["before"] is None:  # nothing to fix or break (e.g. the first generator): not attributed
                a["no_input"] += 1
                continue
            before, after = bool(o["before"]), bool(o["after"])
            a["input_correct"] += before
            if after and not before:
                a["fixed"] += 1
            elif before and not after:
                a["broken"] += 1
            else:
                a["unchanged"] += 1
    for a in out.values():
        a["overcorrection_rate"] = a["broken"] / a["input_correct"] if a["input_correct"] else None
    return out


def candidate_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Candidate pools: mean pool size, share of correct candidates, and how generations ended (`finish_reason` in
    each candidate's metadata: "stop", "length" = ran to max_new_tokens, "loop" = stopped by the repetition guard)."""
    sizes = [len(r.get("candidates") or []) for r in records]
    verdicts = [v for r in records for v in (r.get("candidate_correct") or [])]
    reasons = Counter(str((c.get("meta") or {}).get("finish_reason")) for r in records for c in r.get("candidates") or []
                      if (c.get("meta") or {}).get("finish_reason"))
    return {"mean_pool": (sum(sizes) / len(sizes)) if sizes else 0.0, "total": sum(sizes),
            "correct_share": _pct(sum(verdicts), len(verdicts)),
            "finish_reasons": dict(reasons), "stopped_by_loop": reasons.get("loop", 0),
            "hit_max_tokens": reasons.get("length", 0)}


def summarize(records: list[dict[str, Any]], traces: dict[str, dict[str, Any]], *, skipped: list[dict[str, Any]],
              dataset: str, scorer: Scorer, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics of a run: EX, exact match, breakdowns, error categories, timeouts, skipped, cost, attribution."""
    scored = [r for r in records if r.get("correct") is not None and r.get("status") != "gold_error"]
    gold_errors = [r["qid"] for r in records if r.get("status") == "gold_error"]
    n_ok = sum(bool(r["correct"]) for r in scored)
    exact = [r for r in scored if "exact" in r]
    errors = Counter(r["error_category"] for r in scored if not r["correct"] and r.get("error_category"))
    skip_reasons = Counter(s.get("reason", "?") for s in skipped)
    metrics: dict[str, Any] = {
        "dataset": dataset,
        "eval": scorer.settings,
        "n": len(records),
        "scored": len(scored),
        "correct": n_ok,
        "ex": _pct(n_ok, len(scored)),
        "oracle": _pct(sum(bool(r.get("oracle")) for r in scored), len(scored))
        if any("oracle" in r for r in scored) else None,
        "candidates": candidate_summary(scored),
        "exact_match": _pct(sum(bool(r["exact"]) for r in exact), len(exact)) if exact else None,
        "timeouts": sum(r.get("status") == "timeout" for r in scored),
        "resource_limits": sum(r.get("status") == "resource_limit" for r in scored),
        "empty_predictions": empty_prediction_summary(scored),
        "rejected": sum(r.get("status") == "rejected" for r in scored),
        "pred_errors": sum(r.get("status") == "error" for r in scored),
        "pipeline_errors": {"count": sum(bool(r.get("pipeline_error")) for r in records),
                            "qids": [r["qid"] for r in records if r.get("pipeline_error")][:50]},
        "gold_errors": {"count": len(gold_errors), "qids": gold_errors[:50]},
        "skipped": {"count": len(skipped), "by_reason": dict(skip_reasons),
                    "db_ids": sorted({s.get("db_id", "?") for s in skipped})},
        "by_hardness": _breakdown(scored, lambda r: [r["hardness"]] if r.get("hardness") else []),
        "by_difficulty": _breakdown(scored, lambda r: [r["difficulty"]] if r.get("difficulty") else []),
        "by_db": _breakdown(scored, lambda r: [r["db_id"]]),
        "by_feature": _breakdown(scored, lambda r: r.get("features") or ["simple"]),
        "error_categories": dict(errors.most_common()),
        "partial": aggregate_partial([_PartialView(r["partial"]) for r in exact if r.get("partial")]) if exact else {},
        "cost": cost_summary(traces, len(records), (config or {}).get("prices")),
        "attribution": attribution(scored),
    }
    ves_rewards = [r["ves_reward"] for r in scored if r.get("ves_reward") is not None]
    if ves_rewards:
        metrics["ves"] = 100.0 * sum(math.sqrt(x) for x in ves_rewards) / len(ves_rewards)
    f1s = [r["soft_f1"] for r in scored if r.get("soft_f1") is not None]
    if f1s:
        metrics["soft_f1"] = 100.0 * sum(f1s) / len(f1s)
    return metrics


class _PartialView:
    """Adapts a stored `partial` dict to what `aggregate_partial` reads."""

    def __init__(self, partial: dict[str, Any]) -> None:
        self.partial = partial
        self.exact = False
        self.error = None
