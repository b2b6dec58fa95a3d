"""The training rows of the tournament's pairwise judge, the selection model of "A Preview of XiYan-SQL: A
Multi-Generator Ensemble Framework for Text-to-SQL" (arXiv 2411.08599) and "Agentar-Scale-SQL: Advancing Text-to-SQL
through Orchestrated Test-Time Scaling" (arXiv 2509.24403): row kind `select_pair` (`SelectPairRows`,
`conf/train/rows/select_pair.yaml`), trained by `t2s train train=selection` (SFT) or `train=grpo
train.reward.task=select_pair` and loaded by `selector=adaptive_tournament` (`llms.selector.adapter=<out>/adapter`).

A row is the question, the schema and two candidates with their execution results (`t2s.select.pair_messages`, the
messages the selector asks with `prompt`, `tournament_v1`) -> "A" / "B". Pairs are (correct, wrong) from a run's
candidate pools (`train.data.predictions`) plus hard negatives from perturbed gold SQL; the correct one is put first
in exactly half the rows over the whole build (order balance), and wrong candidates alternate between pool and
perturbation origins when both exist.
"""

from __future__ import annotations

from typing import Any

from t2s.eval.execution import prepare_sql
from t2s.select import pair_messages
from t2s.train.rows import RowBuilder, RowContext, RowSettings, TrainRow, wrong_candidates


class SelectPairRows(RowBuilder):
    """`select_pair`: (correct, wrong) candidate pairs -> the correct one's letter, at most `pairs_per_question` per
    question. `prompt`: the judge's template (the selector's `prompt`; keep them equal). `semantics` /
    `keep_distinct`: how the candidates are executed for the results the rows show (the selector's
    `eval.semantics` / `eval.keep_distinct`; `train.data.semantics` / `train.data.keep_distinct` by default)."""

    def __init__(self, *, prompt: str = "tournament_v1", semantics: str = "spider", keep_distinct: bool = False) -> None:
        prepare_sql("SELECT 1", semantics=semantics)  # an unknown semantics fails here, naming the choices
        self.prompt = prompt
        self.semantics = semantics
        self.keep_distinct = keep_distinct
        self._n_pairs = 0

    def begin(self, data: RowSettings) -> None:
        self._n_pairs = 0  # order balance is counted over the whole build

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        ex, data = ctx.example, ctx.data
        gold = (ex.gold_sql or "").strip()
        right = [c["sql"] for c in ctx.pool if c.get("correct") and c["sql"].strip()] or [gold]
        wrong_pool = [c for c in wrong_candidates(ex, ctx.pool, ctx.executor) if c[2] == "pool"]
        wrong_pert = [c for c in wrong_candidates(ex, [], ctx.executor) if c[2] != "pool"]
        wrong: list[tuple[str, str, str]] = []
        while (wrong_pool or wrong_pert) and len(wrong) < data.pairs_per_question:  # alternate origins
            for src in (wrong_pool, wrong_pert):
                if src and len(wrong) < data.pairs_per_question:
                    wrong.append(src.pop(0))
        t = data.prompt(self.prompt)
        out = []
        for i, (bad, _, origin) in enumerate(wrong):
            good = right[i % len(right)]
            first = self._n_pairs % 2 == 0  # alternate over the whole set: correct-first in half the rows
            self._n_pairs += 1
            a, b = (good, bad) if first else (bad, good)
            # executed as the tournament executes candidates (`t2s.select.execute_candidates`), shown as written
            run = [prepare_sql(x, semantics=self.semantics, keep_distinct=self.keep_distinct) for x in (a, b)]
            res: list[Any] = (ctx.executor.execute_many([(ex.db_path, x) for x in run]) if ctx.executor is not None
                              else [None, None])
            out.append(self.row(ctx, pair_messages(t, schema=ctx.view.text, question=ex.question, evidence=ex.evidence,
                                                   use_evidence=data.limits.use_evidence, dialect=data.dialect,
                                                   sql_a=a, result_a=res[0], sql_b=b, result_b=res[1]),
                                "A" if first else "B", prompt=t.id, wrong_origin=origin))
        return out
