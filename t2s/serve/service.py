"""What the server does, without HTTP: the configured pipeline, a micro-batching queue, validated read-only execution.

`Service(cfg, run_dir)` loads the dataset, builds the pipeline with `t2s.run.runner.build_pipeline` (the factory
`t2s run` uses, so any config or experiment file serves exactly the pipeline it runs) and loads every named LLM once.
Questions go through a `Batcher`: one worker thread owns the pipeline and runs together whatever arrived within
`serve.max_wait_ms` of the first waiting question (at most `serve.max_batch`), with
`pipeline.run_batch([Task(...)])` as `t2s run` does. Errors a client can fix raise `ServeError` with an HTTP status.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from t2s.db.types import DatabaseSchema, ExecResult
from t2s.run.runner import build_pipeline, load_dataset
from t2s.serve.ddl import DDLError, build_ddl_database
from t2s.serve.validate import SQLRejected, validate_select
from t2s.types import Example, Task

log = logging.getLogger("t2s.serve")

#: questions shown per database on the demo page and in GET /databases
SAMPLE_QUESTIONS = 5


class ServeError(Exception):
    """A request the server refuses: HTTP `status`, a machine-readable `kind`, and a message saying what to do."""

    def __init__(self, status: int, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.extra = extra

    def detail(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, **self.extra}


@dataclass
class _Job:
    example: Example
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """One worker thread running `run(tasks)` over batches of the questions submitted within `max_wait` seconds.

    The first waiting question opens a batch; the batch closes `max_wait` seconds later or at `max_batch`
    questions. Each `submit` returns a Future of its `Task` (with `task.error` set when a stage failed on it); a
    batch whose run raised sets that exception on every future of the batch.
    """

    def __init__(self, run: Any, *, max_batch: int, max_wait: float) -> None:
        self._run = run
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="t2s-serve-batcher", daemon=True)
        self.batches = 0
        self.questions = 0
        self.largest_batch = 0
        self._thread.start()

    def submit(self, example: Example) -> Future:
        job = _Job(example)
        self._queue.put(job)
        return job.future

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            deadline = time.perf_counter() + self.max_wait
            stop = False
            while len(jobs) < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            self._process(jobs)
            if stop:
                return

    def _process(self, jobs: list[_Job]) -> None:
        tasks = [Task(example=j.example) for j in jobs]
        started = time.perf_counter()
        try:
            self._run(tasks)
        except BaseException as e:  # noqa: BLE001 - handed to every waiting request
            log.exception("pipeline failed on a batch of %d", len(jobs))
            for j in jobs:
                j.future.set_exception(e)
            return
        self.batches += 1
        self.questions += len(jobs)
        self.largest_batch = max(self.largest_batch, len(jobs))
        for j, t in zip(jobs, tasks):
            t.example.meta["serve"] = {"batch_size": len(jobs), "queue_seconds": started - j.queued_at,
                                       "pipeline_seconds": time.perf_counter() - started}
            j.future.set_result(t)

    def close(self) -> None:
        """Finish the batches already queued, then stop the worker."""
        self._queue.put(None)
        self._thread.join(timeout=600)


@dataclass
class Database:
    """A database the server knows: id, file, and up to `SAMPLE_QUESTIONS` of the dataset's questions on it."""

    db_id: str
    path: Path
    questions: list[str] = field(default_factory=list)
    n_questions: int = 0


class Service:
    """The served pipeline (see the module docstring). Close it with `close()`.

    `cfg` is a composed root config (conf/config.yaml plus overrides); `run_dir` receives what stages write
    during a run (nothing the server reads back). Start-up loads the dataset, sets every stage up and loads every
    named LLM, so the first request pays no loading time; `startup_seconds` says how long that took.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        started = time.perf_counter()
        self.cfg = cfg
        self.serve = cfg.serve
        self.timeout = float(cfg.db.timeout)
        self.max_rows = int(cfg.serve.max_rows)
        self.cache_dir = Path(cfg.paths.cache_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        data = load_dataset(cfg)
        self.dataset_name = data.name
        self.databases: dict[str, Database] = {}
        for ex in data.examples:
            db = self.databases.setdefault(ex.db_id, Database(ex.db_id, Path(ex.db_path)))
            db.n_questions += 1
            if len(db.questions) < SAMPLE_QUESTIONS:
                db.questions.append(ex.question)
        self.pipeline, self.env = build_pipeline(cfg, data.examples, run_dir)
        try:
            self.llms = self._load_llms()
            self.batcher = Batcher(self.pipeline.run_batch, max_batch=int(cfg.serve.max_batch),
                                   max_wait=float(cfg.serve.max_wait_ms) / 1000.0)
        except BaseException:
            self.env.close()
            raise
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self.startup_seconds = time.perf_counter() - started

    def _load_llms(self) -> dict[str, str]:
        """Build and load every named LLM now (backends load lazily otherwise); name -> model id."""
        out = {}
        for name in self.env.llms.names:
            llm = self.env.llm(name)
            inner = getattr(llm, "inner", llm)
            load = getattr(inner, "load", None)
            if callable(load):
                load()
            out[name] = llm.model_id
        return out

    def close(self) -> None:
        """Stop the batcher, then the executor's workers and the LLMs."""
        self.batcher.close()
        self.env.close()

    # ----------------------------------------------------------------------------------------- lookups
    def stages(self) -> list[str]:
        """The pipeline's stages as `kind/option`, in order."""
        return [s.origin for s in self.pipeline.stages]

    def database(self, db_id: str) -> Database:
        db = self.databases.get(db_id)
        if db is None:
            known = ", ".join(sorted(self.databases)[:20]) + (" ..." if len(self.databases) > 20 else "")
            raise ServeError(404, "unknown_database",
                             f"no database {db_id!r} in dataset {self.dataset_name!r}; GET /databases lists them "
                             f"({known})")
        return db

    def _example(self, db_id: str, path: Path, question: str = "", evidence: str = "") -> Example:
        with self._id_lock:
            n = next(self._ids)
        return Example(qid=f"serve-{n}", question=question, db_id=db_id, db_path=str(path), evidence=evidence)

    def schema(self, db_id: str, path: Path | None = None) -> DatabaseSchema:
        """The introspected schema of a known database (or of a DDL database's file)."""
        path = path or self.database(db_id).path
        return self.env.schema(self._example(db_id, path))

    def schema_text(self, db_id: str) -> str:
        """The schema as the pipeline's prompts show it (the run's `schema_format`)."""
        db = self.database(db_id)
        return self.env.full_view(self._example(db_id, db.path)).text

    # ----------------------------------------------------------------------------------------- actions
    def generate(self, *, question: str, db_id: str | None, ddl: str | None, evidence: str = "") -> Task:
        """Run one question through the pipeline (batched with concurrent ones); returns its finished Task."""
        if not question.strip():
            raise ServeError(422, "empty_question", "the question is empty: send a question in natural language")
        if (db_id is None) == (ddl is None):
            raise ServeError(422, "bad_request", "send exactly one of `db_id` (a database of the served dataset) "
                                                 "and `schema` (CREATE TABLE statements)")
        if ddl is not None:
            try:
                built = build_ddl_database(ddl, self.cache_dir)
            except DDLError as e:
                raise ServeError(422, "bad_schema", f"schema rejected: {e}") from None
            example = self._example(built.db_id, built.path, question, evidence)
            example.meta["ddl"] = True
        else:
            assert db_id is not None
            db = self.database(db_id)
            example = self._example(db_id, db.path, question, evidence)
        return self.batcher.submit(example).result()

    def check(self, task_or_db: Task | str, sql: str) -> None:
        """Validate `sql` against the schema of a task's database or a known database (`ServeError` 422 if not)."""
        if isinstance(task_or_db, Task):
            schema = self.env.schema(task_or_db.example)
        else:
            schema = self.schema(task_or_db)
        try:
            validate_select(sql, schema)
        except SQLRejected as e:
            raise ServeError(422, e.kind, e.message, sql=sql) from None

    def execute(self, task: Task, sql: str, max_rows: int | None) -> ExecResult:
        """Run validated `sql` read-only on the task's database: the run's time limit, at most `serve.max_rows`."""
        self.check(task, sql)
        rows = self.max_rows if max_rows is None else max(1, min(int(max_rows), self.max_rows))
        # the executor itself, not `env.execute`: the run-scoped memo behind env.execute would keep every distinct
        # query a long-lived server answers, rows included
        res = self.env.executor.execute(task.example.db_path, sql, timeout=self.timeout, max_rows=rows)
        task.charge_db(res.seconds)
        return res

    def execute_on(self, db_id: str, sql: str, max_rows: int | None) -> ExecResult:
        """`POST /execute`: validate and run `sql` on a known database; a failed or timed-out query is a 422."""
        db = self.database(db_id)
        task = Task(example=self._example(db_id, db.path))
        res = self.execute(task, sql, max_rows)
        if res.timed_out:
            raise ServeError(422, "timeout", f"the query ran past the {self.timeout:g} s limit and was stopped; "
                                             "simplify it or add a LIMIT", sql=sql)
        if res.error is not None:
            kind = "not_select" if res.status == "rejected" else "sql_error"
            raise ServeError(422, kind, f"SQLite refused the query: {res.error}", sql=sql)
        return res
