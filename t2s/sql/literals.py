"""String literals of a SQL query and the column each is compared to (sqlglot), for scoring value retrieval.

`string_literals(sql, schema)` walks the parsed query (SQLite dialect) and returns every string literal with the
comparison it sits in (`=`, `!=`, `<`, `LIKE`, `IN`, `BETWEEN`, ...) and, when the other side of that comparison is a
column, its table and column: a qualified column's alias is resolved among the tables of the nearest enclosing
SELECT; an unqualified one is given the table of that SELECT which has the column in `schema` (or the only table
when no schema is given). Literals outside comparisons (select-list constants, function arguments) come back with
`table = column = None`. LIKE patterns keep their `%` / `_` in `value`; `text` has the leading and trailing
wildcards stripped (what a value retriever could find).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from t2s.db.types import DatabaseSchema

_COMPARISONS: tuple[type[exp.Expression], ...] = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.In, exp.Between, exp.Glob,
)


@dataclass(frozen=True)
class SqlLiteral:
    """One string literal: its `value` as written (quotes removed), `text` (LIKE wildcards at the ends stripped),
    the comparison `op` (sqlglot class name lower-cased: "eq", "like", "in", ...; "" outside a comparison) and the
    compared column's `table` / `column` (None when unknown)."""

    value: str
    text: str
    op: str
    table: str | None
    column: str | None


def _tables_of(select: exp.Expression) -> dict[str, str]:
    """alias-or-name (lower) -> table name for the tables directly in `select` (not in its subqueries)."""
    out: dict[str, str] = {}
    for t in select.find_all(exp.Table):
        if t.find_ancestor(exp.Select) is select and t.name:
            out[t.alias_or_name.lower()] = t.name
            out.setdefault(t.name.lower(), t.name)
    return out


def _resolve(col: exp.Column, schema: DatabaseSchema | None) -> tuple[str | None, str]:
    """(table, column) of a column reference, in the schema's spelling when the schema has them."""
    table, name = _resolve_raw(col, schema)
    if schema is not None and table is not None and (t := schema.table(table)) is not None:
        c = t.column(name)
        return t.name, (c.name if c is not None else name)
    return table, name


def _resolve_raw(col: exp.Column, schema: DatabaseSchema | None) -> tuple[str | None, str]:
    select = col.find_ancestor(exp.Select)
    tables = _tables_of(select) if select is not None else {}
    if col.table:
        name = tables.get(col.table.lower())
        if name is None and schema is not None and schema.table(col.table) is not None:
            name = schema.table(col.table).name  # type: ignore[union-attr]
        return name, col.name
    names = list(dict.fromkeys(tables.values()))
    if schema is not None:
        having = [n for n in names if (t := schema.table(n)) is not None and t.column(col.name) is not None]
        if len(having) >= 1:
            return having[0], col.name
    return (names[0] if len(names) == 1 else None), col.name


def _compared_column(lit: exp.Expression, schema: DatabaseSchema | None) -> tuple[exp.Expression | None, exp.Column | None]:
    node: exp.Expression = lit
    while node.parent is not None and not isinstance(node.parent, _COMPARISONS):
        if isinstance(node.parent, (exp.Select, exp.Subquery, exp.Where, exp.Having, exp.Join, exp.And, exp.Or)):
            return None, None
        node = node.parent
    cmp = node.parent
    if cmp is None:
        return None, None
    for operand in (cmp.this, cmp.args.get("expression")):
        while isinstance(operand, (exp.Paren, exp.Lower, exp.Upper, exp.Trim, exp.Cast)):
            operand = operand.this
        if isinstance(operand, exp.Column) and operand is not lit and not _is_quoted_string(operand, schema):
            return cmp, operand
    return cmp, None


def _is_quoted_string(col: exp.Column, schema: DatabaseSchema | None) -> bool:
    """A double-quoted name that SQLite reads as a string: unqualified, quoted, and (with a schema) no column of any
    table has that name."""
    ident = col.this
    if col.table or not isinstance(ident, exp.Identifier) or not ident.quoted:
        return False
    if schema is None:
        return True
    low = ident.name.lower()
    return not any(c.name.lower() == low for t in schema.tables for c in t.columns)


def string_literals(sql: str, schema: DatabaseSchema | None = None) -> list[SqlLiteral]:
    """Every string literal of `sql` in query order (see the module docstring); [] when sqlglot cannot parse it.
    SQLite's double-quoted strings (`name = "France"`, as Spider writes them) count as string literals when they are
    compared to a column and name no column of `schema`."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return []
    out: list[SqlLiteral] = []
    for node in tree.walk(bfs=False):
        if isinstance(node, exp.Literal) and node.is_string:
            value = node.this
            cmp, col = _compared_column(node, schema)
        elif isinstance(node, exp.Column) and _is_quoted_string(node, schema):
            cmp, col = _compared_column(node, schema)
            if cmp is None or col is None:
                continue
            value = node.this.name
        else:
            continue
        table, column = _resolve(col, schema) if col is not None else (None, None)
        op = type(cmp).__name__.lower() if cmp is not None else ""
        text = value.strip("%") if op in {"like", "ilike"} else value
        out.append(SqlLiteral(value=value, text=text, op=op, table=table, column=column))
    return out
