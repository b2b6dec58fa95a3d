"""DDL schema: one `CREATE TABLE` statement per table, as code-pretrained models read SQL."""

from __future__ import annotations

from t2s.db.types import Column, DatabaseSchema, Table
from t2s.sql.schema_format import SchemaFormat, one_line, quote_identifier, sql_literal


class DDLFormat(SchemaFormat):
    """CREATE TABLE statements with declared types, PRIMARY KEY and FOREIGN KEY constraints.

    Reproduces the "DDL Schema" of seed 004 (Operation 0: CREATE TABLE statements with summary comments
    and example values, consumed by the reasoning generator), which is the "code representation" prompt
    used since DAIL-SQL. Each column may carry a trailing `--` comment with its description and up to
    `max_samples` sample values as SQL literals; a table description goes in a `--` line above its
    statement. Tables are separated by a blank line, in schema order. Identifiers that are not plain or are
    SQLite keywords are double-quoted, so the text is valid SQLite (an untyped column is written without a
    type).
    """

    name = "ddl"

    def __init__(self, *, include_samples: bool = True, max_samples: int = 3, include_descriptions: bool = True) -> None:
        if max_samples < 0:
            raise ValueError(f"schema_format.max_samples must be >= 0, got {max_samples}")
        self.include_samples = include_samples
        self.max_samples = max_samples
        self.include_descriptions = include_descriptions

    def _comment(self, col: Column) -> str:
        parts: list[str] = []
        if self.include_descriptions and col.description.strip():
            parts.append(one_line(col.description.strip()))
        if self.include_samples and self.max_samples > 0 and col.samples:
            parts.append("examples: " + ", ".join(sql_literal(v) for v in col.samples[: self.max_samples]))
        return " -- " + "; ".join(parts) if parts else ""

    def _table(self, schema: DatabaseSchema, table: Table) -> str:
        q = quote_identifier
        items: list[tuple[str, str]] = []  # (definition, trailing comment)
        for col in table.columns:
            definition = f"{q(col.name)} {col.type}" if col.type else q(col.name)
            items.append((definition, self._comment(col)))
        pk = [c.name for c in table.columns if c.primary_key]
        if pk:
            items.append((f"PRIMARY KEY ({', '.join(q(c) for c in pk)})", ""))
        for fk in schema.foreign_keys:
            if fk.table == table.name:
                items.append((f"FOREIGN KEY ({q(fk.column)}) REFERENCES {q(fk.ref_table)} ({q(fk.ref_column)})", ""))
        lines: list[str] = []
        if self.include_descriptions and table.description.strip():
            lines.append(f"-- {one_line(table.description.strip())}")
        lines.append(f"CREATE TABLE {q(table.name)} (")
        for i, (definition, comment) in enumerate(items):
            sep = "," if i < len(items) - 1 else ""
            lines.append(f"  {definition}{sep}{comment}")
        lines.append(");")
        return "\n".join(lines)

    def format(self, schema: DatabaseSchema) -> str:
        """The statements for every table of `schema`, blank-line separated."""
        return "\n\n".join(self._table(schema, t) for t in schema.tables)
