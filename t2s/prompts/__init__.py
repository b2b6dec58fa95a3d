"""Versioned prompt templates (DESIGN.md / STYLE.md: prompts are data).

A template is a YAML file `t2s/prompts/<name>_v<version>.yaml` (or any path) with `name`, `version`,
`system` and `user`; placeholders are `str.format` fields. A plugin may also point at its own file.

Optional `blocks` are the template's own wording for lists the caller fills in (retrieved values, few-shot examples,
probe findings, evidence): each has a `header`, an `item` format, a `joiner` between items and a `footer`; an empty
list renders as "" (so a stage that is off leaves no trace in the prompt). The code supplies the item fields; the
template decides every word the model sees.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROMPT_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Block:
    """How a list of items is shown in a prompt: `header + joiner.join(item.format(**fields)) + footer`."""

    header: str = ""
    item: str = "{text}"
    joiner: str = "\n"
    footer: str = ""

    def render(self, items: list[Mapping[str, Any]]) -> str:
        if not items:
            return ""
        return self.header + self.joiner.join(self.item.format(**dict(i)) for i in items) + self.footer


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt template: `render(**fields)` gives the [system, user] messages (just [user] when `system` is
    empty, so the model's chat template supplies its default system prompt)."""

    name: str
    version: int
    system: str
    user: str
    path: str
    blocks: Mapping[str, Block] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}_v{self.version}"

    def fields(self) -> set[str]:
        out: set[str] = set()
        for text in (self.system, self.user):
            out |= {f for _, f, _, _ in string.Formatter().parse(text) if f}
        return out

    def block(self, name: str, items: list[Mapping[str, Any]]) -> str:
        """The block `name` rendered over `items` ("" for no items)."""
        if name not in self.blocks:
            raise KeyError(f"prompt {self.path} has no block {name!r} (blocks: {sorted(self.blocks)})")
        try:
            return self.blocks[name].render(items)
        except KeyError as e:
            raise KeyError(f"prompt {self.path}, block {name!r}: item field {e.args[0]!r} is not given") from None

    def render(self, **fields: str) -> list[dict[str, str]]:
        missing = self.fields() - fields.keys()
        if missing:
            raise KeyError(f"prompt {self.path} needs fields {sorted(missing)} that the caller did not give")
        user = {"role": "user", "content": self.user.format(**fields)}
        if not self.system.strip():  # no system message: the chat template's default applies
            return [user]
        return [{"role": "system", "content": self.system.format(**fields)}, user]


def load_prompt(name_or_path: str) -> PromptTemplate:
    """Load a template by name (`zero_shot_v1`, looked up in `t2s/prompts/`) or by file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPT_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPT_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"prompt template {name_or_path!r} not found at {path}; known templates: {known}")
    data = yaml.safe_load(path.read_text())
    blocks = {}
    for name, b in (data.get("blocks") or {}).items():
        unknown = set(b) - {"header", "item", "joiner", "footer"}
        if unknown:
            raise KeyError(f"prompt template {path}, block {name!r}: unknown key(s) {sorted(unknown)} "
                           f"(a block has header, item, joiner, footer)")
        blocks[str(name)] = Block(**{k: str(v) for k, v in b.items()})
    try:
        return PromptTemplate(name=str(data["name"]), version=int(data["version"]), system=str(data["system"]),
                              user=str(data["user"]), path=str(path), blocks=blocks)
    except KeyError as e:
        raise KeyError(f"prompt template {path} lacks key {e.args[0]!r} (needs name, version, system, user)") from None
