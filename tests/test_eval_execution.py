"""Execution accuracy: every rule of the Spider test-suite and BIRD semantics, on real SQLite files."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from t2s.db.execute import SQLExecutor
from t2s.eval.execution import (
    GoldCache,
    file_sha256,
    gold_order_matters,
    prepare_sql,
    remove_distinct,
    results_equal,
    score_execution,
    summarize,
)
from t2s.eval.ves import clean_abnormal, mean_time_ratio, score_soft_f1, score_ves, soft_f1, ves, ves_reward

RUNAWAY_CTE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
PEOPLE = [(1, "Ann", 31, "Paris"), (2, "Bob", 25, "Lima"), (3, "Cid", 44, "Paris"), (4, "Dee", 19, "Oslo"),
          (5, "Eve", 38, "Paris")]


def make_db(path: Path, people: list[tuple[Any, ...]] = PEOPLE) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, city TEXT)")
    conn.executemany("INSERT INTO person VALUES (?, ?, ?, ?)", people)
    conn.commit()
    conn.close()
    return path


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return str(make_db(tmp_path / "people.sqlite"))


@pytest.fixture(scope="module")
def executor() -> Iterator[SQLExecutor]:
    with SQLExecutor(timeout=5.0, max_rows=100_000, workers=2, decode_errors="ignore") as ex:
        yield ex


def one(gold: str, pred: str, db: str, executor: SQLExecutor, **kw: Any) -> Any:
    (v,) = score_execution([(gold, pred, [db])], executor=executor, **kw)
    return v


# ---------------------------------------------------------------------------------------------- rules


def test_row_order_matters_only_when_the_gold_has_order_by(db: str, executor: SQLExecutor) -> None:
    v = one("SELECT name FROM person ORDER BY age", "SELECT name FROM person ORDER BY age DESC", db, executor)
    assert v.status == "ok" and v.order_matters and not v.correct
    v = one("SELECT name FROM person", "SELECT name FROM person ORDER BY age DESC", db, executor)
    assert not v.order_matters and v.correct
    assert one("SELECT name FROM person ORDER BY age", "SELECT name FROM person ORDER BY age", db, executor).correct


def test_order_by_detection_is_upstreams_substring_test() -> None:
    assert gold_order_matters("select a from t Order By a")
    assert not gold_order_matters("SELECT a FROM t ORDER  BY a")  # two spaces: upstream does not see it
    assert gold_order_matters("SELECT a FROM t WHERE b = 'order by'")


def test_rows_are_multisets_under_spider_and_sets_under_bird(db: str, executor: SQLExecutor) -> None:
    gold, pred = "SELECT city FROM person", "SELECT city FROM person GROUP BY city"
    assert not one(gold, pred, db, executor).correct  # Paris appears 3 times in the gold
    assert one(gold, pred, db, executor, semantics="bird").correct
    doubled = "SELECT city FROM person UNION ALL SELECT city FROM person"
    assert not one(gold, doubled, db, executor).correct
    assert one(gold, doubled, db, executor, semantics="bird").correct


def test_permuted_columns_are_right_under_spider_and_wrong_under_bird(db: str, executor: SQLExecutor) -> None:
    gold, pred = "SELECT name, age FROM person", "SELECT age, name FROM person"
    assert one(gold, pred, db, executor).correct
    assert not one(gold, pred, db, executor, semantics="bird").correct
    ordered = one("SELECT name, age FROM person ORDER BY age", "SELECT age, name FROM person ORDER BY age", db,
                  executor)
    assert ordered.correct


def test_distinct_is_stripped_by_default_and_kept_by_option(db: str, executor: SQLExecutor) -> None:
    gold, pred = "SELECT DISTINCT city FROM person", "SELECT city FROM person"
    assert one(gold, pred, db, executor).correct
    assert not one(gold, pred, db, executor, keep_distinct=True).correct
    # upstream also strips DISTINCT inside aggregates
    gold, pred = "SELECT count(DISTINCT city) FROM person", "SELECT count(city) FROM person"
    assert one(gold, pred, db, executor).correct
    assert not one(gold, pred, db, executor, keep_distinct=True).correct


def test_remove_distinct_follows_upstreams_token_rule() -> None:
    assert remove_distinct("SELECT DISTINCT a FROM t") == "SELECT  a FROM t"
    assert remove_distinct("select count(distinct b) from t") == "select count( b) from t"
    kept = "SELECT 'distinct', \"distinct\" FROM t -- distinct"
    assert remove_distinct(kept) == kept
    assert remove_distinct("SELECT distinct_count FROM t") == "SELECT distinct_count FROM t"
    assert remove_distinct("SELECT DISTINCT a FROM t WHERE b = 'unterminated") == "SELECT  a FROM t WHERE b = 'unterminated"
    assert prepare_sql("SELECT DISTINCT a FROM t WHERE x > = 1", semantics="spider") == "SELECT  a FROM t WHERE x >= 1"
    assert prepare_sql("SELECT DISTINCT a FROM t", semantics="bird") == "SELECT DISTINCT a FROM t"


def test_two_empty_results_are_equal(db: str, executor: SQLExecutor) -> None:
    v = one("SELECT name FROM person WHERE age > 100", "SELECT id, age FROM person WHERE 0", db, executor)
    assert v.correct and v.gold_rows == 0 and v.pred_rows == 0
    assert not one("SELECT name FROM person WHERE age > 100", "SELECT name FROM person", db, executor).correct


def test_a_failing_gold_is_reported_never_scored(db: str, executor: SQLExecutor) -> None:
    verdicts = score_execution([("SELECT nope FROM person", "SELECT name FROM person", [db]),
                                ("SELECT name FROM person", "SELECT name FROM person", [db])], executor=executor)
    assert verdicts[0].status == "gold_error" and "no such column" in (verdicts[0].gold_error or "")
    assert not verdicts[0].correct and verdicts[1].correct
    s = summarize(verdicts)
    assert s["n_gold_error"] == 1 and s["scorable"] == 1 and s["accuracy"] == 1.0 and s["accuracy_all"] == 0.5


def test_prediction_timeout_is_wrong_within_a_second_of_the_limit(db: str) -> None:
    t0 = time.monotonic()
    verdicts = score_execution([("SELECT count(*) FROM person", RUNAWAY_CTE, [db]),
                                ("SELECT count(*) FROM person", "SELECT count(*) FROM person", [db])],
                               timeout=1.0, workers=2)
    assert time.monotonic() - t0 < 2.5  # includes starting two workers
    assert verdicts[0].status == "timeout" and not verdicts[0].correct and "timed out" in (verdicts[0].pred_error or "")
    assert verdicts[1].correct


def test_a_writing_prediction_is_rejected_and_the_database_is_untouched(db: str, executor: SQLExecutor) -> None:
    before = hashlib.sha256(Path(db).read_bytes()).hexdigest()
    for pred in ("DROP TABLE person", "UPDATE person SET age = 0", "DELETE FROM person"):
        v = one("SELECT count(*) FROM person", pred, db, executor)
        assert v.status == "rejected" and not v.correct
    assert hashlib.sha256(Path(db).read_bytes()).hexdigest() == before
    assert one("SELECT count(*) FROM person", "SELECT count(*) FROM person", db, executor).correct


def test_a_failing_prediction_is_an_error(db: str, executor: SQLExecutor) -> None:
    v = one("SELECT name FROM person", "SELEC name FROM person", db, executor)
    assert v.status == "error" and "syntax error" in (v.pred_error or "")


def test_a_missing_database_is_a_gold_error_naming_the_path(tmp_path: Path, executor: SQLExecutor) -> None:
    missing = str(tmp_path / "gone.sqlite")
    v = one("SELECT 1", "SELECT 1", missing, executor)
    assert v.status == "gold_error" and missing in (v.gold_error or "")
    assert not os.path.exists(missing)


def test_prediction_must_match_on_every_database(tmp_path: Path, executor: SQLExecutor) -> None:
    a = str(make_db(tmp_path / "a.sqlite"))
    b = str(make_db(tmp_path / "b.sqlite", PEOPLE + [(6, "Fay", 50, "Rome")]))
    gold, hardcoded = "SELECT max(age) FROM person", "SELECT 44"
    assert one(gold, hardcoded, a, executor).correct
    (v,) = score_execution([(gold, hardcoded, [a, b])], executor=executor)
    assert not v.correct and v.failed_db == b
    (v,) = score_execution([(gold, "SELECT age FROM person ORDER BY age DESC LIMIT 1", [a, b])], executor=executor)
    assert v.correct


def test_row_cap_gold_too_big_is_gold_error_pred_too_big_is_wrong(db: str, executor: SQLExecutor) -> None:
    (v,) = score_execution([("SELECT name FROM person", "SELECT name FROM person", [db])], executor=executor,
                           max_rows=3)
    assert v.status == "gold_error" and "max_rows=3" in (v.gold_error or "")
    (v,) = score_execution([("SELECT name FROM person LIMIT 2", "SELECT name FROM person", [db])],
                           executor=executor, max_rows=3)
    assert v.status == "ok" and v.pred_truncated and not v.correct


def test_gold_cache_is_keyed_by_database_content(tmp_path: Path, executor: SQLExecutor) -> None:
    db = make_db(tmp_path / "x.sqlite")
    cache = tmp_path / "cache"
    item = ("SELECT count(*) FROM person", "SELECT count(*) FROM person", [str(db)])
    (v,) = score_execution([item], executor=executor, cache_dir=cache)
    assert v.correct and not v.gold_cached
    (v,) = score_execution([item], executor=executor, cache_dir=cache)
    assert v.correct and v.gold_cached
    copy = shutil.copy(db, tmp_path / "copy.sqlite")  # same bytes, other path: still a hit
    (v,) = score_execution([(item[0], item[1], [str(copy)])], executor=executor, cache_dir=cache)
    assert v.gold_cached
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO person VALUES (9, 'Zed', 70, 'Rome')")
    conn.commit()
    conn.close()
    (v,) = score_execution([(item[0], "SELECT 5", [str(db)])], executor=executor, cache_dir=cache)
    assert not v.gold_cached and not v.correct and v.gold_rows == 1  # the gold now counts 6 rows
    store = GoldCache(cache / "gold")
    key = GoldCache.key(file_sha256(db), prepare_sql(item[0]), max_rows=100_000, decode_errors="ignore")
    assert store.get_many([key])[key].rows == [(6,)]
    store.close()


def test_worker_counts_give_the_same_verdicts(db: str) -> None:
    items = [("SELECT name FROM person ORDER BY age", "SELECT name FROM person ORDER BY age DESC", [db]),
             ("SELECT name, age FROM person", "SELECT age, name FROM person", [db]),
             ("SELECT DISTINCT city FROM person", "SELECT city FROM person", [db]),
             ("SELECT count(*) FROM person", "DROP TABLE person", [db]),
             ("SELECT nope FROM person", "SELECT 1", [db])]
    runs = [[(v.correct, v.status) for v in score_execution(items, workers=w)] for w in (0, 1, 2)]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0] == [(False, "ok"), (True, "ok"), (True, "ok"), (False, "rejected"), (False, "gold_error")]


def test_unknown_semantics_is_an_error(db: str) -> None:
    with pytest.raises(ValueError, match="spider, bird"):
        score_execution([("SELECT 1", "SELECT 1", [db])], semantics="exact")
    with pytest.raises(TypeError, match="list of paths"):
        score_execution([("SELECT 1", "SELECT 1", db)])  # type: ignore[list-item]


# ------------------------------------------------------------------------------ result comparison


def _reference_equal(r1: list[tuple[Any, ...]], r2: list[tuple[Any, ...]], order_matters: bool) -> bool:
    """The test-suite definition, by brute force over every column permutation."""
    if not r1 and not r2:
        return True
    if len(r1) != len(r2) or len(r1[0]) != len(r2[0]):
        return False

    def unorder(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(sorted(row, key=lambda x: str(x) + str(type(x))))

    s1, s2 = [unorder(r) for r in r1], [unorder(r) for r in r2]
    if (s1 != s2) if order_matters else (set(s1) != set(s2)):
        return False
    for perm in itertools.permutations(range(len(r1[0]))):
        r2p = [tuple(row[i] for i in perm) for row in r2]
        if (r1 == r2p) if order_matters else (Counter(r1) == Counter(r2p)):
            return True
    return False


def test_results_equal_agrees_with_the_brute_force_definition() -> None:
    rng = random.Random(7)
    values: list[Any] = [0, 1, 1.0, 1.5, 2, "a", "b", None]
    checked = 0
    for _ in range(3000):
        ncol, nrow = rng.randint(1, 4), rng.randint(0, 5)
        r1 = [tuple(rng.choice(values) for _ in range(ncol)) for _ in range(nrow)]
        perm = list(range(ncol))
        rng.shuffle(perm)
        r2 = [tuple(row[i] for i in perm) for row in r1]
        if rng.random() < 0.5:
            rng.shuffle(r2)
        if r2 and rng.random() < 0.4:
            k = rng.randrange(len(r2))
            r2[k] = tuple(rng.choice(values) for _ in range(ncol))
        order_matters = rng.random() < 0.5
        assert results_equal(r1, r2, order_matters=order_matters) == _reference_equal(r1, r2, order_matters), (
            r1, r2, order_matters)
        checked += 1
    assert checked == 3000


def test_mixed_int_float_values_follow_upstreams_quick_check() -> None:
    # equal as multisets, but upstream's str-based row sort puts 1 and 1.0 in different places: rejected
    assert not results_equal([(1, 1.5)], [(1.0, 1.5)])
    assert results_equal([(2, "a")], [(2.0, "a")])


def _latin_square(n: int, switch: bool) -> list[tuple[int, ...]]:
    """The cyclic n x n Latin square; `switch` swaps the values of one 2 x 2 subsquare. Both squares have
    the same sorted rows and the same value multiset in every column, yet (for n = 8, checked by brute
    force over all 40,320 column permutations) no column permutation maps one onto the other."""
    square = [[(i + j) % n for j in range(n)] for i in range(n)]
    if switch:
        h = n // 2
        square[0][0], square[0][h] = square[0][h], square[0][0]
        square[h][0], square[h][h] = square[h][h], square[h][0]
    return [tuple(r) for r in square]


def test_wide_results_are_compared_exactly_and_quickly() -> None:
    """Every column is a candidate for every other one here: upstream's candidate product has 10**10
    tuples. The search must still be exact and fast."""
    t0 = time.monotonic()
    for n in (8, 10):
        a, b = _latin_square(n, False), _latin_square(n, True)
        assert not results_equal(a, b)
        rng = random.Random(n)
        perm = list(range(n))
        rng.shuffle(perm)
        shuffled = [tuple(r[i] for i in perm) for r in a]
        rng.shuffle(shuffled)
        assert results_equal(a, shuffled)
    same = [tuple([7] * 12) for _ in range(400)]
    assert results_equal(same, same[::-1], order_matters=True)
    assert time.monotonic() - t0 < 1.0


def test_bird_compares_sets_with_column_order() -> None:
    assert results_equal([(1, "a"), (1, "a")], [(1, "a")], semantics="bird")
    assert not results_equal([(1, "a")], [("a", 1)], semantics="bird")
    assert results_equal([(1,), (2,)], [(2,), (1,)], semantics="bird", order_matters=True)


# ------------------------------------------------------------------------------ real Spider dev


def _spider_dir() -> Path:
    return Path(os.environ.get("T2S_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "spider"


def _spider_items(limit: int | None = None) -> list[tuple[str, str, list[str]]]:
    root = _spider_dir()
    if not (root / "dev.json").exists():
        pytest.skip(f"Spider dev not found under {root} (set T2S_DATA to the shared data directory)")
    items = []
    for ex in json.loads((root / "dev.json").read_text()):
        path = root / "database" / ex["db_id"] / f"{ex['db_id']}.sqlite"
        if path.exists():
            items.append((ex["query"], ex["query"], [str(path)]))
    return items[:limit] if limit else items


def test_spider_dev_first_50_gold_queries_match_themselves() -> None:
    verdicts = score_execution(_spider_items(50), workers=2)
    assert [v.status for v in verdicts] == ["ok"] * 50 and all(v.correct for v in verdicts)


def test_spider_dev_all_executable_gold_queries_match_themselves(tmp_path: Path) -> None:
    """972 questions (wta_1's database is absent); takes about a second on 2 cores."""
    items = _spider_items()
    assert len(items) == 972
    verdicts = score_execution(items, workers=2, cache_dir=tmp_path)
    bad = [(g, v.status, v.gold_error or v.pred_error) for (g, _, _), v in zip(items, verdicts) if not v.correct]
    assert bad == []
    warm = score_execution(items, workers=2, cache_dir=tmp_path)
    assert all(v.correct and v.gold_cached for v in warm)


# ------------------------------------------------------------------------------ BIRD VES and Soft-F1


def test_ves_reward_bands() -> None:
    assert [ves_reward(r) for r in (0, 0.1, 0.25, 0.49, 0.5, 0.99, 1.0, 1.99, 2.0, 9.0)] == [
        0.0, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0, 1.25, 1.25]


def test_time_ratios_drop_outliers_like_bird() -> None:
    assert clean_abnormal([1.0] * 99 + [1000.0]) == [1.0] * 99
    assert mean_time_ratio([2.0] * 99 + [2000.0], [1.0] * 100) == pytest.approx(2.0)
    assert mean_time_ratio([1.0], [2.0]) == pytest.approx(0.5)  # upstream divides by zero here


def test_soft_f1_matches_bird_mini_dev() -> None:
    assert soft_f1([], []) == 1.0
    assert soft_f1([(1, "a"), (2, "b")], [(1, "a"), (2, "c")]) == pytest.approx(0.75)
    assert soft_f1([(1,), (2,)], [(1,)]) == pytest.approx(2 / 3)
    assert soft_f1([(1,), (1,), (2,)], [(1,), (2,)]) == 1.0  # duplicates dropped
    assert soft_f1([(2,), (1,)], [(1,), (2,)]) == 0.0  # rows are paired by position
    assert soft_f1([], [(1,)]) == 0.0


@pytest.fixture()
def timing_db(tmp_path: Path) -> str:
    path = make_db(tmp_path / "timing.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE nums (x INTEGER)")
    conn.executemany("INSERT INTO nums VALUES (?)", [(i,) for i in range(1500)])
    conn.commit()
    conn.close()
    return str(path)


def test_score_ves_rewards_correct_predictions_by_relative_speed(timing_db: str) -> None:
    fast = "SELECT count(*) FROM person"
    slow = "SELECT count(*) FROM person WHERE (SELECT count(*) FROM nums a, nums b WHERE a.x < b.x) >= 0"
    results = score_ves([(fast, fast, timing_db), (fast, slow, timing_db), (slow, fast, timing_db),
                         (fast, "SELECT 1", timing_db), (fast, "SELECT nope", timing_db),
                         ("SELECT nope", fast, timing_db)], iterations=3, timeout=10.0)
    same, slower, faster, wrong, error, gold_error = results
    # the same query against itself: its time ratio is machine noise (a loaded 2-core machine gave 0.5), so only the
    # verdict and that the reward is one of VES's buckets are asserted, never a timing
    assert same.correct and same.reward in (0.25, 0.5, 0.75, 1.0, 1.25)
    assert slower.correct and slower.reward == 0.25 and slower.time_ratio < 0.25
    assert faster.correct and faster.reward == 1.25 and faster.time_ratio > 2
    assert (wrong.correct, wrong.status, wrong.reward) == (False, "ok", 0.0)
    assert (error.status, error.reward) == ("error", 0.0)
    assert gold_error.status == "gold_error"
    expected = 100 * (math.sqrt(same.reward) + math.sqrt(0.25) + math.sqrt(1.25)) / 5
    assert ves(results) == pytest.approx(expected)


def test_score_soft_f1(db: str) -> None:
    scores = score_soft_f1([("SELECT id, name FROM person ORDER BY id", "SELECT id, city FROM person ORDER BY id", db),
                            ("SELECT 1", "SELECT nope", db), ("SELECT nope", "SELECT 1", db)], workers=1)
    assert scores[0] == pytest.approx(0.5) and scores[1] == 0.0 and scores[2] is None
