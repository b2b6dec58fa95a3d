"""The llama.cpp backend: a GGUF model on CPU through `llama_cpp` (extra `llamacpp`).

The fastest way to run the embedded model on a CPU (DESIGN.md measures 0.7-0.9 s per question against 2.8 s
for transformers bf16). `llama_cpp` is imported on first use; building `llama-cpp-python` from source takes
about 4 minutes, so it is an optional extra: `pip install -e '.[llamacpp]'`.

Requests run one at a time (llama.cpp decodes one sequence per context). The chat template is the one stored
in the GGUF. `n > 1` sampled completions are `n` calls whose seeds derive from (`params.seed`, index);
greedy `n > 1` is one call repeated.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

from t2s.llm.base import LLM, LLMRequest, LLMResponse
from t2s.llm.models import embedded_gguf, embedded_spec, fingerprint_path, import_optional, is_named_model


def _completion_seed(seed: int, index: int) -> int:
    """The llama.cpp seed of completion `index` of a sampled request (31-bit, from sha256)."""
    return int(hashlib.sha256(f"{seed}\0{index}".encode()).hexdigest()[:7], 16)


class LlamaCppLLM(LLM):
    """A GGUF model run by llama.cpp on CPU; loads lazily on first `generate`.

    `model`: a `.gguf` path, or an embedded model name (`embedded`, `qwen2.5-coder-0.5b`,
    `qwen2.5-coder-1.5b`), whose hash-verified GGUF is assembled once under `<cache_dir>/gguf/` (the same file
    the hf backend converts). `n_ctx`: context window in tokens (prompt + completion). `n_threads`: CPU threads
    (null: llama.cpp's default). `n_batch`: prompt tokens evaluated per step.
    """

    backend = "llamacpp"

    def __init__(
        self,
        *,
        model: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        cache_dir: str,
    ) -> None:
        if not is_named_model(model) and not model.endswith(".gguf"):
            raise ValueError(
                f"LlamaCppLLM model {model!r} (key `model`) must be a .gguf file or an embedded model name "
                f"(embedded, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)"
            )
        if model == "tiny":
            raise ValueError("LlamaCppLLM cannot run the `tiny` test model (it has no GGUF); use the hf backend")
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.cache_dir = Path(cache_dir)
        self._llama: Any = None
        self._model_id: str | None = None
        self._lock = threading.RLock()
        #: seconds the last load took (0 until loaded)
        self.load_seconds = 0.0

    def __repr__(self) -> str:
        return f"LlamaCppLLM(model={self.model!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads})"

    @property
    def model_id(self) -> str:
        """`<name>@<gguf hash12>` for embedded models, `<file name>@<content hash>` for a GGUF path."""
        if self._model_id is None:
            if is_named_model(self.model):
                self._model_id = embedded_spec(self.model).model_id
            else:
                path = Path(self.model)
                self._model_id = f"{path.name}@{fingerprint_path(path, self.cache_dir / 'fingerprints')}"
        return self._model_id

    def gguf_path(self) -> Path:
        """The GGUF file to load (assembles and verifies an embedded model's file on first use)."""
        if is_named_model(self.model):
            return embedded_gguf(self.model, self.cache_dir)
        path = Path(self.model)
        if not path.is_file():
            raise FileNotFoundError(f"LlamaCppLLM model file {path} does not exist (key `model`)")
        return path

    def load(self) -> None:
        """Import llama_cpp and load the model (once)."""
        with self._lock:
            if self._llama is not None:
                return
            llama_cpp = import_optional("llama_cpp", extra="llamacpp", what="the llamacpp LLM backend")
            start = time.perf_counter()
            self._llama = llama_cpp.Llama(
                model_path=str(self.gguf_path()),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_batch=self.n_batch,
                verbose=False,
            )
            self.load_seconds = time.perf_counter() - start

    def _call(self, request: LLMRequest, seed: int) -> tuple[str, int, int]:
        p = request.params
        kwargs: dict[str, Any] = {
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "stop": list(p.stop) or None,
            "seed": seed,
        }
        if request.prompt is not None:
            out = self._llama.create_completion(prompt=request.prompt, **kwargs)
            text = out["choices"][0]["text"] or ""
        else:
            if not request.messages:
                raise ValueError("LLMRequest has neither `messages` nor `prompt`")
            out = self._llama.create_chat_completion(messages=request.message_dicts(), **kwargs)
            text = out["choices"][0]["message"]["content"] or ""
        usage = out.get("usage") or {}
        return text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """Generate for each request in turn."""
        if not requests:
            return []
        with self._lock:
            self.load()
            responses = []
            for r in requests:
                start = time.perf_counter()
                greedy = r.params.temperature <= 0
                calls = [self._call(r, _completion_seed(r.params.seed, j)) for j in range(1 if greedy else r.params.n)]
                if greedy:
                    calls = calls * r.params.n
                responses.append(LLMResponse(
                    texts=[t for t, _, _ in calls],
                    prompt_tokens=calls[0][1],
                    completion_tokens=sum(c for _, _, c in calls),
                    seconds=time.perf_counter() - start,
                ))
            return responses

    def close(self) -> None:
        """Free the llama.cpp context."""
        with self._lock:
            if self._llama is not None:
                close = getattr(self._llama, "close", None)
                if callable(close):
                    close()
                self._llama = None
