"""The transformers backend: local checkpoints, hub ids or named models, optional PEFT adapter, batched.

Requests are grouped by parameters and sorted by prompt length (so a batch pads little); each batch is decoded
row by row on one KV cache, `_CHUNK_TOKENS` tokens per `model.generate` call, and rows that finished leave the
batch between calls, so one long row does not hold the short ones:

- greedy rows (`temperature == 0`) take the argmax;
- sampled rows draw from their own `torch.Generator`, seeded from (`params.seed`, completion index, rendered
  prompt), so a sampled completion does not depend on which other requests share its batch, and the response
  cache (keyed with the seed) can replay it exactly;
- each row stops at its first eos token, stop string (transformers' `StopStringCriteria`), closing code fence
  (`stop_after_fence`) or loop (`t2s.llm.stops`); `completion_tokens` counts the tokens generated up to and
  including the one that ended it, the returned text excludes the eos and is cut before the first stop string;
  `finish_reasons` says "stop", "length" or "loop" per completion.

Constraints (`GenParams.constraint`, a GBNF grammar or a JSON schema) are enforced by llguidance: each constrained
row has its own `llguidance.LLMatcher` (compiled once per constraint, copied per row), which a logits processor
(`_GrammarMask`) feeds the row's new tokens and asks for the allowed-token mask before the row's next token is
chosen (greedy or sampled); rows with different constraints (one grammar per database) share a batch. llguidance
was chosen over xgrammar (docs/decoding.md): one 3 MB wheel without dependencies where xgrammar brings triton and a
tvm runtime into a CPU install, masks computed lazily per step instead of a vocabulary-wide precomputation per
grammar (there is one grammar per database and mode), and GBNF read by its own converter, so one grammar source
serves llama.cpp and transformers.

`score` runs one forward pass per (prompt + continuation), batched, and sums the continuation tokens'
log-probabilities.

`n > 1` greedy completions are one generation repeated `n` times (identical by definition); `completion_tokens`
still sums over the `n` returned completions, as `LLMResponse` documents.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2s.llm.base import LLM, Constraint, GenParams, LLMRequest, LLMResponse, ScoreRequest, ScoreResponse
from t2s.llm.models import fingerprint_path, is_named_model, named_models, resolve_model, weights_id
from t2s.llm.stops import CompletionMonitor, finish_text

if TYPE_CHECKING:
    import torch

_DTYPES = ("bfloat16", "float16", "float32", "auto")


def _row_seed(seed: int, index: int, prompt: str) -> int:
    """The generator seed of completion `index` of a sampled request (63-bit, from sha256)."""
    digest = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).hexdigest()
    return int(digest[:15], 16)


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
    supports_scoring = True
    supports_adapters = True
    constraint_kinds = ("grammar", "json_schema")

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
        self._stop_criteria: dict[tuple[str, ...], Any] = {}
        #: llguidance's view of the tokenizer (built on the first constrained request) and one compiled matcher per
        #: constraint (by sha256), copied for each row
        self._lltokenizer: Any = None
        self._matchers: dict[str, Any] = {}
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
            self._stop_criteria = {}
            self._lltokenizer = None
            self._matchers = {}

    # ------------------------------------------------------------------------------------------- generate
    def render(self, request: LLMRequest | ScoreRequest) -> str:
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
        from t2s.llm.structured import check_supported

        check_supported(self, requests)
        with self._lock:
            self.load()
            texts = [self.render(r) for r in requests]
            ids = [
                list(self._tokenizer(t, add_special_tokens=r.prompt is not None)["input_ids"])
                for t, r in zip(texts, requests)
            ]
            groups: dict[GenParams, list[int]] = {}
            for i, r in enumerate(requests):
                groups.setdefault(replace(r.params, seed=0, constraint=None), []).append(i)
            out: list[LLMResponse | None] = [None] * len(requests)
            for idxs in groups.values():
                self._generate_group(requests, texts, ids, sorted(idxs, key=lambda i: -len(ids[i])), out)
        assert all(r is not None for r in out)
        return [r for r in out if r is not None]

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Summed log-probabilities of each continuation after its rendered prompt (see `ScoreResponse`).

        Each (prompt + continuation) is one row of a left-padded forward pass, `batch_size` rows at a time;
        the continuation is tokenized on its own, without special tokens. Computed in float32 from the logits.
        """
        if not requests:
            return []
        import torch

        with self._lock:
            self.load()
            tok = self._tokenizer
            prompts = [list(tok(self.render(r), add_special_tokens=r.prompt is not None)["input_ids"])
                       for r in requests]
            rows = [(i, k, list(tok(c, add_special_tokens=False)["input_ids"]))
                    for i, r in enumerate(requests) for k, c in enumerate(r.continuations)]
            order = sorted(range(len(rows)), key=lambda x: -(len(prompts[rows[x][0]]) + len(rows[x][2])))
            logprobs = [[0.0] * len(r.continuations) for r in requests]
            seconds = [0.0] * len(requests)
            for start in range(0, len(order), self.batch_size):
                chunk = [rows[x] for x in order[start:start + self.batch_size]]
                t0 = time.perf_counter()
                full = [prompts[i] + cont for i, _, cont in chunk]
                batch = tok.pad({"input_ids": full}, padding=True, return_tensors="pt").to(self.device)
                mask = batch["attention_mask"]
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                with torch.inference_mode():
                    logits = self._model(input_ids=batch["input_ids"], attention_mask=mask,
                                         position_ids=positions).logits
                width = int(batch["input_ids"].shape[1])
                for b, (i, k, cont) in enumerate(chunk):
                    if not cont:
                        continue
                    first = width - len(cont)  # left padding: the continuation ends the row
                    lp = torch.log_softmax(logits[b, first - 1:width - 1].float(), dim=-1)
                    target = torch.tensor(cont, device=lp.device).unsqueeze(1)
                    logprobs[i][k] = float(lp.gather(1, target).sum())
                per_row = (time.perf_counter() - t0) / len(chunk)
                for i, _, _ in chunk:
                    seconds[i] += per_row
            return [ScoreResponse(logprobs=logprobs[i], prompt_tokens=len(prompts[i]), seconds=seconds[i])
                    for i in range(len(requests))]

    def _generate_group(
        self,
        requests: list[LLMRequest],
        texts: list[str],
        ids: list[list[int]],
        idxs: list[int],
        out: list[LLMResponse | None],
    ) -> None:
        """Fill `out[i]` for every request index in `idxs` (all with the same parameters up to the seed and the
        constraint)."""
        params = requests[idxs[0]].params
        greedy = params.temperature <= 0
        copies = 1 if greedy else params.n
        rows = [(i, j) for i in idxs for j in range(copies)]
        gen: dict[tuple[int, int], tuple[str, int, str]] = {}
        seconds: dict[int, float] = {i: 0.0 for i in idxs}
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            results, row_seconds = self._generate_rows(
                [ids[i] for i, _ in chunk],
                params,
                [None if greedy else _row_seed(requests[i].params.seed, j, texts[i]) for i, j in chunk],
                [requests[i].params.constraint for i, _ in chunk],
            )
            for (i, j), res, sec in zip(chunk, results, row_seconds):
                gen[(i, j)] = res
                seconds[i] += sec
        for i in idxs:
            completions = [gen[(i, 0 if greedy else j)] for j in range(params.n)]
            out[i] = LLMResponse(
                texts=[t for t, _, _ in completions],
                prompt_tokens=len(ids[i]),
                completion_tokens=sum(c for _, c, _ in completions),
                seconds=seconds[i],
                finish_reasons=[r for _, _, r in completions],
            )

    def _stop_criterion(self, stops: tuple[str, ...]) -> Any:
        """transformers' `StopStringCriteria` for these stop strings (built once per set: it indexes the vocab)."""
        from transformers import StopStringCriteria

        key = tuple(s for s in stops if s)
        if not key:
            return None
        if key not in self._stop_criteria:
            self._stop_criteria[key] = StopStringCriteria(tokenizer=self._tokenizer, stop_strings=list(key))
        return self._stop_criteria[key]

    def _row_grammar(self, constraint: Constraint | None) -> _RowGrammar | None:
        """A fresh llguidance matcher for one row under `constraint` (None without one)."""
        if constraint is None:
            return None
        from t2s.llm.structured import llguidance_grammar, require_llguidance

        llg = require_llguidance("the hf backend's constrained decoding")
        base = self._matchers.get(constraint.sha256)
        if base is None:
            if self._lltokenizer is None:
                import llguidance.hf

                vocab = int(self._model.get_output_embeddings().weight.shape[0])
                self._lltokenizer = llguidance.hf.from_tokenizer(self._tokenizer, n_vocab=vocab,
                                                                 eos_token=list(self._eos_ids) or None)
            base = llg.LLMatcher(self._lltokenizer, llguidance_grammar(constraint), log_level=0)
            if base.is_error():
                raise ValueError(f"llguidance cannot compile the constraint {constraint.name or constraint.kind!r}: "
                                 f"{base.get_error()[:500]}")
            if len(self._matchers) >= 64:
                self._matchers.pop(next(iter(self._matchers)))
            self._matchers[constraint.sha256] = base
        return _RowGrammar(base.deep_copy(), constraint)

    def grammar_problem(self, constraint: Constraint, text: str) -> str | None:
        """Whether decoding under `constraint` can produce `text` and end there, as this backend's llguidance matcher
        sees it: `text` tokenized as the model would write it, consumed token by token, then an end token. None when
        it can; else where it is stopped."""
        with self._lock:
            self.load()
            row = self._row_grammar(constraint)
            assert row is not None
            ids = list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
            for k, token in enumerate(ids):
                if not row.matcher.consume_token(token):
                    return (f"token {k} {self._tokenizer.decode([token])!r} rejected after "
                            f"{self._tokenizer.decode(ids[:k])[-80:]!r}")
            if not self._eos_ids or not row.matcher.consume_token(self._eos_ids[0]):
                return "the text is incomplete: the grammar does not let it end here"
            return None

    def _generate_rows(
        self, rows: list[list[int]], params: GenParams, seeds: list[int | None],
        constraints: list[Constraint | None] | None = None,
    ) -> tuple[list[tuple[str, int, str]], list[float]]:
        """Generate one batch of rows; per row (text, completion token count, finish reason), and its seconds.

        The rows are generated `_CHUNK_TOKENS` tokens at a time on one KV cache; after each chunk the rows that
        finished leave the batch (`DynamicCache.batch_select_indices`), so a long or looping row does not make
        the finished ones pay for its steps. A chunk's wall time is shared equally by the rows it ran.
        """
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok = self._tokenizer
        batch = tok.pad({"input_ids": rows}, padding=True, return_tensors="pt").to(self.device)
        input_ids, attention = batch["input_ids"], batch["attention_mask"]
        n = len(rows)
        generated: list[list[int]] = [[] for _ in range(n)]
        reasons: list[str] = ["length"] * n
        seconds = [0.0] * n
        active = list(range(n))
        samplers = [_row_generator(s, self.device) for s in seeds]
        grammars = [self._row_grammar(c) for c in (constraints or [None] * n)]
        stop_strings = self._stop_criterion(params.stop)
        cache: Any = None
        done_steps = 0
        while active and done_steps < params.max_new_tokens:
            steps = min(_CHUNK_TOKENS, params.max_new_tokens - done_steps)
            monitor = _RowStop([generated[g] for g in active], int(input_ids.shape[1]), self._eos_ids,
                               stop_strings, params, tok)
            processors = LogitsProcessorList()
            if any(grammars[g] is not None for g in active):
                processors.append(_GrammarMask([grammars[g] for g in active], [generated[g] for g in active],
                                               int(input_ids.shape[1]), monitor))
            if any(samplers[g] is not None for g in active):
                processors.append(_RowSampler(params.temperature, params.top_p, [samplers[g] for g in active]))
            config = GenerationConfig(
                max_new_tokens=steps,
                do_sample=False,
                eos_token_id=self._eos_ids or None,
                pad_token_id=tok.pad_token_id,
                return_dict_in_generate=True,
            )
            t0 = time.perf_counter()
            with torch.inference_mode():
                output = self._model.generate(
                    input_ids=input_ids,
                    attention_mask=attention,
                    **({} if cache is None else {_cache_kwarg(): cache}),
                    generation_config=config,
                    logits_processor=processors,
                    stopping_criteria=StoppingCriteriaList([monitor]),
                )
            elapsed = time.perf_counter() - t0
            sequences = output.sequences
            new = sequences[:, input_ids.shape[1]:]
            width = int(new.shape[1])
            new_rows = new.tolist()
            keep: list[int] = []
            for b, g in enumerate(active):
                seconds[g] += elapsed / len(active)
                count = monitor.finished_at[b]
                generated[g].extend(new_rows[b][:count or width])
                if count:
                    reasons[g] = monitor.reasons[b]
                else:
                    keep.append(b)
            done_steps += width
            if not keep or done_steps >= params.max_new_tokens:
                break
            cache = getattr(output, "cache", None) or output.past_key_values
            if len(keep) < len(active):
                index = torch.tensor(keep, device=sequences.device)
                cache.batch_select_indices(index)
                sequences = sequences.index_select(0, index)
                attention = attention.index_select(0, index)
                active = [active[b] for b in keep]
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], width))], dim=1)
            input_ids = sequences
        results: list[tuple[str, int, str]] = []
        for tokens, reason in zip(generated, reasons):
            kept = tokens[:-1] if tokens and tokens[-1] in self._eos_ids and reason == "stop" else tokens
            text = tok.decode(kept, skip_special_tokens=True)
            text, stopped = finish_text(text, params)
            results.append((text, len(tokens), "stop" if stopped else reason))
        return results, seconds


#: tokens generated per `generate` call before finished rows leave the batch
_CHUNK_TOKENS = 32


def _cache_kwarg() -> str:
    """The `generate` keyword for a KV cache to continue from: `cache` (transformers >= 5.x), else `past_key_values`."""
    from transformers.generation.utils import GenerationMixin

    return "cache" if "cache" in inspect.signature(GenerationMixin.generate).parameters else "past_key_values"


def _row_generator(seed: int | None, device: str) -> Any:
    """A seeded `torch.Generator` for a sampled row, None for a greedy one."""
    if seed is None:
        return None
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


class _RowSampler:
    """A logits processor that samples each row with its own generator and forces that token.

    Rows whose generator is None stay untouched (greedy argmax). Each generator is the row's own, kept across
    the chunks of `_generate_rows`, so a row's draws do not depend on which rows share its batch. For a sampled row the scores become -inf
    except for the drawn token, so the greedy step of `generate` selects it. Temperature scaling, then
    nucleus (top-p) filtering, then a multinomial draw.
    """

    def __init__(self, temperature: float, top_p: float, generators: list[Any]) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.generators = generators

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


class _RowGrammar:
    """One row's llguidance matcher and how many of the row's tokens it has consumed."""

    def __init__(self, matcher: Any, constraint: Constraint) -> None:
        self.matcher = matcher
        self.constraint = constraint
        self.consumed = 0


class _GrammarMask:
    """A logits processor that keeps each constrained row to the tokens its grammar allows next.

    Before each step it feeds every constrained row's matcher the tokens the row produced since the matcher last
    looked (`previous[b]` from earlier chunks, then the chunk's own), then sets the scores of the tokens the matcher
    does not allow to -inf, so the greedy argmax or the row's sampler (`_RowSampler`, after this processor) picks an
    allowed one. Rows without a grammar, and rows `monitor` has already finished (transformers pads them until the
    chunk ends), are left alone.
    """

    def __init__(self, grammars: list[_RowGrammar | None], previous: list[list[int]], start: int,
                 monitor: _RowStop) -> None:
        self.grammars = grammars
        self.previous = previous
        self.start = start
        self.monitor = monitor

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import numpy as np
        import torch

        for b, row in enumerate(self.grammars):
            if row is None or self.monitor.finished_at[b]:
                continue
            tokens = self.previous[b] + input_ids[b, self.start:].tolist()
            for token in tokens[row.consumed:]:
                if not row.matcher.consume_token(token):
                    raise RuntimeError(f"the hf backend produced a token its grammar does not allow under the "
                                       f"constraint {row.constraint.name or row.constraint.kind!r}: "
                                       f"{row.matcher.get_error()[:300]}")
            row.consumed = len(tokens)
            bits = np.unpackbits(np.frombuffer(row.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            vocab = scores.shape[-1]
            allowed = np.zeros(vocab, dtype=bool)
            allowed[:min(vocab, bits.size)] = bits[:vocab].astype(bool)
            if not allowed.any():
                raise RuntimeError(f"the grammar of the constraint {row.constraint.name or row.constraint.kind!r} "
                                   f"allows no token here: {row.matcher.get_error()[:300]}")
            scores[b, torch.from_numpy(~allowed).to(scores.device)] = float("-inf")
        return scores


class _RowStop:
    """A stopping criterion that ends each row at eos, a stop string, the closing fence or a loop, and records it.

    Stop strings are matched by transformers' own `StopStringCriteria`; fence and loops by
    `t2s.llm.stops.CompletionMonitor`. `finished_at[b]` is the number of tokens of this chunk of batch row b up to
    and including the one that ended it (0 while running), `reasons[b]` why ("stop" or "loop"). `previous[b]` are
    the row's tokens from earlier chunks (the loop detector and the fence look at the whole completion).
    """

    def __init__(self, previous: list[list[int]], start: int, eos_ids: list[int], stop_strings: Any,
                 params: GenParams, tokenizer: Any) -> None:
        self.previous = previous
        self.start = start
        self.eos_ids = set(eos_ids)
        self.stop_strings = stop_strings
        self.monitor = CompletionMonitor(params, lambda t: tokenizer.decode(t, skip_special_tokens=True))
        self.finished_at = [0] * len(previous)
        self.reasons = [""] * len(previous)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        n_new = int(input_ids.shape[1]) - self.start
        by_string = self.stop_strings(input_ids, scores).tolist() if self.stop_strings is not None else None
        last = input_ids[:, -1].tolist()
        done = []
        for b in range(input_ids.shape[0]):
            if self.finished_at[b]:
                done.append(True)
                continue
            reason = None
            if last[b] in self.eos_ids or (by_string is not None and by_string[b]):
                reason = "stop"
            else:
                reason = self.monitor.check(self.previous[b] + input_ids[b, self.start:].tolist())
            if reason is not None:
                self.finished_at[b], self.reasons[b] = n_new, reason
            done.append(reason is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
