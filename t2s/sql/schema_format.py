"""The helpers every schema serialization (plugins under `plugins/schema_format/`: `ddl`, `markdown`, `mschema`) shares
for rendering identifiers and sample values deterministically. The interface itself, `SchemaFormat`, lives with the
other component interfaces in `t2s.stages` and is re-exported here for plugins written against the old place."""

from __future__ import annotations

import re
from typing import Any

from t2s.stages import SchemaFormat

__all__ = ["SQLITE_KEYWORDS", "SchemaFormat", "one_line", "quote_identifier", "sql_literal"]

#: SQLite's keywords (https://sqlite.org/lang_keywords.html); as identifiers they are quoted in SQL text
SQLITE_KEYWORDS: frozenset[str] = frozenset("""
ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN BY
CASCADE CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE
CURRENT_TIME CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE DEFERRED DELETE DESC DETACH DISTINCT DO DROP
EACH ELSE END ESCAPE EXCEPT EXCLUDE EXCLUSIVE EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM
FULL GENERATED GLOB GROUP GROUPS HAVING IF IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD
INTERSECT INTO IS ISNULL JOIN KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT NOTHING NOTNULL
NULL NULLS OF OFFSET ON OR ORDER OTHERS OUTER OVER PARTITION PLAN PRAGMA PRECEDING PRIMARY QUERY RAISE
RANGE RECURSIVE REFERENCES REGEXP REINDEX RELEASE RENAME REPLACE RESTRICT RETURNING RIGHT ROLLBACK ROW
ROWS SAVEPOINT SELECT SET TABLE TEMP TEMPORARY THEN TIES TO TRANSACTION TRIGGER UNBOUNDED UNION UNIQUE
UPDATE USING VACUUM VALUES VIEW VIRTUAL WHEN WHERE WINDOW WITH WITHOUT
""".split())

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote_identifier(name: str, *, quote: str = '"', keywords: bool = True) -> str:
    """`name` as is when it is a plain identifier, else wrapped in `quote` (the quote character doubled inside).

    Plain means letters, digits and underscores, not starting with a digit, and (when `keywords`) not an
    SQLite keyword in any case.
    """
    if _PLAIN.match(name) and not (keywords and name.upper() in SQLITE_KEYWORDS):
        return name
    return quote + name.replace(quote, quote + quote) + quote


def one_line(text: str) -> str:
    """`text` with line breaks and tabs escaped, so it fits in a comment or table cell."""
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def sql_literal(value: Any) -> str:
    """A sample value as an SQL literal on one line: strings single-quoted ('' escapes a quote), numbers bare."""
    if isinstance(value, str):
        return "'" + one_line(value).replace("'", "''") + "'"
    if value is None:
        return "NULL"
    return repr(value) if isinstance(value, float) else str(value)
