"""PV-SQL's Verify & Repair: a checklist of constraints from the question, checks of every candidate, LLM repair."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from t2s_plugins.verifier.pv.constraints import CheckReport, Constraint, check_candidates, extract_constraints
from t2s_plugins.verifier.pv.prompts import build_repair_messages, parse_repair_response

from t2s.artifacts import Artifact
from t2s.db.types import ExecResult
from t2s.decoding import Decoding, answer_constraint, constrained, grammar_artifacts, instructed
from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import load_prompt
from t2s.stages import Verifier
from t2s.types import Task


class _EnvExecutor:
    """`check_candidates` runs SQL through an object with `execute_many([(db_path, sql)], timeout=)`; this one
    routes it through `env.execute_many`, so checks are memoized and charged like every other execution. The
    verifier executes each batch through the env first (charged to the right question), so the calls made here
    are answered from the run's memo."""

    def __init__(self, env: Any, tasks: Sequence[Task]) -> None:
        self.env = env
        self.by_db = {t.example.db_path: t for t in tasks}

    def execute_many(self, items: Sequence[tuple[str, str]], *, timeout: float | None = None,
                     max_rows: int | None = None) -> list[ExecResult]:
        return self.env.execute_many([(self.by_db[db], sql) for db, sql in items], timeout=timeout, max_rows=max_rows)


@dataclasses.dataclass
class _Chain:
    """One distinct candidate SQL of a question, its pool positions, and its attempts (SQL + check report)."""

    task: Task
    constraints: list[Constraint]
    positions: list[int]
    sqls: list[str]
    reports: list[CheckReport] = dataclasses.field(default_factory=list)
    raws: list[str] = dataclasses.field(default_factory=list)
    stopped: str = ""
    open: bool = True


class PVVerifier(Verifier):
    """PV-SQL Verify & Repair ("PV-SQL: Synergizing Database Probing and Rule-based Verification for Text-to-SQL
    Agents", arXiv 2604.17653, "Key Designs: Verify & Repair").

    Per question, a checklist of verifiable constraints is extracted from the question (and BIRD evidence) by
    pattern matching (`constraints.extract_constraints`, ten categories, precision first). Every candidate
    goes through syntax (sqlglot) -> execution (`env.execute_many`: read-only, time-limited, memoized, charged) ->
    result-shape and constraint checks; each violation is a message. A candidate with violations is repaired by the
    LLM (`pv_repair_v1`: schema, question, evidence, checklist, SQL, the numbered problems) and re-checked, for at
    most `max_rounds` rounds (default 3) or until a repair passes every check. The kept SQL is the attempt that passes
    the most checks (`CheckReport.passed`); the original wins ties, so the verifier keeps the original when repairs
    do not pass more checks. A question with an empty checklist still gets the syntax and execution checks.

    Decisions where the seed is silent: the seed's 5 rounds are 3 here (the issue's default); a repair that returns
    no SQL or repeats an earlier attempt ends that candidate's loop; identical SQL within a question is verified
    once. A replaced candidate is `input.derive(...)` with `trigger` (the input's violation messages), `checks`
    (passed/total before and after), `rounds` (each attempt's SQL and violations) and `prompt`.

    `decoding` (conf/decoding/, `${decoding}` by default): free, or under `sql` / `sql_strict` the repair constrained
    to one SELECT of the database's grammar (`t2s.decoding`), in the ```sql fence the prompt asks for, as
    `parse_repair_response` reads it, so a repair cannot name what the schema lacks (the fence only, not also the
    bare query: the grammar's whitespace runs may hold a blank line, where `extract_sql` cuts a bare query).
    """

    def __init__(
        self,
        *,
        llm: str = "generator",
        prompt: str = "pv_repair_v1",
        dialect: str = "SQLite",
        max_rounds: int = 3,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        use_evidence: bool = True,
        max_findings: int = 5,
        decoding: Decoding | str | None = None,
    ) -> None:
        if max_rounds < 0:
            raise ValueError(f"verifier=pv: max_rounds must be >= 0 (got {max_rounds}); 0 checks without repairing")
        self.llm_name = llm
        self.template = load_prompt(prompt)
        self.dialect = dialect
        self.max_rounds = max_rounds
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=1)
        self.use_evidence = use_evidence
        self.max_findings = max_findings
        self.decoding = Decoding.of(decoding)

    def artifacts(self) -> list[Artifact]:
        """The SQL grammar of each database under constrained decoding (none under free decoding)."""
        return grammar_artifacts(self.decoding)

    def _view_text(self, task: Task, view_name: str | None) -> str:
        views = self.env.views(task)
        return next((v.text for v in views if v.name == view_name), views[0].text)

    def _check(self, chains: list[_Chain]) -> None:
        """Check each chain's latest SQL (execution through the env first, so each question pays for its own)."""
        if not chains:
            return
        self.env.execute_many([(c.task, c.sqls[-1]) for c in chains])
        reports = check_candidates([(c.sqls[-1], c.constraints, c.task.example.db_path) for c in chains],
                                   _EnvExecutor(self.env, [c.task for c in chains]))  # type: ignore[arg-type]
        for chain, report in zip(chains, reports):
            chain.reports.append(report)

    def request(self, chain: _Chain) -> LLMRequest:
        """The repair request for the chain's latest attempt and its violations."""
        task = chain.task
        ex = task.example
        cand = task.candidates[chain.positions[0]]
        findings = "\n".join(f"- {f.note or f.sql}" for f in task.findings[: self.max_findings])
        messages = build_repair_messages(
            question=ex.question, schema=self._view_text(task, cand.schema_view), sql=chain.sqls[-1],
            report=chain.reports[-1], constraints=chain.constraints,
            evidence=ex.evidence if self.use_evidence else "", findings=findings, dialect=self.dialect,
            template=self.template)
        constraint = answer_constraint(self.env, ex, self.decoding, label=self.origin)
        params = constrained(dataclasses.replace(self.params, seed=self.env.seed), constraint)
        return instructed(LLMRequest.chat(messages, params), self.decoding)

    def run(self, tasks: list[Task]) -> None:
        chains: list[_Chain] = []
        for task in tasks:
            constraints = extract_constraints(task.example.question, task.example.evidence if self.use_evidence else "")
            by_sql: dict[str, _Chain] = {}
            for i, c in enumerate(task.candidates):
                if c.sql in by_sql:
                    by_sql[c.sql].positions.append(i)
                else:
                    by_sql[c.sql] = _Chain(task=task, constraints=constraints, positions=[i], sqls=[c.sql])
            chains += by_sql.values()
        self._check(chains)
        for chain in chains:
            chain.open = not chain.reports[-1].ok
        for _ in range(self.max_rounds):
            todo = [c for c in chains if c.open]
            if not todo:
                break
            responses = self.env.generate(self.llm_name, [(c.task, self.request(c)) for c in todo])
            fresh: list[_Chain] = []
            for chain, response in zip(todo, responses):
                new_sql = parse_repair_response(response.text)
                if not new_sql or new_sql in chain.sqls:
                    chain.open = False
                    chain.stopped = "no SQL in the reply" if not new_sql else "repeated an earlier attempt"
                    continue
                chain.sqls.append(new_sql)
                chain.raws.append(response.text)
                fresh.append(chain)
            self._check(fresh)
            for chain in fresh:
                chain.open = not chain.reports[-1].ok
        for chain in chains:
            self._settle(chain)

    def _settle(self, chain: _Chain) -> None:
        """Keep the attempt passing the most checks; the original unless a repair passes strictly more."""
        if len(chain.sqls) == 1:
            return
        best = max(range(len(chain.sqls)), key=lambda k: (chain.reports[k].passed, -k))
        if best == 0:
            return
        first, kept = chain.reports[0], chain.reports[best]
        rounds = [{"sql": s, "passed": r.passed, "checks": r.checks, "violations": [v.message for v in r.violations]}
                  for s, r in zip(chain.sqls, chain.reports)]
        for pos in chain.positions:
            old = chain.task.candidates[pos]
            chain.task.candidates[pos] = old.derive(
                chain.sqls[best], self.origin, trigger=[v.message for v in first.violations],
                checks={"before": [first.passed, first.checks], "after": [kept.passed, kept.checks]},
                checklist=[c.to_dict() for c in chain.constraints], rounds=rounds, stopped=chain.stopped or None,
                prompt=self.template.id, raw=chain.raws[best - 1], decoding=self.decoding.mode)
