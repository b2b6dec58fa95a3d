"""PV-SQL's probe prompt and the parsing of its reply.

The template is `pv_probe_v1.yaml` beside this module (schema, values, evidence, question, every earlier probe with
what it returned); a reply is a `PURPOSE:` line and one SQL query, or `DONE`. `parse_reply` reads it, and
`PROBE_REPLY` pairs it with the reply it reads (`reply:` in `pv_probe_v1.yaml`), the form the prober's constrained
decoding accepts (`prober.PROBE_REPLY`) for a SELECT of the database ending in a small LIMIT.
"""

from __future__ import annotations

import dataclasses
import re

from t2s.generation import fenced_sql
from t2s.prompts import ReplyFormat
from t2s.sql.extract import extract_sql

_PURPOSE = re.compile(r"^\W*PURPOSE\s*:\s*(.+)$", re.I | re.M)
_DONE = re.compile(r"\bDONE\b")


@dataclasses.dataclass(frozen=True)
class ProbeReply:
    """What one round's reply says: the probe `sql` ("" if none), its one-line purpose (`asked`), and whether the
    model said it is `done`."""

    sql: str
    asked: str
    done: bool


def parse_reply(text: str) -> ProbeReply:
    """Read a probe reply: the first SQL statement (fenced or bare), the `PURPOSE:` line, and `DONE` (upper case,
    or a reply that is just "done") outside the SQL."""
    sql = extract_sql(text)
    m = _PURPOSE.search(text)
    asked = m.group(1).strip()[:200] if m else ""
    rest = text.replace(sql, " ") if sql else text
    done = bool(_DONE.search(rest)) or rest.strip().strip(".!").lower() == "done"
    return ProbeReply(sql=sql, asked=asked, done=done)


def write_probe(*, sql: str, asked: str, done: bool) -> str:
    """The canonical probe reply: `PURPOSE: <asked>` (when given), the probe in a ```sql fence (when given), and
    `DONE` (when done): "PURPOSE: ...\n```sql\n...\n```" or "DONE" are the two forms the prompt asks for."""
    parts = [f"PURPOSE: {asked}"] if asked else []
    if sql:
        parts.append(fenced_sql(sql))
    if done:
        parts.append("DONE")
    return "\n".join(parts)


#: the replies of `pv_probe_v1`: a purpose and one probe, or DONE (`parse_reply`); an answer gives `sql` and `asked`,
#: or `done: true`
PROBE_REPLY = ReplyFormat(fields=("sql", "asked", "done"), write=write_probe,
                          read=lambda text: dataclasses.asdict(parse_reply(text)),
                          example={"asked": "how countries are written",
                                   "sql": "SELECT DISTINCT country FROM singer LIMIT 5"},
                          defaults={"sql": "", "asked": "", "done": False})
