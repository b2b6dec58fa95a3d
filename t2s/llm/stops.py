"""When a completion ends, shared by every backend: stop strings, the closing code fence, the loop detector.

A runaway completion costs a whole batch its time (issue 9: one looping answer held a batch of 8 for
5.5 minutes), so every backend ends a completion whose tail has become periodic: the same block of at most
`LOOP_MAX_PERIOD` tokens repeated over the last `max(LOOP_MIN_SPAN, LOOP_MIN_REPEATS * period)` tokens. Such
a completion gets the finish reason "loop" (counted in `metrics.json` by the run). A legitimate SQL answer does
not repeat the same 48 tokens exactly; a model stuck in `IN (SELECT a FROM t WHERE a IN (SELECT ...` does.
Whitespace is ignored when looking for the period: such a loop usually indents each level deeper, so the
indentation tokens differ between repeats while everything else repeats exactly (demo question 17 ran to the
token limit on llama.cpp before whitespace-only tokens were skipped).

The local backends (hf, llamacpp) check after every token on token ids; the servers (openai, vllm) return whole
texts, which are checked once, on characters (`find_loop(text, ...)` with the `*_CHARS` limits).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from t2s.llm.base import GenParams

#: a loop must span at least this many tokens ...
LOOP_MIN_SPAN = 48
#: ... with a repeated block of at most this many tokens ...
LOOP_MAX_PERIOD = 64
#: ... repeated at least this many times
LOOP_MIN_REPEATS = 3
#: the same limits on characters, for backends that only see text (about 4 characters per token)
LOOP_MIN_SPAN_CHARS = 4 * LOOP_MIN_SPAN
LOOP_MAX_PERIOD_CHARS = 4 * LOOP_MAX_PERIOD


def find_loop(seq: Sequence[int] | str, *, min_span: int = LOOP_MIN_SPAN, max_period: int = LOOP_MAX_PERIOD,
              min_repeats: int = LOOP_MIN_REPEATS) -> int | None:
    """The smallest period p <= `max_period` with which the tail of `seq` repeats, or None.

    The tail checked is the last `max(min_span, min_repeats * p)` items; it repeats with period p when it equals
    itself shifted by p. Works on token ids and on strings.
    """
    n = len(seq)
    if n < min_span:
        return None
    last = seq[-1]
    for p in range(1, max_period + 1):
        span = max(min_span, min_repeats * p)
        if span > n:
            break
        if seq[-1 - p] != last:
            continue
        if seq[n - span:n - p] == seq[n - span + p:n]:
            return p
    return None


def fence_end(text: str) -> int | None:
    """The index just after the fence that closes the first code block of `text`, or None while it is open.

    The block opens at the first "```" (its language tag runs to the end of that line) and closes at the next
    "```".
    """
    start = text.find("```")
    if start < 0:
        return None
    line_end = text.find("\n", start + 3)
    if line_end < 0:
        return None
    close = text.find("```", line_end + 1)
    return None if close < 0 else close + 3


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` cut before the earliest occurrence of any stop string, and whether one occurred."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def finish_text(text: str, params: GenParams) -> tuple[str, str | None]:
    """Apply stop strings and `stop_after_fence` to a finished text: (cut text, "stop" if either applied, else None)."""
    text, stopped = cut_at_stop(text, params.stop)
    if params.stop_after_fence:
        end = fence_end(text)
        if end is not None:
            return text[:end], "stop"
    return text, "stop" if stopped else None


def text_finish_reason(text: str, server_reason: str | None, params: GenParams) -> tuple[str, str]:
    """(text, finish reason) for a completion a server returned whole (openai, vllm).

    Stop strings and the closing fence are applied; a completion the server cut at `max_tokens` whose text
    ends in a loop is reported as "loop", otherwise as "length"; anything else is "stop".
    """
    cut, reason = finish_text(text, params)
    if reason is not None:
        return cut, reason
    if server_reason == "length":
        content = re.sub(r"\s+", "", text)
        if find_loop(content, min_span=LOOP_MIN_SPAN_CHARS, max_period=LOOP_MAX_PERIOD_CHARS) is not None:
            return text, "loop"
        return text, "length"
    return text, "stop"


class CompletionMonitor:
    """Checks one growing completion after each token: closing fence (if asked) and loops.

    `decode(token_ids) -> str` decodes the completion's tokens (only called when `params.stop_after_fence`).
    `check(tokens)` returns "stop", "loop" or None; it does not handle eos or stop strings, which the backends
    handle natively (transformers `stop_strings`, llama.cpp `stop`).
    """

    def __init__(self, params: GenParams, decode: Callable[[list[int]], str]) -> None:
        self.params = params
        self.decode = decode
        self._blank: dict[int, bool] = {}

    def is_blank(self, token: int) -> bool:
        """Whether `token` decodes to whitespace only (an incomplete UTF-8 piece, decoding to "", is not blank)."""
        blank = self._blank.get(token)
        if blank is None:
            piece = self.decode([token])
            blank = self._blank[token] = bool(piece) and piece.isspace()
        return blank

    def check(self, tokens: list[int]) -> str | None:
        if (self.params.stop_after_fence and tokens and "`" in self.decode(tokens[-1:])
                and fence_end(self.decode(tokens)) is not None):
            return "stop"
        if tokens and not self.is_blank(tokens[-1]) and find_loop([t for t in tokens if not self.is_blank(t)]):
            return "loop"
        return None
