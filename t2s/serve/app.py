"""The FastAPI app of `t2s serve`: the configured pipeline over HTTP, and the demo page.

Endpoints (request and response bodies are the pydantic models below, so /openapi.json documents them):

- `POST /generate_sql`: `{question, db_id}` or `{question, schema}` (CREATE TABLE text), optional `evidence`,
  `execute`, `max_rows` -> `{sql, candidates, execution, trace, error, execution_time_ms}`. With `execute`, the final
  SQL is validated and run read-only; a model query that fails validation or SQLite comes back in
  `execution.error` (the request itself was fine). A `schema` request is never executed (its database is empty).
- `POST /execute`: `{db_id, sql, max_rows}` -> rows. Anything but one valid SELECT over the database's tables, a
  query past the time limit, or an SQLite error is a 422 saying what was rejected and why.
- `GET /databases`, `GET /databases/{db_id}/schema`, `GET /health`; `GET /` is the demo page (static files in
  `t2s/serve/static/`, no build step, nothing fetched from the network).

Client errors are `{"detail": {"kind": ..., "message": ...}}` with status 400, 404, 405, 413 or 422, body-parse
errors included; a message quotes at most a short prefix of what it rejects.

Every request is bounded before it costs anything: the body (`MAX_BODY_BYTES`), strict JSON (no NaN / Infinity,
no number that overflows, no lone surrogate, at most `MAX_JSON_DEPTH` levels), strict types (`"execute": "yes"`
is not a boolean), the Host header (the bound host, 127.0.0.1 and localhost: no DNS rebinding), the prompt
against each model's context (`service.PromptBudget`), the SQL's size and shape (`validate.py`), and the rows a
response carries (`MAX_RESPONSE_BYTES`, cut with `truncated_by: "max_bytes"`). There are no /docs or /redoc pages
(FastAPI's load their scripts from a CDN); `/openapi.json` documents the API.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from t2s.db.types import ExecResult
from t2s.serve.service import ServeError, Service
from t2s.serve.validate import MAX_SQL_CHARS
from t2s.types import Task

log = logging.getLogger("t2s.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: request body bytes at most (the largest field, `schema`, takes 500,000 characters)
MAX_BODY_BYTES = 4 * 1024 * 1024
#: nesting of arrays and objects in a request body at most (the API's bodies have 1 level)
MAX_JSON_DEPTH = 32
#: bytes of rows a response carries at most (as JSON); rows past it are cut, with `truncated_by: "max_bytes"`
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: characters of the input an error message or field error quotes at most
QUOTE_CHARS = 100
#: characters of an error message at most
MESSAGE_CHARS = 2000


# ---------------------------------------------------------------------------------------------------- models
class GenerateRequest(BaseModel):
    """A question on a database of the served dataset (`db_id`) or on a schema given as DDL (`schema`)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", strict=True)

    question: str = Field(min_length=1, max_length=4000, description="the question in natural language")
    db_id: str | None = Field(None, max_length=200, description="a database of the served dataset (GET /databases)")
    schema_ddl: str | None = Field(None, alias="schema", max_length=500_000,
                                   description="CREATE TABLE statements, instead of db_id; never executed against")
    evidence: str = Field("", max_length=4000, description="external knowledge (BIRD's evidence), optional")
    execute: bool = Field(False, description="also run the final SQL (db_id only) and return its rows")
    max_rows: int = Field(100, ge=1, le=100_000, description="rows returned at most (capped by serve.max_rows)")


class ExecuteRequest(BaseModel):
    """SQL to run read-only on a database of the served dataset (the demo page's Run button)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    db_id: str = Field(min_length=1, max_length=200)
    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS, description="one SELECT (or WITH ... SELECT)")
    max_rows: int = Field(100, ge=1, le=100_000, description="rows returned at most (capped by serve.max_rows)")


class ExecutionOut(BaseModel):
    """Rows of a query (values as JSON: blobs as base64 strings, NaN/inf as strings) or why it did not run."""

    status: str = Field(description="ok | timeout | resource_limit | rejected | error")
    columns: list[str] = []
    rows: list[list[Any]] = []
    truncated: bool = Field(False, description="rows were cut: see truncated_by")
    truncated_by: str | None = Field(None, description="max_rows (the row cap) | max_bytes (the response size cap, "
                                                       f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MiB of rows)")
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
    """Why a request was refused: `kind` (e.g. unknown_database, invalid_request, invalid_json, not_select,
    unknown_column, timeout, prompt_too_long) and a message naming what was rejected; `sql` echoes the start of
    rejected SQL, `errors` lists field errors, `prompt_tokens` / `context_tokens` come with prompt_too_long."""

    kind: str
    message: str
    sql: str | None = None
    errors: list[dict[str, Any]] | None = None
    prompt_tokens: int | None = None
    context_tokens: int | None = None


class ErrorOut(BaseModel):
    detail: ErrorDetail


# ---------------------------------------------------------------------------------------------------- helpers
def _json_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _json_size(v: Any, left: int) -> int:
    """Bytes of `v` (a `_json_value`) in a JSON body, or more than `left` when it is larger than that."""
    if isinstance(v, str):
        if len(v) > left:  # at least one byte per character
            return left + 1
        return len(json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return len(json.dumps(v))


def execution_out(res: ExecResult, max_bytes: int = MAX_RESPONSE_BYTES) -> ExecutionOut:
    """An `ExecResult` as JSON-safe rows, cut where they pass `max_bytes` of JSON (`truncated_by: max_bytes`)."""
    rows: list[list[Any]] = []
    left = max_bytes
    cut = False
    for row in res.rows:
        values = [_json_value(v) for v in row]
        for v in values:
            left -= _json_size(v, left) + 1
            if left < 0:
                break
        if left < 0:
            cut = True
            break
        rows.append(values)
    by = "max_bytes" if cut else ("max_rows" if res.truncated else None)
    return ExecutionOut(status=res.status, columns=list(res.columns), rows=rows, truncated=by is not None,
                        truncated_by=by, seconds=res.seconds, error=res.error if not res.timed_out else "timed out")


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _quote(v: Any) -> Any:
    """A short stand-in for a rejected input value: scalars as they are, strings clipped, containers summarized."""
    if v is None or isinstance(v, (bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (bytes, bytearray)):
        head = bytes(v[:QUOTE_CHARS]).decode("utf-8", "replace")
        return head if len(v) <= QUOTE_CHARS else f"{head}... ({len(v):,} bytes)"
    if isinstance(v, str):
        return clip(v)
    if isinstance(v, dict):
        keys = ", ".join(clip(str(k), 40) for k in list(v)[:10])
        return f"<object with {len(v)} key(s): {keys}{', ...' if len(v) > 10 else ''}>"
    if isinstance(v, (list, tuple)):
        return f"<array of {len(v)} item(s)>"
    return clip(str(v))


def field_errors(errors: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's field errors with every quoted input and location clipped (a 1 MB question is not echoed)."""
    out = []
    for e in list(errors)[:20]:
        item: dict[str, Any] = {"type": str(e.get("type", "")),
                                "loc": [p if isinstance(p, int) else clip(str(p), 40) for p in e.get("loc", ())],
                                "msg": clip(str(e.get("msg", "")), 300)}
        if "input" in e:
            item["input"] = _quote(e["input"])
        ctx = e.get("ctx")
        if isinstance(ctx, dict):
            item["ctx"] = {clip(str(k), 40): _quote(v) for k, v in list(ctx.items())[:10]}
        out.append(item)
    return out


def _finite(v: Any) -> Any:
    """`v` with every non-finite float as a string (JSON has no NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


class SafeJSONResponse(JSONResponse):
    """Strict JSON whatever the content holds: non-finite floats as strings, and text that is not valid Unicode
    (a lone surrogate) escaped as `\\uXXXX` instead of failing to encode."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(json.loads(text), ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(status: int, kind: str, message: str, **extra: Any) -> SafeJSONResponse:
    """The API's error body, `{"detail": {"kind", "message", ...}}`, with the message clipped."""
    detail = {"kind": kind, "message": clip(message, MESSAGE_CHARS), **extra}
    return SafeJSONResponse(status_code=status, content={"detail": detail})


# ---------------------------------------------------------------------------------------------------- middleware
def host_name(header: str) -> str:
    """The name in a Host header, without the port: `127.0.0.1:8000` -> `127.0.0.1`, `[::1]:8000` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.split(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Answer 400 `invalid_host` to a request whose Host header is none of `allowed` (DNS rebinding: a page on
    another site that resolves its own name to 127.0.0.1 must not reach the server). Starlette's
    `TrustedHostMiddleware`, with the API's error shape; `"*"` allows any host."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {h.lower().strip("[]") for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        raw = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
        if host_name(raw) in self.allowed:
            await self.app(scope, receive, send)
            return
        response = error_response(400, "invalid_host", f"Host {clip(raw, 60)!r} is not served here; use one of "
                                                       f"{', '.join(sorted(self.allowed))}")
        await response(scope, receive, send)


class _Rejected(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _reject_constant(name: str) -> Any:
    raise _Rejected(422, "invalid_json", f"the body is not strict JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _Rejected(422, "invalid_json", f"the body is not strict JSON: the number {clip(text, 40)} is out of "
                                             "range for a 64-bit float")
    return v


def check_json_body(body: bytes) -> None:
    """Raise `_Rejected` unless `body` is strict JSON: UTF-8, no NaN / Infinity, no number that overflows a float,
    no lone surrogate in a string, at most `MAX_JSON_DEPTH` levels of nesting."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Rejected(422, "invalid_json", f"the body is not valid UTF-8 (byte 0x{body[e.start]:02x} at offset "
                                             f"{e.start}); send JSON encoded as UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise _Rejected(422, "invalid_json", "the body nests arrays or objects too deeply") from None
    except json.JSONDecodeError as e:
        raise _Rejected(422, "invalid_json", f"the body is not JSON: {e.msg} at line {e.lineno} column {e.colno}") \
            from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise _Rejected(422, "invalid_json", f"the body is not strict JSON: {clip(str(e), 200)}") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                raise _Rejected(422, "invalid_json", f"a string of the body holds a lone surrogate "
                                                     f"(\\u{ord(v[e.start]):04x} at character {e.start}), which is "
                                                     "not Unicode text") from None
        elif isinstance(v, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise _Rejected(422, "invalid_json", f"the body nests arrays or objects more than {MAX_JSON_DEPTH} "
                                                     "levels deep")
            items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
            stack.extend((x, depth + 1) for x in items)


class BodyCheck:
    """Read a request's body up to `max_bytes` (413 `body_too_large` past it), check it is strict JSON
    (`check_json_body`; 422 `invalid_json` otherwise) and hand the same bytes to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send, size)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            try:
                check_json_body(body)
            except _Rejected as e:
                await error_response(e.status, e.kind, e.message)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        await error_response(413, "body_too_large", f"the request body has {size:,} bytes or more; at most "
                                                    f"{self.max_bytes:,} are accepted")(scope, receive, send)


def default_hosts(bound: str) -> list[str]:
    """The Host names a server bound to `bound` answers: that address, 127.0.0.1 and localhost; any host when it
    listens on every interface (0.0.0.0 / ::), where no name list can be known in advance."""
    if bound in ("", "0.0.0.0", "::", "[::]"):
        return ["*"]
    return sorted({bound.strip("[]"), "127.0.0.1", "localhost"})


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
def create_app(service: Service, *, close_service: bool = True, allowed_hosts: Iterable[str] | None = None) -> FastAPI:
    """The app over a started `Service`; with `close_service`, the app's shutdown closes the service.

    `allowed_hosts`: the Host header values answered (default `default_hosts(serve.host)`); others get a 400.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        if close_service:
            service.close()

    app = FastAPI(title="t2s serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  default_response_class=SafeJSONResponse,
                  description="The configured t2s text-to-SQL pipeline. " + (__doc__ or "").split("\n\n")[1])
    app.state.service = service

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        extra = {k: clip(v, 500) if isinstance(v, str) else v for k, v in exc.extra.items()}
        return error_response(exc.status, exc.kind, exc.message, **extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc.errors())
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        return error_response(422, "invalid_request", f"invalid request ({where})", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "body_too_large"}
        message = exc.detail if isinstance(exc.detail, str) else str(exc.status_code)
        if exc.status_code == 404:
            message = f"no endpoint {request.method} {clip(request.url.path, 200)}; see /openapi.json"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {clip(request.url.path, 200)}; see /openapi.json"
        return error_response(exc.status_code, kinds.get(exc.status_code, "http_error"), message)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error_response(500, "internal_error", f"the server failed on this request ({type(exc).__name__}); "
                                                     "its log has the details")

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
                execution = ExecutionOut(status="rejected", error=clip(e.message, MESSAGE_CHARS))
            except Exception as e:  # noqa: BLE001 - the model's SQL broke execution: the request itself was fine
                log.exception("executing the SQL of question %s failed", task.qid)
                execution = ExecutionOut(status="error", error=f"execution failed: {type(e).__name__}: "
                                                               f"{clip(str(e), 300)}")
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
    app.add_middleware(BodyCheck)
    hosts = list(allowed_hosts) if allowed_hosts is not None else default_hosts(str(service.serve.host))
    app.add_middleware(HostCheck, allowed=hosts)  # outermost: a foreign Host is refused before its body is read
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
