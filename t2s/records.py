"""`JsonRecord`: dataclasses that round-trip through JSON, nested records included.

`to_dict()` gives plain JSON-ready containers (tuples become lists); `from_dict(d)` rebuilds the record from its
type hints, so nested records (`list[Candidate]`, `SchemaView.schema`, `dict[str, Usage]`) come back as records and
tuple-typed fields as tuples. Keys a record does not have are ignored (so records written by newer code still load);
missing keys take the field's default.

`StageLog`: a stage's per-question records of what it decided, beside the run's traces.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any, Self, Union


class JsonRecord:
    """Mixin for dataclasses that round-trip through JSON (see the module docstring)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        if isinstance(d, cls):
            return d
        if not isinstance(d, dict):
            raise TypeError(f"{cls.__name__}.from_dict needs a dict, got {type(d).__name__}")
        hints = _hints(cls)
        kwargs = {f.name: decode(hints.get(f.name, Any), d[f.name])
                  for f in dataclasses.fields(cls) if f.init and f.name in d}  # type: ignore[arg-type]
        return cls(**kwargs)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(tp: Any, value: Any) -> Any:
    """`value` (plain JSON data) as type `tp`: records rebuilt, tuples restored, everything else as is."""
    if value is None or tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for a in args:
            if isinstance(a, type) and dataclasses.is_dataclass(a) and isinstance(value, dict):
                return decode(a, value)
        return decode(args[0], value) if len(args) == 1 else value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if hasattr(tp, "from_dict"):
            return tp.from_dict(value)
        hints = _hints(tp)
        return tp(**{f.name: decode(hints.get(f.name, Any), value[f.name])
                     for f in dataclasses.fields(tp) if f.init and f.name in value})
    args = typing.get_args(tp)
    if origin is list and args:
        return [decode(args[0], v) for v in value]
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v) for v in value)
        return tuple(decode(a, v) for a, v in zip(args, value))
    if origin is tuple:
        return tuple(value)
    if origin is dict and len(args) == 2:
        return {k: decode(args[1], v) for k, v in value.items()}
    return value


class StageLog:
    """Per-question records of one stage option, appended to `<run_dir>/<folder>/<option>.jsonl`.

    A stage's contract lets it write only some task fields (a selector `final_sql`, a linker `schemas`), so what it
    decided on the way (a selector's clusters and comparisons, a linker's replies and chosen columns) goes to this
    trace-side file, one JSON object per question with its `qid`. A resumed run appends again; `read` keeps the last
    record per question.
    """

    def __init__(self, run_dir: Any, folder: str, option: str) -> None:
        self.path = Path(run_dir) / folder / f"{option}.jsonl"

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")

    @staticmethod
    def read(path: Any) -> dict[str, dict[str, Any]]:
        """qid -> the last record written for it."""
        out: dict[str, dict[str, Any]] = {}
        p = Path(path)
        if p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    r = json.loads(line)
                    out[str(r.get("qid"))] = r
        return out
