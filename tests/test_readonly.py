"""The read-only check's side doors (issue 20, item 6): model-written and gold SQL read the database's own tables and
nothing else. Each refusal is `not authorized: ...` (status "error", error category `not_authorized`) and names
what was refused and docs/security.md; the pipeline's own introspection keeps reading the schema on its own
connection. Every query runs on a real SQLite file, through worker processes and in process."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from t2s.config import PROJECT_ROOT
from t2s.db.execute import _ALLOWED_PRAGMAS, _REFUSED_FUNCTIONS, _REFUSED_TABLES, SQLExecutor, _Runner
from t2s.db.introspect import introspect
from t2s.eval.errors import categorize_error


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("readonly") / "music.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INTEGER);
        CREATE INDEX singer_age ON singer(age);
        INSERT INTO singer VALUES (1, 'Ann', 30), (2, 'Bob', 40);
        CREATE VIEW schema_view AS SELECT name, sql FROM sqlite_master;
    """)
    try:  # a full-text table, where this SQLite has FTS5 (it reads PRAGMA data_version to answer)
        conn.execute("CREATE VIRTUAL TABLE notes USING fts5(body)")
        conn.execute("INSERT INTO notes VALUES ('hello world')")
    except sqlite3.OperationalError:
        pass
    conn.commit()
    conn.close()
    return path


@pytest.fixture(scope="module", params=[1, 0], ids=["worker", "in_process"])
def executor(request: pytest.FixtureRequest) -> Iterator[SQLExecutor]:
    with SQLExecutor(timeout=5.0, workers=request.param) as ex:
        yield ex


def assert_refused(ex: SQLExecutor, db: Path, sql: str, *names: str) -> None:
    res = ex.execute(str(db), sql)
    assert res.status == "error" and not res.rows, (sql, res)
    error = res.error or ""
    assert error.startswith("not authorized: "), error
    assert all(n in error for n in names), (names, error)
    assert "docs/security.md" in error
    assert str(db) not in error and "CREATE TABLE" not in error  # the refusal itself leaks nothing
    assert categorize_error(sql, "SELECT name FROM singer", None, res.status, res.error) == "not_authorized"


@pytest.mark.parametrize("sql", [
    "WITH sqlite_master AS (SELECT 1) SELECT * FROM main.sqlite_master",  # the probe: the CTE shadows only
    "SELECT * FROM sqlite_master",
    "SELECT sql FROM main.sqlite_schema",
    "SELECT count(*) FROM sqlite_master",  # reads no column: the authorizer sees the table with an empty column
    "SELECT rowid FROM sqlite_master",
    "SELECT * FROM temp.sqlite_master",
    "SELECT * FROM sqlite_temp_schema",
    "SELECT name FROM singer UNION SELECT sql FROM (SELECT * FROM \"sqlite_master\")",
])
def test_the_schema_table_is_refused_however_it_is_reached(executor: SQLExecutor, db: Path, sql: str) -> None:
    assert_refused(executor, db, sql, "reading sqlite_")
    assert executor.execute(str(db), "SELECT name FROM singer ORDER BY id").rows == [("Ann",), ("Bob",)]
    # a CTE of that name that reads nothing else is just a CTE
    assert executor.execute(str(db), "WITH sqlite_master AS (SELECT 1 AS x) SELECT x FROM sqlite_master").rows == [(1,)]
    # the pipeline's own introspection reads the schema on its own connection
    schema = introspect(str(db), "music", n_samples=0)
    assert schema.tables[0].name == "singer" and [c.name for c in schema.tables[0].columns] == ["id", "name", "age"]


def test_a_view_over_the_schema_table_is_refused_and_named(executor: SQLExecutor, db: Path) -> None:
    assert_refused(executor, db, "SELECT * FROM schema_view", "reading sqlite_master", "schema_view")


@pytest.mark.parametrize("sql, pragma", [
    ("SELECT * FROM pragma_database_list()", "database_list"),  # the server's file paths
    ("SELECT * FROM pragma_database_list", "database_list"),
    ("SELECT file FROM main.pragma_database_list()", "database_list"),
    ("PRAGMA database_list", "database_list"),
    ("SELECT * FROM pragma_compile_options()", "compile_options"),
    ("SELECT * FROM pragma_function_list()", "function_list"),
    ("SELECT * FROM pragma_module_list()", "module_list"),
    ("SELECT * FROM pragma_pragma_list()", "pragma_list"),
    ("SELECT * FROM pragma_collation_list()", "collation_list"),
    ("SELECT name FROM pragma_table_list()", "table_list"),
    ("SELECT * FROM pragma_integrity_check()", "integrity_check"),
    ("PRAGMA user_version", "user_version"),
])
def test_pragmas_other_than_the_per_table_ones_are_refused(executor: SQLExecutor, db: Path, sql: str,
                                                          pragma: str) -> None:
    assert_refused(executor, db, sql, f"PRAGMA {pragma}")
    # the per-table ones run, in both forms, also after a refusal and as a cached statement
    for _ in range(2):
        info = executor.execute(str(db), "SELECT name FROM pragma_table_info('singer')")
        assert info.ok and info.rows == [("id",), ("name",), ("age",)]
    assert executor.execute(str(db), "PRAGMA index_list(singer)").ok
    if "fts5" in {r[0] for r in sqlite3.connect(":memory:").execute("SELECT name FROM pragma_module_list")}:
        assert executor.execute(str(db), "SELECT body FROM notes WHERE notes MATCH 'hello'").rows == [("hello world",)]


@pytest.mark.parametrize("sql", [
    "SELECT fts3_tokenizer('simple')",  # returns the tokenizer's memory address
    "SELECT fts3_tokenizer('evil', x'4141414141414141')",  # installs a tokenizer from an address
    "SELECT FTS3_TOKENIZER('simple', fts3_tokenizer('porter'))",
    "SELECT name FROM singer WHERE fts3_tokenizer('simple') IS NOT NULL",
])
def test_fts3_tokenizer_is_refused_in_both_forms(executor: SQLExecutor, db: Path, sql: str) -> None:
    assert_refused(executor, db, sql, "fts3_tokenizer()", "memory")


@pytest.mark.skipif(not hasattr(sqlite3.Connection, "setconfig")
                    or not hasattr(sqlite3, "SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER"),
                    reason="Connection.setconfig / SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER need Python 3.12+")
def test_the_two_argument_fts3_tokenizer_is_also_off_at_connection_level(db: Path) -> None:
    conn = _Runner()._connect(str(db), "replace")
    assert isinstance(conn, sqlite3.Connection)
    assert conn.getconfig(sqlite3.SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER) is False  # type: ignore[attr-defined]


@pytest.mark.parametrize("sql, name", [
    ("SELECT sqlite_version()", "sqlite_version()"),
    ("SELECT sqlite_source_id()", "sqlite_source_id()"),
    ("SELECT sqlite_compileoption_used('ENABLE_FTS3')", "sqlite_compileoption_used()"),
    ("SELECT load_extension('/tmp/nothing')", "load_extension()"),
    ("SELECT rtreenode(2, x'00')", "rtreenode()"),
    ("SELECT sql FROM sqlite_stmt", "reading sqlite_stmt"),  # the SQL of other queries on the same connection
    ("SELECT name, pgsize FROM dbstat", "reading dbstat"),
])
def test_functions_and_virtual_tables_beyond_the_rows_are_refused(executor: SQLExecutor, db: Path, sql: str,
                                                                  name: str) -> None:
    assert_refused(executor, db, sql, name)
    assert executor.execute(str(db), "SELECT value FROM json_each('[1,2]')").rows == [(1,), (2,)]
    assert executor.execute(str(db), "SELECT upper(name), length(name) FROM singer WHERE id = 1").rows == [("ANN", 3)]


def test_no_refusal_writes_the_database(db: Path) -> None:
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    with SQLExecutor(timeout=5.0, workers=1) as ex:
        for sql in ("SELECT * FROM main.sqlite_master", "SELECT * FROM pragma_database_list()",
                    "SELECT fts3_tokenizer('x', x'0000000000000000')", "PRAGMA writable_schema = ON"):
            assert not ex.execute(str(db), sql).ok, sql
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_docs_list_what_model_sql_may_not_use() -> None:
    doc = (PROJECT_ROOT / "docs" / "security.md").read_text()
    section = doc.split("## What model-written SQL may use", 1)[1].split("\n## ", 1)[0]
    for name in [*_REFUSED_FUNCTIONS, *_REFUSED_TABLES, *_ALLOWED_PRAGMAS]:
        assert f"`{name}" in section, f"docs/security.md does not mention {name}"
    assert "## Probe families of issue 20" in doc and "### Server probes" in doc
