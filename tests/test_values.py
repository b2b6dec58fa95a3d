"""The value index (t2s.context.values), the `lsh` value retriever and gold-literal extraction (t2s.sql.literals)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compose_config, requires_spider

from t2s.artifacts import library_version
from t2s.context.values import ValueIndexArtifact, parse_keywords, question_ngrams, quoted_spans, shingles
from t2s.db.introspect import introspect
from t2s.run.pipeline import build_stage
from t2s.run.prepare import prepare
from t2s.run.runner import make_env
from t2s.sql.literals import string_literals
from t2s.testing import data_root, stage_contract
from t2s.types import Example, Task

CITIES = ["Paris", "Lyon", "New York", "Newark", "San Francisco", "Saint-Étienne", "York", "Amsterdam"]
GENRES = ["Science Fiction", "Jazz", "Hip Hop", "Classical"]


def make_db(path: Path) -> Path:
    """Places and artists; many filler values so the LSH has to discriminate."""
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE city (id INTEGER PRIMARY KEY, name TEXT, country TEXT);"
                       "CREATE TABLE artist (id INTEGER PRIMARY KEY, name TEXT, genre TEXT, city_id INTEGER);")
    for i, c in enumerate(CITIES):
        conn.execute("INSERT INTO city VALUES (?, ?, ?)", (i, c, "USA" if "York" in c or "San" in c else "France"))
    for i in range(300):
        conn.execute("INSERT INTO artist VALUES (?, ?, ?, ?)",
                     (i, f"Artist {i:03d} Band", GENRES[i % len(GENRES)], i % len(CITIES)))
    conn.execute("INSERT INTO artist VALUES (1000, 'Miles Davis', 'Jazz', 2)")
    conn.commit()
    conn.close()
    return path


def ex(db: Path, qid: str, question: str, evidence: str = "") -> Example:
    return Example(qid=qid, question=question, db_id="music", db_path=str(db), evidence=evidence, gold_sql="SELECT 1")


@pytest.fixture
def world(tmp_path: Path) -> Any:
    db = make_db(tmp_path / "music.sqlite")
    examples = [
        ex(db, "q0", "Which artists come from Pariss?"),                      # typo
        ex(db, "q1", "How many jazz artists are based in new york?"),          # case, two words
        ex(db, "q2", "List the science-fiction artists."),                     # punctuation variant
        ex(db, "q3", 'Show the genre of "Miles Davis".'),                     # quoted
        ex(db, "q4", "How many cities are there?"),                           # nothing to find
        ex(db, "q5", "Which city is it?", evidence="the city refers to name = 'San Francisco'"),
    ]
    return db, examples


def run_lsh(tmp_path: Path, examples: list[Example], overrides: list[str] = ()) -> list[Task]:
    cfg = compose_config(["value_retriever=lsh", *overrides], cache_dir=tmp_path / "cache")
    env = make_env(cfg, examples, tmp_path / "run")
    try:
        stage = build_stage("value_retriever", cfg.value_retriever, "lsh")
        result = stage_contract(stage, env, examples)
        return result.tasks
    finally:
        env.close()


def found(task: Task) -> set[tuple[str, str, str]]:
    return {(v.table, v.column, v.value) for v in task.values}


def test_lsh_retrieves_misspelled_and_variant_values_with_their_column(tmp_path: Path, world: Any) -> None:
    _, examples = world
    tasks = run_lsh(tmp_path, examples)
    assert ("city", "name", "Paris") in found(tasks[0])
    assert {("city", "name", "New York"), ("artist", "genre", "Jazz")} <= found(tasks[1])
    assert ("artist", "genre", "Science Fiction") in found(tasks[2])
    assert ("artist", "name", "Miles Davis") in found(tasks[3])
    assert not any(v.value.startswith("Artist") for t in tasks for v in t.values), "filler must not match"
    assert ("city", "name", "San Francisco") in found(tasks[5])
    for t in tasks:
        assert len(t.values) <= 10 and all(0.8 <= v.score <= 1.0 and v.origin == "value_retriever/lsh"
                                           for v in t.values)
        assert [v.score for v in t.values] == sorted((v.score for v in t.values), reverse=True)
    # a stricter threshold drops the typo match but keeps exact ones
    strict = run_lsh(tmp_path, examples[:2], ["value_retriever.min_score=0.99"])
    assert ("city", "name", "Paris") not in found(strict[0]) and ("city", "name", "New York") in found(strict[1])


def test_llm_keywords_and_embedding_rerank(tmp_path: Path, world: Any) -> None:
    _, examples = world
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{"match": "Pariss", "reply": "- Pariss\n- artists"},
                                               {"match": "jazz", "reply": "jazz, new york"}], "default": "none"}))
    tasks = run_lsh(tmp_path, examples[:3], ["value_retriever.keywords=llm", "llm=scripted", f"llm.path={rules}"])
    assert ("city", "name", "Paris") in found(tasks[0]) and ("artist", "genre", "Jazz") in found(tasks[1])
    assert tasks[2].values == []  # the model named no literal; n-grams are off in this mode
    assert all(t.trace[0].llm_calls == 1 for t in tasks)
    emb = run_lsh(tmp_path, examples[:2], ["value_retriever.rerank=embedding", "value_retriever.min_score=0.9"])
    assert ("city", "name", "New York") in found(emb[1])


def test_value_index_artifact_is_built_once_and_keyed_by_datasketch_version(tmp_path: Path, world: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, examples = world
    cfg = compose_config(["value_retriever=lsh", "dataset.limit=2"], cache_dir=tmp_path / "cache")
    first = prepare(cfg, progress=False)
    assert first["artifacts"]["value_index"]["built_now"] >= 1
    assert prepare(cfg, progress=False)["artifacts"]["value_index"]["built_now"] == 0
    spec = ValueIndexArtifact()
    assert spec.libraries() == {"datasketch": library_version("datasketch")}
    key = spec.key()
    import t2s.artifacts as artifacts

    monkeypatch.setattr(artifacts.metadata, "version", lambda package: "3.0.0")
    assert ValueIndexArtifact().key() != key


def test_keywords_from_questions() -> None:
    grams = question_ngrams("How many singers from the United States are older than 30?")
    assert {"singers", "United States", "United", "States", "older", "30"} <= set(grams)
    assert not {"How", "from", "the United", "the"} & set(grams)
    assert "Paris" in question_ngrams("Who lives in Paris's center?")
    assert quoted_spans('name "Bob Smith" and \'Jazz\' but don\'t split it\'s') == ["Bob Smith", "Jazz"]
    assert parse_keywords("Keywords: Paris, 'New York'\n1. Jazz\n```") == ["Paris", "New York", "Jazz"]
    assert parse_keywords("<s>\x00 ### ,,,") == ["<s>\x00 ###"]
    assert shingles("US") == {" us", "us "} and shingles("a") == {" a "}


def test_string_literals_with_their_columns(tmp_path: Path) -> None:
    db = make_db(tmp_path / "music.sqlite")
    schema = introspect(str(db), "music")
    sql = ('SELECT T1.name FROM artist AS T1 JOIN city AS T2 ON T1.city_id = T2.id WHERE T2.Name = "Paris" '
           "AND T1.genre IN ('Jazz', 'Hip Hop') AND T1.name LIKE '%Davis%' AND country != \"USA\"")
    lits = string_literals(sql, schema)
    assert [(lit.text, lit.op, lit.table, lit.column) for lit in lits] == [
        ("Paris", "eq", "city", "name"), ("Jazz", "in", "artist", "genre"), ("Hip Hop", "in", "artist", "genre"),
        ("Davis", "like", "artist", "name"), ("USA", "neq", "city", "country")]
    # a double-quoted name that is a column stays a column; a select-list constant has no column
    assert string_literals('SELECT "name", \'x\' FROM city WHERE "name" = "Lyon"', schema) == [
        type(lits[0])(value="x", text="x", op="", table=None, column=None),
        type(lits[0])(value="Lyon", text="Lyon", op="eq", table="city", column="name")]
    assert string_literals("SELECT FROM WHERE (", schema) == []


@requires_spider
def test_lsh_on_spider_questions(tmp_path: Path) -> None:
    """A few real Spider dev questions whose gold literals are in the database."""
    db = data_root() / "spider" / "database" / "world_1" / "world_1.sqlite"
    qs = [("What are the names of nations that speak both English and French?", {"English", "French"}),
          ("How many countries are in Asia?", {"Asia"}),
          ("What is the total population of Gelderland district?", {"Gelderland"})]
    examples = [Example(qid=f"w{i}", question=q, db_id="world_1", db_path=str(db), gold_sql="SELECT 1")
                for i, (q, _) in enumerate(qs)]
    tasks = run_lsh(tmp_path, examples)
    for t, (_, gold) in zip(tasks, qs):
        assert gold <= {v.value for v in t.values}
