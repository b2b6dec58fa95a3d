"""Markdown schema: one Markdown table per database table, as instruction-tuned models read documents."""

from __future__ import annotations

from t2s.db.types import Column, DatabaseSchema, Table
from t2s.sql.schema_format import one_line, quote_identifier, sql_literal
from t2s.stages import SchemaFormat


def _cell(text: str) -> str:
    return one_line(text).replace("|", "\\|")


def _name(name: str) -> str:
    return quote_identifier(name, quote="`", keywords=False)


def _row(cells: list[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


class MarkdownFormat(SchemaFormat):
    """A `## Table: name` section per table with a `column | type | key | examples` table, then its foreign keys.

    A Markdown schema in the manner of XiYan-SQL's multi-format generators ("A Preview of XiYan-SQL: A
    Multi-Generator Ensemble Framework for Text-to-SQL", arXiv 2411.08599): tabular format with summaries, types,
    primary/foreign keys, consumed by fine-tuned and in-context generators. `key` is `PK`, `FK` or
    `PK, FK`; a `description` column appears for tables where some column has a description (and
    `include_descriptions`); `examples` holds up to `max_samples` SQL literals. Each table's outgoing
    foreign keys are listed under it as `- table.column -> ref_table.ref_column`. Names that are not plain
    identifiers are wrapped in backticks; `|` in cells is escaped.
    """

    name = "markdown"

    def __init__(self, *, include_samples: bool = True, max_samples: int = 3, include_descriptions: bool = True) -> None:
        if max_samples < 0:
            raise ValueError(f"schema_format.max_samples must be >= 0, got {max_samples}")
        self.include_samples = include_samples
        self.max_samples = max_samples
        self.include_descriptions = include_descriptions

    def _table(self, schema: DatabaseSchema, table: Table) -> str:
        q = _name
        fks = [fk for fk in schema.foreign_keys if fk.table == table.name]
        fk_cols = {fk.column for fk in fks}
        with_desc = self.include_descriptions and any(c.description.strip() for c in table.columns)
        with_samples = self.include_samples and self.max_samples > 0
        header = ["column", "type", "key"] + (["description"] if with_desc else []) + (["examples"] if with_samples else [])

        def row(col: Column) -> list[str]:
            key = ", ".join(k for k, on in (("PK", col.primary_key), ("FK", col.name in fk_cols)) if on)
            cells = [_cell(q(col.name)), _cell(col.type), key]
            if with_desc:
                cells.append(_cell(col.description.strip()))
            if with_samples:
                cells.append(_cell(", ".join(sql_literal(v) for v in col.samples[: self.max_samples])))
            return cells

        lines = [f"## Table: {q(table.name)}"]
        if self.include_descriptions and table.description.strip():
            lines.append(one_line(table.description.strip()))
        lines.append("")
        lines += [_row(header), _row(["---"] * len(header))] + [_row(row(c)) for c in table.columns]
        if fks:
            lines += ["", "Foreign keys:"]
            lines += [f"- {q(fk.table)}.{q(fk.column)} -> {q(fk.ref_table)}.{q(fk.ref_column)}" for fk in fks]
        return "\n".join(lines)

    def format(self, schema: DatabaseSchema) -> str:
        """`# Database: db_id`, then one section per table, blank-line separated."""
        return "\n\n".join([f"# Database: {schema.db_id}"] + [self._table(schema, t) for t in schema.tables])
