"""One request/response type for every LLM backend, and the backend interface.

Backends (`t2s.llm.hf.HFLLM`, `t2s.llm.llamacpp.LlamaCppLLM`, `t2s.llm.openai.OpenAILLM`, `t2s.llm.vllm.VLLM`)
generate (`LLMRequest` -> `LLMResponse`) and score given continuations (`ScoreRequest` -> `ScoreResponse`); they are built
from `conf/llm/*.yaml` by `t2s.llm.pool.LLMPool`; stages never build models, they ask the pool for an
LLM by name (`env.llm("generator")`).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

#: why a completion ended: an eos token, a stop string or the closing code fence ("stop"); `max_new_tokens`
#: ("length"); the repetition detector of `t2s.llm.stops` ("loop")
FINISH_REASONS = ("stop", "length", "loop")


#: the kinds of `Constraint`
CONSTRAINT_KINDS = ("grammar", "json_schema")


@dataclass(frozen=True)
class Constraint:
    """A decoding constraint: the completion must be a string of a grammar or a JSON document of a schema.

    `kind` "grammar": `text` is a GBNF grammar (llama.cpp's format, root rule `root`; `t2s.sql.grammar` writes the
    SQL ones). `kind` "json_schema": `text` is a JSON schema as JSON text (`Constraint.json_schema` writes it
    canonically). `name` labels it in messages and traces ("sql:concert_singer", "column list"); it is not part of the
    response-cache key, which holds the kind and the sha256 of the text (`key`). Every backend enforces a constraint
    with its engine's own mechanism or refuses the request (`t2s.llm.structured.ConstraintNotSupported`); none ignores
    it.
    """

    kind: str
    text: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CONSTRAINT_KINDS:
            raise ValueError(f"Constraint kind {self.kind!r} is not one of {', '.join(CONSTRAINT_KINDS)}")
        if not self.text.strip():
            raise ValueError(f"Constraint {self.name or self.kind!r} has an empty {self.kind}")
        if self.kind == "json_schema":
            try:
                schema = json.loads(self.text)
            except ValueError as e:
                raise ValueError(f"Constraint {self.name or 'json_schema'!r}: the schema is not JSON ({e})") from None
            if not isinstance(schema, dict):
                raise ValueError(f"Constraint {self.name or 'json_schema'!r}: a JSON schema is an object, got "
                                 f"{type(schema).__name__}")

    @classmethod
    def grammar(cls, text: str, name: str = "") -> Constraint:
        """A GBNF grammar constraint."""
        return cls("grammar", text, name)

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str, name: str = "") -> Constraint:
        """A JSON-schema constraint (a dict is written as canonical JSON, so equal schemas share cache entries)."""
        text = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True, ensure_ascii=False)
        return cls("json_schema", text, name)

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema of a json_schema constraint."""
        if self.kind != "json_schema":
            raise ValueError(f"Constraint {self.name or self.kind!r} is a {self.kind}, not a JSON schema")
        return dict(json.loads(self.text))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def key(self) -> dict[str, str]:
        """What the response-cache key holds of the constraint: its kind and the sha256 of its text."""
        return {"kind": self.kind, "sha256": self.sha256}

    def __repr__(self) -> str:  # the text can be tens of kilobytes
        return f"Constraint(kind={self.kind!r}, name={self.name!r}, sha256={self.sha256[:12]!r})"


@dataclass(frozen=True)
class GenParams:
    """Generation parameters. `temperature == 0` means greedy decoding; `n` completions per prompt.

    `stop`: strings that end a completion (the text is cut before the first one). `stop_after_fence`: end a
    completion right after the code block it opens is closed (```` ```sql ... ``` ````, text kept up to and
    including the closing fence), for prompts that ask for the answer in a code block. Every backend also ends a
    completion whose tokens have started to repeat in a loop (`t2s.llm.stops.find_loop`), with finish reason
    "loop". `constraint`: a grammar or JSON schema every completion must follow (`Constraint`; None: free text).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0
    stop_after_fence: bool = False
    constraint: Constraint | None = None

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain data (the response cache hashes it). `constraint` is left out when unset, so an
        unconstrained request keeps the key it had before constraints existed, and appears as `Constraint.key()`
        (kind and sha256 of the text) when set."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "constraint"}
        if self.constraint is not None:
            out["constraint"] = self.constraint.key()
        return out


@dataclass(frozen=True)
class PromptSource:
    """Which template a request was rendered from, and with which fields.

    `template` is the template's id ("chase_fix_v2"), `reply` the dotted path of the `ReplyFormat` its YAML names
    (`reply:`; "" when it names none), `fields` the values `PromptTemplate.render` filled in (block fields included,
    already rendered). Backends never read it: it is what the scripted LLM's rules match by, and what it renders a
    structured answer through (`t2s.llm.scripted`). It is no part of a request's identity: not in the response-cache
    key (`t2s.llm.cache.request_payload` hashes the rendered text), not in `==` or `hash`.
    """

    template: str
    reply: str = ""
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """The template's name without its version ("chase_fix" for "chase_fix_v2")."""
        head, sep, version = self.template.rpartition("_v")
        return head if sep and version.isdigit() else self.template

    def field_map(self) -> dict[str, str]:
        return dict(self.fields)


def _source_of(messages: Any, source: PromptSource | None) -> PromptSource | None:
    """`source`, else the one that messages rendered by `PromptTemplate.render` carry (`t2s.prompts.Messages`)."""
    return source if source is not None else getattr(messages, "source", None)


@dataclass(frozen=True)
class LLMRequest:
    """One prompt: either chat `messages` ([{"role": ..., "content": ...}]) or a raw `prompt` string.

    Chat messages are rendered with the backend's chat template; a raw prompt is sent as is. `source`: the template
    and fields the messages were rendered from (`PromptSource`; set by `chat` from rendered messages), outside the
    request's identity and cache key.
    """

    messages: tuple[tuple[str, str], ...] = ()
    prompt: str | None = None
    params: GenParams = field(default_factory=GenParams)
    source: PromptSource | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def chat(messages: list[dict[str, str]], params: GenParams | None = None, *,
             source: PromptSource | None = None) -> LLMRequest:
        return LLMRequest(
            messages=tuple((m["role"], m["content"]) for m in messages),
            params=params or GenParams(),
            source=_source_of(messages, source),
        )

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class LLMResponse:
    """Completions for one request, with token counts.

    `prompt_tokens` counts the rendered prompt once; `completion_tokens` sums over the `n` completions.
    `seconds` is the model time the request took when it was first computed (a cached response keeps it,
    with `cached=True`), so cost figures do not depend on cache state. `finish_reasons` has one entry per text,
    each one of `FINISH_REASONS` ("stop", "length", "loop"); cached responses keep them.
    """

    texts: list[str]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached: bool = False
    #: the `model_id` of the LLM that answered (set by the pool's caching wrapper); keys the price table
    model: str = ""
    finish_reasons: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


@dataclass(frozen=True)
class ScoreRequest:
    """Continuations to score after one prompt: chat `messages` or a raw `prompt`, like `LLMRequest`.

    Chat messages are rendered with the backend's chat template including the assistant turn start
    (`add_generation_prompt`), so a continuation is scored as the first words of the assistant's answer.
    Each continuation is tokenized on its own (no special tokens) and appended to the prompt's tokens. `source`: as
    for `LLMRequest`, outside the request's identity and cache key.
    """

    messages: tuple[tuple[str, str], ...] = ()
    prompt: str | None = None
    continuations: tuple[str, ...] = ()
    source: PromptSource | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def chat(messages: list[dict[str, str]], continuations: list[str] | tuple[str, ...], *,
             source: PromptSource | None = None) -> ScoreRequest:
        return ScoreRequest(messages=tuple((m["role"], m["content"]) for m in messages),
                            continuations=tuple(continuations), source=_source_of(messages, source))

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class ScoreResponse:
    """Log-probabilities of a `ScoreRequest`'s continuations, in its order.

    `logprobs[i]` is the summed natural-log probability of continuation i's tokens right after the rendered
    prompt (0.0 for an empty continuation). `prompt_tokens` counts the rendered prompt once; `seconds` is the
    model time when first computed (kept by the cache, with `cached=True`); `model` is set by the pool's wrapper.
    """

    logprobs: list[float]
    prompt_tokens: int
    seconds: float
    cached: bool = False
    model: str = ""


class LLM(abc.ABC):
    """A text generation backend. `generate` takes a whole batch so backends can batch it."""

    #: backend name used in cache keys ("hf", "openai", "llamacpp", "vllm")
    backend: str = ""
    #: whether `score` works for this backend (and configuration)
    supports_scoring: bool = False
    #: whether the backend loads PEFT adapters (an `adapter` key in its config)
    supports_adapters: bool = False
    #: the `Constraint` kinds the backend enforces ("grammar", "json_schema"); a request with another kind is refused
    #: (`t2s.llm.structured.check_supported`), never run unconstrained
    constraint_kinds: tuple[str, ...] = ()
    #: what to set so that the backend enforces the kinds it does not (said when a request is refused)
    constraint_hint: str = ""

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """Stable identifier of the weights (path, hub id, or content hash) used in cache keys."""

    @abc.abstractmethod
    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """Generate completions for every request, in order."""

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Log-probabilities of each request's continuations, in order (see `ScoreResponse`)."""
        raise NotImplementedError(
            f"the {self.backend or type(self).__name__} backend cannot score continuations; use llm=hf, llamacpp, "
            f"vllm, or openai against a server that returns prompt logprobs"
        )

    def close(self) -> None:
        """Release resources (GPU memory, connections). Default: nothing."""
