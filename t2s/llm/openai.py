"""A backend for any OpenAI-compatible HTTP server (OpenAI, a vLLM server, Ollama, llama.cpp server).

Plain HTTP with `httpx`: chat requests go to `POST {base_url}/chat/completions`, raw prompts to
`POST {base_url}/completions`. Requests of one batch run concurrently (`max_concurrency` threads).
The API key is read from the environment variable named by `api_key_env` when the client is first needed;
it is kept only in the HTTP client's headers, never in the object's repr, `model_id`, the response cache
or a config dump.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from t2s.llm.base import LLM, LLMRequest, LLMResponse

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """`text` cut before the earliest stop string (servers usually do this already)."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[:min(cuts)] if cuts else text


class OpenAILLM(LLM):
    """An LLM served over the OpenAI HTTP API; token counts come from the server's `usage`.

    `base_url`: the API root including `/v1` (null: the `OPENAI_BASE_URL` environment variable, else
    OpenAI's). `api_key_env`: name of the environment variable holding the key (no key: no Authorization
    header, fine for local servers). `timeout`: seconds per HTTP request. `max_retries`: retries on
    connection errors, 429 and 5xx, with exponential backoff starting at `retry_backoff` seconds.
    `seconds` in a response is the wall time of its HTTP request(s).
    """

    backend = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60,
        max_concurrency: int = 4,
        max_retries: int = 3,
        retry_backoff: float = 1.0,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"OpenAILLM max_concurrency must be >= 1, got {max_concurrency}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAILLM(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """`<model>@<base_url>`: the same model name on another server is another model."""
        return f"{self.model}@{self.base_url}"

    def _http(self) -> Any:
        import httpx

        with self._lock:
            if self._client is None:
                headers = {"Content-Type": "application/json"}
                key = os.environ.get(self.api_key_env)
                if key:
                    headers["Authorization"] = f"Bearer {key}"
                self._client = httpx.Client(
                    base_url=self.base_url,
                    headers=headers,
                    timeout=self.timeout,
                    limits=httpx.Limits(max_connections=self.max_concurrency),
                )
            return self._client

    def body(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint path and JSON body for one request."""
        p = request.params
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "n": p.n,
            "seed": p.seed,
        }
        if p.stop:
            body["stop"] = list(p.stop)
        if request.prompt is not None:
            return "/completions", {**body, "prompt": request.prompt}
        if not request.messages:
            raise ValueError("LLMRequest has neither `messages` nor `prompt`")
        return "/chat/completions", {**body, "messages": request.message_dicts()}

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        client = self._http()
        url = f"{self.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                resp = client.post(path, json=body)
            except httpx.TransportError as e:
                if last:
                    raise ConnectionError(f"OpenAI-compatible server at {url} did not answer: {e}") from e
            else:
                if resp.status_code < 400:
                    data: dict[str, Any] = resp.json()
                    return data
                if resp.status_code in (401, 403):
                    raise PermissionError(
                        f"{url} refused the request ({resp.status_code}); set the API key in the environment "
                        f"variable {self.api_key_env} (key `api_key_env`)"
                    )
                if resp.status_code not in _RETRY_STATUS or last:
                    raise RuntimeError(
                        f"{url} answered {resp.status_code} for model {self.model!r}: {resp.text[:500]}"
                    )
            time.sleep(self.retry_backoff * (2 ** attempt))
        raise AssertionError("unreachable")

    def _one(self, request: LLMRequest) -> LLMResponse:
        path, body = self.body(request)
        start = time.perf_counter()
        data = self._post(path, body)
        seconds = time.perf_counter() - start
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        if not choices:
            raise RuntimeError(f"{self.base_url}{path} returned no choices for model {self.model!r}")
        if path == "/chat/completions":
            texts = [(c.get("message") or {}).get("content") or "" for c in choices]
        else:
            texts = [c.get("text") or "" for c in choices]
        usage = data.get("usage") or {}
        return LLMResponse(
            texts=[_cut_at_stop(t, request.params.stop) for t in texts],
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
        )

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """Send every request (up to `max_concurrency` at once); responses in order."""
        if not requests:
            return []
        if len(requests) == 1 or self.max_concurrency == 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def close(self) -> None:
        """Close the HTTP connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
