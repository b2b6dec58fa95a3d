"""The plugin registry is `conf/`: one group per folder, one option per YAML file, `_target_` naming the class."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from t2s.config import CONF_DIR
from t2s.stages import STAGE_GROUPS

#: groups that are not stages but are still swapped by config
OTHER_GROUPS = ("dataset", "schema_format", "llm", "decoding", "logger", "experiment")


@dataclass
class Option:
    group: str
    name: str
    target: str | None
    summary: str
    path: Path


def _comment(path: Path) -> str:
    """The first comment line of a YAML file (its description), or ""."""
    lines = path.read_text().splitlines()
    return next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("#") and "@package" not in ln), "")


def _summary(target: str | None, path: Path, *, prefer_comment: bool = False) -> str:
    """A stage plugin is described by its class's docstring; other options (several may share one class, like the
    LLM configs) by their YAML's first comment line when they have one."""
    if target is None or (prefer_comment and _comment(path)):
        return _comment(path)
    module, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except Exception as e:  # noqa: BLE001 - report, don't crash the listing
        return f"(cannot import {target}: {type(e).__name__}: {e})"
    doc = (obj.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else "(no docstring)"


def options(group: str) -> list[Option]:
    """Every option of a config group, read from `conf/<group>/*.yaml`."""
    out = []
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        target = data.get("_target_") if isinstance(data, dict) else None
        summary = _summary(target, path, prefer_comment=group not in STAGE_GROUPS)
        out.append(Option(group=group, name=path.stem, target=target, summary=summary, path=path))
    return out


def groups() -> list[str]:
    return [*STAGE_GROUPS, *OTHER_GROUPS]


def defaults() -> dict[str, str]:
    data = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    out: dict[str, str] = {}
    for item in data.get("defaults", []):
        if isinstance(item, dict):
            for k, v in item.items():
                out[k.replace("optional ", "")] = str(v)
    return out


def format_registry(only: str | None = None) -> str:
    """Text listing of groups, options (default marked with *) and one-line descriptions."""
    chosen = defaults()
    lines: list[str] = []
    for group in groups():
        if only and group != only:
            continue
        kind = "stage" if group in STAGE_GROUPS else "config"
        lines.append(f"{group}  ({kind}; default: {chosen.get(group, '-')})")
        for opt in options(group):
            mark = "*" if chosen.get(group) == opt.name else " "
            lines.append(f"  {mark} {opt.name:<22} {opt.summary}")
        lines.append("")
    return "\n".join(lines).rstrip()
