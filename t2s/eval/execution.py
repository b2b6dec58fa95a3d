"""Execution accuracy: run gold and predicted SQL, compare their results with the official semantics.

Two semantics:

- `spider` reproduces the test-suite evaluation of Zhong et al. (github.com/taoyds/test-suite-sql-eval,
  `exec_eval.py`, `eval_exec_match` with `plug_value=False`):
  both SQL texts get `postprocess` ("> =" -> ">=", ...) and, unless `keep_distinct`, `remove_distinct`
  (every token spelled DISTINCT is deleted, including inside `COUNT(DISTINCT x)`, as upstream does);
  `YEAR(CURDATE())` becomes 2020; row order matters only when the (processed) gold text contains the
  substring "order by" (case-insensitive, exactly upstream's test); rows compare as multisets; columns
  may be permuted (any column permutation that makes the results equal counts); two empty results are
  equal; TEXT is decoded with `errors="ignore"` like upstream; the prediction must match on every
  database of the question (test-suite databases).
- `bird` reproduces BIRD's `evaluation.py`: `set(pred_rows) == set(gold_rows)`, column order significant,
  duplicates and row order ignored; SQL run unchanged.

Column permutations are searched exactly, not sampled: upstream prunes the permutation space with 20
random rows and enumerates the product of the remaining candidate sets, which is exponential on wide
results; here candidate columns must have equal value multisets (equal value sequences when order
matters), identical predicted columns are interchangeable, and each partial assignment must already
match on the projected rows. All of these are necessary conditions, so the verdict is the one upstream
computes (without its cost on wide results).

A gold query that fails, times out or exceeds `max_rows` gives status "gold_error": it is reported and
must be left out of (or counted apart in) accuracy, never scored as a miss of the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import re
import sqlite3
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlglot import TokenType
from sqlglot.dialects.sqlite import SQLite
from sqlglot.errors import TokenError

from t2s.data.base import database_problem
from t2s.db.execute import SQLExecutor
from t2s.db.types import ExecResult
from t2s.files import content_hash, forget_content_hashes
from t2s.integrity import (
    DamagedFileError,
    NetworkJournalError,
    damage_after,
    move_aside,
    quick_check_once,
    set_journal_mode,
)

log = logging.getLogger("t2s")

SEMANTICS = ("spider", "bird")
STATUSES = ("ok", "timeout", "resource_limit", "error", "rejected", "gold_error")
Row = tuple[Any, ...]

_CUR_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", flags=re.IGNORECASE)
#: fallback tokenizer for text sqlglot cannot tokenize: quoted strings/identifiers, comments, words, rest
_FALLBACK_TOKENS = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|`[^`]*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|$)|\w+|\s+|.",
                              flags=re.DOTALL)


# --------------------------------------------------------------------------------------------------
# SQL text normalization (test-suite `postprocess`, `remove_distinct`, `replace_cur_year`)
# --------------------------------------------------------------------------------------------------


def postprocess(sql: str) -> str:
    """Test-suite `postprocess`: join comparison operators split by a space ("> =" -> ">=", "< =", "! =")."""
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


def remove_distinct(sql: str) -> str:
    """Delete every DISTINCT keyword token, keeping all other text (whitespace included) as it is.

    Upstream flattens the `sqlparse` token stream and drops tokens whose text is "distinct" (any case),
    which also turns `COUNT(DISTINCT x)` into `COUNT( x)`. Strings, quoted identifiers and comments that
    contain the word are single tokens and stay. Here the sqlglot SQLite tokenizer finds the keyword
    tokens; text it cannot tokenize (e.g. an unterminated string) goes through an equivalent regex scan.
    """
    if "distinct" not in sql.lower():
        return sql
    try:
        spans = [(t.start, t.end + 1) for t in SQLite().tokenize(sql) if t.token_type == TokenType.DISTINCT]
    except TokenError:
        spans = [(m.start(), m.end()) for m in _FALLBACK_TOKENS.finditer(sql) if m.group().lower() == "distinct"]
    if not spans:
        return sql
    out, last = [], 0
    for start, end in spans:
        out.append(sql[last:start])
        last = end
    out.append(sql[last:])
    return "".join(out)


def replace_cur_year(sql: str) -> str:
    """Test-suite `replace_cur_year`: `YEAR(CURDATE())` (MySQL) becomes the literal 2020."""
    return _CUR_YEAR.sub("2020", sql)


def gold_order_matters(gold_sql: str) -> bool:
    """Whether row order counts: the processed gold text contains "order by" (upstream's substring test,
    so `ORDER  BY` with two spaces does not count, exactly as in the official evaluation)."""
    return "order by" in gold_sql.lower()


def prepare_sql(sql: str, *, semantics: str = "spider", keep_distinct: bool = False) -> str:
    """The SQL text that is actually executed for `sql` under `semantics` (unchanged for "bird")."""
    _check_semantics(semantics)
    if semantics == "bird":
        return sql
    sql = postprocess(sql)
    if not keep_distinct:
        sql = remove_distinct(sql)
    return replace_cur_year(sql)


def _check_semantics(semantics: str) -> None:
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown execution semantics {semantics!r}; choose one of {', '.join(SEMANTICS)}")


# --------------------------------------------------------------------------------------------------
# Result comparison (test-suite `result_eq` and BIRD's set comparison)
# --------------------------------------------------------------------------------------------------


def _unorder_row(row: Row) -> Row:
    return tuple(sorted(row, key=lambda x: str(x) + str(type(x))))


def _quick_accept(r1: Sequence[Row], r2: Sequence[Row], order_matters: bool) -> bool:
    """Test-suite `quick_rej`: the bags of "unordered rows" must agree (False = certainly different)."""
    s1 = [_unorder_row(r) for r in r1]
    s2 = [_unorder_row(r) for r in r2]
    return s1 == s2 if order_matters else set(s1) == set(s2)


def _project(rows: Sequence[Row], cols: list[int]) -> list[Row]:
    return [tuple(r[c] for c in cols) for r in rows]


def _spider_equal(r1: Sequence[Row], r2: Sequence[Row], order_matters: bool) -> bool:
    """Test-suite `result_eq(r1, r2, order_matters)` with an exact, pruned column-permutation search."""
    if len(r1) == 0 and len(r2) == 0:
        return True
    if len(r1) != len(r2):
        return False
    ncol = len(r1[0])
    if len(r2[0]) != ncol:
        return False
    # identical rows, value and type for value (the common case of a correct prediction): every check
    # below passes
    if r1 == r2 and all(type(a) is type(b) for x, y in zip(r1, r2) for a, b in zip(x, y)):
        return True
    # upstream's quick check comes first: with mixed int/float values it can reject results that are
    # otherwise equal (its sort key is str(value) + str(type)), and the verdict must be upstream's
    if not _quick_accept(r1, r2, order_matters):
        return False
    r1, r2 = list(r1), list(r2)
    if order_matters:
        if r1 == r2:
            return True
    elif Counter(r1) == Counter(r2):
        return True
    if ncol == 1:
        return False

    cols1 = list(zip(*r1))
    cols2 = list(zip(*r2))
    sig1: list[Hashable | Counter[Any]]
    sig2: list[Hashable | Counter[Any]]
    if order_matters:
        sig1, sig2 = list(cols1), list(cols2)
    else:
        sig1, sig2 = [Counter(c) for c in cols1], [Counter(c) for c in cols2]
    # twin[j]: the first predicted column identical to column j (interchangeable columns)
    twin = [next(k for k in range(j + 1) if cols2[k] == cols2[j]) for j in range(ncol)]
    candidates = [[j for j in range(ncol) if sig1[i] == sig2[j]] for i in range(ncol)]
    if any(not c for c in candidates):
        return False
    order = sorted(range(ncol), key=lambda i: len(candidates[i]))

    def matches(gold_cols: list[int], pred_cols: list[int]) -> bool:
        a, b = _project(r1, gold_cols), _project(r2, pred_cols)
        return a == b if order_matters else Counter(a) == Counter(b)

    used = [False] * ncol
    chosen: list[int] = []

    def search(depth: int) -> bool:
        if depth == ncol:
            return True
        i = order[depth]
        for j in candidates[i]:
            if used[j]:
                continue
            # among identical predicted columns, always take the first unused one
            if any(not used[k] and twin[k] == twin[j] for k in range(j)):
                continue
            used[j] = True
            chosen.append(j)
            if (depth == 0 or matches(order[: depth + 1], chosen)) and search(depth + 1):
                return True
            chosen.pop()
            used[j] = False
        return False

    return search(0)


def results_equal(gold: Sequence[Row], pred: Sequence[Row], *, semantics: str = "spider",
                  order_matters: bool = False) -> bool:
    """Whether two result row lists denote the same answer.

    "spider": test-suite `result_eq` (multisets of rows, columns may be permuted, list equality when
    `order_matters`). "bird": `set(pred) == set(gold)` (`order_matters` is ignored). Rows are tuples of
    SQLite values as `sqlite3` returns them. DISTINCT handling happens on the SQL text (`prepare_sql`).
    """
    _check_semantics(semantics)
    if semantics == "bird":
        return set(pred) == set(gold)
    return _spider_equal(gold, pred, order_matters)


# --------------------------------------------------------------------------------------------------
# Gold-result cache
# --------------------------------------------------------------------------------------------------

def file_sha256(path: str | os.PathLike[str], *, store: GoldCache | None = None) -> str:
    """sha256 hex digest of a file's bytes (`t2s.files.content_hash`), also remembered in the gold cache's store
    when `store` is given (so a large database is hashed once across runs)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    digest = store.lookup_hash(*key) if store is not None else None
    if digest is None:
        digest = content_hash(real)
        if store is not None:
            store.remember_hash(*key, digest)
    return digest


def forget_file_hashes() -> None:
    """Empty the in-process memo of `file_sha256` (the on-disk one in a `GoldCache` stays)."""
    forget_content_hashes()


class GoldCache:
    """Gold execution results on disk: one SQLite file `<dir>/gold.sqlite`.

    Keyed by sha256(database content hash, max_rows, text decoding, executed SQL), so a gold query runs
    once per database content whatever the path, and an edited database misses. Values are pickled
    `(rows, columns, error, truncated, seconds)` with their sha256; timeouts are never stored. Safe for several
    processes (SQLite locking; a WAL journal, or DELETE on a shared filesystem: `t2s.integrity.set_journal_mode`).

    Gold results are derived data, so a damaged file is replaced rather than refused: `PRAGMA quick_check` when a
    process first opens it and a full `integrity_check` after any database error; a damaged file is moved aside to
    `gold.sqlite.corrupt-<time>` with a warning naming both paths, and an empty cache takes its place (the gold
    queries run again). A single value that fails its checksum or does not unpickle is a miss, and is replaced.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "gold.sqlite"
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        """A connection to a sound cache file (a damaged one is moved aside first)."""
        for _ in range(3):
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            inode = os.stat(self.path).st_ino
            try:
                problem = quick_check_once(conn, self.path)
                if problem is None:
                    set_journal_mode(conn, self.path)
                    conn.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                                 "checksum TEXT)")
                    conn.execute("CREATE TABLE IF NOT EXISTS file_hashes (path TEXT NOT NULL, size INTEGER NOT NULL, "
                                 "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (path, size, mtime_ns))")
                    if "checksum" not in {row[1] for row in conn.execute("PRAGMA table_info(results)")}:
                        try:
                            conn.execute("ALTER TABLE results ADD COLUMN checksum TEXT")
                        except sqlite3.OperationalError:  # another process added it first
                            pass
                    self._inode = inode
                    return conn
            except NetworkJournalError:
                conn.close()
                raise
            except sqlite3.DatabaseError as e:
                problem = damage_after(e, self.path)
                if problem is None:
                    conn.close()
                    raise
            conn.close()
            self._set_aside(problem, inode)
        raise DamagedFileError(self.path, "a new file failed its check too", "Check the disk and the cache folder")

    def _set_aside(self, problem: str, inode: int) -> None:
        try:
            if os.stat(self.path).st_ino != inode:
                return  # another process replaced it already
        except FileNotFoundError:
            return
        aside = move_aside(self.path, sqlite=True)
        log.warning("gold result cache %s is damaged (%s): moved to %s; an empty one replaces it and gold queries "
                    "run again", self.path, problem, aside.name)

    def _recover(self, error: sqlite3.DatabaseError) -> None:
        """After a database error: re-raise it when the file is sound, else replace the file and reconnect."""
        problem = damage_after(error, self.path)
        if problem is None:
            raise error
        self._conn.close()
        self._set_aside(problem, self._inode)
        self._conn = self._open()

    @staticmethod
    def key(db_hash: str, sql: str, *, max_rows: int, decode_errors: str) -> str:
        """The cache key of one gold execution."""
        return hashlib.sha256(f"{db_hash}\0{max_rows}\0{decode_errors}\0{sql}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, ExecResult]:
        """The cached results among `keys` (a damaged file or value counts as a miss)."""
        try:
            return self._get_many(keys)
        except sqlite3.DatabaseError as e:
            self._recover(e)
            return {}

    def _get_many(self, keys: Sequence[str]) -> dict[str, ExecResult]:
        out: dict[str, ExecResult] = {}
        uniq = list(dict.fromkeys(keys))
        for start in range(0, len(uniq), 500):
            chunk = uniq[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob, checksum in self._conn.execute(
                    f"SELECT key, value, checksum FROM results WHERE key IN ({marks})", chunk).fetchall():
                try:
                    if checksum is not None and checksum != hashlib.sha256(blob).hexdigest():
                        raise ValueError("the value does not match its checksum")
                    rows, columns, error, truncated, seconds = pickle.loads(blob)
                except Exception as e:  # noqa: BLE001 - any unpickling failure: a damaged value
                    log.warning("gold result cache %s: entry %s... is damaged (%s: %s); running its gold query again",
                                self.path, key[:16], type(e).__name__, e)
                    continue
                out[key] = ExecResult(rows=rows, columns=columns, error=error, truncated=truncated, seconds=seconds)
        return out

    def put_many(self, items: dict[str, ExecResult]) -> None:
        """Store results (timeouts and memory-bound stops are skipped: they depend on the machine's load and on
        the executor's bounds, not only on the query)."""
        data = []
        for k, r in items.items():
            if r.status in ("timeout", "resource_limit"):
                continue
            blob = pickle.dumps((r.rows, r.columns, r.error, r.truncated, r.seconds), protocol=pickle.HIGHEST_PROTOCOL)
            data.append((k, blob, hashlib.sha256(blob).hexdigest()))
        if not data:
            return
        for attempt in (1, 2):
            try:
                with self._conn:
                    self._conn.execute("BEGIN")
                    self._conn.executemany("INSERT OR REPLACE INTO results (key, value, checksum) VALUES (?, ?, ?)",
                                           data)
                return
            except sqlite3.DatabaseError as e:
                if attempt == 2:
                    raise
                self._recover(e)

    def lookup_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        try:
            row = self._conn.execute("SELECT sha256 FROM file_hashes WHERE path=? AND size=? AND mtime_ns=?",
                                     (path, size, mtime_ns)).fetchone()
        except sqlite3.DatabaseError as e:
            self._recover(e)
            return None
        return None if row is None else str(row[0])

    def remember_hash(self, path: str, size: int, mtime_ns: int, digest: str) -> None:
        try:
            self._conn.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", (path, size, mtime_ns, digest))
        except sqlite3.DatabaseError as e:
            self._recover(e)

    def close(self) -> None:
        self._conn.close()


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


@dataclass
class ExecVerdict:
    """The execution-accuracy verdict for one question.

    `status`: "ok" (both ran; `correct` says whether the results match on every database), "timeout",
    "resource_limit", "error" or "rejected" (the prediction timed out / hit a memory bound of the executor /
    failed / tried to write, on some database: wrong),
    "gold_error" (the gold failed, timed out or exceeded max_rows: not scorable, report it apart).
    `seconds`: the prediction's execution wall time summed over the databases. `gold_rows` / `pred_rows`:
    row counts on the first database (None when not run). `failed_db`: the first database where the
    prediction failed or differed (or where the gold failed). `pred_truncated`: the prediction returned
    more than max_rows rows (then it is wrong, since the gold did not). `order_matters`: the rule used.
    """

    correct: bool
    status: str
    pred_error: str | None = None
    gold_error: str | None = None
    seconds: float = 0.0
    order_matters: bool = False
    gold_rows: int | None = None
    pred_rows: int | None = None
    failed_db: str | None = None
    pred_truncated: bool = False
    gold_cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(verdicts: Sequence[ExecVerdict]) -> dict[str, Any]:
    """Counts per status and accuracy: `accuracy` = correct / scorable (gold_error excluded),
    `accuracy_all` = correct / all questions."""
    counts = Counter(v.status for v in verdicts)
    n = len(verdicts)
    scorable = n - counts.get("gold_error", 0)
    correct = sum(v.correct for v in verdicts)
    return {
        "n": n, "scorable": scorable, "correct": correct,
        "accuracy": correct / scorable if scorable else 0.0,
        "accuracy_all": correct / n if n else 0.0,
        **{f"n_{s}": counts.get(s, 0) for s in STATUSES},
    }


def _gold_problem(res: ExecResult, max_rows: int, timeout: float) -> str | None:
    if res.timed_out:
        return f"gold query timed out after {timeout:g} s (raise the timeout or check the query)"
    if res.error is not None:
        return res.error
    if res.truncated:
        return f"gold result has more than max_rows={max_rows} rows; raise max_rows to score this question"
    return None


def score_execution(
    items: Sequence[tuple[str, str, Sequence[str]]],
    *,
    semantics: str = "spider",
    timeout: float = 30.0,
    workers: int = 2,
    max_rows: int = 100_000,
    keep_distinct: bool = False,
    cache_dir: Path | None = None,
    progress: bool = False,
    executor: SQLExecutor | None = None,
) -> list[ExecVerdict]:
    """Score `(gold_sql, pred_sql, db_paths)` items; one verdict per item, in order.

    All gold (cache misses) and predicted queries run together through one `SQLExecutor` with `workers`
    processes (`workers=1`: one process, queries one after another; `0`: inside this process). `timeout`
    is seconds per query, `max_rows` the row cap of both sides. With `cache_dir`, gold results are read
    from and written to `cache_dir/gold` (see `GoldCache`). Pass `executor` to reuse a running pool across
    calls (saves starting workers each time): `timeout` and `max_rows` given here still apply, its
    `decode_errors` replaces the semantics' default ("ignore" for spider, as upstream; "replace" for
    bird), and `workers` is ignored. `keep_distinct` only matters for "spider" (BIRD never strips
    DISTINCT). `progress` shows a tqdm bar over the queries.
    """
    _check_semantics(semantics)
    own = executor is None
    if executor is None:
        executor = SQLExecutor(timeout=timeout, max_rows=max_rows, workers=workers,
                               decode_errors="ignore" if semantics == "spider" else "replace")
        executor.start()
    store = GoldCache(cache_dir / "gold") if cache_dir is not None else None
    try:
        return _score(items, semantics=semantics, timeout=timeout, max_rows=max_rows, keep_distinct=keep_distinct,
                      store=store, progress=progress, executor=executor)
    finally:
        if store is not None:
            store.close()
        if own:
            executor.close()


def _score(items: Sequence[tuple[str, str, Sequence[str]]], *, semantics: str, timeout: float, max_rows: int,
           keep_distinct: bool, store: GoldCache | None, progress: bool, executor: SQLExecutor) -> list[ExecVerdict]:
    prepared: list[tuple[str, str, list[str], bool]] = []
    for n, (gold, pred, dbs) in enumerate(items):
        if isinstance(dbs, (str, os.PathLike)):
            raise TypeError(f"item {n}: db_paths must be a list of paths, got the single path {dbs!r}")
        if not dbs:
            raise ValueError(f"item {n}: no database path given for gold SQL {gold[:80]!r}")
        g = prepare_sql(gold, semantics=semantics, keep_distinct=keep_distinct)
        p = prepare_sql(pred or "", semantics=semantics, keep_distinct=keep_distinct)
        om = semantics == "spider" and gold_order_matters(g)
        prepared.append((g, p, [os.fspath(d) for d in dbs], om))

    # gold results: cache first, then the executor (each distinct (database, SQL) once)
    gold_results: dict[tuple[str, str], ExecResult] = {}
    from_cache: set[tuple[str, str]] = set()
    gold_needed = list(dict.fromkeys((db, g) for g, _, dbs, _ in prepared for db in dbs))
    keys: dict[tuple[str, str], str] = {}
    if store is not None:
        for db, g in gold_needed:
            if os.path.isfile(db):
                keys[(db, g)] = GoldCache.key(file_sha256(db, store=store), g, max_rows=max_rows,
                                              decode_errors=executor.decode_errors)
        hits = store.get_many(list(keys.values()))
        for pair, key in keys.items():
            if key in hits:
                gold_results[pair] = hits[key]
                from_cache.add(pair)
    gold_jobs = [pair for pair in gold_needed if pair not in gold_results]
    pred_jobs = [(db, p) for _, p, dbs, _ in prepared for db in dbs]
    pred_of = [((db, g), om) for g, _, dbs, om in prepared for db in dbs]  # gold pair and rule of each pred job
    jobs = gold_jobs + pred_jobs
    n_gold = len(gold_jobs)
    results: list[ExecResult | None] = [None] * len(jobs)
    equal: dict[int, bool] = {}  # pred job index -> results equal (compared as soon as both are in)
    waiting: dict[tuple[str, str], list[int]] = {}

    def compare(j: int) -> None:
        pred, (pair, om) = results[j], pred_of[j - n_gold]
        gold = gold_results[pair]
        if pred is not None and pred.ok and not pred.truncated and gold.ok and not gold.truncated:
            equal[j] = results_equal(gold.rows, pred.rows, semantics=semantics, order_matters=om)

    it = executor.execute_iter(jobs, timeout=timeout, max_rows=max_rows)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(jobs), desc=f"execution ({semantics})", unit="query")
    for i, res in it:
        results[i] = res
        if i < n_gold:
            gold_results[gold_jobs[i]] = res
            for j in waiting.pop(gold_jobs[i], []):
                compare(j)
        elif pred_of[i - n_gold][0] in gold_results:
            compare(i)
        else:
            waiting.setdefault(pred_of[i - n_gold][0], []).append(i)
    if store is not None:
        store.put_many({keys[pair]: gold_results[pair] for pair in gold_jobs if pair in keys})

    verdicts: list[ExecVerdict] = []
    pos = n_gold
    for g, _p, dbs, om in prepared:
        preds = [(results[j], equal.get(j)) for j in range(pos, pos + len(dbs))]
        pos += len(dbs)
        verdicts.append(_verdict(g, dbs, om, preds, gold_results, from_cache, max_rows=max_rows, timeout=timeout))
    return verdicts


def _verdict(g: str, dbs: list[str], om: bool, preds: Sequence[tuple[ExecResult | None, bool | None]],
             gold_results: dict[tuple[str, str], ExecResult], from_cache: set[tuple[str, str]], *,
             max_rows: int, timeout: float) -> ExecVerdict:
    """One question's verdict from its gold results and its (prediction result, results equal) per database."""
    v = ExecVerdict(correct=False, status="ok", order_matters=om,
                    gold_cached=all((db, g) in from_cache for db in dbs))
    v.seconds = sum(r.seconds for r, _ in preds if r is not None)
    for db in dbs:
        problem = _gold_problem(gold_results[(db, g)], max_rows, timeout)
        if problem is not None:
            v.status, v.gold_error, v.failed_db = "gold_error", problem, db
            return v
    for n, (db, (pred, same)) in enumerate(zip(dbs, preds)):
        assert pred is not None
        if n == 0:
            v.gold_rows = len(gold_results[(db, g)].rows)
            v.pred_rows = len(pred.rows) if pred.ok else None
        if not pred.ok:
            v.status = pred.status
            v.pred_error = pred.error if not pred.timed_out else f"prediction timed out after {timeout:g} s"
            problem = database_problem(db) if pred.status == "error" else None
            if problem is not None:  # SQLite reports a syntax error before it reads the file: say what the file is
                v.pred_error = f"{problem}: {db} (SQLite: {v.pred_error})"
            v.failed_db = db
            return v
        if pred.truncated:
            v.pred_truncated = True
            v.failed_db = db
            return v
        if not same:
            v.failed_db = db
            return v
    v.correct = True
    return v
