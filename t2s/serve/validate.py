"""The SQL validation layer of the server (seed 003, phase 5.2): one read-only query over tables and columns that exist.

`validate_select(sql, schema)` accepts exactly one statement that is a SELECT, a set operation of SELECTs
(UNION / INTERSECT / EXCEPT) or a WITH ... SELECT, whose tables are in the schema (or are CTEs of the query) and whose
columns resolve against them (sqlglot's `qualify` with the schema). Anything else raises `SQLRejected` with a `kind`
a client can branch on and a message naming what was rejected and why.

SQLite quirk kept: a double-quoted name that is no column of the query's tables is a string literal in SQLite
(`WHERE name = "Bob"`, common in Spider's gold SQL), so such a name is read as a string, not rejected.

This layer decides what the server is willing to run; it is not what keeps databases safe. Execution still goes
through `t2s.db.execute.SQLExecutor` (read-only connection, authorizer, time limit, row cap).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, SqlglotError
from sqlglot.optimizer.qualify import qualify

from t2s.db.types import DatabaseSchema

#: statement kinds that would change a database, its connection or its files: never run by the server
_FORBIDDEN = (
    exp.Insert, exp.Update, exp.Delete, exp.Drop, exp.Create, exp.Alter, exp.Merge, exp.Attach, exp.Detach,
    exp.Pragma, exp.Command, exp.Transaction, exp.Commit, exp.Rollback, exp.Set, exp.Copy, exp.Analyze, exp.Use,
)

#: the `kind` values of `SQLRejected`
REJECTION_KINDS = ("empty", "syntax", "multiple_statements", "not_select", "unknown_table", "unknown_column",
                   "invalid")


@dataclass
class SQLRejected(ValueError):
    """A query the server will not run: `kind` (one of `REJECTION_KINDS`) and a message saying what and why."""

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


def _statement_name(node: exp.Expression) -> str:
    """A statement's SQL keyword(s) for messages: DROP TABLE, UPDATE, ATTACH, PRAGMA, ..."""
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    if isinstance(node, (exp.Drop, exp.Create)):
        kind = node.args.get("kind")
        return f"{type(node).__name__.upper()} {kind}".strip() if kind else type(node).__name__.upper()
    return type(node).__name__.upper()


def parse_single(sql: str) -> exp.Expression:
    """The one statement of `sql` (SQLite dialect); `SQLRejected` when empty, unparsable or several statements."""
    if not sql or not sql.strip():
        raise SQLRejected("empty", "rejected: the SQL is empty")
    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except (ParseError, SqlglotError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SQLRejected("syntax", f"rejected: the SQL does not parse as SQLite ({first})") from None
    if not statements:
        raise SQLRejected("empty", "rejected: the SQL holds no statement (only comments or semicolons)")
    if len(statements) > 1:
        names = ", ".join(_statement_name(s) for s in statements)
        raise SQLRejected("multiple_statements",
                          f"rejected: {len(statements)} statements ({names}); send exactly one SELECT")
    return statements[0]


def _check_read_only(tree: exp.Expression) -> None:
    if not isinstance(tree, (exp.Select, exp.SetOperation, *_FORBIDDEN)) and not isinstance(tree, exp.Query):
        raise SQLRejected("syntax", f"rejected: {tree.sql(dialect='sqlite')[:80]!r} is not an SQL statement; send "
                                    "one SELECT")
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        raise SQLRejected("not_select", f"rejected: {_statement_name(tree)} is not a query; only a single SELECT "
                                        "(or WITH ... SELECT) runs here, nothing that changes a database")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise SQLRejected("not_select", f"rejected: the query contains {_statement_name(node)}; only reads "
                                            "are allowed")


def _check_tables(tree: exp.Expression, schema: DatabaseSchema) -> None:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    known = {t.name.lower() for t in schema.tables}
    for table in tree.find_all(exp.Table):
        name = table.name
        if not name:  # a table-valued function or a subquery source
            continue
        if table.args.get("db") is not None and table.text("db").lower() not in ("main", ""):
            raise SQLRejected("unknown_table", f"rejected: table {table.text('db')}.{name} is outside database "
                                               f"{schema.db_id!r}; only its own tables can be read")
        if name.lower() not in ctes and name.lower() not in known:
            raise SQLRejected("unknown_table", f"rejected: no table {name!r} in database {schema.db_id!r} "
                                               f"(tables: {', '.join(sorted(t.name for t in schema.tables))})")


def _double_quoted_strings_to_literals(tree: exp.Expression, schema: DatabaseSchema) -> exp.Expression:
    """SQLite reads a double-quoted name that matches no column as a string: do the same before qualifying."""
    names = {c.name.lower() for t in schema.tables for c in t.columns}
    names |= {a.alias.lower() for a in tree.find_all(exp.Alias)}
    for cte in tree.find_all(exp.CTE):
        names |= {c.name.lower() for c in cte.args.get("alias", exp.TableAlias()).columns}

    def fix(node: exp.Expression) -> exp.Expression:
        if (isinstance(node, exp.Column) and not node.table and isinstance(node.this, exp.Identifier)
                and node.this.quoted and node.name.lower() not in names):
            return exp.Literal.string(node.name)
        return node

    return tree.transform(fix)


def validate_select(sql: str, schema: DatabaseSchema) -> exp.Expression:
    """Check `sql` is one read-only query over `schema`'s tables and columns; returns the parsed statement.

    Raises `SQLRejected` otherwise (see the module docstring for what is accepted).
    """
    tree = parse_single(sql)
    _check_read_only(tree)
    _check_tables(tree, schema)
    mapping = {t.name: {c.name: (c.type or "TEXT") for c in t.columns} for t in schema.tables}
    tree = _double_quoted_strings_to_literals(tree.copy(), schema)
    try:
        qualify(tree, schema=mapping, dialect="sqlite", validate_qualify_columns=True, identify=False)
    except OptimizeError as e:
        msg = str(e).split(". Line:")[0]
        kind = "unknown_column" if "could not be resolved" in msg or "Unknown column" in msg else "invalid"
        raise SQLRejected(kind, f"rejected: {msg} in database {schema.db_id!r}") from None
    except SqlglotError as e:
        raise SQLRejected("invalid", f"rejected: {e}") from None
    return tree
