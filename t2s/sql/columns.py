"""The tables and columns a SQL query uses, qualified against a database schema (sqlglot).

Schema linkers are scored against the gold SQL's tables and columns (issue 10 item 3: recall, precision); this module
finds them. sqlglot parses the query (SQLite dialect) and its optimizer's `qualify` resolves every column to the
table it comes from (aliases, subqueries, CTEs, unqualified names in joins); names are then mapped back to the
schema's own spelling. What is counted:

- tables: every base table the query reads (FROM, JOIN, subqueries; CTE names and derived tables are not tables);
- columns: every `(table, column)` a column reference resolves to, wherever it appears (SELECT, WHERE, JOIN ... ON,
  GROUP BY, ORDER BY, HAVING, inside aggregates). `*` and `COUNT(*)` name no column.

References that resolve to no schema column are listed in `unresolved`, not guessed. Spider's double-quoted string
literals (`WHERE name = "France"`) parse as identifiers in SQLite's grammar; they resolve to no column and end up there
(harmless for recall: they are values, not columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope

from t2s.db.types import DatabaseSchema


@dataclass(frozen=True)
class UsedSchema:
    """What one query uses of a schema, in the schema's own spelling: `tables` and `columns` (`(table, column)`
    pairs); `unresolved` holds column references that name no schema column (or string literals in double quotes);
    `error` is set (and the sets are empty) when the SQL does not parse."""

    tables: frozenset[str] = frozenset()
    columns: frozenset[tuple[str, str]] = frozenset()
    unresolved: tuple[str, ...] = ()
    error: str | None = None

    def lower(self) -> tuple[set[str], set[tuple[str, str]]]:
        """Tables and columns in lower case (for case-insensitive comparison)."""
        return {t.lower() for t in self.tables}, {(t.lower(), c.lower()) for t, c in self.columns}


@dataclass
class _Names:
    tables: dict[str, str] = field(default_factory=dict)
    columns: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def of(cls, schema: DatabaseSchema) -> _Names:
        n = cls()
        for t in schema.tables:
            n.tables[t.name.lower()] = t.name
            for c in t.columns:
                n.columns[(t.name.lower(), c.name.lower())] = c.name
        return n


def _mapping(schema: DatabaseSchema) -> dict[str, dict[str, str]]:
    # types do not matter for resolving names; "text" parses in every sqlglot version
    return {t.name.lower(): {c.name.lower(): "text" for c in t.columns} for t in schema.tables}


def used_schema(sql: str, schema: DatabaseSchema, *, dialect: str = "sqlite") -> UsedSchema:
    """The tables and columns `sql` uses, qualified against `schema` (see the module docstring)."""
    names = _Names.of(schema)
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
        if tree is None:
            return UsedSchema(error="empty statement")
        tree = qualify(tree, schema=_mapping(schema), dialect=dialect, validate_qualify_columns=False,
                       expand_stars=False, quote_identifiers=False, identify=False)
        scopes = traverse_scope(tree)
    except (SqlglotError, ValueError, KeyError, RecursionError) as e:
        return UsedSchema(error=f"{type(e).__name__}: {str(e)[:200]}")
    tables: set[str] = set()
    columns: set[tuple[str, str]] = set()
    unresolved: list[str] = []
    for scope in scopes:
        for src in scope.sources.values():
            if isinstance(src, exp.Table) and src.name.lower() in names.tables:
                tables.add(names.tables[src.name.lower()])
        for col in scope.columns:
            if isinstance(col.this, exp.Star):
                continue
            src = scope.sources.get(col.table) if col.table else None
            if isinstance(src, Scope):
                continue  # a derived table's or CTE's column: counted in the scope that defines it
            if isinstance(src, exp.Table):
                key = (src.name.lower(), col.name.lower())
                if key in names.columns:
                    columns.add((names.tables[key[0]], names.columns[key]))
                    continue
            elif not col.table:
                # qualify could not place it; accept it when exactly one table of this scope has such a column
                owners = [s.name.lower() for s in scope.sources.values() if isinstance(s, exp.Table)
                          and (s.name.lower(), col.name.lower()) in names.columns]
                if len(set(owners)) == 1:
                    key = (owners[0], col.name.lower())
                    columns.add((names.tables[key[0]], names.columns[key]))
                    continue
            unresolved.append(col.sql(dialect=dialect))
    return UsedSchema(tables=frozenset(tables), columns=frozenset(columns), unresolved=tuple(unresolved))
