"""Safe execution of model-written SQL against SQLite: read-only, row-capped, with a hard wall-clock limit.

Every query runs in a worker process (a plain `python -c` child talking length-prefixed pickles over its
stdin/stdout). A worker keeps one read-only connection per database file open and serves queries one at a
time. Three layers keep a run safe:

1. Nothing can write, and reads stay inside the database's own tables. Connections are opened with the URI
   `file:...?mode=ro` (SQLite itself refuses to write and never creates a missing file), `PRAGMA
   query_only=ON`, and an authorizer that allows only reads (SELECT, READ, functions, recursive CTEs, the
   PRAGMAs that describe one table or index, and `data_version`). Any other action (INSERT, UPDATE, DELETE,
   CREATE/DROP/ALTER, ATTACH, transactions, PRAGMA writes, ...) fails at prepare time and the result says which:
   `rejected: statement would modify the database (DROP TABLE singer)`. The read side doors are refused as `not
   authorized: ...` (status "error", error category `not_authorized`), however they are reached (a CTE named
   like the table, `main.` / `temp.` prefixes, a view): reading the schema tables (`sqlite_master`,
   `sqlite_schema`, `sqlite_temp_master`, `sqlite_temp_schema`) and the virtual tables `sqlite_stmt`, `dbstat`
   and `sqlite_dbpage` (`_REFUSED_TABLES`); every other PRAGMA, in statement or table-valued form
   (`pragma_database_list()`, `pragma_compile_options()`, `pragma_function_list()`, ...); and the functions of
   `_REFUSED_FUNCTIONS` (`fts3_tokenizer` in both forms, `load_extension`, build fingerprints, R*Tree debugging
   aids). No Spider or BIRD gold query uses any of them, so the rules are the same for gold, model SQL and the
   server; the pipeline's own introspection (`t2s.db.introspect`) reads the schema on its own connection.
   docs/security.md lists them and why.
2. Cooperative deadline: an SQLite progress handler interrupts a query that runs past its timeout
   (runaway recursive CTEs, huge cross joins stop within milliseconds of the limit).
3. Hard deadline: the parent kills (SIGKILL) and respawns a worker that has not answered within
   `timeout + kill_grace` seconds, or that died (a crash inside SQLite); the run goes on.

Why not `multiprocessing`: with "spawn" or "forkserver" every worker re-imports the parent's `__main__`
module; measured on this machine with a main script that imports torch, each worker start cost 1.2-1.3 s
(and a torch copy in memory), against about 0.05 s for this child, which runs `python -S` and imports only
`t2s.db.execute` and the standard library. Workers also restart after a kill, so start cost matters. A
child started with `subprocess` (fork + exec) is safe after torch has started threads, and user scripts
need no `if __name__ == "__main__"` guard. An executor copied into a forked process starts its own
workers there and leaves the parent's alone. POSIX only (pipes are polled with `selectors`).

Memory is bounded three ways, and a query that hits a bound gets the status `resource_limit` (its error
starts with "resource limit:"), never a dead machine:

- each worker process runs under an address-space limit (`max_memory_mb`, `RLIMIT_AS`, default 1024 MB):
  an allocation past it fails inside the worker (SQLite's "out of memory" or Python's `MemoryError`), the
  worker answers, and retires: it exits before running anything queued behind, and those jobs go to a fresh
  process (so its heap goes back);
- the rows fetched for one query may weigh at most `max_result_mb` (default 256 MB; text and blob lengths
  plus 8 bytes per other value), checked while fetching, so neither the worker nor the parent that
  unpickles the answer holds more;
- strings and blobs a query builds are capped at 256 MB (`randomblob(1e9)` fails instead of eating memory).

With `workers=0` only the result budget and the value cap apply (the caller's process is not limited).

A verdict depends on the query, the database and the limits, not on the queries before it in the same worker:
a worker drops each answer before it reads the next job; it retires after a query that hit a memory bound, and
after any query that left its address space more than `_footprint_slack_mb` above its size at start (1/16 of
the bound, 64 MB at 1024 MB: a whole Spider gold run grows a worker by about 24 MB); and a query that ran out
of memory in a worker that had run others first is run again as the first query of a fresh worker, whose answer
is the one returned. With `workers=0` a runner whose query hit a memory bound is replaced (its connections
closed) before the next query.

Only one statement runs per call: text with several statements returns an error saying so (SQLite's
"You can only execute one statement at a time"); a trailing `;` or comment is fine. `SELECT 1; ;` (an
empty statement after the query) is refused the same way, as `sqlite3` and the official evaluators do,
but the message says what is there: an extra `;`, not a second statement.

The allowed table-valued PRAGMA functions (`SELECT * FROM pragma_table_info('singer')`) and other eponymous
virtual tables (`json_each`) run: the first use of such a table on a connection shows up in the authorizer as
an UPDATE of each schema-table column and a READ of the schema table's ROWID inside a SELECT, which are
allowed in that order only (SQLite never lets a statement write `sqlite_master` without `PRAGMA
writable_schema`, itself refused, and the connection is read-only anyway). The PRAGMA behind a table-valued
function is authorized when the query steps, by name, so a cached statement is judged as a new one.
`workers=0` runs queries in the calling process (cooperative deadline only, no protection against a
crash or a C-level hang); it exists for measurements and environments that cannot start processes.
"""

from __future__ import annotations

import codecs
import os
import pickle
import re
import resource
import selectors
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from t2s.db.types import ExecResult

_HEADER = struct.Struct("!Q")
#: SQLite virtual-machine instructions between two deadline checks (~ a few microseconds of work each).
_PROGRESS_STEPS = 4000
#: Bytes of queued jobs per worker; a bigger job is only sent to an idle worker, so a write never blocks.
_BIG_MESSAGE = 32_000
#: Seconds of work (judged from recent job times) queued per worker, at most `_MAX_QUEUE` jobs.
_QUEUE_SECONDS = 0.01
_MAX_QUEUE = 64
_MAX_OPEN_DBS = 64
#: Largest string / blob a query may build (SQLite's default is 1 GB: `randomblob(1e9)` would exhaust memory).
_MAX_VALUE_BYTES = 256 * 1024 * 1024
_STATEMENT_HEAD = re.compile(r"[\w\"`\[\]]+")
#: default address-space limit of a worker process (MB) and default byte budget of one query's fetched rows (MB)
DEFAULT_MAX_MEMORY_MB = 1024
DEFAULT_MAX_RESULT_MB = 256
#: how the error of a query stopped by a memory bound starts (`ExecResult.status == "resource_limit"`)
RESOURCE_LIMIT_PREFIX = "resource limit:"
_FETCH_CHUNK = 256
_SCHEMA_TABLES = ("sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema")
#: where a refusal of the read-only policy points the user
_POLICY_DOC = 'docs/security.md, "What model-written SQL may use"'

#: PRAGMAs model-written and gold SQL may run, as a statement (`PRAGMA table_info(singer)`) or a table-valued function
#: (`SELECT * FROM pragma_table_info('singer')`): each describes one table or index, which the prompt's schema shows
#: anyway; and `data_version` (a change counter), which FTS5 reads to query its own tables. Every other PRAGMA is
#: refused: a write (with an argument) as "rejected", a read as "not authorized".
_ALLOWED_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list", "data_version",
})
#: PRAGMAs that take an argument and only read, refused all the same (they describe the process, the SQLite build, the
#: database files or the whole database): "not authorized", not "would modify the database"
_REFUSED_READ_PRAGMAS = frozenset({
    "database_list", "compile_options", "function_list", "module_list", "pragma_list", "collation_list", "table_list",
    "integrity_check", "quick_check", "foreign_key_check",
})
#: SQL functions refused (SQLITE_FUNCTION in the authorizer), with why; every other built-in function runs
_BUILD_INFO = "it describes the SQLite build, like PRAGMA compile_options"
_REFUSED_FUNCTIONS: dict[str, str] = {
    "fts3_tokenizer": "it returns a tokenizer's memory address and, with two arguments, installs a tokenizer from a "
                      "memory address: a known SQLite memory-safety hazard",
    "load_extension": "it loads a shared library into the process",
    "fts5": "it hands out a C pointer to the FTS5 API, for C callers only",
    "rtreenode": "it decodes raw R*Tree node blobs, a debugging aid (CVE-2019-8457 was an out-of-bounds read in it)",
    "rtreedepth": "it decodes raw R*Tree node blobs, a debugging aid",
    "rtreecheck": "it is an R*Tree debugging aid",
    "sqlite_compileoption_get": _BUILD_INFO,
    "sqlite_compileoption_used": _BUILD_INFO,
    "sqlite_source_id": _BUILD_INFO,
    "sqlite_version": _BUILD_INFO,
    "fts5_source_id": _BUILD_INFO,
    "sqlite_log": "it writes to the process's SQLite error log",
}
#: tables whose reading is refused (SQLITE_READ), with why: the schema tables, and the eponymous virtual tables that
#: show more than the rows of the database's own tables
_REFUSED_TABLES: dict[str, str] = {
    **{t: "it is SQLite's schema table; model SQL gets the schema from the prompt" for t in _SCHEMA_TABLES},
    "sqlite_stmt": "it lists the SQL of the statements prepared on the worker's connection, other queries' included",
    "dbstat": "it describes the pages of every table, the schema table's included",
    "sqlite_dbpage": "it returns the database file's raw pages, the schema table's included",
}
_ACTION_NAMES: dict[int, str] = {
    sqlite3.SQLITE_CREATE_INDEX: "CREATE INDEX", sqlite3.SQLITE_CREATE_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_CREATE_TEMP_INDEX: "CREATE TEMP INDEX", sqlite3.SQLITE_CREATE_TEMP_TABLE: "CREATE TEMP TABLE",
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER: "CREATE TEMP TRIGGER", sqlite3.SQLITE_CREATE_TEMP_VIEW: "CREATE TEMP VIEW",
    sqlite3.SQLITE_CREATE_TRIGGER: "CREATE TRIGGER", sqlite3.SQLITE_CREATE_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_DELETE: "DELETE", sqlite3.SQLITE_DROP_INDEX: "DROP INDEX", sqlite3.SQLITE_DROP_TABLE: "DROP TABLE",
    sqlite3.SQLITE_DROP_TEMP_INDEX: "DROP TEMP INDEX", sqlite3.SQLITE_DROP_TEMP_TABLE: "DROP TEMP TABLE",
    sqlite3.SQLITE_DROP_TEMP_TRIGGER: "DROP TEMP TRIGGER", sqlite3.SQLITE_DROP_TEMP_VIEW: "DROP TEMP VIEW",
    sqlite3.SQLITE_DROP_TRIGGER: "DROP TRIGGER", sqlite3.SQLITE_DROP_VIEW: "DROP VIEW",
    sqlite3.SQLITE_INSERT: "INSERT", sqlite3.SQLITE_PRAGMA: "PRAGMA", sqlite3.SQLITE_TRANSACTION: "TRANSACTION",
    sqlite3.SQLITE_UPDATE: "UPDATE", sqlite3.SQLITE_ATTACH: "ATTACH", sqlite3.SQLITE_DETACH: "DETACH",
    sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE", sqlite3.SQLITE_REINDEX: "REINDEX", sqlite3.SQLITE_ANALYZE: "ANALYZE",
    sqlite3.SQLITE_CREATE_VTABLE: "CREATE VIRTUAL TABLE", sqlite3.SQLITE_DROP_VTABLE: "DROP VIRTUAL TABLE",
    sqlite3.SQLITE_SAVEPOINT: "SAVEPOINT",
}


# --------------------------------------------------------------------------------------------------
# The part that runs inside a worker (and in the caller's process when workers=0). Standard library only.
# --------------------------------------------------------------------------------------------------


class _Runner:
    """Runs jobs against cached read-only connections; one instance per worker process."""

    def __init__(self, max_memory_mb: int | None = None) -> None:
        self.max_memory_mb = max_memory_mb  # the address-space limit this process runs under (None: none)
        self._first_action: int | None = None  # the first authorizer action of the statement being prepared
        self._vtab_setup = False  # the last authorizer call was part of an eponymous virtual table's first use
        self._conns: OrderedDict[tuple[str, int, int], sqlite3.Connection] = OrderedDict()
        self._decode: dict[int, str] = {}  # id(connection) -> decode error handler in force
        self._deadline = float("inf")
        self._expired = False
        self._denied: str | None = None  # the first write the authorizer refused ("DROP TABLE singer")
        self._refused: str | None = None  # the first read the authorizer refused, as the full error message
        self.out_of_memory = False  # the last query failed on an allocation (not on the result budget or value cap)

    # -- connection handling ------------------------------------------------------------------
    def _progress(self) -> int:
        if time.monotonic() > self._deadline:
            self._expired = True
            return 1
        return 0

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, _db: str | None, trigger: str | None) -> int:
        """SQLite's authorizer callback: reads, minus the side doors of `_REFUSED_*`; no write of any kind."""
        if self._first_action is None:
            self._first_action = action
        after_vtab_setup, self._vtab_setup = self._vtab_setup, False
        if action == sqlite3.SQLITE_READ:
            table = (arg1 or "").lower()
            if table in _SCHEMA_TABLES and after_vtab_setup and (arg2 or "").lower() == "rowid":
                return sqlite3.SQLITE_OK  # the last step of an eponymous virtual table's first use, see below
            if table in _REFUSED_TABLES:
                via = f" (through the view or trigger {trigger})" if trigger else ""
                return self._refuse(f"reading {arg1}{via}", _REFUSED_TABLES[table])
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in _REFUSED_FUNCTIONS:
                return self._refuse(f"the function {arg2}()", _REFUSED_FUNCTIONS[name])
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if (action == sqlite3.SQLITE_UPDATE and self._first_action == sqlite3.SQLITE_SELECT and trigger is None
                and (arg1 or "").lower() in _SCHEMA_TABLES):
            # The first use of an eponymous virtual table (pragma_table_info, json_each) on a connection shows up as
            # an UPDATE of each schema-table column and a READ of its ROWID inside a SELECT: not a write (SQLite never
            # lets a statement write the schema table without PRAGMA writable_schema, itself refused).
            self._vtab_setup = True
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _ALLOWED_PRAGMAS:
                return sqlite3.SQLITE_OK
            if arg2 is None or name in _REFUSED_READ_PRAGMAS:
                return self._refuse(f"PRAGMA {arg1}", "only the PRAGMAs that describe one table or index (and "
                                    "data_version) run: " + ", ".join(sorted(_ALLOWED_PRAGMAS)))
        if self._denied is None:
            name = _ACTION_NAMES.get(action, f"action {action}")
            if action == sqlite3.SQLITE_PRAGMA:
                target = f"{arg1} = {arg2}"
            elif action == sqlite3.SQLITE_UPDATE:
                target = f"{arg1}.{arg2}" if arg1 and arg2 else (arg1 or "")
            elif action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
                target = " ".join(a for a in (arg1, arg2) if a)
            else:
                target = arg1 or ""
            self._denied = f"{name} {target}".strip()
        return sqlite3.SQLITE_DENY

    def _refuse(self, what: str, why: str) -> int:
        """Deny a read of the read-only policy's deny-lists, keeping the first refusal's message."""
        if self._refused is None:
            self._refused = f"not authorized: {what} is refused here, because {why} (see {_POLICY_DOC})"
        return sqlite3.SQLITE_DENY

    def _connect(self, db_path: str, decode_errors: str) -> sqlite3.Connection | str:
        """A cached connection, or an error message when the file is missing or cannot be opened."""
        try:
            st = os.stat(db_path)
        except OSError:
            return f"database file not found: {db_path} (check the dataset's database directory / db_path)"
        if not os.path.isfile(db_path):
            return f"database path is not a file: {db_path}"
        if st.st_size == 0:
            return f"database file is empty (0 bytes): {db_path} (replace it with the real database)"
        key = (db_path, st.st_dev, st.st_ino)
        conn = self._conns.get(key)
        if conn is None:
            uri = "file:" + urllib.parse.quote(os.path.realpath(db_path)) + "?mode=ro"
            try:
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA query_only=ON")
            except sqlite3.Error as e:
                return f"cannot open database {db_path}: {e}"
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
            _disable_fts3_tokenizer(conn)
            conn.set_authorizer(self._authorize)
            conn.set_progress_handler(self._progress, _PROGRESS_STEPS)
            self._conns[key] = conn
            while len(self._conns) > _MAX_OPEN_DBS:
                old = self._conns.popitem(last=False)[1]
                self._decode.pop(id(old), None)
                old.close()
        else:
            self._conns.move_to_end(key)
        if self._decode.get(id(conn)) != decode_errors:
            conn.text_factory = lambda b: b.decode(errors=decode_errors)
            self._decode[id(conn)] = decode_errors
        return conn

    def _start(self, timeout: float) -> None:
        self._deadline = time.monotonic() + timeout
        self._expired = False
        self._denied = None
        self._refused = None
        self.out_of_memory = False
        self._first_action = None
        self._vtab_setup = False

    def close(self) -> None:
        """Close every cached connection (a runner replaced after a query hit a memory bound)."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._decode.clear()

    def _failure(self, e: Exception, sql: str) -> tuple[str | None, bool]:
        """(error message, timed_out) for an exception raised while running `sql`."""
        if self._expired:
            return None, True
        if self._refused is not None:
            return self._refused, False
        if self._denied is not None:
            what = self._denied
            # DDL first shows up as a write to the schema table (CREATE/DROP TABLE, ANALYZE) and VACUUM as
            # an ATTACH: the statement's own first words say more.
            if "sqlite_master" in what or "sqlite_temp_master" in what or what == "ATTACH":
                what = " ".join(_STATEMENT_HEAD.findall(sql)[:3])[:80] or what
            return f"rejected: statement would modify the database ({what})", False
        msg = str(e)
        if isinstance(e, _ResultTooBig):
            return msg, False
        if isinstance(e, MemoryError) or (isinstance(e, sqlite3.Error) and _MEMORY_ERRORS.search(msg)):
            self.out_of_memory = isinstance(e, MemoryError) or "out of memory" in msg.lower()
            bound = (f"under the worker's bound of {self.max_memory_mb} MB (db.max_memory_mb / eval.max_memory_mb)"
                     if self.max_memory_mb else "(no per-process bound with workers=0)")
            return f"{RESOURCE_LIMIT_PREFIX} the query ran out of memory {bound}; sqlite3: {msg or type(e).__name__}", False
        if isinstance(e, sqlite3.ProgrammingError) and "one statement at a time" in msg:
            if not _strip_empty_statements(_after_first_statement(sql)):
                return ("empty statement after the query (an extra `;`): only one SQL statement per query is run; "
                        f"remove the extra `;` (sqlite3: {msg})"), False
            return ("several statements: only one SQL statement per query is run; "
                    f"send them one by one (sqlite3: {msg})"), False
        if msg.endswith("may not be modified"):  # SQLite's own refusal to touch its schema table
            what = " ".join(_STATEMENT_HEAD.findall(sql)[:3])[:80]
            return f"rejected: statement would modify the database ({what}; sqlite3: {msg})", False
        if msg == "not authorized":
            return ("not authorized: SQLite refused a function or feature that is disabled here "
                    "(e.g. load_extension)"), False
        return msg or type(e).__name__, False

    # -- jobs -----------------------------------------------------------------------------------
    @staticmethod
    def _fetch(cur: sqlite3.Cursor, max_rows: int, max_result_bytes: int) -> list[Any]:
        """Up to `max_rows + 1` rows, fetched in chunks; `_ResultTooBig` once they weigh over `max_result_bytes`
        (text / blob lengths plus 8 bytes per other value and per column)."""
        rows: list[Any] = []
        size = 0
        while len(rows) <= max_rows:
            chunk = cur.fetchmany(min(_FETCH_CHUNK, max_rows + 1 - len(rows)))
            if not chunk:
                break
            for row in chunk:
                for v in row:
                    size += len(v) + 8 if type(v) is str or type(v) is bytes else 8
            rows.extend(chunk)
            if size > max_result_bytes:
                raise _ResultTooBig(
                    f"{RESOURCE_LIMIT_PREFIX} the result passed the budget of {max_result_bytes / 2**20:g} MB of fetched "
                    f"rows after {len(rows)} row(s) (db.max_result_mb / eval.max_result_mb)")
        return rows

    def execute(self, db_path: str, sql: str, timeout: float, max_rows: int, decode_errors: str,
                max_result_bytes: int = DEFAULT_MAX_RESULT_MB << 20) -> dict[str, Any]:
        """Run one query; returns the fields of an `ExecResult` (seconds = time inside this process)."""
        t0 = time.perf_counter()
        out: dict[str, Any] = {"rows": [], "columns": [], "error": None, "timed_out": False, "truncated": False}
        conn = self._connect(db_path, decode_errors)
        if isinstance(conn, str):
            out["error"] = conn
        else:
            self._start(timeout)
            cur = None
            try:
                cur = conn.execute(sql)
                rows = self._fetch(cur, max_rows, max_result_bytes)
                if len(rows) > max_rows:
                    rows = rows[:max_rows]
                    out["truncated"] = True
                out["rows"] = rows
                out["columns"] = [d[0] for d in cur.description or ()]
            except Exception as e:  # noqa: BLE001 - every failure of model SQL becomes a result
                out["error"], out["timed_out"] = self._failure(e, sql)
                out["out_of_memory"] = self.out_of_memory
            finally:
                if cur is not None:
                    cur.close()
                self._deadline = float("inf")
        out["seconds"] = time.perf_counter() - t0
        return out

    def time_queries(self, db_path: str, sqls: list[str], iterations: int, timeout: float,
                     decode_errors: str) -> dict[str, Any]:
        """Execute each of `sqls` (fetching all rows) `iterations` times, interleaved (iteration by
        iteration, in list order, as BIRD's VES does); returns per-SQL lists of seconds."""
        conn = self._connect(db_path, decode_errors)
        if isinstance(conn, str):
            return {"times": [], "error": conn, "timed_out": False, "index": None}
        times: list[list[float]] = [[] for _ in sqls]
        for _ in range(iterations):
            for i, sql in enumerate(sqls):
                self._start(timeout)
                cur = None
                t0 = time.perf_counter()
                try:
                    cur = conn.execute(sql)
                    cur.fetchall()
                except Exception as e:  # noqa: BLE001
                    err, timed_out = self._failure(e, sql)
                    return {"times": times, "error": err, "timed_out": timed_out, "index": i,
                            "out_of_memory": self.out_of_memory}
                finally:
                    if cur is not None:
                        cur.close()
                    self._deadline = float("inf")
                times[i].append(time.perf_counter() - t0)
        return {"times": times, "error": None, "timed_out": False, "index": None}

    def run(self, job: tuple[Any, ...]) -> dict[str, Any]:
        kind = job[0]
        if kind == "exec":
            return self.execute(*job[1:])
        if kind == "time":
            return self.time_queries(*job[1:])
        raise ValueError(f"unknown job kind {kind!r}")


def _read_exact(fd: int, n: int) -> bytes | None:
    """Read exactly n bytes from a file descriptor; None on end of file."""
    chunks: list[bytes] = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_msg(fd: int) -> Any | None:
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _worker_main(max_memory_mb: int = 0) -> None:
    """Entry point of a worker process: read jobs from stdin, answer on (the original) stdout.

    `max_memory_mb` > 0 limits the process's address space (`RLIMIT_AS`) to that many MB. After an answer the
    worker retires (sends `(None, reason)` and exits 0, leaving the jobs queued behind it to the parent) when the
    query hit a memory bound or when its address space grew past its size at start plus `_footprint_slack_mb`: so
    every query starts in a process at most that slack bigger than a fresh one.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # parent gone: end quietly, no BrokenPipeError traceback
    if max_memory_mb > 0:
        limit = max_memory_mb << 20
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    runner = _Runner(max_memory_mb if max_memory_mb > 0 else None)
    start = _address_space_mb()
    ceiling = None if start is None else start + _footprint_slack_mb(max_memory_mb)
    while True:
        msg = _read_msg(0)
        if msg is None:
            return
        data, hit_bound = _answer(runner, msg, max_memory_mb)
        try:
            _write_all(out_fd, data)
        except BrokenPipeError:
            return
        del data, msg  # a big answer must not stay in memory while the next query runs
        size = _address_space_mb()
        if hit_bound or (ceiling is not None and size is not None and size > ceiling):
            reason = ("a query hit a memory bound" if hit_bound
                      else f"address space {size:.0f} MB, past {ceiling:.0f} MB (size at start + slack)")
            try:
                _write_all(out_fd, _frame((None, reason)))
            except BrokenPipeError:
                pass
            return


def _answer(runner: _Runner, msg: tuple[int, tuple[Any, ...]], max_memory_mb: int) -> tuple[bytes, bool]:
    """Run one `(job id, job)` message: the framed answer, and whether the job hit a memory bound (resource limit)."""
    job_id, job = msg
    try:
        reply = runner.run(job)
    except Exception as e:  # noqa: BLE001 - keep serving
        reply = _error_reply(f"internal worker error: {e!r}")
    try:
        data = _frame((job_id, reply))
    except MemoryError:
        reply = _error_reply(f"{RESOURCE_LIMIT_PREFIX} the result did not fit in the worker's memory bound of "
                             f"{max_memory_mb} MB when sent back (db.max_memory_mb / eval.max_memory_mb)")
        reply["out_of_memory"] = True
        data = _frame((job_id, reply))
    return data, str(reply.get("error") or "").startswith(RESOURCE_LIMIT_PREFIX)


def _address_space_mb() -> float | None:
    """This process's address space (VmSize) in MB, what `RLIMIT_AS` bounds; None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _footprint_slack_mb(max_memory_mb: int) -> int:
    """How far (MB) a worker's address space may grow past its size at start before the worker is replaced:
    1/16 of its bound, at least 16 MB (64 MB without a bound). A whole Spider train + dev gold run grows a worker
    by about 24 MB (cached connections and their page caches), under the slack of the default 1024 MB bound."""
    return max(16, max_memory_mb // 16) if max_memory_mb > 0 else 64


def _disable_fts3_tokenizer(conn: sqlite3.Connection) -> None:
    """Turn off the two-argument `fts3_tokenizer()` at connection level where Python offers the switch (3.12+:
    `Connection.setconfig`). The authorizer refuses both forms everywhere; this is a second lock on the hazardous
    one."""
    option = getattr(sqlite3, "SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER", None)
    setconfig = getattr(conn, "setconfig", None)
    if option is not None and setconfig is not None:
        setconfig(option, False)


def _error_reply(error: str) -> dict[str, Any]:
    return {"rows": [], "columns": [], "error": error, "timed_out": False, "truncated": False, "seconds": 0.0,
            "times": [], "index": None}


class _ResultTooBig(Exception):
    """The rows fetched for one query passed its byte budget."""


#: SQLite's messages for a failed allocation (SQLITE_NOMEM) and for a value over SQLITE_LIMIT_LENGTH
_MEMORY_ERRORS = re.compile(r"out of memory|string or blob too big", re.I)


def _after_first_statement(sql: str) -> str:
    """The text after the first complete statement (after its `;`), or "" when there is none."""
    for i, ch in enumerate(sql):
        if ch == ";" and sqlite3.complete_statement(sql[: i + 1]):
            return sql[i + 1:]
    return ""


def _strip_empty_statements(text: str) -> str:
    """`text` without leading whitespace, `;` and comments: "" when nothing but empty statements is left."""
    while True:
        text = text.lstrip()
        if text.startswith(";"):
            text = text[1:]
        elif text.startswith("--"):
            text = text.partition("\n")[2]
        elif text.startswith("/*"):
            end = text.find("*/", 2)
            text = "" if end < 0 else text[end + 2:]
        else:
            return text


# --------------------------------------------------------------------------------------------------
# The parent side.
# --------------------------------------------------------------------------------------------------


@dataclass
class TimingResult:
    """Seconds per execution for each SQL of a timing job (`SQLExecutor.time_many`).

    `times[i]` lists the wall seconds (inside the worker, execute + fetch all) of `sqls[i]` over the
    iterations. On failure `error` (or `timed_out`) is set and `failed_index` says which SQL failed.
    """

    times: list[list[float]] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False
    failed_index: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out


@dataclass
class _Job:
    kind: str
    payload: tuple[Any, ...]
    budget: float  # seconds the worker may take before it is killed (without grace)
    size: int


class _Worker:
    """One worker process, the jobs sent to it (a FIFO; the head is the one running) and unread output."""

    def __init__(self, env: dict[str, str], max_memory_mb: int = 0) -> None:
        self.recycle = False  # it answered a query that hit a memory bound: send it nothing more, it is retiring
        self.retired = False  # it said it retires (and exits without running the jobs queued behind)
        self.answered = 0  # answers received; 0 means no query has run in this process yet (a fresh worker)
        self.proc = subprocess.Popen(
            # -S: no site-packages (the worker needs the standard library and t2s, found via PYTHONPATH)
            [sys.executable, "-S", "-c",
             f"from t2s.db.execute import _worker_main; _worker_main({int(max_memory_mb)})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.in_fd = self.proc.stdin.fileno()
        self.out_fd = self.proc.stdout.fileno()
        self.inflight: deque[tuple[int, float, int]] = deque()  # (job index, budget seconds, message bytes)
        self.inflight_bytes = 0
        self.head_started = 0.0
        self.buffer = bytearray()
        self.owner = os.getpid()

    def send(self, items: list[tuple[int, float, bytes]], now: float) -> None:
        """Queue jobs (index, budget, pickled message) and write them in one system call."""
        if not self.inflight:
            self.head_started = now
        for i, budget, msg in items:
            self.inflight.append((i, budget, len(msg)))
            self.inflight_bytes += len(msg)
        data = memoryview(b"".join(m for _, _, m in items))
        while data:
            data = data[os.write(self.in_fd, data):]

    def receive(self) -> list[tuple[int, dict[str, Any]]] | None:
        """Read what the worker wrote; the complete answers in it, or None at end of file (it died)."""
        chunk = os.read(self.out_fd, 1 << 20)
        if not chunk:
            return None
        self.buffer += chunk
        out = []
        while len(self.buffer) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + n:
                break
            out.append(pickle.loads(self.buffer[_HEADER.size:_HEADER.size + n]))
            del self.buffer[:_HEADER.size + n]
        return out

    def pop_head(self) -> int:
        i, _, size = self.inflight.popleft()
        self.inflight_bytes -= size
        return i

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        self._close_pipes()

    def stop(self, wait: float = 2.0) -> None:
        """Close stdin (the worker exits on end of file); kill it if it does not go in `wait` seconds."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass


def _stop_all(workers: list[_Worker]) -> None:
    """Stop the workers this process started (a forked child leaves its parent's workers alone)."""
    for w in workers:
        if w.owner == os.getpid():
            w.stop(wait=1.0)
    workers.clear()


class SQLExecutor:
    """Read-only SQLite execution with a hard time limit, over a persistent pool of worker processes.

    `timeout` is wall seconds per query (a query is interrupted at the limit, and its worker is killed if
    it has not answered `kill_grace` seconds later); `max_rows` caps the rows fetched (`truncated=True`
    when more existed). `workers` processes start lazily on first use and live until `close()`; each
    keeps its connections open per database file. `workers=0` executes in the calling process (no
    protection against crashes or C-level hangs). `decode_errors` is the `bytes.decode` error handler for
    TEXT values that are not valid UTF-8 ("replace" by default; the Spider test-suite evaluation uses
    "ignore"; either way two different invalid byte strings can decode to the same text and then compare
    equal, as they do in the official evaluators). `max_memory_mb` is each worker's address-space limit
    (0: none) and `max_result_mb` the budget of one query's fetched rows; a query over either gets status
    `resource_limit` (see the module docstring). Not for concurrent use from several threads (calls are
    serialized by a lock).
    """

    def __init__(self, *, timeout: float = 30.0, max_rows: int = 10_000, workers: int = 1,
                 decode_errors: str = "replace", kill_grace: float = 0.5,
                 max_memory_mb: int = DEFAULT_MAX_MEMORY_MB, max_result_mb: float = DEFAULT_MAX_RESULT_MB) -> None:
        if timeout <= 0:
            raise ValueError(f"SQLExecutor: timeout must be > 0 seconds, got {timeout}")
        if max_rows < 0:
            raise ValueError(f"SQLExecutor: max_rows must be >= 0, got {max_rows}")
        if workers < 0:
            raise ValueError(f"SQLExecutor: workers must be >= 0 (0 = run in this process), got {workers}")
        if max_memory_mb < 0 or max_result_mb <= 0:
            raise ValueError(f"SQLExecutor: max_memory_mb must be >= 0 (0 = no limit) and max_result_mb > 0, "
                             f"got {max_memory_mb} and {max_result_mb}")
        codecs.lookup_error(decode_errors)  # LookupError for an unknown handler name
        self.max_memory_mb = int(max_memory_mb)
        self.max_result_bytes = int(max_result_mb * 2**20)
        self.timeout = float(timeout)
        self.max_rows = int(max_rows)
        self.workers = int(workers)
        self.decode_errors = decode_errors
        self.kill_grace = float(kill_grace)
        self.restarts = 0  # workers killed or crashed and replaced, over the executor's life
        self.recycled = 0  # workers replaced after a query hit a memory bound
        self._job_seconds = 0.01  # running mean of job wall time, sizes the per-worker queues
        self._pool: list[_Worker] = []
        self._owner_pid = os.getpid()
        self._local: _Runner | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_all, self._pool)

    # -- public API -------------------------------------------------------------------------------
    def execute(self, db_path: str, sql: str, *, timeout: float | None = None,
                max_rows: int | None = None) -> ExecResult:
        """Run one query read-only against the SQLite file `db_path`."""
        return self.execute_many([(db_path, sql)], timeout=timeout, max_rows=max_rows)[0]

    def execute_many(self, jobs: Sequence[tuple[str, str]], *, timeout: float | None = None,
                     max_rows: int | None = None) -> list[ExecResult]:
        """Run `(db_path, sql)` jobs in parallel over the workers; results in input order."""
        results: list[ExecResult | None] = [None] * len(jobs)
        for i, r in self.execute_iter(jobs, timeout=timeout, max_rows=max_rows):
            results[i] = r
        return [r for r in results if r is not None]

    def execute_iter(self, jobs: Sequence[tuple[str, str]], *, timeout: float | None = None,
                     max_rows: int | None = None) -> Iterator[tuple[int, ExecResult]]:
        """Like `execute_many`, but yields `(index, result)` as queries finish (completion order), so a
        caller can show progress or compare results while the workers go on."""
        t = self.timeout if timeout is None else float(timeout)
        m = self.max_rows if max_rows is None else int(max_rows)
        specs = [
            _Job("exec", ("exec", os.fspath(db), sql, t, m, self.decode_errors, self.max_result_bytes), t, len(sql))
            for db, sql in jobs
        ]
        for i, raw in self._run(specs):
            yield i, _to_exec_result(raw)

    def time_many(self, jobs: Sequence[tuple[str, Sequence[str]]], *, iterations: int,
                  timeout: float | None = None) -> list[TimingResult]:
        """For each `(db_path, sqls)`: execute the SQLs `iterations` times, interleaved, in one worker, and
        return their execution seconds (BIRD VES timing). `timeout` bounds each single execution; the
        job's hard limit is `timeout * iterations * len(sqls)`."""
        t = self.timeout if timeout is None else float(timeout)
        specs = [
            _Job("time", ("time", os.fspath(db), list(sqls), iterations, t, self.decode_errors),
                 t * iterations * max(1, len(sqls)), sum(len(s) for s in sqls))
            for db, sqls in jobs
        ]
        out: list[TimingResult | None] = [None] * len(specs)
        for i, raw in self._run(specs):
            out[i] = TimingResult(times=raw.get("times", []), error=raw.get("error"),
                                  timed_out=bool(raw.get("timed_out")), failed_index=raw.get("index"))
        return [r for r in out if r is not None]

    def start(self) -> None:
        """Start the worker processes now rather than at the first query (their start-up, ~50 ms, then
        overlaps with the caller's own preparation)."""
        with self._lock:
            self._fill_pool()

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (empty before the first use, after `close`, or with workers=0)."""
        return [w.proc.pid for w in self._pool]

    def close(self) -> None:
        """Stop the worker processes. Safe to call twice; the executor restarts workers if used again."""
        with self._lock:
            _stop_all(self._pool)
            if self._local is not None:
                self._local.close()
                self._local = None

    def __enter__(self) -> SQLExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scheduling -------------------------------------------------------------------------------
    def _run(self, specs: list[_Job]) -> Iterator[tuple[int, dict[str, Any]]]:
        if not specs:
            return
        with self._lock:
            if self.workers == 0:
                yield from self._run_local(specs)
            else:
                yield from self._run_pool(specs)

    def _run_local(self, specs: list[_Job]) -> Iterator[tuple[int, dict[str, Any]]]:
        """workers=0: run the jobs in this process, one after another. A runner whose query hit a memory bound is
        replaced (its connections closed) before the next query; this process's own memory stays as it is."""
        for i, job in enumerate(specs):
            if self._local is None:
                self._local = _Runner(None)
            t0 = time.perf_counter()
            raw = self._local.run(job.payload)
            raw.pop("out_of_memory", None)
            raw["seconds"] = time.perf_counter() - t0
            if str(raw.get("error") or "").startswith(RESOURCE_LIMIT_PREFIX):
                self._local.close()
                self._local = None
                self.recycled += 1
            yield i, raw

    def _fill_pool(self) -> None:
        if self._owner_pid != os.getpid():
            # a forked copy of this executor: the workers belong to the parent process, leave them alone
            self._pool.clear()
            self._owner_pid = os.getpid()
        for idx, w in enumerate(self._pool):
            code = w.proc.poll()
            if code is not None:  # retired after the last call's last answer (exit 0), or died while idle
                w.kill()
                self._pool[idx] = self._spawn()
                if code == 0:
                    self.recycled += 1
                else:
                    self.restarts += 1
        while len(self._pool) < self.workers:
            self._pool.append(self._spawn())

    def _spawn(self) -> _Worker:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return _Worker(env, self.max_memory_mb)

    def _run_pool(self, specs: list[_Job]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Schedule jobs over the workers (see `_PoolRun` for how), yielding `(index, raw answer)` as they finish."""
        self._fill_pool()
        run = _PoolRun(self, specs)
        try:
            while run.remaining:
                run.dispatch()
                yield from run.collect(run.wait())
        except BaseException:
            # Interrupted (KeyboardInterrupt, caller stopped iterating): answers still in flight would
            # desynchronize the protocol, so drop these workers; the next call starts fresh ones.
            if run.remaining:
                _stop_all(self._pool)
            raise
        finally:
            run.close()


class _PoolRun:
    """One `SQLExecutor._run_pool` call: the jobs still to send, what each worker runs, and the answers.

    Each worker gets a short queue of jobs (about `_QUEUE_SECONDS` of work, judged from recent job times, and under
    `_BIG_MESSAGE` bytes so a write never blocks), so it never waits for the parent. The head job's clock starts
    when the previous answer arrives; a worker whose head job is late by more than `kill_grace` is killed and
    replaced, and its other queued jobs go back to the front.

    Verdicts do not depend on what ran before: a worker retires right after a query that hit a memory bound, or once
    its address space grew past a slack (see `_worker_main`), and the jobs queued behind it go back to the front
    for a fresh worker. A query that ran out of memory in a worker that had run other queries first is run again as
    the first query of a fresh worker, and that answer is the one returned.
    """

    def __init__(self, ex: SQLExecutor, specs: list[_Job]) -> None:
        self.ex = ex
        self.pool = ex._pool
        self.specs = specs
        self.pending: deque[int] = deque(range(len(specs)))
        self.fresh_only: deque[int] = deque()  # jobs to rerun as the first query of a fresh worker
        self.rerun: set[int] = set()  # jobs already sent back to a fresh worker once
        self.messages: dict[int, bytes] = {}
        self.remaining = len(specs)
        self.sel = selectors.DefaultSelector()
        self.watched: set[int] = set()  # an idle worker writes nothing, so watching it costs nothing

    # -- sending ----------------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Top up every worker's queue from the waiting jobs (a fresh worker takes a job to rerun first)."""
        now = time.monotonic()
        depth = max(1, min(_MAX_QUEUE, int(_QUEUE_SECONDS / max(self.ex._job_seconds, 1e-6))))
        if self.fresh_only and not any(w.inflight or self._is_fresh(w) for w in self.pool):
            self._replace(0, retired=True)  # cannot happen (a worker that ran out of memory retires); never hang
        for w in self.pool:
            batch: list[tuple[int, float, bytes]] = []
            if self.fresh_only and self._is_fresh(w):
                batch.append(self._message(self.fresh_only.popleft()))
            size = w.inflight_bytes + sum(len(m) for _, _, m in batch)
            while self.pending and not w.recycle and len(w.inflight) + len(batch) < depth:
                i = self.pending[0]
                msg = self.messages.pop(i, None) or _frame((i, self.specs[i].payload))
                if (w.inflight or batch) and size + len(msg) > _BIG_MESSAGE:
                    self.messages[i] = msg
                    break
                self.pending.popleft()
                batch.append((i, self.specs[i].budget, msg))
                size += len(msg)
            if batch:
                try:
                    w.send(batch, now)
                except OSError:
                    pass  # the worker died or retired; its end of file or farewell is handled in `collect`

    def _message(self, i: int) -> tuple[int, float, bytes]:
        return i, self.specs[i].budget, self.messages.pop(i, None) or _frame((i, self.specs[i].payload))

    @staticmethod
    def _is_fresh(w: _Worker) -> bool:
        return w.answered == 0 and not w.inflight and not w.recycle

    # -- waiting ----------------------------------------------------------------------------------
    def wait(self) -> set[int]:
        """Wait until a busy worker writes or the earliest hard deadline passes; the readable descriptors."""
        busy = [w for w in self.pool if w.inflight]
        if not busy:
            return set()
        next_deadline = min(w.head_started + w.inflight[0][1] + self.ex.kill_grace for w in busy)
        for w in busy:
            if w.out_fd not in self.watched:
                self.sel.register(w.out_fd, selectors.EVENT_READ)
                self.watched.add(w.out_fd)
        return {key.fd for key, _ in self.sel.select(max(0.0, next_deadline - time.monotonic()))}

    # -- receiving --------------------------------------------------------------------------------
    def collect(self, ready: set[int]) -> Iterator[tuple[int, dict[str, Any]]]:
        """The answers of the readable workers; kill and replace the dead and the late, retire the retiring."""
        now = time.monotonic()
        for idx, w in enumerate(list(self.pool)):
            if w.out_fd in ready:
                messages = w.receive()
                if messages is None:  # end of file: the worker died
                    if w.inflight:
                        code = w.proc.wait()
                        yield self._fail_head(idx, w, f"the worker process died while running this query "
                                                      f"(exit code {code})", timed_out=False, now=now)
                    else:
                        self._replace(idx, retired=False)
                    continue
                yield from self._answers(w, messages, now)
                if w.retired or (w.recycle and not w.inflight):
                    # its heap may still hold what the query took: a fresh process gives it back
                    self._replace(idx, retired=True)
            elif w.inflight and now > w.head_started + w.inflight[0][1] + self.ex.kill_grace:
                yield self._fail_head(idx, w, None, timed_out=True, now=now)

    def _answers(self, w: _Worker, messages: list[tuple[int | None, Any]],
                 now: float) -> Iterator[tuple[int, dict[str, Any]]]:
        for job_id, raw in messages:
            if job_id is None:  # the worker's farewell: it exits without running the jobs queued behind
                w.retired = True
                continue
            head = w.pop_head()
            assert head == job_id, "worker answered out of order"
            raw["seconds"] = now - w.head_started
            self.ex._job_seconds = 0.9 * self.ex._job_seconds + 0.1 * raw["seconds"]
            w.head_started = now
            ran_after_others = w.answered > 0
            w.answered += 1
            if str(raw.get("error") or "").startswith(RESOURCE_LIMIT_PREFIX):
                w.recycle = True
            if raw.pop("out_of_memory", False) and ran_after_others and job_id not in self.rerun:
                self.rerun.add(job_id)  # what ran before may have taken the memory it lacked: ask a fresh worker
                self.fresh_only.append(job_id)
                continue
            self.remaining -= 1
            yield job_id, raw

    def _fail_head(self, idx: int, w: _Worker, reason: str | None, *, timed_out: bool,
                   now: float) -> tuple[int, dict[str, Any]]:
        """The head job's answer when its worker died or ran late; the worker is killed and replaced and its other
        queued jobs go back to the front."""
        head = w.pop_head()
        self._requeue(w)
        self._unwatch(w)
        w.kill()
        self.pool[idx] = self.ex._spawn()
        self.ex.restarts += 1
        self.remaining -= 1
        return head, {"rows": [], "columns": [], "error": reason, "timed_out": timed_out, "truncated": False,
                      "seconds": now - w.head_started, "times": [], "index": None}

    def _replace(self, idx: int, *, retired: bool) -> None:
        """Replace worker `idx` with a fresh process; a retired one (counted in `recycled`) or one that died idle."""
        w = self.pool[idx]
        self._requeue(w)
        self._unwatch(w)
        if retired:
            w.stop(wait=1.0)
            self.ex.recycled += 1
        else:
            w.kill()
            self.ex.restarts += 1
        self.pool[idx] = self.ex._spawn()

    def _requeue(self, w: _Worker) -> None:
        """Put the jobs still queued in `w` (never run) back at the front, in their order."""
        while w.inflight:
            i = w.inflight[-1][0]
            w.inflight.pop()
            (self.fresh_only if i in self.rerun else self.pending).appendleft(i)
        w.inflight_bytes = 0

    def _unwatch(self, w: _Worker) -> None:
        if w.out_fd in self.watched:
            self.sel.unregister(w.out_fd)
            self.watched.discard(w.out_fd)

    def close(self) -> None:
        self.sel.close()


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _to_exec_result(raw: dict[str, Any]) -> ExecResult:
    return ExecResult(rows=raw["rows"], columns=raw["columns"], error=raw["error"], timed_out=raw["timed_out"],
                      truncated=raw["truncated"], seconds=raw["seconds"])
