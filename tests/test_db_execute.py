"""SQLExecutor: read-only, time-limited, row-capped execution of model-written SQL on real SQLite files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from t2s.db.execute import SQLExecutor

RUNAWAY_CTE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
CROSS_JOIN = "SELECT count(*) FROM singer a, singer b, singer c, singer d"


def make_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, country TEXT);
        CREATE INDEX singer_age ON singer(age);
        """
    )
    conn.executemany("INSERT INTO singer VALUES (?, ?, ?, ?)",
                     [(i, f"s{i}", 20 + i % 30, ["France", "Japan", "Peru"][i % 3]) for i in range(300)])
    conn.execute("INSERT INTO singer VALUES (1000, CAST(x'41ff42' AS TEXT), 99, 'Nowhere')")  # invalid UTF-8
    conn.commit()
    conn.close()
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "music.sqlite")


@pytest.fixture(scope="module")
def executor() -> Iterator[SQLExecutor]:
    with SQLExecutor(timeout=1.0, max_rows=1000, workers=2) as ex:
        yield ex


def test_select_returns_rows_columns_and_wall_time(executor: SQLExecutor, db: Path) -> None:
    res = executor.execute(str(db), "SELECT name, age FROM singer WHERE id < 3 ORDER BY id")
    assert res.ok and res.status == "ok"
    assert res.rows == [("s0", 20), ("s1", 21), ("s2", 22)]
    assert res.columns == ["name", "age"]
    assert 0 < res.seconds < 1


@pytest.mark.parametrize(
    "sql, what",
    [
        ("DROP TABLE singer", "DROP TABLE"),
        ("UPDATE singer SET name = 'x'", "UPDATE"),
        ("INSERT INTO singer (name) VALUES ('x')", "INSERT"),
        ("DELETE FROM singer", "DELETE"),
        ("CREATE TABLE t (a)", "CREATE TABLE"),
        ("CREATE INDEX i2 ON singer(name)", "CREATE INDEX"),
        ("ALTER TABLE singer ADD COLUMN b", "ALTER TABLE"),
        ("CREATE TEMP TABLE t (a)", "CREATE TEMP TABLE"),
        ("PRAGMA journal_mode = WAL", "PRAGMA"),
        ("PRAGMA query_only = OFF", "PRAGMA"),
        ("BEGIN", "TRANSACTION"),
        ("VACUUM", "VACUUM"),
        ("REINDEX singer_age", "REINDEX"),
        ("ANALYZE", "ANALYZE"),
    ],
)
def test_writes_are_rejected_and_the_file_stays_byte_identical(executor: SQLExecutor, db: Path, sql: str,
                                                                what: str) -> None:
    before = sha(db)
    res = executor.execute(str(db), sql)
    assert res.status == "rejected"
    assert res.error is not None and res.error.startswith("rejected: statement would modify the database")
    assert what in res.error
    assert sha(db) == before
    assert executor.execute(str(db), "SELECT count(*) FROM singer").rows == [(301,)]


def test_attach_and_vacuum_into_create_no_file(executor: SQLExecutor, db: Path, tmp_path: Path) -> None:
    for sql in (f"ATTACH '{tmp_path / 'new.sqlite'}' AS x", f"VACUUM INTO '{tmp_path / 'copy.sqlite'}'"):
        assert executor.execute(str(db), sql).status == "rejected"
    assert not (tmp_path / "new.sqlite").exists() and not (tmp_path / "copy.sqlite").exists()


def test_read_only_pragmas_are_allowed(executor: SQLExecutor, db: Path) -> None:
    res = executor.execute(str(db), "PRAGMA table_info(singer)")
    assert res.ok and [r[1] for r in res.rows] == ["id", "name", "age", "country"]


@pytest.mark.parametrize("sql", [RUNAWAY_CTE, CROSS_JOIN])
def test_runaway_query_stops_at_the_limit_and_the_next_query_works(executor: SQLExecutor, db: Path,
                                                                   sql: str) -> None:
    t0 = time.monotonic()
    res = executor.execute(str(db), sql, timeout=1.0)
    elapsed = time.monotonic() - t0
    assert res.timed_out and res.status == "timeout" and not res.ok
    assert 0.9 < elapsed < 2.0
    assert executor.execute(str(db), "SELECT 1").rows == [(1,)]


def test_a_worker_that_stops_answering_is_killed_and_replaced(db: Path) -> None:
    """The hard limit: a frozen worker (SIGSTOP, standing in for a C-level hang that the progress handler
    cannot interrupt) is killed at timeout + grace; the run goes on with a fresh worker."""
    with SQLExecutor(timeout=1.0, workers=1, kill_grace=0.3) as ex:
        ex.start()
        (pid,) = ex.worker_pids()
        threading.Timer(0.2, os.kill, (pid, signal.SIGSTOP)).start()
        t0 = time.monotonic()
        res = ex.execute(str(db), RUNAWAY_CTE, timeout=1.0)
        elapsed = time.monotonic() - t0
        assert res.timed_out
        assert elapsed < 1.0 + 0.3 + 0.5
        assert ex.restarts == 1 and ex.worker_pids() != [pid]
        assert ex.execute(str(db), "SELECT 2").rows == [(2,)]


def test_a_worker_crash_is_an_error_result_and_the_run_goes_on(db: Path) -> None:
    with SQLExecutor(timeout=5.0, workers=1) as ex:
        ex.start()
        (pid,) = ex.worker_pids()
        threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
        results = ex.execute_many([(str(db), RUNAWAY_CTE), (str(db), "SELECT 3")])
        assert results[0].status == "error" and "died" in (results[0].error or "")
        assert results[1].rows == [(3,)]
        assert ex.restarts == 1


def test_a_worker_that_died_while_idle_is_replaced_before_use(db: Path) -> None:
    with SQLExecutor(workers=1) as ex:
        ex.start()
        (pid,) = ex.worker_pids()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        assert ex.execute(str(db), "SELECT 4").rows == [(4,)]
        assert ex.restarts == 1 and ex.worker_pids() != [pid]


def test_row_cap(executor: SQLExecutor, db: Path) -> None:
    res = executor.execute(str(db), "SELECT id FROM singer ORDER BY id", max_rows=10)
    assert res.truncated and res.rows == [(i,) for i in range(10)]
    exact = executor.execute(str(db), "SELECT id FROM singer WHERE id < 10", max_rows=10)
    assert not exact.truncated and len(exact.rows) == 10


def test_missing_database_is_an_error_naming_the_path_and_creates_no_file(executor: SQLExecutor,
                                                                          tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "missing.sqlite"
    res = executor.execute(str(missing), "SELECT 1")
    assert res.status == "error" and str(missing) in (res.error or "")
    assert not missing.exists()
    res = executor.execute(str(tmp_path), "SELECT 1")  # a directory
    assert res.status == "error"


def test_several_statements_are_an_error_that_says_so(executor: SQLExecutor, db: Path) -> None:
    res = executor.execute(str(db), "SELECT 1; SELECT 2")
    assert res.status == "error" and "one SQL statement" in (res.error or "")
    assert executor.execute(str(db), "SELECT 1;  -- trailing comment").rows == [(1,)]


def test_invalid_utf8_is_decoded_tolerantly(executor: SQLExecutor, db: Path) -> None:
    res = executor.execute(str(db), "SELECT name FROM singer WHERE id = 1000")
    assert res.rows == [("A\ufffdB",)]
    with SQLExecutor(workers=0, decode_errors="ignore") as ex:
        assert ex.execute(str(db), "SELECT name FROM singer WHERE id = 1000").rows == [("AB",)]


def test_sqlite_errors_come_back_as_results(executor: SQLExecutor, db: Path) -> None:
    res = executor.execute(str(db), "SELECT nope FROM singer")
    assert res.status == "error" and "no such column" in (res.error or "")


def test_execute_many_keeps_input_order_across_workers(executor: SQLExecutor, db: Path, tmp_path: Path) -> None:
    other = make_db(tmp_path / "other.sqlite")
    jobs = [(str(db if i % 2 else other), f"SELECT {i}, count(*) FROM singer") for i in range(200)]
    results = executor.execute_many(jobs)
    assert [r.rows for r in results] == [[(i, 301)] for i in range(200)]
    assert len(executor.worker_pids()) == 2


def test_timeouts_inside_a_batch_do_not_disturb_the_others(executor: SQLExecutor, db: Path) -> None:
    jobs = [(str(db), "SELECT 1"), (str(db), RUNAWAY_CTE), (str(db), "SELECT 2"), (str(db), RUNAWAY_CTE),
            (str(db), "SELECT 3")]
    t0 = time.monotonic()
    results = executor.execute_many(jobs, timeout=0.5)
    assert [r.status for r in results] == ["ok", "timeout", "ok", "timeout", "ok"]
    assert [r.rows for r in results[::2]] == [[(1,)], [(2,)], [(3,)]]
    assert time.monotonic() - t0 < 2.0  # the two runaways ran in parallel on two workers


def test_in_process_mode_has_the_same_rules(db: Path) -> None:
    with SQLExecutor(workers=0, timeout=0.5) as ex:
        assert ex.worker_pids() == []
        assert ex.execute(str(db), "DROP TABLE singer").status == "rejected"
        t0 = time.monotonic()
        assert ex.execute(str(db), RUNAWAY_CTE).timed_out
        assert time.monotonic() - t0 < 1.5
        assert ex.execute(str(db), "SELECT count(*) FROM singer").rows == [(301,)]


def test_close_is_idempotent_and_the_executor_restarts_on_use(db: Path) -> None:
    ex = SQLExecutor(workers=1)
    assert ex.execute(str(db), "SELECT 1").rows == [(1,)]
    (pid,) = ex.worker_pids()
    ex.close()
    ex.close()
    assert ex.worker_pids() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert ex.execute(str(db), "SELECT 2").rows == [(2,)]
    ex.close()


def test_time_many_returns_per_iteration_seconds(executor: SQLExecutor, db: Path) -> None:
    (res,) = executor.time_many([(str(db), ["SELECT count(*) FROM singer", "SELECT 1"])], iterations=3)
    assert res.ok and len(res.times) == 2 and all(len(t) == 3 and all(s > 0 for s in t) for t in res.times)
    (bad,) = executor.time_many([(str(db), ["SELECT 1", "DROP TABLE singer"])], iterations=2)
    assert not bad.ok and bad.failed_index == 1 and (bad.error or "").startswith("rejected")


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="timeout"):
        SQLExecutor(timeout=0)
    with pytest.raises(ValueError, match="workers"):
        SQLExecutor(workers=-1)
    with pytest.raises(LookupError):
        SQLExecutor(decode_errors="no-such-handler")


# ------------------------------------------------------------------------------------------------------------
# Verdicts that depend only on the query, the database and the limits (issue 20, item 3)
# ------------------------------------------------------------------------------------------------------------

#: the issue's probe, scaled to a 512 MB bound: a 120 MB text result (about 420 MB of the worker's address space
#: while it is built and sent back)
BIG_RESULT = "SELECT hex(randomblob(60000000))"
#: a correct query that needs about 400 MB while it runs and returns one small row
HUNGRY = "SELECT length(hex(zeroblob(80000000)))"
BOUND_MB = 512


def test_a_verdict_does_not_depend_on_the_query_before_it(db: Path) -> None:
    """Before: the worker kept the big answer in memory while it ran the next query, so HUNGRY was `ok` after
    `SELECT 1` and `resource_limit` (MemoryError) after BIG_RESULT, queued behind it or sent after it."""
    verdicts = {}
    for first in ("SELECT 1", BIG_RESULT):
        with SQLExecutor(timeout=30.0, workers=1, max_memory_mb=BOUND_MB) as ex:
            together = ex.execute_many([(str(db), first), (str(db), HUNGRY)])
            one_by_one = [ex.execute(str(db), first), ex.execute(str(db), HUNGRY)]
        assert together[0].ok and one_by_one[0].ok, first
        verdicts[first] = [(r.status, r.rows) for r in (together[1], one_by_one[1])]
    assert verdicts["SELECT 1"] == verdicts[BIG_RESULT] == [("ok", [(160000000,)])] * 2
    with SQLExecutor(timeout=30.0, workers=1, max_memory_mb=BOUND_MB) as ex:
        for first, second in ((BIG_RESULT, HUNGRY), (HUNGRY, BIG_RESULT)):
            assert [r.status for r in ex.execute_many([(str(db), first), (str(db), second)])] == ["ok", "ok"]


def test_the_same_query_twice_gets_the_same_verdict(db: Path) -> None:
    """Before: BIG_RESULT answered `ok`, `resource_limit`, `ok`, `resource_limit` in one worker (the server's
    /execute alternated 200 / 422 the same way)."""
    with SQLExecutor(timeout=30.0, workers=1, max_memory_mb=BOUND_MB) as ex:
        statuses = [ex.execute(str(db), BIG_RESULT).status for _ in range(3)]
        statuses += [r.status for r in ex.execute_many([(str(db), BIG_RESULT)] * 3)]
    assert statuses == ["ok"] * 6


def test_a_query_that_runs_out_of_memory_after_others_is_judged_in_a_fresh_worker(db: Path) -> None:
    """A query over the bound is rerun as the first query of a fresh worker (so what ran before cannot have taken
    the memory it lacked); the worker that hit the bound is replaced before the jobs queued behind it run."""
    over = "SELECT length(hex(zeroblob(130000000)))"  # about 640 MB: over the bound in any worker
    with SQLExecutor(timeout=30.0, workers=1, max_memory_mb=BOUND_MB) as ex:
        ex.start()
        (first_pid,) = ex.worker_pids()
        results = ex.execute_many([(str(db), "SELECT 1"), (str(db), over), (str(db), "SELECT count(*) FROM singer")])
        assert [r.status for r in results] == ["ok", "resource_limit", "ok"]
        assert results[2].rows == [(301,)]
        assert ex.recycled == 2 and ex.restarts == 0  # the worker that ran it after SELECT 1, then the fresh one
        assert first_pid not in ex.worker_pids()


def test_in_process_a_query_that_hit_a_memory_bound_gets_a_fresh_runner(db: Path) -> None:
    """workers=0 has no process to replace: the runner (its connections and their caches) is replaced instead."""
    with SQLExecutor(timeout=30.0, workers=0, max_result_mb=8) as ex:
        assert ex.execute(str(db), "SELECT hex(zeroblob(5000000)) FROM singer LIMIT 3").status == "resource_limit"
        assert ex.recycled == 1
        assert ex.execute(str(db), "SELECT count(*) FROM singer").rows == [(301,)]
        assert ex.recycled == 1


def test_two_identical_predictions_in_one_file_get_the_same_verdict(db: Path, tmp_path: Path) -> None:
    """Scored through `t2s eval`'s path (predictions file -> Scorer): gold, then two predictions, in one worker.
    Before: the first prediction ran out of memory behind the gold answer, the second (in a fresh worker) was
    correct."""
    from t2s.eval.predictions import load_predictions
    from t2s.eval.scorer import Scorer
    from t2s.types import Example

    gold = "SELECT hex(zeroblob(40000000))"  # an 80 MB text result
    examples = [Example(qid=q, question="?", db_id="music", db_path=str(db), gold_sql=gold) for q in ("q1", "q2")]
    preds_file = tmp_path / "preds.jsonl"
    preds_file.write_text("".join(json.dumps({"qid": q, "sql": gold}) + "\n" for q in ("q1", "q2")))
    preds = load_predictions(preds_file, examples)
    scorer = Scorer(semantics="spider", workers=1, exact_match=False, max_memory_mb=BOUND_MB, cache_dir=None)
    try:
        records = scorer.score(examples, preds)
    finally:
        scorer.close()
    assert [(r["status"], r["correct"]) for r in records] == [("ok", True), ("ok", True)]
