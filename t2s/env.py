"""What a stage sees of the run: named LLMs, read-only SQL execution, schemas, caches, the seed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2s.db.execute import SQLExecutor
from t2s.db.introspect import introspect
from t2s.db.types import DatabaseSchema, ExecResult, SchemaView
from t2s.types import Example, Task

if TYPE_CHECKING:
    from t2s.llm.base import LLM
    from t2s.llm.pool import LLMPool
    from t2s.sql.schema_format import SchemaFormat


@dataclass
class Env:
    """Shared run resources, passed to every stage's `setup(env)`.

    - `llm(name)`: the named LLM from `llms.<name>` in the config, built once, lazily.
    - `execute(task, sql)`: read-only execution with the run's time limit and row cap, charged to `task`.
    - `schema(example)` / `full_view(example)`: introspected schema (cached by database content hash) and
      its serialization in the run's `schema_format`.
    - `examples`: every question of the run (for stages that build indexes over the run's databases).
    """

    llms: LLMPool
    executor: SQLExecutor
    schema_format: SchemaFormat
    cache_dir: Path
    run_dir: Path
    seed: int = 0
    examples: list[Example] = field(default_factory=list)
    sample_values: int = 3
    _schemas: dict[str, DatabaseSchema] = field(default_factory=dict, repr=False)
    extras: dict[str, Any] = field(default_factory=dict, repr=False)

    def llm(self, name: str) -> LLM:
        return self.llms.get(name)

    def schema(self, example: Example) -> DatabaseSchema:
        key = example.db_path
        if key not in self._schemas:
            self._schemas[key] = introspect(
                example.db_path, example.db_id, n_samples=self.sample_values, cache_dir=self.cache_dir / "schemas"
            )
        return self._schemas[key]

    def view(self, name: str, schema: DatabaseSchema) -> SchemaView:
        return SchemaView(name=name, schema=schema, text=self.schema_format.format(schema))

    def full_view(self, example: Example) -> SchemaView:
        return self.view("full", self.schema(example))

    def views(self, task: Task) -> list[SchemaView]:
        """The schema views a generator should use: the linker's, or the full schema when there are none."""
        return list(task.schemas) or [self.full_view(task.example)]

    def execute(self, task: Task, sql: str, *, timeout: float | None = None,
                max_rows: int | None = None) -> ExecResult:
        """Run `sql` read-only against the task's database; the time is charged to the task."""
        res = self.executor.execute(task.example.db_path, sql, timeout=timeout, max_rows=max_rows)
        task.charge_db(res.seconds)
        return res

    def execute_many(self, items: list[tuple[Task, str]], *, timeout: float | None = None,
                     max_rows: int | None = None) -> list[ExecResult]:
        """Run many queries in parallel across the executor's workers; each is charged to its task."""
        results = self.executor.execute_many(
            [(t.example.db_path, sql) for t, sql in items], timeout=timeout, max_rows=max_rows
        )
        for (t, _), r in zip(items, results):
            t.charge_db(r.seconds)
        return results

    def close(self) -> None:
        """Stop the executor's worker processes and release the LLMs."""
        self.executor.close()
        self.llms.close()
