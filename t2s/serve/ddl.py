"""A schema given as DDL text (`POST /generate_sql` with `schema`): parsed by sqlglot, built as an empty SQLite file.

Every pipeline stage reads schemas through the database file (`env.schema` introspects it, fixers and probers
execute against it), so a DDL schema becomes a real, empty SQLite database in the cache, keyed by the hash of its
normalized DDL: the same schema sent twice reuses one file. The server never runs the generated SQL against it (it
holds no rows to show); stages may query it read-only like any database.

`DDLCache` is what the server uses: it bounds the folder (`MAX_ENTRIES` databases and `MAX_BYTES` on disk at most,
the least recently used removed first, never one a request is using) and remembers the raw text it has built, so a
schema sent again is not parsed again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

#: bump when the build changes, so old cache files are not reused
_BUILD_VERSION = 1
#: limits on what a request may ask the server to build
MAX_TABLES = 500
#: DDL databases a `DDLCache` keeps on disk at most, and their total size
MAX_ENTRIES = 256
MAX_BYTES = 256 * 1024 * 1024

log = logging.getLogger("t2s.serve")


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


def ddl_root(cache_dir: Path) -> Path:
    """The folder DDL databases are built in: `<cache_dir>/serve_ddl`."""
    return Path(cache_dir) / "serve_ddl"


def build_ddl_database(ddl: str, cache_dir: Path) -> DDLDatabase:
    """Parse `ddl` and build (once per normalized DDL) an empty SQLite file under `cache_dir/serve_ddl/`.

    Raises `DDLError` when the text is not a list of CREATE TABLE statements that SQLite accepts. The file is built
    under a temporary name and renamed into place, so concurrent requests never see a half-built database.
    """
    tables = _statements(ddl)
    script = ";\n".join(t.sql(dialect="sqlite") for t in tables) + ";\n"
    digest = hashlib.sha256(f"t2s-ddl-v{_BUILD_VERSION}\n{script}".encode()).hexdigest()
    db_id = f"ddl_{digest[:12]}"
    target = ddl_root(cache_dir) / db_id / f"{db_id}.sqlite"
    names = tuple(t.this.this.name for t in tables)
    if target.is_file():
        return DDLDatabase(db_id=db_id, path=target, tables=names)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        try:
            # one transaction: a commit per CREATE TABLE (autocommit) took 5.5 s for 490 tables
            conn.executescript(f"BEGIN;\n{script}COMMIT;\n")
        finally:
            conn.close()
        os.replace(tmp, target)
    except sqlite3.Error as e:
        raise DDLError(f"SQLite rejected the schema: {e}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return DDLDatabase(db_id=db_id, path=target, tables=names)


def _size(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except OSError:
            pass
    return total


class DDLCache:
    """The server's DDL databases: `build_ddl_database` under `<cache_dir>/serve_ddl`, bounded.

    `acquire(ddl)` returns the database of a schema (built once) and marks it in use until `release`; after a
    build, the least recently used databases not in use are removed until at most `max_entries` remain and they
    take at most `max_bytes` (a folder's modification time is its last use, so the order survives restarts).
    `on_evict(db)` is called before a database's folder is removed (the service forgets its introspected schema).
    The raw texts of the last `max_entries` schemas are remembered by hash, so a schema sent again is not re-parsed.
    Several servers sharing one cache folder each keep only their own requests' databases from removal.
    """

    def __init__(self, cache_dir: Path, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES,
                 on_evict: Callable[[DDLDatabase], None] | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.root = ddl_root(self.cache_dir)
        self.max_entries = max(1, max_entries)
        self.max_bytes = max(0, max_bytes)
        self.on_evict = on_evict
        self._lock = threading.Lock()
        self._in_use: dict[str, int] = {}
        self._known: OrderedDict[str, DDLDatabase] = OrderedDict()

    def acquire(self, ddl: str) -> DDLDatabase:
        """The database of `ddl` (built if needed), in use until `release(db)`; `DDLError` if it cannot be built."""
        raw = hashlib.sha256(ddl.encode("utf-8", "surrogatepass")).hexdigest()
        with self._lock:
            db = self._known.get(raw)
            if db is not None and db.path.is_file():
                self._known.move_to_end(raw)
                self._use(db)
                return db
        db = build_ddl_database(ddl, self.cache_dir)
        with self._lock:
            self._known[raw] = db
            self._known.move_to_end(raw)
            while len(self._known) > self.max_entries:
                self._known.popitem(last=False)
            self._use(db)
            self._evict()
        return db

    def release(self, db: DDLDatabase) -> None:
        """The request using `db` is done with it."""
        with self._lock:
            left = self._in_use.get(db.db_id, 0) - 1
            if left > 0:
                self._in_use[db.db_id] = left
            else:
                self._in_use.pop(db.db_id, None)

    def _use(self, db: DDLDatabase) -> None:
        self._in_use[db.db_id] = self._in_use.get(db.db_id, 0) + 1
        try:
            os.utime(db.path.parent)
        except OSError:
            pass

    def entries(self) -> list[tuple[Path, float, int]]:
        """(folder, last use, bytes) of every DDL database on disk, least recently used first."""
        out = []
        if not self.root.is_dir():
            return out
        for folder in self.root.iterdir():
            if folder.is_dir() and folder.name.startswith("ddl_"):
                try:
                    out.append((folder, folder.stat().st_mtime, _size(folder)))
                except OSError:
                    continue
        return sorted(out, key=lambda e: e[1])

    def _evict(self) -> None:
        entries = self.entries()
        count, total = len(entries), sum(size for _, _, size in entries)
        for folder, _, size in entries:
            if count <= self.max_entries and total <= self.max_bytes:
                break
            if folder.name in self._in_use:
                continue
            db = DDLDatabase(db_id=folder.name, path=folder / f"{folder.name}.sqlite", tables=())
            if self.on_evict is not None:
                try:
                    self.on_evict(db)
                except Exception:  # noqa: BLE001 - forgetting derived state must not keep the file
                    log.exception("forgetting DDL database %s failed", db.db_id)
            shutil.rmtree(folder, ignore_errors=True)
            for raw, known in list(self._known.items()):
                if known.db_id == db.db_id:
                    del self._known[raw]
            count, total = count - 1, total - size
