"""A scripted LLM for tests: deterministic answers chosen by matching the prompt against rules.

Plugins that parse structured model output (trajectories, verdicts, column lists, probe decisions) need a model that
answers in the expected format, which the random tiny model cannot. `ScriptedLLM` runs their real request building,
real parsing and real control flow against answers a test writes down (the idea of DSPy's `DummyLM`).

Rules, in order, first match wins (a YAML file given as `path`, or the same list inline as `rules`)::

    rules:
      - template: chase_fix_v2                   # the template that built the request: its id, or its name
        when: {question: "How many singers"}     # ("chase_fix": any version); regexes searched in its fields
        answer: {sql: "SELECT count(*) FROM singer"}   # the answer's fields, written in the template's reply format
      - template: tournament
        answers: [{choice: A}, {choice: B}]      # successive matching calls; the last one repeats
      - match: "Question: How many singers"      # a regex searched in the prompt (all messages, joined)
        reply: "```sql\\nSELECT count(*) FROM singer\\n```"
      - match: "repair"
        replies: ["first answer", "second answer"]   # successive matching calls; the last one repeats
      - match: "Which is correct"
        scores: {"A": -0.1, "B": -2.3}              # log-probabilities for `score` (missing continuation: -30)
      - match: "Question: (\\w+)"
        reply: "SELECT '\\1'"
        expand: true                                # \\1 / \\g<name> refer to the match's groups
    default: "SELECT 1"                             # no rule matched (null: fail, quoting the prompt)

Structured rules (`template`, `when`, `answer` / `answers`) are the way to write a test of parsing: the request
remembers the template and fields it was rendered from (`LLMRequest.source`, outside its cache key), the rule's
answer is written in the template's reply format (`ReplyFormat.render`, the `reply:` its YAML names) and the stage's
own parser reads it back, so rewording a template breaks no such test (the pairing of DSPy's `DummyLM` with its
`ChatAdapter`). A `when` field the template was not rendered with is an error, not a silent miss. For scoring, an
answer gives log-probability 0 to the continuation equal to its rendered reply and -30 to the others. `match` may be
combined with `template`; `reply` / `replies` work with either.

The prompt a rule sees is each message as "<role>: <content>" joined by blank lines (or the raw prompt). Token counts
are whitespace-separated words, so cost accounting is exercised too. `calls` records every prompt seen, in order, and
`sources` the template and fields of each (`PromptSource`, None for a request not rendered from a template).

Constraints: a scripted model cannot steer its decoding, so it holds each reply to the request's constraint instead
(`GenParams.constraint`, grammar or JSON schema, matched by llguidance: `t2s.llm.structured.TextMatcher`). A reply the
constraint does not accept raises `ConstraintViolation` naming the rule and where the reply leaves the format: a
test of a constrained reply format then proves that the format and the stage's parser agree.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from t2s.llm.base import LLM, LLMRequest, LLMResponse, PromptSource, ScoreRequest, ScoreResponse
from t2s.llm.structured import ConstraintViolation, text_matcher
from t2s.prompts.replies import resolve_reply

#: log-probability given to a continuation a scoring rule does not list
UNLISTED_LOGPROB = -30.0


@dataclass
class Rule:
    """One rule: what it matches (a prompt regex, a template, field regexes) and what it answers."""

    where: str
    pattern: re.Pattern[str] | None = None
    template: str | None = None
    when: dict[str, re.Pattern[str]] = field(default_factory=dict)
    replies: list[str] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    expand: bool = False
    hits: int = 0

    def matches(self, text: str, source: PromptSource | None) -> re.Match[str] | bool:
        """The prompt regex's match (True when the rule has none) if every condition holds, else False."""
        if self.template is not None:
            if source is None or self.template not in (source.template, source.name):
                return False
            given = source.field_map()
            unknown = set(self.when) - set(given)
            if unknown:
                raise ValueError(f"scripted LLM, {self.where}: template {source.template} was rendered without "
                                 f"field(s) {sorted(unknown)} (its fields: {sorted(given)})")
            if not all(p.search(given[k]) for k, p in self.when.items()):
                return False
        if self.pattern is None:
            return True
        return self.pattern.search(text) or False


def prompt_text(request: Any) -> str:
    """The text rules match against: "<role>: <content>" per message joined by blank lines, or the raw prompt."""
    if getattr(request, "prompt", None) is not None:
        return str(request.prompt)
    return "\n\n".join(f"{role}: {content}" for role, content in request.messages)


class ScriptedLLM(LLM):
    """Answers chosen by rules on the prompt or on the template and fields that built it (see the module docstring);
    for tests of parsing-heavy plugins."""

    backend = "scripted"
    supports_scoring = True
    #: enforced by checking each reply (see the module docstring)
    constraint_kinds = ("grammar", "json_schema")

    def __init__(self, *, path: str | None = None, rules: list[dict[str, Any]] | None = None,
                 default: str | None = "") -> None:
        if path is not None and rules:
            raise ValueError("ScriptedLLM: give `path` (a YAML rules file) or `rules` (an inline list), not both")
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"scripted LLM rules file not found: {p} (llm.path)")
            data = yaml.safe_load(p.read_text()) or {}
            if not isinstance(data, dict) or not isinstance(data.get("rules", []), list):
                raise ValueError(f"{p}: a scripted LLM rules file is a mapping with `rules:` (a list) and `default:`")
            rules = data.get("rules", [])
            default = data.get("default", default)
        self.default = default
        self.rules = [self._rule(i, r, path) for i, r in enumerate(rules or [])]
        self._source = json.dumps({"rules": rules, "default": default}, sort_keys=True, default=str)
        self.calls: list[str] = []
        self.sources: list[PromptSource | None] = []
        self._lock = threading.Lock()

    @staticmethod
    def _rule(i: int, r: Any, path: str | None) -> Rule:
        where = f"{path or 'inline rules'}, rule {i + 1}"
        if not isinstance(r, dict) or not ({"match", "template"} & set(r)):
            raise ValueError(f"{where}: each rule needs `match` (a regex) or `template` (a template id), and "
                             f"`reply`, `replies`, `answer`, `answers` or `scores`")
        unknown = set(r) - {"match", "template", "when", "reply", "replies", "answer", "answers", "scores", "expand"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; use match, template, when, reply, replies, "
                             f"answer, answers, scores, expand")
        if ({"when", "answer", "answers"} & set(r)) and "template" not in r:
            raise ValueError(f"{where}: `when`, `answer` and `answers` need `template` (whose fields they name)")
        if r.get("expand") and "match" not in r:
            raise ValueError(f"{where}: `expand` refers to the groups of `match`, which the rule lacks")

        def compiled(pattern: Any, what: str) -> re.Pattern[str]:
            try:
                return re.compile(str(pattern), re.S)
            except re.error as e:
                raise ValueError(f"{where}: bad regex {pattern!r}{what}: {e}") from None

        when = r.get("when") or {}
        if not isinstance(when, dict):
            raise ValueError(f"{where}: `when` maps field names to regexes, got {when!r}")
        answers = [r["answer"]] if "answer" in r else list(r.get("answers") or [])
        if not all(isinstance(a, dict) for a in answers):
            raise ValueError(f"{where}: an answer maps the reply format's fields to values, got {answers!r}")
        replies = [str(r["reply"])] if "reply" in r else [str(x) for x in r.get("replies", [])]
        if replies and answers:
            raise ValueError(f"{where}: give written replies (`reply`, `replies`) or structured answers (`answer`, "
                             f"`answers`), not both")
        return Rule(where=where, pattern=compiled(r["match"], "") if "match" in r else None,
                    template=str(r["template"]) if "template" in r else None,
                    when={str(k): compiled(v, f" for field {k!r}") for k, v in when.items()},
                    replies=replies, answers=[dict(a) for a in answers],
                    scores={str(k): float(v) for k, v in (r.get("scores") or {}).items()},
                    expand=bool(r.get("expand", False)))

    @property
    def model_id(self) -> str:
        return "scripted@" + hashlib.sha256(self._source.encode()).hexdigest()[:12]

    def _find(self, text: str, source: PromptSource | None, *, scoring: bool) -> tuple[Rule, re.Match[str] | bool] | None:
        for rule in self.rules:
            if scoring and not (rule.scores or rule.answers):
                continue
            if not scoring and rule.scores and not (rule.replies or rule.answers):
                continue
            m = rule.matches(text, source)
            if m:
                return rule, m
        return None

    @staticmethod
    def _render(rule: Rule, answer: dict[str, Any], source: PromptSource | None) -> str:
        """A structured answer written in the reply format of the template that built the request."""
        assert source is not None  # a rule with answers has a template, which only a tagged request matches
        if not source.reply:
            raise LookupError(f"scripted LLM, {rule.where}: template {source.template} names no reply format; add "
                              f"`reply: <module>.<ReplyFormat>` to its YAML (t2s.prompts.replies)")
        try:
            return resolve_reply(source.reply, where=f"template {source.template}").render(answer)
        except ValueError as e:
            raise ValueError(f"scripted LLM, {rule.where}: {e}") from None

    def _answer(self, text: str, source: PromptSource | None) -> str:
        found = self._find(text, source, scoring=False)
        if found is None:
            if self.default is None:
                raise LookupError(f"scripted LLM: no rule matches the prompt and there is no default; prompt:\n{text[:2000]}")
            return str(self.default)
        rule, m = found
        k = rule.hits
        rule.hits += 1
        if rule.answers:
            return self._render(rule, rule.answers[min(k, len(rule.answers) - 1)], source)
        reply = rule.replies[min(k, len(rule.replies) - 1)] if rule.replies else str(self.default or "")
        return m.expand(reply) if rule.expand and isinstance(m, re.Match) else reply

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        out = []
        with self._lock:
            for req in requests:
                text = prompt_text(req)
                self.calls.append(text)
                self.sources.append(req.source)
                texts = [self._answer(text, req.source) for _ in range(max(1, req.params.n))]
                constraint = req.params.constraint
                for reply in texts if constraint is not None else []:
                    problem = text_matcher().problem(constraint, reply)
                    if problem is not None:
                        raise ConstraintViolation(
                            f"scripted LLM: the reply {reply[:300]!r} breaks the request's constraint "
                            f"{constraint.name or constraint.kind!r}: {problem}. A constrained model could not answer "
                            f"it; write the rule's reply in the stage's reply format. Prompt:\n{text[:1000]}")
                out.append(LLMResponse(texts=texts, prompt_tokens=len(text.split()),
                                       completion_tokens=sum(len(t.split()) for t in texts), seconds=0.0,
                                       model=self.model_id))
        return out

    def logprobs(self, request: Any, continuations: list[str]) -> list[float]:
        """Log-probabilities of each continuation after the prompt, from the first scoring rule that matches (a rule
        with answers: 0 for the continuation its rendered answer equals, `UNLISTED_LOGPROB` for the others)."""
        text = prompt_text(request)
        source = getattr(request, "source", None)
        with self._lock:
            self.calls.append(text)
            self.sources.append(source)
            found = self._find(text, source, scoring=True)
            if found is not None and found[0].answers and not found[0].scores:
                rule = found[0]
                k = rule.hits
                rule.hits += 1
                chosen = self._render(rule, rule.answers[min(k, len(rule.answers) - 1)], source)
                return [0.0 if c == chosen else UNLISTED_LOGPROB for c in continuations]
        scores = found[0].scores if found else {}
        return [scores.get(c, UNLISTED_LOGPROB) for c in continuations]

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """`ScoreResponse`s from the scoring rules (see `logprobs`); prompt tokens are whitespace words."""
        return [ScoreResponse(logprobs=self.logprobs(r, list(r.continuations)), prompt_tokens=len(prompt_text(r).split()),
                              seconds=0.0, model=self.model_id) for r in requests]
