"""Question skeletons and SQL skeletons: what a question or a query looks like with its database specifics masked.

After the example stores of "Agentar-Scale-SQL: Advancing Text-to-SQL through Orchestrated Test-Time Scaling"
(arXiv 2509.24403) and "A Preview of XiYan-SQL: A Multi-Generator Ensemble Framework for Text-to-SQL" (arXiv
2411.08599): a training question is stored by its *skeleton*, "the question with entity names replaced with
placeholders", so that retrieval finds questions that ask the same kind of thing on any database.
`question_skeleton` masks, in this order:

1. quoted strings ("...", '...', typographic quotes) -> `[value]`;
2. words and phrases matching the database's table names -> `[table]` and column names -> `[column]` (names split on
   `_`, spaces and camelCase; a question word matches with a trailing plural "s"/"es" dropped; longest phrase first;
   a few structural words such as "number", "count", "average" are never masked, since they carry the query's shape);
3. numbers -> `[number]`;
4. capitalized words that do not start a sentence (entity names such as "France", "John Smith") -> `[value]`.

Runs of the same placeholder collapse into one. The result is lower-cased.

`sql_skeleton` is the structural fingerprint of a query, used to measure whether a retrieved example has "the same
SQL skeleton" as the gold: parsed with sqlglot (SQLite dialect), every literal becomes `?`, every identifier
(table, column, alias) becomes `_`, table qualifiers on columns are dropped, and the query is printed back in
sqlglot's normalized form. Two queries have the same skeleton when these strings are equal. Queries sqlglot cannot
parse get a token-level fallback (same masking on sqlglot's tokens); `None` only for text with no tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Tokenizer, TokenType

VALUE = "[value]"
NUMBER = "[number]"
TABLE = "[table]"
COLUMN = "[column]"
MASKS = (VALUE, NUMBER, TABLE, COLUMN)

#: words that carry a query's structure and are never masked as schema mentions even when a column is so named
STRUCTURAL_WORDS = frozenset("""
a an the of in on at to for by with from and or not no is are was were be been do does did has have had what which
who whom whose when where why how many much number count total sum average avg mean max maximum min minimum most
least more less fewer greater larger smaller bigger higher lower than each every all any both either some other
different distinct unique list show give find return tell order sorted sort ascending descending top first last
between greater equal same per that this these those there their its it them they highest lowest largest smallest
oldest youngest biggest longest shortest best worst latest earliest
""".split())

_QUOTED = re.compile(r"\"[^\"]{1,80}\"|“[^”]{1,80}”|‘[^’]{1,80}’|(?<![\w])'[^']{1,80}'(?![\w])")
_TOKEN = re.compile(r"\[(?:value|number|table|column)\]|\d+(?:[.,]\d+)*|[A-Za-z][A-Za-z0-9]*(?:['’][a-z]+)?|\S")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SENTENCE_END = {".", "?", "!", ":", ";"}


def _norm(word: str) -> str:
    """A word lower-cased with a plural ending dropped ("singers" -> "singer", "classes" -> "class")."""
    w = word.lower()
    if len(w) > 4 and w.endswith(("sses", "shes", "ches", "xes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 2 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def name_words(name: str) -> tuple[str, ...]:
    """The normalized words of a table or column name ("singer_in_concert" -> ("singer", "in", "concert"),
    "FirstName" -> ("first", "name"))."""
    parts = re.split(r"[\s_\-.]+", _CAMEL.sub(" ", name))
    return tuple(_norm(p) for p in parts if p)


@dataclass(frozen=True)
class SchemaNames:
    """The table and column names of one database as normalized word tuples, for `question_skeleton`."""

    tables: frozenset[tuple[str, ...]]
    columns: frozenset[tuple[str, ...]]

    @classmethod
    def of(cls, tables: Iterable[str], columns: Iterable[str]) -> SchemaNames:
        def keep(names: Iterable[str]) -> frozenset[tuple[str, ...]]:
            out = set()
            for n in names:
                words = name_words(n)
                if words and not (len(words) == 1 and words[0] in STRUCTURAL_WORDS):
                    out.add(words)
            return frozenset(out)

        return cls(tables=keep(tables), columns=keep(columns))

    @classmethod
    def of_schema(cls, schema: object) -> SchemaNames:
        """From a `t2s.db.types.DatabaseSchema`."""
        tables = getattr(schema, "tables", [])
        return cls.of([t.name for t in tables], [c.name for t in tables for c in t.columns])

    @property
    def longest(self) -> int:
        return max((len(w) for w in self.tables | self.columns), default=0)


EMPTY_NAMES = SchemaNames(tables=frozenset(), columns=frozenset())


def question_skeleton(question: str, names: SchemaNames = EMPTY_NAMES) -> str:
    """The question with values and schema mentions masked (see the module docstring for the rules and order)."""
    text = _QUOTED.sub(f" {VALUE} ", question)
    tokens = _TOKEN.findall(text)
    out: list[str] = list(tokens)
    masked = [t in MASKS for t in tokens]
    # schema mentions, longest phrase first
    longest = min(names.longest, 4)
    for n in range(longest, 0, -1):
        for i in range(len(tokens) - n + 1):
            if any(masked[i:i + n]) or not all(tokens[j][:1].isalpha() for j in range(i, i + n)):
                continue
            words = tuple(_norm(tokens[j]) for j in range(i, i + n))
            mask = TABLE if words in names.tables else COLUMN if words in names.columns else None
            if mask is None:
                continue
            for j in range(i, i + n):
                out[j], masked[j] = mask, True
    # numbers and capitalized entity words
    for i, tok in enumerate(tokens):
        if masked[i]:
            continue
        if _NUMBER.match(tok):
            out[i], masked[i] = NUMBER, True
        elif tok[:1].isupper() and i > 0 and tokens[i - 1] not in _SENTENCE_END and tok != "I":
            out[i], masked[i] = VALUE, True
    words: list[str] = []
    for i, tok in enumerate(out):
        if masked[i] and words and words[-1] == tok:
            continue
        words.append(tok if masked[i] else tok.lower())
    return re.sub(r"\s+([?.!,;:])", r"\1", " ".join(words)).strip()


# ---------------------------------------------------------------------- SQL skeletons


def _mask_tree(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Literal):
        return exp.Placeholder()
    if isinstance(node, exp.Column):
        ident = node.this
        if isinstance(ident, exp.Identifier) and ident.quoted and node.args.get("table") is None:
            return exp.Placeholder()  # SQLite reads an unknown "..." as a string: Spider writes values so
        return exp.Column(this=exp.Identifier(this="_", quoted=False))
    if isinstance(node, exp.Identifier):
        return exp.Identifier(this="_", quoted=False)
    return node


def _token_skeleton(sql: str) -> str | None:
    try:
        tokens = Tokenizer(dialect="sqlite").tokenize(sql) if hasattr(Tokenizer, "dialect") else Tokenizer().tokenize(sql)
    except (TokenError, ValueError, TypeError):
        tokens = []
    if not tokens:
        return None
    out = []
    for t in tokens:
        if t.token_type in (TokenType.STRING, TokenType.NUMBER):
            out.append("?")
        elif t.token_type in (TokenType.VAR, TokenType.IDENTIFIER):
            out.append("_")
        elif t.token_type == TokenType.SEMICOLON:
            break
        else:
            out.append(t.text.upper())
    text = " ".join(out)
    return re.sub(r"_ \. _", "_", text)


def sql_skeleton(sql: str) -> str | None:
    """The structural fingerprint of `sql`: literals `?`, identifiers `_`, no table qualifiers, sqlglot's printing.
    `None` when there is nothing to parse."""
    sql = (sql or "").strip().rstrip(";")
    if not sql:
        return None
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (ParseError, TokenError, ValueError, RecursionError):
        return _token_skeleton(sql)
    if tree is None:
        return _token_skeleton(sql)
    return tree.transform(_mask_tree).sql(dialect="sqlite")


def sql_literals(sql: str) -> list[str | int | float]:
    """The literals of a query in order (strings with `%` wildcards stripped; numbers as numbers), e.g. to check
    whether some text or rows contain a value the gold SQL uses. Empty when it does not parse."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (ParseError, TokenError, ValueError, RecursionError):
        return []
    out: list[str | int | float] = []
    for lit in tree.find_all(exp.Literal):
        if lit.is_string:
            v = lit.this.strip("%")
            if v:
                out.append(v)
        else:
            try:
                out.append(int(lit.this))
            except ValueError:
                try:
                    out.append(float(lit.this))
                except ValueError:
                    continue
    return out
