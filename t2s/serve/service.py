"""What the server does, without HTTP: the configured pipeline, a micro-batching queue, validated read-only execution.

`Service(cfg, run_dir)` loads the dataset, builds the pipeline with `t2s.run.runner.build_pipeline` (the factory
`t2s run` uses, so any config or experiment file serves exactly the pipeline it runs) and loads every named LLM once.
Questions go through a `Batcher`: one worker thread owns the pipeline and runs together whatever arrived within
`serve.max_wait_ms` of the first waiting question (at most `serve.max_batch`), with
`pipeline.run_batch([Task(...)])` as `t2s run` does. Errors a client can fix raise `ServeError` with an HTTP status.

No question reaches the batcher with a prompt its models cannot hold: `PromptBudget` counts the tokens of the
question, the evidence and the schema as the prompts show it with each named LLM's tokenizer, and a request over a
model's context is a 413 that gives both counts (see `PromptBudget` for what the context is per backend). Closing
the service (the app's shutdown, which `t2s serve` runs on SIGTERM / SIGINT) answers every waiting question with a
503 and stops the batcher.
"""

from __future__ import annotations

import copy
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from t2s.data.base import load_dataset
from t2s.db.types import DatabaseSchema, ExecResult
from t2s.files import content_hash
from t2s.run.runner import build_pipeline
from t2s.serve.ddl import DDLCache, DDLDatabase, DDLError
from t2s.serve.validate import SQLRejected, validate_select
from t2s.types import Example, Task

log = logging.getLogger("t2s.serve")

#: questions shown per database on the demo page and in GET /databases
SAMPLE_QUESTIONS = 5
#: seconds `Service.close` waits for a batch that is running when the server stops
SHUTDOWN_GRACE_SECONDS = 10.0


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
    batch whose run raised sets that exception on every future of the batch. `shutdown()` refuses new questions and
    fails every waiting one (queued or in the running batch) with a 503 `ServeError`, so no request waits on a
    server that is stopping; the worker ends after the batch it is running.
    """

    def __init__(self, run: Any, *, max_batch: int, max_wait: float) -> None:
        self._run = run
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="t2s-serve-batcher", daemon=True)
        self._state_lock = threading.Lock()
        self._closing = False
        self._running: list[_Job] = []
        self.batches = 0
        self.questions = 0
        self.largest_batch = 0
        self._thread.start()

    def submit(self, example: Example) -> Future:
        job = _Job(example)
        with self._state_lock:
            if self._closing:
                raise _stopping()
            self._queue.put(job)
        return job.future

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running (it ends after `shutdown` once its batch is done)."""
        return self._thread.is_alive()

    @property
    def running(self) -> int:
        """Questions in the batch being run now."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Questions queued for a later batch."""
        return self._queue.qsize()

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
            with self._state_lock:
                if self._closing:  # `shutdown` came while the batch formed: these jobs were in no list it saw
                    for j in jobs:
                        _settle(j.future, exception=_stopping())
                    return
                self._running = jobs
            self._process(jobs)
            with self._state_lock:
                self._running = []
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
                _settle(j.future, exception=e)
            return
        self.batches += 1
        self.questions += len(jobs)
        self.largest_batch = max(self.largest_batch, len(jobs))
        for j, t in zip(jobs, tasks):
            t.example.meta["serve"] = {"batch_size": len(jobs), "queue_seconds": started - j.queued_at,
                                       "pipeline_seconds": time.perf_counter() - started}
            _settle(j.future, result=t)

    def shutdown(self) -> None:
        """Refuse new questions, answer every waiting one with a 503, and let the worker end after its batch.
        Safe to call from a signal handler's thread and more than once; returns at once."""
        with self._state_lock:
            if self._closing:
                return
            self._closing = True
            waiting = list(self._running)
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    waiting.append(job)
            self._queue.put(None)
        for j in waiting:
            _settle(j.future, exception=_stopping())

    def close(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> bool:
        """`shutdown()`, then wait up to `grace` seconds for the worker to end; whether it ended (a batch still
        running after that is abandoned: the thread is a daemon and ends with the process)."""
        self.shutdown()
        self._thread.join(timeout=grace)
        if self._thread.is_alive():
            log.warning("the pipeline batch still running after %.0f s was abandoned at shutdown", grace)
            return False
        return True


def _stopping() -> ServeError:
    return ServeError(503, "shutting_down", "the server is shutting down; retry on another instance or after restart")


def _settle(future: Future, *, result: Any = None, exception: BaseException | None = None) -> None:
    """Set a future's outcome unless `shutdown` already did."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except Exception:  # noqa: BLE001 - concurrent.futures.InvalidStateError: already answered (shutdown)
        pass


class PromptBudget:
    """Counts a request's prompt tokens before it reaches the batcher, against each named LLM's context.

    The count is the tokens of the schema as the prompts show it (the run's `schema_format`), the question and the
    evidence, with the LLM's own tokenizer: a lower bound of any prompt that holds them (templates and the completion
    add more). The context is the backend's. llama.cpp's `n_ctx` is a limit the backend enforces itself (it raises);
    here it becomes a 413 before any work. transformers runs a model past its `max_position_embeddings`, in time that
    grows with the square of the length: the 334 KB schema of issue 20 is about 260,000 tokens of the tiny model,
    whose first forward pass would take some 18 minutes on one thread (79,000 tokens took 98 s, 20,000 took 4 s), and
    that held the batcher. For the hf backend, when the served databases' own schemas already need more than the
    declared context (the random tiny model declares 512 tokens, and every demo schema is longer), a schema is held
    to the largest served one instead. A backend that declares `context_tokens` and `count_tokens(text)` is checked
    with those; the others (openai, scripted, vllm) are not checked.
    """

    def __init__(self, llms: dict[str, Any], served_schemas: Callable[[], list[str]]) -> None:
        self._served_schemas = served_schemas
        self._checks: dict[str, tuple[Callable[[str], int], int, bool]] = {}
        for name, llm in llms.items():
            found = _context_of(llm)
            if found is not None:
                self._checks[name] = found
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def checked(self) -> list[str]:
        """The named LLMs whose context is checked."""
        return sorted(self._checks)

    def served_schema_tokens(self, name: str) -> int:
        """Tokens of LLM `name` in the largest schema text of the served databases (counted once)."""
        with self._lock:
            if name not in self._served:
                count = self._checks[name][0]
                self._served[name] = max((count(t) for t in self._served_schemas()), default=0)
            return self._served[name]

    def check(self, schema_text: str, request_text: str = "", *, what: str = "the prompt") -> None:
        """`ServeError` 413 when the schema text plus the question and evidence need more tokens than some checked
        LLM accepts (see the class docstring)."""
        for name, (count, context, hard) in self._checks.items():
            schema_n = count(schema_text)
            n = schema_n + (count(request_text) if request_text else 0)
            if n <= context:
                continue
            if not hard:
                served = self.served_schema_tokens(name)
                if served > context:
                    if schema_n <= served:
                        continue
                    raise ServeError(413, "prompt_too_long",
                                     f"{what} needs at least {n:,} tokens of LLM {name!r}: its schema alone "
                                     f"{schema_n:,}, and a schema may take at most {served:,} here (the largest "
                                     f"served schema; the model declares a context of {context:,}); send a smaller "
                                     "schema", prompt_tokens=n, context_tokens=max(context, served))
            raise ServeError(413, "prompt_too_long",
                             f"{what} needs at least {n:,} tokens of LLM {name!r}, whose context holds {context:,}; "
                             "send a smaller schema, a shorter question or less evidence",
                             prompt_tokens=n, context_tokens=context)


def _context_of(llm: Any) -> tuple[Callable[[str], int], int, bool] | None:
    """(token counter, context in tokens, whether the backend enforces it) for an LLM, or None when unknown."""
    inner = getattr(llm, "inner", llm)
    declared, counter = getattr(inner, "context_tokens", None), getattr(inner, "count_tokens", None)
    if isinstance(declared, int) and callable(counter):
        return counter, declared, True
    backend = getattr(inner, "backend", "")
    if backend == "llamacpp" and hasattr(inner, "tokens"):
        from t2s.llm.base import LLMRequest

        return (lambda text: len(inner.tokens(LLMRequest(prompt=text)))), int(inner.n_ctx), True
    if backend == "hf":
        inner.load()
        model, tokenizer = getattr(inner, "_model", None), getattr(inner, "_tokenizer", None)
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if tokenizer is None or not isinstance(context, int):
            return None
        # a private copy: transformers' fast tokenizers are not safe to share with the batcher thread
        own = copy.deepcopy(tokenizer.backend_tokenizer)
        lock = threading.Lock()

        def count(text: str) -> int:
            with lock:
                return len(own.encode(text, add_special_tokens=False).ids)

        return count, context, False
    return None


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
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self.ddl = DDLCache(self.cache_dir, on_evict=self._forget)
        #: seconds `close` waits for a running batch
        self.shutdown_grace = SHUTDOWN_GRACE_SECONDS
        try:
            self.llms = self._load_llms()
            self.budget = PromptBudget({n: self.env.llm(n) for n in self.env.llms.names}, self._served_schemas)
            self.batcher = Batcher(self.pipeline.run_batch, max_batch=int(cfg.serve.max_batch),
                                   max_wait=float(cfg.serve.max_wait_ms) / 1000.0)
        except BaseException:
            self.env.close()
            raise
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

    def shutdown(self) -> None:
        """Refuse new questions and answer the waiting ones with a 503 (returns at once; `close` also waits)."""
        self.batcher.shutdown()

    def close(self) -> None:
        """Stop the batcher (waiting questions get a 503; a running batch gets `shutdown_grace` seconds), then the
        executor's workers and the LLMs. A batch still running after the grace is abandoned and the environment is
        left open (closing it would wait for that batch); the process's exit ends both."""
        if self.batcher.close(self.shutdown_grace):
            self.env.close()

    def _served_schemas(self) -> list[str]:
        """The schema text of every served database that can be read, as the prompts show it."""
        texts = (self._readable_schema_text(db_id) for db_id in self.databases)
        return [t for t in texts if t is not None]

    def _readable_schema_text(self, db_id: str) -> str | None:
        """`schema_text`, or None when the database cannot be read (the pipeline then reports the question's error,
        as a run does)."""
        try:
            return self.schema_text(db_id)
        except Exception as e:  # noqa: BLE001 - a broken database file: the question's error, not the server's
            log.warning("cannot read the schema of database %r: %s", db_id, e)
            return None

    def _forget(self, db: DDLDatabase) -> None:
        """A DDL database is being removed from the cache: drop its introspected schema (memory and disk)."""
        self.env._schemas.pop(str(db.path), None)
        if db.path.is_file():
            digest = content_hash(db.path)
            for f in (self.cache_dir / "schemas").glob(f"{digest}-*.json"):
                f.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------------------- lookups
    def stages(self) -> list[str]:
        """The pipeline's stages as `kind/option`, in order."""
        return [s.origin for s in self.pipeline.stages]

    def database(self, db_id: str) -> Database:
        db = self.databases.get(db_id)
        if db is None:
            known = ", ".join(sorted(self.databases)[:20]) + (" ..." if len(self.databases) > 20 else "")
            shown = db_id if len(db_id) <= 100 else f"{db_id[:100]}..."
            raise ServeError(404, "unknown_database",
                             f"no database {shown!r} in dataset {self.dataset_name!r}; GET /databases lists them "
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
        """Run one question through the pipeline (batched with concurrent ones); returns its finished Task.

        Refused before it reaches the batcher (`ServeError`): a blank question, not exactly one of `db_id` / `ddl`,
        an unknown database, DDL that does not build, and a prompt over a model's context (413, see `PromptBudget`).
        """
        if not question.strip():
            raise ServeError(422, "empty_question", "the question is empty: send a question in natural language")
        if (db_id is None) == (ddl is None):
            raise ServeError(422, "bad_request", "send exactly one of `db_id` (a database of the served dataset) "
                                                 "and `schema` (CREATE TABLE statements)")
        request_text = f"{question}\n{evidence}" if evidence else question
        if ddl is None:
            assert db_id is not None
            db = self.database(db_id)
            example = self._example(db_id, db.path, question, evidence)
            text = self._readable_schema_text(db_id)
            if text is not None:
                self.budget.check(text, request_text)
            return self.batcher.submit(example).result()
        # the schema text is about as long as the DDL: twice the limit cannot fit, so it is refused unparsed
        self.budget.check(ddl[: len(ddl) // 2], what="the schema")
        try:
            built = self.ddl.acquire(ddl)
        except DDLError as e:
            raise ServeError(422, "bad_schema", f"schema rejected: {e}") from None
        try:
            example = self._example(built.db_id, built.path, question, evidence)
            example.meta["ddl"] = True
            self.budget.check(self.env.full_view(example).text, request_text)
            return self.batcher.submit(example).result()
        finally:
            self.ddl.release(built)

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
        if res.status == "resource_limit":
            raise ServeError(422, "resource_limit", f"the query was stopped at a memory bound ({res.error}); select "
                                                    "fewer or smaller columns, or add a LIMIT", sql=sql)
        if res.error is not None:
            refused = res.status == "rejected" or res.error.startswith("not authorized")
            kind = "not_select" if refused else "sql_error"
            raise ServeError(422, kind, f"SQLite refused the query: {res.error}", sql=sql)
        return res
