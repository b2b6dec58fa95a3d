"""The persistent LLM response cache, and the `CachedLLM` wrapper the pool puts around every backend.

Keys are sha256 of (backend, model_id, generation parameters, messages or prompt); see `request_key`. Scores
(`LLM.score`) are cached the same way in a second table, keyed by (backend, model_id, prompt, continuations);
see `score_key`.
Sampled requests (`temperature > 0`) are cached too, keyed with `params.seed`: the same seed gives the same
stored completions, so a re-run or a resumed sweep is deterministic and free, and asking for different
samples means passing a different seed. For greedy requests the seed and `top_p` do not change the output
and are left out of the key.

The store is one SQLite file in WAL mode with a busy timeout, opened per process and per thread, so several
processes (joblib sweep jobs) can read and write it at once. On a filesystem several machines share
(`paths.shared_fs=true`) it uses a rollback journal instead (`t2s.integrity.set_journal_mode`). The first writer of a key wins
(`INSERT OR IGNORE`): concurrent jobs that computed the same request keep one answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from t2s.integrity import (
    DamagedFileError,
    NetworkJournalError,
    damage_after,
    move_aside,
    quick_check_once,
    set_journal_mode,
)
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
    finish_reasons TEXT NOT NULL DEFAULT '[]',
    checksum TEXT
);
CREATE TABLE IF NOT EXISTS scores (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model_id TEXT NOT NULL,
    request TEXT NOT NULL,
    logprobs TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL,
    checksum TEXT
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
    """A persistent key -> `LLMResponse` store in one SQLite file (WAL mode, or DELETE on a shared filesystem; safe
    across processes).

    Stores the texts, the token counts and the seconds the response took when it was computed; `get_many`
    returns them with `cached=True`. Connections are opened lazily per (process, thread), so an instance
    can be shared by threads and survives a fork.

    A damaged file is refused, never used and never rewritten (`t2s.integrity.DamagedFileError`, naming the file and
    the repair command, `python -m t2s.llm.cache recover <file>`): the first connection of a process runs
    `PRAGMA quick_check`, any database error is followed by a full `integrity_check`, and every entry carries the
    sha256 of its answer (`checksum`), checked when it is read, so bytes changed inside an answer are caught too.
    A structural fault refuses the whole file for the rest of the process; an entry that fails its checksum refuses
    only the requests that read it.
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()
        self._damaged: DamagedFileError | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def damaged(self, problem: str) -> DamagedFileError:
        """The error that refuses this file, with the commands that repair it."""
        return DamagedFileError(self.path, problem, repair_hint(self.path))

    def _refuse(self, problem: str) -> DamagedFileError:
        """Refuse the whole file from now on in this process (a structural fault SQLite's checks found)."""
        self._damaged = self.damaged(problem)
        return self._damaged

    def _connect(self) -> sqlite3.Connection:
        if self._damaged is not None:
            raise self._damaged
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            problem = quick_check_once(conn, self.path)
            if problem is None:
                if set_journal_mode(conn, self.path) == "wal":
                    conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(_SCHEMA)
                _add_missing_columns(conn)
        except NetworkJournalError:
            conn.close()
            raise
        except sqlite3.DatabaseError as e:
            conn.close()
            problem = damage_after(e, self.path)
            if problem is None:
                raise
            raise self._refuse(problem) from e
        if problem is not None:
            conn.close()
            raise self._refuse(problem)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Rows of one read; a database error is followed by an integrity check (a damaged file is refused)."""
        conn = self._connect()
        try:
            return conn.execute(sql, list(params)).fetchall()
        except sqlite3.DatabaseError as e:
            problem = damage_after(e, self.path)
            if problem is None:
                raise
            raise self._refuse(problem) from e

    def get_many(self, keys: Iterable[str]) -> dict[str, LLMResponse]:
        """The stored responses among `keys` (missing keys are absent from the result), `cached=True`."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, LLMResponse] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            rows = self._query(
                "SELECT key, texts, prompt_tokens, completion_tokens, seconds, finish_reasons, checksum FROM responses "
                f"WHERE key IN ({','.join('?' * len(part))})",
                part,
            )
            for key, texts, pt, ct, sec, reasons, checksum in rows:
                self._verify(key, checksum, response_checksum(key, texts, pt, ct, sec, reasons))
                try:
                    found[key] = LLMResponse(texts=json.loads(texts), prompt_tokens=pt, completion_tokens=ct,
                                             seconds=sec, cached=True, finish_reasons=json.loads(reasons))
                except (TypeError, ValueError) as e:
                    raise self.damaged(f"the stored answer of entry {key[:16]}... does not decode: {e}") from e
        return found

    def _verify(self, key: str, stored: str | None, actual: str) -> None:
        """Refuse an entry whose answer no longer matches its checksum (entries written before checksums have none)."""
        if stored is not None and stored != actual:
            raise self.damaged(f"the stored answer of entry {str(key)[:16]}... does not match its checksum")

    def get(self, key: str) -> LLMResponse | None:
        """The stored response for `key`, or None."""
        return self.get_many([key]).get(key)

    def put_many(self, entries: Iterable[tuple[str, str, str, dict[str, Any], LLMResponse]]) -> None:
        """Store (key, backend, model_id, request payload, response) entries in one transaction.

        An existing key is kept as it is (first writer wins).
        """
        now = time.time()
        rows = []
        for key, backend, model_id, payload, resp in entries:
            texts, reasons = json.dumps(resp.texts, ensure_ascii=False), json.dumps(resp.finish_reasons)
            rows.append((key, backend, model_id, json.dumps(payload, ensure_ascii=False), texts, resp.prompt_tokens,
                         resp.completion_tokens, resp.seconds, now, reasons,
                         response_checksum(key, texts, resp.prompt_tokens, resp.completion_tokens, resp.seconds,
                                           reasons)))
        self._insert("INSERT OR IGNORE INTO responses (key, backend, model_id, request, texts, prompt_tokens, "
                     "completion_tokens, seconds, created, finish_reasons, checksum) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _insert(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:
            problem = damage_after(e, self.path)
            if problem is None:
                raise
            raise self._refuse(problem) from e

    def get_scores(self, keys: Iterable[str]) -> dict[str, ScoreResponse]:
        """The stored scores among `keys` (missing keys are absent), `cached=True`."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, ScoreResponse] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            rows = self._query(
                "SELECT key, logprobs, prompt_tokens, seconds, checksum FROM scores "
                f"WHERE key IN ({','.join('?' * len(part))})",
                part,
            )
            for key, logprobs, pt, sec, checksum in rows:
                self._verify(key, checksum, score_checksum(key, logprobs, pt, sec))
                try:
                    found[key] = ScoreResponse(logprobs=json.loads(logprobs), prompt_tokens=pt, seconds=sec, cached=True)
                except (TypeError, ValueError) as e:
                    raise self.damaged(f"the stored scores of entry {key[:16]}... do not decode: {e}") from e
        return found

    def put_scores(self, entries: Iterable[tuple[str, str, str, dict[str, Any], ScoreResponse]]) -> None:
        """Store (key, backend, model_id, request payload, score response) entries; first writer wins."""
        now = time.time()
        rows = []
        for key, backend, model_id, payload, resp in entries:
            logprobs = json.dumps(resp.logprobs)
            rows.append((key, backend, model_id, json.dumps(payload, ensure_ascii=False), logprobs, resp.prompt_tokens,
                         resp.seconds, now, score_checksum(key, logprobs, resp.prompt_tokens, resp.seconds)))
        self._insert("INSERT OR IGNORE INTO scores (key, backend, model_id, request, logprobs, prompt_tokens, seconds, "
                     "created, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._query("SELECT count(*) FROM responses")[0][0])

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


def response_checksum(key: str, texts: str, prompt_tokens: int, completion_tokens: int, seconds: float,
                      finish_reasons: str) -> str:
    """sha256 of a stored response entry: its key and every answer column as stored (texts and finish reasons as
    their JSON text)."""
    blob = "\0".join((str(key), str(texts), str(int(prompt_tokens)), str(int(completion_tokens)),
                       repr(float(seconds)), str(finish_reasons)))
    return hashlib.sha256(blob.encode()).hexdigest()


def score_checksum(key: str, logprobs: str, prompt_tokens: int, seconds: float) -> str:
    """sha256 of a stored score entry: its key and every answer column as stored."""
    blob = "\0".join((str(key), str(logprobs), str(int(prompt_tokens)), repr(float(seconds))))
    return hashlib.sha256(blob.encode()).hexdigest()


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Columns added since a cache file was written: finish reasons, checksums (entries without one are not checked)."""
    wanted = {"responses": (("finish_reasons", "TEXT NOT NULL DEFAULT '[]'"), ("checksum", "TEXT")),
              "scores": (("checksum", "TEXT"),)}
    for table, columns in wanted.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, decl in columns:
            if name not in have:
                try:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                except sqlite3.OperationalError:  # another process added it first
                    pass


def repair_hint(path: str | Path) -> str:
    """What to do with a damaged response cache at `path`: the repair command and the alternatives."""
    return (f"Repair it with `python -m t2s.llm.cache recover {path}` while no t2s process uses it (it keeps every "
            f"entry that reads back intact and moves the damaged file to {Path(path).name}.corrupt-<time>), or start "
            f"an empty cache with `mv {path} {path}.corrupt` (every answer is then computed again), or run without "
            f"the cache (run.llm_cache=false).")


_RESPONSE_COLUMNS = ("key", "backend", "model_id", "request", "texts", "prompt_tokens", "completion_tokens", "seconds",
                     "created", "finish_reasons")
_SCORE_COLUMNS = ("key", "backend", "model_id", "request", "logprobs", "prompt_tokens", "seconds", "created")


def recover(path: str | Path, *, chunk: int = 256) -> dict[str, Any]:
    """Rebuild a damaged response cache from what reads back intact.

    The damaged file (with its `-wal` / `-shm`) moves to `<path>.corrupt-<time>`; a fresh cache is created at `path`
    and every entry of the old one that can be read, decodes and matches its checksum is copied into it. Unreadable
    stretches of the file are skipped by bisecting rowid ranges. Returns the counts: `responses` / `scores` kept,
    `dropped` (read but failing checks), `unreadable` (rowids SQLite could not read), and the two paths.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no response cache at {path}")
    aside = move_aside(path, sqlite=True)
    src = sqlite3.connect(str(aside), timeout=60)
    fresh = ResponseCache(path)
    out: dict[str, Any] = {"path": str(path), "moved_to": str(aside), "responses": 0, "scores": 0, "dropped": 0,
                           "unreadable": 0}
    try:
        for table, columns in (("responses", _RESPONSE_COLUMNS), ("scores", _SCORE_COLUMNS)):
            rows, unreadable = _salvage(src, table, columns, chunk=chunk)
            out["unreadable"] += unreadable
            good = [r for r in (_intact(table, row) for row in rows) if r is not None]
            out["dropped"] += len(rows) - len(good)
            fresh._insert(f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}, checksum) "
                          f"VALUES ({', '.join('?' * (len(columns) + 1))})", good)
            out[table] = len(good)
    finally:
        src.close()
        fresh.close()
    return out


def _salvage(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], *,
             chunk: int) -> tuple[list[tuple[Any, ...]], int]:
    """The readable rows of `table` (its `columns` and the stored checksum, or one computed for entries that predate
    checksums), and how many single rowids could not be read."""
    try:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    except sqlite3.DatabaseError:
        present = set(columns)
    cols = [c if c in present else _DEFAULTS.get(c, "NULL") for c in columns]
    cols.append("checksum" if "checksum" in present else "NULL")
    select = f"SELECT {', '.join(cols)} FROM {table} WHERE rowid BETWEEN ? AND ?"
    try:
        top = int(conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0)
    except (sqlite3.DatabaseError, TypeError, ValueError):
        try:
            top = int(conn.execute("PRAGMA page_count").fetchone()[0]) * 1000
        except sqlite3.DatabaseError:
            return [], 0
    rows: list[tuple[Any, ...]] = []
    unreadable = 0
    budget = 100_000
    # lowest rowids first; a range SQLite cannot read is halved until the unreadable rowids are isolated
    stack = [(lo, min(lo + chunk - 1, top)) for lo in range(1, top + 1, chunk)][::-1]
    while stack and budget > 0:
        budget -= 1
        lo, hi = stack.pop()
        try:
            rows += conn.execute(select, (lo, hi)).fetchall()
        except sqlite3.DatabaseError:
            if lo == hi:
                unreadable += 1
            else:
                mid = (lo + hi) // 2
                stack += [(mid + 1, hi), (lo, mid)]
    unreadable += sum(hi - lo + 1 for lo, hi in stack)  # left when the budget ran out
    return rows, unreadable


_DEFAULTS = {"finish_reasons": "'[]'"}


def _intact(table: str, row: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A salvaged row with its checksum (computed for rows that predate checksums), or None when it does not decode
    or does not match its checksum."""
    try:
        if table == "responses":
            key, _, _, request, texts, pt, ct, sec, _, reasons, checksum = row
            ok = isinstance(json.loads(texts), list) and isinstance(json.loads(reasons), list)
            actual = response_checksum(key, texts, pt, ct, sec, reasons)
        else:
            key, _, _, request, logprobs, pt, sec, _, checksum = row
            ok = isinstance(json.loads(logprobs), list)
            actual = score_checksum(key, logprobs, pt, sec)
        json.loads(request)
    except (TypeError, ValueError):
        return None
    if not ok or len(str(key)) != 64 or checksum not in (None, actual):
        return None
    return (*row[:-1], actual)


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


def main(argv: list[str] | None = None) -> int:
    """`python -m t2s.llm.cache recover <file>`: rebuild a damaged response cache from its intact entries."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "recover":
        print("usage: python -m t2s.llm.cache recover <llm_cache.sqlite>", file=sys.stderr)
        return 2
    try:
        done = recover(args[1])
    except (OSError, sqlite3.Error) as e:
        print(f"t2s cache recover: error: {e}", file=sys.stderr)
        return 1
    print(f"[t2s] recovered {done['responses']} response(s) and {done['scores']} score(s) into {done['path']}; "
          f"dropped {done['dropped']} (failing their checksum or not decoding), unreadable {done['unreadable']}; "
          f"the damaged file is kept as {done['moved_to']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
