"""Continuous batching for the llamacpp backend: several completions decoded together on one llama.cpp context.

On a CPU, decoding one token of a 0.5B model is bound by memory bandwidth (the whole model is read for each
token), while evaluating a batch of tokens is bound by compute and several times faster per token. Decoding
`parallel` completions together, one token of each per `llama_decode` call, reads the model once for all of them.
On 2 cores this is `benchmarks/inference_speed.py`'s `llamacpp_p4` row against the `llamacpp` row.

How it works (llama.cpp's own multi-sequence API through llama-cpp-python's low-level bindings):

- One context with `parallel` sequences (`n_seq_max`) in a unified KV cache of `parallel * n_ctx` cells, flash
  attention as llama.cpp chooses (on, on these CPUs; llama-cpp-python's one-at-a-time context has it off).
- Completions wait in a queue (in the order given: the backend sorts requests by prompt text). A free sequence
  takes the next one: the longest prefix its prompt shares with what any sequence holds is copied with
  `llama_memory_seq_cp` (in a unified cache the cells are shared, not copied), the rest of the prompt is
  evaluated in chunks of `n_batch`, and the first token is sampled from the last prompt position's logits.
  So n samples of one prompt, or questions on one schema, evaluate the shared prefix once.
- A call with a sampled request starts from an empty cache. Where a prompt's cells land in the unified cache, and
  which tokens shared a batch with it, change its logits in the last bits (llama.cpp's kernels and its tiled
  attention depend on batch shape and cell layout); starting empty makes the layout a function of the call's own
  requests, so the same requests with the same seeds give the same samples whatever an earlier call left
  (docs/inference.md, "What is reproducible"). Greedy calls keep the prefixes earlier calls left: on the demo set,
  starting every call empty evaluated 7,731 tokens instead of 4,196 (same EX), and a greedy answer can move only
  where two logits nearly tie.
- Each step feeds the last sampled token of every running completion in one batch and samples the next token of
  each from its own row of logits. A completion that ends frees its sequence for the next in the queue at once:
  one long answer does not hold the others.
- Sampling uses llama.cpp's samplers, one chain per completion: greedy at temperature 0, otherwise top-p,
  temperature and a seeded distribution sampler. Greedy answers equal one-at-a-time decoding's except where
  two logits tie to within the batched kernels' rounding (the parity test checks real questions).
- The end of a completion is decided exactly as in one-at-a-time decoding (`finish`): an end-of-generation token,
  a stop string, the closing fence or a loop (`t2s.llm.stops.CompletionMonitor`), or `max_new_tokens`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from t2s.llm.base import GenParams
from t2s.llm.stops import CompletionMonitor, cut_at_stop, finish_text


@dataclass
class Completion:
    """One completion to decode: the prompt's tokens, the request's parameters and the sampler seed."""

    prompt: list[int]
    params: GenParams
    seed: int


@dataclass
class _Running:
    job: Completion
    index: int
    slot: int
    sampler: Any
    monitor: CompletionMonitor
    tokens: list[int] = field(default_factory=list)
    next_token: int | None = None


def finish(tokens: list[int], params: GenParams, is_eog: Callable[[int], bool],
           detokenize: Callable[[list[int]], str], monitor: CompletionMonitor) -> str | None:
    """Why a completion ends after its latest token ("stop", "length", "loop"), or None to go on.

    The order of the one-at-a-time loop: end of generation, stop strings, closing fence and loops, token limit.
    """
    if is_eog(tokens[-1]):
        return "stop"
    stops = [s for s in params.stop if s]
    if stops and cut_at_stop(detokenize(tokens), stops)[1]:
        return "stop"
    found = monitor.check(tokens)
    if found is not None:
        return found
    if len(tokens) >= params.max_new_tokens:
        return "length"
    return None


def completion_text(tokens: list[int], reason: str, params: GenParams, is_eog: Callable[[int], bool],
                    detokenize: Callable[[list[int]], str]) -> tuple[str, str]:
    """The text of a finished completion (eos dropped, stop strings and fence applied) and its finish reason."""
    eos = bool(tokens) and is_eog(tokens[-1])
    text, stopped = finish_text(detokenize(tokens[:-1] if eos else tokens), params)
    return text, "stop" if stopped else reason


class ParallelDecoder:
    """`parallel` llama.cpp sequences decoded together (see the module docstring); `run` decodes a list of
    completions and returns (text, completion tokens, finish reason, seconds) for each, in input order.

    `model` is the loaded `llama_cpp.Llama` (its weights and vocabulary are shared, not loaded again); the
    decoder has its own context. `n_ctx` is the window of each sequence (prompt + completion).
    """

    def __init__(self, model: Any, *, parallel: int, n_ctx: int, n_batch: int, threads: int,
                 detokenize: Callable[[list[int]], str], is_eog: Callable[[int], bool]) -> None:
        import llama_cpp

        if parallel < 2:
            raise ValueError(f"ParallelDecoder needs parallel >= 2, got {parallel} (key `parallel`)")
        self._lib = llama_cpp
        self.parallel = parallel
        self.n_ctx = n_ctx
        self.n_batch = max(n_batch, parallel)
        self.detokenize = detokenize
        self.is_eog = is_eog
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * parallel
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = parallel
        params.kv_unified = True
        # llama.cpp's own choice (-1, auto: flash attention where the backend has it, as on these CPUs); the
        # one-at-a-time context keeps llama-cpp-python's default (off)
        params.flash_attn_type = -1
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(model._model.model, params)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not create a context for {parallel} parallel sequences of "
                               f"{n_ctx} tokens; lower `parallel` or `n_ctx` in the LLM config")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, parallel)
        #: the tokens each sequence's KV cache holds (kept after a completion ends, for prefix reuse within a call)
        self._held: list[list[int]] = [[] for _ in range(parallel)]

    def close(self) -> None:
        """Free the context and the batch."""
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None

    # ---------------------------------------------------------------------------------------------- batch
    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One `llama_decode` of (token, position, sequence, wants logits) entries."""
        b = self._batch
        for k, (token, pos, seq, logits) in enumerate(entries):
            b.token[k] = token
            b.pos[k] = pos
            b.n_seq_id[k] = 1
            b.seq_id[k][0] = seq
            b.logits[k] = logits
        b.n_tokens = len(entries)
        rc = self._lib.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (code {rc}) on a batch of {len(entries)} tokens; the KV cache of "
                               f"{self.parallel} x {self.n_ctx} cells may be full: lower `parallel` or raise `n_ctx`")

    def _load(self, slot: int, prompt: list[int]) -> int:
        """Put `prompt` in sequence `slot`, reusing the longest prefix any sequence holds; the batch index of the
        last prompt position's logits."""
        lib = self._lib

        def common(held: list[int]) -> int:
            n = 0
            for a, b in zip(held, prompt):
                if a != b:
                    break
                n += 1
            return n

        source = max(range(self.parallel), key=lambda s: (common(self._held[s]), s == slot))
        length = min(common(self._held[source]), len(prompt) - 1)  # the last token is evaluated for its logits
        if source == slot:
            lib.llama_memory_seq_rm(self._mem, slot, length, -1)
        else:
            lib.llama_memory_seq_rm(self._mem, slot, -1, -1)
            if length > 0:
                lib.llama_memory_seq_cp(self._mem, source, slot, 0, length)
        self._held[slot] = prompt[:length]
        last = 0
        for start in range(length, len(prompt), self.n_batch):
            chunk = prompt[start:start + self.n_batch]
            end = start + len(chunk) == len(prompt)
            self._decode([(t, start + k, slot, end and k == len(chunk) - 1) for k, t in enumerate(chunk)])
            last = len(chunk) - 1
        self._held[slot] = list(prompt)
        return last

    def _sampler(self, params: GenParams, seed: int) -> Any:
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            if params.top_p < 1.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    # ------------------------------------------------------------------------------------------------ run
    def run(self, jobs: list[Completion]) -> list[tuple[str, int, str, float]]:
        """Decode `jobs` (at most `parallel` at a time); (text, completion tokens, finish reason, seconds) each.

        Seconds: the wall time of the steps a completion took part in, each step's time split evenly among the
        completions in it (prompt evaluation is charged to its completion), so the seconds sum to the wall time.
        The caller (`LlamaCppLLM.generate`) has checked that every prompt plus `max_new_tokens` fits `n_ctx`, which
        keeps each sequence within its share of the cache.
        """
        results: list[tuple[str, int, str] | None] = [None] * len(jobs)
        seconds = [0.0] * len(jobs)
        queue = deque(range(len(jobs)))
        running: dict[int, _Running] = {}
        lib = self._lib
        if any(job.params.temperature > 0 for job in jobs):  # seeded samples depend on the call's requests only
            lib.llama_memory_clear(self._mem, True)
            self._held = [[] for _ in range(self.parallel)]

        def end(r: _Running, reason: str) -> None:
            lib.llama_sampler_free(r.sampler)
            text, why = completion_text(r.tokens, reason, r.job.params, self.is_eog, self.detokenize)
            results[r.index] = (text, len(r.tokens), why)
            del running[r.slot]

        def take(r: _Running, batch_index: int) -> None:
            token = lib.llama_sampler_sample(r.sampler, self._ctx, batch_index)
            r.tokens.append(token)
            reason = finish(r.tokens, r.job.params, self.is_eog, self.detokenize, r.monitor)
            if reason is None:
                r.next_token = token
            else:
                end(r, reason)

        try:
            while queue or running:
                for slot in range(self.parallel):
                    if slot in running or not queue:
                        continue
                    i = queue.popleft()
                    job = jobs[i]
                    if job.params.max_new_tokens <= 0:
                        results[i] = ("", 0, "length")
                        continue
                    start = time.perf_counter()
                    r = running[slot] = _Running(job, i, slot, self._sampler(job.params, job.seed),
                                                 CompletionMonitor(job.params, self.detokenize))
                    take(r, self._load(slot, job.prompt))
                    seconds[i] += time.perf_counter() - start
                if not running:
                    continue
                start = time.perf_counter()
                step = list(running.values())
                self._decode([(r.next_token, len(self._held[r.slot]), r.slot, True) for r in step])
                share = (time.perf_counter() - start) / len(step)
                for k, r in enumerate(step):
                    self._held[r.slot].append(r.next_token)
                    seconds[r.index] += share
                    take(r, k)
        except BaseException:
            # an interrupted or failed step leaves the cache in an unknown state: forget it
            lib.llama_memory_clear(self._mem, True)
            self._held = [[] for _ in range(self.parallel)]
            raise
        finally:
            for r in list(running.values()):
                lib.llama_sampler_free(r.sampler)
            running.clear()
        return [(*r, s) for r, s in zip(results, seconds) if r is not None]
