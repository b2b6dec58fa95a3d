"""SHARE's action trajectories ("SHARE: An SLM-based Hierarchical Action CorREction Assistant for Text-to-SQL",
arXiv 2506.00391): typed steps, text form, SQL <-> trajectory.

An action trajectory is SHARE's pandas-like rendering of a SQL query as steps, e.g.

    df1 = df.where(element = singer.Country, filter = 'France')
    res = df1.select(singer.Name)

This package is the deterministic part of the `share` corrector and of its training data (issue 11 item 2,
issue 13): `sql_to_trajectory` (BAM as an exact translator over sqlglot's AST), `render_sql` (trajectory
-> SQLite, joins inferred from foreign keys), `parse_trajectory` / `format_trajectory` (the strict text
form an LLM's output is parsed with), `mask_schema` / `fill_masks` (SAM's mask-and-fill) and `perturb`
(add / delete / substitute one action, SHARE section 3.4). docs/share_trajectory.md has the same
grammar with examples, the mapping to SHARE's paper and code, and the measured round trip.

Grammar (EBNF; terminals quoted; whitespace free within a line; `#` starts a comment):

    trajectory := { blank-line } statement { newline { blank-line } statement }
    statement  := var "=" source "." action { "." action }       (one line)
    source     := "df" | var                                      (df: the database)
    action     := "where" "(" filter-args ")"  | "having" "(" filter-args ")"
                | "groupby" "(" expr { "," expr } ")"
                | "orderby" "(" "by" "=" (expr | "[" expr {"," expr} "]") ","
                                "asc" "=" (bool | "[" bool {"," bool} "]") ")"
                | "limit" "(" int [ "," "offset" "=" int ] ")"
                | ("select" | "agg") "(" item { "," item } ")"  | "distinct" "(" ")"
                | "join" "(" table ")" | "join" "(" column "," column ")"
                | ("union" | "union_all" | "intersect" | "except") "(" var ")"
    filter-args:= "element" "=" expr [ "," "op" "=" op ] [ "," "filter" "=" value ]
                | "op" "=" ("'exists'" | "'not exists'") "," "filter" "=" var
                | condition
    condition  := "cond" "(" filter-args-of-one-comparison ")"
                | ("and" | "or") "(" condition "," condition { "," condition } ")"
                | "not" "(" condition ")"
    op         := "'='" (default, not written) | "'!='" | "'<'" | "'>'" | "'<='" | "'>='" | "'like'"
                | "'not like'" | "'in'" | "'not in'" | "'between'" | "'not between'" | "'is null'"
                | "'is not null'" | "'exists'" | "'not exists'"
    value      := expr | "[" expr { "," expr } "]"      (list: in / not in, or [low, high] for between)
    item       := expr [ "as" name ]                      (alias: only to name a derived table's column)
    expr       := term { ("+" | "-") term } ; term := factor { ("*" | "/" | "%") factor }
    factor     := unary { "||" unary } ; unary := [ "-" ] atom
    atom       := column | number | string | "null" | "[MASK]" | "*" | var
                | name "(" [ "distinct" ] [ expr { "," expr } ] ")"          (function call)
                | "(" expr ")"
    column     := ident "." ident          (table.column, or result-var.column of a derived table)
    table      := ident ; var := ident ; ident := name | "`" any "`"   (`` doubles a backtick)
    string     := "'" { any | "''" } "'" ; bool := "True" | "False"

Meaning. Statements form query scopes: a chain of statements from `df` (or from a result variable used
as a derived table) to the statement holding its projection (`select`, or `agg` after `groupby`). Within
a scope, `where`s are ANDed into WHERE, `groupby` is GROUP BY, `having`s are ANDed into HAVING,
`orderby`/`limit` are ORDER BY/LIMIT, `distinct()` is SELECT DISTINCT; the FROM clause is not written —
the renderer joins the tables the columns name by foreign keys — except through `join` actions, which the
translator writes only when foreign keys would not rebuild the query's FROM (a table read only by
`count(*)`, a join on non-key columns). A result variable used as a value (`filter = tmp_res1`) is a
subquery; `res = tmp_res1.union(tmp_res2)` is a set operation; `res` is the answer.

Not expressed (the translator raises `Unsupported` with the construct's name): outer joins, joins on
anything but column equalities (e.g. `ON a = b OR a = c`), a table joined to itself, correlated
subqueries, ORDER BY on a set operation, CASE, CAST and functions outside `translate.FUNCTIONS`
(plus any sqlglot `Anonymous` function, passed through by name).
"""

from t2s_plugins.corrector.share.trajectory.perturb import (
    PERTURB_KINDS,
    Perturbation,
    fill_masks,
    mask_answers_reply,
    mask_schema,
    perturb,
    perturbations,
    trajectory_reply,
)
from t2s_plugins.corrector.share.trajectory.render import FromPlan, RenderError, plan_from, render_sql
from t2s_plugins.corrector.share.trajectory.steps import (
    COND_OPS,
    SET_OPS,
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
from t2s_plugins.corrector.share.trajectory.text import (
    MASK_TOKEN,
    TrajectoryError,
    format_trajectory,
    parse_trajectory,
    validate,
)
from t2s_plugins.corrector.share.trajectory.translate import TranslationError, Unsupported, sql_to_trajectory

__all__ = [
    "COND_OPS", "MASK_TOKEN", "PERTURB_KINDS", "SET_OPS", "Action", "Agg", "Alias", "BinOp", "BoolOp", "Col", "Cond",
    "Condition", "Distinct", "Expr", "FromPlan", "Func", "GroupBy", "Having", "Join", "Limit", "Mask", "Neg",
    "NotCond", "Null", "Num", "OrderBy", "Perturbation", "RenderError", "Select", "SetOp", "Star", "Statement", "Str",
    "Trajectory", "TrajectoryError", "TranslationError", "Unsupported", "Var", "Where", "fill_masks",
    "format_trajectory", "mask_answers_reply", "mask_schema", "parse_trajectory", "perturb", "perturbations",
    "plan_from", "render_sql", "sql_to_trajectory", "trajectory_reply", "validate",
]
