"""Spider hardness (easy / medium / hard / extra), computed with the official counting rules.

Reimplements `count_component1`, `count_component2`, `count_others` and `Evaluator.eval_hardness` of the
official Spider `evaluation.py` over the `SpiderSQL` structure of `t2s.eval.exact_match` (a sqlglot parse),
including the official script's quirks, which decide a few questions' levels:
- "aggregations" in WHERE count the conditions with NOT (the script tests the first field of each
  condition, which is its NOT flag, not an aggregate), and in HAVING every condition with NOT and every
  AND / OR connective counts;
- "more than one WHERE condition" is tested on the condition list including its connectives;
- component2 counts nested queries in FROM-join / WHERE / HAVING conditions plus set operations (not
  subqueries in FROM).

On Spider dev this gives the official distribution (easy 248, medium 446, hard 174, extra 166).
"""

from __future__ import annotations

from t2s.db.types import DatabaseSchema
from t2s.eval.exact_match import SpiderSQL, parse_spider_sql

__all__ = ["HARDNESS_LEVELS", "spider_hardness", "hardness_of", "count_component1", "count_component2",
           "count_others"]

HARDNESS_LEVELS = ("easy", "medium", "hard", "extra")

_LIKE = 9


def count_component1(s: SpiderSQL) -> int:
    """WHERE, GROUP BY, ORDER BY, LIMIT present (1 each), joins (tables - 1), ORs and LIKEs in conditions."""
    count = sum(bool(x) for x in (s.where, s.group_by, s.order_by)) + (s.limit is not None)
    if s.table_units:
        count += len(s.table_units) - 1
    connectives = s.from_conds[1::2] + s.where[1::2] + s.having[1::2]
    count += sum(1 for w in connectives if w == "or")
    units = s.from_conds[::2] + s.where[::2] + s.having[::2]
    count += sum(1 for u in units if u[1] == _LIKE)
    return count


def _nested(s: SpiderSQL) -> list[SpiderSQL]:
    out = [v for u in s.from_conds[::2] + s.where[::2] + s.having[::2] for v in (u[3], u[4])
           if isinstance(v, SpiderSQL)]
    return out + [sub for sub in (s.intersect, s.except_, s.union) if sub is not None]


def count_component2(s: SpiderSQL) -> int:
    """Nested queries in conditions plus INTERSECT / EXCEPT / UNION branches (the official `get_nestedSQL`)."""
    return len(_nested(s))


def count_others(s: SpiderSQL) -> int:
    """One each for: more than one "aggregation" (official counting, see the module doc), more than one
    SELECT column, more than one WHERE condition, more than one GROUP BY column."""
    agg = sum(1 for a, _ in s.select[1] if a != 0)
    agg += sum(1 for u in s.where[::2] if u[0])  # the official has_agg(cond_unit) reads the NOT flag
    agg += sum(1 for c in s.group_by if c[0] != 0)
    if s.order_by:
        units = [v[1] for v in s.order_by[1] if v[1]] + [v[2] for v in s.order_by[1] if v[2]]
        agg += sum(1 for c in units if c[0] != 0)
    agg += sum(1 for x in s.having if isinstance(x, str) or x[0])  # 'and'/'or' strings count, as officially
    count = int(agg > 1)
    count += len(s.select[1]) > 1
    count += len(s.where) > 1
    count += len(s.group_by) > 1
    return count


def hardness_of(s: SpiderSQL) -> str:
    """The official `Evaluator.eval_hardness` of a parsed (not normalized) query."""
    c1, c2, others = count_component1(s), count_component2(s), count_others(s)
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0) or \
            (c1 <= 1 and others == 0 and c2 <= 1):
        return "hard"
    return "extra"


def spider_hardness(sql: str, schema: DatabaseSchema | None = None) -> str:
    """Spider hardness of `sql`: one of `HARDNESS_LEVELS`.

    The level depends only on the query's shape, never on which columns it names, so `schema` is accepted
    for symmetry with the other metrics and not used (an unknown column does not prevent a level). Raises
    `t2s.eval.exact_match.SpiderParseError` (a ValueError) when the SQL does not parse.
    """
    del schema
    return hardness_of(parse_spider_sql(sql))
