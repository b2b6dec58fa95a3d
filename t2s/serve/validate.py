"""The SQL validation layer of the server: one read-only query over tables and columns that exist.

`validate_select(sql, schema)` accepts exactly one statement that is a SELECT, a set operation of SELECTs
(UNION / INTERSECT / EXCEPT) or a WITH ... SELECT, whose tables are in the schema (or are CTEs of the query) and whose
columns resolve against them (sqlglot's `qualify` with the schema). SQLite's internal tables (`sqlite_master`,
`sqlite_schema`, ...) are refused however they are reached (`main.` prefix, a CTE of the same name), and so are
table-valued PRAGMA functions (`pragma_database_list()`). Anything else raises `SQLRejected` with a `kind`
a client can branch on and a message naming what was rejected and why.

The work is bounded: a query longer than `MAX_SQL_CHARS`, nested deeper than `MAX_DEPTH` parentheses, or parsing to
more than `MAX_NODES` syntax nodes is rejected as `too_complex` before sqlglot's `qualify` (whose cost grows with the
square of a long UNION chain: 5,000 terms took 23 s), and so is any query that exhausts Python's recursion limit in
sqlglot (`NOT NOT ... 1`). The largest gold query of Spider and BIRD (dev and train) has 272 nodes and 1,446
characters; at the limits validation takes well under a second.

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
                   "invalid", "too_complex")

#: characters of SQL the validator reads at most (the longest Spider / BIRD gold query has 1,446)
MAX_SQL_CHARS = 20_000
#: parenthesis nesting at most (sqlglot's recursive parser exhausts Python's stack near 50)
MAX_DEPTH = 32
#: syntax nodes of the parsed statement at most (the largest Spider / BIRD gold query has 272)
MAX_NODES = 3_000
#: characters of a rejected query quoted in a message
QUOTE_CHARS = 80


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


def _paren_depth(sql: str) -> int:
    """The deepest parenthesis nesting of `sql`, outside string literals, quoted names and comments."""
    depth = deepest = 0
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            end = sql.find(close, i + 1)
            i = n if end < 0 else end + 1
            continue
        if ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if ch == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def _check_size(sql: str) -> None:
    if len(sql) > MAX_SQL_CHARS:
        raise SQLRejected("too_complex", f"rejected: the SQL is {len(sql):,} characters long; at most "
                                         f"{MAX_SQL_CHARS:,} are accepted")
    depth = _paren_depth(sql)
    if depth > MAX_DEPTH:
        raise SQLRejected("too_complex", f"rejected: the SQL nests {depth} parentheses deep; at most {MAX_DEPTH} "
                                         "levels are accepted")


def _too_deep() -> SQLRejected:
    return SQLRejected("too_complex", "rejected: the SQL nests too deeply to analyse (Python's recursion limit was "
                                      "reached); flatten nested expressions or subqueries")


def parse_single(sql: str) -> exp.Expression:
    """The one statement of `sql` (SQLite dialect); `SQLRejected` when empty, too large, unparsable or several
    statements."""
    if not sql or not sql.strip():
        raise SQLRejected("empty", "rejected: the SQL is empty")
    _check_size(sql)
    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except (ParseError, SqlglotError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SQLRejected("syntax", f"rejected: the SQL does not parse as SQLite ({first[:200]})") from None
    except RecursionError:
        raise _too_deep() from None
    if not statements:
        raise SQLRejected("empty", "rejected: the SQL holds no statement (only comments or semicolons)")
    if len(statements) > 1:
        names = ", ".join(_statement_name(s) for s in statements[:10]) + (", ..." if len(statements) > 10 else "")
        raise SQLRejected("multiple_statements",
                          f"rejected: {len(statements)} statements ({names}); send exactly one SELECT")
    return statements[0]


def _check_nodes(tree: exp.Expression) -> None:
    count = 0
    for _ in tree.walk():
        count += 1
        if count > MAX_NODES:
            raise SQLRejected("too_complex", f"rejected: the query has more than {MAX_NODES:,} syntax nodes; "
                                             "split it into smaller queries")


def _check_read_only(tree: exp.Expression) -> None:
    if not isinstance(tree, (exp.Select, exp.SetOperation, *_FORBIDDEN)) and not isinstance(tree, exp.Query):
        raise SQLRejected("syntax", f"rejected: {tree.sql(dialect='sqlite')[:QUOTE_CHARS]!r} is not an SQL "
                                    "statement; send one SELECT")
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        raise SQLRejected("not_select", f"rejected: {_statement_name(tree)} is not a query; only a single SELECT "
                                        "(or WITH ... SELECT) runs here, nothing that changes a database")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise SQLRejected("not_select", f"rejected: the query contains {_statement_name(node)}; only reads "
                                            "are allowed")


def _check_tables(tree: exp.Expression, schema: DatabaseSchema) -> None:
    """Every table is one of the database's own (or, unqualified, a CTE of the query); SQLite's internal tables
    (`sqlite_master`, `sqlite_schema`, ...) and table-valued PRAGMA functions are refused however they are named."""
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    known = {t.name.lower() for t in schema.tables}
    for func in tree.find_all(exp.Anonymous):
        if str(func.name).lower().startswith("pragma_"):
            raise SQLRejected("not_select", f"rejected: {str(func.name)[:QUOTE_CHARS]}() reads SQLite's settings, "
                                            "not the database's tables; only its tables can be read")
    for table in tree.find_all(exp.Table):
        name = table.name
        if not name:  # a table-valued function or a subquery source
            continue
        qualified = table.args.get("db") is not None
        if qualified and table.text("db").lower() not in ("main", ""):
            raise SQLRejected("unknown_table", f"rejected: table {table.text('db')[:QUOTE_CHARS]}.{name[:QUOTE_CHARS]} "
                                               f"is outside database {schema.db_id!r}; only its own tables can be read")
        low = name.lower()
        if low.startswith("sqlite_"):
            raise SQLRejected("unknown_table", f"rejected: {name[:QUOTE_CHARS]!r} is an internal table of SQLite, not "
                                               f"a table of database {schema.db_id!r} (a CTE of that name does not "
                                               "change that)")
        # `main.x` always names a stored table, even when the query has a CTE called x
        if (qualified or low not in ctes) and low not in known:
            names = sorted(t.name for t in schema.tables)
            listed = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
            raise SQLRejected("unknown_table", f"rejected: no table {name[:QUOTE_CHARS]!r} in database "
                                               f"{schema.db_id!r} (tables: {listed})")


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

    Raises `SQLRejected` otherwise (see the module docstring for what is accepted and how much work it takes).
    """
    tree = parse_single(sql)
    try:
        _check_nodes(tree)
        _check_read_only(tree)
        _check_tables(tree, schema)
        mapping = {t.name: {c.name: (c.type or "TEXT") for c in t.columns} for t in schema.tables}
        tree = _double_quoted_strings_to_literals(tree.copy(), schema)
        qualify(tree, schema=mapping, dialect="sqlite", validate_qualify_columns=True, identify=False)
    except OptimizeError as e:
        msg = str(e).split(". Line:")[0][:300]
        kind = "unknown_column" if "could not be resolved" in msg or "Unknown column" in msg else "invalid"
        raise SQLRejected(kind, f"rejected: {msg} in database {schema.db_id!r}") from None
    except SqlglotError as e:
        raise SQLRejected("invalid", f"rejected: {str(e)[:300]}") from None
    except RecursionError:
        raise _too_deep() from None
    return tree
