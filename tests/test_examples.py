"""Skeletons, the example store artifact, the `skeleton_knn` / `random` retrievers and the `few_shot` generator.

The store is built for real (demo questions as the training set, the hashing embedder, a real faiss index, real
SQLite schemas); the generator runs on the scripted LLM so its prompt and parsing are checked end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compose_config

from t2s.context.examples import ExampleStoreArtifact
from t2s.data.base import load_dataset
from t2s.run.pipeline import build_stage
from t2s.run.runner import make_env
from t2s.sql.skeleton import SchemaNames, question_skeleton, sql_literals, sql_skeleton
from t2s.testing import stage_contract
from t2s.types import FewShot, Finding, Task

DEMO_TRAIN = "dataset@example_retriever.train=demo"

# ---------------------------------------------------------------------- skeletons

NAMES = SchemaNames.of(["singer", "concert", "singer_in_concert"],
                       ["Singer_ID", "Name", "Country", "Song_Name", "Age", "Stadium_ID", "Capacity", "Number"])


def test_question_skeleton_masks_values_and_schema_mentions() -> None:
    q = 'What is the name and country of the singer named "Joe Sharp" who is older than 30?'
    assert question_skeleton(q, NAMES) == ("what is the [column] and [column] of the [table] named [value] who is "
                                           "older than [number]?")
    # plurals, multi-word column names, capitalized entities (merged), sentence-initial words kept
    assert question_skeleton("Show the song names of singers from United States.", NAMES) == \
        "show the [column] of [table] from [value]."
    assert question_skeleton("List the stadium ids with capacity between 5000 and 10000.", NAMES) == \
        "list the [column] with [column] between [number] and [number]."


def test_question_skeleton_keeps_structural_words_even_when_a_column_is_so_named() -> None:
    # "Number" is a column, but "number of" is what makes the query a COUNT: never masked
    assert question_skeleton("What is the number of concerts?", NAMES) == "what is the number of [table]?"
    # without schema names only values are masked
    assert question_skeleton("How many singers are from France?") == "how many singers are from [value]?"


def test_same_question_shape_on_two_databases_gives_one_skeleton() -> None:
    other = SchemaNames.of(["airport"], ["city", "elevation"])
    a = question_skeleton("What is the name of the singer from France?", NAMES)
    b = question_skeleton("What is the city of the airport in Peru?", other)
    assert a.replace(" from ", " in ") == b


def test_sql_skeleton_masks_literals_and_identifiers() -> None:
    a = sql_skeleton("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.sid WHERE T2.year = 2014")
    b = sql_skeleton("select t.title from book as t join author as a on t.aid = a.id where a.country = 'Peru'")
    assert a == b == "SELECT _ FROM _ AS _ JOIN _ AS _ ON _ = _ WHERE _ = ?"
    # Spider's double-quoted values are values, not identifiers
    assert sql_skeleton('SELECT name FROM singer WHERE country = "France"') == \
        sql_skeleton("SELECT name FROM singer WHERE country = 'France'")
    # structure matters
    assert sql_skeleton("SELECT count(*) FROM singer") != sql_skeleton("SELECT max(age) FROM singer")
    assert sql_skeleton("SELECT a FROM t ORDER BY b DESC LIMIT 1") != sql_skeleton("SELECT a FROM t ORDER BY b LIMIT 1")
    assert sql_skeleton("") is None
    assert sql_literals("SELECT a FROM t WHERE b LIKE '%x%' AND c > 3.5") == ["x", 3.5]


# ---------------------------------------------------------------------- the store and the retrievers


@pytest.fixture(scope="module")
def world(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = compose_config(["example_retriever=skeleton_knn", DEMO_TRAIN], cache_dir=session_cache)
    data = load_dataset(cfg)
    env = make_env(cfg, data.examples, tmp_path_factory.mktemp("examples-run"))
    yield cfg, data.examples, env
    env.close()


def _retriever(world: Any, *overrides: str) -> Any:
    cfg, _, env = world
    cfg = compose_config(["example_retriever=skeleton_knn", DEMO_TRAIN, *overrides], cache_dir=Path(cfg.paths.cache_dir))
    stage = build_stage("example_retriever", cfg.example_retriever, "skeleton_knn")
    stage.setup(env)
    return stage


def test_store_is_built_once_per_training_file_and_embedder(world: Any) -> None:
    _, examples, env = world
    stage = _retriever(world)
    art = stage.artifacts()[0]
    (source,) = art.sources(env, examples)
    assert source.kind == "dataset" and source.path.endswith("questions.json")
    store = env.artifact(art, source)
    assert len(store) == len(examples) == store.index.ntotal  # every demo question has gold SQL
    assert all(r.sql_skeleton for r in store.records)
    # a second retriever on the same training set loads the same store: nothing is rebuilt
    assert env.artifact(_retriever(world).artifacts()[0], source) is store
    assert [r.built_now for r in env.artifacts.records() if r.name == "example_store"].count(True) <= 1
    # another embedder model is another source hash, so its vectors are never mixed with these
    other = ExampleStoreArtifact(dataset=art.dataset, embedder="default", mask=False)
    assert other.key() != art.key()


def test_knn_excludes_the_questions_own_database_and_ranks_by_similarity(world: Any) -> None:
    _, examples, _ = world
    stage = _retriever(world, "example_retriever.k=3")
    tasks = [Task(example=e) for e in examples[:6]]
    stage.run(tasks)
    for t in tasks:
        assert len(t.examples) == 3
        assert all(e.db_id != t.example.db_id for e in t.examples)
        scores = [e.score for e in t.examples]
        assert scores == sorted(scores, reverse=True)
        assert all(e.source.startswith("demo:") for e in t.examples)
        assert len({e.sql for e in t.examples}) == 3  # no repeated SQL


def test_knn_without_exclusion_finds_the_question_itself_first(world: Any) -> None:
    _, examples, _ = world
    stage = _retriever(world, "example_retriever.exclude_same_db=false", "example_retriever.k=2")
    tasks = [Task(example=e) for e in examples[:5]]
    stage.run(tasks)
    for t in tasks:
        assert t.examples[0].source == f"demo:{t.qid}"
        assert t.examples[0].score == pytest.approx(1.0, abs=1e-4)


def test_random_mode_is_seeded_per_question_and_keeps_the_exclusions(world: Any) -> None:
    _, examples, env = world
    stage = _retriever(world, "example_retriever.mode=random", "example_retriever.k=4")
    first = [Task(example=e) for e in examples[:5]]
    again = [Task(example=e) for e in examples[:5]]
    stage.run(first)
    stage.run(again)
    assert [[e.source for e in t.examples] for t in first] == [[e.source for e in t.examples] for t in again]
    assert all(len(t.examples) == 4 and all(e.db_id != t.example.db_id for e in t.examples) for t in first)
    assert all(e.score == 0.0 for t in first for e in t.examples)
    env.seed, old = env.seed + 1, env.seed
    try:
        other = [Task(example=e) for e in examples[:5]]
        stage.run(other)
    finally:
        env.seed = old
    assert [[e.source for e in t.examples] for t in other] != [[e.source for e in t.examples] for t in first]


def test_retrievers_pass_the_stage_contract(world: Any) -> None:
    _, examples, env = world
    for mode in ("knn", "random"):
        cfg = compose_config(["example_retriever=skeleton_knn", DEMO_TRAIN, f"example_retriever.mode={mode}"],
                             cache_dir=Path(world[0].paths.cache_dir))
        stage = build_stage("example_retriever", cfg.example_retriever, "skeleton_knn")
        result = stage_contract(stage, env, examples[:4])
        assert all(len(t.examples) == 5 for t in result.tasks)


def test_bad_options_fail_with_the_key() -> None:
    from t2s_plugins.example_retriever.skeleton_knn import SkeletonKnnRetriever

    from t2s.data.demo import DemoDataset

    with pytest.raises(ValueError, match="mode"):
        SkeletonKnnRetriever(train=DemoDataset(name="demo", build_dir="/tmp/x"), mode="nearest")
    with pytest.raises(TypeError, match="dataset config"):
        SkeletonKnnRetriever(train="spider_train")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the few-shot generator


def test_few_shot_generator_shows_examples_nearest_last_and_parses_sql(session_cache: Path, tmp_path: Path) -> None:
    # by the template's fields, not its wording: a prompt showing few-shot examples is answered in its reply format
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{"template": "few_shot", "when": {"examples_block": "Nearest question"},
                                                "answer": {"sql": "SELECT count(*) FROM books"}}],
                                     "default": "no examples seen"}))
    cfg = compose_config(["llm=scripted", f"llm.path={rules}", "generator=few_shot", "dataset.limit=2",
                          "run.llm_cache=false"],
                         cache_dir=session_cache)
    data = load_dataset(cfg)
    env = make_env(cfg, data.examples, tmp_path / "run")
    try:
        gen = build_stage("generator", cfg.generator, "few_shot")
        gen.setup(env)
        task = Task(example=data.examples[0])
        task.examples = [FewShot(question="Nearest question?", sql="SELECT 1", score=0.9, source="x:1"),
                         FewShot(question="Farther question?", sql="SELECT 2", score=0.5, source="x:2")]
        task.findings = [Finding(sql="", status="malformed", note="junk reply"),
                         Finding(sql="SELECT country FROM authors LIMIT 5", status="ok", note="1 row(s) (country): ('Japan')")]
        bare = Task(example=data.examples[1])
        gen.run([task, bare])
        scripted = env.llm("generator").inner
        shown = scripted.sources[0].field_map()
        assert shown["examples_block"].index("Farther question?") < shown["examples_block"].index("Nearest question?")
        assert "SELECT country FROM authors LIMIT 5" in shown["findings_block"]
        assert "1 row(s) (country): ('Japan')" in shown["findings_block"]
        assert "junk reply" not in scripted.calls[0]  # a malformed probe says nothing about the data
        assert task.candidates[0].sql == "SELECT count(*) FROM books"
        assert task.candidates[0].meta["prompt"] == "few_shot_v1"
        assert task.candidates[0].meta["examples"] == ["x:1", "x:2"]
        # no examples: no examples block, still one candidate (here the default reply, which holds no SQL)
        assert scripted.sources[1].field_map()["examples_block"] == ""
        assert bare.candidates[0].sql == ""
    finally:
        env.close()
