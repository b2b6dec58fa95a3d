"""DDL schema: one `CREATE TABLE` statement per table, as code-pretrained models read SQL."""

from __future__ import annotations

from t2s.db.types import Column, DatabaseSchema, Table
from t2s.sql.schema_format import one_line, quote_identifier, sql_literal
from t2s.stages import SchemaFormat


class DDLFormat(SchemaFormat):
    """CREATE TABLE statements with declared types, PRIMARY KEY and FOREIGN KEY constraints.

    CREATE TABLE statements with summary comments and example values, the "code representation" prompt
    used since DAIL-SQL ("Text-to-SQL Empowered by Large Language Models: A Benchmark Evaluation", arXiv
    2308.15363). Each column may carry a trailing `--` comment with its description and up to
    `max_samples` sample values as SQL literals; a table description goes in a `--` line above its
    statement. Tables are separated by a blank line, in schema order. Identifiers that are not plain or are
    SQLite keywords are double-quoted, so the text is valid SQLite (an untyped column is written without a
    type).

    With `example_rows > 0`, each statement is followed by the table's first rows in the "CREATE TABLE + SELECT 3"
    layout of Rajkumar et al. (2022): a comment holding `N example rows:`, `SELECT * FROM t LIMIT N;`, the column
    names and the rows, values separated by tabs (at most `db.sample_rows` rows are introspected).
    """

    name = "ddl"

    def __init__(self, *, include_samples: bool = True, max_samples: int = 3, include_descriptions: bool = True,
                 example_rows: int = 0) -> None:
        if max_samples < 0 or example_rows < 0:
            raise ValueError(f"schema_format.max_samples and example_rows must be >= 0, got {max_samples}, {example_rows}")
        self.include_samples = include_samples
        self.max_samples = max_samples
        self.include_descriptions = include_descriptions
        self.example_rows = example_rows

    def _rows(self, table: Table) -> list[str]:
        rows = table.rows[: self.example_rows]
        if not self.example_rows or not rows:
            return []
        def cell(v: object) -> str:
            return "NULL" if v is None else one_line(str(v))
        return ["/*", f"{len(rows)} example rows:", f"SELECT * FROM {quote_identifier(table.name)} LIMIT {len(rows)};",
                "\t".join(c.name for c in table.columns), *("\t".join(cell(v) for v in r) for r in rows), "*/"]

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
        lines += self._rows(table)
        return "\n".join(lines)

    def format(self, schema: DatabaseSchema) -> str:
        """The statements for every table of `schema`, blank-line separated."""
        return "\n\n".join(self._table(schema, t) for t in schema.tables)
