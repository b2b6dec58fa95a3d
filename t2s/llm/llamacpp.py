"""The llama.cpp backend: a GGUF model on CPU through `llama_cpp` (llama-cpp-python, installed by `make`).

The fastest way to run the embedded model on a CPU (0.7-0.9 s per greedy question against 2.8 s for
transformers bf16 on an idle 2-core machine; docs/inference.md has the measurements). It loads the hash-verified
GGUF assembled from the model wheels, no conversion.

- Prompts: chat messages are rendered with the chat template stored in the GGUF by the same Jinja renderer
  transformers uses (`t2s.llm.chat.render_chat`), so the text equals the `hf` backend's for the embedded model
  (tested), and is tokenized with special tokens parsed; a raw prompt is sent as is (with the vocabulary's BOS).
- Decoding: with `parallel: 1`, one sequence at a time on one llama.cpp context. Requests are sent in order of
  their rendered prompt text, so prompts that share a prefix (same system message, same schema) follow each other,
  and the KV cache of the common prefix with what the context holds is reused. With `parallel: N > 1`, N
  completions are decoded together on a second context (`t2s.llm.llamacpp_parallel`: continuous batching, shared
  prompt prefixes, one long answer never holds the others).
- Reproducibility (docs/inference.md, "What is reproducible"): llama.cpp's arithmetic depends on how tokens are
  batched (its kernels differ by batch size, and by CPU: AVX2 and AVX-512 machines pick different ones), so a
  token's logits are only reproducible when it is evaluated in the same batch shape over the same cache. With
  `parallel: 1` every prompt is evaluated canonically (`_evaluate_body`): all tokens but the last in chunks that
  start at multiples of `ALIGN` tokens, the last one alone, and the cache is reused only up to the end of a chunk
  evaluated that way. So a request's completions and scores depend only on the request (and the CPU), never on
  what came before: the same seed gives the same samples on a cold and a warm cache. With `parallel > 1` a call
  with sampled requests starts from an empty cache, so its completions depend only on its list of requests; greedy
  calls reuse what earlier calls left (faster), so a greedy answer can move where two logits nearly tie. Greedy
  answers can also differ between the two modes, and between CPUs.
- Sampling matches the `hf` backend's semantics: greedy at temperature 0, otherwise temperature and top-p only
  (top-k, min-p and repetition penalties off); completion j of a sampled request is seeded from (`seed`, j).
- Constraints (`GenParams.constraint`): a GBNF grammar, or a JSON schema turned into GBNF by llama-cpp-python's
  `json_schema_to_gbnf`, is enforced by llama.cpp's grammar sampler (`llama_sampler_init_grammar`, the sampler
  llama-cpp-python's `LlamaGrammar` builds), consulted as llama.cpp's `common_sampler_sample` does
  (`t2s.llm.llamacpp_parallel.Sampler`: the chain's choice is taken when the grammar allows it, else the grammar
  masks the vocabulary and the chain chooses again), in one-at-a-time decoding and in the parallel decoder alike.
  Every grammar is parsed by llama.cpp once before use (a grammar it cannot read fails the request, naming the
  constraint, instead of crashing the sampler). When the grammar is complete only end-of-generation tokens remain.
- A completion ends at an end-of-generation token, a stop string, the closing fence (`stop_after_fence`) or a
  loop (`t2s.llm.stops`); `completion_tokens` counts up to and including the token that ended it (the eos too,
  as in `hf`); `finish_reasons` says "stop", "length" or "loop".
- `score` evaluates prompt + continuation tokens and reads the next-token logits after each position (each
  readout evaluated canonically, as above), reusing the prompt's KV cache between continuations and requests.
- Threads: `n_threads: null` takes `t2s.llm.cpu.default_threads()` (cores, or cores // n_jobs under the Hydra
  joblib launcher), not llama.cpp's half-the-cores default.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

from t2s.llm.base import LLM, Constraint, GenParams, LLMRequest, LLMResponse, ScoreRequest, ScoreResponse
from t2s.llm.chat import render_chat
from t2s.llm.cpu import default_threads
from t2s.llm.llamacpp_parallel import Completion, ParallelDecoder, Sampler, completion_text, finish
from t2s.llm.models import embedded_gguf, embedded_spec, fingerprint_path, import_optional, is_named_model
from t2s.llm.stops import CompletionMonitor

#: prompt chunks start at multiples of this many tokens, and cache reuse stops at a chunk's end (see `_evaluate_body`)
ALIGN = 128


def canonical_reuse(cached: list[int], body: list[int], ends: set[int], align: int = ALIGN) -> int:
    """How many leading tokens of `body` to keep from the cache so that evaluating the rest in chunks starting at
    multiples of `align` gives the KV cache that evaluating all of `body` that way from scratch gives.

    `cached` is what the cache holds and `ends` the ends of chunks that were evaluated canonically (each began at a
    multiple of `align`). A kept end must be a multiple of `align` (a full chunk) or the end of `body` itself (its
    last, partial chunk, which a cold evaluation of `body` ends at too).
    """
    common = 0
    for a, b in zip(cached, body):
        if a != b:
            break
        common += 1
    limit = min(common, len(body))
    usable = [e for e in ends if e <= limit and (e % align == 0 or e == len(body))]
    return max(usable, default=0)


def _completion_seed(seed: int, index: int) -> int:
    """The llama.cpp seed of completion `index` of a sampled request (31-bit, from sha256)."""
    return int(hashlib.sha256(f"{seed}\0{index}".encode()).hexdigest()[:7], 16)


class LlamaCppLLM(LLM):
    """A GGUF model run by llama.cpp on CPU; loads lazily on first `generate` or `score`.

    `model`: a `.gguf` path, or an embedded model name (`embedded`, `qwen2.5-coder-0.5b`, `embedded_1.5b`,
    `qwen2.5-coder-1.5b`), whose hash-verified GGUF is assembled once under `<cache_dir>/gguf/` (the same file
    the hf backend converts). `n_ctx`: context window in tokens (prompt + completion). `n_threads`: CPU threads
    for decoding and prompt evaluation (null: `t2s.llm.cpu.default_threads()`). `n_batch`: prompt tokens
    evaluated per step. `parallel`: completions decoded together (1: one at a time).
    """

    backend = "llamacpp"
    supports_scoring = True
    constraint_kinds = ("grammar", "json_schema")

    def __init__(
        self,
        *,
        model: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        parallel: int = 1,
        cache_dir: str,
        adapter: str | None = None,
    ) -> None:
        if adapter is not None:
            raise ValueError(
                f"the llamacpp backend (llm=embedded, llm=llamacpp) does not load PEFT adapters (got adapter={adapter!r});"
                " use the transformers backend for adapters: llm=embedded_hf llm.adapter=<dir>, or "
                "/llm@llms.<name>: embedded_hf in an experiment file"
            )
        if not is_named_model(model) and not model.endswith(".gguf"):
            raise ValueError(
                f"LlamaCppLLM model {model!r} (key `model`) must be a .gguf file or an embedded model name "
                f"(embedded, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)"
            )
        if model == "tiny":
            raise ValueError("LlamaCppLLM cannot run the `tiny` test model (it has no GGUF); use the hf backend")
        if parallel < 1:
            raise ValueError(f"LlamaCppLLM parallel must be >= 1, got {parallel} (key `parallel`)")
        if n_threads is not None and n_threads < 1:
            raise ValueError(f"LlamaCppLLM n_threads must be >= 1 or null, got {n_threads} (key `n_threads`)")
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.parallel = parallel
        self.cache_dir = Path(cache_dir)
        self._llama: Any = None
        self._decoder: ParallelDecoder | None = None
        self._template: str | None = None
        self._special: dict[str, str] = {}
        self._pieces: dict[int, bytes] = {}
        self._model_id: str | None = None
        self._lock = threading.RLock()
        #: ends of the prompt chunks in the one-at-a-time context's cache that were evaluated canonically
        self._chunk_ends: set[int] = set()
        #: GBNF text of each constraint seen (by sha256), checked by llama.cpp's parser
        self._grammars: dict[str, str] = {}
        #: one-at-a-time decoding steps of constrained completions that masked the vocabulary (see `masked_steps`)
        self._masked_steps = 0
        #: seconds the last load took (0 until loaded)
        self.load_seconds = 0.0
        #: threads the loaded model uses (0 until loaded)
        self.threads = 0

    def __repr__(self) -> str:
        return (f"LlamaCppLLM(model={self.model!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads}, "
                f"parallel={self.parallel})")

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

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._llama is not None

    def load(self) -> None:
        """Import llama_cpp and load the model (once). Sets `load_seconds` and `threads`."""
        with self._lock:
            if self._llama is not None:
                return
            llama_cpp = import_optional("llama_cpp", extra="llamacpp", what="the llamacpp LLM backend")
            start = time.perf_counter()
            threads = self.n_threads or default_threads()
            llama = llama_cpp.Llama(
                model_path=str(self.gguf_path()),
                n_ctx=self.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=self.n_batch,
                verbose=False,
            )
            self._template = llama.metadata.get("tokenizer.chat_template")
            special: dict[str, str] = {}
            for name, token in (("bos_token", llama.token_bos()), ("eos_token", llama.token_eos())):
                if token is not None and token >= 0:
                    special[name] = llama.detokenize([token], special=True).decode("utf-8", errors="replace")
            self._special = special
            self._llama = llama
            if self.parallel > 1:
                self._decoder = ParallelDecoder(llama, parallel=self.parallel, n_ctx=self.n_ctx, n_batch=self.n_batch,
                                                threads=threads, detokenize=self._detokenize, is_eog=self._is_eog)
            self.threads = threads
            self.load_seconds = time.perf_counter() - start

    # ------------------------------------------------------------------------------------------- prompts
    def render(self, request: LLMRequest | ScoreRequest) -> str:
        """The text the model sees: chat messages through the GGUF's chat template, or the raw prompt."""
        self.load()
        if request.prompt is not None:
            return request.prompt
        if not request.messages:
            raise ValueError(f"{type(request).__name__} has neither `messages` nor `prompt`")
        if not self._template:
            raise ValueError(
                f"model {self.model!r} has no chat template in its GGUF; send a raw `prompt` or use an instruct model"
            )
        return render_chat(self._template, request.message_dicts(), **self._special)

    def tokens(self, request: LLMRequest | ScoreRequest) -> list[int]:
        """The prompt's token ids: the rendered chat with special tokens parsed, or the raw prompt with BOS."""
        text = self.render(request)
        raw = request.prompt is not None
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=raw, special=not raw))

    def _piece(self, token: int) -> bytes:
        """The bytes of one token. llama-cpp-python's own `detokenize` reads pieces into a 32-byte buffer and
        silently drops longer ones (Qwen's runs of 33+ spaces: deep indentation vanished from answers)."""
        piece = self._pieces.get(token)
        if piece is None:
            import ctypes

            import llama_cpp

            size = 64
            while True:
                buffer = (ctypes.c_char * size)()
                n = llama_cpp.llama_token_to_piece(self._llama._model.vocab, llama_cpp.llama_token(token), buffer,
                                                   size, 0, False)
                if n >= 0:
                    break
                size = -n
            piece = self._pieces[token] = bytes(buffer[:n])
        return piece

    def _detokenize(self, tokens: list[int]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", errors="ignore")

    def _is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._llama._model.vocab, token))

    # ------------------------------------------------------------------------------------------ generate
    def grammar(self, constraint: Constraint | None) -> str | None:
        """The GBNF llama.cpp enforces for a constraint (None without one), checked once with llama.cpp's parser."""
        if constraint is None:
            return None
        text = self._grammars.get(constraint.sha256)
        if text is None:
            import llama_cpp

            if constraint.kind == "json_schema":
                from llama_cpp.llama_grammar import json_schema_to_gbnf

                text = json_schema_to_gbnf(constraint.text)
            else:
                text = constraint.text
            self.load()
            sampler = llama_cpp.llama_sampler_init_grammar(self._llama._model.vocab, text.encode("utf-8"), b"root")
            if not sampler:
                raise ValueError(f"llama.cpp cannot parse the grammar of the constraint "
                                 f"{constraint.name or constraint.kind!r} (root rule `root`; llama.cpp's log says where)")
            llama_cpp.llama_sampler_free(sampler)
            self._grammars[constraint.sha256] = text
        return text

    def grammar_problem(self, constraint: Constraint, text: str) -> str | None:
        """Whether decoding under `constraint` can produce `text` and end there, as llama.cpp's grammar sampler sees
        it: `text` tokenized as the model would write it, each token checked against the grammar's mask and accepted,
        then an end-of-generation token checked. None when it can; else where it is stopped."""
        import llama_cpp

        with self._lock:
            self.load()
            llama = self._llama
            tokens = list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            sampler = Sampler(llama_cpp, llama._model.vocab, GenParams(), 0, self.grammar(constraint))
            try:
                for k, token in enumerate(tokens):
                    if not sampler.allows(token):
                        return (f"token {k} {self._detokenize([token])!r} rejected after "
                                f"{self._detokenize(tokens[:k])[-80:]!r}")
                    sampler.accept(token)
                if not sampler.allows(llama.token_eos()):
                    return "the text is incomplete: the grammar does not let it end here"
                return None
            finally:
                sampler.free()

    def _complete(self, prompt: list[int], params: GenParams, seed: int) -> tuple[str, int, str]:
        """One completion: (text, completion tokens incl. the one that ended it, finish reason)."""
        if params.constraint is not None:
            return self._complete_constrained(prompt, params, seed)
        llama = self._llama
        llama.set_seed(seed)
        monitor = CompletionMonitor(params, self._detokenize)
        completion: list[int] = []
        reason = "length"
        if params.max_new_tokens > 0:
            self._evaluate_body(prompt)
            # `generate` finds all but the last prompt token cached and evaluates the last one alone
            for token in llama.generate(prompt, temp=max(params.temperature, 0.0), top_p=params.top_p, top_k=0,
                                        min_p=0.0, typical_p=1.0, repeat_penalty=1.0):
                completion.append(token)
                found = finish(completion, params, self._is_eog, self._detokenize, monitor)
                if found is not None:
                    reason = found
                    break
        text, why = completion_text(completion, reason, params, self._is_eog, self._detokenize)
        return text, len(completion), why

    def _complete_constrained(self, prompt: list[int], params: GenParams, seed: int) -> tuple[str, int, str]:
        """`_complete` under `params.constraint`: the prompt evaluated canonically as for `generate`, then each token
        drawn by a `Sampler` holding the constraint's grammar (temperature and top-p as `generate`'s chain)."""
        import llama_cpp

        llama = self._llama
        monitor = CompletionMonitor(params, self._detokenize)
        completion: list[int] = []
        reason = "length"
        if params.max_new_tokens > 0:
            sampler = Sampler(llama_cpp, llama._model.vocab, params, seed, self.grammar(params.constraint))
            try:
                self._evaluate_body(prompt)
                llama.eval(prompt[-1:])
                while True:
                    token = sampler.sample(llama._ctx.ctx, -1)
                    completion.append(token)
                    found = finish(completion, params, self._is_eog, self._detokenize, monitor)
                    if found is not None:
                        reason = found
                        break
                    llama.eval([token])
            finally:
                self._masked_steps += sampler.masked_steps
                sampler.free()
        text, why = completion_text(completion, reason, params, self._is_eog, self._detokenize)
        return text, len(completion), why

    @property
    def masked_steps(self) -> int:
        """Decoding steps so far where a constraint's grammar refused the sampler's first pick and masked the whole
        vocabulary (the other constrained steps cost one grammar check)."""
        return self._masked_steps + (self._decoder.masked_steps if self._decoder is not None else 0)

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """Generate for each request, in order of rendered prompt text (prefix reuse); responses in input order.

        With `parallel > 1` the completions of all requests go through the `ParallelDecoder` together.
        """
        if not requests:
            return []
        from t2s.llm.structured import check_supported

        check_supported(self, requests)
        with self._lock:
            self.load()
            prompts = [self.tokens(r) for r in requests]
            for p, r in zip(prompts, requests):
                if len(p) + r.params.max_new_tokens > self.n_ctx:
                    raise ValueError(
                        f"a prompt of {len(p)} tokens plus max_new_tokens={r.params.max_new_tokens} does not fit the "
                        f"llama.cpp context of {self.n_ctx} tokens; raise `n_ctx` in the LLM config")
            order = sorted(range(len(requests)), key=lambda i: prompts[i])
            # greedy completions of one request are identical: decode one and repeat it
            grammars = [self.grammar(r.params.constraint) for r in requests]
            jobs = [(i, Completion(prompts[i], requests[i].params, _completion_seed(requests[i].params.seed, j),
                                   grammars[i]))
                    for i in order
                    for j in range(1 if requests[i].params.temperature <= 0 else requests[i].params.n)]
            if self._decoder is not None:
                done = self._decoder.run([job for _, job in jobs])
            else:
                done = []
                for _, job in jobs:
                    start = time.perf_counter()
                    done.append((*self._complete(job.prompt, job.params, job.seed), time.perf_counter() - start))
            calls: dict[int, list[tuple[str, int, str, float]]] = {}
            for (i, _), result in zip(jobs, done):
                calls.setdefault(i, []).append(result)
            out = []
            for i, r in enumerate(requests):
                got = calls[i] * (r.params.n if r.params.temperature <= 0 else 1)
                out.append(LLMResponse(
                    texts=[t for t, _, _, _ in got],
                    prompt_tokens=len(prompts[i]),
                    completion_tokens=sum(c for _, c, _, _ in got),
                    seconds=sum(s for _, _, _, s in calls[i]),
                    finish_reasons=[f for _, _, f, _ in got],
                ))
            return out

    # ------------------------------------------------------------------------------------------- scoring
    def _evaluate_body(self, tokens: list[int]) -> None:
        """Leave all but the last of `tokens` in the one-at-a-time context's cache, evaluated canonically: in chunks
        that start at multiples of `ALIGN`, reusing cached chunks only where a cold evaluation would have made the
        same ones (`canonical_reuse`). The caller evaluates the last token alone for its logits, so the logits do
        not depend on what the cache held before (the cache holds one sequence, cell i = position i)."""
        llama = self._llama
        body = tokens[:-1]
        try:
            keep = canonical_reuse(list(llama.input_ids[:llama.n_tokens]), body, self._chunk_ends)
            self._chunk_ends = {e for e in self._chunk_ends if e <= keep}
            llama.n_tokens = keep  # `eval` drops the KV cache from here on
            for start in range(keep, len(body), ALIGN):
                llama.eval(body[start:start + ALIGN])
                self._chunk_ends.add(min(start + ALIGN, len(body)))
        except BaseException:
            self._chunk_ends = set()
            llama.n_tokens = 0
            raise

    def _logits_after(self, tokens: list[int]) -> Any:
        """The next-token logits after `tokens` (a numpy array): the body evaluated canonically (`_evaluate_body`),
        then the last token alone."""
        import numpy as np

        llama = self._llama
        self._evaluate_body(tokens)
        llama.eval(tokens[-1:])
        return np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(llama.n_vocab(),)).astype(np.float64)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Summed log-probabilities of each continuation after its rendered prompt (see `ScoreResponse`).

        Token by token: each continuation token's log-probability is read from the logits after the tokens
        before it; the prompt is evaluated once per request (its KV cache is reused by every continuation).
        """
        if not requests:
            return []
        import numpy as np

        with self._lock:
            self.load()
            out = []
            for r in requests:
                start = time.perf_counter()
                prompt = self.tokens(r)
                logprobs = []
                for text in r.continuations:
                    cont = list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))
                    if len(prompt) + len(cont) > self.n_ctx:
                        raise ValueError(f"prompt + continuation ({len(prompt) + len(cont)} tokens) exceed the "
                                         f"llama.cpp context of {self.n_ctx}; raise `n_ctx` in the LLM config")
                    total = 0.0
                    for k, token in enumerate(cont):
                        logits = self._logits_after(prompt + cont[:k])
                        top = logits.max()
                        total += float(logits[token] - top - np.log(np.exp(logits - top).sum()))
                    logprobs.append(total)
                out.append(ScoreResponse(logprobs=logprobs, prompt_tokens=len(prompt),
                                         seconds=time.perf_counter() - start))
            return out

    def close(self) -> None:
        """Free the llama.cpp context."""
        with self._lock:
            if self._decoder is not None:
                self._decoder.close()
                self._decoder = None
            if self._llama is not None:
                close = getattr(self._llama, "close", None)
                if callable(close):
                    close()
                self._llama = None
