"""A SQLite SELECT grammar (GBNF, llama.cpp's grammar format) whose table and column names are one database's own.

`sql_grammar(schema, mode, limits)` writes the rules; `SqlGrammar.wrap(prefix, suffix)` puts a root rule around them
that holds the SQL inside a stage's answer format (```` ```sql\\n ... \\n``` ````). The same text is read by every
engine: llama.cpp (`LlamaGrammar`, the `llama_sampler_init_grammar` sampler), llguidance (the `hf` backend, which
converts GBNF with `llguidance.grammar_from("gbnf", ...)`), and the grammar fields of vLLM and OpenAI-compatible
servers.

What it covers (Spider's and BIRD's SQL): compound queries (UNION [ALL], INTERSECT, EXCEPT) with ORDER BY and
LIMIT / OFFSET; SELECT [DISTINCT]; FROM with comma and [NATURAL] [LEFT|RIGHT|FULL [OUTER]|INNER|CROSS] JOIN ... ON /
USING, subqueries in FROM; WHERE, GROUP BY, HAVING. Expressions come in two kinds, as SQL uses them: values
(arithmetic and `||` over columns, literals, function calls with the arity SQLite takes, aggregates with DISTINCT,
count(*), CASE, CAST, parenthesized values and scalar subqueries) and conditions (predicates joined by AND / OR,
each optionally NOT: a comparison, [NOT] LIKE (ESCAPE), [NOT] BETWEEN, [NOT] IN (list or subquery), IS [NOT] NULL,
EXISTS, a parenthesized condition); a result column or function argument may carry one comparison (`SUM(x = 'F')`).
String, numeric, NULL, TRUE / FALSE and CURRENT_* literals. Identifiers match in any case (SQLite's are
case-insensitive), keywords and function names in lower, UPPER or Capitalized case (`case_forms`); each name may be
written bare (when SQLite accepts it bare) or quoted with "", `` or []. Double-quoted strings ("France", as in
Spider's gold SQL, which SQLite reads as a string when no column has that name) are allowed where a value is
compared or passed: right of a comparison or LIKE, in IN lists, as BETWEEN bounds, function arguments and CASE
results; never where a column stands alone (a result column), so a name the schema lacks cannot pass as one.
Not covered: WITH, window functions, GLOB / REGEXP / MATCH, COLLATE, `expr IS expr`.

Two modes (issue 23):

- `sql`: tables and subqueries may take short aliases, with or without AS (`singer AS T1`, `car_names c`: one or two
  letters and up to two digits; a free spelling would let `pet_type.name` through), result columns any alias
  (`count(*) AS n`, which cannot be referred to again), and a column is a schema column, bare or after a table name
  or alias (`T1.name`: which table the alias stands for is not checked).
- `sql_strict`: no aliases; every column is written `<table>.<column>` with one of that table's own columns, so a
  column cannot be put in the wrong table (self-joins and references to a derived table's columns cannot be
  written).

Bounds (`GrammarLimits`) keep every answer finite, so that a model that wanders still ends within a few hundred
tokens: nesting depth (parentheses, subqueries, function arguments, CASE and CAST all open a level), and the lengths
of select lists, FROM lists, operator chains, IN lists, CASE branches, ORDER BY / GROUP BY lists, set operations,
literals and whitespace runs. Names are written as tries (shared prefixes factored), which keeps llama.cpp's
grammar stacks few where a name starts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from t2s.db.types import DatabaseSchema

#: the grammar modes; "free" (no grammar) is the third decoding mode, handled by `t2s.decoding`
MODES = ("sql", "sql_strict")

#: bump when the rules below change (part of the grammar artifact's key)
GRAMMAR_VERSION = 4

#: functions the grammar accepts by name (any case), with the numbers of arguments SQLite (and sqlglot) take: a call
#: with another count is not SQL (`replace(x)` fails to prepare), so the grammar does not write it. Aggregates also
#: take DISTINCT (one argument; `group_concat(DISTINCT x)` without a separator). Counts above `function_args` are cut.
FUNCTIONS: dict[str, tuple[int, int]] = {
    "abs": (1, 1), "ceil": (1, 1), "ceiling": (1, 1), "char": (1, 3), "coalesce": (2, 3), "date": (1, 3),
    "datetime": (1, 3), "exp": (1, 1), "floor": (1, 1), "format": (1, 3), "glob": (2, 2), "hex": (1, 1),
    "ifnull": (2, 2), "iif": (3, 3), "instr": (2, 2), "julianday": (1, 3), "length": (1, 1), "like": (2, 3),
    "likely": (1, 1), "ln": (1, 1), "log": (1, 2), "log10": (1, 1), "lower": (1, 1), "ltrim": (1, 2), "mod": (2, 2),
    "nullif": (2, 2), "pow": (2, 2), "power": (2, 2), "printf": (1, 3), "quote": (1, 1), "random": (0, 0),
    "replace": (3, 3), "round": (1, 2), "rtrim": (1, 2), "sign": (1, 1), "sqrt": (1, 1), "strftime": (2, 3),
    "substr": (2, 3), "substring": (2, 3), "time": (1, 3), "trim": (1, 2), "typeof": (1, 1), "unicode": (1, 1),
    "unixepoch": (1, 3), "upper": (1, 1),
}
#: aggregate functions of one argument (count(*) is written apart); group_concat takes one or two
AGGREGATES = ("avg", "count", "max", "min", "sum", "total")

#: type names CAST accepts (any case), optionally followed by `(n)` or `(n, m)`
CAST_TYPES = ("integer", "int", "bigint", "real", "float", "double", "numeric", "decimal", "text", "varchar", "char",
              "blob", "date", "datetime", "boolean")

#: SQLite keywords that cannot stand as a bare table or column name (a name equal to one is offered quoted only): those
#: of SQLite 3.40's keywords that fail as `CREATE TABLE k (k ...)`, `SELECT k FROM k`, `T1.k`, `JOIN k`; the others
#: (`range`, `match`, `left`, `year`, ...) fall back to identifiers
RESERVED = frozenset("""
add all alter and as autoincrement between case cast check collate commit constraint create current_date current_time
current_timestamp default deferrable delete distinct drop else escape except exists foreign from group having if in
index insert intersect into is isnull join limit not nothing notnull null on or order primary raise references
returning select set table then to transaction union unique update using values when where
""".split())

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: a table alias (GBNF): a letter, or two letters that are not one of SQLite's two-letter keywords, then up to two
#: digits (a keyword with digits after it, `in1`, is an identifier again)
TABLE_ALIAS = ("[A-Za-z] [0-9]{0,2} | ([b-hj-np-su-zB-HJ-NP-SU-Z] [A-Za-z] | [aA] [a-rt-zA-RT-Z] | "
               "[iI] [a-eg-mo-rt-zA-EG-MO-RT-Z] | [oO] [a-mo-qs-zA-MO-QS-Z] | [tT] [a-np-zA-NP-Z]) [0-9]{0,2} | "
               "([aA] [sS] | [iI] [fFnNsS] | [oO] [nNrR] | [tT] [oO]) [0-9]{1,2}")


@dataclass(frozen=True)
class GrammarLimits:
    """How far the grammar lets an answer grow (every bound is inclusive).

    `depth`: nesting levels below the top query (a parenthesis, subquery, function call, CASE or CAST opens one);
    `select_items` (of the top query; `inner_select_items` of a subquery), `from_items` (tables and joins),
    `arithmetic` (operators in one value: `a * 100 / b` has two), `conditions` (predicates joined by AND / OR in one
    condition), `in_items`, `case_whens`, `order_items` (ORDER BY and GROUP BY), `set_ops` (UNION / INTERSECT /
    EXCEPT), `function_args`;
    `string_chars` and `number_digits` per literal, `alias_chars` per alias, `space` (whitespace characters in a
    row). The defaults accept all 972 executable Spider dev gold queries and 99.7 % of the train ones
    (benchmarks/grammar_coverage.py), and are as tight as that allows: under them 13 of 20 answers of the tiny
    random-weight model end within 256 tokens (depth 3 instead of 2: 6 of 20). BIRD's SQL nests deeper
    (`CAST(SUM(IIF(...)) AS REAL)` is three levels): raise `depth` for it.
    """

    depth: int = 2
    select_items: int = 6
    inner_select_items: int = 2
    from_items: int = 5
    arithmetic: int = 2
    conditions: int = 4
    in_items: int = 6
    case_whens: int = 2
    order_items: int = 3
    set_ops: int = 2
    function_args: int = 3
    string_chars: int = 40
    number_digits: int = 10
    alias_chars: int = 16
    space: int = 6

    def __post_init__(self) -> None:
        for f in fields(GrammarLimits):
            key, value = f.name, getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"GrammarLimits.{key} must be an integer, got {value!r}")
            if value < (0 if key in ("depth", "set_ops") else 1):
                raise ValueError(f"GrammarLimits.{key} must be >= {0 if key in ('depth', 'set_ops') else 1}, "
                                 f"got {value}")


@dataclass(frozen=True)
class SqlGrammar:
    """The rules of one database's SQL grammar in one mode (GBNF, no root rule), and what they were built from.

    `rules` defines `query` (one SELECT statement, compound queries included) and whatever it needs; `wrap` adds the
    root rule a request sends. `tables` and `columns` are the names the grammar allows (as in the schema).
    """

    db_id: str
    mode: str
    rules: str
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    limits: GrammarLimits = field(default_factory=GrammarLimits)

    def wrap(self, prefix: str = "```sql\n", suffix: str = "\n```", *, lead: str | None = None,
             bare: bool = False) -> str:
        """The full grammar: `root ::= [LEAD] prefix query [";"] suffix`, with `prefix` and `suffix` literal text
        (the answer format the stage parses) and `lead` the body of an optional first rule `LEAD` (a GBNF expression,
        matched as one lexeme by llguidance: a reflection before the SQL, say). With `bare`, the query alone (and an
        optional `;`) is an answer too, for stages whose parser reads both forms."""
        head, extra = ("LEAD ", f"LEAD ::= {lead}\n") if lead else ("", "")
        root = f"{head}{gbnf_literal(prefix)} query \";\"? {gbnf_literal(suffix)}"
        if bare:
            root = f"({root}) | query \";\"?"
        return f"root ::= {root}\n{extra}{self.rules}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.rules.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- GBNF text helpers
def gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal ("..." with \\, \", newline, tab and carriage return escaped)."""
    if not text:
        return '""'
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f'"{out}"'


def _char(c: str) -> str:
    """One character matched in any case when it is an ASCII letter (`[nN]`), else literally."""
    if c.isascii() and c.isalpha():
        return f"[{c.lower()}{c.upper()}]"
    return gbnf_literal(c)


def case_forms(word: str) -> list[str]:
    """The spellings a keyword or function name is written in: lower, UPPER and Capitalized (`select`, `SELECT`,
    `Select`; every keyword of Spider's and BIRD's gold SQL is one of these). Keeping to them, rather than any case,
    keeps a model whose wanted token the grammar refuses from falling into `TyPeOf` and `currenT_time`."""
    return sorted({word.lower(), word.upper(), word.capitalize()})


def keyword(word: str) -> str:
    """A GBNF expression matching `word` as `case_forms` writes it."""
    return trie(case_forms(word), any_case=False)


def trie(words: Iterable[str], *, any_case: bool = True) -> str:
    """A GBNF expression matching exactly `words`, shared prefixes factored out.

    With `any_case` (identifiers) ASCII letters match in any case and words are merged case-insensitively (SQLite
    compares identifiers without case), so "Name" and "name" are one entry; without it the words are matched as
    written. An empty set gives an empty expression (the callers skip empty sets).
    """
    root: dict[str, Any] = {}
    for w in ({w.lower(): w for w in words if w} if any_case else {w: w for w in words if w}):
        node = root
        for c in w:
            node = node.setdefault(c, {})
        node[""] = {}
    return _trie_expr(root, _char if any_case else gbnf_literal)


def _trie_expr(node: dict[str, Any], char: Any) -> str:
    ends = "" in node
    branches = [(c, child) for c, child in sorted(node.items()) if c]
    alts = []
    for c, child in branches:
        chars = [c]
        # follow single-child chains without nesting
        while len(child) == 1 and "" not in child:
            (c2, child), = child.items()
            chars.append(c2)
        seq = [char(x) for x in chars] if char is _char else [char("".join(chars))]
        rest = _trie_expr(child, char) if any(k for k in child) else ""
        alts.append(" ".join(seq) + (f" {rest}" if rest else ""))
    if not alts:
        return ""
    body = alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"
    if ends:
        return f"({body})?" if len(alts) == 1 and not body.startswith("(") else f"{body}?"
    return body


def name_forms(names: Sequence[str]) -> str:
    """A GBNF expression for any of `names` as SQLite reads an identifier: bare (for names SQLite takes bare:
    letters, digits and `_`, not a reserved word) or quoted in "", `` or [] (any name without the quote character)."""
    bare = [n for n in names if _BARE.match(n) and n.lower() not in RESERVED]
    alts = []
    if bare:
        alts.append(trie(bare))
    for open_, close in (('"', '"'), ("`", "`"), ("[", "]")):
        inner = [n for n in names if close not in n and "\n" not in n]
        if inner:
            alts.append(f"{gbnf_literal(open_)} {trie(inner)} {gbnf_literal(close)}")
    if not alts:
        raise ValueError(f"no usable identifier among {list(names)[:5]}")
    return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"


def _rep(item: str, sep: str, most: int) -> str:
    """`item (sep item){0,most-1}`."""
    if most <= 1:
        return item
    return f"{item} ({sep} {item}){{0,{most - 1}}}"


# ------------------------------------------------------------------------------------------------- the grammar
def sql_grammar(schema: DatabaseSchema, mode: str = "sql", limits: GrammarLimits | None = None) -> SqlGrammar:
    """The SELECT grammar of `schema`'s database in `mode` ("sql" or "sql_strict"; see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown SQL grammar mode {mode!r}; use one of {', '.join(MODES)}")
    lim = limits or GrammarLimits()
    tables = [t for t in schema.tables if t.columns]
    if not tables:
        raise ValueError(f"database {schema.db_id!r} has no table with columns: no SQL grammar can name anything")
    strict = mode == "sql_strict"
    D = lim.depth
    r: list[str] = []

    def rule(name: str, body: str) -> None:
        r.append(f"{name} ::= {body}")

    # Rule names: UPPERCASE rules are lexemes (tokens: whitespace, keywords, names, literals), lowercase rules are
    # grammar rules. llama.cpp reads both alike; `t2s.llm.constraints.gbnf_to_lark` keeps the split for llguidance,
    # whose lexer is greedy (a whole query written as one lexeme could not give back a character it took).
    sp = "SP"  # optional whitespace, around punctuation and symbol operators
    ws = "WS"  # mandatory whitespace, between words
    comma = f'{sp} "," {sp}'
    rule("WS", f"[ \\t\\n]{{1,{lim.space}}}")
    rule("SP", f"[ \\t\\n]{{0,{lim.space}}}")
    kws: dict[str, str] = {}

    def kw(word: str) -> str:
        name = "KW-" + word.upper().replace("_", "-")
        kws.setdefault(name, keyword(word))
        return name

    # ---------------------------------------------------------------- names
    all_columns = sorted({c.name for t in tables for c in t.columns}, key=str.lower)
    rule("TABLE", name_forms([t.name for t in tables]))
    if strict:
        for i, t in enumerate(tables):
            rule(f"TNAME-{i}", name_forms([t.name]))
            rule(f"TCOLS-{i}", name_forms([c.name for c in t.columns]))
        rule("column", " | ".join(f'TNAME-{i} "." (TCOLS-{i} | "*")' for i in range(len(tables))))
        rule("star", '"*"')
    else:
        rule("COLNAME", name_forms(all_columns))
        rule("ALIAS", f"[A-Za-z_] [A-Za-z0-9_]{{0,{lim.alias_chars - 1}}} | "
                      f"\"\\\"\" [A-Za-z0-9_ ]{{1,{lim.alias_chars}}} \"\\\"\" | "
                      f"\"`\" [A-Za-z0-9_ ]{{1,{lim.alias_chars}}} \"`\"")
        # table aliases are short: one or two letters and up to two digits (T1, t2, c, ml, H1; every alias of
        # Spider's and BIRD's gold SQL but 6 train queries' `a`... which fits too), never SQLite's two-letter keywords
        # (AS, IF, IN, IS, ON, OR, TO) bare: an alias of any spelling would let a model write a name the schema lacks
        # as `pet_type.x`
        rule("TALIAS", TABLE_ALIAS)
        rule("qualifier", "TALIAS | TABLE")
        rule("column", '(qualifier ".")? COLNAME')
        rule("star", '(qualifier ".")? "*"')

    # ---------------------------------------------------------------- literals and operators
    nd = lim.number_digits
    rule("NUMBER", f"[0-9]{{1,{nd}}} (\".\" [0-9]{{0,{nd}}})? ([eE] [-+]? [0-9]{{1,3}})? | \".\" [0-9]{{1,{nd}}}")
    rule("INT", f"[0-9]{{1,{nd}}}")
    sc = lim.string_chars
    rule("STRING", f"\"'\" ([^'\\n] | \"''\"){{0,{sc}}} \"'\"")
    rule("DQSTRING", f"\"\\\"\" ([^\"\\n] | \"\\\"\\\"\"){{0,{sc}}} \"\\\"\"")
    rule("literal", f"NUMBER | STRING | {kw('null')} | {kw('true')} | {kw('false')} | {kw('current_date')} | "
                    f"{kw('current_timestamp')} | {kw('current_time')}")
    arities: dict[tuple[int, int], list[str]] = {}
    for fname, (low, high) in FUNCTIONS.items():
        if low <= lim.function_args:
            arities.setdefault((low, min(high, lim.function_args)), []).append(fname)
    for (low, high), names in sorted(arities.items()):
        rule(f"FN-{low}-{high}", trie([f for n in names for f in case_forms(n)], any_case=False))
    rule("AGGREGATE", trie([f for n in AGGREGATES for f in case_forms(n)], any_case=False))
    rule("FN-GROUP-CONCAT", keyword("group_concat"))
    rule("TYPEWORD", trie([f for n in CAST_TYPES for f in case_forms(n)], any_case=False))
    rule("typename", f"TYPEWORD ({sp} \"(\" {sp} INT ({comma} INT)? {sp} \")\")?")
    rule("cmpop", '"=" "="? | "!=" | "<>" | "<" "="? | ">" "="?')
    rule("arithop", '"+" | "-" | "*" | "/" | "%" | "||"')
    rule("setop", f"{kw('union')} ({ws} {kw('all')})? | {kw('intersect')} | {kw('except')}")
    rule("joinop", f"({kw('natural')} {ws})? (({kw('left')} | {kw('right')} | {kw('full')}) ({ws} {kw('outer')})? "
                   f"{ws} | {kw('inner')} {ws} | {kw('cross')} {ws})? {kw('join')}")
    rule("limit", f"{kw('limit')} {ws} INT (({ws} {kw('offset')} {ws} INT) | ({comma} INT))?")

    # ---------------------------------------------------------------- per nesting level
    # Expressions come in two kinds, as SQL uses them: values (arithmetic over terms: SELECT items, GROUP BY / ORDER BY
    # items, function arguments, comparison operands) and conditions (predicates joined by AND / OR: WHERE, HAVING,
    # ON, CASE WHEN). A value may carry one comparison where SQL writes a truth value as a number (a SELECT item, a
    # function argument: `SUM(T1.x = 'F')`, `IIF(a > 0, ...)`).
    for k in range(D + 1):
        deeper = k < D
        n = k + 1
        sets = f" ({ws} setop {ws} select-{k}){{0,{lim.set_ops}}}" if lim.set_ops else ""
        rule(f"query-{k}", f"select-{k}{sets} ({ws} order-{k})? ({ws} limit)?")
        rule(f"select-{k}", f"{kw('select')} ({ws} ({kw('distinct')} | {kw('all')}))? {ws} results-{k} "
                            f"({ws} {kw('from')} {ws} from-{k})? ({ws} {kw('where')} {ws} cond-{k})? "
                            f"({ws} group-{k})?")
        items = lim.select_items if k == 0 else min(lim.select_items, lim.inner_select_items)
        rule(f"results-{k}", _rep(f"result-{k}", comma, items))
        item = f"value-{k} (predicate-{k})?"
        rule(f"result-{k}", f"star | {item}" + ("" if strict else f" ({ws} {kw('as')} {ws} ALIAS)?"))
        # FROM: tables (aliased in `sql` mode), subqueries, joins
        alias = "" if strict else f" (({ws} {kw('as')})? {ws} TALIAS)?"
        source = f"TABLE{alias}"
        if deeper:
            source += f" | \"(\" {sp} query-{n} {sp} \")\"{alias}"
        rule(f"source-{k}", source)
        on = f"{kw('on')} {ws} cond-{k}"
        if not strict:
            on += f" | {kw('using')} {sp} \"(\" {sp} {_rep('COLNAME', comma, 4)} {sp} \")\""
        rule(f"join-{k}", f"{comma} source-{k} | {ws} joinop {ws} source-{k} ({ws} ({on}))?")
        rule(f"from-{k}", f"source-{k} (join-{k}){{0,{lim.from_items - 1}}}")
        # GROUP BY / HAVING / ORDER BY
        rule(f"group-{k}", f"{kw('group')} {ws} {kw('by')} {ws} {_rep(f'value-{k}', comma, lim.order_items)} "
                           f"({ws} {kw('having')} {ws} cond-{k})?")
        rule(f"orderitem-{k}", f"value-{k} ({ws} ({kw('asc')} | {kw('desc')}))? "
                               f"({ws} {kw('nulls')} {ws} ({kw('first')} | {kw('last')}))?")
        rule(f"order-{k}", f"{kw('order')} {ws} {kw('by')} {ws} {_rep(f'orderitem-{k}', comma, lim.order_items)}")
        # values
        rule(f"value-{k}", f"term-{k} ({sp} arithop {sp} term-{k}){{0,{lim.arithmetic}}}")
        rule(f"term-{k}", f"(\"-\" {sp} | \"+\" {sp})? operand-{k}")
        # where a double-quoted string may stand: right of a comparison or LIKE, BETWEEN bounds, IN lists, arguments
        rule(f"rhs-{k}", f"value-{k} | DQSTRING")
        rule(f"arg-{k}", f"rhs-{k} (predicate-{k})?")
        operands = ["column", "literal", f"{kw('count')} {sp} \"(\" {sp} \"*\" {sp} \")\""]
        if deeper:
            arg = f"arg-{n}"
            calls = []
            for (low, high) in sorted(arities):
                more = f" ({comma} {arg}){{{max(low - 1, 0)},{high - 1}}}" if high > 1 else ""
                listed = "" if high == 0 else arg + more
                calls.append(f"FN-{low}-{high} {sp} \"(\" {sp} {listed} {sp} \")\"" if listed else
                             f"FN-{low}-{high} {sp} \"(\" {sp} \")\"")
            calls.append(f"AGGREGATE {sp} \"(\" {sp} ({kw('distinct')} {ws})? {arg} {sp} \")\"")
            second = f" ({comma} {arg})?" if lim.function_args > 1 else ""
            calls.append(f"FN-GROUP-CONCAT {sp} \"(\" {sp} ({kw('distinct')} {ws} {arg} | {arg}{second}) {sp} \")\"")
            operands += calls + [
                f"{kw('cast')} {sp} \"(\" {sp} arg-{n} {ws} {kw('as')} {ws} typename {sp} \")\"",
                f"{kw('case')} ({ws} value-{n})? ({ws} {kw('when')} {ws} cond-{n} {ws} {kw('then')} {ws} arg-{n})"
                f"{{1,{lim.case_whens}}} ({ws} {kw('else')} {ws} arg-{n})? {ws} {kw('end')}",
                f"\"(\" {sp} value-{n} {sp} \")\"",
                f"\"(\" {sp} query-{n} {sp} \")\"",
            ]
        rule(f"operand-{k}", " | ".join(operands))
        # conditions
        tails = [
            f"{sp} cmpop {sp} rhs-{k}",
            f"{ws} ({kw('not')} {ws})? {kw('like')} {ws} rhs-{k} ({ws} {kw('escape')} {ws} STRING)?",
            f"{ws} ({kw('not')} {ws})? {kw('between')} {ws} rhs-{k} {ws} {kw('and')} {ws} rhs-{k}",
            f"{ws} {kw('is')} ({ws} {kw('not')})? {ws} {kw('null')}",
        ]
        if deeper:
            listed = _rep(f"rhs-{n}", comma, lim.in_items)
            tails.append(f"{ws} ({kw('not')} {ws})? {kw('in')} {sp} \"(\" {sp} (query-{n} | {listed}) {sp} \")\"")
        rule(f"predicate-{k}", " | ".join(tails))
        preds = [f"rhs-{k} (predicate-{k})?"]
        if deeper:
            preds += [f"{kw('exists')} {sp} \"(\" {sp} query-{n} {sp} \")\"", f"\"(\" {sp} cond-{n} {sp} \")\""]
        rule(f"pred-{k}", f"({kw('not')} {ws})? ({' | '.join(preds)})")
        rule(f"cond-{k}", f"pred-{k} ({ws} ({kw('and')} | {kw('or')}) {ws} pred-{k}){{0,{lim.conditions - 1}}}")
    rule("query", "query-0")
    for name, body in sorted(kws.items()):
        rule(name, body)
    return SqlGrammar(db_id=schema.db_id, mode=mode, rules="\n".join(r) + "\n",
                      tables=tuple(t.name for t in tables), columns=tuple(all_columns), limits=lim)
