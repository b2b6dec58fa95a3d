"""Property-based run of the server's OpenAPI schema (schemathesis): generated requests never get a 5xx.

The app runs over a real `Service` (demo set, the scripted LLM, so each generated question is answered in
milliseconds); schemathesis builds requests from /openapi.json (valid and schema-violating ones) and calls the app
in process through ASGI. Examples are bounded per operation so the run stays within seconds. (schemathesis'
`from_fixture` pytest integration does not work with pytest 9, so each operation's strategy runs under a plain
hypothesis `given`.) Every 4xx must be the API's `{"detail": {"kind", "message"}}`.

The hostile inputs of issue 20 that generation does not reach on its own (lone surrogates, NaN / Infinity /
1e400, strings for booleans, 60 nested parentheses written by the client or by the model, a 334 KB schema, a
10 MB result, a foreign Host header) are sent as explicit cases through the same schemathesis transport and checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from test_serve import DEEP_SQL, HUGE_RESULT_SQL, LOCAL, NOT_CHAIN_SQL, big_ddl, scripted_config

from t2s.serve.app import create_app
from t2s.serve.service import Service

OPERATIONS = ["GET /health", "GET /databases", "GET /databases/{db_id}/schema", "POST /generate_sql",
              "POST /execute"]


@pytest.fixture(scope="module")
def api_schema(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    tmp = tmp_path_factory.mktemp("serve-schema")
    service = Service(scripted_config(session_cache, tmp, ["serve.max_wait_ms=0"]), tmp / "run")
    app = create_app(service, close_service=False)
    yield schemathesis.openapi.from_asgi("/openapi.json", app, headers={"host": "127.0.0.1"})
    service.close()


def check_response(label: str, case: schemathesis.Case, response: Any) -> None:
    """No 5xx, and every 4xx in the API's error shape."""
    assert response.status_code < 500, f"{label} {case.body!r:.300} -> {response.status_code}: {response.text[:300]}"
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        detail = response.json()["detail"]
        assert isinstance(detail["kind"], str) and isinstance(detail["message"], str) and detail["message"], detail


def test_the_schema_has_every_endpoint(api_schema: object) -> None:
    labels = {op.ok().label for op in api_schema.get_all_operations()}  # type: ignore[attr-defined]
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label, mode", [
    *[(op, GenerationMode.POSITIVE) for op in OPERATIONS],
    # schema-violating requests, for the operations that take input (the others have nothing to violate)
    *[(op, GenerationMode.NEGATIVE) for op in OPERATIONS[3:]],
], ids=lambda v: v.value if isinstance(v, GenerationMode) else v)
def test_no_generated_request_gets_a_server_error(api_schema: object, label: str, mode: GenerationMode) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]  # type: ignore[index]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=LOCAL)
        statuses.append(response.status_code)
        check_response(label, case, response)

    check()
    assert statuses, "schemathesis generated no request"


#: (operation, body, headers, expected status, expected kind): the probe families of issue 20 that got a 500
HOSTILE = [
    ("POST /execute", {"db_id": "library", "sql": "SELECT 'a\ud800b'"}, {}, 422, "invalid_json"),
    ("POST /generate_sql", {"question": "a\ud800b", "db_id": "library"}, {}, 422, "invalid_json"),
    # NaN and friends as raw bytes (the test client's JSON encoder refuses them)
    ("POST /generate_sql", b'{"question": "q", "db_id": "library", "max_rows": NaN}', {}, 422, "invalid_json"),
    ("POST /execute", b'{"db_id": "library", "sql": "SELECT 1", "max_rows": Infinity}', {}, 422, "invalid_json"),
    ("POST /execute", b'{"db_id": "library", "sql": "SELECT 1", "max_rows": -Infinity}', {}, 422, "invalid_json"),
    ("POST /execute", b'{"db_id": "library", "sql": "SELECT 1", "max_rows": 1e400}', {}, 422, "invalid_json"),
    ("POST /execute", b'{"db_id": "library", "sql": "SELECT \xff"}', {}, 422, "invalid_json"),
    ("POST /generate_sql", {"question": "q", "db_id": "library", "execute": "yes"}, {}, 422, "invalid_request"),
    ("POST /execute", {"db_id": "library", "sql": DEEP_SQL}, {}, 422, "too_complex"),
    ("POST /execute", {"db_id": "library", "sql": NOT_CHAIN_SQL}, {}, 422, "too_complex"),
    ("POST /generate_sql", {"question": "Nest the query deeply", "db_id": "library", "execute": True}, {}, 200, None),
    ("POST /generate_sql", {"question": "Nest NOT deeply", "db_id": "library", "execute": True}, {}, 200, None),
    ("POST /generate_sql", {"question": "q" * 1_000_000, "db_id": "library"}, {}, 422, "invalid_request"),
    ("POST /generate_sql", {"question": "How many?", "schema": big_ddl()}, {}, 200, None),
    ("POST /execute", {"db_id": "library", "sql": HUGE_RESULT_SQL, "max_rows": 1000}, {}, 200, None),
    ("POST /execute", {"db_id": "library", "sql": "SELECT 1"}, {"host": "rebound.example"}, 400, "invalid_host"),
    ("GET /health", None, {"host": "rebound.example"}, 400, "invalid_host"),
]


@pytest.mark.parametrize("label, body, headers, status, kind", HOSTILE,
                         ids=[f"{i}-{h[0]}-{h[4] or h[3]}" for i, h in enumerate(HOSTILE)])
def test_hostile_requests_get_no_server_error(api_schema: object, label: str, body: Any, headers: dict[str, str],
                                              status: int, kind: str | None) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]  # type: ignore[index]
    if body is None:
        case = operation.Case(headers=headers)
    else:
        case = operation.Case(body=body, headers=headers, media_type="application/json")
    response = case.call(base_url=LOCAL, timeout=120)  # the 334 KB schema takes seconds to build, not minutes
    check_response(label, case, response)
    assert response.status_code == status, response.text[:500]
    if kind is not None:
        assert response.json()["detail"]["kind"] == kind
    elif path == "/execute" or (isinstance(body, dict) and body.get("execute")):
        execution = response.json() if path == "/execute" else response.json()["execution"]
        assert execution["status"] in ("ok", "rejected")
        if execution["status"] == "ok":
            assert execution["truncated_by"] == "max_bytes"
