"""Trajectory -> SQL (SQLite): the deterministic renderer, with joins inferred from foreign keys.

Each query scope (a chain of statements from `df`, or from a derived table, to its projection) becomes one
SELECT. Its FROM clause comes from `plan_from`: the explicit `join` actions when there are any, and the
tables the scope's columns reference, connected by the shortest foreign-key paths (greedy Steiner tree:
tables in order of first reference, each one joined to the tree so far by a breadth-first shortest
path over the undirected foreign-key graph; between two tables the first declared foreign key is used; a
table no path reaches is cross-joined). A scope with one table uses bare column names; several tables get
the aliases T1, T2, ... in FROM order.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from sqlglot.dialects.sqlite import SQLite
from t2s_plugins.corrector.share.trajectory.steps import (
    Action,
    Agg,
    Alias,
    BinOp,
    BoolOp,
    Col,
    Cond,
    Condition,
    Distinct,
    Func,
    GroupBy,
    Having,
    Join,
    Limit,
    Mask,
    Neg,
    NotCond,
    Null,
    Num,
    OrderBy,
    Select,
    SetOp,
    Star,
    Str,
    Trajectory,
    Var,
    Where,
    action_nodes,
    walk_expr,
)

from t2s.db.types import DatabaseSchema

__all__ = ["FromPlan", "RenderError", "Scope", "plan_from", "render_sql", "scope_of"]

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_KEYWORDS = {k.upper() for k in SQLite.Tokenizer.KEYWORDS if _PLAIN.match(k)} | {"ORDER", "GROUP", "LIMIT", "OFFSET"}
_AGG = {"count", "max", "min", "sum", "avg"}
_PREC = {"||": 3, "*": 2, "/": 2, "%": 2, "+": 1, "-": 1}
_SQL_OP = {"=": "=", "!=": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "like": "LIKE", "not like": "NOT LIKE"}


class RenderError(ValueError):
    """A trajectory that cannot become SQL on the given schema (unknown table or column, a mask left,
    a malformed scope); the message names the reference."""


def quote(name: str) -> str:
    """`name` as an SQLite identifier: bare when plain and not a keyword, else double-quoted."""
    if _PLAIN.match(name) and name.upper() not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Scope:
    """One query scope of a trajectory: its actions in chain order and its derived-table source (a
    result variable) when it reads one, or a set operation (`setop`, with `left`/`right` result names
    and trailing `actions` holding its orderby/limit)."""

    actions: list[Action] = field(default_factory=list)
    derived: str | None = None
    setop: str | None = None
    left: str | None = None
    right: str | None = None


def scope_of(traj: Trajectory, var: str) -> Scope:
    """The scope whose result is `var` (walks the statements back from `var`'s definition)."""
    defs = {s.target: s for s in traj.statements}
    if var not in defs:
        raise RenderError(f"trajectory has no variable {var!r}")
    s = defs[var]
    if s.actions and isinstance(s.actions[0], SetOp):
        return Scope(actions=list(s.actions[1:]), setop=s.actions[0].kind, left=s.source, right=s.actions[0].other)
    chain = [s]
    while chain[-1].source != "df":
        src = defs[chain[-1].source]
        if _is_result(traj, defs, src.target):
            break
        chain.append(src)
    chain.reverse()
    derived = None if chain[0].source == "df" else chain[0].source
    return Scope(actions=[a for st in chain for a in st.actions], derived=derived)


def _is_result(traj: Trajectory, defs: dict, var: str) -> bool:
    s = defs[var]
    if isinstance(s.actions[0], SetOp):
        return True
    cur = s
    while True:
        if any(isinstance(a, (Select, Agg)) for a in cur.actions):
            return True
        if cur.source == "df" or _is_result(traj, defs, cur.source):
            return False
        cur = defs[cur.source]


# --------------------------------------------------------------------------------------------------
# FROM planning
# --------------------------------------------------------------------------------------------------


@dataclass
class FromPlan:
    """Tables in FROM order (schema spelling) and, for each table after the first, the equalities
    `(earlier column, its column)` joining it to the tables before it (empty: a cross join)."""

    tables: list[str]
    on: dict[str, list[tuple[Col, Col]]]

    def edge_set(self) -> set[frozenset[tuple[str, str]]]:
        """The join equalities as unordered pairs of lower-case (table, column): for comparing plans."""
        return {frozenset({(a.table.lower(), a.column.lower()), (b.table.lower(), b.column.lower())})
                for pairs in self.on.values() for a, b in pairs}


def _table_name(schema: DatabaseSchema, name: str) -> str:
    t = schema.table(name)
    if t is None:
        raise RenderError(f"unknown table {name!r} in database {schema.db_id!r} "
                          f"(tables: {', '.join(x.name for x in schema.tables)})")
    return t.name


def _fk_graph(schema: DatabaseSchema) -> dict[str, list[tuple[str, Col, Col]]]:
    adj: dict[str, list[tuple[str, Col, Col]]] = {}
    seen: set[tuple[str, str]] = set()
    for fk in schema.foreign_keys:
        a, b = fk.table, fk.ref_table
        if a.lower() == b.lower():
            continue
        for x, y, cx, cy in ((a, b, fk.column, fk.ref_column), (b, a, fk.ref_column, fk.column)):
            if (x.lower(), y.lower()) in seen:
                continue
            seen.add((x.lower(), y.lower()))
            adj.setdefault(x.lower(), []).append((y, Col(x, cx), Col(y, cy)))
    return adj


def plan_from(referenced: list[str], joins: list[Join], schema: DatabaseSchema) -> FromPlan:
    """The FROM clause of a scope: explicit `joins` first, then each `referenced` table (in order) joined to
    the tables so far by a shortest foreign-key path. Table names resolve case-insensitively."""
    nodes: list[str] = []
    edges: list[tuple[Col, Col]] = []

    def add(t: str) -> None:
        if t.lower() not in {n.lower() for n in nodes}:
            nodes.append(t)

    for j in joins:
        if isinstance(j.table, Mask) or isinstance(j.left, Mask) or isinstance(j.right, Mask):
            raise RenderError("the trajectory still has a [MASK] in a join; fill every mask before rendering")
        if j.table is not None:
            add(_table_name(schema, j.table))
        else:
            assert j.left is not None and j.right is not None
            left = Col(_table_name(schema, j.left.table), j.left.column)
            right = Col(_table_name(schema, j.right.table), j.right.column)
            add(left.table)
            add(right.table)
            edges.append((left, right))
    adj = _fk_graph(schema)
    for name in referenced:
        t = _table_name(schema, name)
        if t.lower() in {n.lower() for n in nodes}:
            continue
        if not nodes:
            nodes.append(t)
            continue
        # multi-source BFS from the tree to t
        prev: dict[str, tuple[str, Col, Col] | None] = {n.lower(): None for n in nodes}
        queue = deque(n for n in nodes)
        found = False
        while queue and not found:
            cur = queue.popleft()
            for nxt, ca, cb in adj.get(cur.lower(), []):
                if nxt.lower() in prev:
                    continue
                prev[nxt.lower()] = (cur, ca, cb)
                if nxt.lower() == t.lower():
                    found = True
                    break
                queue.append(nxt)
        if not found:
            nodes.append(t)
            continue
        path: list[tuple[str, Col, Col]] = []
        cur_l = t.lower()
        while prev[cur_l] is not None:
            p = prev[cur_l]
            assert p is not None
            path.append(p)
            cur_l = p[0].lower()
        for _src, ca, cb in reversed(path):
            add(cb.table)
            edges.append((ca, cb))
    return _order(nodes, edges)


def _order(nodes: list[str], edges: list[tuple[Col, Col]]) -> FromPlan:
    """Order tables so that each joins to earlier ones where possible (BFS over the join edges)."""
    order: list[str] = []
    placed: set[str] = set()
    for start in nodes:
        if start.lower() in placed:
            continue
        queue = deque([start])
        placed.add(start.lower())
        while queue:
            cur = queue.popleft()
            order.append(cur)
            for a, b in edges:
                for x, y in ((a, b), (b, a)):
                    if x.table.lower() == cur.lower() and y.table.lower() not in placed:
                        placed.add(y.table.lower())
                        queue.append(next(n for n in nodes if n.lower() == y.table.lower()))
    pos = {t.lower(): i for i, t in enumerate(order)}
    on: dict[str, list[tuple[Col, Col]]] = {t: [] for t in order[1:]}
    for a, b in edges:
        if pos[a.table.lower()] > pos[b.table.lower()]:
            a, b = b, a
        if a.table.lower() == b.table.lower():
            raise RenderError(f"join {a.table}.{a.column} = {b.table}.{b.column} joins a table to itself")
        on[order[pos[b.table.lower()]]].append((a, b))
    return FromPlan(order, on)


def referenced_tables(actions: list[Action], results: set[str]) -> list[str]:
    """Tables the scope's column references name, in order of first reference (result variables excluded)."""
    out: list[str] = []
    for a in actions:
        if isinstance(a, Join):
            continue
        for root in action_nodes(a):
            for node in walk_expr(root):
                if isinstance(node, Col) and node.table not in results and node.table.lower() not in {
                        o.lower() for o in out}:
                    out.append(node.table)
    return out


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------


class _Renderer:
    def __init__(self, traj: Trajectory, schema: DatabaseSchema) -> None:
        self.traj = traj
        self.schema = schema
        self.results = {s.target for s in traj.statements} | {"df"}

    def query(self, var: str) -> tuple[str, bool]:
        """SQL of result `var`, and whether it is a compound (or has ORDER BY/LIMIT) needing a wrapper as an
        operand of a set operation."""
        sc = scope_of(self.traj, var)
        if sc.setop is not None:
            assert sc.left is not None and sc.right is not None
            left, lwrap = self.query(sc.left)
            right, rwrap = self.query(sc.right)
            if lwrap and not isinstance(self._first(sc.left), SetOp):
                left = f"SELECT * FROM ({left})"
            if rwrap:
                right = f"SELECT * FROM ({right})"
            kw = {"union": "UNION", "union_all": "UNION ALL", "intersect": "INTERSECT", "except": "EXCEPT"}[sc.setop]
            sql = f"{left} {kw} {right}"
            tail = self._order_limit(sc.actions, {}, compound=True)
            return sql + tail, True
        return self.select(sc)

    def _first(self, var: str) -> Action:
        return next(s for s in self.traj.statements if s.target == var).actions[0]

    def select(self, sc: Scope) -> tuple[str, bool]:
        acts = sc.actions
        joins = [a for a in acts if isinstance(a, Join)]
        aliases: dict[str, str] = {}
        if sc.derived is not None:
            refs = referenced_tables(acts, self.results)
            if joins or refs:
                raise RenderError(f"a query over derived table {sc.derived!r} cannot also read tables "
                                  f"({', '.join(refs) or 'join'})")
            sub, _ = self.query(sc.derived)
            from_sql = f"({sub}) AS T1"
            aliases[sc.derived.lower()] = "T1"
        else:
            plan = plan_from(referenced_tables(acts, self.results), joins, self.schema)
            if not plan.tables:
                raise RenderError("a query names no table: reference a column (table.column) or add join(table)")
            if len(plan.tables) == 1:
                aliases[plan.tables[0].lower()] = ""
                from_sql = quote(plan.tables[0])
            else:
                for i, t in enumerate(plan.tables, 1):
                    aliases[t.lower()] = f"T{i}"
                parts = [f"{quote(plan.tables[0])} AS T1"]
                for t in plan.tables[1:]:
                    conds = [f"{self.col(a, aliases)} = {self.col(b, aliases)}" for a, b in plan.on[t]]
                    parts.append(f"JOIN {quote(t)} AS {aliases[t.lower()]}" + (" ON " + " AND ".join(conds) if conds else ""))
                from_sql = " ".join(parts)
        wheres = [a.cond for a in acts if isinstance(a, Where)]
        groups = [k for a in acts if isinstance(a, GroupBy) for k in a.keys]
        havings = [a.cond for a in acts if isinstance(a, Having)]
        projs = [a for a in acts if isinstance(a, (Select, Agg))]
        if len(projs) != 1:
            raise RenderError(f"a query needs exactly one select/agg, found {len(projs)}")
        distinct = any(isinstance(a, Distinct) for a in acts)
        items = ", ".join(self.expr(e, aliases) for e in projs[0].items)
        sql = f"SELECT {'DISTINCT ' if distinct else ''}{items} FROM {from_sql}"
        if wheres:
            sql += " WHERE " + self.conj(wheres, aliases)
        if groups:
            sql += " GROUP BY " + ", ".join(self.expr(g, aliases) for g in groups)
        if havings:
            sql += " HAVING " + self.conj(havings, aliases)
        tail = self._order_limit(acts, aliases, compound=False)
        return sql + tail, bool(tail)

    def _order_limit(self, acts: list[Action], aliases: dict[str, str], *, compound: bool) -> str:
        orders = [a for a in acts if isinstance(a, OrderBy)]
        limits = [a for a in acts if isinstance(a, Limit)]
        out = ""
        if orders:
            keys = [(k, asc) for o in orders for k, asc in zip(o.keys, o.asc)]
            terms = []
            for k, asc in keys:
                if compound and isinstance(k, Col):
                    t = quote(k.column)
                else:
                    t = self.expr(k, aliases)
                terms.append(f"{t} {'ASC' if asc else 'DESC'}")
            out += " ORDER BY " + ", ".join(terms)
        if limits:
            lim = limits[-1]
            out += f" LIMIT {lim.n}" + (f" OFFSET {lim.offset}" if lim.offset is not None else "")
        return out

    def col(self, c: Col, aliases: dict[str, str]) -> str:
        key = c.table.lower()
        if key not in aliases:
            raise RenderError(f"column {c.table}.{c.column}: table {c.table!r} is not in this query")
        if c.table in self.results:
            name = c.column
        else:
            t = self.schema.table(c.table)
            assert t is not None
            col = t.column(c.column)
            if col is None:
                raise RenderError(f"unknown column {c.table}.{c.column} in database {self.schema.db_id!r} "
                                  f"(columns of {t.name}: {', '.join(x.name for x in t.columns)})")
            name = col.name
        alias = aliases[key]
        return f"{alias}.{quote(name)}" if alias else quote(name)

    def expr(self, e: object, aliases: dict[str, str]) -> str:
        if isinstance(e, Col):
            return self.col(e, aliases)
        if isinstance(e, Star):
            return "*"
        if isinstance(e, Num):
            return e.text
        if isinstance(e, Str):
            return "'" + e.value.replace("'", "''") + "'"
        if isinstance(e, Null):
            return "NULL"
        if isinstance(e, Var):
            return f"({self.query(e.name)[0]})"
        if isinstance(e, Mask):
            raise RenderError("the trajectory still has a [MASK]; fill every mask before rendering")
        if isinstance(e, Alias):
            return f"{self.expr(e.expr, aliases)} AS {quote(e.name)}"
        if isinstance(e, Func):
            name = e.name.upper() if e.name in _AGG else e.name
            args = ", ".join(self.expr(a, aliases) for a in e.args)
            return f"{name}({'DISTINCT ' if e.distinct else ''}{args})"
        if isinstance(e, BinOp):
            p = _PREC[e.op]
            left, right = self.expr(e.left, aliases), self.expr(e.right, aliases)
            if isinstance(e.left, BinOp) and _PREC[e.left.op] < p:
                left = f"({left})"
            if isinstance(e.right, BinOp) and _PREC[e.right.op] <= p:
                right = f"({right})"
            return f"{left} {e.op} {right}"
        if isinstance(e, Neg):
            return f"-({self.expr(e.operand, aliases)})"
        if isinstance(e, (Cond, BoolOp, NotCond)):
            return self.cond(e, aliases)
        raise RenderError(f"cannot render {e!r}")

    def conj(self, conds: list[Condition], aliases: dict[str, str]) -> str:
        if len(conds) == 1:
            return self.cond(conds[0], aliases)
        return " AND ".join(self._wrapped(c, aliases) for c in conds)

    def _wrapped(self, c: Condition, aliases: dict[str, str]) -> str:
        s = self.cond(c, aliases)
        return f"({s})" if isinstance(c, BoolOp) else s

    def cond(self, c: Condition, aliases: dict[str, str]) -> str:
        if isinstance(c, BoolOp):
            return f" {c.op.upper()} ".join(self._wrapped(i, aliases) for i in c.items)
        if isinstance(c, NotCond):
            return f"NOT ({self.cond(c.item, aliases)})"
        op = c.op
        if op in ("exists", "not exists"):
            return f"{op.upper()} {self.expr(c.filter, aliases)}"
        el = self.expr(c.element, aliases)
        if op in ("is null", "is not null"):
            return f"{el} {op.upper()}"
        if op in ("between", "not between"):
            assert isinstance(c.filter, tuple)
            lo, hi = (self.expr(x, aliases) for x in c.filter)
            return f"{el} {op.upper()} {lo} AND {hi}"
        if op in ("in", "not in"):
            if isinstance(c.filter, tuple):
                vals = "(" + ", ".join(self.expr(x, aliases) for x in c.filter) + ")"
            else:
                vals = self.expr(c.filter, aliases)
                if not isinstance(c.filter, Var):
                    vals = f"({vals})"
            return f"{el} {op.upper()} {vals}"
        return f"{el} {_SQL_OP[op]} {self.expr(c.filter, aliases)}"


def render_sql(traj: Trajectory, schema: DatabaseSchema) -> str:
    """The SQLite query a trajectory describes (its `res`), joins inferred from `schema`'s foreign keys.

    Raises `RenderError` for a reference the schema does not have, a `[MASK]` left, or a scope without
    exactly one projection.
    """
    for st in traj.statements:
        for a in st.actions:
            if isinstance(a, Join) and isinstance(a.table, Mask):
                raise RenderError("the trajectory still has a [MASK]; fill every mask before rendering")
            for root in action_nodes(a):
                if any(isinstance(n, Mask) for n in walk_expr(root)):
                    raise RenderError("the trajectory still has a [MASK]; fill every mask before rendering")
    return _Renderer(traj, schema).query("res")[0]
