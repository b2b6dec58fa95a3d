"""Versioned prompt templates (DESIGN.md / STYLE.md: prompts are data).

A template is a YAML file `t2s/prompts/<name>_v<version>.yaml` (or any path) with `name`, `version`,
`system` and `user`; placeholders are `str.format` fields. A plugin may also point at its own file.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import yaml

PROMPT_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt template: `render(**fields)` gives the [system, user] messages."""

    name: str
    version: int
    system: str
    user: str
    path: str

    @property
    def id(self) -> str:
        return f"{self.name}_v{self.version}"

    def fields(self) -> set[str]:
        out: set[str] = set()
        for text in (self.system, self.user):
            out |= {f for _, f, _, _ in string.Formatter().parse(text) if f}
        return out

    def render(self, **fields: str) -> list[dict[str, str]]:
        missing = self.fields() - fields.keys()
        if missing:
            raise KeyError(f"prompt {self.path} needs fields {sorted(missing)} that the caller did not give")
        return [
            {"role": "system", "content": self.system.format(**fields)},
            {"role": "user", "content": self.user.format(**fields)},
        ]


def load_prompt(name_or_path: str) -> PromptTemplate:
    """Load a template by name (`zero_shot_v1`, looked up in `t2s/prompts/`) or by file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPT_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPT_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"prompt template {name_or_path!r} not found at {path}; known templates: {known}")
    data = yaml.safe_load(path.read_text())
    try:
        return PromptTemplate(name=str(data["name"]), version=int(data["version"]), system=str(data["system"]),
                              user=str(data["user"]), path=str(path))
    except KeyError as e:
        raise KeyError(f"prompt template {path} lacks key {e.args[0]!r} (needs name, version, system, user)") from None
