"""The FastAPI app of `t2s serve` (seed 003, phase 5): the configured pipeline over HTTP, and the demo page.

Endpoints (request and response bodies are the pydantic models below, so /openapi.json documents them):

- `POST /generate_sql`: `{question, db_id}` or `{question, schema}` (CREATE TABLE text), optional `evidence`,
  `execute`, `max_rows` -> `{sql, candidates, execution, trace, error, execution_time_ms}`. With `execute`, the final
  SQL is validated and run read-only; a model query that fails validation or SQLite comes back in
  `execution.error` (the request itself was fine). A `schema` request is never executed (its database is empty).
- `POST /execute`: `{db_id, sql, max_rows}` -> rows. Anything but one valid SELECT over the database's tables, a
  query past the time limit, or an SQLite error is a 422 saying what was rejected and why.
- `GET /databases`, `GET /databases/{db_id}/schema`, `GET /health`; `GET /` is the demo page (static files in
  `t2s/serve/static/`, no build step, nothing fetched from the network).

Client errors are `{"detail": {"kind": ..., "message": ...}}` with status 404 (unknown database) or 422.
"""

from __future__ import annotations

import base64
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from t2s.db.types import ExecResult
from t2s.serve.service import ServeError, Service
from t2s.types import Task

STATIC_DIR = Path(__file__).resolve().parent / "static"


# ---------------------------------------------------------------------------------------------------- models
class GenerateRequest(BaseModel):
    """A question on a database of the served dataset (`db_id`) or on a schema given as DDL (`schema`)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    question: str = Field(min_length=1, max_length=4000, description="the question in natural language")
    db_id: str | None = Field(None, max_length=200, description="a database of the served dataset (GET /databases)")
    schema_ddl: str | None = Field(None, alias="schema", max_length=500_000,
                                   description="CREATE TABLE statements, instead of db_id; never executed against")
    evidence: str = Field("", max_length=4000, description="external knowledge (BIRD's evidence), optional")
    execute: bool = Field(False, description="also run the final SQL (db_id only) and return its rows")
    max_rows: int = Field(100, ge=1, le=100_000, description="rows returned at most (capped by serve.max_rows)")


class ExecuteRequest(BaseModel):
    """SQL to run read-only on a database of the served dataset (the demo page's Run button)."""

    model_config = ConfigDict(extra="forbid")

    db_id: str = Field(min_length=1, max_length=200)
    sql: str = Field(min_length=1, max_length=100_000, description="one SELECT (or WITH ... SELECT)")
    max_rows: int = Field(100, ge=1, le=100_000, description="rows returned at most (capped by serve.max_rows)")


class ExecutionOut(BaseModel):
    """Rows of a query (values as JSON: blobs as base64 strings, NaN/inf as strings) or why it did not run."""

    status: str = Field(description="ok | timeout | rejected | error")
    columns: list[str] = []
    rows: list[list[Any]] = []
    truncated: bool = False
    seconds: float = 0.0
    error: str | None = None


class CandidateOut(BaseModel):
    sql: str
    origin: str = Field(description="the plugin that produced it, e.g. generator/zero_shot")
    schema_view: str | None = None


class StageOut(BaseModel):
    """What one stage did to the question (its trace event)."""

    stage: str
    plugin: str
    change: str
    seconds: float
    llm_calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = Field(0.0, description="model time charged to this question in this stage")
    sql_changed: bool = Field(False, description="whether the stage changed the candidate SQL (or set final_sql)")
    sql_before: list[str] = Field([], description="candidate SQL before the stage; empty when unchanged")
    sql_after: list[str] = Field([], description="candidate SQL after the stage (final SQL for the selector)")
    error: str | None = None


class TraceOut(BaseModel):
    """The question's trace: stages in order and totals; `batch_size` questions shared its pipeline batch."""

    stages: list[StageOut]
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    model_seconds: float
    seconds: float = Field(description="pipeline seconds charged to this question (sum over stages)")
    queue_seconds: float = Field(description="seconds the question waited for its batch to start")
    batch_size: int


class GenerateResponse(BaseModel):
    db_id: str
    sql: str | None = Field(description="the pipeline's final SQL; null when a stage failed (see error)")
    candidates: list[CandidateOut]
    execution: ExecutionOut | None = None
    trace: TraceOut
    error: str | None = Field(None, description="the stage failure that left the question without SQL")
    execution_time_ms: float = Field(description="wall time of the whole request, milliseconds")


class ColumnOut(BaseModel):
    name: str
    type: str
    primary_key: bool = False


class TableOut(BaseModel):
    name: str
    columns: list[ColumnOut]


class ForeignKeyOut(BaseModel):
    table: str
    column: str
    ref_table: str
    ref_column: str


class SchemaOut(BaseModel):
    db_id: str
    tables: list[TableOut]
    foreign_keys: list[ForeignKeyOut]
    text: str = Field(description="the schema as the pipeline's prompts show it (the run's schema_format)")


class DatabaseOut(BaseModel):
    db_id: str
    n_questions: int = Field(description="questions of the served dataset on this database")
    sample_questions: list[str]


class HealthOut(BaseModel):
    status: str
    dataset: str
    databases: int
    stages: list[str]
    llms: dict[str, str] = Field(description="named LLM -> model id, loaded at start-up")
    startup_seconds: float
    batches: int
    questions: int
    largest_batch: int


class ErrorDetail(BaseModel):
    """Why a request was refused: `kind` (e.g. unknown_database, invalid_request, not_select, unknown_column,
    timeout) and a message naming what was rejected; `sql` echoes rejected SQL, `errors` lists field errors."""

    kind: str
    message: str
    sql: str | None = None
    errors: list[dict[str, Any]] | None = None


class ErrorOut(BaseModel):
    detail: ErrorDetail


# ---------------------------------------------------------------------------------------------------- helpers
def _json_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def execution_out(res: ExecResult) -> ExecutionOut:
    """An `ExecResult` as JSON-safe rows."""
    return ExecutionOut(status=res.status, columns=list(res.columns),
                        rows=[[_json_value(v) for v in row] for row in res.rows], truncated=res.truncated,
                        seconds=res.seconds, error=res.error if not res.timed_out else "timed out")


def trace_out(task: Task) -> TraceOut:
    """The trace summary of a served question."""
    info = task.example.meta.get("serve", {})
    stages = []
    for e in task.trace:
        changed = e.sql_before != e.sql_after
        stages.append(StageOut(stage=e.stage, plugin=e.plugin, change=e.change, seconds=e.seconds,
                               llm_calls=e.llm_calls, cached_calls=e.cached_calls, prompt_tokens=e.prompt_tokens,
                               completion_tokens=e.completion_tokens, model_seconds=e.model_seconds,
                               sql_changed=changed,
                               sql_before=e.sql_before if changed else [], sql_after=e.sql_after if changed else [],
                               error=e.error))
    return TraceOut(stages=stages, llm_calls=sum(s.llm_calls for s in stages),
                    prompt_tokens=sum(s.prompt_tokens for s in stages),
                    completion_tokens=sum(s.completion_tokens for s in stages),
                    model_seconds=sum(s.model_seconds for s in stages),
                    seconds=sum(s.seconds for s in stages), queue_seconds=float(info.get("queue_seconds", 0.0)),
                    batch_size=int(info.get("batch_size", 1)))


# ---------------------------------------------------------------------------------------------------- app
def create_app(service: Service, *, close_service: bool = True) -> FastAPI:
    """The app over a started `Service`; with `close_service`, the app's shutdown closes the service."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        if close_service:
            service.close()

    app = FastAPI(title="t2s serve", version="1", lifespan=lifespan,
                  description="The configured t2s text-to-SQL pipeline. " + (__doc__ or "").split("\n\n")[1])
    app.state.service = service

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail()})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5])
        return JSONResponse(status_code=422, content={"detail": {
            "kind": "invalid_request", "message": f"invalid request ({where})", "errors": errors}})

    @app.get("/health", response_model=HealthOut)
    def health() -> HealthOut:
        b = service.batcher
        return HealthOut(status="ok", dataset=service.dataset_name, databases=len(service.databases),
                         stages=service.stages(), llms=service.llms, startup_seconds=service.startup_seconds,
                         batches=b.batches, questions=b.questions, largest_batch=b.largest_batch)

    @app.get("/databases", response_model=list[DatabaseOut])
    def databases() -> list[DatabaseOut]:
        return [DatabaseOut(db_id=d.db_id, n_questions=d.n_questions, sample_questions=d.questions)
                for d in sorted(service.databases.values(), key=lambda d: d.db_id)]

    @app.get("/databases/{db_id}/schema", response_model=SchemaOut, responses={404: {"model": ErrorOut}})
    def schema(db_id: str) -> SchemaOut:
        s = service.schema(db_id)
        return SchemaOut(
            db_id=db_id,
            tables=[TableOut(name=t.name, columns=[ColumnOut(name=c.name, type=c.type or "", primary_key=c.primary_key)
                                                   for c in t.columns]) for t in s.tables],
            foreign_keys=[ForeignKeyOut(table=f.table, column=f.column, ref_table=f.ref_table, ref_column=f.ref_column)
                          for f in s.foreign_keys],
            text=service.schema_text(db_id))

    @app.post("/generate_sql", response_model=GenerateResponse,
              responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
    def generate_sql(req: GenerateRequest) -> GenerateResponse:
        start = time.perf_counter()
        if req.execute and req.schema_ddl is not None:
            raise ServeError(422, "bad_request", "execute=true needs db_id: a schema given as DDL has no rows, so "
                                                 "its SQL is never executed")
        task = service.generate(question=req.question, db_id=req.db_id, ddl=req.schema_ddl, evidence=req.evidence)
        execution = None
        if req.execute and task.final_sql:
            try:
                execution = execution_out(service.execute(task, task.final_sql, req.max_rows))
            except ServeError as e:
                execution = ExecutionOut(status="rejected", error=e.message)
        elif req.execute:
            execution = ExecutionOut(status="rejected", error="the pipeline produced no SQL to run")
        return GenerateResponse(
            db_id=task.example.db_id, sql=task.final_sql,
            candidates=[CandidateOut(sql=c.sql, origin=c.origin, schema_view=c.schema_view) for c in task.candidates],
            execution=execution, trace=trace_out(task), error=task.error,
            execution_time_ms=(time.perf_counter() - start) * 1000.0)

    @app.post("/execute", response_model=ExecutionOut, responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
    def execute(req: ExecuteRequest) -> ExecutionOut:
        return execution_out(service.execute_on(req.db_id, req.sql, req.max_rows))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, with every `db_id` documented as one of the served databases (an enum)."""
        if app.openapi_schema is None:
            _document_db_ids(default_openapi(), sorted(service.databases))
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _document_db_ids(spec: dict[str, Any], ids: list[str]) -> None:
    """Set `enum: ids` on the string schema of every `db_id` (request bodies and the path parameter), in place."""
    if not ids:
        return

    def constrain(node: dict[str, Any]) -> None:
        for option in node.get("anyOf", [node]):
            if option.get("type") == "string":
                option["enum"] = ids

    for name in ("GenerateRequest", "ExecuteRequest"):
        constrain(spec["components"]["schemas"][name]["properties"]["db_id"])
    for param in spec["paths"]["/databases/{db_id}/schema"]["get"]["parameters"]:
        if param["name"] == "db_id":
            constrain(param["schema"])
