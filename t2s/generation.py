"""Building text-to-SQL requests and reading SQL back: the one formatter that generators and training data share.

`sql_request` turns a task and a schema view into the chat request of a SQL prompt template (schema, question,
evidence and whatever earlier stages found: values, few-shot examples, probe findings). `parse_sql` takes SQL out
of a completion. Generators call these; the SFT data builders call the same functions, so training and inference
prompts cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from t2s.db.types import SchemaView
from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import PromptTemplate
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


class StepLike(Protocol):
    """What the search prompts read of one node on a path (`plugins/generator/mcts.Node`, `SearchStep`)."""

    action: str
    text: str
    sql: str | None
    result: str | None
    status: str | None


@dataclass(frozen=True)
class SearchStep:
    """One node of a saved search tree (`<run>/mcts/<qid>.json`) as the search prompts read it: its action, text,
    and for SQL nodes the SQL, execution status and the result shown to the revise prompt."""

    action: str
    text: str
    sql: str | None = None
    result: str | None = None
    status: str | None = None

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> SearchStep:
        return cls(str(node["action"]), str(node.get("text") or ""), node.get("sql"), node.get("result"),
                   node.get("status"))


class SearchPrompts:
    """The prompts of tree search over reasoning steps and SQL (`plugins/generator/mcts.py`): one reasoning step
    (`step_prompt`, worded per action), SQL from the steps so far (`sql_prompt`), a revision of a failed SQL
    (`revise_prompt`) and the process preference model's question (`ppm_prompt`). The MCTS generator builds its
    requests here and the rStar training-data builder (`t2s.train.data`, kinds `mcts_step` / `ppm_step`) rebuilds
    the same messages from saved trees, so search and training prompts cannot drift apart.

    `path` arguments run from the root to the node being extended (root included); the reasoning steps on it
    (actions in `actions`) are shown as "Steps so far"."""

    def __init__(self, *, actions: list[str], step_prompt: str = "mcts_step_v1", sql_prompt: str = "mcts_sql_v1",
                 revise_prompt: str = "mcts_revise_v1", ppm_prompt: str = "mcts_ppm_v1", dialect: str = "SQLite",
                 use_evidence: bool = True) -> None:
        from t2s.prompts import load_prompt

        self.step = load_prompt(step_prompt)
        for a in actions:
            if a in ("sql", "revise", "root") or a not in self.step.blocks or f"{a}_label" not in self.step.blocks:
                known = sorted(b for b in self.step.blocks if f"{b}_label" in self.step.blocks)
                raise ValueError(f"generator.actions: {a!r} is not a reasoning action of prompt {step_prompt} (it "
                                 f"needs blocks {a!r} and '{a}_label'; known: {', '.join(known)})")
        self.actions = list(actions)
        self.sql = load_prompt(sql_prompt)
        self.revise = load_prompt(revise_prompt)
        self.ppm = load_prompt(ppm_prompt)
        self.dialect = dialect
        self.use_evidence = use_evidence

    def _render(self, template: PromptTemplate, schema: str, question: str, evidence: str, path: Sequence[StepLike],
                **fields: str) -> list[dict[str, str]]:
        steps = [{"label": self.step.block(f"{n.action}_label", [{}]), "text": " ".join(n.text.split())}
                 for n in path if n.action in self.actions]
        return template_messages(template, schema=schema, question=question, evidence=evidence,
                                 use_evidence=self.use_evidence, dialect=self.dialect,
                                 steps_block=template.block("steps", steps), **fields)

    def messages(self, action: str, *, schema: str, question: str, evidence: str,
                 path: Sequence[StepLike]) -> list[dict[str, str]]:
        """The chat messages that ask for `action` ("sql", "revise" or a reasoning action) after `path`."""
        if action == "sql":
            return self._render(self.sql, schema, question, evidence, path)
        if action == "revise":
            last = path[-1]
            return self._render(self.revise, schema, question, evidence, path, sql=last.sql or "",
                                result=last.result or last.status or "")
        return self._render(self.step, schema, question, evidence, path, instruction=self.step.block(action, [{}]))

    def ppm_messages(self, *, schema: str, question: str, evidence: str, path: Sequence[StepLike]) -> list[dict[str, str]]:
        """The PPM's question: is the last reasoning step on `path` right?"""
        return self._render(self.ppm, schema, question, evidence, path)
