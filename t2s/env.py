"""What a stage sees of the run: named LLMs and embedders, read-only SQL execution, schemas, artifacts, the seed.

Every model call and every query a stage makes goes through here, so each is charged to its question in one place
(`generate`, `score`, `execute`, `execute_many`): no plugin charges anything itself, and the stage contract checks
that model calls made equal model calls charged. Execution is memoized per (database content, SQL, limits) for the
run, so generator, fixer, verifier and selector never execute the same SQL twice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2s.artifacts import Artifact, ArtifactStore, Source
from t2s.db.execute import SQLExecutor
from t2s.db.introspect import introspect
from t2s.db.types import DatabaseSchema, ExecResult, SchemaView
from t2s.files import content_hash
from t2s.types import Example, Task

if TYPE_CHECKING:
    import numpy as np

    from t2s.embed import EmbedderPool
    from t2s.llm.base import LLM, LLMRequest, LLMResponse, ScoreRequest, ScoreResponse
    from t2s.llm.pool import LLMPool
    from t2s.stages import SchemaFormat


@dataclass
class Env:
    """Shared run resources, passed to every stage's `setup(env)`.

    - `generate(name, [(task, request), ...])`: the named LLM (`llms.<name>`) answers every request in one batch;
      each response is charged to its task. `score(name, [(task, request), ...])`: log-probabilities of given
      continuations (selection and process-reward models), charged the same way.
    - `embed(name, texts)`: vectors from the named embedder (`embedders.<name>`), cached on disk.
    - `execute(task, sql)` / `execute_many([(task, sql), ...])`: read-only execution with the run's time limit and
      row cap, memoized for the run; the database time of each real execution is charged to its task.
    - `schema(example)` / `full_view(example)` / `views(task)`: introspected schema and its serialization.
    - `artifact(spec, example_or_source)`: a per-database (or per-dataset) artifact, built once (`t2s.artifacts`).
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
    sample_rows: int = 3
    embedders: EmbedderPool | None = None
    artifacts: ArtifactStore | None = None
    _schemas: dict[str, DatabaseSchema] = field(default_factory=dict, repr=False)
    _memo: dict[tuple[str, str, float | None, int | None], ExecResult] = field(default_factory=dict, repr=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    extras: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.artifacts is None:
            self.artifacts = ArtifactStore(Path(self.cache_dir) / "artifacts")

    # ------------------------------------------------------------------ models

    def llm(self, name: str) -> LLM:
        """The named LLM itself (for its tokenizer or capabilities). Calls made on it directly are NOT charged: use
        `generate` / `score` for model calls."""
        return self.llms.get(name)

    def generate(self, name: str, items: Sequence[tuple[Task, LLMRequest]]) -> list[LLMResponse]:
        """Send every request to the LLM `llms.<name>` as one batch; charge each response to its task. A request whose
        constraint the backend cannot enforce is refused (`t2s.llm.structured.ConstraintNotSupported`)."""
        if not items:
            return []
        from t2s.llm.structured import check_supported

        llm = self.llms.get(name)
        requests = [req for _, req in items]
        check_supported(llm, requests, name)
        responses = llm.generate(requests)
        for (task, _), resp in zip(items, responses):
            task.charge_llm(resp)
        return responses

    def can_score(self, name: str) -> bool:
        """Whether the LLM `llms.<name>` can score continuations by log-probability (else: parse generations)."""
        return bool(getattr(self.llms.get(name), "supports_scoring", False))

    def score(self, name: str, items: Sequence[tuple[Task, ScoreRequest]]) -> list[ScoreResponse]:
        """Log-probabilities of each request's continuations from the LLM `llms.<name>` (`LLM.score`); each
        response is charged to its task (its prompt tokens, no completion tokens)."""
        if not items:
            return []
        llm = self.llms.get(name)
        if not getattr(llm, "supports_scoring", False):
            raise NotImplementedError(f"the LLM `llms.{name}` ({type(llm).__name__}) cannot score continuations; "
                                      f"use a backend that supports scoring (hf, llamacpp, vllm, scripted) or a "
                                      f"plugin option that parses generated answers")
        responses = llm.score([req for _, req in items])
        for (task, _), resp in zip(items, responses):
            task.charge_llm(resp)
        return responses

    def embed(self, name: str, texts: list[str]) -> np.ndarray:
        """Vectors (L2-normalized float32 rows) of `texts` from the embedder `embedders.<name>`."""
        if self.embedders is None:
            raise KeyError(f"no embedders configured; add `embedders.{name}` (options in conf/embedder/)")
        return self.embedders.get(name).embed(texts)

    # ------------------------------------------------------------------ schemas

    def schema(self, example: Example) -> DatabaseSchema:
        key = example.db_path
        if key not in self._schemas:
            self._schemas[key] = introspect(
                example.db_path, example.db_id, n_samples=self.sample_values, n_rows=self.sample_rows,
                cache_dir=self.cache_dir / "schemas"
            )
        return self._schemas[key]

    def view(self, name: str, schema: DatabaseSchema, example: Example | None = None) -> SchemaView:
        """`schema` (the full schema or a filtered one) serialized in the run's schema format. A format that reads
        per-database artifacts (`SchemaFormat.artifacts`, e.g. the profile) gets them for `example`'s database, by
        default the first run question on `schema.db_id`."""
        specs = self.schema_format.artifacts(self)
        if not specs:
            return SchemaView(name=name, schema=schema, text=self.schema_format.format(schema))
        if example is None:
            example = next((e for e in self.examples if e.db_id == schema.db_id), None)
        if example is None:
            raise KeyError(f"schema format {type(self.schema_format).__name__} reads artifacts of database "
                           f"{schema.db_id!r}, but no question of this run is on it; pass `example=` to Env.view")
        loaded = [self.artifact(spec, example) for spec in specs]
        return SchemaView(name=name, schema=schema, text=self.schema_format.format_with(schema, loaded))

    def full_view(self, example: Example) -> SchemaView:
        return self.view("full", self.schema(example), example)

    def views(self, task: Task) -> list[SchemaView]:
        """The schema views a generator should use: the linker's, or the full schema when there are none."""
        return list(task.schemas) or [self.full_view(task.example)]

    # ------------------------------------------------------------------ execution

    def _key(self, task: Task, sql: str, timeout: float | None, max_rows: int | None) -> tuple[str, str, float | None, int | None]:
        return (content_hash(task.example.db_path), sql, timeout, max_rows)

    def execute(self, task: Task, sql: str, *, timeout: float | None = None,
                max_rows: int | None = None) -> ExecResult:
        """Run `sql` read-only against the task's database (memoized for the run; a real run is charged to `task`)."""
        return self.execute_many([(task, sql)], timeout=timeout, max_rows=max_rows)[0]

    def execute_many(self, items: Sequence[tuple[Task, str]], *, timeout: float | None = None,
                     max_rows: int | None = None) -> list[ExecResult]:
        """Run many queries in parallel across the executor's workers; repeats (same database content, SQL and
        limits) are answered from the run's memo, and only real executions are charged, each to its task.
        Timeouts are not memoized (they depend on the machine's load)."""
        keys = [self._key(t, sql, timeout, max_rows) for t, sql in items]
        with self._memo_lock:
            known = {k: self._memo[k] for k in keys if k in self._memo}
        todo: dict[tuple[str, str, float | None, int | None], tuple[Task, str]] = {}
        for k, (t, sql) in zip(keys, items):
            if k not in known and k not in todo:
                todo[k] = (t, sql)
        if todo:
            results = self.executor.execute_many([(t.example.db_path, sql) for t, sql in todo.values()],
                                                 timeout=timeout, max_rows=max_rows)
            for k, (t, _), r in zip(todo, todo.values(), results):
                t.charge_db(r.seconds)
                known[k] = r
            with self._memo_lock:
                self._memo.update({k: r for k, r in zip(todo, results) if not r.timed_out})
        return [known[k] for k in keys]

    # ------------------------------------------------------------------ artifacts

    def artifact(self, spec: Artifact, where: Example | Source) -> Any:
        """The artifact `spec` for a question's database (or for an explicit `Source`), built once."""
        assert self.artifacts is not None
        source = where if isinstance(where, Source) else spec.source(where)
        return self.artifacts.get(spec, source, self)

    def close(self) -> None:
        """Stop the executor's worker processes and release the LLMs and embedders."""
        self.executor.close()
        self.llms.close()
        if self.embedders is not None:
            self.embedders.close()
