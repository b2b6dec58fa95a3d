"""Grammars of SHARE's replies ("SHARE: An SLM-based Hierarchical Action CorREction Assistant for Text-to-SQL", arXiv
2506.00391) for constrained decoding (GBNF, llama.cpp's format; UPPERCASE rules are lexemes, as `t2s.decoding` and
`t2s.llm.structured.gbnf_to_lark` expect):

- `trajectory_grammar(schema)`: LOM's (and the LLM BAM's) reply, the whole trajectory in a ``` fence, one statement
  per line in the canonical text form `format_trajectory` writes (the EBNF of this package's docstring: single spaces
  around `=` and after `,`, keyword arguments in the order element, op, filter), with every `table.column` one of
  that table's own columns (any case; backticks where `format_trajectory` writes them) and variables named as the
  translator names them (`df<n>`, `tmp_res<n>`, `res`). The grammar holds the syntax and the names; what `validate`
  checks beyond them (each variable assigned once and defined before use, `res` last, one projection per scope) is
  left to the parser, which still refuses such a reply.
- `mask_answers_grammar(kinds, schema)`: SAM's reply, "```\\n1. <ref>\\n2. <ref>\\n...```" with exactly one
  reference per mask in order: `table.column` (a table's own column) where a column was masked, a table where
  `join([MASK])` was, so `fill_masks` always fills and `schema_problems` finds nothing.

`TrajectoryLimits` bounds the reply (statements, actions, nesting, list lengths, literal lengths) so that a model that
wanders still ends.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from t2s_plugins.corrector.share.trajectory.text import _RESERVED

from t2s.db.types import DatabaseSchema
from t2s.decoding import identifier, qualified_names
from t2s.sql.grammar import gbnf_literal

#: the functions a trajectory calls (the aggregates and `translate.FUNCTIONS`)
TRAJECTORY_FUNCTIONS = ("count", "max", "min", "sum", "avg", "lower", "upper", "abs", "length", "round")


@dataclass(frozen=True)
class TrajectoryLimits:
    """Bounds of a trajectory reply: `statements`, `actions` per statement, `depth` (nesting of parentheses and
    function calls inside a value), `arithmetic` (operators in one value), `items` (select / agg / groupby / IN list
    items), `conditions` (in one and / or), `order_items`, `string_chars` and `number_digits` per literal.
    The defaults take the trajectory of every Spider dev gold query the translator expresses (962 of them), and
    each one's SAM answers."""

    statements: int = 8
    actions: int = 6
    depth: int = 2
    arithmetic: int = 2
    items: int = 6
    conditions: int = 4
    order_items: int = 3
    string_chars: int = 40
    number_digits: int = 10

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < (0 if f.name == "depth" else 1):
                raise ValueError(f"TrajectoryLimits.{f.name} must be >= {0 if f.name == 'depth' else 1}")


def _names(schema: DatabaseSchema) -> tuple[str, str]:
    """(a table as `join(t)` writes it, a `table.column` of that table's own columns) as GBNF expressions."""
    tables = [t for t in schema.tables if t.columns]
    if not tables:
        raise ValueError(f"database {schema.db_id!r} has no table with columns")
    table = identifier([t.name for t in tables], reserved=set(_RESERVED))
    column = qualified_names({t.name: [c.name for c in t.columns] for t in tables})
    return table, column


def _rep(item: str, sep: str, most: int) -> str:
    return item if most <= 1 else f"{item} ({gbnf_literal(sep)} {item}){{0,{most - 1}}}"


def trajectory_rules(schema: DatabaseSchema, limits: TrajectoryLimits | None = None) -> str:
    """The rules of a trajectory (rule `trajectory`: statements, one per line), names restricted to `schema`."""
    lim = limits or TrajectoryLimits()
    table, column = _names(schema)
    r: list[str] = []

    def rule(name: str, body: str) -> None:
        r.append(f"{name} ::= {body}")

    rule("trajectory", _rep("statement", "\n", lim.statements))
    rule("statement", f'VAR " = " SOURCE ("." action){{1,{lim.actions}}}')
    rule("VAR", '"res" | "df" [1-9] [0-9]? | "tmp_res" [1-9] [0-9]?')
    rule("SOURCE", '"df" | VAR')
    rule("RESULT", '"tmp_res" [1-9] [0-9]?')
    rule("TABLE", table)
    rule("COLUMN", column)
    rule("DERIVED", '"tmp_res" [1-9] [0-9]? "." [A-Za-z_] [A-Za-z0-9_]{0,15}')
    rule("NAME", "[A-Za-z_] [A-Za-z0-9_]{0,15}")
    nd = lim.number_digits
    rule("NUMBER", f'[0-9]{{1,{nd}}} ("." [0-9]{{1,{nd}}})?')
    rule("INT", "[0-9]{1,6}")
    rule("STRING", f"\"'\" ([^'\\n] | \"''\"){{0,{lim.string_chars}}} \"'\"")
    rule("BOOL", '"True" | "False"')
    rule("FUNC", "(" + " | ".join(gbnf_literal(f) for f in TRAJECTORY_FUNCTIONS) + ') "("')
    rule("ARITH", '" + " | " - " | " * " | " / " | " % " | " || "')
    rule("CMPOP", "\"'='\" | \"'!='\" | \"'<'\" | \"'>'\" | \"'<='\" | \"'>='\" | \"'like'\" | \"'not like'\"")
    rule("INOP", "\"'in'\" | \"'not in'\"")
    rule("BETWEENOP", "\"'between'\" | \"'not between'\"")
    rule("NULLOP", "\"'is null'\" | \"'is not null'\"")
    rule("EXISTSOP", "\"'exists'\" | \"'not exists'\"")
    rule("SETOP", '"union_all(" | "union(" | "intersect(" | "except("')
    # values, by nesting level
    for k in range(lim.depth + 1):
        atoms = ["COLUMN", "DERIVED", "NUMBER", "STRING", '"null"', '"*"', "RESULT"]
        if k < lim.depth:
            atoms += [f'FUNC ("distinct ")? {_rep(f"value-{k + 1}", ", ", 3)} ")"', f'"(" value-{k + 1} ")"']
        rule(f"atom-{k}", " | ".join(atoms))
        rule(f"value-{k}", f'"-"? atom-{k} (ARITH "-"? atom-{k}){{0,{lim.arithmetic}}}')
    v = "value-0"
    rule("inlist", f'"[" {_rep(v, ", ", lim.items)} "]" | {v}')
    rule("comparison", f'"element = " {v} (", filter = " {v} | ", op = " CMPOP ", filter = " {v} | '
                       f'", op = " INOP ", filter = " inlist | ", op = " BETWEENOP ", filter = [" {v} ", " {v} "]" | '
                       f'", op = " NULLOP) | "op = " EXISTSOP ", filter = " RESULT')
    rule("condition-1", '"cond(" comparison ")"')
    rule("condition-0", f'"cond(" comparison ")" | ("and(" | "or(") condition-1 (", " condition-1)'
                        f'{{1,{max(lim.conditions - 1, 1)}}} ")" | "not(" condition-1 ")"')
    rule("filter", "comparison | condition-0")
    rule("item", f'{v} (" as " NAME)?')
    orders = [f'{v} ", asc = " BOOL']
    for n in range(2, lim.order_items + 1):
        orders.append(f'"[" {_rep(v, ", ", 1)}' + f' ", " {v}' * (n - 1) + ' "], asc = [" BOOL'
                      + ' ", " BOOL' * (n - 1) + ' "]"')
    rule("order", " | ".join(orders))
    rule("action", " | ".join([
        '"where(" filter ")"', '"having(" filter ")"', f'"groupby(" {_rep(v, ", ", lim.order_items)} ")"',
        '"orderby(by = " order ")"', '"limit(" INT (", offset = " INT)? ")"',
        f'"select(" {_rep("item", ", ", lim.items)} ")"', f'"agg(" {_rep("item", ", ", lim.items)} ")"',
        '"distinct()"', '"join(" TABLE ")"', '"join(" COLUMN ", " COLUMN ")"', 'SETOP RESULT ")"',
    ]))
    return "\n".join(r) + "\n"


def trajectory_grammar(schema: DatabaseSchema, limits: TrajectoryLimits | None = None) -> str:
    """The whole grammar of a trajectory reply: "```\\n", the statements, "\\n```" (see the module docstring)."""
    return 'root ::= "```\\n" trajectory "\\n```"\n' + trajectory_rules(schema, limits)


def mask_answers_grammar(kinds: list[str], schema: DatabaseSchema) -> str:
    """The grammar of SAM's reply to a trajectory whose masks are `kinds` in order ("column" for a masked
    `table.column`, "table" for `join([MASK])`): one numbered reference per line in a ``` fence."""
    if not kinds:
        raise ValueError("mask_answers_grammar: no mask to answer")
    unknown = set(kinds) - {"column", "table"}
    if unknown:
        raise ValueError(f"mask_answers_grammar: kinds are 'column' or 'table', got {sorted(unknown)}")
    table, column = _names(schema)
    lines = " ".join(f'"{k}. " {"COLUMN" if kind == "column" else "TABLE"} "\\n"' for k, kind in enumerate(kinds, 1))
    return f'root ::= "```\\n" {lines} "```"\nTABLE ::= {table}\nCOLUMN ::= {column}\n'
