"""The prompts of the MCTS search and the parsing of their replies: one reasoning step, SQL from the steps so far,
the revision of a failed SQL, and the process preference model's Yes/No question.

The templates are the `mcts_*_v1.yaml` files beside this module. The generator (`generator.py`) builds its requests
with `SearchPrompts`; the rStar training-row builders (`rows.py` beside this module, row kinds `mcts_step` /
`ppm_step`) rebuild the same messages from saved trees (`SearchStep`), so search and training prompts cannot drift
apart.

Each template names the format of its replies (`reply:` in its YAML, `t2s.prompts.ReplyFormat`): a reasoning step is
free text, kept stripped (`STEP_REPLY`, `step_text`); the SQL and revise steps are one query in a ```sql fence read
with `t2s.generation.parse_sql`, like every generator's (`t2s.generation.SQL_REPLY`, the form their constrained
decoding accepts); the PPM's reply is Yes or No (`VERDICT_REPLY`, `parse_verdict`), and as the PPM is scored by the
log-probabilities of those two continuations, a scripted scoring rule's answer (`{correct: true}`) gives its
rendered word, "Yes", log-probability 0 (as `CHOICE_REPLY` does for the tournament's judge).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from t2s.generation import template_messages
from t2s.prompts import PromptTemplate, ReplyFormat, load_prompt


class StepLike(Protocol):
    """What the search prompts read of one node on a path (`generator.Node`, `SearchStep`)."""

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
    """The prompts of tree search over reasoning steps and SQL (`generator.py`): one reasoning step
    (`step_prompt`, worded per action), SQL from the steps so far (`sql_prompt`), a revision of a failed SQL
    (`revise_prompt`) and the process preference model's question (`ppm_prompt`). The MCTS generator builds its
    requests here and the rStar training-row builders (`rows.py`, kinds `mcts_step` / `ppm_step`) rebuild
    the same messages from saved trees, so search and training prompts cannot drift apart.

    `path` arguments run from the root to the node being extended (root included); the reasoning steps on it
    (actions in `actions`) are shown as "Steps so far"."""

    def __init__(self, *, actions: list[str], step_prompt: str = "mcts_step_v1", sql_prompt: str = "mcts_sql_v1",
                 revise_prompt: str = "mcts_revise_v1", ppm_prompt: str = "mcts_ppm_v1", dialect: str = "SQLite",
                 use_evidence: bool = True) -> None:
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


def step_text(text: str) -> str:
    """What the search keeps of a reasoning step's reply: the text, stripped (the step is never parsed further)."""
    return text.strip()


#: the replies of `mcts_step_v1`: one reasoning step, free text (never constrained)
STEP_REPLY = ReplyFormat(fields=("text",), write=lambda *, text: text, read=step_text,
                         example={"text": "Filter singer.country = 'France', return singer.name."})

_VERDICT = re.compile(r"^\W*(yes|no)\b", re.I)


def parse_verdict(text: str) -> bool | None:
    """The PPM's verdict in a reply: True for Yes, False for No (its first word, any case), None for anything else."""
    m = _VERDICT.match(text)
    return m.group(1).lower() == "yes" if m else None


def write_verdict(*, correct: bool) -> str:
    """The canonical PPM reply: "Yes" or "No" alone (also the continuations the PPM is scored by)."""
    return "Yes" if correct else "No"


#: the replies of `mcts_ppm_v1`: Yes (the last step is correct and useful) or No
VERDICT_REPLY = ReplyFormat(fields=("correct",), write=write_verdict, read=parse_verdict, example={"correct": True})
