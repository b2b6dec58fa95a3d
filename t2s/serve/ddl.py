"""A schema given as DDL text (`POST /generate_sql` with `schema`): parsed by sqlglot, built as an empty SQLite file.

Every pipeline stage reads schemas through the database file (`env.schema` introspects it, fixers and probers
execute against it), so a DDL schema becomes a real, empty SQLite database in the cache, keyed by the hash of its
normalized DDL: the same schema sent twice reuses one file. The server never runs the generated SQL against it (it
holds no rows to show); stages may query it read-only like any database.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

#: bump when the build changes, so old cache files are not reused
_BUILD_VERSION = 1
#: limits on what a request may ask the server to build
MAX_TABLES = 500


class DDLError(ValueError):
    """DDL text the server cannot turn into a schema; the message says what and why."""


@dataclass(frozen=True)
class DDLDatabase:
    """An empty SQLite database built from DDL: its id (`ddl_<hash12>`), file and table names."""

    db_id: str
    path: Path
    tables: tuple[str, ...]


def _statements(ddl: str) -> list[exp.Create]:
    if not ddl or not ddl.strip():
        raise DDLError("the schema is empty: send CREATE TABLE statements")
    try:
        parsed = [s for s in sqlglot.parse(ddl, read="sqlite") if s is not None]
    except SqlglotError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DDLError(f"the schema does not parse as SQL DDL ({first})") from None
    tables: list[exp.Create] = []
    for stmt in parsed:
        if isinstance(stmt, exp.Create) and str(stmt.args.get("kind", "")).upper() == "TABLE":
            if isinstance(stmt.expression, exp.Query):
                raise DDLError(f"CREATE TABLE {stmt.this.name} AS SELECT ... cannot be built without data; "
                               "declare its columns")
            if not isinstance(stmt.this, exp.Schema) or not stmt.this.expressions:
                raise DDLError(f"CREATE TABLE {stmt.find(exp.Table)} declares no columns")
            tables.append(stmt)
        elif isinstance(stmt, exp.Create) and str(stmt.args.get("kind", "")).upper() in ("INDEX", "UNIQUE INDEX"):
            continue  # indexes do not change the schema a model sees
        else:
            head = stmt.sql(dialect="sqlite")[:60]
            raise DDLError(f"the schema may only hold CREATE TABLE (and CREATE INDEX) statements; got {head!r}")
    if not tables:
        raise DDLError("the schema holds no CREATE TABLE statement")
    if len(tables) > MAX_TABLES:
        raise DDLError(f"the schema declares {len(tables)} tables; at most {MAX_TABLES} are accepted")
    return tables


def build_ddl_database(ddl: str, cache_dir: Path) -> DDLDatabase:
    """Parse `ddl` and build (once per normalized DDL) an empty SQLite file under `cache_dir/serve_ddl/`.

    Raises `DDLError` when the text is not a list of CREATE TABLE statements that SQLite accepts. The file is built
    under a temporary name and renamed into place, so concurrent requests never see a half-built database.
    """
    tables = _statements(ddl)
    script = ";\n".join(t.sql(dialect="sqlite") for t in tables) + ";\n"
    digest = hashlib.sha256(f"t2s-ddl-v{_BUILD_VERSION}\n{script}".encode()).hexdigest()
    db_id = f"ddl_{digest[:12]}"
    target = Path(cache_dir) / "serve_ddl" / db_id / f"{db_id}.sqlite"
    names = tuple(t.this.this.name for t in tables)
    if target.is_file():
        return DDLDatabase(db_id=db_id, path=target, tables=names)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(script)
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, target)
    except sqlite3.Error as e:
        raise DDLError(f"SQLite rejected the schema: {e}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return DDLDatabase(db_id=db_id, path=target, tables=names)
