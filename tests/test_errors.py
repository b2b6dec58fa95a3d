"""Error categories: one real example per category, run against a real SQLite database for the status
and SQLite's own error message, with the schema introspected the way the scorer does it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from t2s.db.introspect import introspect
from t2s.db.types import DatabaseSchema
from t2s.eval.errors import ERROR_CATEGORIES, categorize_error

DDL = """
CREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, name TEXT, location TEXT, capacity INTEGER);
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, stadium_id INTEGER REFERENCES stadium(stadium_id),
                      year TEXT);
CREATE TABLE singer_in_concert (concert_id INTEGER REFERENCES concert(concert_id),
                                singer_id INTEGER REFERENCES singer(singer_id));
INSERT INTO stadium VALUES (1, 'Arena', 'Oslo', 100), (2, 'Dome', 'Rome', 300);
INSERT INTO singer VALUES (1, 'Ann', 'France', 30), (2, 'Bob', 'Italy', 45), (3, 'Cid', 'France', 52);
INSERT INTO concert VALUES (1, 'Spring', 1, '2014'), (2, 'Summer', 2, '2014'), (3, 'Fall', 2, '2015'), (4, 'Winter', 2, '2014');
INSERT INTO singer_in_concert VALUES (1, 1), (1, 2), (2, 2), (3, 3);
"""

GOLD = ("SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
        "WHERE T1.year = '2014' GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1")
GOLD_SINGERS = ("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
                "JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = '2014'")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatabaseSchema]:
    path = tmp_path_factory.mktemp("errors") / "concert.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(DDL)
    return path, introspect(str(path), "concert", n_samples=0)


def _run(path: Path, sql: str) -> tuple[str, str | None, list[tuple]]:
    """Execute like the scorer would: status and SQLite's message (writes are refused read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "ok", None, conn.execute(sql).fetchall()
    except sqlite3.Error as e:
        return "error", str(e), []
    finally:
        conn.close()


@pytest.mark.parametrize(("pred", "gold", "category"), [
    ("SELECT name, count(*) FROM concert JOIN stadium ON concert.stadium_id = stadium.stadium_id WHERE year = '2014' "
     "GROUP BY concert.stadium_id ORDER BY count(*) DESC LIMT 1", GOLD, "syntax_error"),
    ("SELECT T2.title FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id", GOLD,
     "unknown_table_or_column"),
    ("SELECT name FROM performer", GOLD_SINGERS, "unknown_table_or_column"),
    ("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
     "JOIN stadium AS T3 ON T2.concert_id = T3.stadium_id WHERE T3.capacity > 200", GOLD_SINGERS, "wrong_table_set"),
    ("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
     "WHERE T2.concert_id = 1", GOLD_SINGERS, "missing_or_extra_join"),
    ("SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.concert_id = T2.stadium_id "
     "WHERE T1.year = '2014' GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1", GOLD, "missing_or_extra_join"),
    ("SELECT T2.name, sum(T2.capacity) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
     "WHERE T1.year = '2014' GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1", GOLD, "wrong_aggregation"),
    ("SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
     "WHERE T1.year = '2015' GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1", GOLD, "wrong_filter"),
    ("SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
     "WHERE T1.year = '2014' GROUP BY T1.concert_id ORDER BY count(*) DESC LIMIT 1", GOLD, "wrong_grouping"),
    ("SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
     "WHERE T1.year = '2014' GROUP BY T1.stadium_id ORDER BY count(*) ASC LIMIT 1", GOLD, "wrong_ordering_or_limit"),
    ("SELECT T2.location, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
     "WHERE T1.year = '2014' GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1", GOLD, "wrong_projection"),
    ("SELECT name FROM singer WHERE country = 'France' UNION SELECT name FROM singer WHERE age > 40",
     "SELECT name FROM singer WHERE country = 'France' INTERSECT SELECT name FROM singer WHERE age > 40", "other"),
])
def test_one_real_example_per_category(pred: str, gold: str, category: str, db: tuple[Path, DatabaseSchema]) -> None:
    path, schema = db
    g_status, g_error, g_rows = _run(path, gold)
    assert g_status == "ok", g_error
    status, error, rows = _run(path, pred)
    assert status == "error" or sorted(rows) != sorted(g_rows), "the example must be a wrong prediction"
    assert categorize_error(pred, gold, schema, status, error) == category
    if category == "syntax_error":
        assert "syntax error" in (error or "")  # SQLite's own message
    if category not in ("syntax_error", "unknown_table_or_column"):
        assert categorize_error(pred, gold, None, status, error) == category  # no schema needed for these


def test_hallucinated_column_is_caught_from_the_schema_without_an_sqlite_message(db: tuple[Path, DatabaseSchema]) -> None:
    _, schema = db
    assert categorize_error("SELECT nickname FROM singer", GOLD_SINGERS, schema, "ok", None) == "unknown_table_or_column"


def test_status_decides_first() -> None:
    assert categorize_error("DELETE FROM singer", GOLD, None, "rejected", "rejected: writes are not allowed") == "rejected"
    assert categorize_error("SELECT name FROM singer", GOLD, None, "timeout", None) == "timeout"
    assert categorize_error("", GOLD, None, "error", "incomplete input") == "syntax_error"


def test_categories_are_declared_in_precedence_order() -> None:
    assert ERROR_CATEGORIES[:7] == ("rejected", "not_a_database", "not_authorized", "timeout", "resource_limit",
                                    "syntax_error", "unknown_table_or_column")
    assert ERROR_CATEGORIES[-1] == "other" and len(set(ERROR_CATEGORIES)) == 15
