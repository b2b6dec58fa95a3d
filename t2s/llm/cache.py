"""The persistent LLM response cache, and the `CachedLLM` wrapper the pool puts around every backend.

Keys are sha256 of (backend, model_id, generation parameters, messages or prompt); see `request_key`. Scores
(`LLM.score`) are cached the same way in a second table, keyed by (backend, model_id, prompt, continuations);
see `score_key`.
Sampled requests (`temperature > 0`) are cached too, keyed with `params.seed`: the same seed gives the same
stored completions, so a re-run or a resumed sweep is deterministic and free, and asking for different
samples means passing a different seed. For greedy requests the seed and `top_p` do not change the output
and are left out of the key.

The store is one SQLite file in WAL mode with a busy timeout, opened per process and per thread, so several
processes (joblib sweep jobs) can read and write it at once. The first writer of a key wins
(`INSERT OR IGNORE`): concurrent jobs that computed the same request keep one answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from t2s.llm.base import LLM, LLMRequest, LLMResponse, ScoreRequest, ScoreResponse

#: bump when the key layout or what a stored answer means changes (old entries are then simply never hit).
#: 2: responses carry finish reasons, and completions that loop are cut by the loop detector.
KEY_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model_id TEXT NOT NULL,
    request TEXT NOT NULL,
    texts TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL,
    finish_reasons TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS scores (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model_id TEXT NOT NULL,
    request TEXT NOT NULL,
    logprobs TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL
);
"""


def request_payload(backend: str, model_id: str, request: LLMRequest) -> dict[str, Any]:
    """The canonical content a cache key hashes (also stored with the entry, for inspection).

    Greedy requests (`temperature == 0`) drop `seed` and `top_p`, which cannot change their output.
    """
    params = request.params.to_dict()
    params["stop"] = list(request.params.stop)
    if request.params.temperature <= 0:
        params["temperature"] = 0.0
        params.pop("seed")
        params.pop("top_p")
    return {
        "v": KEY_VERSION,
        "backend": backend,
        "model_id": model_id,
        "params": params,
        "messages": [list(m) for m in request.messages],
        "prompt": request.prompt,
    }


def request_key(backend: str, model_id: str, request: LLMRequest) -> str:
    """sha256 hex digest of `request_payload(...)` as canonical JSON."""
    payload = json.dumps(request_payload(backend, model_id, request), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def score_payload(backend: str, model_id: str, request: ScoreRequest) -> dict[str, Any]:
    """The canonical content a score cache key hashes (also stored with the entry)."""
    return {
        "v": KEY_VERSION,
        "kind": "score",
        "backend": backend,
        "model_id": model_id,
        "messages": [list(m) for m in request.messages],
        "prompt": request.prompt,
        "continuations": list(request.continuations),
    }


def score_key(backend: str, model_id: str, request: ScoreRequest) -> str:
    """sha256 hex digest of `score_payload(...)` as canonical JSON."""
    payload = json.dumps(score_payload(backend, model_id, request), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    """A persistent key -> `LLMResponse` store in one SQLite file (WAL mode, safe across processes).

    Stores the texts, the token counts and the seconds the response took when it was computed; `get_many`
    returns them with `cached=True`. Connections are opened lazily per (process, thread), so an instance
    can be shared by threads and survives a fork.
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(responses)")}
        if "finish_reasons" not in columns:  # a cache file written before finish reasons existed
            try:
                conn.execute("ALTER TABLE responses ADD COLUMN finish_reasons TEXT NOT NULL DEFAULT '[]'")
            except sqlite3.OperationalError:  # another process added it first
                pass
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, LLMResponse]:
        """The stored responses among `keys` (missing keys are absent from the result), `cached=True`."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, LLMResponse] = {}
        conn = self._connect()
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            rows = conn.execute(
                "SELECT key, texts, prompt_tokens, completion_tokens, seconds, finish_reasons FROM responses "
                f"WHERE key IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
            for key, texts, pt, ct, sec, reasons in rows:
                found[key] = LLMResponse(texts=json.loads(texts), prompt_tokens=pt, completion_tokens=ct,
                                         seconds=sec, cached=True, finish_reasons=json.loads(reasons))
        return found

    def get(self, key: str) -> LLMResponse | None:
        """The stored response for `key`, or None."""
        return self.get_many([key]).get(key)

    def put_many(self, entries: Iterable[tuple[str, str, str, dict[str, Any], LLMResponse]]) -> None:
        """Store (key, backend, model_id, request payload, response) entries in one transaction.

        An existing key is kept as it is (first writer wins).
        """
        now = time.time()
        rows = [
            (key, backend, model_id, json.dumps(payload, ensure_ascii=False), json.dumps(resp.texts,
             ensure_ascii=False), resp.prompt_tokens, resp.completion_tokens, resp.seconds, now,
             json.dumps(resp.finish_reasons))
            for key, backend, model_id, payload, resp in entries
        ]
        self._insert("INSERT OR IGNORE INTO responses (key, backend, model_id, request, texts, prompt_tokens, "
                     "completion_tokens, seconds, created, finish_reasons) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _insert(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def get_scores(self, keys: Iterable[str]) -> dict[str, ScoreResponse]:
        """The stored scores among `keys` (missing keys are absent), `cached=True`."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, ScoreResponse] = {}
        conn = self._connect()
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            rows = conn.execute(
                f"SELECT key, logprobs, prompt_tokens, seconds FROM scores WHERE key IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
            for key, logprobs, pt, sec in rows:
                found[key] = ScoreResponse(logprobs=json.loads(logprobs), prompt_tokens=pt, seconds=sec, cached=True)
        return found

    def put_scores(self, entries: Iterable[tuple[str, str, str, dict[str, Any], ScoreResponse]]) -> None:
        """Store (key, backend, model_id, request payload, score response) entries; first writer wins."""
        now = time.time()
        rows = [
            (key, backend, model_id, json.dumps(payload, ensure_ascii=False), json.dumps(resp.logprobs),
             resp.prompt_tokens, resp.seconds, now)
            for key, backend, model_id, payload, resp in entries
        ]
        self._insert("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT count(*) FROM responses").fetchone()[0])

    def clear(self, *, model_id: str | None = None) -> int:
        """Delete every entry (or those of one `model_id`); returns how many were deleted."""
        conn = self._connect()
        total = 0
        for table in ("responses", "scores"):
            if model_id is None:
                cur = conn.execute(f"DELETE FROM {table}")
            else:
                cur = conn.execute(f"DELETE FROM {table} WHERE model_id = ?", (model_id,))
            total += int(cur.rowcount)
        return total

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None


@dataclasses.dataclass
class LLMStats:
    """Counters of one named LLM: requests, how many the cache answered, tokens and model seconds.

    Tokens and seconds include cached responses (with their original figures), like `Task.charge_llm`;
    `backend_calls` counts batches sent to the backend.
    """

    calls: int = 0
    cached_calls: int = 0
    backend_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0
    #: `score` requests (their prompt tokens and seconds are in the totals above), and how many the cache answered
    score_calls: int = 0
    cached_score_calls: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


class CachedLLM(LLM):
    """An LLM wrapper that answers requests from a `ResponseCache` and sends only misses to the backend.

    One `generate` call looks up every request, sends the misses to the wrapped backend in one batch, and
    stores their responses. Identical requests within one batch are computed once; the repeats come back
    with `cached=True`. With `cache=None` it only counts (`stats`).
    """

    def __init__(self, inner: LLM, cache: ResponseCache | None) -> None:
        self.inner = inner
        self.cache = cache
        self.backend = inner.backend
        self.supports_scoring = inner.supports_scoring
        self.stats = LLMStats()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CachedLLM({self.inner!r}, cache={self.cache!r})"

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """Responses in order: cache hits (`cached=True`), then the backend's answers for the misses."""
        if not requests:
            return []
        if self.cache is None:
            responses = self.inner.generate(requests)
            for r in responses:
                r.model = self.inner.model_id
            self._count(responses, backend_calls=1)
            return responses
        out, missed = self._through_cache(
            requests, request_key, self.cache.get_many, self.inner.generate, self.cache.put_many, request_payload,
            lambda r: dataclasses.replace(r, texts=list(r.texts), finish_reasons=list(r.finish_reasons), cached=True),
            "responses")
        self._count(out, backend_calls=1 if missed else 0)
        return out

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Scores in order: cache hits (`cached=True`), then the backend's scores for the misses (stored)."""
        if not requests:
            return []
        cache = self.cache
        out, missed = self._through_cache(
            requests, score_key, cache.get_scores if cache is not None else lambda keys: {}, self.inner.score,
            cache.put_scores if cache is not None else None, score_payload,
            lambda r: dataclasses.replace(r, logprobs=list(r.logprobs), cached=True), "scores")
        with self._lock:
            s = self.stats
            s.score_calls += len(out)
            s.cached_score_calls += sum(r.cached for r in out)
            s.backend_calls += 1 if missed else 0
            s.prompt_tokens += sum(r.prompt_tokens for r in out)
            s.model_seconds += sum(r.seconds for r in out)
        return out

    def _through_cache(self, requests: list[Any], key: Callable[[str, str, Any], str],
                       lookup: Callable[[list[str]], dict[str, Any]], compute: Callable[[list[Any]], list[Any]],
                       store: Callable[[Iterable[tuple[str, str, str, dict[str, Any], Any]]], None] | None,
                       payload: Callable[[str, str, Any], dict[str, Any]], copy: Callable[[Any], Any],
                       what: str) -> tuple[list[Any], bool]:
        """Answers for `requests` in order: stored ones looked up by key, the rest computed once per distinct key
        and stored; a key's first computed answer is returned as is, later uses (and hits) as `copy`s marked
        cached. Returns (answers, whether the backend was called)."""
        model_id = self.inner.model_id
        keys = [key(self.backend, model_id, r) for r in requests]
        hits = lookup(keys)
        misses: dict[str, Any] = {}
        for k, r in zip(keys, requests):
            if k not in hits and k not in misses:
                misses[k] = r
        computed: dict[str, Any] = {}
        if misses:
            answers = compute(list(misses.values()))
            if len(answers) != len(misses):
                raise RuntimeError(f"{self.inner!r} returned {len(answers)} {what} for {len(misses)} requests")
            computed = dict(zip(misses, answers))
            if store is not None:
                store((k, self.backend, model_id, payload(self.backend, model_id, misses[k]), computed[k])
                      for k in misses)
        out: list[Any] = []
        first_use: set[str] = set()
        for k in keys:
            if k in computed and k not in first_use:
                first_use.add(k)
                out.append(computed[k])
            else:
                out.append(copy(hits.get(k) or computed[k]))
        for r in out:
            r.model = model_id
        return out, bool(misses)

    def _count(self, responses: list[LLMResponse], *, backend_calls: int) -> None:
        with self._lock:
            s = self.stats
            s.calls += len(responses)
            s.cached_calls += sum(r.cached for r in responses)
            s.backend_calls += backend_calls
            s.prompt_tokens += sum(r.prompt_tokens for r in responses)
            s.completion_tokens += sum(r.completion_tokens for r in responses)
            s.model_seconds += sum(r.seconds for r in responses)

    def close(self) -> None:
        """Close the wrapped backend."""
        self.inner.close()
