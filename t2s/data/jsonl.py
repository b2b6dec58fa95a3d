"""JSONL loader for a user's own questions and SQLite databases (format: docs/data_formats.md, "JSONL")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t2s.data.base import Dataset, check_unique_qids, data_root_hint, require, resolve
from t2s.types import Example

#: keys a JSONL question may have; any other key is an error (it is most likely a typo)
KEYS = ("id", "question", "db_id", "sql", "evidence", "difficulty", "db_path", "meta")


def _resolve_db(db_dir: Path, db_id: str) -> Path:
    nested = db_dir / db_id / f"{db_id}.sqlite"
    flat = db_dir / f"{db_id}.sqlite"
    return flat if not nested.is_file() and flat.is_file() else nested


class JsonlDataset(Dataset):
    """Questions from a JSON Lines file, one object per line.

    Keys: `id` (required, string or integer, unique), `question` and `db_id` (required, non-empty
    strings), `sql` (gold SQL, optional), `evidence` and `difficulty` (optional strings), `db_path`
    (optional: the database file, relative to the JSONL file's folder when not absolute), `meta` (an
    optional object copied into `Example.meta`). Without `db_path` the database is
    `db_dir/<db_id>/<db_id>.sqlite`, else `db_dir/<db_id>.sqlite`. Blank lines are ignored. Any other
    key, a wrong type, invalid JSON or a repeated id fails with the file, the line number and the key.
    """

    def __init__(
        self,
        *,
        path: str,
        db_dir: str,
        name: str = "jsonl",
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        on_missing_db: str = "skip",
    ) -> None:
        super().__init__(name=name, limit=limit, sample=sample, seed=seed, on_missing_db=on_missing_db)
        self.path = resolve(path)
        self.db_dir = resolve(db_dir)

    def _example(self, obj: Any, where: str, db_files: dict[str, Path]) -> Example:
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - set(KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(KEYS)}")
        raw_id = obj.get("id")
        if raw_id is None or isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or str(raw_id) == "":
            what = "is missing" if "id" not in obj else f"must be a non-empty string or an integer, got {raw_id!r}"
            raise ValueError(f"{where}: key 'id' {what}")
        db_id = require(obj, "db_id", where)
        meta = obj.get("meta", {})
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: key 'meta' must be an object, got {meta!r}")
        explicit = require(obj, "db_path", where, optional=True)
        if explicit:
            db_path = Path(explicit).expanduser()
            db_path = db_path if db_path.is_absolute() else self.path.parent / db_path
        else:
            if db_id not in db_files:
                db_files[db_id] = _resolve_db(self.db_dir, db_id)
            db_path = db_files[db_id]
        return Example(
            qid=str(raw_id),
            question=require(obj, "question", where),
            db_id=db_id,
            db_path=str(db_path),
            gold_sql=require(obj, "sql", where, optional=True),
            evidence=require(obj, "evidence", where, optional=True) or "",
            difficulty=require(obj, "difficulty", where, optional=True),
            meta=dict(meta),
        )

    def _read(self) -> list[Example]:
        if not self.path.is_file():
            raise FileNotFoundError(f"dataset {self.name!r}: questions file not found. " + data_root_hint(self.path))
        examples: list[Example] = []
        lines: list[str] = []
        db_files: dict[str, Path] = {}
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{self.path}, line {lineno}"
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{where}: invalid JSON ({e})") from e
                examples.append(self._example(obj, where, db_files))
                lines.append(f"line {lineno}")
        check_unique_qids(examples, self.path, lines)
        return examples
