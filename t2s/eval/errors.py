"""Error categories for wrong predictions, from the execution status and a clause-by-clause comparison.

The comparison reuses the exact-set match structures (`t2s.eval.exact_match.SpiderSQL`): names are
resolved (aliases to tables, unqualified columns through the schema), foreign-key columns are mapped to
one representative as in the official evaluator, but, unlike exact-set match, literal values and DISTINCT
count, because a prediction that reached this function returned the wrong rows.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from t2s.db.types import DatabaseSchema
from t2s.eval.exact_match import (
    SchemaReferenceError,
    SpiderParseError,
    SpiderSQL,
    SqlSyntaxError,
    normalize,
    parse_spider_sql,
    parse_sql_tree,
)

__all__ = ["ERROR_CATEGORIES", "categorize_error"]

#: every category `categorize_error` returns, in order of precedence
ERROR_CATEGORIES: tuple[str, ...] = (
    "rejected",
    "not_a_database",
    "not_authorized",
    "timeout",
    "resource_limit",
    "syntax_error",
    "unknown_table_or_column",
    "wrong_table_set",
    "missing_or_extra_join",
    "wrong_aggregation",
    "wrong_filter",
    "wrong_grouping",
    "wrong_ordering_or_limit",
    "wrong_projection",
    "other",
)

_SYNTAX = re.compile(r"syntax error|incomplete input|unrecognized token|unterminated", re.I)
_UNKNOWN = re.compile(r"no such (table|column)", re.I)
_NOT_AUTHORIZED = re.compile(r"^not authorized", re.I)
#: SQLite's and the executor's messages for a database file that cannot be read as one (`t2s.db.execute`)
_NOT_A_DATABASE = re.compile(r"file is not a database|database disk image is malformed|not a SQLite database|"
                             r"database file is empty|empty database file|database file not found|missing database|"
                             r"database path is not a file|cannot open database|unable to open database file", re.I)


def _all_tables(s: SpiderSQL) -> set[str]:
    """Base tables named anywhere in `s`: every FROM, nested conditions, FROM subqueries, set branches."""
    out: set[str] = set()
    for kind, unit in s.table_units:
        if kind == "table_unit":
            out.add(unit[2:-2])
        else:
            out |= _all_tables(unit)
    for cond in (s.from_conds, s.where, s.having):
        for u in cond[::2]:
            for v in (u[3], u[4]):
                if isinstance(v, SpiderSQL):
                    out |= _all_tables(v)
    for sub in (s.intersect, s.union, s.except_):
        if sub is not None:
            out |= _all_tables(sub)
    return out


def _join_signature(s: SpiderSQL) -> tuple[Counter[Any], Counter[Any]]:
    """The FROM of one query: its table units (multiset) and its ON conditions, column pairs unordered."""
    conds: Counter[Any] = Counter()
    for u in s.from_conds[::2]:
        left, right = u[2][1][1], u[3]
        if isinstance(right, tuple) and len(right) == 3 and isinstance(right[1], str):
            conds[(u[0], u[1], frozenset((left, right[1])))] += 1
        else:
            conds[u] += 1
    return Counter(s.table_units), conds


def _aggregates(s: SpiderSQL) -> Counter[tuple[int, bool | None]]:
    """Aggregate functions of the SELECT list with their DISTINCT flag: (agg_id, distinct) per use."""
    out: Counter[tuple[int, bool | None]] = Counter()
    for agg, (_, c1, c2) in s.select[1]:
        if agg:
            out[(agg, bool(c1[2]))] += 1
        for c in (c1, c2):
            if c is not None and c[0]:
                out[(c[0], bool(c[2]))] += 1
    return out


def _clause_checks(p: SpiderSQL, g: SpiderSQL) -> str | None:
    """The first clause category after the joins on which two aligned, normalized queries differ."""
    if _aggregates(p) != _aggregates(g):
        return "wrong_aggregation"
    if Counter(p.where[::2]) != Counter(g.where[::2]) or sorted(p.where[1::2]) != sorted(g.where[1::2]):
        return "wrong_filter"
    if set(p.group_by) != set(g.group_by) or Counter(p.having[::2]) != Counter(g.having[::2]) \
            or sorted(p.having[1::2]) != sorted(g.having[1::2]):
        return "wrong_grouping"
    if p.order_by != g.order_by or p.limit != g.limit:
        return "wrong_ordering_or_limit"
    if Counter(p.select[1]) != Counter(g.select[1]) or bool(p.select[0]) != bool(g.select[0]):
        return "wrong_projection"
    return None


def _parse_pair(pred_sql: str, gold_sql: str, schema: DatabaseSchema | None) -> tuple[SpiderSQL, SpiderSQL] | str:
    try:
        pred = parse_spider_sql(pred_sql, schema)
    except SchemaReferenceError:
        return "unknown_table_or_column"
    except SpiderParseError:
        return "other"
    try:
        gold = parse_spider_sql(gold_sql, schema)
    except SpiderParseError:
        if schema is None:
            return "other"
        try:  # the gold names something the schema lacks: compare both without the schema
            return parse_spider_sql(pred_sql), parse_spider_sql(gold_sql)
        except SpiderParseError:
            return "other"
    return pred, gold


def categorize_error(pred_sql: str, gold_sql: str, schema: DatabaseSchema | None, status: str,
                     pred_error: str | None) -> str:
    """The category (one of `ERROR_CATEGORIES`) of a prediction already judged wrong; first match wins.

    `status` is the prediction's execution status ("ok", "error", "timeout", "rejected", as in
    `ExecResult.status`), `pred_error` SQLite's message when it failed.

    - rejected: `status == "rejected"` (a statement that would modify the database);
    - not_a_database: the question's database file could not be read as a SQLite database (missing, empty,
      damaged, or another kind of file such as `/etc/passwd`: "file is not a database", "database disk image is
      malformed", or the scorer's "not a SQLite database: <path>", which it puts first when a prediction fails on
      such a file, even with a syntax error); nothing about the SQL can be judged;
    - not_authorized: SQLite's authorizer or its own switches refused the statement without it being a write
      (message "not authorized ...", e.g. `load_extension`);
    - timeout: `status == "timeout"`;
    - resource_limit: `status == "resource_limit"` (a memory bound of the executor stopped the query);
    - syntax_error: sqlglot cannot parse the prediction (empty text included), or SQLite reports a syntax
      error / incomplete input / unrecognized token;
    - unknown_table_or_column: SQLite reports "no such table/column", or the prediction names a table, a
      table alias or a column that is not in `schema` / not in the FROM of its query (hallucinated names);
    - wrong_table_set: the tables named anywhere in the prediction and in the gold each include one the
      other lacks (a table was swapped for another);
    - missing_or_extra_join: one table set strictly contains the other, or, with equal sets, the FROM of
      the main query (or of an aligned set-operation branch) differs in its table units as a multiset
      (e.g. a missing self-join) or in its ON conditions (column pairs compared unordered);
    - wrong_aggregation: the SELECT lists use different aggregate functions (multiset of function and
      DISTINCT flag), e.g. COUNT vs SUM, COUNT(x) vs COUNT(DISTINCT x), a missing aggregate;
    - wrong_filter: the WHERE conditions differ as a multiset (column, operator, NOT, value, nested query
      compared whole) or in their AND/OR connectives;
    - wrong_grouping: GROUP BY columns (as a set) or HAVING conditions differ;
    - wrong_ordering_or_limit: ORDER BY expressions or direction differ, or the LIMIT count differs;
    - wrong_projection: the SELECT items differ as a multiset (columns, arithmetic) or SELECT DISTINCT differs;
    - other: none of the above; e.g. only the set operator or the number of set-operation branches differs,
      differences inside a FROM subquery or a function call the structure keeps as text, a prediction
      outside the Spider structure (WITH RECURSIVE, several statements), or two structurally equal queries.

    Clauses are compared on the main query and on each set-operation branch aligned in order; nested
    queries in WHERE / HAVING count as part of that clause.
    """
    if status == "rejected":
        return "rejected"
    message = pred_error or ""
    if status == "error" and _NOT_A_DATABASE.search(message):
        return "not_a_database"
    if _NOT_AUTHORIZED.search(message):
        return "not_authorized"
    if status == "timeout":
        return "timeout"
    if status == "resource_limit":
        return "resource_limit"
    try:
        parse_sql_tree(pred_sql)
    except SqlSyntaxError:
        return "syntax_error"
    except SpiderParseError:
        pass
    if _SYNTAX.search(message):
        return "syntax_error"
    if _UNKNOWN.search(message):
        return "unknown_table_or_column"
    parsed = _parse_pair(pred_sql, gold_sql, schema)
    if isinstance(parsed, str):
        return parsed
    pred_raw, gold_raw = parsed
    pt, gt = _all_tables(pred_raw), _all_tables(gold_raw)
    if pt != gt:
        return "missing_or_extra_join" if (pt < gt or pt > gt) else "wrong_table_set"
    for (_, p), (_, g) in zip(pred_raw.branches(), gold_raw.branches(), strict=False):
        if _join_signature(p) != _join_signature(g):  # raw: the FK map would merge both sides of a join key
            return "missing_or_extra_join"
    pred = normalize(pred_raw, schema, strip_values=False, drop_distinct=False)
    gold = normalize(gold_raw, schema, strip_values=False, drop_distinct=False)
    for (_, p), (_, g) in zip(pred.branches(), gold.branches(), strict=False):
        found = _clause_checks(p, g)
        if found is not None:
            return found
    return "other"
