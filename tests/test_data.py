"""Dataset loaders: Spider, BIRD, JSONL on real and hand-made files; selection (missing databases, sample, limit)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import requires_bird, requires_spider
from hydra.utils import instantiate
from omegaconf import OmegaConf

from t2s.data.base import LoadedDataset, MissingDatabaseError
from t2s.data.bird import BirdDataset
from t2s.data.jsonl import JsonlDataset
from t2s.data.spider import SpiderDataset

PROJECT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("T2S_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def make_db(path: Path, sql: str = "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.close()
    return path


# ---------------------------------------------------------------- Spider


@pytest.fixture(scope="module")
def spider_dev() -> LoadedDataset:
    return SpiderDataset(root=str(DATA / "spider"), name="spider_dev").load()


@requires_spider
def test_spider_dev_counts_and_skips(spider_dev: LoadedDataset) -> None:
    assert len(spider_dev.examples) + len(spider_dev.skipped) == 1034
    assert len(spider_dev.examples) == 972
    assert len(spider_dev.skipped) == 62
    assert {s["db_id"] for s in spider_dev.skipped} == {"wta_1"}
    s = spider_dev.skipped[0]
    assert set(s) == {"qid", "db_id", "reason", "path"}
    assert s["path"].endswith("database/wta_1/wta_1.sqlite") and s["reason"] == "missing database"
    assert "wta_1" not in spider_dev.db_ids() and len(spider_dev.db_ids()) == 19
    assert spider_dev.tables_path is not None and spider_dev.tables_path.endswith("tables.json")


@requires_spider
def test_spider_dev_examples_are_file_order_with_stable_qids(spider_dev: LoadedDataset) -> None:
    raw = json.loads((DATA / "spider" / "dev.json").read_text())
    first = spider_dev.examples[0]
    assert first.qid == "dev_0"
    assert (first.question, first.db_id, first.gold_sql) == (raw[0]["question"], raw[0]["db_id"], raw[0]["query"])
    assert Path(first.db_path).is_file() and Path(first.db_path).is_absolute()
    assert first.meta == {"index": 0} and first.evidence == "" and first.difficulty is None
    all_ids = [e.qid for e in spider_dev.examples] + [s["qid"] for s in spider_dev.skipped]
    assert sorted(all_ids, key=lambda q: int(q.split("_")[1])) == [f"dev_{i}" for i in range(1034)]
    for e in spider_dev.examples:  # every qid points at the same question in the file
        assert raw[int(e.qid.split("_")[1])]["question"] == e.question


@requires_spider
def test_spider_error_mode_names_missing_file_and_fix() -> None:
    with pytest.raises(MissingDatabaseError) as err:
        SpiderDataset(root=str(DATA / "spider"), on_missing_db="error").load()
    msg = str(err.value)
    assert "wta_1.sqlite" in msg and "62" in msg and "on_missing_db=skip" in msg


@requires_spider
def test_spider_skip_logs_how_many_and_which(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="t2s.data.base"):
        SpiderDataset(root=str(DATA / "spider"), name="spider_dev").load()
    text = caplog.text
    assert "skipped 62 of 1034" in text and "wta_1" in text and "wta_1.sqlite" in text


@requires_spider
def test_limit_sample_are_deterministic_and_nested() -> None:
    root = str(DATA / "spider")
    limited = SpiderDataset(root=root, limit=5).load()
    assert [e.qid for e in limited.examples] == [f"dev_{i}" for i in range(5)]
    a = SpiderDataset(root=root, sample=50, seed=1).load().examples
    b = SpiderDataset(root=root, sample=50, seed=1).load().examples
    c = SpiderDataset(root=root, sample=50, seed=2).load().examples
    assert [e.qid for e in a] == [e.qid for e in b] and len(a) == 50
    assert [e.qid for e in a] != [e.qid for e in c]
    order = [int(e.qid.split("_")[1]) for e in a]
    assert order == sorted(order)  # kept in file order
    assert all(e.db_id != "wta_1" for e in a)  # sampled among runnable questions
    bigger = {e.qid for e in SpiderDataset(root=root, sample=100, seed=1).load().examples}
    assert {e.qid for e in a} <= bigger
    both = SpiderDataset(root=root, sample=50, seed=1, limit=10).load().examples
    assert [e.qid for e in both] == [e.qid for e in a[:10]]
    assert len(SpiderDataset(root=root, sample=5000).load().examples) == 972
    assert SpiderDataset(root=root, limit=0).load().examples == []


@requires_spider
def test_spider_train() -> None:
    train = SpiderDataset(root=str(DATA / "spider"), questions="train_spider.json", split="train").load()
    assert len(train.examples) + len(train.skipped) == 7000
    assert {s["db_id"] for s in train.skipped} == {"baseball_1", "soccer_1"}
    assert train.examples[0].qid == "train_0" and train.examples[0].gold_sql


def test_spider_test_suite_layout_and_missing_questions(tmp_path: Path) -> None:
    make_db(tmp_path / "database" / "a" / "a.sqlite")
    make_db(tmp_path / "database" / "a" / "a_alt1.sqlite")
    make_db(tmp_path / "database" / "a" / "0_other.sqlite")
    make_db(tmp_path / "database" / "b" / "b.sqlite")
    (tmp_path / "dev.json").write_text(json.dumps([
        {"db_id": "a", "question": "q0", "query": "SELECT 1"},
        {"db_id": "b", "question": "q1", "query": "SELECT 2"},
        {"db_id": "c", "question": "q2"},
    ]))
    ds = SpiderDataset(root=str(tmp_path)).load()
    a, b = ds.examples
    main = str(tmp_path / "database" / "a" / "a.sqlite")
    assert a.db_path == main
    assert a.meta["db_paths"][0] == main and len(a.meta["db_paths"]) == 3
    assert b.meta == {"index": 1} and b.db_path.endswith("b/b.sqlite")
    assert ds.skipped == [{"qid": "dev_2", "db_id": "c", "reason": "missing database",
                           "path": str(tmp_path / "database" / "c" / "c.sqlite")}]
    assert ds.tables_path is None

    with pytest.raises(FileNotFoundError) as err:
        SpiderDataset(root=str(tmp_path / "nowhere")).load()
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "dev.json") in msg and "T2S_DATA" in msg and "paths.data_root" in msg


def test_spider_bad_record_names_file_index_and_key(tmp_path: Path) -> None:
    (tmp_path / "dev.json").write_text(json.dumps([{"db_id": "a", "question": "q"}, {"db_id": "a", "qustion": "q"}]))
    with pytest.raises(ValueError, match=r"dev\.json, question 1: key 'question' is missing"):
        SpiderDataset(root=str(tmp_path)).load()
    (tmp_path / "dev.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SpiderDataset(root=str(tmp_path)).load()


def test_constructor_checks_options() -> None:
    with pytest.raises(ValueError, match="on_missing_db"):
        SpiderDataset(root=".", on_missing_db="ignore")
    with pytest.raises(ValueError, match="dataset.limit"):
        SpiderDataset(root=".", limit=-1)
    with pytest.raises(ValueError, match="dataset.sample"):
        BirdDataset(root=".", sample=-3)


# ---------------------------------------------------------------- BIRD

_SQLITE_TYPES = {"text": "TEXT", "integer": "INTEGER", "real": "REAL", "date": "DATE", "datetime": "DATETIME"}


def build_bird_db(tables_json: Path, db_id: str, target: Path) -> None:
    """A tiny database with `db_id`'s real BIRD schema (from dev_tables.json) and a few rows."""
    spec = next(t for t in json.loads(tables_json.read_text()) if t["db_id"] == db_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(target)
    for ti, table in enumerate(spec["table_names_original"]):
        cols = [(c, _SQLITE_TYPES.get(t, "TEXT"))
                for (i, c), t in zip(spec["column_names_original"], spec["column_types"]) if i == ti]
        conn.execute(f'CREATE TABLE "{table}" ({", ".join(f""""{c}" {t}""" for c, t in cols)})')
    conn.execute('INSERT INTO frpm ("CDSCode", "County Name", "Free Meal Count (K-12)", "Enrollment (K-12)") '
                 "VALUES ('01', 'Alameda', 300, 1000), ('02', 'Alameda', 900, 1000), ('03', 'Fresno', 10, 20)")
    conn.commit()
    conn.close()


@requires_bird
def test_bird_dev_without_databases_skips_all_with_count(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="t2s.data.base"):
        ds = BirdDataset(root=str(DATA / "bird"), name="bird_dev").load()
    assert ds.examples == [] and len(ds.skipped) == 1534
    assert "skipped 1534 of 1534" in caplog.text and "No question is left" in caplog.text
    assert ds.skipped[0]["path"].endswith("dev_databases/california_schools/california_schools.sqlite")
    assert ds.tables_path is not None and ds.tables_path.endswith("dev_tables.json")
    with pytest.raises(MissingDatabaseError, match="california_schools.sqlite"):
        BirdDataset(root=str(DATA / "bird"), on_missing_db="error").load()


@requires_bird
def test_bird_dev_with_one_database_built_here(tmp_path: Path) -> None:
    build_bird_db(DATA / "bird" / "dev_tables.json", "california_schools",
                  tmp_path / "dev_databases" / "california_schools" / "california_schools.sqlite")
    ds = BirdDataset(root=str(tmp_path), questions=str(DATA / "bird" / "dev.json"),
                     tables=str(DATA / "bird" / "dev_tables.json")).load()
    raw = json.loads((DATA / "bird" / "dev.json").read_text())
    n_cs = sum(r["db_id"] == "california_schools" for r in raw)
    assert len(ds.examples) == n_cs == 89 and len(ds.skipped) == 1534 - n_cs
    first = ds.examples[0]
    assert first.qid == str(raw[0]["question_id"]) == "0"
    assert first.evidence == raw[0]["evidence"] and first.evidence
    assert first.difficulty == "simple" and first.gold_sql == raw[0]["SQL"]
    assert {e.difficulty for e in ds.examples} == {"simple", "moderate", "challenging"}
    rows = sqlite3.connect(first.db_path).execute(first.gold_sql).fetchall()
    assert rows == [(0.9,)]  # the highest free-meal rate in Alameda among the rows built above


@requires_bird
def test_bird_minidev_ids_are_question_ids(tmp_path: Path) -> None:
    ds = BirdDataset(root=str(DATA / "bird"), questions="mini_dev_sqlite.json").load()
    raw = json.loads((DATA / "bird" / "mini_dev_sqlite.json").read_text())
    assert len(ds.skipped) == 500 == len(raw)
    assert [s["qid"] for s in ds.skipped] == [str(r["question_id"]) for r in raw]


def test_bird_file_without_question_ids_uses_split_index(tmp_path: Path) -> None:
    make_db(tmp_path / "train_databases" / "d" / "d.sqlite")
    (tmp_path / "train.json").write_text(json.dumps([{"db_id": "d", "question": "q", "SQL": "SELECT 1"}] * 2))
    ds = BirdDataset(root=str(tmp_path), questions="train.json", db_dir="train_databases").load()
    assert [e.qid for e in ds.examples] == ["train_0", "train_1"]
    assert ds.examples[0].evidence == "" and ds.examples[0].difficulty is None
    (tmp_path / "train.json").write_text(json.dumps([{"question_id": 1, "db_id": "d", "question": "q"},
                                                     {"db_id": "d", "question": "q"}]))
    with pytest.raises(ValueError, match="question 1: key 'question_id' is missing"):
        BirdDataset(root=str(tmp_path), questions="train.json", db_dir="train_databases").load()
    (tmp_path / "train.json").write_text(json.dumps([{"question_id": 7, "db_id": "d", "question": "q"}] * 2))
    with pytest.raises(ValueError, match=r"'7' appears twice \(question 0 and question 1\)"):
        BirdDataset(root=str(tmp_path), questions="train.json", db_dir="train_databases").load()


# ---------------------------------------------------------------- JSONL


def write_jsonl(path: Path, lines: list[str | dict]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_jsonl_happy_path(tmp_path: Path) -> None:
    dbs = tmp_path / "dbs"
    make_db(dbs / "nested" / "nested.sqlite")
    make_db(dbs / "flat.sqlite")
    make_db(tmp_path / "elsewhere" / "mine.db")
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"id": "a1", "question": "How many?", "db_id": "nested", "sql": "SELECT count(*) FROM t"},
        "",
        {"id": 2, "question": "Flat?", "db_id": "flat", "evidence": "x means y", "difficulty": "simple",
         "meta": {"source": "me"}},
        {"id": "c", "question": "Explicit?", "db_id": "mine", "db_path": "elsewhere/mine.db", "sql": None},
        {"id": "d", "question": "No database", "db_id": "ghost"},
    ])
    ds = JsonlDataset(path=str(path), db_dir=str(dbs), name="mine").load()
    a, b, c = ds.examples
    assert (a.qid, a.db_path, a.gold_sql) == ("a1", str(dbs / "nested" / "nested.sqlite"), "SELECT count(*) FROM t")
    assert (b.qid, b.db_path, b.evidence, b.difficulty, b.gold_sql) == ("2", str(dbs / "flat.sqlite"), "x means y",
                                                                        "simple", None)
    assert b.meta == {"source": "me", "index": 1}
    assert c.db_path == str(tmp_path / "elsewhere" / "mine.db") and c.gold_sql is None
    assert ds.name == "mine" and ds.skipped[0]["qid"] == "d" and ds.tables_path is None
    with pytest.raises(MissingDatabaseError, match="ghost"):
        JsonlDataset(path=str(path), db_dir=str(dbs), on_missing_db="error").load()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "x", "question": "q", "db_id": "d"', r"line 2: invalid JSON"),
        ('["not", "an", "object"]', r"line 2: expected a JSON object"),
        ('{"question": "q", "db_id": "d"}', r"line 2: key 'id' is missing"),
        ('{"id": true, "question": "q", "db_id": "d"}', r"line 2: key 'id' must be"),
        ('{"id": "x", "db_id": "d"}', r"line 2: key 'question' is missing"),
        ('{"id": "x", "question": "q", "db_id": ""}', r"line 2: key 'db_id' must be a non-empty string"),
        ('{"id": "x", "question": "q", "db_id": "d", "gold": "SELECT 1"}', r"line 2: unknown key 'gold'"),
        ('{"id": "x", "question": "q", "db_id": "d", "sql": 5}', r"line 2: key 'sql' must be"),
        ('{"id": "x", "question": "q", "db_id": "d", "meta": []}', r"line 2: key 'meta' must be an object"),
        ('{"id": "first", "question": "q", "db_id": "d"}', r"'first' appears twice \(line 1 and line 2\)"),
    ],
)
def test_jsonl_errors_name_file_line_and_key(tmp_path: Path, line: str, expected: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"id": "first", "question": "q", "db_id": "d"}, line])
    with pytest.raises(ValueError, match=expected) as err:
        JsonlDataset(path=str(path), db_dir=str(tmp_path)).load()
    assert str(path) in str(err.value)


def test_a_file_that_is_not_sqlite_is_skipped_under_its_own_reason(tmp_path: Path) -> None:
    dbs = tmp_path / "dbs"
    make_db(dbs / "good.sqlite")
    (dbs / "text.sqlite").write_text("id,name\n1,Ann\n")  # a CSV saved under the database's name
    (dbs / "tiny.sqlite").write_bytes(b"SQLite")  # shorter than the header
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"id": "g", "question": "?", "db_id": "good", "sql": "SELECT 1"},
        {"id": "t", "question": "?", "db_id": "text", "sql": "SELECT 1"},
        {"id": "s", "question": "?", "db_id": "tiny", "sql": "SELECT 1"},
        {"id": "p", "question": "?", "db_id": "passwd", "db_path": str(passwd), "sql": "SELECT 1"},
        {"id": "m", "question": "?", "db_id": "ghost", "sql": "SELECT 1"},
    ])
    ds = JsonlDataset(path=str(path), db_dir=str(dbs), name="mine").load()
    assert [e.qid for e in ds.examples] == ["g"]
    assert {s["qid"]: s["reason"] for s in ds.skipped} == {"t": "not a SQLite database", "s": "not a SQLite database",
                                                           "p": "not a SQLite database", "m": "missing database"}
    with pytest.raises(MissingDatabaseError, match=r"text.sqlite \(1 questions, db_id text: not a SQLite database\)"):
        JsonlDataset(path=str(path), db_dir=str(dbs), name="mine", on_missing_db="error").load()


def test_jsonl_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="T2S_DATA") as err:
        JsonlDataset(path=str(tmp_path / "none.jsonl"), db_dir=str(tmp_path)).load()
    assert "none.jsonl" in str(err.value)


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("path", sorted((PROJECT / "conf" / "dataset").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_dataset_config_builds(path: Path, tmp_path: Path) -> None:
    node = OmegaConf.load(path)
    for key in ("_target_", "limit", "sample", "seed", "on_missing_db"):
        assert key in node, f"{path.name} lacks {key}"
    #: fixed samples pin their own size and seed (they must not follow the run's seed)
    fixed = {"spider_dev_sample100": (100, 100)}
    assert node.limit is None and node.on_missing_db == "skip"
    assert (node.sample, None if path.stem not in fixed else node.seed) == fixed.get(path.stem, (None, None))
    assert path.read_text().startswith("#"), f"{path.name} needs a comment header"
    root = OmegaConf.create({"seed": 3, "paths": {"data_root": str(DATA), "cache_dir": str(tmp_path)}, "dataset": node})
    ds = instantiate(root.dataset)
    assert ds.seed == (fixed[path.stem][1] if path.stem in fixed else 3) and ds.name == path.stem
    if path.stem == "demo" or (path.stem.startswith("spider") and (DATA / "spider").is_dir()):
        loaded = ds.load()
        assert loaded.examples and loaded.name == path.stem
        if path.stem in fixed:
            assert len(loaded.examples) == 100 and loaded.examples[0].qid == "dev_1"
