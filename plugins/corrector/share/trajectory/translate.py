"""SQL -> trajectory: SHARE's BAM as a deterministic translator over the sqlglot AST (SQLite dialect).

Every column is qualified with its table from the `DatabaseSchema` (aliases resolved, unqualified names
looked up in the scope's FROM tables in order; a double-quoted name that is no column is the string
literal SQLite would take it for). `join` actions are written only when `plan_from` on the referenced
tables would not give back the query's FROM clause (same tables, same join equalities), so most
trajectories carry no join, as in SHARE.

Not translated (raise `Unsupported`, whose `construct` names the case): outer joins, USING/NATURAL joins,
join conditions other than column equalities, a table joined to itself, correlated subqueries, a derived
table joined with other tables, `T.*`, CASE, and SQL functions outside `FUNCTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from t2s_plugins.corrector.share.trajectory.render import plan_from, referenced_tables
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
    Expr,
    Func,
    GroupBy,
    Having,
    Join,
    Limit,
    Neg,
    NotCond,
    Null,
    Num,
    OrderBy,
    Select,
    SetOp,
    Star,
    Statement,
    Str,
    Trajectory,
    Var,
    Where,
)

from t2s.db.types import DatabaseSchema

__all__ = ["FUNCTIONS", "TranslationError", "Unsupported", "sql_to_trajectory"]


class TranslationError(ValueError):
    """SQL that cannot be translated: it does not parse, or names a table/column the schema lacks."""


class Unsupported(TranslationError):
    """SQL using a construct the trajectory language does not express; `construct` is a short stable label
    (e.g. "outer join", "correlated subquery") for counting failures."""

    def __init__(self, construct: str, detail: str = "") -> None:
        super().__init__(f"unsupported construct: {construct}" + (f" ({detail})" if detail else ""))
        self.construct = construct


_BIN = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%", exp.DPipe: "||"}
_CMP = {exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
_AGGS = {exp.Count: "count", exp.Max: "max", exp.Min: "min", exp.Sum: "sum", exp.Avg: "avg"}
#: scalar SQL functions passed through by name (sqlglot class -> trajectory name)
FUNCTIONS = {exp.Lower: "lower", exp.Upper: "upper", exp.Abs: "abs", exp.Length: "length", exp.Round: "round"}


@dataclass
class _Scope:
    aliases: dict[str, tuple[str, str]]  # lower alias/name -> ("table", schema name) | ("derived", var)
    order: list[tuple[str, str]]  # FROM sources in order
    outputs: dict[str, list[str]] = field(default_factory=dict)  # derived var -> output column names
    outer: _Scope | None = None
    select_aliases: dict[str, exp.Expression] = field(default_factory=dict)


class _Translator:
    def __init__(self, schema: DatabaseSchema, lenient: bool = False) -> None:
        self.schema = schema
        self.lenient = lenient
        self.stmts: list[Statement] = []
        self.n_df = 0
        self.n_tmp = 0
        self.results: set[str] = set()

    # ---------------------------------------------------------------------------------------------
    def query(self, node: exp.Expression, outer: _Scope | None, target: str | None = None,
              keep_alias: bool = False) -> tuple[str, list[str]]:
        """Translate a (sub)query; returns its result variable and output column names."""
        while isinstance(node, (exp.Subquery, exp.Paren)):
            node = node.this
        if isinstance(node, exp.SetOperation):
            left, cols = self.query(node.left, outer)
            right, _ = self.query(node.right, outer)
            if isinstance(node, exp.Union):
                kind = "union" if node.args.get("distinct", True) else "union_all"
            elif isinstance(node, exp.Intersect):
                kind = "intersect"
            else:
                kind = "except"
            actions: list[Action] = [SetOp(kind, right)]
            if node.args.get("order") is not None:
                actions.append(self.order(node.args["order"], None))
            if node.args.get("limit") is not None or node.args.get("offset") is not None:
                actions.append(self.limit(node))
            tgt = target or self.new_tmp()
            self.emit(tgt, left, actions)
            return tgt, cols
        if isinstance(node, exp.Select):
            return self.select(node, outer, target, keep_alias)
        raise Unsupported(type(node).__name__.lower(), node.sql(dialect="sqlite")[:60])

    def new_tmp(self) -> str:
        self.n_tmp += 1
        return f"tmp_res{self.n_tmp}"

    def new_df(self) -> str:
        self.n_df += 1
        return f"df{self.n_df}"

    def emit(self, target: str, source: str, actions: list[Action]) -> None:
        self.stmts.append(Statement(target, source, tuple(actions)))
        if any(isinstance(a, (Select, Agg, SetOp)) for a in actions):
            self.results.add(target)

    # ---------------------------------------------------------------------------------------------
    def select(self, sel: exp.Select, outer: _Scope | None, target: str | None, keep_alias: bool
               ) -> tuple[str, list[str]]:
        scope = _Scope(aliases={}, order=[], outer=outer)
        sources: list[exp.Expression] = []
        frm = sel.args.get("from_") or sel.args.get("from")
        if frm is None:
            raise Unsupported("select without from")
        sources.append(frm.this)
        edges: list[tuple[Col, Col]] = []
        on_nodes: list[exp.Expression] = []
        for j in sel.args.get("joins") or []:
            side, kind = (j.args.get("side") or "").upper(), (j.args.get("kind") or "").upper()
            if side in ("LEFT", "RIGHT", "FULL") or kind in ("OUTER", "NATURAL"):
                raise Unsupported("outer join", j.sql(dialect="sqlite")[:60])
            if j.args.get("using"):
                raise Unsupported("join using")
            sources.append(j.this)
            if j.args.get("on") is not None:
                on_nodes.append(j.args["on"])
        derived: str | None = None
        for src in sources:
            alias = src.alias
            if isinstance(src, exp.Table):
                t = self.schema.table(src.name)
                if t is None:
                    raise TranslationError(f"unknown table {src.name!r} in database {self.schema.db_id!r}")
                if any(kind == "table" and v == t.name for kind, v in scope.order):
                    raise Unsupported("self join", t.name)
                entry = ("table", t.name)
                scope.aliases[t.name.lower()] = entry
            elif isinstance(src, exp.Subquery):
                var, cols = self.query(src.this, outer, keep_alias=True)
                entry = ("derived", var)
                scope.outputs[var] = cols
                derived = var
            else:
                raise Unsupported("from " + type(src).__name__.lower())
            if alias:
                scope.aliases[alias.lower()] = entry
            scope.order.append(entry)
        if derived is not None and len(scope.order) > 1:
            raise Unsupported("derived table joined with tables")
        for on in on_nodes:
            for c in _conjuncts(on):
                if not (isinstance(c, exp.EQ) and isinstance(c.this, exp.Column) and isinstance(c.expression, exp.Column)):
                    raise Unsupported("non-equi join condition", c.sql(dialect="sqlite")[:60])
                a, b = self.col(c.this, scope), self.col(c.expression, scope)
                if not (isinstance(a, Col) and isinstance(b, Col)):
                    raise Unsupported("non-equi join condition", c.sql(dialect="sqlite")[:60])
                edges.append((a, b))

        for item in sel.expressions:
            if isinstance(item, exp.Alias):
                scope.select_aliases[item.alias.lower()] = item.this

        groups: list[list[Action]] = []
        if sel.args.get("where") is not None:
            for c in _conjuncts(sel.args["where"].this):
                groups.append([Where(self.cond(c, scope))])
        grp: list[Action] = []
        if sel.args.get("group") is not None:
            grp.append(GroupBy(tuple(self.expr(e, scope, alias_ok=True) for e in sel.args["group"].expressions)))
        if sel.args.get("having") is not None:
            for c in _conjuncts(sel.args["having"].this):
                grp.append(Having(self.cond(c, scope, alias_ok=True)))
        if grp:
            groups.append(grp)
        ol: list[Action] = []
        if sel.args.get("order") is not None:
            ol.append(self.order(sel.args["order"], scope))
        if sel.args.get("limit") is not None or sel.args.get("offset") is not None:
            ol.append(self.limit(sel))
        if ol:
            groups.append(ol)
        items: list[Expr] = []
        names: list[str] = []
        for item in sel.expressions:
            if isinstance(item, exp.Alias):
                e = self.expr(item.this, scope)
                items.append(Alias(e, item.alias) if keep_alias else e)
                names.append(item.alias)
            else:
                if isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                    raise Unsupported("table.*")
                items.append(self.expr(item, scope))
                names.append(item.alias_or_name)
        has_group = sel.args.get("group") is not None
        proj: list[Action] = [Agg(tuple(items)) if has_group else Select(tuple(items))]
        if sel.args.get("distinct") is not None:
            if sel.args["distinct"].args.get("on"):
                raise Unsupported("distinct on")
            proj.append(Distinct())
        if grp and groups and groups[-1] is grp:
            grp.extend(proj)
        else:
            groups.append(proj)

        # explicit joins when foreign keys would not rebuild this FROM
        if derived is None:
            all_actions = [a for g in groups for a in g]
            refs = referenced_tables(all_actions, self.results)
            gold_tables = [v for _, v in scope.order]
            try:
                plan = plan_from(refs, [], self.schema)
                same = ({t.lower() for t in plan.tables} == {t.lower() for t in gold_tables}
                        and plan.edge_set() == _edge_set(edges))
            except ValueError:
                same = False
            if not same:
                groups[0] = self.explicit_joins(refs, gold_tables, edges) + groups[0]

        source = derived or "df"
        for g in groups[:-1]:
            var = self.new_df()
            self.emit(var, source, g)
            source = var
        tgt = target or self.new_tmp()
        self.emit(tgt, source, groups[-1])
        return tgt, names

    def explicit_joins(self, refs: list[str], tables: list[str], edges: list[tuple[Col, Col]]) -> list[Action]:
        """The fewest `join` actions that make `plan_from` rebuild this FROM: the unreferenced tables alone
        when foreign keys then connect them as the query does, else every equality and lone table."""
        want_tables = {t.lower() for t in tables}
        want_edges = _edge_set(edges)
        referenced = {r.lower() for r in refs}
        lone: list[Action] = [Join(table=t) for t in tables if t.lower() not in referenced]
        if lone:
            try:
                plan = plan_from(refs, lone, self.schema)  # type: ignore[arg-type]
                if {t.lower() for t in plan.tables} == want_tables and plan.edge_set() == want_edges:
                    return lone
            except ValueError:
                pass
        out: list[Action] = []
        covered: set[str] = set()
        for a, b in edges:
            out.append(Join(left=a, right=b))
            covered |= {a.table.lower(), b.table.lower()}
        return [Join(table=t) for t in tables if t.lower() not in covered] + out

    # ---------------------------------------------------------------------------------------------
    def order(self, order: exp.Order, scope: _Scope | None) -> OrderBy:
        keys: list[Expr] = []
        asc: list[bool] = []
        for o in order.expressions:
            node = o.this if isinstance(o, exp.Ordered) else o
            if scope is None:  # ORDER BY of a set operation: output column names
                if not isinstance(node, exp.Column):
                    raise Unsupported("set operation order by expression")
                keys.append(Col(node.table or "res", node.name))
                raise Unsupported("set operation order by")
            keys.append(self.expr(node, scope, alias_first=True))
            asc.append(not (isinstance(o, exp.Ordered) and o.args.get("desc")))
        return OrderBy(tuple(keys), tuple(asc))

    def limit(self, node: exp.Expression) -> Limit:
        lim = node.args.get("limit")
        off = node.args.get("offset")

        def num(x: exp.Expression | None) -> int | None:
            if x is None:
                return None
            v = x.expression if isinstance(x, (exp.Limit, exp.Offset)) else x
            if not (isinstance(v, exp.Literal) and not v.is_string and v.this.isdigit()):
                raise Unsupported("non-literal limit")
            return int(v.this)

        n = num(lim)
        if n is None:
            raise Unsupported("offset without limit")
        return Limit(n, num(off))

    # ---------------------------------------------------------------------------------------------
    def col(self, node: exp.Column, scope: _Scope, *, alias_ok: bool = False, alias_first: bool = False) -> Expr:
        name = node.name
        qual = node.table
        if alias_first and not qual and name.lower() in scope.select_aliases:
            return self.expr(scope.select_aliases[name.lower()], scope)
        if qual:
            entry = scope.aliases.get(qual.lower())
            if entry is None:
                o = scope.outer
                while o is not None:
                    if qual.lower() in o.aliases:
                        raise Unsupported("correlated subquery", node.sql())
                    o = o.outer
                raise TranslationError(f"unknown table or alias {qual!r} in {node.sql()!r}")
            hit = self._lookup(entry, name, scope)
            if hit is None:
                if self.lenient and entry[0] == "table":
                    return Col(entry[1], name)
                raise TranslationError(f"unknown column {node.sql()!r} in database {self.schema.db_id!r}")
            return hit
        for entry in scope.order:
            hit = self._lookup(entry, name, scope)
            if hit is not None:
                return hit
        if (alias_ok or alias_first) and name.lower() in scope.select_aliases:
            return self.expr(scope.select_aliases[name.lower()], scope)
        quoted = isinstance(node.this, exp.Identifier) and node.this.args.get("quoted")
        o = scope.outer
        while o is not None:
            if any(self._lookup(e, name, o) is not None for e in o.order):
                if quoted:
                    break
                raise Unsupported("correlated subquery", node.sql())
            o = o.outer
        if quoted:
            return Str(name)
        if self.lenient and scope.order and scope.order[0][0] == "table":
            return Col(scope.order[0][1], name)
        raise TranslationError(f"unknown column {name!r} in database {self.schema.db_id!r}")

    def _lookup(self, entry: tuple[str, str], name: str, scope: _Scope) -> Col | None:
        kind, v = entry
        if kind == "table":
            t = self.schema.table(v)
            assert t is not None
            c = t.column(name)
            return Col(t.name, c.name) if c is not None else None
        outs = scope.outputs.get(v, [])
        for o in outs:
            if o.lower() == name.lower():
                return Col(v, o)
        return None

    # ---------------------------------------------------------------------------------------------
    def expr(self, node: exp.Expression, scope: _Scope, *, alias_ok: bool = False, alias_first: bool = False) -> Expr:
        if isinstance(node, exp.Paren):
            return self.expr(node.this, scope, alias_ok=alias_ok, alias_first=alias_first)
        if isinstance(node, exp.Column):
            if isinstance(node.this, exp.Star):
                raise Unsupported("table.*")
            return self.col(node, scope, alias_ok=alias_ok, alias_first=alias_first)
        if isinstance(node, exp.Star):
            return Star()
        if isinstance(node, exp.Literal):
            return Str(node.this) if node.is_string else Num(node.this)
        if isinstance(node, exp.Null):
            return Null()
        if isinstance(node, exp.Boolean):
            return Num("1" if node.this else "0")
        if isinstance(node, exp.Neg):
            inner = node.this
            if isinstance(inner, exp.Literal) and not inner.is_string:
                return Num("-" + inner.this)
            return Neg(self.expr(inner, scope, alias_ok=alias_ok))
        for cls, op in _BIN.items():
            if type(node) is cls:
                return BinOp(op, self.expr(node.this, scope, alias_ok=alias_ok),
                             self.expr(node.expression, scope, alias_ok=alias_ok))
        for cls, name in _AGGS.items():
            if type(node) is cls:
                arg = node.this
                distinct = False
                if isinstance(arg, exp.Distinct):
                    if len(arg.expressions) != 1:
                        raise Unsupported("aggregate of several distinct values")
                    arg, distinct = arg.expressions[0], True
                if node.expressions:
                    raise Unsupported(f"{name} with several arguments")
                return Func(name, (self.expr(arg, scope, alias_ok=alias_ok),), distinct)
        for cls, name in FUNCTIONS.items():
            if type(node) is cls:
                args = [node.this] + ([node.args["decimals"]] if node.args.get("decimals") is not None else [])
                return Func(name, tuple(self.expr(a, scope) for a in args))
        if isinstance(node, exp.Anonymous):
            return Func(node.name.lower(), tuple(self.expr(a, scope) for a in node.expressions))
        if isinstance(node, exp.Subquery):
            var, _ = self.query(node.this, scope)
            return Var(var)
        if isinstance(node, (exp.Select, exp.SetOperation)):
            var, _ = self.query(node, scope)
            return Var(var)
        if isinstance(node, (exp.Predicate, exp.Connector, exp.Not)):
            raise Unsupported("condition as a value", node.sql(dialect="sqlite")[:60])
        raise Unsupported(f"expression {type(node).__name__}", node.sql(dialect="sqlite")[:60])

    def cond(self, node: exp.Expression, scope: _Scope, *, alias_ok: bool = False) -> Condition:
        e = lambda n: self.expr(n, scope, alias_ok=alias_ok)  # noqa: E731
        if isinstance(node, exp.Paren):
            return self.cond(node.this, scope, alias_ok=alias_ok)
        if isinstance(node, (exp.And, exp.Or)):
            op = "and" if isinstance(node, exp.And) else "or"
            items = [self.cond(c, scope, alias_ok=alias_ok) for c in _flatten(node, type(node))]
            return BoolOp(op, tuple(items))
        if isinstance(node, exp.Not):
            inner = node.this
            while isinstance(inner, exp.Paren):
                inner = inner.this
            c = self.cond(inner, scope, alias_ok=alias_ok)
            neg = {"in": "not in", "like": "not like", "between": "not between", "is null": "is not null",
                   "exists": "not exists"}
            if isinstance(c, Cond) and c.op in neg:
                return Cond(c.element, neg[c.op], c.filter)
            return NotCond(c)
        for cls, op in _CMP.items():
            if type(node) is cls:
                return Cond(e(node.this), op, e(node.expression))
        if isinstance(node, exp.Like):
            return Cond(e(node.this), "not like" if node.args.get("negate") else "like", e(node.expression))
        if isinstance(node, exp.In):
            if node.args.get("query") is not None:
                flt: object = Var(self.query(node.args["query"], scope)[0])
            elif node.args.get("unnest") is not None or node.args.get("field") is not None:
                raise Unsupported("in unnest")
            else:
                flt = tuple(e(x) for x in node.expressions)
            op = "not in" if node.args.get("negate") else "in"
            return Cond(e(node.this), op, flt)  # type: ignore[arg-type]
        if isinstance(node, exp.Between):
            op = "not between" if node.args.get("negate") else "between"
            return Cond(e(node.this), op, (e(node.args["low"]), e(node.args["high"])))
        if isinstance(node, exp.Is):
            if isinstance(node.expression, exp.Null):
                return Cond(e(node.this), "is null", None)
            raise Unsupported("is <value>")
        if isinstance(node, exp.Exists):
            return Cond(None, "exists", Var(self.query(node.this, scope)[0]))
        raise Unsupported(f"condition {type(node).__name__}", node.sql(dialect="sqlite")[:60])


def _flatten(node: exp.Expression, cls: type) -> list[exp.Expression]:
    if isinstance(node, cls):
        return _flatten(node.this, cls) + _flatten(node.expression, cls)
    if isinstance(node, exp.Paren) and isinstance(node.this, cls):
        return _flatten(node.this, cls)
    return [node]


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    while isinstance(node, exp.Paren) and isinstance(node.this, exp.And):
        node = node.this
    return _flatten(node, exp.And)


def _edge_set(edges: list[tuple[Col, Col]]) -> set[frozenset[tuple[str, str]]]:
    return {frozenset({(a.table.lower(), a.column.lower()), (b.table.lower(), b.column.lower())}) for a, b in edges}


def sql_to_trajectory(sql: str, schema: DatabaseSchema, *, lenient: bool = False) -> Trajectory:
    """Translate one SQLite query into its action trajectory (SHARE's BAM, deterministic).

    Raises `Unsupported` (with a `construct` label) for SQL the language does not express, and
    `TranslationError` for SQL that does not parse or names what `schema` lacks. With `lenient`, a column the
    schema lacks is kept as written (`table.wrong_name`, an unqualified one on the first FROM table) instead of
    raising, as SHARE's LLM BAM would write it: the trajectory then carries the schema error for SAM to repair.
    Unknown tables still raise (the FROM plan needs them).
    """
    try:
        trees = sqlglot.parse(sql, read="sqlite")
    except SqlglotError as e:
        raise TranslationError(f"cannot parse SQL: {str(e)[:200]}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise TranslationError(f"expected one SQL statement, got {len(trees)}")
    tr = _Translator(schema, lenient)
    tr.query(trees[0], None, target="res")
    return Trajectory(tuple(tr.stmts))
