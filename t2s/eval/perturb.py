"""Perturbed predictions made from gold SQL with sqlglot: known-wrong (or known-equivalent) test inputs.

Each kind rewrites the outermost query (for UNION / INTERSECT / EXCEPT, every branch of it) and returns
SQLite SQL, or None when the kind does not apply:

- `drop_distinct`: remove every DISTINCT (SELECT DISTINCT and COUNT(DISTINCT x)).
- `flip_order`: reverse the outermost ORDER BY (ASC <-> DESC, with the NULL placement reversed too).
- `change_limit`: outermost `LIMIT n` -> `LIMIT n + 1`.
- `swap_aggregate`: the first MAX/MIN/SUM/AVG (breadth-first) becomes MIN/MAX/AVG/SUM.
- `drop_where_condition`: drop the last AND-conjunct of the first outermost WHERE (the WHERE itself when it
  has a single condition).
- `permute_select`: rotate the projection list left by one (`a, b, c` -> `b, c, a`); needs >= 2 columns,
  no `*`, and no positional ORDER BY / GROUP BY.

Under the Spider test-suite semantics `permute_select` stays correct and `drop_distinct` does too (both
sides lose DISTINCT) unless DISTINCT is kept; under BIRD's semantics `permute_select` is wrong.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

KINDS = ("drop_distinct", "flip_order", "change_limit", "swap_aggregate", "drop_where_condition", "permute_select")
_SWAP: dict[type[exp.Expr], type[exp.Expr]] = {exp.Max: exp.Min, exp.Min: exp.Max, exp.Sum: exp.Avg,
                                                          exp.Avg: exp.Sum}


def _branches(root: exp.Expr) -> list[exp.Select]:
    """The SELECTs that make up the outermost query (one, or the branches of a set operation)."""
    if isinstance(root, exp.Select):
        return [root]
    if isinstance(root, exp.SetOperation):
        return _branches(root.left) + _branches(root.right)
    if isinstance(root, exp.Subquery):
        return _branches(root.this)
    return []


def _drop_distinct(root: exp.Expr) -> bool:
    changed = False
    for sel in list(root.find_all(exp.Select)):
        if sel.args.get("distinct") is not None:
            sel.set("distinct", None)
            changed = True
    for d in list(root.find_all(exp.Distinct)):
        if isinstance(d.parent, exp.Select):
            continue
        inner = d.expressions
        if len(inner) == 1:
            d.replace(inner[0])
            changed = True
    return changed


def _flip_order(root: exp.Expr) -> bool:
    order = root.args.get("order")
    if order is None or not order.expressions:
        return False
    for o in order.expressions:
        if isinstance(o, exp.Ordered):
            o.set("desc", not o.args.get("desc"))
            o.set("nulls_first", not o.args.get("nulls_first"))
    return True


def _change_limit(root: exp.Expr) -> bool:
    limit = root.args.get("limit")
    value = limit.expression if isinstance(limit, exp.Limit) else None
    if not isinstance(limit, exp.Limit) or not isinstance(value, exp.Literal) or value.is_string \
            or not value.this.isdigit():
        return False
    limit.set("expression", exp.Literal.number(int(value.this) + 1))
    return True


def _swap_aggregate(root: exp.Expr) -> bool:
    agg = root.find(*_SWAP)
    if agg is None:
        return False
    new = _SWAP[type(agg)](this=agg.this)
    agg.replace(new)
    return True


def _drop_where_condition(root: exp.Expr) -> bool:
    for sel in _branches(root):
        where = sel.args.get("where")
        if where is None:
            continue
        cond = where.this
        if isinstance(cond, exp.And):
            cond.replace(cond.this)  # keep the left conjuncts, drop the last one
        else:
            sel.set("where", None)
        return True
    return False


def _permute_select(root: exp.Expr) -> bool:
    branches = _branches(root)
    if not branches:
        return False
    widths = {len(s.expressions) for s in branches}
    if len(widths) != 1 or widths.pop() < 2:
        return False
    for s in branches:
        if any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
               for e in s.expressions):
            return False
        group = s.args.get("group")
        if group is not None and any(isinstance(g, exp.Literal) for g in group.expressions):
            return False
    order = root.args.get("order")
    if order is not None and any(isinstance(o.this, exp.Literal) for o in order.expressions):
        return False
    for s in branches:
        cols = list(s.expressions)
        s.set("expressions", cols[1:] + cols[:1])
    return True


_REWRITES: dict[str, Callable[[exp.Expr], bool]] = {
    "drop_distinct": _drop_distinct, "flip_order": _flip_order, "change_limit": _change_limit,
    "swap_aggregate": _swap_aggregate, "drop_where_condition": _drop_where_condition,
    "permute_select": _permute_select,
}


def perturb(sql: str, kind: str) -> str | None:
    """`sql` rewritten by perturbation `kind` (one of `KINDS`), as SQLite SQL; None if the kind does not
    apply to this query or sqlglot cannot parse it."""
    if kind not in _REWRITES:
        raise ValueError(f"unknown perturbation kind {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        root = sqlglot.parse_one(sql, read="sqlite")
    except SqlglotError:
        return None
    if not _REWRITES[kind](root):
        return None
    try:
        return root.sql(dialect="sqlite")
    except SqlglotError:
        return None


def perturb_file(gold_lines: Sequence[str], out_path: Path, seed: int = 0, *,
                 kinds: Sequence[str] = KINDS) -> list[dict[str, Any]]:
    """Write one perturbed prediction per gold line to JSONL `out_path`; return the records.

    A gold line is `SQL` or `SQL<TAB>db_id` (the official gold-file format). For each line a kind is drawn
    (seeded by `seed`) among those in `kinds` that apply; a line no kind applies to keeps its gold SQL with
    kind "identity". Records: `{"index", "db_id", "kind", "sql"}`.
    """
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for i, line in enumerate(gold_lines):
        sql, _, db_id = line.rstrip("\n").partition("\t")
        order = list(kinds)
        rng.shuffle(order)
        record: dict[str, Any] = {"index": i, "db_id": db_id or None, "kind": "identity", "sql": sql}
        for kind in order:
            new = perturb(sql, kind)
            if new is not None:
                record.update(kind=kind, sql=new)
                break
        records.append(record)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return records
