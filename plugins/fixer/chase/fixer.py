"""The CHASE-SQL query fixer stage: candidates that fail or return nothing are repaired by the LLM from the error."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from t2s_plugins.fixer.chase.prompts import REFLECTION, last_sql

from t2s.artifacts import Artifact
from t2s.db.types import DatabaseSchema, ExecResult
from t2s.decoding import Decoding, answer_constraint, constrained, grammar_artifacts, instructed
from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import load_prompt
from t2s.stages import Fixer
from t2s.types import Candidate, Task

#: how good an execution outcome is, for keeping the best attempt of a repair chain (higher is better)
_RANK = {"rows": 2, "empty": 1, "error": 0}


def outcome(result: ExecResult) -> str:
    """"rows" (runs and returns at least one row), "empty" (runs, no rows) or "error" (error, timeout, rejected)."""
    if not result.ok:
        return "error"
    return "rows" if result.rows else "empty"


def problem_text(result: ExecResult) -> str:
    """The error a failed execution gives the LLM ("timed out" for a timeout; "" for a query that ran)."""
    if result.timed_out:
        return "the query did not finish within the time limit (timed out)"
    return result.error or ""


def column_hint(sql: str, schema: DatabaseSchema) -> list[dict[str, str]]:
    """The `columns` block items for a failing query: each schema table it names (sqlglot; in schema order) with all
    its columns; every table when it names no known table (a misspelt table name, SQL that does not parse)."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
        named = {t.name.lower() for t in tree.find_all(exp.Table)} if tree is not None else set()
    except SqlglotError:
        named = set()
    chosen = [t for t in schema.tables if t.name.lower() in named] or list(schema.tables)
    return [{"table": t.name, "columns": ", ".join(c.name for c in t.columns)} for t in chosen]


@dataclasses.dataclass
class _Chain:
    """One candidate's repair chain within a question: the pool positions holding that SQL, the attempts so far
    (SQL, outcome, problem), and whether it is still being repaired."""

    task: Task
    positions: list[int]
    attempts: list[dict[str, Any]]
    open: bool = True

    @property
    def sql(self) -> str:
        return str(self.attempts[-1]["sql"])


class ChaseFixer(Fixer):
    """CHASE-SQL's self-reflection query fixer ("CHASE-SQL: Multi-Path Reasoning and Preference Optimized Candidate
    Selection in Text-to-SQL", arXiv 2410.01943).

    Every candidate is executed (`env.execute_many`, read-only, time-limited, memoized). One that fails (syntax or
    runtime error, timeout, rejected) or, with `fix_empty`, returns no rows enters a loop of at most `max_rounds`
    (β, default 2): the LLM gets the question, evidence, schema view, the SQL and the error or the empty-result flag
    (prompt `chase_fix_v2`; v2 adds that the schema is fixed and, after an error, the columns of the tables the query
    reads, because the 0.5B model answered `no such column` with `CREATE TABLE` under v1), reflects, and answers a corrected SQL, which is executed and, if it still fails, repaired
    again. A candidate that runs with rows passes unchanged. Identical SQL within a question is repaired once.

    Decisions where the seed is silent: the loop stops early when the model returns nothing or the same SQL (greedy
    decoding would repeat itself); of the attempts of a chain the kept one is the best by outcome (rows > empty >
    error; the later attempt on ties), so a repair that turns an empty result into an error is not kept; when that
    best is the input itself the candidate stays untouched. A repaired candidate is `input.derive(...)`: parent = the
    input's id, `trigger` = the first error (or "empty result"), `rounds` = every attempt (SQL, outcome, problem),
    `prompt` = the template id; it takes the input's place in the pool (the input goes to `task.dropped`). All
    questions of a batch are repaired together, one LLM batch per round.

    `decoding` (conf/decoding/, `${decoding}` by default): free, or the reply constrained to its format, a short
    reflection without backticks then one ```sql fence holding one SELECT of the database's grammar (`sql` /
    `sql_strict`, `t2s.decoding`), so a repair can be neither a `CREATE TABLE` nor a name the schema lacks.
    """

    def __init__(
        self,
        *,
        llm: str = "generator",
        prompt: str = "chase_fix_v2",
        dialect: str = "SQLite",
        max_rounds: int = 2,
        fix_empty: bool = True,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 384,
        use_evidence: bool = True,
        max_findings: int = 5,
        decoding: Decoding | str | None = None,
    ) -> None:
        if max_rounds < 1:
            raise ValueError(f"fixer=chase: max_rounds must be >= 1 (got {max_rounds}); use fixer=none to skip fixing")
        self.llm_name = llm
        self.template = load_prompt(prompt)
        for block in ("evidence", "findings", "error", "empty"):
            self.template.block(block, [])  # fails now, naming the file, if the template lacks a block
        self.hint_columns = "columns_block" in self.template.fields()
        if self.hint_columns:
            self.template.block("columns", [])
        self.dialect = dialect
        self.max_rounds = max_rounds
        self.fix_empty = fix_empty
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=1)
        self.use_evidence = use_evidence
        self.max_findings = max_findings
        self.decoding = Decoding.of(decoding)

    def artifacts(self) -> list[Artifact]:
        """The SQL grammar of each database under constrained decoding (none under free decoding)."""
        return grammar_artifacts(self.decoding)

    def _needs_fix(self, kind: str) -> bool:
        return kind == "error" or (kind == "empty" and self.fix_empty)

    def _view_text(self, task: Task, candidate: Candidate) -> str:
        views = self.env.views(task)
        return next((v.text for v in views if v.name == candidate.schema_view), views[0].text)

    def request(self, chain: _Chain, candidate: Candidate) -> LLMRequest:
        """The repair request for the chain's latest attempt."""
        ex = chain.task.example
        last = chain.attempts[-1]
        tpl = self.template
        problem = (tpl.block("error", [{"error": last["problem"]}]) if last["outcome"] == "error"
                   else tpl.block("empty", [{}]))
        evidence = [{"evidence": ex.evidence}] if self.use_evidence and ex.evidence else []
        findings = [{"text": f.note or f.sql} for f in chain.task.findings[: self.max_findings]]
        fields = dict(dialect=self.dialect, schema=self._view_text(chain.task, candidate), question=ex.question,
                      sql=chain.sql, problem_block=problem, evidence_block=tpl.block("evidence", evidence),
                      findings_block=tpl.block("findings", findings))
        if self.hint_columns:
            hint = column_hint(chain.sql, self.env.schema(ex)) if last["outcome"] == "error" else []
            fields["columns_block"] = tpl.block("columns", hint)
        messages = tpl.render(**fields)
        constraint = answer_constraint(self.env, ex, self.decoding, lead=REFLECTION, label=self.origin)
        params = constrained(dataclasses.replace(self.params, seed=self.env.seed), constraint)
        return instructed(LLMRequest.chat(messages, params), self.decoding)

    def run(self, tasks: list[Task]) -> None:
        chains: list[_Chain] = []
        for task in tasks:
            by_sql: dict[str, _Chain] = {}
            for i, c in enumerate(task.candidates):
                if c.sql in by_sql:
                    by_sql[c.sql].positions.append(i)
                else:
                    by_sql[c.sql] = _Chain(task=task, positions=[i], attempts=[{"sql": c.sql}])
            chains += by_sql.values()
        self._record(chains)
        for chain in chains:
            chain.open = self._needs_fix(chain.attempts[-1]["outcome"])
        for _ in range(self.max_rounds):
            todo = [c for c in chains if c.open]
            if not todo:
                break
            responses = self.env.generate(
                self.llm_name, [(c.task, self.request(c, c.task.candidates[c.positions[0]])) for c in todo])
            fresh: list[_Chain] = []
            for chain, response in zip(todo, responses):
                new_sql = last_sql(response.text)
                if not new_sql or any(new_sql == a["sql"] for a in chain.attempts):
                    chain.open = False
                    chain.attempts[-1]["stopped"] = "no new SQL" if not new_sql else "repeated an earlier attempt"
                    continue
                chain.attempts.append({"sql": new_sql, "raw": response.text})
                fresh.append(chain)
            self._record(fresh)
            for chain in fresh:
                chain.open = self._needs_fix(chain.attempts[-1]["outcome"])
        for chain in chains:
            self._settle(chain)

    def _record(self, chains: list[_Chain]) -> None:
        """Execute each chain's latest attempt and store its outcome and problem."""
        results = self.env.execute_many([(c.task, c.sql) for c in chains])
        for chain, result in zip(chains, results):
            kind = outcome(result)
            chain.attempts[-1]["outcome"] = kind
            chain.attempts[-1]["problem"] = problem_text(result) if kind == "error" else ("empty result" if kind == "empty" else "")

    def _settle(self, chain: _Chain) -> None:
        """Put the best attempt of the chain in the pool (nothing changes when that is the input)."""
        if len(chain.attempts) == 1:
            return
        best = max(range(len(chain.attempts)), key=lambda k: (_RANK[chain.attempts[k]["outcome"]], k))
        if best == 0:
            return
        first = chain.attempts[0]
        rounds = [{k: a.get(k) for k in ("sql", "outcome", "problem", "stopped") if a.get(k) is not None}
                  for a in chain.attempts]
        for pos in chain.positions:
            old = chain.task.candidates[pos]
            chain.task.candidates[pos] = old.derive(
                str(chain.attempts[best]["sql"]), self.origin, trigger=first["problem"], trigger_outcome=first["outcome"],
                rounds=rounds, prompt=self.template.id, raw=chain.attempts[best].get("raw", ""),
                decoding=self.decoding.mode)
