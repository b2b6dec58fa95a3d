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
  temperature and a seeded distribution sampler. A constrained completion (`Completion.grammar`, GBNF) also has
  llama.cpp's grammar sampler (`llama_sampler_init_grammar`), used as llama.cpp's own `common_sampler_sample` uses it
  (`Sampler`). Greedy answers equal one-at-a-time decoding's except where
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
    """One completion to decode: the prompt's tokens, the request's parameters, the sampler seed, and the GBNF grammar
    it must follow (None: unconstrained; the backend has checked that llama.cpp parses it)."""

    prompt: list[int]
    params: GenParams
    seed: int
    grammar: str | None = None


class Sampler:
    """The samplers of one completion: the chain (greedy at temperature 0, else top-p, temperature and a seeded
    distribution sampler) and, for a constrained completion, llama.cpp's grammar sampler.

    A constrained step samples as llama.cpp's `common_sampler_sample` does: the chain picks a token from the raw
    logits; if the grammar allows it (checked on that one candidate), it is taken; otherwise the grammar masks the
    whole vocabulary and the chain picks again from what is left. Masking 150k candidates costs about half a second
    per step with a per-database SQL grammar on these CPUs, checking one costs microseconds, and the result is the
    same: the greedy choice among allowed tokens is the greedy choice when it is allowed, and a sample redrawn from
    the masked distribution after a rejected draw is a draw from the masked distribution (top-p aside). The chain's
    samplers keep no state between steps (greedy, top-p, temperature, distribution), so only the grammar is told
    which token was taken.
    """

    def __init__(self, lib: Any, vocab: Any, params: GenParams, seed: int, grammar: str | None = None) -> None:
        self._lib = lib
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_greedy())
        else:
            if params.top_p < 1.0:
                lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_top_p(params.top_p, 1))
            lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_temp(params.temperature))
            lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_dist(seed))
        self.grammar: Any = None
        self.n_vocab = int(lib.llama_vocab_n_tokens(vocab))
        #: steps where the chain's first choice broke the grammar and the vocabulary was masked
        self.masked_steps = 0
        if grammar is not None:
            self.grammar = lib.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not self.grammar:
                self.free()
                raise ValueError("llama.cpp cannot parse the grammar of a constrained completion (root rule `root`)")

    def allows(self, token: int) -> bool:
        """Whether the grammar, in its current state, lets `token` through (always, without a grammar)."""
        if self.grammar is None:
            return True
        import ctypes

        lib = self._lib
        one = (lib.llama_token_data * 1)()
        one[0].id, one[0].logit, one[0].p = token, 0.0, 0.0
        candidates = lib.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
        return one[0].logit != float("-inf")

    def sample(self, ctx: Any, index: int) -> int:
        """The next token from the logits of batch position `index` of context `ctx` (the grammar told of it)."""
        lib = self._lib
        token = int(lib.llama_sampler_sample(self.chain, ctx, index))
        if self.grammar is None:
            return token
        if not self.allows(token):
            import ctypes

            import numpy as np

            self.masked_steps += 1
            row = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
            data = np.zeros(self.n_vocab, dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)],
                                                          align=True))
            data["id"] = np.arange(self.n_vocab, dtype=np.int32)
            data["logit"] = row
            candidates = lib.llama_token_data_array(data=data.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)),
                                                    size=self.n_vocab, selected=-1, sorted=False)
            lib.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
            lib.llama_sampler_apply(self.chain, ctypes.byref(candidates))
            token = int(data["id"][candidates.selected])
        lib.llama_sampler_accept(self.grammar, token)
        return token

    def accept(self, token: int) -> None:
        """Advance the grammar past `token` (which it must allow)."""
        if self.grammar is not None:
            self._lib.llama_sampler_accept(self.grammar, token)

    def free(self) -> None:
        lib = self._lib
        if self.chain is not None:
            lib.llama_sampler_free(self.chain)
            self.chain = None
        if self.grammar:
            lib.llama_sampler_free(self.grammar)
        self.grammar = None


@dataclass
class _Running:
    job: Completion
    index: int
    slot: int
    sampler: Sampler
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
        self._vocab = model._model.vocab
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
        #: decoding steps of constrained completions where the grammar had to mask the vocabulary (`Sampler`)
        self.masked_steps = 0

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
            self.masked_steps += r.sampler.masked_steps
            r.sampler.free()
            text, why = completion_text(r.tokens, reason, r.job.params, self.is_eog, self.detokenize)
            results[r.index] = (text, len(r.tokens), why)
            del running[r.slot]

        def take(r: _Running, batch_index: int) -> None:
            token = r.sampler.sample(self._ctx, batch_index)
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
                    sampler = Sampler(lib, self._vocab, job.params, job.seed, job.grammar)
                    r = running[slot] = _Running(job, i, slot, sampler, CompletionMonitor(job.params, self.detokenize))
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
                r.sampler.free()
            running.clear()
        return [(*r, s) for r, s in zip(results, seconds) if r is not None]
