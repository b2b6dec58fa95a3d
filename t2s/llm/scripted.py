"""A scripted LLM for tests: deterministic answers chosen by matching the prompt against rules.

Plugins that parse structured model output (trajectories, verdicts, column lists, probe decisions) need a model that
answers in the expected format, which the random tiny model cannot. `ScriptedLLM` runs their real request building,
real parsing and real control flow against answers a test writes down (the idea of DSPy's `DummyLM`).

Rules, in order, first match wins (a YAML file given as `path`, or the same list inline as `rules`)::

    rules:
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

The prompt a rule sees is each message as "<role>: <content>" joined by blank lines (or the raw prompt). Token counts
are whitespace-separated words, so cost accounting is exercised too. `calls` records every prompt seen, in order.

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

from t2s.llm.base import LLM, LLMRequest, LLMResponse, ScoreRequest, ScoreResponse
from t2s.llm.structured import ConstraintViolation, text_matcher

#: log-probability given to a continuation a scoring rule does not list
UNLISTED_LOGPROB = -30.0


@dataclass
class Rule:
    """One rule: a compiled pattern and what to answer."""

    pattern: re.Pattern[str]
    replies: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    expand: bool = False
    hits: int = 0


def prompt_text(request: Any) -> str:
    """The text rules match against: "<role>: <content>" per message joined by blank lines, or the raw prompt."""
    if getattr(request, "prompt", None) is not None:
        return str(request.prompt)
    return "\n\n".join(f"{role}: {content}" for role, content in request.messages)


class ScriptedLLM(LLM):
    """Answers chosen by regex rules on the prompt (see the module docstring); for tests of parsing-heavy plugins."""

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
        self._lock = threading.Lock()

    @staticmethod
    def _rule(i: int, r: Any, path: str | None) -> Rule:
        where = f"{path or 'inline rules'}, rule {i + 1}"
        if not isinstance(r, dict) or "match" not in r:
            raise ValueError(f"{where}: each rule needs `match` (a regex) and `reply`, `replies` or `scores`")
        unknown = set(r) - {"match", "reply", "replies", "scores", "expand"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; use match, reply, replies, scores, expand")
        try:
            pattern = re.compile(str(r["match"]), re.S)
        except re.error as e:
            raise ValueError(f"{where}: bad regex {r['match']!r}: {e}") from None
        replies = [str(r["reply"])] if "reply" in r else [str(x) for x in r.get("replies", [])]
        return Rule(pattern=pattern, replies=replies, scores={str(k): float(v) for k, v in (r.get("scores") or {}).items()},
                    expand=bool(r.get("expand", False)))

    @property
    def model_id(self) -> str:
        return "scripted@" + hashlib.sha256(self._source.encode()).hexdigest()[:12]

    def _find(self, text: str, *, scoring: bool) -> tuple[Rule, re.Match[str]] | None:
        for rule in self.rules:
            if (scoring and not rule.scores) or (not scoring and rule.scores and not rule.replies):
                continue
            m = rule.pattern.search(text)
            if m:
                return rule, m
        return None

    def _answer(self, text: str) -> str:
        found = self._find(text, scoring=False)
        if found is None:
            if self.default is None:
                raise LookupError(f"scripted LLM: no rule matches the prompt and there is no default; prompt:\n{text[:2000]}")
            return str(self.default)
        rule, m = found
        reply = rule.replies[min(rule.hits, len(rule.replies) - 1)] if rule.replies else str(self.default or "")
        rule.hits += 1
        return m.expand(reply) if rule.expand else reply

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        out = []
        with self._lock:
            for req in requests:
                text = prompt_text(req)
                self.calls.append(text)
                texts = [self._answer(text) for _ in range(max(1, req.params.n))]
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
        """Log-probabilities of each continuation after the prompt, from the first scoring rule that matches."""
        text = prompt_text(request)
        with self._lock:
            self.calls.append(text)
            found = self._find(text, scoring=True)
        scores = found[0].scores if found else {}
        return [scores.get(c, UNLISTED_LOGPROB) for c in continuations]

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """`ScoreResponse`s from the scoring rules (see `logprobs`); prompt tokens are whitespace words."""
        return [ScoreResponse(logprobs=self.logprobs(r, list(r.continuations)), prompt_tokens=len(prompt_text(r).split()),
                              seconds=0.0, model=self.model_id) for r in requests]
