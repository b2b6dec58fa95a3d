"""The fixer's prompts and the reading of their replies.

The templates are `chase_fix_v1.yaml` and `chase_fix_v2.yaml` beside this module (v2 adds that the schema is fixed
and the columns of the tables a failing query reads). A reply is a short reflection, then the corrected query in a
```sql fence; `last_sql` reads it, `FIX_REPLY` pairs it with the reply it reads (both templates name it:
`reply: t2s_plugins.fixer.chase.prompts.FIX_REPLY`), and `REFLECTION` is what constrained decoding allows before the
fence.
"""

from __future__ import annotations

import re

from t2s.generation import fenced_sql, parse_sql
from t2s.prompts import ReplyFormat

_FENCE_BODY = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)

#: under constrained decoding, what may come before the corrected query's fence: the reflection the prompt asks for
#: (one or two sentences; any text without a backtick, at most 400 characters), then exactly one ```sql fence
REFLECTION = "[^`]{0,400}"


def last_sql(text: str) -> str:
    """The SQL of a reflect-then-answer reply: the query of the last code fence holding a SELECT/WITH query (the
    reflection may quote the broken query first, and small models echo the schema's CREATE TABLEs in a fence), else
    the first query in the reply; "" when the reply holds no query."""
    queries = [q for q in (parse_sql(f"```sql\n{body}\n```") for body in _FENCE_BODY.findall(text)) if _is_query(q)]
    if queries:
        return queries[-1]
    found = parse_sql(text)
    return found if _is_query(found) else ""


def _is_query(sql: str) -> bool:
    return bool(re.match(r"\s*(SELECT|WITH)\b", sql, re.I))


def reflection(text: str) -> str:
    """The reflection of a reply: its text before the first code fence, stripped."""
    return text.split("```", 1)[0].strip()


def write_fix(*, reflection: str, sql: str) -> str:
    """The canonical repair reply: the reflection (when there is one), then the query in a ```sql fence."""
    return f"{reflection}\n{fenced_sql(sql)}" if reflection else fenced_sql(sql)


#: the repair replies of `chase_fix_v1` / `chase_fix_v2`: a reflection, then the corrected query (`last_sql`)
FIX_REPLY = ReplyFormat(fields=("reflection", "sql"), write=write_fix,
                        read=lambda text: {"reflection": reflection(text), "sql": last_sql(text)},
                        example={"reflection": "The column is name, not nme.",
                                 "sql": "SELECT name FROM singer WHERE country = 'France'"},
                        defaults={"reflection": ""})
