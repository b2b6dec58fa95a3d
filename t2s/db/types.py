"""Plain types for databases: schemas introspected from SQLite, schema views, execution results."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from t2s.records import JsonRecord


@dataclass
class Column(JsonRecord):
    """A column: its name, declared type, primary-key flag and up to a few distinct sample values."""

    name: str
    type: str
    primary_key: bool = False
    samples: list[Any] = field(default_factory=list)
    description: str = ""


@dataclass
class ForeignKey(JsonRecord):
    """`table.column` references `ref_table.ref_column`."""

    table: str
    column: str
    ref_table: str
    ref_column: str


@dataclass
class Table(JsonRecord):
    """A table: its columns, a description (from the dataset, when it has one) and its first rows (as introspected,
    `db.sample_rows` of them, values cut like samples; for "CREATE TABLE + example rows" prompts)."""

    name: str
    columns: list[Column]
    description: str = ""
    rows: list[list[Any]] = field(default_factory=list)

    def column(self, name: str) -> Column | None:
        low = name.lower()
        return next((c for c in self.columns if c.name.lower() == low), None)


@dataclass
class DatabaseSchema(JsonRecord):
    """The schema of one database: tables with columns, and foreign keys."""

    db_id: str
    tables: list[Table]
    foreign_keys: list[ForeignKey] = field(default_factory=list)

    def table(self, name: str) -> Table | None:
        low = name.lower()
        return next((t for t in self.tables if t.name.lower() == low), None)

    def subset(self, keep: dict[str, list[str] | None]) -> DatabaseSchema:
        """A view keeping only the named tables (case-insensitive); for each, the listed columns, or all
        columns when the list is None. Primary keys and foreign keys between kept columns are kept too; example rows
        keep the kept columns' cells."""
        want = {t.lower(): (None if cols is None else {c.lower() for c in cols}) for t, cols in keep.items()}
        tables: list[Table] = []
        for t in self.tables:
            if t.name.lower() not in want:
                continue
            cols = want[t.name.lower()]
            idx = [i for i, c in enumerate(t.columns) if cols is None or c.name.lower() in cols or c.primary_key]
            kept = [t.columns[i] for i in idx]
            # example rows keep only the kept columns' cells, so they stay aligned with the column header
            rows = [[r[i] for i in idx if i < len(r)] for r in t.rows]
            tables.append(dataclasses.replace(t, columns=kept, rows=rows))
        names = {(t.name.lower(), c.name.lower()) for t in tables for c in t.columns}
        fks = [
            fk for fk in self.foreign_keys
            if (fk.table.lower(), fk.column.lower()) in names and (fk.ref_table.lower(), fk.ref_column.lower()) in names
        ]
        return DatabaseSchema(db_id=self.db_id, tables=tables, foreign_keys=fks)


@dataclass
class SchemaView(JsonRecord):
    """A (possibly filtered) schema given to a generator: a name ("full", "S1", "S2"), the schema, and
    its serialization in the run's `schema_format`."""

    name: str
    schema: DatabaseSchema
    text: str


@dataclass
class ExecResult(JsonRecord):
    """Outcome of running one SQL query.

    Exactly one of: `ok` (rows fetched; `truncated` if the row cap cut them), `error` (SQLite's message,
    "rejected: ..." for a statement that would modify the database, "not authorized: ..." for a read the
    read-only policy refuses (the schema table, a PRAGMA other than those describing one table, `fts3_tokenizer`;
    docs/security.md), or "resource limit: ..." for a query stopped by a memory bound of `SQLExecutor`), `timed_out`.
    `seconds` is wall time including any process overhead.
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False
    truncated: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out

    @property
    def status(self) -> str:
        """"ok", "timeout", "resource_limit" (a memory bound stopped it), "rejected" or "error"."""
        if self.timed_out:
            return "timeout"
        if self.error is not None:
            if self.error.startswith("rejected:"):
                return "rejected"
            return "resource_limit" if self.error.startswith("resource limit:") else "error"
        return "ok"
