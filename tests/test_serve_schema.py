"""Property-based run of the server's OpenAPI schema (schemathesis): generated requests never get a 5xx.

The app runs over a real `Service` (demo set, the scripted LLM, so each generated question is answered in
milliseconds); schemathesis builds requests from /openapi.json (valid and schema-violating ones) and calls the app
in process through ASGI. Examples are bounded per operation so the run stays within seconds. (schemathesis'
`from_fixture` pytest integration does not work with pytest 9, so each operation's strategy runs under a plain
hypothesis `given`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from test_serve import scripted_config

from t2s.serve.app import create_app
from t2s.serve.service import Service

OPERATIONS = ["GET /health", "GET /databases", "GET /databases/{db_id}/schema", "POST /generate_sql",
              "POST /execute"]


@pytest.fixture(scope="module")
def api_schema(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    tmp = tmp_path_factory.mktemp("serve-schema")
    service = Service(scripted_config(session_cache, tmp, ["serve.max_wait_ms=0"]), tmp / "run")
    app = create_app(service, close_service=False)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    service.close()


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
        response = case.call()
        statuses.append(response.status_code)
        assert response.status_code < 500, f"{label} {case.body!r} -> {response.status_code}: {response.text[:300]}"
        case.validate_response(response, checks=[not_a_server_error])

    check()
    assert statuses, "schemathesis generated no request"
