"""Versioned prompt templates: prompts are data, never strings in code.

A template is a YAML file `<name>_v<version>.yaml` with `name`, `version`, `system` and `user`; placeholders are
`str.format` fields. The templates several stages share live here in `t2s/prompts/`; a method's own templates live in
its package beside the parsers of their replies (`plugins/corrector/share/share_bam_v1.yaml` next to
`plugins/corrector/share/prompts.py`). `load_prompt` finds a template by its name in either place, so a config names
a template by its id (`bam_prompt: share_bam_v1`) wherever the file lies; a path names any other file.

Optional `blocks` are the template's own wording for lists the caller fills in (retrieved values, few-shot examples,
probe findings, evidence): each has a `header`, an `item` format, a `joiner` between items and a `footer`; an empty
list renders as "" (so a stage that is off leaves no trace in the prompt). The code supplies the item fields; the
template decides every word the model sees.

Optional `reply` is the dotted path of the template's `ReplyFormat` (`t2s.prompts.replies`): the parser of its
replies paired with the canonical reply that parser reads. `render` returns `Messages` that remember the template
and fields (`t2s.llm.base.PromptSource`), so a request built from them can be answered by template and fields (the
scripted LLM's structured rules) while its text and cache key stay what the template renders.
"""

from __future__ import annotations

import importlib.util
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from t2s.llm.base import PromptSource
from t2s.prompts.replies import ReplyFormat, resolve_reply

__all__ = ["PLUGIN_PACKAGE", "PROMPT_DIR", "Block", "Messages", "PromptTemplate", "ReplyFormat", "load_prompt",
           "plugin_prompt_dirs", "prompt_files", "resolve_reply"]

PROMPT_DIR = Path(__file__).resolve().parent
#: the package the stage plugins are installed as (`plugins/` in the checkout)
PLUGIN_PACKAGE = "t2s_plugins"
_TEMPLATE_FILE = re.compile(r"^\w+_v\d+\.yaml$")


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


class Messages(list):  # type: ignore[type-arg]
    """Chat messages as `PromptTemplate.render` gives them: a plain list of {"role", "content"} dicts that also
    carries `source`, the template and fields it was rendered from (`LLMRequest.chat` passes it on)."""

    def __init__(self, items: Any = (), source: PromptSource | None = None) -> None:
        super().__init__(items)
        self.source = source


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
    #: dotted path of the `ReplyFormat` of the template's replies ("" when it names none)
    reply: str = ""

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

    def reply_format(self) -> ReplyFormat | None:
        """The format of this template's replies (its `reply:`), or None when it names none."""
        return resolve_reply(self.reply, where=f"prompt {self.path}") if self.reply else None

    def render(self, **fields: str) -> Messages:
        missing = self.fields() - fields.keys()
        if missing:
            raise KeyError(f"prompt {self.path} needs fields {sorted(missing)} that the caller did not give")
        source = PromptSource(template=self.id, reply=self.reply,
                              fields=tuple(sorted((k, str(v)) for k, v in fields.items())))
        user = {"role": "user", "content": self.user.format(**fields)}
        if not self.system.strip():  # no system message: the chat template's default applies
            return Messages([user], source)
        return Messages([{"role": "system", "content": self.system.format(**fields)}, user], source)


def plugin_prompt_dirs() -> list[Path]:
    """The folders of the plugin package (`t2s_plugins`), located without importing any plugin (empty when it is not
    installed)."""
    spec = importlib.util.find_spec(PLUGIN_PACKAGE)
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def prompt_files() -> dict[str, Path]:
    """Every template that can be loaded by name: `t2s/prompts/*.yaml` and the `<name>_v<version>.yaml` files in the
    plugin packages. Raises `ValueError` when two files claim one name."""
    found: dict[str, list[Path]] = {}
    for p in sorted(PROMPT_DIR.glob("*.yaml")):
        found.setdefault(p.stem, []).append(p)
    for root in plugin_prompt_dirs():
        for p in sorted(root.rglob("*.yaml")):
            if _TEMPLATE_FILE.match(p.name):
                found.setdefault(p.stem, []).append(p)
    twice = {k: v for k, v in found.items() if len(v) > 1}
    if twice:
        raise ValueError("prompt template name(s) defined by more than one file: " + "; ".join(
            f"{k}: {', '.join(map(str, v))}" for k, v in sorted(twice.items())) + " (rename one: names are ids)")
    return {k: v[0] for k, v in found.items()}


def load_prompt(name_or_path: str) -> PromptTemplate:
    """Load a template by name (`zero_shot_v1`, found in `t2s/prompts/` or a plugin package: `prompt_files`) or by
    file path."""
    path = Path(name_or_path)
    if not path.suffix:
        files = prompt_files()
        path = files.get(name_or_path, PROMPT_DIR / f"{name_or_path}.yaml")
        if not path.is_file():
            raise FileNotFoundError(f"prompt template {name_or_path!r} not found in {PROMPT_DIR} or the plugin "
                                    f"packages; known templates: {sorted(files)}")
    if not path.is_file():
        raise FileNotFoundError(f"prompt template file {path} does not exist")
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
                              user=str(data["user"]), path=str(path), blocks=blocks, reply=str(data.get("reply") or ""))
    except KeyError as e:
        raise KeyError(f"prompt template {path} lacks key {e.args[0]!r} (needs name, version, system, user)") from None
