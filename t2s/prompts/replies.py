"""Reply formats: each template's reply, written and read by one pairing, so a test states answers, not wording.

A template names the format of its replies in its YAML (`reply: t2s.generation.SQL_REPLY`, a dotted path to a
`ReplyFormat`, found the way Hydra finds a `_target_`, so `t2s` imports no plugin by name). A format holds the
stage's own parser (`read`) and the canonical reply that parser reads (`write`). The scripted LLM renders a rule's
structured answer (`answer: {sql: ...}`) through the format of the template that built the request, and the stage's
parser reads it back: the idea of DSPy's `ChatAdapter` (`format` / `parse`) with its `DummyLM`. Rewording a template
then changes no test of parsing, and a change of reply format shows in one place.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReplyFormat:
    """How one kind of reply is written and read.

    `fields` name the parts of a structured answer. `write(**answer)` gives the canonical reply text (what a model
    that follows the template answers). `read(text)` is the stage's parser: the value of the field for a format with
    one field, a mapping of the fields otherwise. `defaults` fill the fields an answer may leave out; `example` is an
    answer that every format must read back as written (`parse(render(example)) == {**defaults, **example}`, checked
    for every template that names a format).
    """

    fields: tuple[str, ...]
    write: Callable[..., str]
    read: Callable[[str], Any]
    example: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("a ReplyFormat needs at least one field")
        stray = (set(self.example) | set(self.defaults)) - set(self.fields)
        if stray:
            raise ValueError(f"ReplyFormat: example or defaults name field(s) {sorted(stray)} not in {self.fields}")

    def render(self, answer: Mapping[str, Any]) -> str:
        """The reply text of a structured answer (`defaults` fill what it leaves out)."""
        unknown = set(answer) - set(self.fields)
        missing = set(self.fields) - set(answer) - set(self.defaults)
        if unknown or missing:
            raise ValueError(f"answer {dict(answer)!r} does not fit the reply format (fields {list(self.fields)}, "
                             f"optional {sorted(self.defaults)}): unknown {sorted(unknown)}, missing {sorted(missing)}")
        return self.write(**{**self.defaults, **answer})

    def parse(self, text: str) -> dict[str, Any]:
        """The fields the stage's parser reads from a reply (one-field formats: `{field: read(text)}`)."""
        value = self.read(text)
        return {self.fields[0]: value} if len(self.fields) == 1 else dict(value)


def resolve_reply(path: str, *, where: str = "") -> ReplyFormat:
    """The `ReplyFormat` a dotted path names (`package.module.NAME`); `where` says whose `reply:` it is in errors."""
    module, _, name = path.rpartition(".")
    at = f" ({where})" if where else ""
    try:
        found = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError) as e:
        raise LookupError(f"reply format {path!r}{at} cannot be loaded: {e}") from None
    if not isinstance(found, ReplyFormat):
        raise TypeError(f"reply format {path!r}{at} is not a t2s.prompts.ReplyFormat (got {type(found).__name__})")
    return found
