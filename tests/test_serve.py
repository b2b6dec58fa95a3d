"""`t2s serve`: the API over the configured pipeline (FastAPI TestClient), the validation layer, DDL schemas, batching.

Two real services over the demo set: one with the tiny random-weight model (`llm=tiny`, the real HF path), one with
the scripted LLM (`llm=scripted`, answering each demo question with its gold SQL, so generate -> validate -> execute
returns real rows).
Every bad input must get a 4xx that says what was rejected, and no database file may change.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DATA, compose_config, requires_spider
from fastapi.testclient import TestClient
from omegaconf import DictConfig

from t2s.data.demo import DEMO_DIR
from t2s.db.introspect import connect_readonly, introspect
from t2s.serve.app import create_app
from t2s.serve.ddl import DDLError, build_ddl_database
from t2s.serve.service import Service
from t2s.serve.validate import SQLRejected, validate_select

DEMO_QUESTIONS = json.loads((DEMO_DIR / "questions.json").read_text())
#: a query that runs far past a 1 s limit on the demo databases (a 6-way cross join, ~10^10 rows)
RUNAWAY = "SELECT count(*) FROM books a, books b, books c, books d, books e, books f, books g"


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
    cfg.llm.rules = gold_rules()
    return cfg


def db_hashes(*folders: Path) -> dict[str, str]:
    """sha256 of every file under the folders (database files and any journal next to them)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scripted(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, TestClient]]:
    tmp = tmp_path_factory.mktemp("serve-scripted")
    service = Service(scripted_config(session_cache, tmp, ["serve.max_wait_ms=300"]), tmp / "run")
    with TestClient(create_app(service)) as client:
        yield service, client


@pytest.fixture(scope="module")
def tiny(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, TestClient]]:
    tmp = tmp_path_factory.mktemp("serve-tiny")
    cfg = compose_config(["db.timeout=1.0", "generator.max_new_tokens=24"], cache_dir=session_cache, output_root=tmp)
    service = Service(cfg, tmp / "run")
    with TestClient(create_app(service)) as client:
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
    with TestClient(create_app(service)) as client:
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
