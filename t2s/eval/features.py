"""Which SQL constructs a query uses, for accuracy breakdowns by query shape."""

from __future__ import annotations

from sqlglot import exp

from t2s.eval.exact_match import parse_sql_tree

__all__ = ["SQL_FEATURES", "sql_features"]

#: every feature `sql_features` can report, in report order
SQL_FEATURES = ("join", "nested", "aggregation", "set_operation", "order_limit", "group_having")


def sql_features(sql: str) -> set[str]:
    """The subset of `SQL_FEATURES` that `sql` uses anywhere, subqueries included.

    - join: a FROM with more than one table or subquery (JOIN or comma);
    - nested: a SELECT inside another SELECT (in WHERE / HAVING / FROM / the select list / EXISTS); the
      branches of a set operation are not nested;
    - aggregation: an aggregate function (COUNT, SUM, AVG, MIN, MAX, GROUP_CONCAT, ...);
    - set_operation: UNION [ALL], INTERSECT or EXCEPT;
    - order_limit: ORDER BY or LIMIT;
    - group_having: GROUP BY or HAVING.
    A query with none of them gets the empty set. Raises `t2s.eval.exact_match.SpiderParseError`
    (a ValueError) when sqlglot cannot parse `sql`.
    """
    tree = parse_sql_tree(sql)
    found: set[str] = set()
    if any(True for _ in tree.find_all(exp.Join)):
        found.add("join")
    for sel in tree.find_all(exp.Select):
        parent = sel.parent
        while parent is not None and not isinstance(parent, exp.Select):
            parent = parent.parent
        if parent is not None:
            found.add("nested")
            break
    if any(True for _ in tree.find_all(exp.AggFunc)):
        found.add("aggregation")
    if any(True for _ in tree.find_all(exp.SetOperation)):
        found.add("set_operation")
    if any(True for _ in tree.find_all(exp.Order, exp.Limit)):
        found.add("order_limit")
    if any(True for _ in tree.find_all(exp.Group, exp.Having)):
        found.add("group_having")
    return found
