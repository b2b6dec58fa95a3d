"""Decoding constraints shared by the backends: refusing what a backend cannot enforce, GBNF for llguidance, and
checking a finished text against a constraint.

- `check_supported(llm, requests)`: every request's `params.constraint` is of a kind the backend enforces
  (`LLM.constraint_kinds`), else `ConstraintNotSupported`, naming the backend, the constraint and what to use instead.
  `t2s.env.Env.generate` calls it for every stage call, so a backend that has no mechanism refuses instead of
  ignoring the constraint.
- `gbnf_to_lark(text)`: a GBNF grammar (llama.cpp's format) as llguidance's Lark, with llguidance's own converter
  (`llguidance.gbnf_to_lark`), keeping the grammar's split into lexemes and rules: a rule named in UPPERCASE is a
  lexeme (llguidance's lexer matches it as one token of text), a lowercase rule is a grammar rule. The converter alone
  would make every rule whose expansion holds only terminals a lexeme, and since the lexer is greedy and never gives
  characters back, a whole SQL query as one lexeme would swallow the newline of the closing fence (`t2s.sql.grammar`
  names its rules by this convention).
- `llguidance_grammar(constraint)`: the grammar llguidance compiles for a constraint (Lark for GBNF; its JSON-schema
  compiler for a schema). The `hf` backend's logits processor and `TextMatcher` use it.
- `TextMatcher`: whether a text satisfies a constraint, matched byte by byte by llguidance (the scripted LLM checks
  its replies with it; tests check answers with it).

llguidance (Microsoft's Low-level Guidance, a Rust library behind one 3 MB wheel with no Python dependencies) is the
grammar engine of the `hf` backend; see docs/decoding.md for why it and not xgrammar.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from t2s.llm.base import LLM, Constraint, LLMRequest


class ConstraintNotSupported(NotImplementedError):
    """A request carries a constraint its backend cannot enforce (the request is refused, never run unconstrained)."""


class ConstraintViolation(ValueError):
    """A text that must satisfy a constraint does not (a scripted reply outside its stage's reply format)."""


def backend_of(llm: LLM) -> LLM:
    """The backend under the pool's caching wrapper (`CachedLLM.inner`), or `llm` itself."""
    seen = 0
    while hasattr(llm, "inner") and seen < 8:
        llm = llm.inner
        seen += 1
    return llm


def check_supported(llm: LLM, requests: Sequence[LLMRequest], name: str = "") -> None:
    """Refuse (`ConstraintNotSupported`) the first request whose constraint kind the backend does not enforce."""
    backend = backend_of(llm)
    kinds = tuple(getattr(backend, "constraint_kinds", ()))
    for request in requests:
        c = request.params.constraint
        if c is not None and c.kind not in kinds:
            label = f"`llms.{name}` " if name else ""
            can = f"it enforces only {', '.join(kinds)}" if kinds else "it has no constrained decoding"
            hint = getattr(backend, "constraint_hint", "")
            can += f" ({hint})" if hint else ""
            raise ConstraintNotSupported(
                f"the LLM {label}({backend.backend or type(backend).__name__} backend, {type(backend).__name__}) "
                f"cannot enforce a {c.kind} constraint ({c.name or 'unnamed'}): {can}. Use a backend that does "
                f"(llm=embedded or llamacpp: llama.cpp grammars; llm=embedded_hf, hf or tiny: llguidance; llm=vllm: "
                f"vLLM's structured outputs; llm=openai against a server that takes it), or decode without "
                f"constraints (decoding=free, or the stage's `decoding=free`)")


def require_llguidance(what: str) -> Any:
    """Import llguidance, or fail saying how to install it."""
    try:
        import llguidance
    except ImportError as e:
        raise ConstraintNotSupported(
            f"{what} needs the grammar engine llguidance, which is not installed: pip install 'llguidance>=1.7' "
            f"(a dependency of t2s: pip install -e .)") from e
    return llguidance


_RULE = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*::=", re.M)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=64)
def gbnf_to_lark(text: str) -> str:
    """`text` (GBNF) as llguidance Lark, rules named in lowercase kept as grammar rules (see the module docstring).

    Raises ValueError, naming the problem, when llguidance's converter cannot read the GBNF.
    """
    require_llguidance("converting a GBNF grammar")
    from llguidance.gbnf_to_lark import gbnf_to_lark as convert

    try:
        lark = convert(text)
    except Exception as e:  # noqa: BLE001 - the converter raises plain Exceptions
        raise ValueError(f"llguidance could not read the GBNF grammar: {e}") from None
    lower = {n.replace("-", "_").upper() for n in _RULE.findall(text) if n != n.upper() and n != "root"}
    if not lower:
        return lark
    out: list[str] = []
    i, n = 0, len(lark)
    while i < n:
        c = lark[i]
        if c in "\"/":  # a string or regex: copied as is
            j = i + 1
            while j < n and lark[j] != c:
                j += 2 if lark[j] == "\\" else 1
            out.append(lark[i:j + 1])
            i = j + 1
            continue
        if c == "/" and lark.startswith("//", i):  # a comment line
            j = lark.find("\n", i)
            j = n if j < 0 else j
            out.append(lark[i:j])
            i = j
            continue
        m = _WORD.match(lark, i)
        if m:
            word = m.group(0)
            out.append(word.lower() if word in lower else word)
            i = m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


def llguidance_grammar(constraint: Constraint) -> str:
    """The llguidance grammar definition of a constraint (raises ValueError for a grammar llguidance cannot read)."""
    llg = require_llguidance(f"the constraint {constraint.name or constraint.kind!r}")
    if constraint.kind == "json_schema":
        return str(llg.LLMatcher.grammar_from_json_schema(constraint.text))
    return str(llg.LLMatcher.grammar_from_lark(gbnf_to_lark(constraint.text)))


def matcher_error(tokenizer: Any, grammar: str) -> str:
    """llguidance's complaint about a grammar for this tokenizer ("" when it compiles)."""
    llg = require_llguidance("checking a grammar")
    m = llg.LLMatcher(tokenizer, grammar, log_level=0)
    return str(m.get_error()) if m.is_error() else ""


class _ByteTokenizer:
    """A vocabulary of the 256 bytes plus an end token, for matching text byte by byte (llguidance's
    `TokenizerWrapper` protocol)."""

    def __init__(self) -> None:
        self.tokens = [bytes([b]) for b in range(256)] + [b"\xff[END]"]
        self.eos_token_id = 256
        self.bos_token_id = None
        self.special_token_ids = [256]

    def __call__(self, data: bytes | str) -> list[int]:
        return list(data.encode("utf-8") if isinstance(data, str) else data)


class TextMatcher:
    """Checks whole texts against constraints with llguidance, byte by byte (one compiled grammar per constraint)."""

    def __init__(self) -> None:
        llg = require_llguidance("checking a text against a constraint")
        self._llg = llg
        self._tok = llg.LLTokenizer(llg.TokenizerWrapper(_ByteTokenizer()), slices=[])
        self._grammars: dict[str, str] = {}
        self._lock = threading.Lock()

    def problem(self, constraint: Constraint, text: str) -> str | None:
        """None when `text` is a complete string of the constraint; otherwise where and why it is not."""
        with self._lock:
            grammar = self._grammars.get(constraint.sha256)
            if grammar is None:
                grammar = self._grammars[constraint.sha256] = llguidance_grammar(constraint)
        m = self._llg.LLMatcher(self._tok, grammar, log_level=0)
        if m.is_error():
            return f"the constraint does not compile: {m.get_error()}"
        data = text.encode("utf-8")
        taken = m.try_consume_tokens(list(data))
        if taken < len(data):
            before = data[:taken].decode("utf-8", errors="replace")[-60:]
            return f"the text leaves the constraint after {before!r} (byte {taken} of {len(data)})"
        if not m.is_accepting():
            return f"the text ends before the constraint is complete (after {text[-60:]!r})"
        return None

    def matches(self, constraint: Constraint, text: str) -> bool:
        return self.problem(constraint, text) is None


_shared: TextMatcher | None = None
_shared_lock = threading.Lock()


def text_matcher() -> TextMatcher:
    """The process's shared `TextMatcher`."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TextMatcher()
        return _shared
