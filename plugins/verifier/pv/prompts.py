"""PV-SQL's repair prompt and the parsing of its reply.

The template is `pv_repair_v1.yaml` beside this module: schema, question, evidence, the prober's findings, the
checklist (`constraints.format_checklist`), the SQL and its numbered problems (`constraints.format_violations`); the
reply's SQL is read with `parse_repair_response` (`t2s.sql.extract.extract_sql`), and `REPAIR_REPLY` pairs it with the
reply it reads (`reply:` in `pv_repair_v1.yaml`): the query in a ```sql fence, the form the verifier's constrained
decoding accepts.
"""

from __future__ import annotations

from collections.abc import Sequence

from t2s_plugins.verifier.pv.constraints import CheckReport, Constraint, format_checklist, format_violations

from t2s.generation import fenced_sql
from t2s.prompts import PromptTemplate, ReplyFormat, load_prompt
from t2s.sql.extract import extract_sql

#: the default repair template (`pv_repair_v1.yaml` beside this module)
REPAIR_PROMPT = "pv_repair_v1"


def build_repair_messages(*, question: str, schema: str, sql: str, report: CheckReport,
                          constraints: Sequence[Constraint], evidence: str = "", findings: str = "",
                          dialect: str = "SQLite", template: PromptTemplate | str = REPAIR_PROMPT) -> list[dict[str, str]]:
    """The chat messages asking an LLM to repair `sql` given its failed checks (PV-SQL, Verify & Repair).

    `schema` is the serialized schema view; `findings` the prober's notes (empty when there is no prober);
    `template` a loaded template or a name/path for `t2s.prompts.load_prompt`. Raises ValueError when
    `report` has no violation (nothing to repair).
    """
    if not report.violations:
        raise ValueError(f"build_repair_messages: the SQL passes every check, nothing to repair: {sql!r}")
    tpl = load_prompt(template) if isinstance(template, str) else template
    return tpl.render(
        dialect=dialect, schema=schema, question=question, sql=sql.strip(),
        evidence_block=f"Evidence: {evidence.strip()}\n" if evidence.strip() else "",
        findings_block=f"Database findings:\n{findings.strip()}\n" if findings.strip() else "",
        checklist=format_checklist(constraints), violations=format_violations(report.violations),
    )


def parse_repair_response(text: str) -> str:
    """The repaired SQL from the model's reply ("" when it holds none; `t2s.sql.extract.extract_sql`)."""
    return extract_sql(text)


#: the replies of `pv_repair_v1`: the repaired query in a ```sql fence (`parse_repair_response`)
REPAIR_REPLY = ReplyFormat(fields=("sql",), write=fenced_sql, read=parse_repair_response,
                           example={"sql": "SELECT name FROM singer ORDER BY age DESC LIMIT 2"})
