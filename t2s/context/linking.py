"""What schema linkers share: closing a column selection under keys and join paths, and scoring a linked schema
against the tables and columns the gold SQL uses.

`join_closure` implements the "keys added" step of adaptive schema linking (primary and foreign keys related to the
selected fields are included automatically; foreign keys kept among the selected tables),
and adds the tables on the shortest foreign-key path between selected tables, so a join that goes through a bridge
table (singer -> singer_in_concert -> concert) stays writable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from t2s.db.types import DatabaseSchema, ForeignKey
from t2s.sql.columns import UsedSchema


def _fk_graph(schema: DatabaseSchema) -> dict[str, list[tuple[str, ForeignKey]]]:
    graph: dict[str, list[tuple[str, ForeignKey]]] = {t.name.lower(): [] for t in schema.tables}
    for fk in schema.foreign_keys:
        a, b = fk.table.lower(), fk.ref_table.lower()
        if a in graph and b in graph and a != b:
            graph[a].append((b, fk))
            graph[b].append((a, fk))
    return graph


def _path(graph: dict[str, list[tuple[str, ForeignKey]]], start: set[str], goal: str) -> list[ForeignKey] | None:
    """The foreign keys of a shortest path from any table in `start` to `goal` (breadth first, deterministic)."""
    prev: dict[str, tuple[str, ForeignKey] | None] = {s: None for s in sorted(start)}
    queue = deque(sorted(start))
    while queue:
        node = queue.popleft()
        if node == goal:
            out = []
            while prev[node] is not None:
                node, fk = prev[node]  # type: ignore[misc]
                out.append(fk)
            return out
        for nxt, fk in graph.get(node, []):
            if nxt not in prev:
                prev[nxt] = (node, fk)
                queue.append(nxt)
    return None


def join_closure(schema: DatabaseSchema, columns: Iterable[tuple[str, str]], *, paths: bool = True,
                 tables: Iterable[str] = ()) -> dict[str, list[str]]:
    """The `DatabaseSchema.subset` argument keeping `columns` ((table, column), any case, in priority order), the
    extra `tables`, their primary keys (subset keeps those), the foreign-key columns between kept tables, and (with
    `paths`) the tables and key columns on the shortest foreign-key path joining each kept table to the ones before
    it. Names come back in the schema's spelling; unknown names are ignored."""
    by_table = {t.name.lower(): t for t in schema.tables}
    keep: dict[str, list[str]] = {}

    def add(table: str, column: str | None = None) -> None:
        t = by_table.get(table.lower())
        if t is None:
            return
        cols = keep.setdefault(t.name, [])
        if column is not None:
            c = t.column(column)
            if c is not None and c.name not in cols:
                cols.append(c.name)

    order: list[str] = []
    for t, c in columns:
        add(t, c)
        if t.lower() in by_table and t.lower() not in order:
            order.append(t.lower())
    for t in tables:
        add(t)
        if t.lower() in by_table and t.lower() not in order:
            order.append(t.lower())
    if paths and len(order) > 1:
        graph = _fk_graph(schema)
        joined = {order[0]}
        for t in order[1:]:
            if t in joined:
                continue
            path = _path(graph, joined, t)
            if path is None:
                joined.add(t)  # not reachable by foreign keys: kept on its own
                continue
            for fk in path:
                add(fk.table, fk.column)
                add(fk.ref_table, fk.ref_column)
                joined |= {fk.table.lower(), fk.ref_table.lower()}
            joined.add(t)
    kept = {t.lower() for t in keep}
    for fk in schema.foreign_keys:
        if fk.table.lower() in kept and fk.ref_table.lower() in kept:
            add(fk.table, fk.column)
            add(fk.ref_table, fk.ref_column)
    return keep


def prune(schema: DatabaseSchema, columns: Iterable[tuple[str, str]], *, paths: bool = True,
          whole_tables: bool = False) -> DatabaseSchema:
    """`schema` reduced to `columns` closed under keys and join paths (`join_closure`); with `whole_tables`, every
    column of each kept table."""
    keep = join_closure(schema, columns, paths=paths)
    if whole_tables:
        return schema.subset({t: None for t in keep})
    return schema.subset({t: cols for t, cols in keep.items()})


def columns_of(schema: DatabaseSchema) -> set[tuple[str, str]]:
    """Every (table, column) of a schema, in lower case."""
    return {(t.name.lower(), c.name.lower()) for t in schema.tables for c in t.columns}


@dataclass(frozen=True)
class LinkScore:
    """How a linked schema covers the gold SQL's tables and columns: recall and precision of columns and tables,
    `complete` (every gold column kept: the query stays writable), columns kept and columns in the database."""

    column_recall: float
    table_recall: float
    column_precision: float
    table_precision: float
    complete: bool
    kept_columns: int
    total_columns: int

    @property
    def reduction(self) -> float:
        """Columns kept / columns in the database (1.0 = nothing pruned)."""
        return self.kept_columns / self.total_columns if self.total_columns else 1.0


def score_link(linked: DatabaseSchema, full: DatabaseSchema, gold: UsedSchema) -> LinkScore:
    """Score a linked schema against the gold query's tables and columns (`t2s.sql.columns.used_schema`). A gold
    query that uses no column (`SELECT count(*) FROM t`) has column recall 1.0; an empty linked schema has precision
    1.0 only when the gold also uses nothing."""
    gold_tables, gold_cols = gold.lower()
    kept_cols = columns_of(linked)
    kept_tables = {t.name.lower() for t in linked.tables}

    def ratio(a: int, b: int) -> float:
        return a / b if b else 1.0

    return LinkScore(
        column_recall=ratio(len(gold_cols & kept_cols), len(gold_cols)),
        table_recall=ratio(len(gold_tables & kept_tables), len(gold_tables)),
        column_precision=ratio(len(gold_cols & kept_cols), len(kept_cols)),
        table_precision=ratio(len(gold_tables & kept_tables), len(kept_tables)),
        complete=gold_cols <= kept_cols and gold_tables <= kept_tables,
        kept_columns=len(kept_cols),
        total_columns=len(columns_of(full)),
    )
