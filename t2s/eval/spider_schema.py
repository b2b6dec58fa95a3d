"""Spider's `tables.json` as `DatabaseSchema` objects, in the file's own table and column order.

The order matters to the exact-set match: Spider's foreign-key map (`build_foreign_key_map` in the official
`evaluation.py`) picks the column with the smallest `tables.json` index as the representative of each
foreign-key class, and `t2s.eval.exact_match` reproduces that from the order of `DatabaseSchema.tables` /
`Table.columns` and of `DatabaseSchema.foreign_keys`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t2s.db.types import Column, DatabaseSchema, ForeignKey, Table

__all__ = ["load_spider_tables", "schema_from_spider_entry"]


def schema_from_spider_entry(entry: dict[str, Any]) -> DatabaseSchema:
    """One `tables.json` entry as a `DatabaseSchema` with the original (not the "natural") names.

    Tables keep `table_names_original` order, columns keep `column_names_original` order (the `*` entry is
    dropped), foreign keys keep the file's order. Raises KeyError naming the missing key for a malformed entry.
    """
    for key in ("db_id", "table_names_original", "column_names_original", "column_types"):
        if key not in entry:
            raise KeyError(f"tables.json entry {entry.get('db_id', '?')!r} has no {key!r}: "
                           "is this a Spider-format tables.json?")
    primary: set[int] = set()
    for pk in entry.get("primary_keys", []):
        primary.update(pk if isinstance(pk, list) else [pk])  # composite keys are lists in BIRD's files
    tables = [Table(name=name, columns=[]) for name in entry["table_names_original"]]
    where: dict[int, tuple[str, str]] = {}
    pairs = zip(entry["column_names_original"], entry["column_types"], strict=True)
    for idx, ((t_idx, col_name), col_type) in enumerate(pairs):
        if t_idx < 0:
            continue
        tables[t_idx].columns.append(Column(name=col_name, type=col_type, primary_key=idx in primary))
        where[idx] = (tables[t_idx].name, col_name)
    fks = []
    for a, b in entry.get("foreign_keys", []):
        (ta, ca), (tb, cb) = where[a], where[b]
        fks.append(ForeignKey(table=ta, column=ca, ref_table=tb, ref_column=cb))
    return DatabaseSchema(db_id=entry["db_id"], tables=tables, foreign_keys=fks)


def load_spider_tables(path: str | Path) -> dict[str, DatabaseSchema]:
    """Every database of a Spider-format `tables.json` (Spider, BIRD `dev_tables.json`), keyed by `db_id`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such file; pass the path of Spider's tables.json") from None
    if not isinstance(data, list):
        raise ValueError(f"{p}: expected a JSON list of database entries, got {type(data).__name__}")
    return {entry["db_id"]: schema_from_spider_entry(entry) for entry in data}
