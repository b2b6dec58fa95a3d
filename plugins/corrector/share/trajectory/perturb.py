"""Masking (SHARE's SAM input) and action perturbation (SHARE's LOM training data, arXiv
2506.00391 section 3.4).

`mask_schema` hides every schema reference (each `table.column`, each `join(table)`) behind `[MASK]` and
returns the answers in text order; `fill_masks` puts answers back. `perturb` makes one erroneous
trajectory from a correct one by one action-level edit of a kind:

- `add`: insert an action (a `distinct()`, a `limit(1)`, an `orderby`, a `where ... is not null`, a
  `groupby` on the first projected column, or one more projected column);
- `delete`: remove an action (a where/having/orderby/limit/distinct/groupby/join) or one projected item;
  a statement left empty disappears and its readers read its source;
- `substitute`: change an action's parameter (comparison operator, aggregate function, sort direction,
  row count, a literal, or a column for another column of the same table / of the trajectory).

Candidates are enumerated in a fixed order and one is drawn with the given `random.Random`, so the same
seed gives the same perturbation; every returned trajectory differs from the input and passes `validate`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from t2s_plugins.corrector.share.trajectory.render import RenderError, render_sql
from t2s_plugins.corrector.share.trajectory.steps import (
    Action,
    Agg,
    Alias,
    BinOp,
    BoolOp,
    Col,
    Cond,
    Distinct,
    Func,
    GroupBy,
    Having,
    Join,
    Limit,
    Mask,
    Neg,
    NotCond,
    Num,
    OrderBy,
    Select,
    SetOp,
    Star,
    Statement,
    Str,
    Trajectory,
    Where,
)
from t2s_plugins.corrector.share.trajectory.text import TrajectoryError, format_trajectory, parse_trajectory, validate

from t2s.db.types import DatabaseSchema

__all__ = ["PERTURB_KINDS", "Perturbation", "fill_masks", "mask_answers_reply", "mask_schema", "perturb", "perturbations",
           "trajectory_reply"]

PERTURB_KINDS = ("add", "delete", "substitute")

# --------------------------------------------------------------------------------------------------
# expression mapping in text order
# --------------------------------------------------------------------------------------------------

Fn = Callable[[Any], Any]  # node -> replacement, or None to keep it and recurse


def _map(e: Any, fn: Fn) -> Any:
    r = fn(e)
    if r is not None:
        return r
    if isinstance(e, tuple):
        return tuple(_map(x, fn) for x in e)
    if isinstance(e, Func):
        return dataclasses.replace(e, args=tuple(_map(a, fn) for a in e.args))
    if isinstance(e, BinOp):
        left = _map(e.left, fn)
        return dataclasses.replace(e, left=left, right=_map(e.right, fn))
    if isinstance(e, Neg):
        return Neg(_map(e.operand, fn))
    if isinstance(e, Alias):
        return dataclasses.replace(e, expr=_map(e.expr, fn))
    if isinstance(e, Cond):
        el = None if e.element is None else _map(e.element, fn)
        flt = None if e.filter is None else _map(e.filter, fn)
        return Cond(el, e.op, flt)
    if isinstance(e, BoolOp):
        return BoolOp(e.op, tuple(_map(i, fn) for i in e.items))
    if isinstance(e, NotCond):
        return NotCond(_map(e.item, fn))
    return e


def _map_action(a: Action, fn: Fn) -> Action:
    if isinstance(a, (Where, Having)):
        return dataclasses.replace(a, cond=_map(a.cond, fn))
    if isinstance(a, GroupBy):
        return GroupBy(_map(a.keys, fn))
    if isinstance(a, OrderBy):
        return OrderBy(_map(a.keys, fn), a.asc)
    if isinstance(a, (Select, Agg)):
        return type(a)(_map(a.items, fn))
    if isinstance(a, Join):
        if a.table is not None:
            t = fn(("table", a.table))
            return Join(table=t if t is not None else a.table)
        return Join(left=_map(a.left, fn), right=_map(a.right, fn))
    return a


def _map_traj(t: Trajectory, fn: Fn) -> Trajectory:
    return Trajectory(tuple(dataclasses.replace(s, actions=tuple(_map_action(a, fn) for a in s.actions))
                            for s in t.statements))


# --------------------------------------------------------------------------------------------------
# masking
# --------------------------------------------------------------------------------------------------


def _results(t: Trajectory) -> set[str]:
    return {s.target for s in t.statements}


def mask_schema(traj: Trajectory) -> tuple[str, list[str]]:
    """SHARE's SAM input: the trajectory text with every schema reference replaced by `[MASK]`, and the
    answers in text order (`"table.column"` for a column, `"table"` for a `join(table)`).

    Columns of a derived table (`tmp_res1.cnt`) are not schema references and stay. The masked text parses
    (`parse_trajectory` accepts `[MASK]`), and `fill_masks(text, answers)` gives back `traj`.
    """
    answers: list[str] = []
    results = _results(traj)

    def fn(e: Any) -> Any:
        if isinstance(e, Col) and e.table not in results:
            answers.append(f"{_name(e.table)}.{_name(e.column)}")
            return Mask()
        if isinstance(e, tuple) and len(e) == 2 and e[0] == "table":
            if isinstance(e[1], str):
                answers.append(_name(e[1]))
                return Mask()
            return e[1]
        return None

    masked = _map_traj(traj, fn)
    return format_trajectory(masked), answers


def trajectory_reply(traj: Trajectory) -> str:
    """The reply SHARE's prompts ask BAM and LOM for: the trajectory in a ``` code block (what the `share` corrector
    parses back)."""
    return f"```\n{format_trajectory(traj)}\n```"


def mask_answers_reply(answers: list[str]) -> str:
    """The reply SHARE's SAM prompt asks for: one reference per line, numbered, in a ``` code block."""
    return "```\n" + "\n".join(f"{k}. {a}" for k, a in enumerate(answers, start=1)) + "\n```"


def _name(s: str) -> str:
    from t2s_plugins.corrector.share.trajectory.text import _ident

    return _ident(s)


def fill_masks(masked: str | Trajectory, answers: list[str]) -> Trajectory:
    """Put `answers` (`"table.column"` or `"table"`, backticks allowed) into the `[MASK]`s in text order.

    Raises `TrajectoryError` when the counts differ or an answer is not a reference of the right shape
    (a column where a column was masked, a table in `join([MASK])`).
    """
    traj = parse_trajectory(masked) if isinstance(masked, str) else masked
    parsed: list[Any] = []
    for k, ans in enumerate(answers):
        probe = parse_trajectory(f"res = df.select({ans})") if "." in ans else None
        if probe is not None:
            item = probe.statements[0].actions[0].items[0]  # type: ignore[union-attr]
            if not isinstance(item, Col):
                raise TrajectoryError(f"answer {k + 1} ({ans!r}) is not a table.column reference")
            parsed.append(item)
        else:
            parsed.append(parse_trajectory(f"res = df.join({ans}).select({ans}.x)").statements[0].actions[0].table)  # type: ignore[union-attr]
    it = iter(parsed)
    count = 0

    def fn(e: Any) -> Any:
        nonlocal count
        is_table = isinstance(e, tuple) and len(e) == 2 and e[0] == "table"
        if isinstance(e, Mask) or (is_table and isinstance(e[1], Mask)):
            count += 1
            try:
                v = next(it)
            except StopIteration:
                raise TrajectoryError(f"more [MASK]s than the {len(answers)} answers given") from None
            if is_table != isinstance(v, str):
                raise TrajectoryError(f"mask {count}: expected a {'table' if is_table else 'table.column'}, got {answers[count - 1]!r}")
            return v
        return None

    out = _map_traj(traj, fn)
    if count != len(answers):
        raise TrajectoryError(f"{len(answers)} answers for {count} [MASK]s")
    validate(out)
    return out


# --------------------------------------------------------------------------------------------------
# perturbation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Perturbation:
    """One erroneous trajectory made from a correct one: its `kind` (add/delete/substitute) and a short
    description of the edit (e.g. "substitute op '>' -> '<'")."""

    trajectory: Trajectory
    kind: str
    detail: str


_OP_SWAP = {"=": "!=", "!=": "=", ">": "<", "<": ">", ">=": "<=", "<=": ">=", "like": "=", "not like": "like",
            "in": "not in", "not in": "in", "between": "not between", "not between": "between",
            "is null": "is not null", "is not null": "is null", "exists": "not exists", "not exists": "exists"}
_OP_SHIFT = {">": ">=", ">=": ">", "<": "<=", "<=": "<"}
_AGG_SWAP = {"max": "min", "min": "max", "sum": "avg", "avg": "sum", "count": "count"}


def _replace_stmt(t: Trajectory, i: int, actions: tuple[Action, ...]) -> Trajectory:
    stmts = list(t.statements)
    if actions:
        stmts[i] = dataclasses.replace(stmts[i], actions=actions)
        return Trajectory(tuple(stmts))
    gone = stmts.pop(i)
    if gone.target == "res":
        return t
    return Trajectory(tuple(dataclasses.replace(s, source=gone.source if s.source == gone.target else s.source)
                            for s in stmts))


def _proj_index(s: Statement) -> int | None:
    return next((k for k, a in enumerate(s.actions) if isinstance(a, (Select, Agg))), None)


def _columns(t: Trajectory) -> list[Col]:
    from t2s_plugins.corrector.share.trajectory.steps import action_nodes, walk_expr

    results = _results(t)
    out: list[Col] = []
    for s in t.statements:
        for a in s.actions:
            for root in action_nodes(a):
                for n in walk_expr(root):
                    if isinstance(n, Col) and n.table not in results and n not in out:
                        out.append(n)
    return out


def _deletions(t: Trajectory) -> list[tuple[Trajectory, str]]:
    out = []
    for i, s in enumerate(t.statements):
        for k, a in enumerate(s.actions):
            if isinstance(a, (Where, Having, OrderBy, Limit, Distinct, GroupBy, Join)):
                if isinstance(a, GroupBy) and any(isinstance(x, Having) for x in s.actions):
                    continue
                out.append((_replace_stmt(t, i, s.actions[:k] + s.actions[k + 1:]), f"delete {_short(a)}"))
            elif isinstance(a, (Select, Agg)) and len(a.items) > 1:
                for j in range(len(a.items)):
                    items = a.items[:j] + a.items[j + 1:]
                    out.append((_replace_stmt(t, i, s.actions[:k] + (type(a)(items),) + s.actions[k + 1:]),
                                f"delete projected item {j + 1}"))
    return out


def _additions(t: Trajectory, schema: DatabaseSchema | None) -> list[tuple[Trajectory, str]]:
    out = []
    cols = _columns(t)
    for i, s in enumerate(t.statements):
        p = _proj_index(s)
        if p is None:
            continue
        proj = s.actions[p]
        assert isinstance(proj, (Select, Agg))
        acts = s.actions

        def has(cls: type, acts: tuple[Action, ...] = acts) -> bool:
            return any(isinstance(a, cls) for a in acts)

        if not has(Distinct):
            out.append((_replace_stmt(t, i, acts[:p + 1] + (Distinct(),) + acts[p + 1:]), "add distinct()"))
        if not has(Limit):
            out.append((_replace_stmt(t, i, acts + (Limit(1),)), "add limit(1)"))
        first = next((x for x in proj.items if isinstance(x, Col)), None)
        if first is not None and not has(OrderBy):
            out.append((_replace_stmt(t, i, acts[:p] + (OrderBy((first,), (False,)),) + acts[p:]),
                        "add orderby(desc)"))
        if first is not None and not has(GroupBy):
            out.append((_replace_stmt(t, i, acts[:p] + (GroupBy((first,)),) + acts[p:]), "add groupby"))
        extra = [c for c in cols if c not in proj.items]
        if schema is not None:
            for c in list(cols):
                tab = schema.table(c.table)
                if tab is not None:
                    extra += [Col(tab.name, x.name) for x in tab.columns if Col(tab.name, x.name) not in proj.items
                              and Col(tab.name, x.name) not in extra]
        for c in extra[:3]:
            out.append((_replace_stmt(t, i, acts[:p] + (type(proj)(proj.items + (c,)),) + acts[p + 1:]),
                        f"add projected column {c.table}.{c.column}"))
        for c in extra[:2]:
            out.append((_replace_stmt(t, i, acts[:p] + (Where(Cond(c, "is not null", None)),) + acts[p:]),
                        f"add where {c.table}.{c.column} is not null"))
    return out


def _substitutions(t: Trajectory, schema: DatabaseSchema | None) -> list[tuple[Trajectory, str]]:
    out: list[tuple[Trajectory, str]] = []
    # action parameters
    for i, s in enumerate(t.statements):
        for k, a in enumerate(s.actions):
            new: list[tuple[Action, str]] = []
            if isinstance(a, OrderBy):
                new.append((OrderBy(a.keys, tuple(not x for x in a.asc)), "substitute sort direction"))
            elif isinstance(a, Limit):
                new.append((Limit(a.n + 1, a.offset), f"substitute limit {a.n} -> {a.n + 1}"))
            elif isinstance(a, Join) and isinstance(a.table, str) and schema is not None:
                for tab in [x for x in schema.tables if x.name.lower() != a.table.lower()][:3]:
                    new.append((Join(table=tab.name), f"substitute join({a.table}) -> join({tab.name})"))
            elif isinstance(a, SetOp):
                other = {"union": "intersect", "union_all": "union", "intersect": "union", "except": "intersect"}[a.kind]
                new.append((SetOp(other, a.other), f"substitute {a.kind} -> {other}"))
            for b, d in new:
                out.append((_replace_stmt(t, i, s.actions[:k] + (b,) + s.actions[k + 1:]), d))
    # expression nodes, in text order
    nodes: list[Any] = []

    def collect(e: Any) -> Any:
        nodes.append(e)
        return None

    _map_traj(t, collect)
    cols = _columns(t)
    results = _results(t)
    for idx, node in enumerate(nodes):
        reps: list[tuple[Any, str]] = []
        if isinstance(node, Cond):
            if node.op in _OP_SWAP:
                o = _OP_SWAP[node.op]
                flt = node.filter
                if o in ("between", "not between", "in", "not in") and not isinstance(flt, tuple) and o not in (
                        "in", "not in"):
                    continue
                if node.op == "like" and isinstance(flt, Str):
                    flt = Str(flt.value.replace("%", ""))
                reps.append((Cond(node.element, o, flt), f"substitute op '{node.op}' -> '{o}'"))
            if node.op in _OP_SHIFT:
                reps.append((Cond(node.element, _OP_SHIFT[node.op], node.filter),
                             f"substitute op '{node.op}' -> '{_OP_SHIFT[node.op]}'"))
        elif isinstance(node, Func) and node.name in _AGG_SWAP:
            if node.name == "count":
                if node.args and not isinstance(node.args[0], Star):
                    reps.append((Func("count", node.args, not node.distinct),
                                 f"substitute count({'distinct ' if node.distinct else ''}x) -> "
                                 f"count({'' if node.distinct else 'distinct '}x)"))
            else:
                o = _AGG_SWAP[node.name]
                reps.append((Func(o, node.args, node.distinct), f"substitute {node.name} -> {o}"))
        elif isinstance(node, Col) and node.table not in results:
            alts = [c for c in cols if c != node]
            if schema is not None and (tab := schema.table(node.table)) is not None:
                alts = [Col(tab.name, x.name) for x in tab.columns if x.name.lower() != node.column.lower()] + alts
            for c in alts[:3]:
                reps.append((c, f"substitute column {node.table}.{node.column} -> {c.table}.{c.column}"))
        elif isinstance(node, Num) and node.text.lstrip("-").isdigit():
            reps.append((Num(str(int(node.text) + 1)), f"substitute value {node.text} -> {int(node.text) + 1}"))
        elif isinstance(node, Str) and node.value:
            v = node.value.lower() if node.value != node.value.lower() else node.value.upper()
            if v != node.value:
                reps.append((Str(v), f"substitute value '{node.value}' -> '{v}'"))
        for rep, d in reps:
            counter = iter(range(len(nodes) + 1))

            def fn(e: Any, _k: int = idx, _r: Any = rep, _c: Any = counter) -> Any:
                return _r if next(_c) == _k else None

            out.append((_map_traj(t, fn), d))
    return out


def _short(a: Action) -> str:
    from t2s_plugins.corrector.share.trajectory.text import format_action

    s = format_action(a)
    return s if len(s) <= 60 else s[:57] + "..."


def perturbations(traj: Trajectory, kind: str, *, schema: DatabaseSchema | None = None) -> list[Perturbation]:
    """Every single-edit perturbation of `kind` (add/delete/substitute), in a fixed order, each different
    from `traj` and structurally valid. With `schema`, column edits may use any column of the tables the
    trajectory reads; without it, only columns the trajectory already names."""
    if kind not in PERTURB_KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r}; choose one of {', '.join(PERTURB_KINDS)}")
    gen = {"add": lambda: _additions(traj, schema), "delete": lambda: _deletions(traj),
           "substitute": lambda: _substitutions(traj, schema)}[kind]
    out: list[Perturbation] = []
    seen = {traj}
    for cand, detail in gen():
        if cand in seen:
            continue
        try:
            validate(cand)
            if schema is not None:
                render_sql(cand, schema)
        except (TrajectoryError, RenderError):
            continue
        seen.add(cand)
        out.append(Perturbation(cand, kind, detail))
    return out


def perturb(traj: Trajectory, kind: str, rng: random.Random, *, schema: DatabaseSchema | None = None
            ) -> Perturbation | None:
    """One perturbation of `kind` drawn with `rng` from `perturbations(traj, kind, schema=schema)`, or None
    when the kind has no candidate (e.g. `delete` on `res = df.select(t.a)`). Deterministic: the same
    trajectory, kind, schema and rng state give the same result; `rng` advances by one draw."""
    cands = perturbations(traj, kind, schema=schema)
    if not cands:
        return None
    return cands[rng.randrange(len(cands))]

