"""Building text-to-SQL requests and reading SQL back: the one formatter that generators and training data share.

`sql_request` turns a task and a schema view into the chat request of a SQL prompt template (schema, question,
evidence and whatever earlier stages found: values, few-shot examples, probe findings). `parse_sql` takes SQL out
of a completion, and `SQL_REPLY` pairs it with the reply it reads (the SQL in a ```sql fence), the reply format the
SQL templates name (`reply: t2s.generation.SQL_REPLY`). Generators call these; the SFT data builders call the same
functions, so training and inference prompts cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from t2s.db.types import SchemaView
from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import PromptTemplate, ReplyFormat
from t2s.sql.extract import extract_sql
from t2s.types import Task


@dataclass(frozen=True)
class ContextLimits:
    """How much of each earlier stage's output goes into a prompt, and whether BIRD-style evidence is shown."""

    use_evidence: bool = True
    max_values: int = 20
    max_examples: int = 5
    max_findings: int = 5


def context_blocks(template: PromptTemplate, task: Task, limits: ContextLimits) -> dict[str, str]:
    """The optional prompt blocks of a task, worded by the template (empty strings for empty lists)."""
    ex = task.example
    evidence = [{"evidence": ex.evidence}] if limits.use_evidence and ex.evidence else []
    values = [{"table": v.table, "column": v.column, "value": v.value,
               "value_json": json.dumps(v.value, ensure_ascii=False)} for v in task.values[: limits.max_values]]
    examples = [{"question": e.question, "sql": e.sql, "evidence": e.evidence} for e in task.examples[: limits.max_examples]]
    findings = [{"text": f.note or f.sql, "sql": f.sql, "note": f.note, "status": f.status}
                for f in task.findings[: limits.max_findings]]
    return {
        "evidence_block": template.block("evidence", evidence),
        "values_block": template.block("values", values),
        "examples_block": template.block("examples", examples),
        "findings_block": template.block("findings", findings),
    }


def sql_messages(template: PromptTemplate, task: Task, view: SchemaView, *, dialect: str = "SQLite",
                 limits: ContextLimits | None = None) -> list[dict[str, str]]:
    """The chat messages of a SQL prompt for one task and schema view."""
    blocks = context_blocks(template, task, limits or ContextLimits())
    return template.render(dialect=dialect, schema=view.text, question=task.example.question, **blocks)


def sql_request(template: PromptTemplate, task: Task, view: SchemaView, params: GenParams, *, dialect: str = "SQLite",
                limits: ContextLimits | None = None) -> LLMRequest:
    """The request of a SQL prompt for one task and schema view."""
    return LLMRequest.chat(sql_messages(template, task, view, dialect=dialect, limits=limits), params)


def template_messages(template: PromptTemplate, *, schema: str, question: str, evidence: str = "",
                      use_evidence: bool = True, dialect: str = "SQLite", **fields: str) -> list[dict[str, str]]:
    """A prompt about one question (schema, question, evidence block, dialect and `fields`), each field given only if
    the template uses it. The correctors and selectors that ask about a question build their requests here, and the
    training-data builders build the same prompts here, so a trained adapter sees its inference prompt."""
    ev = [{"evidence": evidence}] if use_evidence and evidence else []
    every = {"schema": schema, "question": question, "dialect": dialect, "evidence_block": template.block("evidence", ev)
             if "evidence" in template.blocks else "", **fields}
    return template.render(**{k: v for k, v in every.items() if k in template.fields()})


def parse_sql(text: str) -> str:
    """The SQL of a completion (first statement; fences, prose and trailing semicolon removed; "" if none)."""
    return extract_sql(text)


def fenced_sql(sql: str) -> str:
    """The canonical SQL reply: the query in a ```sql fence (`ANSWER_PREFIX` / `ANSWER_SUFFIX` of constrained
    decoding)."""
    return f"```sql\n{sql}\n```"


#: the replies of the SQL templates (zero_shot, few_shot, ...): one query in a ```sql fence, read by `parse_sql`
SQL_REPLY = ReplyFormat(fields=("sql",), write=fenced_sql, read=parse_sql,
                        example={"sql": "SELECT count(*) FROM singer WHERE country = 'France'"})
