"""Execution-result clustering of SQL candidates under the run's scoring semantics: the first phase of the adaptive
selection of "A Preview of XiYan-SQL: A Multi-Generator Ensemble Framework for Text-to-SQL" (arXiv 2411.08599).

Selectors (`selector=majority`, `selector=adaptive_tournament`), search rewards and training data
builders (preference pairs, "which candidates agree") share this module, so "two candidates give the same answer"
means the same thing everywhere, and the same thing as in scoring:

- The SQL that is executed is the SQL the scorer would execute (`t2s.eval.execution.prepare_sql`): under the `spider`
  semantics DISTINCT is removed and "> =" normalized unless `keep_distinct`; under `bird` the SQL runs unchanged.
- Two results are equal when `t2s.eval.execution.results_equal` says so: `spider` compares rows as multisets with
  columns permutable (lists when order matters), `bird` compares row sets (duplicates and row order ignored).
- Whether row order matters: scoring decides it from the gold SQL ("order by" in its text), which a selector does not
  have. `order="auto"` (default) lets the pool vote: order matters for a question when more than half of its executing
  candidates' SQL contains "order by" (the pool's estimate of the gold having ORDER BY); `always` / `never` force it.
  One decision per question keeps the relation an equivalence (a pairwise rule would not be transitive).
- A candidate that does not execute (error, timeout, rejected write, empty SQL) never shares a cluster with an
  executing one; non-executing candidates group by identical SQL text only. Empty results are results (two empty
  results are equal, as in scoring).
- Truncated results (the run's `db.max_rows` cap) compare on the rows fetched.

Clusters come out in pool order of their first member; ranking them is the selector's job (`rank_clusters` gives
the majority order: executing first, larger first, then best member rank, then pool order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from t2s.db.types import ExecResult
from t2s.eval.execution import SEMANTICS, prepare_sql, results_equal
from t2s.generation import template_messages
from t2s.prompts import PromptTemplate
from t2s.records import StageLog
from t2s.types import Candidate, Task

if TYPE_CHECKING:
    from t2s.env import Env

ORDER_MODES = ("auto", "always", "never")


@dataclass
class Cluster:
    """Candidates (indices into the pool, in pool order) whose execution results are equal.

    `result` is the first member's result (None when the members do not execute); `executes` says whether the
    members executed without error. `order_matters` is the per-question decision the comparison used.
    """

    members: list[int]
    result: ExecResult | None
    executes: bool
    order_matters: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.members)


def member_rank(candidate: Candidate) -> int:
    """A candidate's generator rank (0 = best): `meta["member_rank"]` set by the ensemble generator, else 0."""
    r = candidate.meta.get("member_rank")
    return int(r) if isinstance(r, int | float) else 0


def sql_length(sql: str) -> int:
    """Length used for "shortest SQL": characters after collapsing whitespace."""
    return len(" ".join(sql.split()))


def check_options(semantics: str, order: str) -> None:
    """Fail with a message naming the key when `semantics` or `order` is not a known value."""
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics={semantics!r}: choose one of {', '.join(SEMANTICS)} (selector key `semantics`, "
                         f"default ${{eval.semantics}})")
    if order not in ORDER_MODES:
        raise ValueError(f"order={order!r}: choose one of {', '.join(ORDER_MODES)} (selector key `order`)")


def decide_order(sqls: Sequence[str], executes: Sequence[bool], order: str = "auto") -> bool:
    """Whether row order counts for one question (see the module docstring: a majority of executing candidates'
    SQL containing "order by", or forced by `order`)."""
    if order != "auto":
        return order == "always"
    ok = [s for s, e in zip(sqls, executes) if e]
    return bool(ok) and 2 * sum("order by" in s.lower() for s in ok) > len(ok)


def same_result(a: ExecResult, b: ExecResult, *, semantics: str = "spider", order_matters: bool = False) -> bool:
    """Whether two successful results denote the same answer under `semantics` (`results_equal`)."""
    if not (a.ok and b.ok):
        return False
    ra, rb = [tuple(r) for r in a.rows], [tuple(r) for r in b.rows]
    if semantics == "spider" and ra and rb and len(ra[0]) != len(rb[0]):
        return False
    return results_equal(ra, rb, semantics=semantics, order_matters=order_matters)


def cluster_results(sqls: Sequence[str], results: Sequence[ExecResult | None], *, semantics: str = "spider",
                    order: str = "auto") -> list[Cluster]:
    """Group one question's candidates by execution result (see the module docstring).

    `results[i]` is the result of candidate i's executed SQL, or None when it was not executed (empty SQL). Greedy
    single pass: a candidate joins the first executing cluster whose result equals its own.
    """
    check_options(semantics, order)
    executes = [r is not None and r.ok for r in results]
    om = decide_order(sqls, executes, order)
    clusters: list[Cluster] = []
    failed: dict[str, Cluster] = {}
    for i, (sql, r) in enumerate(zip(sqls, results)):
        if not executes[i]:
            key = " ".join(sql.split())
            if key in failed:
                failed[key].members.append(i)
            else:
                failed[key] = Cluster(members=[i], result=r, executes=False, order_matters=om)
                clusters.append(failed[key])
            continue
        assert r is not None
        for c in clusters:
            if c.executes and c.result is not None and same_result(c.result, r, semantics=semantics, order_matters=om):
                c.members.append(i)
                break
        else:
            clusters.append(Cluster(members=[i], result=r, executes=True, order_matters=om))
    return clusters


def execute_candidates(env: Env, tasks: Sequence[Task], *, semantics: str = "spider",
                       keep_distinct: bool = False) -> list[list[ExecResult | None]]:
    """Execute every candidate of every task (one `env.execute_many` call: parallel, memoized, charged), the SQL
    prepared as the scorer prepares it. Empty SQL is not executed (None)."""
    items: list[tuple[Task, str]] = []
    where: list[list[int | None]] = []
    for task in tasks:
        row: list[int | None] = []
        for c in task.candidates:
            if c.sql.strip():
                row.append(len(items))
                items.append((task, prepare_sql(c.sql, semantics=semantics, keep_distinct=keep_distinct)))
            else:
                row.append(None)
        where.append(row)
    results = env.execute_many(items)
    return [[results[k] if k is not None else None for k in row] for row in where]


def cluster_tasks(env: Env, tasks: Sequence[Task], *, semantics: str = "spider", keep_distinct: bool = False,
                  order: str = "auto") -> list[list[Cluster]]:
    """`cluster_results` for each task's candidates, executing them all in one batch first."""
    check_options(semantics, order)
    all_results = execute_candidates(env, tasks, semantics=semantics, keep_distinct=keep_distinct)
    return [cluster_results([c.sql for c in t.candidates], res, semantics=semantics, order=order)
            for t, res in zip(tasks, all_results)]


def representative(cluster: Cluster, candidates: Sequence[Candidate]) -> int:
    """The pool index of a cluster's representative: shortest SQL, then best member rank, then pool order."""
    return min(cluster.members, key=lambda i: (sql_length(candidates[i].sql), member_rank(candidates[i]), i))


def best_rank(cluster: Cluster, candidates: Sequence[Candidate]) -> int:
    """The best (lowest) member rank among a cluster's candidates."""
    return min(member_rank(candidates[i]) for i in cluster.members)


def rank_clusters(clusters: Sequence[Cluster], candidates: Sequence[Candidate]) -> list[Cluster]:
    """Majority order: executing clusters first, then larger first, then best member rank, then pool order."""
    return sorted(clusters, key=lambda c: (not c.executes, -c.size, best_rank(c, candidates), c.members[0]))


def describe(clusters: Sequence[Cluster], candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
    """JSON-ready summary of clusters for traces: member candidate ids, size, whether they execute, row count."""
    return [{"ids": [candidates[i].id or str(i) for i in c.members], "size": c.size, "executes": c.executes,
             "rows": len(c.result.rows) if c.result is not None and c.executes else None,
             "status": c.result.status if c.result is not None else "not_run"} for c in clusters]


class SelectionLog(StageLog):
    """Per-question selection records of one selector, appended to `<run_dir>/selection/<option>.jsonl`.

    A selector writes only `task.final_sql` (its kind's contract), so what it decided (clusters, fast path,
    comparisons, margin) goes to this trace-side file (`t2s.records.StageLog`), one JSON object per question with its
    `qid`; a resumed run appends again, and `read` keeps the last record per question.
    """

    def __init__(self, run_dir: Any, option: str) -> None:
        super().__init__(run_dir, "selection", option or "selector")


def format_result(result: ExecResult | None, *, max_rows: int = 5, max_cell_chars: int = 40) -> str:
    """A short text of an execution result for prompts: row count, column names, the first `max_rows` rows with
    each cell cut to `max_cell_chars` characters (or the error)."""
    if result is None:
        return "not executed"
    if not result.ok:
        return "timed out" if result.timed_out else f"error: {(result.error or '')[:200]}"
    n = len(result.rows)
    head = f"{n}{'+' if result.truncated else ''} row{'s' if n != 1 else ''}"
    if result.columns:
        head += f", columns ({', '.join(result.columns)})"
    if not n:
        return head + " (empty)"

    def cell(v: Any) -> str:
        s = repr(v) if isinstance(v, str) else str(v)
        return s if len(s) <= max_cell_chars else s[:max_cell_chars] + "..."

    rows = "; ".join("(" + ", ".join(cell(v) for v in r) + ")" for r in result.rows[:max_rows])
    return f"{head}: {rows}{' ...' if n > max_rows else ''}"


def pair_messages(template: PromptTemplate, *, schema: str, question: str, evidence: str, sql_a: str,
                  result_a: ExecResult | None, sql_b: str, result_b: ExecResult | None, use_evidence: bool = True,
                  dialect: str = "SQLite", max_rows: int = 5, max_cell_chars: int = 40) -> list[dict[str, str]]:
    """A pairwise judge's prompt: two candidates (shown as A and B) with their execution results. The
    `adaptive_tournament` selector asks it, and the selection model's training rows (row kind `select_pair`,
    `plugins/selector/adaptive_tournament/rows.py`) are built with it too, so the trained judge sees its inference
    prompt."""
    return template_messages(template, schema=schema, question=question, evidence=evidence, use_evidence=use_evidence,
                             dialect=dialect, sql_a=sql_a, sql_b=sql_b,
                             result_a=format_result(result_a, max_rows=max_rows, max_cell_chars=max_cell_chars),
                             result_b=format_result(result_b, max_rows=max_rows, max_cell_chars=max_cell_chars))


def selection_report(run_dir: Any) -> dict[str, Any]:
    """One row of the selection table of a run directory: EX, the pool's oracle upper bound, LLM calls and model +
    database seconds per question (cache-independent: cached answers keep their first cost), and, from the
    selectors' records (`selection/*.jsonl`): the share of questions decided without a model call (`fast_path_rate`,
    selectors that have a fast path), the share whose candidates all agree (`unanimous_rate`: one cluster), the mean
    number of clusters and of comparisons per question."""
    import json
    from pathlib import Path

    d = Path(run_dir)
    m = json.loads((d / "metrics.json").read_text())
    means = (m.get("cost") or {}).get("means", {})
    row: dict[str, Any] = {"run": d.name, "options": m.get("options", {}), "n": m.get("scored", m.get("n")),
                           "ex": m.get("ex"), "oracle": m.get("oracle"),
                           "llm_calls_per_question": means.get("llm_calls_per_question"),
                           "seconds_per_question": (means.get("model_seconds_per_question", 0.0)
                                                    + means.get("db_seconds_per_question", 0.0))}
    row["members"] = member_contributions(d / "predictions.jsonl")
    for log in sorted((d / "selection").glob("*.jsonl")) if (d / "selection").is_dir() else []:
        recs = list(SelectionLog.read(log).values())
        if not recs:
            continue
        if any("fast_path" in r for r in recs):
            row["fast_path_rate"] = 100.0 * sum(bool(r.get("fast_path")) for r in recs) / len(recs)
        row["unanimous_rate"] = 100.0 * sum(bool(r.get("unanimous")) for r in recs) / len(recs)
        row["mean_clusters"] = sum(len(r.get("clusters", [])) for r in recs) / len(recs)
        row["comparisons_per_question"] = sum(len(r.get("comparisons", [])) for r in recs) / len(recs)
    return row


def member_contributions(predictions: Any) -> dict[str, dict[str, int]]:
    """What each generator member (`meta["member"]`, else the candidate's origin) contributes to a run's pools, from
    its `predictions.jsonl`: candidates, correct candidates, questions it has a correct candidate for, and questions
    only it has a correct candidate for (`unique`)."""
    import json
    from pathlib import Path

    out: dict[str, dict[str, int]] = {}
    p = Path(predictions)
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        verdicts = r.get("candidate_correct") or []
        solved: dict[str, bool] = {}
        for c, ok in zip(r.get("candidates") or [], verdicts):
            name = (c.get("meta") or {}).get("member") or c.get("origin", "?")
            s = out.setdefault(name, {"candidates": 0, "correct": 0, "questions": 0, "unique": 0})
            s["candidates"] += 1
            s["correct"] += bool(ok)
            solved[name] = solved.get(name, False) or bool(ok)
        for name, ok in solved.items():
            out[name]["questions"] += ok
        if sum(solved.values()) == 1:
            out[next(n for n, ok in solved.items() if ok)]["unique"] += 1
    return out
