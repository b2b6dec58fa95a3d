"""LLM test helpers, imported into `tests/conftest.py`: the tiny model, and a canned OpenAI-compatible server.

- `tiny_model_path` (session): the tiny random-weight checkpoint (`t2s.llm.tiny`), built once per session.
- `make_tiny_llm` (session): a factory of `HFLLM`s on that checkpoint (float32, so batching is exact).
- `openai_server`: a real HTTP server on 127.0.0.1 (ephemeral port) answering `/v1/chat/completions` and
  `/v1/completions` with canned completions; it records each request's path, headers (lower-cased names) and JSON body.
- `embedded_gguf_file`, `embedded_llamacpp` (session): the embedded model's GGUF and a llama.cpp backend on it
  (skip with the reason when llama-cpp-python or the model wheels are missing).
- `llama_server` (session): llama-cpp-python's real OpenAI-compatible server on 127.0.0.1 with that GGUF.
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

__all__ = ["tiny_model_path", "make_tiny_llm", "openai_server", "CannedOpenAIServer", "embedded_gguf_file",
           "embedded_llamacpp", "llama_server", "LlamaServer", "project_cache"]


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
    whitespace-separated words of the prompt and 4 tokens per completion. `/v1/completions` with `echo` and
    `logprobs` returns canned prompt log-probabilities (`_echo_logprobs`).
    """

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)
    #: `Retry-After` header value sent with failures (None: no header)
    retry_after: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: CannedOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            if status != 200 and state.retry_after is not None:
                self.send_header("Retry-After", state.retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with state.lock:
                state.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body})
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
            if self.path == "/v1/completions" and body.get("echo") and body.get("logprobs") is not None:
                self._send(200, _echo_logprobs(body))
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


def _echo_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """A canned `echo` + `logprobs` completion: tokens are the prompt's words and single whitespace characters (and
    a generated " END"); a token's logprob is -len(token) / 10, None for the first, as OpenAI's API does."""
    import re

    text = body["prompt"]
    tokens = re.findall(r"\s|\S+", text) + [" END"]
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    logprobs = [None] + [-len(t) / 10 for t in tokens[1:]]
    return {"id": "canned", "object": "text_completion", "model": body.get("model"),
            "choices": [{"index": 0, "text": text + " END", "finish_reason": "length",
                         "logprobs": {"tokens": tokens, "text_offset": offsets, "token_logprobs": logprobs,
                                      "top_logprobs": [None] * len(tokens)}}],
            "usage": {"prompt_tokens": len(tokens) - 1, "completion_tokens": 1, "total_tokens": len(tokens)}}


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


# ------------------------------------------------------------------------------------- the embedded GGUF, llama.cpp
def project_cache() -> Path:
    """The cache that tests with the embedded model share across sessions: `$T2S_CACHE`, else `<repo>/.cache`."""
    import os

    return Path(os.environ.get("T2S_CACHE", Path(__file__).resolve().parents[1] / ".cache"))


@pytest.fixture(scope="session")
def embedded_gguf_file() -> Path:
    """The embedded model's hash-verified GGUF (assembled once into the project cache); skips when llama_cpp or the
    model wheels are missing, saying which."""
    from t2s.llm.models import ModelNotInstalledError, embedded_gguf

    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make venv, or pip install -e '.[llamacpp]')")
    try:
        return embedded_gguf("embedded", project_cache())
    except ModelNotInstalledError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def embedded_llamacpp(embedded_gguf_file: Path) -> Any:
    """One `LlamaCppLLM` on the embedded GGUF for the session (2048-token context)."""
    from t2s.llm.llamacpp import LlamaCppLLM

    llm = LlamaCppLLM(model="embedded", cache_dir=str(project_cache()), n_ctx=2048)
    llm.load()
    yield llm
    llm.close()


@dataclass
class LlamaServer:
    """A llama-cpp-python OpenAI-compatible server on 127.0.0.1: its base URL (with /v1) and model alias."""

    url: str
    model: str
    process: Any


@pytest.fixture(scope="session")
def llama_server(embedded_gguf_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """`python -m llama_cpp.server` with the embedded GGUF on a free port of 127.0.0.1, stopped after the session.

    Its log is in a temporary directory."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("llama_cpp.server", reason="the llama-cpp-python server extra is not installed "
                                                    "(pip install 'llama-cpp-python[server]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    from t2s.llm.cpu import default_threads

    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_file), "--model_alias", "embedded",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
           "--n_threads", str(default_threads()), "--verbose", "false"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server did not start (exit {proc.poll()}): {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield LlamaServer(url=url, model="embedded", process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
