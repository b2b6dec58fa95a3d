"""Perturbations made from gold SQL, and the verdict the official semantics give each of them."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from t2s.db.execute import SQLExecutor
from t2s.eval.execution import score_execution
from t2s.eval.perturb import perturb, perturb_file

PEOPLE = [(1, "Ann", 31, "Paris"), (2, "Bob", 25, "Lima"), (3, "Cid", 44, "Paris"), (4, "Dee", 19, "Oslo"),
          (5, "Eve", 38, "Paris")]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("perturb") / "people.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, city TEXT)")
    conn.executemany("INSERT INTO person VALUES (?, ?, ?, ?)", PEOPLE)
    conn.commit()
    conn.close()
    return str(path)


@pytest.fixture(scope="module")
def executor() -> Iterator[SQLExecutor]:
    with SQLExecutor(timeout=5.0, workers=1, decode_errors="ignore") as ex:
        yield ex


# (kind, gold, correct under spider, correct under bird)
CASES = [
    ("drop_distinct", "SELECT DISTINCT city FROM person", True, True),
    ("flip_order", "SELECT name FROM person ORDER BY age", False, True),
    ("flip_order", "SELECT name FROM person WHERE age > 40 ORDER BY age", True, True),  # one row
    ("flip_order", "SELECT name FROM person ORDER BY age LIMIT 1", False, False),
    ("flip_order", "SELECT city, count(*) FROM person GROUP BY city ORDER BY city", False, True),
    ("change_limit", "SELECT name FROM person ORDER BY age LIMIT 2", False, False),
    ("change_limit", "SELECT name FROM person ORDER BY age LIMIT 10", True, True),  # only 5 rows
    ("swap_aggregate", "SELECT max(age) FROM person", False, False),
    ("swap_aggregate", "SELECT max(age) FROM person WHERE city = 'Lima'", True, True),  # one value
    ("swap_aggregate", "SELECT city, sum(age) FROM person GROUP BY city", False, False),
    ("drop_where_condition", "SELECT name FROM person WHERE city = 'Paris' AND age > 35", False, False),
    ("drop_where_condition", "SELECT name FROM person WHERE age > 0", True, True),
    ("permute_select", "SELECT name, age FROM person", True, False),
    ("permute_select", "SELECT name, age, city FROM person ORDER BY age DESC", True, False),
    ("permute_select", ("SELECT name, city FROM person WHERE age < 30 UNION SELECT name, city FROM person "
                        "WHERE city = 'Oslo'"), True, False),
]


@pytest.mark.parametrize("kind, gold, spider_ok, bird_ok", CASES)
def test_each_perturbation_gets_the_official_verdict(db: str, executor: SQLExecutor, kind: str, gold: str,
                                                     spider_ok: bool, bird_ok: bool) -> None:
    pred = perturb(gold, kind)
    assert pred is not None and pred.lower() != gold.lower()
    (spider,) = score_execution([(gold, pred, [db])], executor=executor)
    (bird,) = score_execution([(gold, pred, [db])], executor=executor, semantics="bird")
    assert spider.status == bird.status == "ok"
    assert (spider.correct, bird.correct) == (spider_ok, bird_ok), pred


def test_drop_distinct_is_wrong_when_distinct_is_kept(db: str, executor: SQLExecutor) -> None:
    gold = "SELECT DISTINCT city FROM person"
    (v,) = score_execution([(gold, perturb(gold, "drop_distinct") or "", [db])], executor=executor,
                           keep_distinct=True)
    assert not v.correct
    assert perturb("SELECT count(DISTINCT city) FROM person", "drop_distinct") == "SELECT COUNT(city) FROM person"


def test_the_rewrites_themselves() -> None:
    assert perturb("SELECT a FROM t ORDER BY a DESC, b", "flip_order") == "SELECT a FROM t ORDER BY a ASC, b DESC"
    assert perturb("SELECT a FROM t LIMIT 3", "change_limit") == "SELECT a FROM t LIMIT 4"
    assert perturb("SELECT min(a), avg(b) FROM t", "swap_aggregate") == "SELECT MAX(a), AVG(b) FROM t"
    assert perturb("SELECT a FROM t WHERE x = 1 AND y = 2 AND z = 3", "drop_where_condition") == (
        "SELECT a FROM t WHERE x = 1 AND y = 2")
    assert perturb("SELECT a, b, c FROM t", "permute_select") == "SELECT b, c, a FROM t"


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("SELECT a FROM t", "drop_distinct"),
        ("SELECT a FROM t", "flip_order"),
        ("SELECT a FROM t", "change_limit"),
        ("SELECT count(*) FROM t", "swap_aggregate"),
        ("SELECT a FROM t", "drop_where_condition"),
        ("SELECT a FROM t", "permute_select"),
        ("SELECT * FROM t", "permute_select"),
        ("SELECT a, b FROM t ORDER BY 1", "permute_select"),
        ("SELECT a, b FROM t UNION SELECT c FROM u", "permute_select"),
        ("SELEC a FROM", "flip_order"),
    ],
)
def test_none_when_the_kind_does_not_apply(sql: str, kind: str) -> None:
    assert perturb(sql, kind) is None


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="drop_distinct"):
        perturb("SELECT 1", "shuffle")


def test_perturb_file_writes_one_seeded_record_per_line(tmp_path: Path) -> None:
    lines = ["SELECT DISTINCT a FROM t\tdb1", "SELECT a, b FROM t ORDER BY a LIMIT 2\tdb2", "SELECT 1\tdb3"]
    out = tmp_path / "p" / "pred.jsonl"
    records = perturb_file(lines, out, seed=3)
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    assert [r["index"] for r in records] == [0, 1, 2] and [r["db_id"] for r in records] == ["db1", "db2", "db3"]
    assert records[0]["kind"] == "drop_distinct" and records[2] == {"index": 2, "db_id": "db3", "kind": "identity",
                                                                    "sql": "SELECT 1"}
    assert records[1]["kind"] in {"flip_order", "change_limit", "permute_select"}
    assert perturb_file(lines, tmp_path / "again.jsonl", seed=3) == records
    kinds = {perturb_file(lines, tmp_path / f"s{s}.jsonl", seed=s)[1]["kind"] for s in range(20)}
    assert kinds == {"flip_order", "change_limit", "permute_select"}


def test_permute_select_stays_correct_on_all_of_spider_dev() -> None:
    root = Path(os.environ.get("T2S_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "spider"
    if not (root / "dev_gold.sql").exists():
        pytest.skip(f"Spider dev not found under {root} (set T2S_DATA to the shared data directory)")
    items = []
    for line in (root / "dev_gold.sql").read_text().splitlines():
        gold, db_id = line.split("\t")
        path = root / "database" / db_id / f"{db_id}.sqlite"
        pred = perturb(gold, "permute_select")
        if path.exists() and pred is not None:
            items.append((gold, pred, [str(path)]))
    assert len(items) > 300
    verdicts = score_execution(items, workers=2)
    assert [(g, p) for (g, p, _), v in zip(items, verdicts) if not v.correct] == []
    assert sum(v.correct for v in score_execution(items, workers=2, semantics="bird")) < len(items) // 10
