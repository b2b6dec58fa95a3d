"""One request/response type for every LLM backend, and the backend interface.

Backends (`t2s.llm.hf.HFLLM`, `t2s.llm.openai.OpenAILLM`, `t2s.llm.llamacpp.LlamaCppLLM`) are built
from `conf/llm/*.yaml` by `t2s.llm.pool.LLMPool`; stages never build models, they ask the pool for an
LLM by name (`env.llm("generator")`).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GenParams:
    """Generation parameters. `temperature == 0` means greedy decoding; `n` completions per prompt."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LLMRequest:
    """One prompt: either chat `messages` ([{"role": ..., "content": ...}]) or a raw `prompt` string.

    Chat messages are rendered with the backend's chat template; a raw prompt is sent as is.
    """

    messages: tuple[tuple[str, str], ...] = ()
    prompt: str | None = None
    params: GenParams = field(default_factory=GenParams)

    @staticmethod
    def chat(messages: list[dict[str, str]], params: GenParams | None = None) -> LLMRequest:
        return LLMRequest(
            messages=tuple((m["role"], m["content"]) for m in messages),
            params=params or GenParams(),
        )

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class LLMResponse:
    """Completions for one request, with token counts.

    `prompt_tokens` counts the rendered prompt once; `completion_tokens` sums over the `n` completions.
    `seconds` is the model time the request took when it was first computed (a cached response keeps it,
    with `cached=True`), so cost figures do not depend on cache state.
    """

    texts: list[str]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached: bool = False
    #: the `model_id` of the LLM that answered (set by the pool's caching wrapper); keys the price table
    model: str = ""

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


class LLM(abc.ABC):
    """A text generation backend. `generate` takes a whole batch so backends can batch it."""

    #: backend name used in cache keys ("hf", "openai", "llamacpp", "vllm")
    backend: str = ""

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """Stable identifier of the weights (path, hub id, or content hash) used in cache keys."""

    @abc.abstractmethod
    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """Generate completions for every request, in order."""

    def close(self) -> None:
        """Release resources (GPU memory, connections). Default: nothing."""
