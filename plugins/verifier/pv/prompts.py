"""PV-SQL's repair prompt and the parsing of its reply.

The template is `pv_repair_v1.yaml` beside this module: schema, question, evidence, the prober's findings, the
checklist (`constraints.format_checklist`), the SQL and its numbered problems (`constraints.format_violations`); the
reply's SQL is read with `t2s.sql.extract.extract_sql`.
"""

from __future__ import annotations

from collections.abc import Sequence

from t2s_plugins.verifier.pv.constraints import CheckReport, Constraint, format_checklist, format_violations

from t2s.prompts import PromptTemplate, load_prompt
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
