"""The typed steps of a SHARE action trajectory: expressions, conditions, actions, statements.

All classes are frozen dataclasses holding tuples, so two trajectories compare (and hash) by value:
`parse(format(t)) == t` is the round-trip invariant the tests check. See the package docstring for the
grammar and the meaning of each action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

# --------------------------------------------------------------------------------------------------
# expressions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    """A column `table.column`; `table` is a database table, or a result variable (`tmp_res1.cnt`) when the
    scope reads a derived table."""

    table: str
    column: str


@dataclass(frozen=True)
class Star:
    """`*`, only inside `count(*)`."""


@dataclass(frozen=True)
class Num:
    """A number literal, kept as written (`3`, `2.5`, `-1`) so text round-trips exactly."""

    text: str


@dataclass(frozen=True)
class Str:
    """A string literal (written `'...'` with `''` for a quote)."""

    value: str


@dataclass(frozen=True)
class Null:
    """The literal `null`."""


@dataclass(frozen=True)
class Func:
    """A function call: aggregates (`count`, `max`, `min`, `sum`, `avg`) and scalar functions passed through
    to SQL (`lower`, `abs`, `strftime`, ...); names are lower-case. `distinct` is `count(distinct x)`."""

    name: str
    args: tuple[Expr, ...]
    distinct: bool = False


@dataclass(frozen=True)
class BinOp:
    """Arithmetic or string concatenation: `op` is one of `+ - * / % ||`."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Neg:
    """Unary minus of a non-literal expression (`-x`)."""

    operand: Expr


@dataclass(frozen=True)
class Var:
    """A reference to a result variable (a nested query): `filter = tmp_res1` is a subquery value."""

    name: str


@dataclass(frozen=True)
class Mask:
    """`[MASK]`: a schema reference hidden by `mask_schema` (SHARE's SAM input)."""


@dataclass(frozen=True)
class Alias:
    """`expr as name` — only as a projection item, naming an output column a derived table is read by."""

    expr: Expr
    name: str


Expr = Union[Col, Star, Num, Str, Null, Func, BinOp, Neg, Var, Mask, Alias]

# --------------------------------------------------------------------------------------------------
# conditions
# --------------------------------------------------------------------------------------------------

#: comparison operators of `where`/`having`/`cond` (`op = '...'`); '=' is the default and is not written
COND_OPS = ("=", "!=", "<", ">", "<=", ">=", "like", "not like", "in", "not in", "between", "not between",
            "is null", "is not null", "exists", "not exists")
#: operators without a filter value
UNARY_OPS = ("is null", "is not null")
#: operators without an element
NO_ELEMENT_OPS = ("exists", "not exists")


@dataclass(frozen=True)
class Cond:
    """One comparison `element <op> filter`.

    `filter` is an expression; a tuple of expressions for `in` lists and `between` bounds (exactly two);
    None for `is null` / `is not null`. `element` is None only for `exists` / `not exists`, whose filter is
    a `Var`.
    """

    element: Expr | None
    op: str
    filter: Expr | tuple[Expr, ...] | None


@dataclass(frozen=True)
class BoolOp:
    """`and(c1, c2, ...)` / `or(c1, c2, ...)`: two or more conditions."""

    op: str
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class NotCond:
    """`not(c)`: negation of a compound condition (atoms negate through their `op`)."""

    item: Condition


Condition = Union[Cond, BoolOp, NotCond]

# --------------------------------------------------------------------------------------------------
# actions (the methods of a statement's chain)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Join:
    """An explicit join, written only when foreign keys would not give the query's FROM clause.

    `join(t)` adds table `t` (`left`/`right` None); `join(a.x, b.y)` joins on `a.x = b.y` (`table` None).
    """

    table: str | Mask | None = None
    left: Col | Mask | None = None
    right: Col | Mask | None = None


@dataclass(frozen=True)
class Where:
    """Keep the rows satisfying `cond` (several `where` actions of one query are ANDed)."""

    cond: Condition


@dataclass(frozen=True)
class GroupBy:
    """Group the rows by `keys`."""

    keys: tuple[Expr, ...]


@dataclass(frozen=True)
class Having:
    """Keep the groups satisfying `cond` (several are ANDed)."""

    cond: Condition


@dataclass(frozen=True)
class OrderBy:
    """Sort by `keys`, each ascending when its `asc` flag is True (same length as `keys`)."""

    keys: tuple[Expr, ...]
    asc: tuple[bool, ...]


@dataclass(frozen=True)
class Limit:
    """Keep the first `n` rows (after skipping `offset`)."""

    n: int
    offset: int | None = None


@dataclass(frozen=True)
class Select:
    """The projection: output `items`; ends a query scope (its statement's target is a result)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Agg:
    """The projection of a grouped frame (`groupby(...).agg(...)`); same meaning as `Select`."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Distinct:
    """Drop duplicate output rows (after the projection)."""


#: set operations on two results
SET_OPS = ("union", "union_all", "intersect", "except")


@dataclass(frozen=True)
class SetOp:
    """`res = left.union(right)` (or `union_all`, `intersect`, `except`): `other` is a result variable."""

    kind: str
    other: str


Action = Union[Join, Where, GroupBy, Having, OrderBy, Limit, Select, Agg, Distinct, SetOp]


@dataclass(frozen=True)
class Statement:
    """`target = source.action1(...).action2(...)`: `source` is `df` (the database), an earlier frame, or a
    result variable (a derived table, or the left side of a set operation)."""

    target: str
    source: str
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Trajectory:
    """An action trajectory: statements in order; the last one assigns `res`, the query's answer."""

    statements: tuple[Statement, ...]

    def __str__(self) -> str:
        from t2s_plugins.corrector.share.trajectory.text import format_trajectory

        return format_trajectory(self)


def walk_expr(e: object):
    """Every expression and condition node under `e` (itself first), depth-first, left to right."""
    yield e
    if isinstance(e, Func):
        for a in e.args:
            yield from walk_expr(a)
    elif isinstance(e, BinOp):
        yield from walk_expr(e.left)
        yield from walk_expr(e.right)
    elif isinstance(e, (Neg,)):
        yield from walk_expr(e.operand)
    elif isinstance(e, Alias):
        yield from walk_expr(e.expr)
    elif isinstance(e, Cond):
        if e.element is not None:
            yield from walk_expr(e.element)
        if isinstance(e.filter, tuple):
            for f in e.filter:
                yield from walk_expr(f)
        elif e.filter is not None:
            yield from walk_expr(e.filter)
    elif isinstance(e, BoolOp):
        for i in e.items:
            yield from walk_expr(i)
    elif isinstance(e, NotCond):
        yield from walk_expr(e.item)


def action_nodes(a: Action):
    """The expressions and conditions an action holds, in text order."""
    if isinstance(a, (Where, Having)):
        return [a.cond]
    if isinstance(a, (GroupBy, OrderBy)):
        return list(a.keys)
    if isinstance(a, (Select, Agg)):
        return list(a.items)
    if isinstance(a, Join):
        return [c for c in (a.table, a.left, a.right) if isinstance(c, (Col, Mask))]
    return []
