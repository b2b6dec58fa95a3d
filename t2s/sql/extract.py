"""Getting SQL out of model text: code fences, leading chatter, trailing prose, several statements."""

from __future__ import annotations

import re

from sqlglot.errors import TokenError
from sqlglot.tokens import Tokenizer, TokenType

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.S)
#: where a statement starts: SELECT, or WITH introducing a common table expression (`WITH [RECURSIVE] name
#: [(cols)] AS (`), so that the English word "with" in prose is not taken for SQL
_START = re.compile(r"\bSELECT\b|\bWITH\s+(?:RECURSIVE\s+)?[\w\"`\[\]]+\s*(?:\([^()]*\)\s*)?AS\s*\(", re.I)


def _first_statement(sql: str) -> str:
    """Cut `sql` at its first top-level `;` (semicolons inside strings and identifiers do not count)."""
    try:
        tokens = Tokenizer().tokenize(sql)
    except (TokenError, ValueError):
        return sql.split(";")[0]
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            return sql[: tok.start]
    return sql


def extract_sql(text: str) -> str:
    """The first SQL statement in a model's output, without fences, prose or a trailing semicolon.

    Order of preference: the first ```sql fenced block (or the first fenced block of any language that
    contains SELECT/WITH); otherwise the text from the first SELECT/WITH keyword. Prose after the statement
    is dropped at the first blank line or at the first `;`. Returns "" when no statement is found.
    """
    body: str | None = None
    fences = _FENCE.findall(text)
    for lang, block in fences:
        if lang.lower() in ("sql", "sqlite") and block.strip():
            body = block
            break
    if body is None:
        body = next((b for _, b in fences if _START.search(b)), None)
    if body is None:
        m = _START.search(text)
        if not m:
            return ""
        body = text[m.start():]
        body = re.split(r"\n\s*\n", body, maxsplit=1)[0]
    else:
        m = _START.search(body)
        if m:
            body = body[m.start():]
    return _strip_stray_backticks(_first_statement(body).strip())


def _strip_stray_backticks(sql: str) -> str:
    """`sql` without a trailing fence remnant (three or more backticks, or an unpaired one: "SELECT a`" of a fence
    cut short), keeping the closing backtick of a quoted name ("SELECT `Home Town` FROM t")."""
    sql = re.sub(r"\s*`{3,}\s*$", "", sql)
    while sql.endswith("`") and sql.count("`") % 2 == 1:
        sql = sql[:-1].rstrip()
    return sql
