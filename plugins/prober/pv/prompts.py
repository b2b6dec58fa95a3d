"""PV-SQL's probe prompt and the parsing of its reply.

The template is `pv_probe_v1.yaml` beside this module (schema, values, evidence, question, every earlier probe with
what it returned); a reply is a `PURPOSE:` line and one SQL query, or `DONE`.
"""

from __future__ import annotations

import dataclasses
import re

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
