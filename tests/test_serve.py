"""`t2s serve`: the API over the configured pipeline (FastAPI TestClient), the validation layer, DDL schemas, batching.

Two real services over the demo set: one with the tiny random-weight model (`llm=tiny`, the real HF path), one with
the scripted LLM (`llm=scripted`, answering each demo question with its gold SQL, so generate -> validate -> execute
returns real rows).
Every bad input must get a 4xx that says what was rejected, and no database file may change. The hostile inputs of
issue 20 (lone surrogates, NaN, bodies that are not UTF-8, strings for booleans, deep nesting written by a client or
by the model, an oversized schema, an oversized result, a foreign Host header) each have a test here.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SHARED_DATA, compose_config, requires_spider
from fastapi.testclient import TestClient
from omegaconf import DictConfig

from t2s.data.demo import DEMO_DIR
from t2s.db.introspect import connect_readonly, introspect
from t2s.serve.app import MAX_BODY_BYTES, MAX_RESPONSE_BYTES, SafeJSONResponse, create_app, default_hosts
from t2s.serve.ddl import DDLCache, DDLError, build_ddl_database
from t2s.serve.service import Batcher, ServeError, Service
from t2s.serve.validate import MAX_DEPTH, MAX_SQL_CHARS, SQLRejected, validate_select
from t2s.types import Example

DEMO_QUESTIONS = json.loads((DEMO_DIR / "questions.json").read_text())
#: a query that runs far past a 1 s limit on the demo databases (a 6-way cross join, ~10^10 rows)
RUNAWAY = "SELECT count(*) FROM books a, books b, books c, books d, books e, books f, books g"
#: the Host the test clients send (the app answers the bound host, 127.0.0.1 and localhost only)
LOCAL = "http://127.0.0.1"
#: 60 nested parentheses: sqlglot's recursive parser ran out of stack at 50 (a 500 before)
DEEP_SQL = "SELECT " + "(" * 60 + "1" + ")" * 60
#: deep nesting without parentheses: a RecursionError inside sqlglot itself
NOT_CHAIN_SQL = "SELECT " + "NOT " * 300 + "1"
#: about 10 MB of rows, more than the response cap (MAX_RESPONSE_BYTES)
HUGE_RESULT_SQL = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20) "
                   "SELECT x, hex(randomblob(250000)) FROM c")
#: questions the scripted model answers with hostile SQL (its own writing, not the client's)
HOSTILE_ANSWERS = {"Nest the query deeply": DEEP_SQL, "Nest NOT deeply": NOT_CHAIN_SQL,
                   "Return a huge result": HUGE_RESULT_SQL, "Hold the batch": RUNAWAY}


def big_ddl(n_tables: int = 490, n_columns: int = 17) -> str:
    """CREATE TABLE text of the size that hung the batcher with `llm=tiny` (490 tables, 334 KB by default)."""
    return "\n".join(
        f"CREATE TABLE table_{t} (id INTEGER PRIMARY KEY, "
        + ", ".join(f"column_number_{c}_of_t{t} VARCHAR(40)" for c in range(n_columns)) + ");"
        for t in range(n_tables))


def gold_rules() -> list[dict[str, str]]:
    """Rules for `llm=scripted` (t2s.llm.scripted): each demo question is answered with its gold SQL.

    Longest questions first, so a question that contains a shorter one gets its own answer.
    """
    qs = sorted(DEMO_QUESTIONS, key=lambda q: -len(q["question"]))
    return [{"match": re.escape(q["question"]), "reply": f"```sql\n{q['query']}\n```"} for q in qs]


def scripted_config(cache_dir: Path, tmp: Path, overrides: list[str] | None = None) -> DictConfig:
    """The demo config with the scripted LLM answering gold SQL, a 1 s query limit and no response cache."""
    cfg = compose_config(["llm=scripted", "db.timeout=1.0", "run.llm_cache=false", *(overrides or [])],
                         cache_dir=cache_dir, output_root=tmp)
    cfg.llm.rules = gold_rules() + [{"match": re.escape(q), "reply": f"```sql\n{sql}\n```"}
                                    for q, sql in HOSTILE_ANSWERS.items()]
    return cfg


def db_hashes(*folders: Path) -> dict[str, str]:
    """sha256 of every file under the folders (database files and any journal next to them)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scripted(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, TestClient]]:
    tmp = tmp_path_factory.mktemp("serve-scripted")
    service = Service(scripted_config(session_cache, tmp, ["serve.max_wait_ms=300"]), tmp / "run")
    with TestClient(create_app(service), base_url=LOCAL) as client:
        yield service, client


@pytest.fixture(scope="module")
def tiny(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, TestClient]]:
    tmp = tmp_path_factory.mktemp("serve-tiny")
    cfg = compose_config(["db.timeout=1.0", "generator.max_new_tokens=24"], cache_dir=session_cache, output_root=tmp)
    service = Service(cfg, tmp / "run")
    with TestClient(create_app(service), base_url=LOCAL) as client:
        yield service, client


def demo_rows(service: Service, db_id: str, sql: str) -> list[list[Any]]:
    with connect_readonly(service.databases[db_id].path) as conn:
        return [list(r) for r in conn.execute(sql).fetchall()]


# ------------------------------------------------------------------------------------------------ read endpoints
def test_health_lists_the_configured_pipeline_and_loaded_models(tiny: tuple[Service, TestClient]) -> None:
    service, client = tiny
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["dataset"] == "demo" and body["databases"] == 3
    assert body["stages"][4] == "generator/zero_shot" and body["stages"][-1] == "selector/first"
    assert body["llms"]["generator"].startswith("tiny")
    llm = service.env.llm("generator")
    assert llm.inner.loaded, "models load at start-up, not on the first request"


def test_databases_and_schema(tiny: tuple[Service, TestClient]) -> None:
    service, client = tiny
    dbs = client.get("/databases").json()
    assert [d["db_id"] for d in dbs] == ["library", "school", "shop"]
    assert sum(d["n_questions"] for d in dbs) == len(DEMO_QUESTIONS)
    assert dbs[0]["sample_questions"][0] == DEMO_QUESTIONS[0]["question"]
    body = client.get("/databases/library/schema").json()
    truth = introspect(service.databases["library"].path, "library")
    assert [t["name"] for t in body["tables"]] == [t.name for t in truth.tables]
    assert [c["name"] for c in body["tables"][0]["columns"]] == [c.name for c in truth.tables[0].columns]
    assert body["foreign_keys"] and "CREATE TABLE" in body["text"]  # the run's schema_format (ddl)
    r = client.get("/databases/nope/schema")
    assert r.status_code == 404 and r.json()["detail"]["kind"] == "unknown_database"
    assert "library" in r.json()["detail"]["message"]


def test_demo_page_and_openapi(tiny: tuple[Service, TestClient]) -> None:
    _, client = tiny
    page = client.get("/")
    assert page.status_code == 200 and 'id="db-select"' in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", ""), "the page fetches nothing from the network"
    assert client.get("/static/app.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/generate_sql", "/execute", "/databases", "/databases/{db_id}/schema", "/health"} <= set(spec["paths"])
    assert "GenerateRequest" in spec["components"]["schemas"]
    for path in ("/docs", "/redoc"):  # FastAPI's pages load swagger-ui / redoc from a CDN: not served
        r = client.get(path)
        assert r.status_code == 404 and r.json()["detail"]["kind"] == "not_found"


# ------------------------------------------------------------------------------------------------ generation
def test_generate_with_tiny_model_returns_sql_candidates_and_trace(tiny: tuple[Service, TestClient]) -> None:
    service, client = tiny
    r = client.post("/generate_sql", json={"question": "How many books are there?", "db_id": "library",
                                           "execute": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sql"] is not None and body["candidates"][0]["origin"] == "generator/zero_shot"
    assert [f"{s['stage']}/{s['plugin']}" for s in body["trace"]["stages"]] == service.stages()
    gen = body["trace"]["stages"][4]
    assert gen["llm_calls"] == 1 and gen["sql_changed"] and gen["sql_after"] == [body["sql"]]
    assert body["trace"]["llm_calls"] == 1 and body["trace"]["prompt_tokens"] > 0
    # token soup from random weights: validated before running, reported in execution, not a server error
    assert body["execution"]["status"] in ("ok", "rejected", "error")


def test_generate_and_execute_returns_the_rows_of_the_final_sql(scripted: tuple[Service, TestClient]) -> None:
    service, client = scripted
    q = next(q for q in DEMO_QUESTIONS if q["db_id"] == "shop" and "JOIN" in q["query"].upper())
    r = client.post("/generate_sql", json={"question": q["question"], "db_id": "shop", "execute": True,
                                           "max_rows": 1000})
    body = r.json()
    assert r.status_code == 200 and body["sql"] == q["query"]
    assert body["execution"]["status"] == "ok"
    assert sorted(map(str, body["execution"]["rows"])) == sorted(map(str, demo_rows(service, "shop", q["query"])))
    assert body["execution_time_ms"] > 0


def test_concurrent_requests_share_a_pipeline_batch(scripted: tuple[Service, TestClient]) -> None:
    service, client = scripted
    qs = [q for q in DEMO_QUESTIONS if q["db_id"] == "school"][:4]
    results: dict[int, Any] = {}

    def ask(i: int) -> None:
        results[i] = client.post("/generate_sql", json={"question": qs[i]["question"], "db_id": "school"}).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(qs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i]["sql"] for i in range(len(qs))] == [q["query"] for q in qs], "answers go to their requests"
    assert max(r["trace"]["batch_size"] for r in results.values()) >= 2
    assert service.batcher.largest_batch >= 2


def test_ddl_schema_builds_an_empty_database_and_is_never_executed(scripted: tuple[Service, TestClient],
                                                                     session_cache: Path) -> None:
    _, client = scripted
    ddl = ("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name VARCHAR(40), age INT);\n"
           "CREATE TABLE concert (concert_id INT PRIMARY KEY, singer_id INT REFERENCES singer(singer_id), year TEXT);")
    r = client.post("/generate_sql", json={"question": "How many singers are there?", "schema": ddl})
    body = r.json()
    assert r.status_code == 200 and body["db_id"].startswith("ddl_") and body["execution"] is None
    built = build_ddl_database(ddl, session_cache)
    assert built.db_id == body["db_id"] and built.tables == ("singer", "concert")
    schema = introspect(built.path, built.db_id)
    assert [c.name for c in schema.table("concert").columns] == ["concert_id", "singer_id", "year"]
    assert schema.foreign_keys[0].ref_table == "singer"
    with connect_readonly(built.path) as conn:
        assert conn.execute("SELECT count(*) FROM singer").fetchone()[0] == 0
    r = client.post("/generate_sql", json={"question": "How many?", "schema": ddl, "execute": True})
    assert r.status_code == 422 and "never executed" in r.json()["detail"]["message"]


@pytest.mark.parametrize("ddl, says", [
    ("CREATE TABLE (", "does not parse"),
    ("DROP TABLE singer", "only hold CREATE TABLE"),
    ("SELECT 1", "only hold CREATE TABLE"),
    ("CREATE TABLE t AS SELECT 1 AS x", "without data"),
    ("CREATE TABLE a (x INT); CREATE TABLE a (y INT);", "SQLite rejected"),
    ("   ", "empty"),
])
def test_unusable_ddl_is_a_422(scripted: tuple[Service, TestClient], ddl: str, says: str) -> None:
    _, client = scripted
    r = client.post("/generate_sql", json={"question": "How many?", "schema": ddl})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["kind"] == "bad_schema" and says in r.json()["detail"]["message"]


def test_build_ddl_database_is_keyed_by_content(tmp_path: Path) -> None:
    a = build_ddl_database("CREATE TABLE t (x INT)", tmp_path)
    b = build_ddl_database("create table t (x int);", tmp_path)
    c = build_ddl_database("CREATE TABLE t (y INT)", tmp_path)
    assert a.path == b.path and a.path != c.path and a.path.is_file()
    with pytest.raises(DDLError, match="no CREATE TABLE|only hold"):
        build_ddl_database("CREATE VIEW v AS SELECT 1", tmp_path)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("payload, status, kind", [
    ({"question": "How many?", "db_id": "nope"}, 404, "unknown_database"),
    ({"question": "", "db_id": "library"}, 422, "invalid_request"),
    ({"question": "   ", "db_id": "library"}, 422, "empty_question"),
    ({"question": "How many?"}, 422, "bad_request"),
    ({"question": "How many?", "db_id": "library", "schema": "CREATE TABLE t (x INT)"}, 422, "bad_request"),
    ({"question": "How many?", "db_id": "library", "max_rows": 0}, 422, "invalid_request"),
    ({"question": "How many?", "db_id": "library", "extra": 1}, 422, "invalid_request"),
])
def test_bad_generate_requests(scripted: tuple[Service, TestClient], payload: dict[str, Any], status: int,
                               kind: str) -> None:
    _, client = scripted
    r = client.post("/generate_sql", json=payload)
    assert r.status_code == status, r.text
    assert r.json()["detail"]["kind"] == kind and r.json()["detail"]["message"]


@pytest.mark.parametrize("sql, kind, says", [
    ("DROP TABLE books", "not_select", "DROP TABLE"),
    ("UPDATE books SET title = 'x'", "not_select", "UPDATE"),
    ("DELETE FROM books", "not_select", "DELETE"),
    ("INSERT INTO books (title) VALUES ('x')", "not_select", "INSERT"),
    ("ATTACH DATABASE '/tmp/t2s_evil.sqlite' AS evil", "not_select", "ATTACH"),
    ("PRAGMA user_version = 3", "not_select", "PRAGMA"),
    ("SELECT 1; DROP TABLE books", "multiple_statements", "2 statements"),
    ("SELECT count(*) FROM books; SELECT 2", "multiple_statements", "2 statements"),
    ("SELECT title FROM bookz", "unknown_table", "bookz"),
    ("SELECT titel FROM books", "unknown_column", "titel"),
    ("SELECT * FROM sqlite_master", "unknown_table", "sqlite_master"),
    # issue 20's side doors: the schema table behind a CTE of its name or a prefix, PRAGMA table functions
    ("WITH sqlite_master AS (SELECT 1) SELECT * FROM main.sqlite_master", "unknown_table", "internal table"),
    ("SELECT sql FROM main.sqlite_schema", "unknown_table", "internal table"),
    ("SELECT * FROM temp.sqlite_master", "unknown_table", "outside database"),
    ("WITH b AS (SELECT 1) SELECT * FROM main.b", "unknown_table", "no table 'b'"),
    ("SELECT * FROM pragma_database_list()", "not_select", "pragma_database_list"),
    ("SELECT name FROM pragma_table_info('books')", "not_select", "pragma_table_info"),
    ("SELECT fts3_tokenizer('simple')", "not_select", "fts3_tokenizer"),  # the executor's authorizer
    ("SELEC title FROM books", "syntax", "does not parse"),
    ("-- nothing", "empty", "no statement"),
    (RUNAWAY, "timeout", "limit"),
])
def test_execute_rejects_with_what_and_why(scripted: tuple[Service, TestClient], sql: str, kind: str,
                                           says: str) -> None:
    _, client = scripted
    started = time.perf_counter()
    r = client.post("/execute", json={"db_id": "library", "sql": sql})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["kind"] == kind and says in detail["message"], detail
    assert time.perf_counter() - started < 10, "a runaway query stops near the 1 s limit"


def test_execute_unknown_db_and_row_cap(scripted: tuple[Service, TestClient]) -> None:
    service, client = scripted
    assert client.post("/execute", json={"db_id": "nope", "sql": "SELECT 1"}).status_code == 404
    r = client.post("/execute", json={"db_id": "library", "sql": "SELECT title FROM books ORDER BY title",
                                      "max_rows": 2}).json()
    full = demo_rows(service, "library", "SELECT title FROM books ORDER BY title")
    assert r["status"] == "ok" and r["truncated"] and r["rows"] == full[:2] and r["columns"] == ["title"]
    r = client.post("/execute", json={"db_id": "library", "sql": 'SELECT title FROM books WHERE title = "x"'})
    assert r.status_code == 200 and r.json()["rows"] == []  # SQLite's double-quoted string literal


def test_generated_sql_failing_validation_is_reported_not_run(session_cache: Path, tmp_path: Path) -> None:
    cfg = scripted_config(session_cache, tmp_path)
    cfg.llm.default = "```sql\nDELETE FROM books\n```"  # what no demo question matches gets
    service = Service(cfg, tmp_path / "run")
    with TestClient(create_app(service), base_url=LOCAL) as client:
        body = client.post("/generate_sql", json={"question": "Drop everything", "db_id": "library",
                                                  "execute": True}).json()
    assert body["sql"] == "DELETE FROM books"
    assert body["execution"]["status"] == "rejected" and "DELETE" in body["execution"]["error"]


def test_no_request_changes_a_database(scripted: tuple[Service, TestClient], session_cache: Path) -> None:
    service, client = scripted
    ddl = build_ddl_database("CREATE TABLE books (book_id INT PRIMARY KEY, title TEXT)", session_cache)
    folders = [d.path.parent for d in service.databases.values()] + [ddl.path.parent]
    before = db_hashes(*folders)
    client.post("/generate_sql", json={"question": "Delete the books", "schema": ddl.path.read_bytes().hex()})
    client.post("/generate_sql", json={"question": "How many books?",
                                       "schema": "CREATE TABLE books (book_id INT PRIMARY KEY, title TEXT)"})
    for sql in ("DROP TABLE books", "UPDATE books SET title = 'x'", "ATTACH DATABASE 'x.sqlite' AS x",
                "SELECT 1; DELETE FROM books", "PRAGMA journal_mode = WAL", RUNAWAY,
                "WITH x AS (SELECT 1) DELETE FROM books", "SELECT count(*) FROM books"):
        client.post("/execute", json={"db_id": "library", "sql": sql})
    for q in DEMO_QUESTIONS[:3]:
        client.post("/generate_sql", json={"question": q["question"], "db_id": q["db_id"], "execute": True})
    assert db_hashes(*folders) == before
    assert not Path("x.sqlite").exists()


# ------------------------------------------------------------------------------------------------ validator
def test_validator_accepts_every_demo_gold_query(scripted: tuple[Service, TestClient]) -> None:
    service, _ = scripted
    for q in DEMO_QUESTIONS:
        validate_select(q["query"], service.schema(q["db_id"]))


def test_validator_accepts_ctes_set_operations_aliases_and_case(scripted: tuple[Service, TestClient]) -> None:
    schema = scripted[0].schema("library")
    for sql in ("WITH t AS (SELECT title FROM books) SELECT count(*) FROM t",
                "SELECT title FROM books UNION SELECT name FROM authors",
                "SELECT B.TITLE AS t FROM BOOKS AS b ORDER BY t",
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT x FROM c"):
        validate_select(sql, schema)
    with pytest.raises(SQLRejected) as e:
        validate_select("WITH x AS (SELECT 1) DELETE FROM books", schema)
    assert e.value.kind == "not_select"


@requires_spider
def test_validator_accepts_spider_dev_gold_sql() -> None:
    """No false rejections on real benchmark SQL (double-quoted strings, aliases, nested queries, set operations)."""
    root = SHARED_DATA / "spider"
    schemas: dict[str, Any] = {}
    checked = 0
    for q in json.loads((root / "dev.json").read_text()):
        path = root / "database" / q["db_id"] / f"{q['db_id']}.sqlite"
        if not path.is_file():
            continue
        if q["db_id"] not in schemas:
            schemas[q["db_id"]] = introspect(path, q["db_id"], n_samples=0)
        validate_select(q["query"], schemas[q["db_id"]])
        checked += 1
    assert checked > 900


# ------------------------------------------------------------------------------------------------ hostile input
def post_raw(client: TestClient, path: str, body: bytes) -> Any:
    return client.post(path, content=body, headers={"content-type": "application/json"})


def assert_error(r: Any, status: int, kind: str) -> dict[str, Any]:
    """The response is the API's error shape with this status and kind; returns the detail."""
    assert r.status_code == status, r.text[:500]
    detail = r.json()["detail"]
    assert detail["kind"] == kind and detail["message"], detail
    return detail


@pytest.mark.parametrize("path", ["/execute", "/generate_sql"])
@pytest.mark.parametrize("body, says", [
    (b'{"db_id": "library", "sql": "SELECT \'a\\ud800b\'", "question": "a\\ud800b"}', "lone surrogate"),
    (b'{"db_id": "library", "sql": "SELECT 1", "question": "q", "max_rows": NaN}', "NaN"),
    (b'{"db_id": "library", "sql": "SELECT 1", "question": "q", "max_rows": Infinity}', "Infinity"),
    (b'{"db_id": "library", "sql": "SELECT 1", "question": "q", "max_rows": -Infinity}', "-Infinity"),
    (b'{"db_id": "library", "sql": "SELECT 1", "question": "q", "max_rows": 1e400}', "out of range"),
    (b'{"db_id": "library", "sql": "SELECT \xff\xfe", "question": "q"}', "not valid UTF-8"),
    (b'{"db_id": "library", "sql": ', "not JSON"),
    (b'{"db_id": ' + b"[" * 100 + b"]" * 100 + b"}", "levels deep"),
    (b'{"db_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too deeply"),
])
def test_bodies_that_are_not_strict_json_get_the_error_shape(scripted: tuple[Service, TestClient], path: str,
                                                             body: bytes, says: str) -> None:
    _, client = scripted
    detail = assert_error(post_raw(client, path, body), 422, "invalid_json")
    assert says in detail["message"]


@pytest.mark.parametrize("payload, field", [
    ({"question": "How many books are there?", "db_id": "library", "execute": "yes"}, "execute"),
    ({"question": "How many books are there?", "db_id": "library", "execute": 1}, "execute"),
    ({"question": "How many books are there?", "db_id": "library", "max_rows": "5"}, "max_rows"),
    ({"question": "How many books are there?", "db_id": "library", "max_rows": 5.0}, "max_rows"),
    ({"question": "How many books are there?", "db_id": "library", "max_rows": True}, "max_rows"),
    ({"question": 42, "db_id": "library"}, "question"),
])
def test_types_are_strict(scripted: tuple[Service, TestClient], payload: dict[str, Any], field: str) -> None:
    _, client = scripted
    detail = assert_error(client.post("/generate_sql", json=payload), 422, "invalid_request")
    assert detail["errors"][0]["loc"] == ["body", field]


def test_errors_quote_only_a_prefix_of_the_input(scripted: tuple[Service, TestClient]) -> None:
    _, client = scripted
    for path, payload in [("/generate_sql", {"question": "q" * 1_000_000, "db_id": "library"}),
                          ("/execute", {"db_id": "library", "sql": "SELECT " + "1 + " * 250_000 + "1"}),
                          ("/execute", {"db_id": "library", "sql": "SELECT 1", "k" * 100_000: 1}),
                          ("/execute", {"db_id": "library", "sql": "SELECT * FROM " + "t" * 19_000})]:
        r = client.post(path, json=payload)
        assert 400 <= r.status_code < 500 and r.json()["detail"]["message"]
        assert len(r.content) < 5_000, f"{path} echoed {len(r.content):,} bytes"
    r = client.get("/databases/" + "x" * 10_000 + "/schema")
    assert_error(r, 404, "unknown_database")
    assert len(r.content) < 2_000


def test_a_body_over_the_limit_is_a_413(scripted: tuple[Service, TestClient]) -> None:
    _, client = scripted
    r = post_raw(client, "/generate_sql", b'{"question": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}')
    assert "at most" in assert_error(r, 413, "body_too_large")["message"]


def test_http_errors_get_the_error_shape(scripted: tuple[Service, TestClient]) -> None:
    _, client = scripted
    assert_error(client.get("/no/such/endpoint"), 404, "not_found")
    assert_error(client.get("/execute"), 405, "method_not_allowed")
    assert_error(client.post("/execute", content=b"db_id=library", headers={"content-type": "text/plain"}), 422,
                 "invalid_json")


@pytest.mark.parametrize("sql, says", [
    (DEEP_SQL, "60 parentheses deep"),
    ("SELECT title FROM books WHERE book_id IN " + "(SELECT book_id FROM books WHERE book_id IN " * 40
     + "(SELECT 1)" + ")" * 40, "parentheses deep"),
    (NOT_CHAIN_SQL, "recursion limit"),
    # 350 UNION ALL terms in 19 KB: under the length limit, over the node limit (5,000 terms took 23 s of CPU)
    (" UNION ALL ".join(f"SELECT title FROM books WHERE book_id = {i}" for i in range(350)), "syntax nodes"),
])
def test_deep_or_huge_sql_is_a_422(scripted: tuple[Service, TestClient], sql: str, says: str) -> None:
    _, client = scripted
    assert len(sql) <= MAX_SQL_CHARS
    detail = assert_error(client.post("/execute", json={"db_id": "library", "sql": sql}), 422, "too_complex")
    assert says in detail["message"] and len(detail["sql"]) < 600


def test_sql_over_the_length_limit_is_refused_by_the_schema(scripted: tuple[Service, TestClient]) -> None:
    _, client = scripted
    sql = " UNION ALL ".join(f"SELECT title FROM books WHERE book_id = {i}" for i in range(5_000))  # 95 KB
    detail = assert_error(client.post("/execute", json={"db_id": "library", "sql": sql}), 422, "invalid_request")
    assert f"at most {MAX_SQL_CHARS} characters" in detail["message"]
    with pytest.raises(SQLRejected) as e:  # the model's SQL goes through the same bound
        validate_select(sql, scripted[0].schema("library"))
    assert e.value.kind == "too_complex"


def test_the_nesting_limit_counts_only_real_parentheses(scripted: tuple[Service, TestClient]) -> None:
    schema = scripted[0].schema("library")
    validate_select("SELECT " + "(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH, schema)
    # parentheses inside strings, quoted names and comments do not count
    validate_select("SELECT '" + "(" * 100 + "' AS \"((((\" FROM books -- " + "(" * 100, schema)


@pytest.mark.parametrize("question, says", [("Nest the query deeply", "parentheses deep"),
                                            ("Nest NOT deeply", "recursion limit")])
def test_deep_sql_written_by_the_model_is_reported_in_execution(scripted: tuple[Service, TestClient], question: str,
                                                                says: str) -> None:
    _, client = scripted
    r = client.post("/generate_sql", json={"question": question, "db_id": "library", "execute": True})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["sql"] == HOSTILE_ANSWERS[question]
    assert body["execution"]["status"] == "rejected" and says in body["execution"]["error"]


def test_an_oversized_result_is_cut_with_a_flag(scripted: tuple[Service, TestClient]) -> None:
    _, client = scripted
    r = client.post("/execute", json={"db_id": "library", "sql": HUGE_RESULT_SQL, "max_rows": 1000})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["truncated"] and body["truncated_by"] == "max_bytes"
    assert 0 < len(body["rows"]) < 20 and len(r.content) <= MAX_RESPONSE_BYTES + 10_000
    assert [row[0] for row in body["rows"]] == list(range(1, len(body["rows"]) + 1))
    r = client.post("/generate_sql", json={"question": "Return a huge result", "db_id": "library", "execute": True,
                                           "max_rows": 1000})
    assert r.status_code == 200 and r.json()["execution"]["truncated_by"] == "max_bytes"
    assert len(r.content) <= MAX_RESPONSE_BYTES + 20_000
    r = client.post("/execute", json={"db_id": "library", "sql": "SELECT title FROM books", "max_rows": 1})
    assert r.json()["truncated_by"] == "max_rows"


def test_a_result_over_the_executor_bound_is_a_422(session_cache: Path, tmp_path: Path) -> None:
    """`db.max_result_mb` bounds what the worker fetches (and so the server's memory): past it, a 422 that says so."""
    service = Service(scripted_config(session_cache, tmp_path, ["db.max_result_mb=1"]), tmp_path / "run")
    with TestClient(create_app(service), base_url=LOCAL) as client:
        r = client.post("/execute", json={"db_id": "library", "sql": HUGE_RESULT_SQL, "max_rows": 1000})
        assert "memory bound" in assert_error(r, 422, "resource_limit")["message"]
        r = client.post("/generate_sql", json={"question": "Return a huge result", "db_id": "library", "execute": True})
        assert r.status_code == 200 and r.json()["execution"]["status"] == "resource_limit"


def test_a_foreign_host_header_is_refused(scripted: tuple[Service, TestClient]) -> None:
    _, client = scripted
    ok = {"db_id": "library", "sql": "SELECT count(*) FROM books"}
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example"):
        detail = assert_error(client.post("/execute", json=ok, headers={"host": host}), 400, "invalid_host")
        assert host in detail["message"]
        assert_error(client.get("/health", headers={"host": host}), 400, "invalid_host")
    for host in ("127.0.0.1", "127.0.0.1:8000", "localhost", "LOCALHOST:8000"):
        assert client.post("/execute", json=ok, headers={"host": host}).status_code == 200
    assert default_hosts("127.0.0.1") == ["127.0.0.1", "localhost"]
    assert default_hosts("10.1.2.3") == ["10.1.2.3", "127.0.0.1", "localhost"]
    assert default_hosts("0.0.0.0") == ["*"]


def test_error_rendering_is_strict_json_whatever_it_holds() -> None:
    body = SafeJSONResponse({"a": "x\ud800y", "b": float("nan"), "c": [float("inf")], "d": "é"}).body
    assert json.loads(body) == {"a": "x\ud800y", "b": "nan", "c": ["inf"], "d": "é"}
    assert b"NaN" not in body


# ------------------------------------------------------------------------------------------------ bounded work
def test_an_oversized_schema_is_refused_before_the_batcher(tiny: tuple[Service, TestClient]) -> None:
    """The schema that hung the batcher (490 tables, 334 KB; inside the API's limits) and `llm=tiny`: a 413 with
    the token counts, and the server goes on answering."""
    service, client = tiny
    batches = service.batcher.batches
    ddl = big_ddl()
    assert len(ddl) < 500_000
    detail = assert_error(client.post("/generate_sql", json={"question": "How many?", "schema": ddl}), 413,
                          "prompt_too_long")
    assert detail["prompt_tokens"] > 100_000 and detail["context_tokens"] < 10_000
    assert f"{detail['prompt_tokens']:,} tokens" in detail["message"]
    # small enough to pass the unparsed check, too large once built: refused after the build
    mid = big_ddl(8, 8)
    detail = assert_error(client.post("/generate_sql", json={"question": "How many?", "schema": mid}), 413,
                          "prompt_too_long")
    assert detail["prompt_tokens"] > detail["context_tokens"]
    assert service.batcher.batches == batches, "no refused question reached the batcher"
    r = client.post("/generate_sql", json={"question": "How many?", "schema": big_ddl(1, 2)})
    assert r.status_code == 200 and r.json()["trace"]["llm_calls"] == 1
    r = client.post("/generate_sql", json={"question": "How many books are there?", "db_id": "library"})
    assert r.status_code == 200 and r.json()["trace"]["llm_calls"] == 1
    assert service.budget.checked == ["generator"]


def test_ddl_databases_are_an_lru_cache(tmp_path: Path) -> None:
    evicted: list[str] = []
    cache = DDLCache(tmp_path, max_entries=2, on_evict=lambda db: evicted.append(db.db_id))
    a = cache.acquire("CREATE TABLE a (x INT)")
    cache.release(a)
    b = cache.acquire("CREATE TABLE b (x INT)")  # in use from here on
    c = cache.acquire("CREATE TABLE c (x INT)")
    cache.release(c)
    assert evicted == [a.db_id] and not a.path.exists() and b.path.is_file() and c.path.is_file()
    assert cache.acquire("CREATE TABLE a (x INT)").path == a.path and a.path.is_file()  # rebuilt on demand
    assert b.path.is_file(), "a database in use is never removed"
    assert len(cache.entries()) == 2 and evicted == [a.db_id, c.db_id]
    small = DDLCache(tmp_path / "bytes", max_bytes=1)
    d = small.acquire("CREATE TABLE d (x INT)")
    small.release(d)
    small.release(small.acquire("CREATE TABLE e (x INT)"))
    assert [f.name for f, _, _ in small.entries()] == [build_ddl_database("CREATE TABLE e (x INT)",
                                                                          tmp_path / "bytes").db_id]


def test_the_service_forgets_evicted_ddl_schemas(scripted: tuple[Service, TestClient]) -> None:
    service, client = scripted
    limit = service.ddl.max_entries
    service.ddl.max_entries = 1
    try:
        paths = []
        for name in ("first_ddl_table", "second_ddl_table"):
            r = client.post("/generate_sql", json={"question": "How many?", "schema": f"CREATE TABLE {name} (x INT)"})
            assert r.status_code == 200
            paths.append(service.ddl.root / r.json()["db_id"] / f"{r.json()['db_id']}.sqlite")
        assert not paths[0].exists() and paths[1].is_file()
        assert str(paths[0]) not in service.env._schemas and str(paths[1]) in service.env._schemas
        assert [f.name for f, _, _ in service.ddl.entries()] == [paths[1].parent.name]
    finally:
        service.ddl.max_entries = limit


def test_batcher_shutdown_answers_every_waiting_request() -> None:
    """SIGTERM runs `Service.shutdown`: the question in the running batch and the queued one get a 503 at once,
    new ones are refused, and the worker ends when its batch does."""
    release = threading.Event()
    started = threading.Event()

    def run(tasks: list[Any]) -> None:
        started.set()
        release.wait(30)

    batcher = Batcher(run, max_batch=1, max_wait=0.0)
    running = batcher.submit(Example(qid="a", question="q", db_id="d", db_path="d.sqlite"))
    assert started.wait(10)
    queued = batcher.submit(Example(qid="b", question="q", db_id="d", db_path="d.sqlite"))
    batcher.shutdown()
    for future in (running, queued):
        with pytest.raises(ServeError) as e:
            future.result(timeout=5)
        assert e.value.status == 503 and e.value.kind == "shutting_down"
    with pytest.raises(ServeError):
        batcher.submit(Example(qid="c", question="q", db_id="d", db_path="d.sqlite"))
    assert batcher.alive
    release.set()
    assert batcher.close(grace=10) and not batcher.alive


def test_sigterm_answers_waiting_requests_and_stops_the_server(session_cache: Path, tmp_path: Path) -> None:
    """The hang of issue 20: a batch that does not finish (here the CHASE fixer runs the model's runaway query)
    held every later request, and SIGTERM did not stop uvicorn. Now the signal answers the question in the batch
    and the one queued behind it with a 503 and the server thread ends; the batch itself is abandoned."""
    import uvicorn

    from t2s.serve.server import uvicorn_server

    cfg = scripted_config(session_cache, tmp_path, ["fixer=chase", "serve.max_wait_ms=0"])
    service = Service(cfg, tmp_path / "run")
    service.shutdown_grace = 0.2
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_level="warning",
                            timeout_graceful_shutdown=5)
    server = uvicorn_server(config, service)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        answers: dict[str, Any] = {}

        def ask(question: str) -> None:
            answers[question] = httpx.post(f"{url}/generate_sql", json={"question": question, "db_id": "library"},
                                           timeout=120)

        held = threading.Thread(target=ask, args=("Hold the batch",))
        held.start()
        while service.batcher.running == 0:
            time.sleep(0.02)
        queued = threading.Thread(target=ask, args=("How many books are there?",))
        queued.start()
        while service.batcher.waiting == 0:
            time.sleep(0.02)
        server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
        for t in (held, queued):
            t.join(60)
            assert not t.is_alive(), "a request still waits after SIGTERM"
        assert len(answers) == 2
        for r in answers.values():
            assert_error(r, 503, "shutting_down")
        thread.join(60)
        assert not thread.is_alive(), "the server did not stop after SIGTERM"
    finally:
        server.should_exit = True
        thread.join(30)
        service.batcher.close(grace=60)
        service.env.close()


@pytest.mark.slow
def test_the_embedded_model_refuses_prompts_over_its_context(session_cache: Path, tmp_path: Path) -> None:
    """llama.cpp (`llm=embedded`, `n_ctx` 4096): a schema over the context is a 413 with the counts, before the
    batcher; a demo question is answered."""
    cfg = compose_config(["llm=embedded", "db.timeout=1.0", "generator.max_new_tokens=32"], cache_dir=session_cache,
                         output_root=tmp_path)
    service = Service(cfg, tmp_path / "run")
    with TestClient(create_app(service), base_url=LOCAL) as client:
        for ddl in (big_ddl(40, 10), big_ddl()):
            detail = assert_error(client.post("/generate_sql", json={"question": "How many?", "schema": ddl}), 413,
                                  "prompt_too_long")
            assert detail["context_tokens"] == 4096 and detail["prompt_tokens"] > 4096
        r = client.post("/generate_sql", json={"question": "How many books are there?", "db_id": "library"})
        assert r.status_code == 200 and r.json()["trace"]["llm_calls"] == 1
        assert service.batcher.questions == 1


def test_execute_verdicts_do_not_depend_on_the_query_before_them(session_cache: Path, tmp_path: Path) -> None:
    """Issue 20, item 3 on the server: the randomblob pair in both orders through `/execute`. Before, the query after
    a large result failed as `resource_limit` and the same request alternated 200 / 422. Scaled to a 512 MB bound
    (as tests/test_db_execute.py): a 120 MB result, and a correct query that needs about 400 MB while it runs."""
    big, hungry = "SELECT hex(randomblob(60000000)) AS b", "SELECT length(hex(zeroblob(80000000))) AS n"
    cfg = scripted_config(session_cache, tmp_path, ["db.timeout=60", "db.max_memory_mb=512"])
    service = Service(cfg, tmp_path / "run")
    with TestClient(create_app(service), base_url=LOCAL) as client:
        def ask(sql: str) -> tuple[int, Any]:
            r = client.post("/execute", json={"db_id": "library", "sql": sql, "max_rows": 1})
            body = r.json()
            return r.status_code, body.get("rows") if sql == hungry else body.get("status")

        answers = [ask(s) for s in (hungry, big, hungry)]  # the pair in both orders: h-b, then b-h
    assert answers == [(200, [[160000000]]), (200, "ok"), (200, [[160000000]])]
