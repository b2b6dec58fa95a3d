"""Adaptive grouped tournament selection: the adaptive strategy of "A Preview of XiYan-SQL: A Multi-Generator Ensemble
Framework for Text-to-SQL" (arXiv 2411.08599) with the tournament of "Agentar-Scale-SQL: Advancing Text-to-SQL through
Orchestrated Test-Time Scaling" (arXiv 2509.24403)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from t2s_plugins.selector.adaptive_tournament.prompts import parse_choice

from t2s.db.types import ExecResult
from t2s.generation import ContextLimits
from t2s.llm import base as llm_base
from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import load_prompt
from t2s.select import (
    Cluster,
    SelectionLog,
    best_rank,
    check_options,
    cluster_results,
    describe,
    execute_candidates,
    pair_messages,
    rank_clusters,
    representative,
)
from t2s.stages import Selector
from t2s.types import Task

SCORING_MODES = ("auto", "logprob", "generate")
@dataclass
class _Plan:
    """One question's tournament: ranked executing clusters, the representatives (pool indices) that play."""

    task: Task
    results: list[ExecResult | None]
    ranked: list[Cluster]
    reps: list[int] = field(default_factory=list)
    games: list[tuple[int, int]] = field(default_factory=list)


class AdaptiveTournamentSelector(Selector):
    """Fast path when the pool agrees, else a round-robin of cluster representatives judged by the selection LLM.

    1. Execute every candidate (memoized) and cluster by result under the run's scoring semantics (`t2s.select`).
    2. Fast path: when all executing candidates fall in one cluster (non-executing ones never win), return its
       shortest SQL, no model call. No executing candidate at all: the shortest SQL of the largest group, no call.
    3. Otherwise one representative per executing cluster (its shortest SQL), ordered by cluster size (descending),
       then best member rank (`meta["member_rank"]`), then pool order; the first `max_representatives` play.
    4. Round-robin: every pair (i, j), i ranked higher, is shown as A=i, B=j (and also A=j, B=i when `both_orders`,
       which cancels the judge's position bias at twice the calls). The judge sees the question, the schema, both SQL
       and both results (first `max_result_rows` rows). It answers "A" or "B": scored by the log-probability of the
       two one-letter continuations when the backend can score (`scoring: auto` or `logprob`), else generated and
       parsed (an unreadable answer gives no point). All comparisons of a batch go in one model call.
    5. Winner = most wins; ties by cluster size, then member rank, then pool order.

    Per question, `<run_dir>/selection/<option>.jsonl` records the clusters, fast path or not, every comparison
    (who was A and B, the answer, log-probabilities when scored), the wins and the winner's margin (its wins minus
    the runner-up's).
    """

    def __init__(self, *, llm: str = "generator", prompt: str = "tournament_v1", dialect: str = "SQLite",
                 semantics: str = "spider", keep_distinct: bool = False, order: str = "auto",
                 max_representatives: int = 8, both_orders: bool = False, scoring: str = "auto",
                 max_result_rows: int = 5, max_cell_chars: int = 40, max_new_tokens: int = 4,
                 use_evidence: bool = True) -> None:
        check_options(semantics, order)
        if scoring not in SCORING_MODES:
            raise ValueError(f"selector.scoring={scoring!r}: choose one of {', '.join(SCORING_MODES)}")
        if max_representatives < 2:
            raise ValueError(f"selector.max_representatives={max_representatives}: at least 2 are needed for a game")
        self.llm_name = llm
        self.template = load_prompt(prompt)
        self.dialect = dialect
        self.semantics = semantics
        self.keep_distinct = keep_distinct
        self.order = order
        self.max_representatives = max_representatives
        self.both_orders = both_orders
        self.scoring = scoring
        self.max_result_rows = max_result_rows
        self.max_cell_chars = max_cell_chars
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
        self.limits = ContextLimits(use_evidence=use_evidence)

    # ------------------------------------------------------------------ judging

    def uses_logprobs(self) -> bool:
        """Whether comparisons are scored by log-probability (else generated and parsed)."""
        if self.scoring == "generate":
            return False
        can = getattr(llm_base, "ScoreRequest", None) is not None and bool(
            getattr(self.env.llm(self.llm_name), "supports_scoring", False))
        if self.scoring == "logprob" and not can:
            raise ValueError(f"selector.scoring=logprob but `llms.{self.llm_name}` cannot score continuations; "
                             f"use scoring=auto or generate, or a backend that scores (hf, llamacpp, vllm)")
        return can

    def messages(self, task: Task, a: int, b: int, results: list[ExecResult | None]) -> list[dict[str, str]]:
        """The judge's chat messages for candidates `a` (shown as A) and `b` (shown as B) of `task`."""
        cands = task.candidates
        ex = task.example
        return pair_messages(self.template, schema=self.env.full_view(ex).text, question=ex.question,
                             evidence=ex.evidence, use_evidence=self.limits.use_evidence, dialect=self.dialect,
                             sql_a=cands[a].sql, result_a=results[a], sql_b=cands[b].sql, result_b=results[b],
                             max_rows=self.max_result_rows, max_cell_chars=self.max_cell_chars)

    def judge(self, games: list[tuple[Task, list[dict[str, str]]]]) -> list[dict[str, Any]]:
        """One verdict per game: {"choice": "A" | "B" | None, ...}; all games in one model call."""
        if not games:
            return []
        if self.uses_logprobs():
            score_request = llm_base.ScoreRequest  # type: ignore[attr-defined]
            responses = self.env.score(self.llm_name, [(t, score_request.chat(m, ["A", "B"])) for t, m in games])
            out = []
            for r in responses:
                la, lb = (float(x) for x in r.logprobs[:2])
                out.append({"choice": "A" if la >= lb else "B", "logprob_a": la, "logprob_b": lb})
            return out
        responses = self.env.generate(self.llm_name, [(t, LLMRequest.chat(m, self.params)) for t, m in games])
        return [{"choice": parse_choice(r.text), "answer": r.text[:40]} for r in responses]

    # ------------------------------------------------------------------ the stage

    def run(self, tasks: list[Task]) -> None:
        all_results = execute_candidates(self.env, tasks, semantics=self.semantics, keep_distinct=self.keep_distinct)
        plans: list[_Plan] = []
        records: dict[str, dict[str, Any]] = {}
        for task, results in zip(tasks, all_results):
            cands = task.candidates
            clusters = cluster_results([c.sql for c in cands], results, semantics=self.semantics, order=self.order)
            ranked = rank_clusters(clusters, cands)
            rec: dict[str, Any] = {"qid": task.qid, "selector": self.origin, "candidates": len(cands),
                                   "clusters": describe(ranked, cands), "fast_path": False, "comparisons": [],
                                   "llm_calls": 0}
            records[task.qid] = rec
            if not cands:
                task.final_sql = ""
                rec["reason"] = "no candidates"
                continue
            playing = [c for c in ranked if c.executes]
            if len(playing) <= 1:
                win = ranked[0]
                task.final_sql = cands[representative(win, cands)].sql
                rec["fast_path"] = True
                rec["reason"] = "one executing cluster" if playing else "no executing candidate"
                rec["unanimous"] = len(clusters) == 1
                rec["margin"] = None
                continue
            plan = _Plan(task=task, results=results, ranked=playing[: self.max_representatives])
            plan.reps = [representative(c, cands) for c in plan.ranked]
            rec["representatives"] = [cands[i].id or str(i) for i in plan.reps]
            rec["capped"] = max(0, len(playing) - self.max_representatives)
            for i, j in itertools.combinations(range(len(plan.reps)), 2):
                plan.games.append((i, j))
                if self.both_orders:
                    plan.games.append((j, i))
            plans.append(plan)

        games = [(p.task, self.messages(p.task, p.reps[a], p.reps[b], p.results)) for p in plans for a, b in p.games]
        verdicts = iter(self.judge(games))
        for plan in plans:
            cands = plan.task.candidates
            wins = [0] * len(plan.reps)
            rec = records[plan.task.qid]
            mode = ""
            for a, b in plan.games:
                v = next(verdicts)
                mode = "logprob" if "logprob_a" in v else "generate"
                winner = {"A": a, "B": b}.get(v["choice"] or "")
                if winner is not None:
                    wins[winner] += 1
                rec["comparisons"].append({"a": cands[plan.reps[a]].id, "b": cands[plan.reps[b]].id,
                                           "winner": cands[plan.reps[winner]].id if winner is not None else None, **v})
            order = sorted(range(len(plan.reps)), key=lambda k: (-wins[k], -plan.ranked[k].size,
                                                                 best_rank(plan.ranked[k], cands), k))
            top = order[0]
            plan.task.final_sql = cands[plan.reps[top]].sql
            rec.update({"wins": {cands[plan.reps[k]].id: wins[k] for k in range(len(plan.reps))},
                        "winner": cands[plan.reps[top]].id, "margin": wins[top] - wins[order[1]],
                        "judge": mode, "llm_calls": len(plan.games)})
        SelectionLog(self.env.run_dir, self.name).write(list(records.values()))
