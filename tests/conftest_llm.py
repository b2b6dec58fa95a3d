"""LLM test helpers, imported into `tests/conftest.py`: the tiny model, and a canned OpenAI-compatible server.

- `tiny_model_path` (session): the tiny random-weight checkpoint (`t2s.llm.tiny`), built once per session.
- `make_tiny_llm` (session): a factory of `HFLLM`s on that checkpoint (float32, so batching is exact).
- `openai_server`: a real HTTP server on 127.0.0.1 (ephemeral port) answering `/v1/chat/completions` and
  `/v1/completions` with canned completions; it records each request's path, headers and JSON body.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from t2s.llm.hf import HFLLM
from t2s.llm.tiny import build_tiny_model

__all__ = ["tiny_model_path", "make_tiny_llm", "openai_server", "CannedOpenAIServer"]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight checkpoint, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture(scope="session")
def make_tiny_llm(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., HFLLM]:
    """`make_tiny_llm(batch_size=8, adapter=None, model=None)`: an `HFLLM` on the tiny model, float32.

    One torch thread: on a shared 2-core machine, more threads than free cores made each step of this
    200K-parameter model 100x slower (spin-waiting threads).
    """
    cache_dir = tmp_path_factory.mktemp("tiny-llm-cache")

    def make(*, batch_size: int = 8, adapter: str | None = None, model: str | None = None) -> HFLLM:
        return HFLLM(model=model or str(tiny_model_path), adapter=adapter, dtype="float32",
                     batch_size=batch_size, cache_dir=str(cache_dir), num_threads=1)

    return make


@dataclass
class CannedOpenAIServer:
    """State of the canned server: its base URL (with /v1), the requests it saw, statuses to fail with first.

    Each answer's completion `i` is `SELECT <i> -- <last message or prompt>`; usage reports the number of
    whitespace-separated words of the prompt and 4 tokens per completion.
    """

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: CannedOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with state.lock:
                state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = state.fail_with.pop(0) if state.fail_with else 200
            if status != 200:
                self._send(status, {"error": {"message": f"canned {status}"}})
                return
            if self.path == "/v1/chat/completions":
                source = body["messages"][-1]["content"]
                prompt_words = sum(len(m["content"].split()) for m in body["messages"])
            elif self.path == "/v1/completions":
                source = body["prompt"]
                prompt_words = len(source.split())
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            n = int(body.get("n", 1))
            texts = [f"SELECT {i} -- {source}" for i in range(n)]
            if self.path == "/v1/chat/completions":
                choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                           for i, t in enumerate(texts)]
            else:
                choices = [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
            self._send(200, {
                "id": "canned", "object": "chat.completion", "model": body.get("model"),
                "choices": list(reversed(choices)),
                "usage": {"prompt_tokens": prompt_words, "completion_tokens": 4 * n,
                          "total_tokens": prompt_words + 4 * n},
            })

    return Handler


@pytest.fixture
def openai_server() -> Iterator[CannedOpenAIServer]:
    """A canned OpenAI-compatible HTTP server on 127.0.0.1, stopped after the test."""
    state = CannedOpenAIServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
