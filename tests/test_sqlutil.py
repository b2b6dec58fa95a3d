from __future__ import annotations

import pytest

from t2s.sql.extract import extract_sql


@pytest.mark.parametrize("text,expected", [
    ("```sql\nSELECT a FROM t;\n```", "SELECT a FROM t"),
    ("Here you go:\n```sql\nSELECT a\nFROM t\nWHERE b = 1\n```\nThis selects a.", "SELECT a\nFROM t\nWHERE b = 1"),
    ("```\nSELECT 1\n```", "SELECT 1"),
    ("SELECT name FROM singer WHERE x = ';'\n\nThis query returns names.", "SELECT name FROM singer WHERE x = ';'"),
    ("select 1; select 2", "select 1"),
    ("```sql\nSELECT a FROM t; DROP TABLE t;\n```", "SELECT a FROM t"),
    ("The answer is: WITH c AS (SELECT 1) SELECT * FROM c", "WITH c AS (SELECT 1) SELECT * FROM c"),
    ("SELECT 'New  York' AS city", "SELECT 'New  York' AS city"),
    ("I cannot answer that.", ""),
    ("```sql\nSELECT a FROM t", "SELECT a FROM t"),
    # a query that ends in a quoted name keeps its closing backtick; an unpaired one (a fence cut short) goes
    ("SELECT `Home Town` FROM singer ORDER BY `Home Town`", "SELECT `Home Town` FROM singer ORDER BY `Home Town`"),
    ("```sql\nSELECT a FROM `t`\n```", "SELECT a FROM `t`"),
    ("SELECT a FROM t`", "SELECT a FROM t"),
    ("SELECT a FROM t```", "SELECT a FROM t"),
])
def test_extract_sql(text: str, expected: str) -> None:
    assert extract_sql(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("We start with the singer table:\nSELECT name FROM singer", "SELECT name FROM singer"),
    ("Here is the query with a join.\n\nSELECT a FROM t JOIN u ON t.id = u.id", "SELECT a FROM t JOIN u ON t.id = u.id"),
    ("```SELECT count(*) FROM singer```", "SELECT count(*) FROM singer"),
    ("with recursive c(x) as (select 1) select x from c", "with recursive c(x) as (select 1) select x from c"),
])
def test_prose_with_is_not_sql(text: str, expected: str) -> None:
    assert extract_sql(text) == expected
