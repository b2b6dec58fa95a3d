"""The schema serialization interface (plugins under `plugins/schema_format/`: `ddl`, `markdown`, `mschema`) and the
helpers every serialization shares for rendering identifiers and sample values deterministically."""

from __future__ import annotations

import abc
import re
from typing import TYPE_CHECKING, Any

from t2s.db.types import DatabaseSchema

if TYPE_CHECKING:
    from t2s.artifacts import Artifact
    from t2s.env import Env


class SchemaFormat(abc.ABC):
    """Turns a `DatabaseSchema` (or a filtered view of one) into prompt text.

    A format that reads per-database artifacts (the database profile, for summaries and top values) lists them in
    `artifacts(env)` and renders in `format_with(schema, loaded)`; `Env.view` loads them for the view's database and
    `t2s prepare` builds them. Formats that need nothing but the schema implement `format` only.
    """

    name: str = ""

    @abc.abstractmethod
    def format(self, schema: DatabaseSchema) -> str:
        """Serialize the schema. Must be deterministic (it is part of prompts, hence of cache keys)."""

    def artifacts(self, env: Env) -> list[Artifact]:
        """The per-database artifacts `format_with` reads, in order. Default: none."""
        return []

    def format_with(self, schema: DatabaseSchema, loaded: list[Any]) -> str:
        """Serialize the schema with its database's loaded artifacts (in `artifacts()` order). Default: `format`."""
        return self.format(schema)


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
