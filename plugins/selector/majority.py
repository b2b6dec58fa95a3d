"""Majority vote over execution results: self-consistency ("Self-Consistency Improves Chain of Thought Reasoning in
Language Models", arXiv 2203.11171), the baseline every selector must beat."""

from __future__ import annotations

from t2s.select import SelectionLog, check_options, cluster_tasks, describe, rank_clusters, representative
from t2s.stages import Selector
from t2s.types import Task


class MajoritySelector(Selector):
    """Final SQL = the shortest SQL of the largest execution-result cluster.

    Every candidate is executed once (`env.execute_many`, memoized for the run) as the scorer would execute it and
    clustered with the run's scoring semantics (`t2s.select`). Clusters rank: executing before non-executing (a
    failing candidate never wins over one that runs), larger first, then the best generator rank among members
    (`meta["member_rank"]`, set by the ensemble generator: members listed best first), then pool order. Inside the
    winning cluster: shortest SQL, then member rank, then pool order. No model call. Per question, the clusters and
    the winner's margin (its size minus the runner-up's) go to `<run_dir>/selection/<option>.jsonl`.
    """

    def __init__(self, *, semantics: str = "spider", keep_distinct: bool = False, order: str = "auto") -> None:
        check_options(semantics, order)
        self.semantics = semantics
        self.keep_distinct = keep_distinct
        self.order = order

    def run(self, tasks: list[Task]) -> None:
        all_clusters = cluster_tasks(self.env, tasks, semantics=self.semantics, keep_distinct=self.keep_distinct,
                                     order=self.order)
        records = []
        for task, clusters in zip(tasks, all_clusters):
            if not task.candidates:
                task.final_sql = ""
                continue
            ranked = rank_clusters(clusters, task.candidates)
            win = ranked[0]
            task.final_sql = task.candidates[representative(win, task.candidates)].sql
            runner_up = ranked[1].size if len(ranked) > 1 and ranked[1].executes else 0
            records.append({"qid": task.qid, "selector": self.origin, "candidates": len(task.candidates),
                            "clusters": describe(ranked, task.candidates), "order_matters": win.order_matters,
                            "unanimous": len(clusters) == 1 and win.executes, "winner_size": win.size,
                            "margin": win.size - runner_up if win.executes else 0, "llm_calls": 0})
        SelectionLog(self.env.run_dir, self.name).write(records)
