"""Schema introspection of SQLite databases, cached on disk by the database file's content hash.

`introspect` reads tables, declared column types, primary keys, foreign keys and a few sample values
per column through a read-only connection. `content_hash` (from `t2s.files`, re-exported here) is the one database
fingerprint the project uses for every per-database cache (schemas, profiles, indexes, artifacts): two copies of the
same file share their caches, and an edited file never reuses stale ones.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from t2s.db.types import Column, DatabaseSchema, ForeignKey, Table
from t2s.files import atomic_write, content_hash

__all__ = ["SAMPLE_MAX_CHARS", "connect_readonly", "content_hash", "introspect", "quote_sqlite_identifier"]

log = logging.getLogger(__name__)

#: string sample values longer than this many characters are cut and end with "..."
SAMPLE_MAX_CHARS = 100
#: sample values are drawn from at most this many leading rows of a table, so huge tables stay cheap
SAMPLE_SCAN_ROWS = 100_000
#: bump when the introspected content changes, so old cache files are not reused
_CACHE_VERSION = 1


def quote_sqlite_identifier(name: str) -> str:
    """`name` as a double-quoted SQLite identifier (embedded quotes doubled); always quotes."""
    return '"' + name.replace('"', '""') + '"'


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def connect_readonly(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection (`mode=ro` URI) whose text values decode as UTF-8 with replacement.

    Raises FileNotFoundError naming the file when it does not exist (SQLite would otherwise report an
    unhelpful "unable to open database file").
    """
    p = Path(db_path).absolute()
    if not p.is_file():
        raise FileNotFoundError(f"database file not found: {p}")
    conn = sqlite3.connect(p.as_uri() + "?mode=ro", uri=True, check_same_thread=False)
    conn.text_factory = _decode
    return conn


def _sample_value(v: Any) -> Any:
    if isinstance(v, str) and len(v) > SAMPLE_MAX_CHARS:
        return v[:SAMPLE_MAX_CHARS] + "..."
    return v


def _samples(conn: sqlite3.Connection, table: str, column: str, n: int) -> list[Any]:
    """Up to `n` distinct non-null, non-blank, non-blob values, in table scan order (deterministic)."""
    if n <= 0:
        return []
    t, c = quote_sqlite_identifier(table), quote_sqlite_identifier(column)
    sql = (
        f"SELECT DISTINCT v FROM (SELECT {c} AS v FROM {t} LIMIT {SAMPLE_SCAN_ROWS}) "
        f"WHERE v IS NOT NULL AND typeof(v) != 'blob' AND trim(CAST(v AS TEXT)) != '' LIMIT {int(n)}"
    )
    try:
        return [_sample_value(r[0]) for r in conn.execute(sql)]
    except sqlite3.DatabaseError as e:  # e.g. a corrupt page in one table: keep the schema, drop samples
        log.warning("no sample values for %s.%s: %s", table, column, e)
        return []


def _rows(conn: sqlite3.Connection, table: str, n: int) -> list[list[Any]]:
    """The first `n` rows of a table (rowid order), values as in samples (long strings cut, blobs as "<blob>")."""
    if n <= 0:
        return []
    try:
        cur = conn.execute(f"SELECT * FROM {quote_sqlite_identifier(table)} LIMIT {int(n)}")
        return [["<blob>" if isinstance(v, bytes) else _sample_value(v) for v in row] for row in cur.fetchall()]
    except sqlite3.DatabaseError as e:  # a broken table must not stop introspection
        log.debug("cannot read rows of %s: %s", table, e)
        return []


def _read_schema(conn: sqlite3.Connection, db_id: str, n_samples: int, n_rows: int = 0) -> DatabaseSchema:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY rowid"
        )
    ]
    tables: list[Table] = []
    pk_cols: dict[str, list[str]] = {}  # lower table name -> PK columns in key order
    for name in names:
        info = conn.execute(f"PRAGMA table_info({quote_sqlite_identifier(name)})").fetchall()
        cols = [
            Column(name=r[1], type=(r[2] or "").strip(), primary_key=r[5] > 0,
                   samples=_samples(conn, name, r[1], n_samples))
            for r in info
        ]
        pk_cols[name.lower()] = [r[1] for r in sorted((r for r in info if r[5] > 0), key=lambda r: r[5])]
        tables.append(Table(name=name, columns=cols, rows=_rows(conn, name, n_rows)))

    by_name = {t.name.lower(): t for t in tables}
    fks: list[ForeignKey] = []
    seen: set[tuple[str, str, str, str]] = set()
    for t in tables:
        rows = conn.execute(f"PRAGMA foreign_key_list({quote_sqlite_identifier(t.name)})").fetchall()
        rows.sort(key=lambda r: (-r[0], r[1]))  # SQLite numbers constraints last-declared first
        for _id, seq, parent, frm, to in (r[:5] for r in rows):
            ref = by_name.get(str(parent).lower())
            if ref is None:
                log.debug("%s: %s.%s references missing table %s; dropped", db_id, t.name, frm, parent)
                continue
            if to is None:  # implicit reference: the parent's primary key, matched by position
                parent_pk = pk_cols.get(ref.name.lower(), [])
                if seq >= len(parent_pk):
                    log.debug("%s: %s.%s references %s without a primary key; dropped", db_id, t.name, frm, ref.name)
                    continue
                to = parent_pk[seq]
            child_col, ref_col = t.column(str(frm)), ref.column(str(to))
            if child_col is None or ref_col is None:
                log.debug("%s: foreign key %s.%s -> %s.%s names a missing column; dropped",
                          db_id, t.name, frm, ref.name, to)
                continue
            key = (t.name, child_col.name, ref.name, ref_col.name)
            if key not in seen:
                seen.add(key)
                fks.append(ForeignKey(table=t.name, column=child_col.name, ref_table=ref.name, ref_column=ref_col.name))
    return DatabaseSchema(db_id=db_id, tables=tables, foreign_keys=fks)


def introspect(db_path: str, db_id: str, *, n_samples: int = 3, n_rows: int = 0,
               cache_dir: Path | None = None) -> DatabaseSchema:
    """The schema of the SQLite database at `db_path`: tables in creation order (internal `sqlite_*`
    tables skipped), columns with declared types (as written, possibly ""), primary keys, foreign keys,
    up to `n_samples` distinct sample values per column, and each table's first `n_rows` rows.

    Foreign keys come from `PRAGMA foreign_key_list`, per table in declaration order; a reference without
    a parent column resolves to the parent's primary key; names are normalized to the tables' own
    spelling; references to missing tables or columns, and duplicates, are dropped. Samples are the first distinct non-null, non-blank,
    non-blob values among a table's first `SAMPLE_SCAN_ROWS` rows; strings longer than
    `SAMPLE_MAX_CHARS` are cut. Text that is not valid UTF-8 decodes with U+FFFD replacements.

    With `cache_dir`, the result is stored as JSON keyed by `content_hash(db_path)` and `n_samples`;
    writes are atomic, so concurrent runs may share the directory. The cached schema is returned under
    the given `db_id` (identical files with different ids share one entry).
    """
    p = Path(db_path)
    if not p.is_file():
        raise FileNotFoundError(f"database file not found: {p.absolute()} (db_id {db_id!r})")
    if p.stat().st_size == 0:
        raise ValueError(f"database file is empty (0 bytes): {p.absolute()} (db_id {db_id!r}); a model would be shown "
                         f"an empty schema. Replace it with the real database.")
    cache_file: Path | None = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{content_hash(p)}-s{n_samples}-r{n_rows}-v{_CACHE_VERSION}.json"
        if cache_file.is_file():
            try:
                d = json.loads(cache_file.read_text(encoding="utf-8"))
                d["db_id"] = db_id
                return DatabaseSchema.from_dict(d)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("ignoring unreadable schema cache %s (%s); rebuilding it", cache_file, e)
    conn = connect_readonly(p)
    try:
        schema = _read_schema(conn, db_id, n_samples, n_rows)
    except sqlite3.DatabaseError as e:
        raise sqlite3.DatabaseError(f"cannot read the schema of {p.absolute()} (db_id {db_id!r}): {e}") from e
    finally:
        conn.close()
    if cache_file is not None:
        atomic_write(cache_file, json.dumps(schema.to_dict(), ensure_ascii=False))
    return schema
