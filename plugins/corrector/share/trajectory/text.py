"""Text form of action trajectories: a strict parser (`parse_trajectory`) and the canonical formatter
(`format_trajectory`). The grammar is in the package docstring; `parse(format(t)) == t` for every valid
trajectory and `format(parse(s)) == s` for every canonically formatted text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from t2s_plugins.corrector.share.trajectory.steps import (
    COND_OPS,
    NO_ELEMENT_OPS,
    SET_OPS,
    UNARY_OPS,
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
    Mask,
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

__all__ = ["MASK_TOKEN", "TrajectoryError", "format_action", "format_expr", "format_trajectory", "parse_trajectory",
           "validate"]

MASK_TOKEN = "[MASK]"
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: words that cannot be a bare name (table in `join(t)`, variable); written in backticks when they are one
_RESERVED = {"null", "true", "false", "distinct", "as", "df", "cond", "and", "or", "not"}
_PREC = {"||": 3, "*": 2, "/": 2, "%": 2, "+": 1, "-": 1}
_COND_FUNCS = ("cond", "and", "or", "not")


class TrajectoryError(ValueError):
    """A trajectory text or structure that is not valid; the message names the line (or statement) and what
    is wrong."""


# --------------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------------


def _ident(name: str, *, bare: bool = False) -> str:
    if _PLAIN.match(name) and not (bare and name.lower() in _RESERVED):
        return name
    return "`" + name.replace("`", "``") + "`"


def format_expr(e: Any) -> str:
    """The text of one expression, condition, or list of them (`[a, b]`)."""
    if isinstance(e, tuple):
        return "[" + ", ".join(format_expr(x) for x in e) + "]"
    if isinstance(e, bool):
        return "True" if e else "False"
    if isinstance(e, Col):
        return f"{_ident(e.table)}.{_ident(e.column)}"
    if isinstance(e, Star):
        return "*"
    if isinstance(e, Num):
        return e.text
    if isinstance(e, Str):
        return "'" + e.value.replace("'", "''") + "'"
    if isinstance(e, Null):
        return "null"
    if isinstance(e, Mask):
        return MASK_TOKEN
    if isinstance(e, Var):
        return _ident(e.name, bare=True)
    if isinstance(e, Func):
        args = ", ".join(format_expr(a) for a in e.args)
        return f"{_ident(e.name, bare=True)}({'distinct ' if e.distinct else ''}{args})"
    if isinstance(e, BinOp):
        p = _PREC[e.op]
        left, right = format_expr(e.left), format_expr(e.right)
        if isinstance(e.left, BinOp) and _PREC[e.left.op] < p:
            left = f"({left})"
        if isinstance(e.right, BinOp) and _PREC[e.right.op] <= p:
            right = f"({right})"
        return f"{left} {e.op} {right}"
    if isinstance(e, Neg):
        inner = format_expr(e.operand)
        return f"-({inner})" if isinstance(e.operand, (BinOp, Neg, Num)) else f"-{inner}"
    if isinstance(e, Alias):
        return f"{format_expr(e.expr)} as {_ident(e.name, bare=True)}"
    if isinstance(e, Cond):
        return f"cond({_cond_args(e)})"
    if isinstance(e, BoolOp):
        return f"{e.op}(" + ", ".join(format_expr(i) for i in e.items) + ")"
    if isinstance(e, NotCond):
        return f"not({format_expr(e.item)})"
    raise TypeError(f"cannot format {e!r} as trajectory text")


def _cond_args(c: Cond) -> str:
    parts = []
    if c.element is not None:
        parts.append(f"element = {format_expr(c.element)}")
    if c.op != "=":
        parts.append(f"op = {format_expr(Str(c.op))}")
    if c.filter is not None:
        parts.append(f"filter = {format_expr(c.filter)}")
    return ", ".join(parts)


def _cond_text(c: Condition) -> str:
    return _cond_args(c) if isinstance(c, Cond) else format_expr(c)


def format_action(a: Action) -> str:
    """The text of one action, e.g. `where(element = singer.Country, filter = 'France')`."""
    if isinstance(a, Join):
        if isinstance(a.table, Mask):
            return f"join({MASK_TOKEN})"
        if a.table is not None:
            return f"join({_ident(a.table, bare=True)})"
        return f"join({format_expr(a.left)}, {format_expr(a.right)})"
    if isinstance(a, Where):
        return f"where({_cond_text(a.cond)})"
    if isinstance(a, Having):
        return f"having({_cond_text(a.cond)})"
    if isinstance(a, GroupBy):
        return "groupby(" + ", ".join(format_expr(k) for k in a.keys) + ")"
    if isinstance(a, OrderBy):
        if len(a.keys) == 1:
            return f"orderby(by = {format_expr(a.keys[0])}, asc = {format_expr(a.asc[0])})"
        return f"orderby(by = {format_expr(a.keys)}, asc = {format_expr(a.asc)})"
    if isinstance(a, Limit):
        return f"limit({a.n})" if a.offset is None else f"limit({a.n}, offset = {a.offset})"
    if isinstance(a, Select):
        return "select(" + ", ".join(format_expr(i) for i in a.items) + ")"
    if isinstance(a, Agg):
        return "agg(" + ", ".join(format_expr(i) for i in a.items) + ")"
    if isinstance(a, Distinct):
        return "distinct()"
    if isinstance(a, SetOp):
        return f"{a.kind}({_ident(a.other, bare=True)})"
    raise TypeError(f"cannot format {a!r} as a trajectory action")


def format_statement(s: Statement) -> str:
    """One line: `target = source.action(...).action(...)`."""
    source = "df" if s.source == "df" else _ident(s.source, bare=True)
    return f"{_ident(s.target, bare=True)} = {source}." + ".".join(format_action(a) for a in s.actions)


def format_trajectory(t: Trajectory) -> str:
    """The canonical text of a trajectory: one statement per line, no trailing newline."""
    return "\n".join(format_statement(s) for s in t.statements)


# --------------------------------------------------------------------------------------------------
# lexing
# --------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r]+)
      |(?P<comment>\#[^\n]*)
      |(?P<nl>\n)
      |(?P<mask>\[MASK\])
      |(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
      |(?P<str>'(?:[^']|'')*')
      |(?P<bq>`(?:[^`]|``)*`)
      |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<op>\|\||[()\[\],.=+\-*/%])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class _Tok:
    kind: str  # num str name op mask nl eof
    text: str
    line: int
    quoted: bool = False


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            snippet = text[pos:pos + 20].split("\n")[0]
            raise TrajectoryError(f"line {line}: unexpected character {text[pos]!r} at {snippet!r}")
        kind = m.lastgroup
        s = m.group()
        if kind == "nl":
            toks.append(_Tok("nl", s, line))
        elif kind == "str":
            toks.append(_Tok("str", s[1:-1].replace("''", "'"), line))
        elif kind == "bq":
            toks.append(_Tok("name", s[1:-1].replace("``", "`"), line, quoted=True))
        elif kind not in ("ws", "comment"):
            toks.append(_Tok(kind, s, line))  # type: ignore[arg-type]
        line += s.count("\n")
        pos = m.end()
    toks.append(_Tok("eof", "", line))
    return toks


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _lex(text)
        self.i = 0
        self.lines = text.split("\n")

    # token helpers
    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def fail(self, msg: str, tok: _Tok | None = None) -> TrajectoryError:
        t = tok or self.tok
        src = self.lines[t.line - 1].strip() if 0 < t.line <= len(self.lines) else ""
        return TrajectoryError(f"line {t.line}: {msg} (in {src!r})")

    def is_op(self, s: str) -> bool:
        return self.tok.kind == "op" and self.tok.text == s

    def expect_op(self, s: str, what: str) -> None:
        if not self.is_op(s):
            got = self.tok.text or self.tok.kind
            raise self.fail(f"expected {s!r} {what}, got {got!r}")
        self.i += 1

    def name(self, what: str) -> _Tok:
        if self.tok.kind != "name":
            raise self.fail(f"expected {what}, got {self.tok.text or self.tok.kind!r}")
        t = self.tok
        self.i += 1
        return t

    # statements
    def trajectory(self) -> Trajectory:
        stmts: list[Statement] = []
        lines: list[int] = []
        while True:
            while self.tok.kind == "nl":
                self.i += 1
            if self.tok.kind == "eof":
                break
            lines.append(self.tok.line)
            stmts.append(self.statement())
            if self.tok.kind not in ("nl", "eof"):
                raise self.fail(f"unexpected {self.tok.text!r} after the end of the statement")
        if not stmts:
            raise TrajectoryError("line 1: empty trajectory (expected statements such as `res = df.select(t.c)`)")
        traj = Trajectory(tuple(stmts))
        validate(traj, lines=lines)
        return traj

    def statement(self) -> Statement:
        target = self.name("a variable name to assign (e.g. `df1 =` or `res =`)")
        self.expect_op("=", "after the variable name")
        source = self.name("a source frame (`df` or an earlier variable)")
        actions: list[Action] = []
        while self.is_op("."):
            self.i += 1
            actions.append(self.action())
        if not actions:
            raise self.fail(f"`{target.text} = {source.text}` has no action (expected `.where(...)`, `.select(...)`, ...)")
        return Statement(target.text, source.text, tuple(actions))

    def action(self) -> Action:
        nt = self.name("an action name (where, groupby, having, orderby, limit, select, agg, distinct, join, union, ...)")
        name = nt.text
        self.expect_op("(", f"after {name}")
        pos, kw = self.args(")")
        self.expect_op(")", f"closing {name}(...)")
        try:
            return _build_action(name, pos, kw)
        except TrajectoryError as e:
            raise self.fail(str(e), nt) from None

    def args(self, close: str) -> tuple[list[Any], dict[str, Any]]:
        pos: list[Any] = []
        kw: dict[str, Any] = {}
        if self.is_op(close):
            return pos, kw
        while True:
            if self.tok.kind == "name" and not self.tok.quoted and self.peek().kind == "op" and self.peek().text == "=":
                key = self.tok.text
                if key in kw:
                    raise self.fail(f"argument {key!r} given twice")
                self.i += 2
                kw[key] = self.value()
            else:
                if kw:
                    raise self.fail("a positional argument after keyword arguments")
                pos.append(self.value())
            if self.is_op(","):
                self.i += 1
                continue
            return pos, kw

    def value(self) -> Any:
        if self.is_op("["):
            self.i += 1
            items: list[Any] = []
            if not self.is_op("]"):
                while True:
                    items.append(self.value())
                    if self.is_op(","):
                        self.i += 1
                        continue
                    break
            self.expect_op("]", "closing the list")
            return tuple(items)
        if self.tok.kind == "name" and not self.tok.quoted and self.tok.text in ("True", "False") \
                and not (self.peek().kind == "op" and self.peek().text in ".("):
            v = self.tok.text == "True"
            self.i += 1
            return v
        e = self.expr()
        if self.tok.kind == "name" and not self.tok.quoted and self.tok.text == "as":
            self.i += 1
            alias = self.name("an output column name after `as`")
            return Alias(e, alias.text)
        return e

    # expressions (precedence climbing: + - < * / % < ||)
    def expr(self, min_prec: int = 1) -> Any:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in _PREC and _PREC[self.tok.text] >= min_prec:
            op = self.tok.text
            self.i += 1
            right = self.expr(_PREC[op] + 1)
            if isinstance(left, (Cond, BoolOp, NotCond)) or isinstance(right, (Cond, BoolOp, NotCond)):
                raise self.fail(f"a condition cannot be an operand of {op!r}")
            left = BinOp(op, left, right)
        return left

    def unary(self) -> Any:
        if self.is_op("-"):
            self.i += 1
            if self.tok.kind == "num":
                t = self.tok
                self.i += 1
                return Num("-" + t.text)
            return Neg(self.unary())
        return self.atom()

    def atom(self) -> Any:
        t = self.tok
        if t.kind == "num":
            self.i += 1
            return Num(t.text)
        if t.kind == "str":
            self.i += 1
            return Str(t.text)
        if t.kind == "mask":
            self.i += 1
            return Mask()
        if self.is_op("*"):
            self.i += 1
            return Star()
        if self.is_op("("):
            self.i += 1
            e = self.expr()
            self.expect_op(")", "closing the parenthesis")
            return e
        if t.kind == "name":
            self.i += 1
            if self.is_op("."):
                self.i += 1
                col = self.name(f"a column name after `{t.text}.`")
                return Col(t.text, col.text)
            if self.is_op("("):
                return self.call(t)
            if not t.quoted and t.text == "null":
                return Null()
            if not t.quoted and t.text.lower() in _RESERVED:
                raise self.fail(f"unexpected keyword {t.text!r}", t)
            return Var(t.text)
        raise self.fail(f"expected a value (column, number, 'string', function, variable), got {t.text or t.kind!r}")

    def call(self, nt: _Tok) -> Any:
        name = nt.text if nt.quoted else nt.text.lower()
        self.expect_op("(", "")
        if not nt.quoted and name in _COND_FUNCS:
            pos, kw = self.args(")")
            self.expect_op(")", f"closing {name}(...)")
            try:
                return _build_condition(name, pos, kw)
            except TrajectoryError as e:
                raise self.fail(str(e), nt) from None
        distinct = False
        if self.tok.kind == "name" and not self.tok.quoted and self.tok.text == "distinct":
            distinct = True
            self.i += 1
        args: list[Any] = []
        if not self.is_op(")"):
            while True:
                args.append(self.expr())
                if self.is_op(","):
                    self.i += 1
                    continue
                break
        self.expect_op(")", f"closing {name}(...)")
        for a in args:
            if isinstance(a, (Cond, BoolOp, NotCond)):
                raise self.fail(f"{name}(...) cannot take a condition as an argument", nt)
        return Func(name, tuple(args), distinct)


def _is_expr(v: Any) -> bool:
    return isinstance(v, (Col, Star, Num, Str, Null, Func, BinOp, Neg, Var, Mask))


def _need_expr(v: Any, what: str) -> Expr:
    if not _is_expr(v):
        raise TrajectoryError(f"{what} must be an expression (column, value, function), got {format_value(v)}")
    return v


def format_value(v: Any) -> str:
    try:
        return format_expr(v)
    except TypeError:
        return repr(v)


def _build_condition(name: str, pos: list[Any], kw: dict[str, Any]) -> Condition:
    if name == "cond":
        if pos:
            raise TrajectoryError("cond(...) takes keyword arguments only: element = ..., op = '...', filter = ...")
        return _build_cond(kw, "cond")
    if kw:
        raise TrajectoryError(f"{name}(...) takes conditions as positional arguments, not {', '.join(kw)}")
    for p in pos:
        if not isinstance(p, (Cond, BoolOp, NotCond)):
            raise TrajectoryError(f"{name}(...) takes conditions (cond(...), and(...), or(...), not(...)), "
                                  f"got {format_value(p)}")
    if name == "not":
        if len(pos) != 1:
            raise TrajectoryError(f"not(...) takes exactly one condition, got {len(pos)}")
        return NotCond(pos[0])
    if len(pos) < 2:
        raise TrajectoryError(f"{name}(...) needs at least two conditions, got {len(pos)}")
    return BoolOp(name, tuple(pos))


def _build_cond(kw: dict[str, Any], where: str) -> Cond:
    unknown = set(kw) - {"element", "op", "filter"}
    if unknown:
        raise TrajectoryError(f"{where}: unknown argument(s) {', '.join(sorted(unknown))}; use element, op, filter")
    op = kw.get("op", Str("="))
    if not isinstance(op, Str) or op.value not in COND_OPS:
        raise TrajectoryError(f"{where}: op must be one of {', '.join(repr(o) for o in COND_OPS)}, got {format_value(op)}")
    o = op.value
    element = kw.get("element")
    flt = kw.get("filter")
    if o in NO_ELEMENT_OPS:
        if element is not None:
            raise TrajectoryError(f"{where}: op '{o}' takes no element, only filter = <result variable>")
        if not isinstance(flt, Var):
            raise TrajectoryError(f"{where}: op '{o}' needs filter = <result variable of a nested query>")
        return Cond(None, o, flt)
    if element is None:
        raise TrajectoryError(f"{where}: missing element = <column or expression>")
    element = _need_expr(element, f"{where}: element")
    if o in UNARY_OPS:
        if flt is not None:
            raise TrajectoryError(f"{where}: op '{o}' takes no filter")
        return Cond(element, o, None)
    if flt is None:
        raise TrajectoryError(f"{where}: missing filter = <value> for op '{o}'")
    if isinstance(flt, tuple):
        if o in ("between", "not between"):
            if len(flt) != 2:
                raise TrajectoryError(f"{where}: op '{o}' needs filter = [low, high], got {len(flt)} values")
        elif o not in ("in", "not in"):
            raise TrajectoryError(f"{where}: a list filter needs op 'in', 'not in', 'between' or 'not between', not '{o}'")
        elif not flt:
            raise TrajectoryError(f"{where}: op '{o}' needs a non-empty list")
        return Cond(element, o, tuple(_need_expr(f, f"{where}: filter item") for f in flt))
    if o in ("between", "not between"):
        raise TrajectoryError(f"{where}: op '{o}' needs filter = [low, high]")
    return Cond(element, o, _need_expr(flt, f"{where}: filter"))


def _build_filter_action(name: str, pos: list[Any], kw: dict[str, Any]) -> Condition:
    if pos:
        if kw or len(pos) != 1 or not isinstance(pos[0], (Cond, BoolOp, NotCond)):
            raise TrajectoryError(f"{name}(...) takes either element = ..., op = '...', filter = ... or one condition "
                                  f"(cond(...), and(...), or(...), not(...))")
        return pos[0]
    return _build_cond(kw, name)


def _expr_list(name: str, pos: list[Any], kw: dict[str, Any], *, alias: bool = False) -> tuple[Expr, ...]:
    if kw:
        raise TrajectoryError(f"{name}(...) takes positional expressions only, not {', '.join(kw)} =")
    if not pos:
        raise TrajectoryError(f"{name}(...) needs at least one expression")
    out = []
    for p in pos:
        if alias and isinstance(p, Alias):
            out.append(p)
        else:
            out.append(_need_expr(p, f"{name}(...) argument"))
    return tuple(out)


def _build_action(name: str, pos: list[Any], kw: dict[str, Any]) -> Action:
    if name == "where":
        return Where(_build_filter_action(name, pos, kw))
    if name == "having":
        return Having(_build_filter_action(name, pos, kw))
    if name == "groupby":
        return GroupBy(_expr_list(name, pos, kw))
    if name == "select":
        return Select(_expr_list(name, pos, kw, alias=True))
    if name == "agg":
        return Agg(_expr_list(name, pos, kw, alias=True))
    if name == "distinct":
        if pos or kw:
            raise TrajectoryError("distinct() takes no arguments")
        return Distinct()
    if name == "orderby":
        if pos or set(kw) != {"by", "asc"}:
            raise TrajectoryError("orderby(...) takes exactly by = <expr or [exprs]>, asc = <True/False or [..]>")
        by, asc = kw["by"], kw["asc"]
        keys = by if isinstance(by, tuple) else (by,)
        flags = asc if isinstance(asc, tuple) else (asc,)
        if isinstance(by, tuple) != isinstance(asc, tuple) or len(keys) != len(flags) or not keys:
            raise TrajectoryError("orderby(...): by and asc must be both single values or lists of the same length")
        if not all(isinstance(f, bool) for f in flags):
            raise TrajectoryError("orderby(...): asc must be True or False")
        return OrderBy(tuple(_need_expr(k, "orderby by") for k in keys), tuple(flags))
    if name == "limit":
        if len(pos) != 1 or set(kw) - {"offset"}:
            raise TrajectoryError("limit(...) takes one row count and optionally offset = <n>")
        n, off = pos[0], kw.get("offset")
        for v in (n, off):
            if v is not None and not (isinstance(v, Num) and v.text.isdigit()):
                raise TrajectoryError(f"limit(...) needs non-negative integers, got {format_value(v)}")
        return Limit(int(n.text), None if off is None else int(off.text))
    if name == "join":
        if kw:
            raise TrajectoryError("join(...) takes a table (join(t)) or two columns (join(a.x, b.y)), no keywords")
        if len(pos) == 1 and isinstance(pos[0], (Var, Mask)):
            return Join(table=pos[0].name if isinstance(pos[0], Var) else pos[0])
        if len(pos) == 2 and all(isinstance(p, (Col, Mask)) for p in pos):
            return Join(left=pos[0], right=pos[1])
        raise TrajectoryError("join(...) takes a table (join(t)) or two columns (join(a.x, b.y))")
    if name in SET_OPS:
        if kw or len(pos) != 1 or not isinstance(pos[0], Var):
            raise TrajectoryError(f"{name}(...) takes one result variable, e.g. {name}(tmp_res2)")
        return SetOp(name, pos[0].name)
    raise TrajectoryError(f"unknown action {name!r}; use where, groupby, having, orderby, limit, select, agg, distinct, "
                          f"join, union, union_all, intersect, except")


def parse_trajectory(text: str) -> Trajectory:
    """Parse trajectory text (one statement per line; blank lines and `#` comments ignored) and validate its
    structure. Raises `TrajectoryError` naming the line and what to fix."""
    return _Parser(text).trajectory()


# --------------------------------------------------------------------------------------------------
# structural validation
# --------------------------------------------------------------------------------------------------

_PROJ = (Select, Agg)


def validate(traj: Trajectory, *, lines: list[int] | None = None) -> None:
    """Check a trajectory's structure; raises `TrajectoryError` naming the statement.

    Rules: targets are new names (not `df`); a source is `df` or an earlier variable; the last statement
    assigns `res`, which is a result; a *result* is a statement whose chain (back to `df` or a derived
    table) holds exactly one projection (`select`/`agg`), or whose first action is a set operation;
    after a projection only `distinct`, `orderby` and `limit` may follow; after a set operation only
    `orderby` and `limit`; variables used as values (`filter = tmp_res1`), set-operation operands and
    derived tables (`tmp_res1.col`, `df1 = tmp_res1.where(...)`) are results; `join` and `groupby` come
    before the projection.
    """
    where = (lambda k: f"line {lines[k]}") if lines else (lambda k: f"statement {k + 1}")
    kinds: dict[str, str] = {}  # var -> "frame" | "result"
    projected: dict[str, bool] = {}
    for k, s in enumerate(traj.statements):
        if s.target == "df" or s.target in kinds:
            raise _err(where(k), s, f"variable {s.target!r} is assigned twice; give each statement a new name")
        if s.source != "df" and s.source not in kinds:
            raise _err(where(k), s, f"source {s.source!r} is not defined above (use df or an earlier variable)")
        if not s.actions:
            raise _err(where(k), s, "no action")
        src_kind = "frame" if s.source == "df" else kinds[s.source]
        done = projected.get(s.source, False) if src_kind == "frame" else False
        setop = False
        if isinstance(s.actions[0], SetOp):
            if src_kind != "result":
                raise _err(where(k), s, f"{s.actions[0].kind} needs a result on its left, {s.source!r} is a frame")
            setop = True
        elif src_kind == "result" and s.source != "df":
            done = False  # a derived table starts a new query
        for a in s.actions[1:] if setop else s.actions:
            if setop and not isinstance(a, (OrderBy, Limit)):
                raise _err(where(k), s, f"after {s.actions[0].kind}(...) only orderby and limit may follow")
            if isinstance(a, SetOp):
                raise _err(where(k), s, "a set operation must be the first action, on a result variable")
            if done and not isinstance(a, (Distinct, OrderBy, Limit)):
                raise _err(where(k), s, f"{format_action(a)[:40]} after the projection; only distinct, orderby "
                                      f"and limit may follow select/agg")
            if isinstance(a, _PROJ):
                done = True
            if isinstance(a, Distinct) and not done:
                raise _err(where(k), s, "distinct() must follow select(...) or agg(...)")
        if setop:
            other = s.actions[0].other  # type: ignore[union-attr]
            if kinds.get(other) != "result":
                raise _err(where(k), s, f"{other!r} is not a result defined above")
        for a in s.actions:
            for node in _nodes(a):
                if isinstance(node, Var) and kinds.get(node.name) != "result":
                    raise _err(where(k), s, f"{node.name!r} is used as a nested query but is not a result "
                                          f"defined above (a variable assigned by select/agg or a set operation)")
                if isinstance(node, Col) and node.table in kinds and kinds[node.table] != "result":
                    raise _err(where(k), s, f"{node.table}.{node.column} reads frame {node.table!r}; "
                                          f"columns are table.column (or result.column for a derived table)")
        kinds[s.target] = "result" if (setop or done) else "frame"
        projected[s.target] = done
    last = traj.statements[-1]
    if last.target != "res":
        raise TrajectoryError(f"{where(len(traj.statements) - 1)}: the last statement must assign res, not {last.target!r}")
    if kinds["res"] != "result":
        raise TrajectoryError(f"{where(len(traj.statements) - 1)}: res has no projection; end with .select(...)")


def _err(loc: str, s: Statement, msg: str) -> TrajectoryError:
    return TrajectoryError(f"{loc}: {msg} (in {format_statement(s)[:100]!r})")


def _nodes(a: Action):
    from t2s_plugins.corrector.share.trajectory.steps import action_nodes, walk_expr

    for root in action_nodes(a):
        yield from walk_expr(root)
