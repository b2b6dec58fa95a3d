"""A backend for any OpenAI-compatible server (OpenAI, `vllm serve`, Ollama, llama-cpp-python's server), on the
official `openai` client.

Chat requests go to `/chat/completions`, raw prompts to `/completions`; the requests of one batch run
concurrently, at most `max_concurrency` at a time. Retries (connection errors, 408, 409, 429, 5xx) are the
client's own: exponential backoff that honours the server's `Retry-After`. The API key is read from the
environment variable named by `api_key_env` when the client is first built; it lives only in the client, never
in the object's repr, `model_id`, the response cache, a pickle or a config dump. Local servers that need no
key get a placeholder.

Finish reasons come from the server ("stop" / "length"); a completion cut at `max_tokens` whose text loops is
reported as "loop" (`t2s.llm.stops.text_finish_reason`), and `stop_after_fence` cuts the text after the closing
fence (the server still generated up to its own stop).

Constraints (`GenParams.constraint`): a JSON schema goes as `response_format` (`{"type": "json_schema", ...,
"strict": true}`, which OpenAI, vLLM's and llama.cpp's servers take; on `/completions` it travels in the body as
vLLM reads it). A GBNF grammar goes in the request body under `grammar_field`, the key the server reads it from:
`grammar` for llama.cpp's and llama-cpp-python's servers, `structured_outputs.grammar` for vLLM (a dotted key is a
nested object; older vLLM: `guided_grammar`), written as GBNF or, with `grammar_syntax: lark`, as llguidance's Lark
(`t2s.llm.structured.gbnf_to_lark`, for a vLLM server on its `guidance` backend: the engine the hf backend runs). With
`grammar_field: null` (OpenAI's own API takes no grammar) a grammar constraint is refused, never dropped.

Scoring uses `/completions` with `echo` and `logprobs` (prompt log-probabilities), which vLLM's server returns
and OpenAI's hosted chat models do not (a server that refuses gets a
`NotImplementedError` that says what to use instead). llama-cpp-python 0.3.36's server does answer, but pairs
each echoed token with the distribution after it (one position late: we measured -24.4 where the true value is
-13.3) and measures text offsets without special tokens, so its numbers are not log-probabilities of the
continuation: score with `llm=llamacpp` on the same GGUF instead. A chat
`ScoreRequest` must first be rendered to text: `score_template` names the model (embedded name, checkpoint
directory or .gguf) whose chat template renders it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from t2s.llm.base import LLM, Constraint, LLMRequest, LLMResponse, ScoreRequest, ScoreResponse
from t2s.llm.stops import text_finish_reason

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: the key sent to servers that need none (local llama.cpp / vLLM servers); the client insists on some key
PLACEHOLDER_KEY = "t2s-no-key"


class OpenAILLM(LLM):
    """An LLM served over the OpenAI API; token counts come from the server's `usage`.

    `base_url`: the API root including `/v1` (null: `$OPENAI_BASE_URL`, else OpenAI's). `api_key_env`: name of the
    environment variable holding the key (unset: a placeholder key, fine for local servers). `timeout`: seconds
    per HTTP request. `max_retries`: retries of the official client (exponential backoff, honours Retry-After).
    `max_concurrency`: requests in flight at once. `score_template`: an embedded model name, checkpoint directory
    or .gguf whose chat template renders chat `ScoreRequest`s (null: only raw-prompt scoring). `cache_dir`: where
    `score_template` models are resolved. `grammar_field`: the request-body key a GBNF grammar constraint goes under
    (`grammar`: llama.cpp servers; `structured_outputs.grammar`: vLLM; null: grammars refused), `grammar_syntax`:
    `gbnf` or `lark` (see the module docstring). `seconds` in a response is the wall time of its request.
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
        score_template: str | None = None,
        cache_dir: str | None = None,
        grammar_field: str | None = None,
        grammar_syntax: str = "gbnf",
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"OpenAILLM max_concurrency must be >= 1, got {max_concurrency} (key `max_concurrency`)")
        if grammar_syntax not in ("gbnf", "lark"):
            raise ValueError(f"OpenAILLM grammar_syntax must be gbnf or lark, got {grammar_syntax!r} (key `grammar_syntax`)")
        if grammar_field is not None and not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", grammar_field):
            raise ValueError(f"OpenAILLM grammar_field {grammar_field!r} is not a body key or a dotted path of keys "
                             f"(key `grammar_field`; e.g. grammar, structured_outputs.grammar)")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.score_template = score_template
        self.cache_dir = cache_dir
        self.grammar_field = grammar_field
        self.grammar_syntax = grammar_syntax
        self.constraint_kinds = ("json_schema", "grammar") if grammar_field else ("json_schema",)
        self.constraint_hint = "" if grammar_field else (
            "for grammars set `grammar_field`: llm.grammar_field=grammar for a llama.cpp server, "
            "llm.grammar_field=structured_outputs.grammar for vLLM; OpenAI's own API takes no grammar")
        self.supports_scoring = True
        self._client: Any = None
        self._template: tuple[str, dict[str, str]] | None = None
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

    def client(self) -> Any:
        """The `openai.OpenAI` client (built once; reads the key from `$<api_key_env>`)."""
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                self._client = OpenAI(
                    api_key=os.environ.get(self.api_key_env) or PLACEHOLDER_KEY,
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                )
            return self._client

    def _call(self, fn: Any, **body: Any) -> Any:
        """Call the client, turning its errors into ones that say what to do."""
        import openai

        where = f"{self.base_url} (model {self.model!r})"
        try:
            return fn(**body)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise PermissionError(
                f"{where} refused the request ({e.status_code}); set the API key in the environment variable "
                f"{self.api_key_env} (key `api_key_env`)"
            ) from None
        except openai.APIConnectionError as e:
            raise ConnectionError(f"no answer from the OpenAI-compatible server at {where}: {e} "
                                  f"(key `base_url`; after {self.max_retries} retries)") from e
        except openai.APIStatusError as e:
            raise RuntimeError(f"{where} answered {e.status_code}: {str(e)[:500]}") from None

    def body(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint ("chat" or "completions") and the keyword arguments of the client call for one request."""
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
        if p.constraint is not None:
            self._constrain(body, p.constraint, chat=request.prompt is None)
        if request.prompt is not None:
            return "completions", {**body, "prompt": request.prompt}
        if not request.messages:
            raise ValueError("LLMRequest has neither `messages` nor `prompt`")
        return "chat", {**body, "messages": request.message_dicts()}

    def _constrain(self, body: dict[str, Any], constraint: Constraint, *, chat: bool) -> None:
        """Put `constraint` into a request body where the server reads it (see the module docstring)."""
        if constraint.kind == "json_schema":
            name = re.sub(r"[^A-Za-z0-9_-]", "_", constraint.name or "constraint")[:64]
            fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": constraint.schema, "strict": True}}
            if chat:
                body["response_format"] = fmt
            else:
                body.setdefault("extra_body", {})["response_format"] = fmt
            return
        if self.grammar_field is None:
            from t2s.llm.structured import ConstraintNotSupported

            raise ConstraintNotSupported(
                f"the openai backend ({self.model_id}) has no `grammar_field`, so it cannot send the grammar "
                f"constraint {constraint.name or 'unnamed'!r}: set llm.grammar_field=grammar for a llama.cpp server, "
                f"llm.grammar_field=structured_outputs.grammar for vLLM (OpenAI's own API takes no grammar)")
        if self.grammar_syntax == "lark":
            from t2s.llm.structured import gbnf_to_lark

            text = gbnf_to_lark(constraint.text)
        else:
            text = constraint.text
        node = body.setdefault("extra_body", {})
        *parents, last = self.grammar_field.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = text

    def _one(self, request: LLMRequest) -> LLMResponse:
        kind, body = self.body(request)
        client = self.client()
        start = time.perf_counter()
        fn = client.chat.completions.create if kind == "chat" else client.completions.create
        data = self._call(fn, **body)
        seconds = time.perf_counter() - start
        choices = sorted(data.choices or [], key=lambda c: c.index or 0)
        if not choices:
            raise RuntimeError(f"{self.base_url} returned no choices for model {self.model!r}")
        texts = [(c.message.content if kind == "chat" else c.text) or "" for c in choices]
        finished = [text_finish_reason(t, c.finish_reason, request.params) for t, c in zip(texts, choices)]
        usage = data.usage
        return LLMResponse(
            texts=[t for t, _ in finished],
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            seconds=seconds,
            finish_reasons=[f for _, f in finished],
        )

    def _map(self, fn: Any, items: list[Any]) -> list[Any]:
        if len(items) == 1 or self.max_concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """Send every request (up to `max_concurrency` at once); responses in order."""
        if not requests:
            return []
        from t2s.llm.structured import check_supported

        check_supported(self, requests)
        return self._map(self._one, requests)

    # ------------------------------------------------------------------------------------------- scoring
    def render(self, request: ScoreRequest) -> str:
        """The prompt text of a score request: the raw prompt, or the messages through `score_template`."""
        if request.prompt is not None:
            return request.prompt
        if not request.messages:
            raise ValueError("ScoreRequest has neither `messages` nor `prompt`")
        if self.score_template is None:
            raise NotImplementedError(
                f"the openai backend ({self.model_id}) scores chat messages only when it can render them itself: set "
                f"`score_template` in the LLM config to the served model's chat template source (an embedded model "
                f"name such as `embedded`, a checkpoint directory or a .gguf), or send raw-prompt ScoreRequests"
            )
        if self._template is None:
            self._template = _load_template(self.score_template, self.cache_dir)
        from t2s.llm.chat import render_chat

        template, special = self._template
        return render_chat(template, request.message_dicts(), **special)

    def _score_one(self, request: ScoreRequest) -> ScoreResponse:
        import openai

        prompt = self.render(request)
        client = self.client()
        start = time.perf_counter()
        logprobs: list[float] = []
        prompt_tokens = 0
        for cont in request.continuations:
            try:
                data = client.completions.create(model=self.model, prompt=prompt + cont, max_tokens=1,
                                                 temperature=0.0, echo=True, logprobs=1)
            except openai.APIStatusError as e:
                raise NotImplementedError(
                    f"{self.base_url} (model {self.model!r}) cannot return prompt log-probabilities "
                    f"({e.status_code}: {str(e)[:300]}); score with a server that does (`vllm serve`) or with a local "
                    f"backend on the same weights (llm=llamacpp for a GGUF, llm=hf)"
                ) from None
            lp = data.choices[0].logprobs if data.choices else None
            if lp is None or not lp.token_logprobs or lp.text_offset is None:
                raise NotImplementedError(
                    f"{self.base_url} (model {self.model!r}) returned no prompt log-probabilities for `echo` + "
                    f"`logprobs` (OpenAI's hosted chat models do not); use `vllm serve` or a local backend on the same "
                    f"weights (llm=llamacpp for a GGUF, llm=hf)"
                )
            # echoed prompt + continuation, then the one generated token: sum the tokens starting inside the
            # continuation (a token straddling the boundary counts as prompt)
            end = len(prompt) + len(cont)
            total, n_cont = 0.0, 0
            for offset, value in zip(lp.text_offset, lp.token_logprobs):
                if len(prompt) <= offset < end and value is not None:
                    total += float(value)
                    n_cont += 1
            prompt_tokens = max(prompt_tokens, int(getattr(data.usage, "prompt_tokens", 0) or 0) - n_cont)
            logprobs.append(total)
        return ScoreResponse(logprobs=logprobs, prompt_tokens=prompt_tokens, seconds=time.perf_counter() - start)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Log-probabilities of the continuations from the server's echoed prompt logprobs (see the module doc)."""
        return self._map(self._score_one, requests) if requests else []

    def close(self) -> None:
        """Close the HTTP connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _load_template(source: str, cache_dir: str | None) -> tuple[str, dict[str, str]]:
    """(chat template, special tokens) of an embedded model name, a checkpoint directory or a .gguf file."""
    from t2s.llm.models import embedded_gguf, is_named_model

    path = Path(source)
    if is_named_model(source):
        if cache_dir is None:
            raise ValueError("OpenAILLM needs `cache_dir` to read the chat template of an embedded model "
                             "(key `score_template`)")
        path = embedded_gguf(source, cache_dir)
    if path.suffix == ".gguf":
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        field = reader.fields.get("tokenizer.chat_template")
        if field is None:
            raise ValueError(f"{path} has no chat template (key `score_template`)")
        return bytes(field.parts[field.data[0]]).decode("utf-8"), {}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if not tok.chat_template:
        raise ValueError(f"{path} has no chat template (key `score_template`)")
    special = {k: v for k, v in (("bos_token", tok.bos_token), ("eos_token", tok.eos_token)) if isinstance(v, str)}
    return str(tok.chat_template), special
