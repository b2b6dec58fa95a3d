"""M-Schema: the semi-structured schema representation of XiYan-SQL."""

from __future__ import annotations

import re
from typing import Any

from t2s.db.types import Column, DatabaseSchema, Table
from t2s.sql.schema_format import one_line, quote_identifier
from t2s.stages import SchemaFormat

_EMAIL = re.compile(r"^[\w.-]+@[\w.-]+\.\w+$")
_DATE_TYPES = frozenset({"DATE", "TIME", "DATETIME", "TIMESTAMP"})


def _name(name: str) -> str:
    return quote_identifier(name, quote="`", keywords=False)


def mschema_examples(values: list[Any], type_name: str, max_samples: int) -> list[str]:
    """The example values M-Schema shows for one column, following XiYan's rules.

    None dropped; a column with an e-mail address or URL among its values shows none; at most
    `max_samples`; date/time types show one; when the longest value exceeds 20 characters only the
    first is shown, and none when it exceeds 50.
    """
    if max_samples <= 0:
        return []
    strs = [one_line(str(v)) for v in values if v is not None and str(v) != ""]
    if any(_EMAIL.match(s) or "http://" in s or "https://" in s for s in strs):
        return []
    strs = strs[:max_samples]
    if not strs:
        return []
    if type_name in _DATE_TYPES:
        return strs[:1]
    longest = max(len(s) for s in strs)
    if longest > 50:
        return []
    return strs[:1] if longest > 20 else strs


class MSchemaFormat(SchemaFormat):
    """M-Schema from XiYan-SQL (Gao et al. 2024, arXiv 2411.08599; github.com/XGenerationLab/M-Schema).

    Layout, as `MSchema.to_mschema()` writes it::

        【DB_ID】 concert_singer
        【Schema】
        # Table: singer
        [
        (Singer_ID:INT, Primary Key, Examples: [1, 2, 3]),
        (Name:TEXT, Examples: [Joe Sharp, Timbaland])
        ]
        【Foreign keys】
        singer_in_concert.Singer_ID=singer.Singer_ID

    Types are upper-cased and cut at `(` unless `type_detail` (an untyped column shows `ANY`); a column
    or table description follows its type or name after a comma; examples follow XiYan's filtering
    (`mschema_examples`) and are written unquoted. Deviation for unambiguity: names that are not plain
    identifiers (spaces, parentheses, ...) are wrapped in backticks.
    """

    name = "mschema"

    def __init__(
        self,
        *,
        include_samples: bool = True,
        max_samples: int = 3,
        include_descriptions: bool = True,
        type_detail: bool = False,
    ) -> None:
        if max_samples < 0:
            raise ValueError(f"schema_format.max_samples must be >= 0, got {max_samples}")
        self.include_samples = include_samples
        self.max_samples = max_samples
        self.include_descriptions = include_descriptions
        self.type_detail = type_detail

    def _type(self, col: Column) -> str:
        t = col.type.strip() or "ANY"
        return (t if self.type_detail else t.split("(")[0].strip()).upper()

    def _field(self, col: Column) -> str:
        type_name = self._type(col)
        parts = [f"{_name(col.name)}:{type_name}"]
        if self.include_descriptions and col.description.strip():
            parts.append(one_line(col.description.strip()))
        if col.primary_key:
            parts.append("Primary Key")
        if self.include_samples:
            examples = mschema_examples(col.samples, type_name.split("(")[0], self.max_samples)
            if examples:
                parts.append(f"Examples: [{', '.join(examples)}]")
        return "(" + ", ".join(parts) + ")"

    def _table(self, table: Table) -> str:
        head = f"# Table: {_name(table.name)}"
        if self.include_descriptions and table.description.strip():
            head += f", {one_line(table.description.strip())}"
        return "\n".join([head, "[", ",\n".join(self._field(c) for c in table.columns), "]"])

    def format(self, schema: DatabaseSchema) -> str:
        """The M-Schema text; the `【Foreign keys】` section is left out when there are none."""
        lines = [f"【DB_ID】 {schema.db_id}", "【Schema】"] + [self._table(t) for t in schema.tables]
        if schema.foreign_keys:
            lines.append("【Foreign keys】")
            lines += [
                f"{_name(fk.table)}.{_name(fk.column)}={_name(fk.ref_table)}.{_name(fk.ref_column)}"
                for fk in schema.foreign_keys
            ]
        return "\n".join(lines)
