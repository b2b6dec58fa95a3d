"""The demo benchmark: databases build from the shipped scripts, once and atomically; every gold query answers."""

from __future__ import annotations

import json
import shutil
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from t2s.data.demo import DEMO_DIR, DemoDataset, build_database, build_demo, build_stamp, demo_db_ids
from t2s.db.introspect import connect_readonly

QUESTIONS = json.loads((DEMO_DIR / "questions.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_dir = tmp_path_factory.mktemp("demo")
    build_demo(build_dir)
    return build_dir


def test_sources() -> None:
    assert demo_db_ids() == ["library", "school", "shop"]
    assert len(QUESTIONS) >= 45
    assert all(set(q) == {"db_id", "question", "query"} for q in QUESTIONS)
    assert len({q["question"] for q in QUESTIONS}) == len(QUESTIONS)
    assert {q["db_id"] for q in QUESTIONS} == set(demo_db_ids())
    for db_id in demo_db_ids():  # each database gets a fair share
        assert sum(q["db_id"] == db_id for q in QUESTIONS) >= 15


def test_loads_like_spider(built: Path) -> None:
    ds = DemoDataset(build_dir=str(built)).load()
    assert ds.name == "demo" and ds.skipped == [] and len(ds.examples) == len(QUESTIONS)
    assert [e.qid for e in ds.examples] == [f"demo_{i}" for i in range(len(QUESTIONS))]
    e = ds.examples[0]
    assert e.db_path == str(built / e.db_id / f"{e.db_id}.sqlite") and e.gold_sql == QUESTIONS[0]["query"]
    assert [x.qid for x in DemoDataset(build_dir=str(built), sample=10, seed=4).load().examples] == \
           [x.qid for x in DemoDataset(build_dir=str(built), sample=10, seed=4).load().examples]


def test_every_gold_query_returns_rows(built: Path) -> None:
    for i, q in enumerate(QUESTIONS):
        conn = connect_readonly(built / q["db_id"] / f"{q['db_id']}.sqlite")
        rows = conn.execute(q["query"]).fetchall()
        assert rows and any(v is not None for v in rows[0]), f"demo_{i}: {q['question']} -> {rows}"


def test_databases_are_consistent_and_realistic(built: Path) -> None:
    for db_id in demo_db_ids():
        conn = connect_readonly(built / db_id / f"{db_id}.sqlite")
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert len(tables) == 4
        nulls = 0
        for t in tables:
            assert conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] >= 10, (db_id, t)
            for col in [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')]:
                nulls += conn.execute(f'SELECT count(*) FROM "{t}" WHERE "{col}" IS NULL').fetchone()[0]
        assert nulls > 0, f"{db_id} has no NULLs"
        assert conn.execute("PRAGMA foreign_key_list(" + tables[-1] + ")").fetchall(), f"{db_id}: no foreign keys"


def test_questions_cover_spider_query_shapes() -> None:
    trees = [sqlglot.parse_one(q["query"], read="sqlite") for q in QUESTIONS]

    def count(pred: object) -> int:
        return sum(1 for t in trees if pred(t))  # type: ignore[operator]

    assert count(lambda t: isinstance(t, exp.Select) and not t.args.get("joins") and not t.find(exp.Subquery, exp.In)
                 and not t.args.get("group")) >= 10  # easy single-table
    assert count(lambda t: t.find(exp.Join)) >= 15
    assert count(lambda t: t.find(exp.Group)) >= 12
    assert count(lambda t: t.find(exp.Having)) >= 5
    assert count(lambda t: t.find(exp.Order) and t.find(exp.Limit)) >= 5
    assert count(lambda t: any(s is not t for s in t.find_all(exp.Select))) >= 8  # nested or set operation
    assert count(lambda t: isinstance(t, exp.Intersect)) >= 2
    assert count(lambda t: isinstance(t, exp.Except)) >= 1
    assert count(lambda t: isinstance(t, exp.Union)) >= 1


def test_rebuild_is_idempotent_and_follows_the_script(tmp_path: Path) -> None:
    script = tmp_path / "tiny.sql"
    script.write_text("CREATE TABLE t (x INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
    target = tmp_path / "out" / "tiny" / "tiny.sqlite"
    assert build_database(script, target) is True
    before = (target.stat().st_mtime_ns, target.read_bytes())
    assert build_database(script, target) is False
    assert (target.stat().st_mtime_ns, target.read_bytes()) == before
    script.write_text("CREATE TABLE t (x INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
    assert build_database(script, target) is True
    conn = sqlite3.connect(target)
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    assert conn.execute("PRAGMA user_version").fetchone()[0] == build_stamp(script)
    conn.close()
    target.write_bytes(b"garbage" * 100)  # a damaged file is rebuilt
    assert build_database(script, target) is True
    assert [p.name for p in target.parent.iterdir()] == ["tiny.sqlite"]  # no temporary files left

    script.write_text("CREATE TABLE t (x INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (1);")
    with pytest.raises(RuntimeError, match="tiny.sql"):
        build_database(script, target)
    assert [p.name for p in target.parent.iterdir()] == ["tiny.sqlite"]


def test_build_demo_twice_keeps_files(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    stamps = {p: p.stat().st_mtime_ns for p in copy.rglob("*.sqlite")}
    build_demo(copy)
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*.sqlite")} == stamps


def test_concurrent_builds_are_safe(tmp_path: Path) -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(build_demo, [tmp_path] * 4))
    assert all(r == results[0] for r in results)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        f"{d}.sqlite" for d in demo_db_ids())
    ds = DemoDataset(build_dir=str(tmp_path)).load()
    assert len(ds.examples) == len(QUESTIONS)
