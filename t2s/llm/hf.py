"""The transformers backend: local checkpoints, hub ids or named models, optional PEFT adapter, batched.

Decoding is done row by row inside one batched `model.generate` call:

- greedy rows (`temperature == 0`) take the argmax;
- sampled rows draw from their own `torch.Generator`, seeded from (`params.seed`, completion index, rendered
  prompt), so a sampled completion does not depend on which other requests share its batch, and the response
  cache (keyed with the seed) can replay it exactly;
- each row stops at its first eos token or stop string; `completion_tokens` counts the tokens generated up to
  and including that eos (or the token that completed the stop string), and the returned text excludes the
  eos and is cut before the first stop string.

`n > 1` greedy completions are one generation repeated `n` times (identical by definition); `completion_tokens`
still sums over the `n` returned completions, as `LLMResponse` documents.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2s.llm.base import LLM, GenParams, LLMRequest, LLMResponse
from t2s.llm.models import fingerprint_path, is_named_model, named_models, resolve_model, weights_id

if TYPE_CHECKING:
    import torch

_DTYPES = ("bfloat16", "float16", "float32", "auto")


def _row_seed(seed: int, index: int, prompt: str) -> int:
    """The generator seed of completion `index` of a sampled request (63-bit, from sha256)."""
    digest = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).hexdigest()
    return int(digest[:15], 16)


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` cut before the earliest occurrence of any stop string, and whether one occurred."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class HFLLM(LLM):
    """A causal LM run by transformers, with an optional PEFT adapter; loads lazily on first `generate`.

    `model`: a named model (`embedded`, `qwen2.5-coder-0.5b`, `qwen2.5-coder-1.5b`, `tiny`; see
    `t2s.llm.models`), a local checkpoint directory, or a hub id (needs network or the local HF cache).
    `adapter`: a PEFT adapter directory (e.g. a LoRA trained by `t2s.train`). `dtype`: torch dtype name
    (`bfloat16` is about 2x faster than `float32` on CPU for the embedded model). `batch_size`: sequences per
    `generate` call (a request with `n` sampled completions takes `n` rows). `cache_dir`: where named models
    are built and large-file fingerprints memoized. `num_threads`: if set, `torch.set_num_threads` at load
    (process-wide). Set it when several processes share the CPU (joblib sweeps: cores / n_jobs): with more
    busy threads than cores, generation slowed down 5x in our measurements.

    `model_id` (the response-cache key) is content-based: named embedded models use their GGUF hash, local
    checkpoints and adapters a hash of their files, so different weights never share cache entries. The
    dtype is part of it too.
    """

    backend = "hf"

    def __init__(
        self,
        *,
        model: str,
        adapter: str | None = None,
        dtype: str = "bfloat16",
        batch_size: int = 8,
        device: str = "cpu",
        cache_dir: str,
        trust_remote_code: bool = False,
        num_threads: int | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"HFLLM dtype {dtype!r} is not one of {', '.join(_DTYPES)} (key `dtype`)")
        if batch_size < 1:
            raise ValueError(f"HFLLM batch_size must be >= 1, got {batch_size} (key `batch_size`)")
        if adapter is not None and not Path(adapter).is_dir():
            raise FileNotFoundError(
                f"HFLLM adapter {adapter!r} is not a directory (key `adapter`: a PEFT adapter saved with "
                f"`save_pretrained`, or null)"
            )
        self.model = model
        self.adapter = adapter
        self.dtype = dtype
        self.batch_size = batch_size
        self.device = device
        self.cache_dir = Path(cache_dir)
        self.trust_remote_code = trust_remote_code
        self.num_threads = num_threads
        self._model_id: str | None = None
        self._path: str | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos_ids: list[int] = []
        self._lock = threading.RLock()
        #: seconds the last `load()` took (0 until loaded)
        self.load_seconds = 0.0

    def __repr__(self) -> str:
        return (f"HFLLM(model={self.model!r}, adapter={self.adapter!r}, dtype={self.dtype!r}, "
                f"batch_size={self.batch_size}, device={self.device!r})")

    # ----------------------------------------------------------------------------------------- identity
    def _weights_path(self) -> str:
        """The local checkpoint directory, or the hub id, that transformers loads (builds named models)."""
        if self._path is None:
            if is_named_model(self.model):
                self._path = str(resolve_model(self.model, self.cache_dir))
            else:
                self._path = self.model
        return self._path

    @property
    def model_id(self) -> str:
        """`<weights id>:<dtype>[+adapter@<fingerprint>]`, computed once without loading the model.

        Weights id: `<name>@<gguf hash12>` for embedded models; `<dir name>@<content hash>` for local
        checkpoints (and `tiny`); the hub id, with `@<commit>` when the local HF cache has it, otherwise.
        """
        if self._model_id is None:
            ident = f"{weights_id(self.model, self.cache_dir)}:{self.dtype}"
            if self.adapter is not None:
                ident += f"+adapter@{fingerprint_path(self.adapter, self.cache_dir / 'fingerprints')}"
            self._model_id = ident
        return self._model_id

    # ------------------------------------------------------------------------------------------ loading
    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._model is not None

    def load(self) -> None:
        """Load tokenizer, weights and adapter (once; `generate` calls it). Sets `load_seconds`."""
        with self._lock:
            if self._model is not None:
                return
            start = time.perf_counter()
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self.num_threads is not None:
                torch.set_num_threads(self.num_threads)
            path = self._weights_path()
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code)
                model = AutoModelForCausalLM.from_pretrained(
                    path,
                    dtype=self.dtype if self.dtype == "auto" else getattr(torch, self.dtype),
                    trust_remote_code=self.trust_remote_code,
                )
            except OSError as e:
                raise OSError(
                    f"HFLLM could not load model {self.model!r} (key `model`): it is not a named model "
                    f"({', '.join(named_models())}), and as a "
                    f"path or hub id it failed ({e}). Hub ids need network or a copy in the local HF cache."
                ) from e
            if self.adapter is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, self.adapter)
            model.to(self.device)
            model.eval()
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            eos = model.generation_config.eos_token_id
            eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
            if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
                eos_ids.append(tokenizer.eos_token_id)
            self._eos_ids = eos_ids
            self._tokenizer = tokenizer
            self._model = model
            self.load_seconds = time.perf_counter() - start

    def close(self) -> None:
        """Drop the weights (they are reloaded by the next `generate`)."""
        with self._lock:
            self._model = None
            self._tokenizer = None

    # ------------------------------------------------------------------------------------------- generate
    def render(self, request: LLMRequest) -> str:
        """The text the model sees: chat messages through the tokenizer's chat template, or the raw prompt."""
        self.load()
        if request.prompt is not None:
            return request.prompt
        if not request.messages:
            raise ValueError("LLMRequest has neither `messages` nor `prompt`")
        if not getattr(self._tokenizer, "chat_template", None):
            raise ValueError(
                f"model {self.model!r} has no chat template; send a raw `prompt` or use an instruct model"
            )
        text = self._tokenizer.apply_chat_template(
            request.message_dicts(), tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """Generate for all requests, batching those with equal parameters (seed aside), longest first."""
        if not requests:
            return []
        with self._lock:
            self.load()
            texts = [self.render(r) for r in requests]
            ids = [
                list(self._tokenizer(t, add_special_tokens=r.prompt is not None)["input_ids"])
                for t, r in zip(texts, requests)
            ]
            groups: dict[GenParams, list[int]] = {}
            for i, r in enumerate(requests):
                groups.setdefault(replace(r.params, seed=0), []).append(i)
            out: list[LLMResponse | None] = [None] * len(requests)
            for idxs in groups.values():
                self._generate_group(requests, texts, ids, sorted(idxs, key=lambda i: -len(ids[i])), out)
        assert all(r is not None for r in out)
        return [r for r in out if r is not None]

    def _generate_group(
        self,
        requests: list[LLMRequest],
        texts: list[str],
        ids: list[list[int]],
        idxs: list[int],
        out: list[LLMResponse | None],
    ) -> None:
        """Fill `out[i]` for every request index in `idxs` (all with the same parameters up to the seed)."""
        params = requests[idxs[0]].params
        greedy = params.temperature <= 0
        copies = 1 if greedy else params.n
        rows = [(i, j) for i in idxs for j in range(copies)]
        gen: dict[tuple[int, int], tuple[str, int]] = {}
        seconds: dict[int, float] = {i: 0.0 for i in idxs}
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            t0 = time.perf_counter()
            results = self._generate_rows(
                [ids[i] for i, _ in chunk],
                params,
                [None if greedy else _row_seed(requests[i].params.seed, j, texts[i]) for i, j in chunk],
            )
            per_row = (time.perf_counter() - t0) / len(chunk)
            for (i, j), res in zip(chunk, results):
                gen[(i, j)] = res
                seconds[i] += per_row
        for i in idxs:
            completions = [gen[(i, 0 if greedy else j)] for j in range(params.n)]
            out[i] = LLMResponse(
                texts=[t for t, _ in completions],
                prompt_tokens=len(ids[i]),
                completion_tokens=sum(c for _, c in completions),
                seconds=seconds[i],
            )

    def _generate_rows(
        self, rows: list[list[int]], params: GenParams, seeds: list[int | None]
    ) -> list[tuple[str, int]]:
        """One left-padded `generate` call; (text, completion token count) per row."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok = self._tokenizer
        batch = tok.pad({"input_ids": rows}, padding=True, return_tensors="pt").to(self.device)
        prompt_len = int(batch["input_ids"].shape[1])
        stopper = _RowStop(tok, prompt_len, self._eos_ids, params.stop, len(rows))
        processors = LogitsProcessorList()
        if any(s is not None for s in seeds):
            processors.append(_RowSampler(params.temperature, params.top_p, seeds, self.device))
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=False,
            eos_token_id=self._eos_ids or None,
            pad_token_id=tok.pad_token_id,
        )
        with torch.inference_mode():
            output = self._model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stopper]),
            )
        generated = output[:, prompt_len:].tolist()
        results: list[tuple[str, int]] = []
        for r, tokens in enumerate(generated):
            count = stopper.finished_at[r] or len(tokens)
            kept = tokens[:count]
            if kept and kept[-1] in self._eos_ids and stopper.by_eos[r]:
                kept = kept[:-1]
            text, _ = _cut_at_stop(tok.decode(kept, skip_special_tokens=True), params.stop)
            results.append((text, count))
        return results


class _RowSampler:
    """A logits processor that samples each row with its own generator and forces that token.

    Rows whose seed is None stay untouched (greedy argmax). For a sampled row the scores become -inf
    except for the drawn token, so the greedy step of `generate` selects it. Temperature scaling, then
    nucleus (top-p) filtering, then a multinomial draw.
    """

    def __init__(self, temperature: float, top_p: float, seeds: list[int | None], device: str) -> None:
        import torch

        self.temperature = temperature
        self.top_p = top_p
        self.generators: list[torch.Generator | None] = []
        for s in seeds:
            if s is None:
                self.generators.append(None)
            else:
                g = torch.Generator(device=device)
                g.manual_seed(s)
                self.generators.append(g)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        for r, g in enumerate(self.generators):
            if g is None:
                continue
            probs = torch.softmax(scores[r].float() / self.temperature, dim=-1)
            if self.top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True)
                before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
                sorted_probs[before >= self.top_p] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            token = int(torch.multinomial(probs, 1, generator=g).item())
            scores[r].fill_(float("-inf"))
            scores[r, token] = 0.0
        return scores


class _RowStop:
    """A stopping criterion that ends each row at its first eos or stop string and records where.

    `finished_at[r]` is the number of generated tokens of row r up to and including the one that ended it
    (0 while running); `by_eos[r]` tells whether that token was an eos.
    """

    def __init__(self, tokenizer: Any, prompt_len: int, eos_ids: list[int], stops: Sequence[str],
                 n_rows: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.eos_ids = set(eos_ids)
        self.stops = [s for s in stops if s]
        self.finished_at = [0] * n_rows
        self.by_eos = [False] * n_rows

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        n_generated = int(input_ids.shape[1]) - self.prompt_len
        last = input_ids[:, -1].tolist()
        for r in range(input_ids.shape[0]):
            if self.finished_at[r]:
                done[r] = True
                continue
            if last[r] in self.eos_ids:
                self.finished_at[r], self.by_eos[r], done[r] = n_generated, True, True
            elif self.stops:
                text = self.tokenizer.decode(input_ids[r, self.prompt_len:].tolist(), skip_special_tokens=True)
                if any(s in text for s in self.stops):
                    self.finished_at[r], done[r] = n_generated, True
        return done

