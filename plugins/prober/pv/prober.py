"""PV-SQL database probing: the LLM explores the database with small SELECTs before the SQL is written ("PV-SQL:
Synergizing Database Probing and Rule-based Verification for Text-to-SQL Agents", arXiv 2604.17653, "Probe")."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from t2s_plugins.prober.pv.prompts import ProbeReply, parse_reply

from t2s.artifacts import Artifact
from t2s.db.types import ExecResult
from t2s.decoding import Decoding, constrained, grammar_artifacts, instructed, limited_select, sql_reply_constraint
from t2s.llm.base import Constraint, GenParams, LLMRequest
from t2s.prompts import load_prompt
from t2s.stages import Prober
from t2s.types import Finding, Task


def check_probe(sql: str, limit: int) -> tuple[str | None, str, str]:
    """Validate a probe: `(sql to run or None, status, note)`. A probe must parse (else "malformed") and be one
    query (SELECT, compound SELECT or WITH ... SELECT; else "rejected"); a probe without a top-level LIMIT gets
    `LIMIT <limit>` appended (its own LIMIT is kept: the executor's row cap bounds what is fetched)."""
    try:
        trees = [t for t in sqlglot.parse(sql, read="sqlite") if t is not None]
    except (ParseError, TokenError, ValueError, RecursionError) as e:
        return None, "malformed", f"could not parse the probe: {str(e).splitlines()[0][:150]}"
    if len(trees) != 1:
        return None, "malformed", f"expected one statement, got {len(trees)}"
    tree = trees[0]
    if not isinstance(tree, exp.Query):
        return None, "rejected", f"only SELECT probes run (got {type(tree).__name__.upper()})"
    if tree.args.get("limit") is None:
        sql = f"{sql.rstrip().rstrip(';')} LIMIT {limit}"
    return sql, "ok", ""


#: under constrained decoding, the probe reply's grammar: the prompt's two forms, a `PURPOSE:` line (no backtick)
#: then one ```sql fence around one SELECT ending in LIMIT 1..probe_rows, or the word DONE
PROBE_REPLY = '"PURPOSE: " PURPOSE "\\n```sql\\n" {query} ";"? "\\n```" | "DONE"'
PROBE_RULES = "PURPOSE ::= [^\\n`]{1,200}\n"


def _json_cell(v: Any) -> Any:
    """A cell as JSON keeps it (findings are stored with the run): bytes become a placeholder string."""
    return f"<{len(v)} bytes>" if isinstance(v, (bytes, bytearray, memoryview)) else v


def _cell(v: Any, width: int = 40) -> str:
    if isinstance(v, str):
        s = v if len(v) <= width else v[: width - 1] + "…"
        return "'" + s.replace("\n", " ") + "'"
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return json.dumps(v, default=str)


def describe(result: ExecResult, *, max_chars: int = 300) -> tuple[str, str]:
    """`(status, one-line note)` of a probe's execution: the rows it returned (with their columns), "no rows", or
    the error, at most `max_chars` characters."""
    if result.timed_out:
        return "timeout", "timed out (the probe was too slow; probe something smaller)"
    if result.error is not None:
        status = "rejected" if result.error.startswith("rejected:") else "error"
        return status, "error: " + result.error.splitlines()[0][:200]
    if not result.rows:
        return "empty", f"no rows (columns: {', '.join(result.columns)})"
    more = "+" if result.truncated else ""
    head = f"{len(result.rows)}{more} row(s) ({', '.join(result.columns)}): "
    body = "; ".join("(" + ", ".join(_cell(v) for v in row) + ")" for row in result.rows)
    note = head + body
    return "ok", note if len(note) <= max_chars else note[: max_chars - 1] + "…"


class PVProber(Prober):
    """PV-SQL's Probe stage: up to `max_rounds` rounds in which the LLM decides whether to probe and writes one
    LIMIT-ed SELECT; each probe's outcome becomes a `Finding` in `task.findings`, which generators show.

    PV-SQL (arXiv 2604.17653), "Database Probing": "the agent decides in a loop whether additional probing is needed. If so, it
    generates SELECT queries with LIMIT clauses ... findings are accumulated into context G" (up to 5 rounds). Per
    round, every still-active question of the batch gets one request (prompt `pv_probe_v1`: schema, values,
    evidence, question, every earlier probe with what it returned), all sent as one batch. A reply is a
    `PURPOSE:` line and one SQL query, or `DONE`. t2s checks the probe (`check_probe`: one query, a LIMIT forced
    when absent) and runs it read-only through `env.execute_many` with `probe_timeout` seconds and at most
    `probe_rows` rows. The finding holds the SQL as run, the status ("ok", "empty", "error", "timeout",
    "rejected", "malformed"), the rows and columns, what was asked, and a one-line `note` written by t2s from
    the rows (the seed has the agent summarize; a 0.5B model's summaries are not reliable, rows are).

    A question stops probing when the model says DONE, after `max_rounds`, when it repeats an earlier probe word
    for word (greedy decoding would only repeat again), or after `max_failures` malformed or rejected replies in a
    row. Malformed replies and failing probes are findings too; nothing in a reply can crash the stage. The schema
    shown is the widest of the task's schema views (the linker's recall view when there are several).

    `decoding` (conf/decoding/, `${decoding}` by default): free, or under `sql` / `sql_strict` the reply constrained
    to the prompt's two forms as `parse_reply` reads them: `PURPOSE: <one line>` and one ```sql fence around one
    SELECT of the database's grammar that ends in `LIMIT k`, 1 <= k <= `probe_rows` (`t2s.decoding.limited_select`),
    or `DONE`; so a probe can be neither the final answer without a LIMIT nor a name the schema lacks.
    """

    def __init__(
        self,
        *,
        llm: str = "generator",
        prompt: str = "pv_probe_v1",
        dialect: str = "SQLite",
        max_rounds: int = 5,
        probe_rows: int = 5,
        probe_timeout: float = 2.0,
        max_failures: int = 2,
        max_new_tokens: int = 160,
        use_evidence: bool = True,
        max_values: int = 20,
        note_chars: int = 300,
        decoding: Decoding | str | None = None,
    ) -> None:
        if max_rounds < 1 or probe_rows < 1 or max_failures < 1:
            raise ValueError(f"prober: max_rounds, probe_rows and max_failures must be >= 1 "
                             f"(got {max_rounds}, {probe_rows}, {max_failures})")
        self.llm_name = llm
        self.template = load_prompt(prompt)
        self.dialect = dialect
        self.max_rounds = max_rounds
        self.probe_rows = probe_rows
        self.probe_timeout = probe_timeout
        self.max_failures = max_failures
        self.use_evidence = use_evidence
        self.max_values = max_values
        self.note_chars = note_chars
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
        self.decoding = Decoding.of(decoding)

    def artifacts(self) -> list[Artifact]:
        """The SQL grammar of each database under constrained decoding (none under free decoding)."""
        return grammar_artifacts(self.decoding)

    def reply_constraint(self, task: Task) -> Constraint | None:
        """The constraint of a probe reply for `task` (None under free decoding; see the class docstring)."""
        root = PROBE_REPLY.replace("{query}", f"({limited_select(self.probe_rows)})")
        return sql_reply_constraint(self.env, task.example, self.decoding, root, rules=PROBE_RULES, label=self.origin)

    def request(self, task: Task, round_no: int) -> LLMRequest:
        """One round's probe request for `task`."""
        params = constrained(dataclasses.replace(self.params, seed=self.env.seed), self.reply_constraint(task))
        return instructed(LLMRequest.chat(self._messages(task, round_no), params), self.decoding)

    def _messages(self, task: Task, round_no: int) -> list[dict[str, str]]:
        ex = task.example
        view = max(self.env.views(task), key=lambda v: len(v.text))
        evidence = [{"evidence": ex.evidence}] if self.use_evidence and ex.evidence else []
        values = [{"table": v.table, "column": v.column, "value": v.value,
                   "value_json": json.dumps(v.value, ensure_ascii=False, default=str)}
                  for v in task.values[: self.max_values]]
        findings = [{"number": i + 1, "sql": f.sql, "note": f.note or f.status, "status": f.status, "asked": f.asked}
                    for i, f in enumerate(task.findings)]
        return self.template.render(
            dialect=self.dialect, schema=view.text, question=ex.question, round=str(round_no),
            max_rounds=str(self.max_rounds), evidence_block=self.template.block("evidence", evidence),
            values_block=self.template.block("values", values), findings_block=self.template.block("findings", findings))

    def run(self, tasks: list[Task]) -> None:
        active = list(tasks)
        failures = {id(t): 0 for t in tasks}
        seen: dict[int, set[str]] = {id(t): set() for t in tasks}
        for round_no in range(1, self.max_rounds + 1):
            if not active:
                break
            replies = self.env.generate(self.llm_name, [(t, self.request(t, round_no)) for t in active])
            to_run: list[tuple[Task, str, ProbeReply]] = []
            still: list[Task] = []
            for task, response in zip(active, replies):
                text = response.texts[0] if response.texts else ""
                reply = parse_reply(text)
                if not reply.sql:
                    if reply.done:
                        continue
                    task.findings.append(Finding(sql="", status="malformed", asked=reply.asked, origin=self.origin,
                                                 note="the reply held neither a SQL probe nor DONE: "
                                                      + " ".join(text.split())[:120]))
                    failures[id(task)] += 1
                    if failures[id(task)] < self.max_failures:
                        still.append(task)
                    continue
                sql, status, note = check_probe(reply.sql, self.probe_rows)
                if sql is None:
                    task.findings.append(Finding(sql=reply.sql, status=status, note=note, asked=reply.asked,
                                                 origin=self.origin))
                    failures[id(task)] += 1
                    if failures[id(task)] < self.max_failures and not reply.done:
                        still.append(task)
                    continue
                key = " ".join(sql.lower().split())
                if key in seen[id(task)]:
                    continue  # a repeated probe: stop this question
                seen[id(task)].add(key)
                failures[id(task)] = 0
                to_run.append((task, sql, reply))
                if not reply.done:
                    still.append(task)
            results = self.env.execute_many([(t, sql) for t, sql, _ in to_run], timeout=self.probe_timeout,
                                            max_rows=self.probe_rows)
            for (task, sql, reply), result in zip(to_run, results):
                status, note = describe(result, max_chars=self.note_chars)
                task.findings.append(Finding(sql=sql, status=status, rows=[[_json_cell(v) for v in r] for r in result.rows],
                                             columns=list(result.columns), note=note, asked=reply.asked,
                                             origin=self.origin))
            active = still
