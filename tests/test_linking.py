"""Schema linking (issue 10 item 3): gold tables/columns with sqlglot, the field index, join closure, the column
selection parser, the `embedding` and `dual` linkers on the real demo databases (hashing embedder), the dual linker
driven by a scripted LLM (a selection that parses, junk that falls back, S2 contains S1), and zero_shot making one
candidate per view (S1 and S2)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compose_config, requires_spider

from t2s.context.column_choice import column_choice_request, parse_column_choice
from t2s.context.fields import Field, FieldIndexArtifact, field_entries, field_text, words
from t2s.context.linking import columns_of, join_closure, prune, score_link
from t2s.data.base import load_dataset
from t2s.db.introspect import introspect
from t2s.llm.base import GenParams
from t2s.prompts import load_prompt
from t2s.records import StageLog
from t2s.run.pipeline import Pipeline, build_stage
from t2s.run.runner import make_env, run
from t2s.sql.columns import used_schema
from t2s.testing import stage_contract
from t2s.types import Example, Task

SCHOOL_DDL = """
CREATE TABLE teachers (teacher_id INTEGER PRIMARY KEY, name TEXT, department TEXT);
CREATE TABLE courses (course_id INTEGER PRIMARY KEY, title TEXT, credits INTEGER,
                      teacher_id INTEGER REFERENCES teachers (teacher_id));
CREATE TABLE students (student_id INTEGER PRIMARY KEY, name TEXT, year INTEGER);
CREATE TABLE enrollments (student_id INTEGER REFERENCES students (student_id),
                          course_id INTEGER REFERENCES courses (course_id), grade REAL,
                          PRIMARY KEY (student_id, course_id));
CREATE TABLE clubs (club_id INTEGER PRIMARY KEY, club_name TEXT);
INSERT INTO teachers VALUES (1, 'Dr. Park', 'Physics');
INSERT INTO courses VALUES (1, 'Mechanics', 4, 1);
INSERT INTO students VALUES (1, 'Ann', 2);
INSERT INTO enrollments VALUES (1, 1, 91.5);
"""


@pytest.fixture(scope="module")
def school(tmp_path_factory: pytest.TempPathFactory) -> Any:
    db = tmp_path_factory.mktemp("school") / "school.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(SCHOOL_DDL)
    conn.commit()
    conn.close()
    return introspect(str(db), "school", n_samples=2)


# ---------------------------------------------------------------------- gold tables and columns


def _pairs(u: Any) -> set[tuple[str, str]]:
    return set(u.columns)


def test_used_schema_resolves_aliases_joins_subqueries_and_bare_names(school: Any) -> None:
    u = used_schema("SELECT T1.title FROM courses AS T1 JOIN teachers AS T2 ON T1.teacher_id = T2.teacher_id "
                    "WHERE T2.name = 'Dr. Park'", school)
    assert u.tables == {"courses", "teachers"} and not u.error
    assert _pairs(u) == {("courses", "title"), ("courses", "teacher_id"), ("teachers", "teacher_id"),
                         ("teachers", "name")}
    u = used_schema("SELECT name FROM students WHERE student_id NOT IN (SELECT student_id FROM enrollments)", school)
    assert u.tables == {"students", "enrollments"}
    assert _pairs(u) == {("students", "name"), ("students", "student_id"), ("enrollments", "student_id")}
    # Spider-style double-quoted string literal: no column, reported as unresolved; COUNT(*) names no column
    u = used_schema('SELECT count(*) FROM TEACHERS WHERE Department = "Physics"', school)
    assert u.tables == {"teachers"} and _pairs(u) == {("teachers", "department")} and u.unresolved
    # a CTE and a derived table are not tables; their inner columns count
    u = used_schema("WITH c AS (SELECT teacher_id, count(*) AS n FROM courses GROUP BY teacher_id) "
                    "SELECT t.name FROM teachers AS t JOIN c ON c.teacher_id = t.teacher_id WHERE c.n > 1", school)
    assert u.tables == {"courses", "teachers"}
    assert _pairs(u) == {("courses", "teacher_id"), ("teachers", "name"), ("teachers", "teacher_id")}
    assert used_schema("SELEC nothing FROM", school).error


@requires_spider
def test_used_schema_reads_every_spider_dev_gold_query() -> None:
    from t2s.testing import data_root

    spider = data_root() / "spider"
    dev = json.loads((spider / "dev.json").read_text())
    schemas: dict[str, Any] = {}
    for r in dev[::10]:
        db = spider / "database" / r["db_id"] / f"{r['db_id']}.sqlite"
        if not db.is_file():
            continue
        schemas.setdefault(r["db_id"], introspect(str(db), r["db_id"], n_samples=0))
        u = used_schema(r["query"], schemas[r["db_id"]])
        assert not u.error and u.tables, r["query"]
        # every reference the resolver leaves is a double-quoted literal, never a missed column
        assert all(x.startswith('"') for x in u.unresolved), (r["query"], u.unresolved)


# ---------------------------------------------------------------------- field texts, join closure, scores


def test_field_texts_spell_names_as_words_and_take_summaries(school: Any) -> None:
    assert words("SongName") == "song name" and words("song_name") == "song name" and words("IATA-Code") == "iata code"
    assert field_text("singer", "Song_Name", type="TEXT", samples=["Love", "  Hi  "]) == \
        "singer song name (text). values: Love, Hi"
    fields = field_entries(school, {("COURSES", "Title"): "the course's name"})
    assert len(fields) == len(columns_of(school))
    title = next(f for f in fields if f.key == ("courses", "title"))
    assert "the course's name" in title.text and "Mechanics" in title.text


def test_join_closure_adds_keys_and_the_bridge_table_between_selected_tables(school: Any) -> None:
    keep = join_closure(school, [("students", "name"), ("courses", "title")])
    # the shortest FK path students -> enrollments -> courses brings the bridge table and its key columns
    assert set(keep) == {"students", "courses", "enrollments"}
    assert set(keep["enrollments"]) == {"student_id", "course_id"}
    pruned = prune(school, [("students", "name"), ("courses", "title")])
    assert ("students", "student_id") in columns_of(pruned)  # primary key kept
    assert {(fk.table, fk.ref_table) for fk in pruned.foreign_keys} == {("enrollments", "students"),
                                                                        ("enrollments", "courses")}
    assert "clubs" not in set(keep)
    # without paths the tables stay apart; whole tables keep every column
    assert set(join_closure(school, [("students", "name"), ("courses", "title")], paths=False)) == {"students", "courses"}
    assert columns_of(prune(school, [("students", "name")], whole_tables=True)) >= {("students", "year")}


def test_score_link_counts_recall_precision_and_size(school: Any) -> None:
    gold = used_schema("SELECT name FROM teachers WHERE department = 'Physics'", school)
    linked = prune(school, [("teachers", "name")])
    s = score_link(linked, school, gold)
    assert s.column_recall == 0.5 and s.table_recall == 1.0 and not s.complete
    assert s.kept_columns == 2 and s.column_precision == 0.5 and s.total_columns == len(columns_of(school))
    full = score_link(school, school, gold)
    assert full.complete and full.reduction == 1.0


# ---------------------------------------------------------------------- selection prompts and parser


def _fields(school: Any) -> list[Field]:
    return field_entries(school)


def test_parse_selection_reads_references_in_many_shapes_and_calls_junk_junk(school: Any) -> None:
    fields = _fields(school)
    s = parse_column_choice("- courses.title\n2. \"teachers\".\"name\"\n[enrollments].[grade]\n`students`.`year`", fields)
    assert s.status == "ok"
    assert s.columns == (("courses", "title"), ("teachers", "name"), ("enrollments", "grade"), ("students", "year"))
    assert parse_column_choice('["COURSES.CREDITS", "nosuch.col"]', fields).columns == (("courses", "credits"),)
    # a bare column name counts when one candidate has it (club_name), not when several do (name)
    assert parse_column_choice("club_name\nname", fields).columns == (("clubs", "club_name"),)
    assert parse_column_choice("grade, club_name", fields).columns == (("enrollments", "grade"), ("clubs", "club_name"))
    # a wrong table before a known column: every candidate of that name (the model's table is not trusted)
    assert parse_column_choice("courses.grade, teachers.year", fields).columns == (("enrollments", "grade"),
                                                                               ("students", "year"))
    assert set(parse_column_choice("clubs.name", fields).columns) == {("teachers", "name"), ("students", "name")}
    assert parse_column_choice("NONE", fields).status == "none"
    # pass 2 repeating the columns selected before is an empty choice, not junk
    rest = [f for f in fields if f.key != ("courses", "title")]
    assert parse_column_choice("courses.title", rest, [("courses", "title")]).status == "none"
    assert parse_column_choice("courses.title, teachers.name", rest, [("courses", "title")]).columns == (("teachers", "name"),)
    # a repeated selected column does not pull in other candidates of the same name
    no_teacher_name = [f for f in fields if f.key != ("teachers", "name")]
    assert parse_column_choice("teachers.name", no_teacher_name, [("teachers", "name")]).status == "none"
    for junk in ["", "SELECT count(*) FROM t", "the the the )))", "name name"]:
        assert parse_column_choice(junk, fields) == parse_column_choice("", fields) and parse_column_choice(junk, fields).status == "junk"


def test_selection_request_lists_candidates_with_details_and_the_selected_ones(school: Any) -> None:
    task = Task(example=Example(qid="q", question="Who teaches Mechanics?", db_id="school", db_path="x",
                                evidence="Mechanics is a course title"))
    fields = _fields(school)[:4]
    req = column_choice_request(load_prompt("dual_link_s1_v1"), task, school, fields, GenParams())
    user = req.messages[1][1]
    assert "- teachers.name (text; e.g. Dr. Park)" in user and "Question: Who teaches Mechanics?" in user
    assert "Evidence: Mechanics is a course title" in user
    req = column_choice_request(load_prompt("dual_link_s2_v1"), task, school, fields[1:], GenParams(),
                            selected=[("teachers", "teacher_id")], use_evidence=False)
    user = req.messages[1][1]
    assert user.index("- teachers.teacher_id") < user.index("Remaining columns") and "Evidence" not in user


# ---------------------------------------------------------------------- linkers on the demo databases


@pytest.fixture(scope="module")
def demo_world(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = compose_config([], cache_dir=session_cache)
    school_qs = [ex for ex in load_dataset(cfg).examples if ex.db_id == "school"]
    env = make_env(cfg, school_qs, tmp_path_factory.mktemp("linking-run"))
    yield cfg, school_qs, env
    env.close()


def test_embedding_linker_keeps_the_similar_columns_with_keys_and_join_paths(demo_world: Any) -> None:
    cfg, qs, env = demo_world
    stage = build_stage("schema_linker", compose_config(["schema_linker=embedding", "schema_linker.k=3"],
                                                        cache_dir=Path(cfg.paths.cache_dir)).schema_linker, "embedding")
    result = stage_contract(stage, env, qs[:6])
    for t in result.tasks:
        assert [v.name for v in t.schemas] == ["linked"]
        kept = columns_of(t.schemas[0].schema)
        index = env.artifact(stage.index_spec, t.example)
        top = index.rank(env.embed("default", [t.example.question])[0], 3)
        assert {f.key for f, _ in top} <= kept  # the k most similar columns are all kept
        assert len(kept) < len(columns_of(env.schema(t.example)))  # and the schema is smaller
        assert "CREATE TABLE" in t.schemas[0].text
    # the field index is one artifact per database, built once
    assert len({r.path for r in env.artifacts.records() if r.name == "field_index"}) == 1


def test_the_field_index_key_follows_the_embedder_model(demo_world: Any) -> None:
    _, qs, env = demo_world
    a = FieldIndexArtifact(embedder="default").bind(env)
    assert a.params()["model"] == env.embedders.get("default").model_id
    with pytest.raises(RuntimeError, match="bind"):
        FieldIndexArtifact().params()
    index = env.artifact(a, qs[0])
    assert len(index) == len(columns_of(env.schema(qs[0])))


def _rules(tmp_path: Path, rules: list[dict[str, Any]], name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"rules": rules, "default": "```sql\nSELECT 1\n```"}))
    return str(path)


def _dual(cfg: Any, tmp_path: Path, rules: list[dict[str, Any]], name: str) -> tuple[Any, Any]:
    """A dual linker whose LLM is a scripted one answering by `rules`, and an env with that LLM."""
    c = compose_config(["schema_linker=dual", "llm=scripted", f"llm.path={_rules(tmp_path, rules, name)}",
                        "run.llm_cache=false"], cache_dir=Path(cfg.paths.cache_dir))
    return build_stage("schema_linker", c.schema_linker, "dual"), make_env(c, [], tmp_path / name)


#: the dual linker's passes, by template (rules answer by its fields, not its wording)
S1 = "dual_link_s1"
S2 = "dual_link_s2"
#: the generator's SQL prompt (any version of zero_shot)
GEN = {"template": "zero_shot", "answer": {"sql": "SELECT name FROM teachers"}}


def test_dual_linker_parses_a_selection_into_s1_and_a_wider_s2(demo_world: Any, tmp_path: Path) -> None:
    cfg, qs, _ = demo_world
    # replies as small models write them (prose, bullets, a column no candidate has): the parser reads them
    rules = [{"template": S2, "reply": "- students.year\n- unknown.column"},
             {"template": S1, "reply": "Sure! The columns are:\n- courses.title\n- students.name"}]
    stage, env = _dual(cfg, tmp_path, rules, "ok")
    try:
        result = stage_contract(stage, env, qs[:3])
    finally:
        env.close()
    assert result.llm_calls_made == 6  # two passes per question
    for t in result.tasks:
        s1, s2 = t.schemas
        assert (s1.name, s2.name) == ("S1", "S2")
        c1, c2 = columns_of(s1.schema), columns_of(s2.schema)
        # S1: the chosen columns, primary keys and the bridge table joining students to courses (its primary key is
        # student_id, course_id, semester in the demo database)
        assert {("courses", "title"), ("students", "name"), ("enrollments", "student_id"), ("enrollments", "semester"),
                ("enrollments", "course_id"), ("students", "student_id"), ("courses", "course_id")} == c1
        assert c1 < c2 and c2 - c1 == {("students", "year")}
        assert stage.outcomes[t.qid] == {"s1": "ok", "s2": "ok"}
        assert stage.replies[t.qid]["s1"].startswith("Sure!") and "students.year" in stage.replies[t.qid]["s2"]
        assert t.trace[0].llm_calls == 2
    # what it decided, per question, beside the traces
    log = StageLog.read(env.run_dir / "schema_linking" / "dual.jsonl")
    assert sorted(log) == sorted(t.qid for t in result.tasks)
    rec = log[result.tasks[0].qid]
    assert (rec["s1_columns"], rec["s2_added"]) == (["courses.title", "students.name"], ["students.year"])
    assert rec["outcome"] == {"s1": "ok", "s2": "ok"} and rec["linker"] == "schema_linker/dual"
    assert set(rec["views"]["S2"]) - set(rec["views"]["S1"]) == {"students.year"}
    assert "students.year" in rec["candidates"] and rec["replies"]["s1"].startswith("Sure!")


def test_dual_linker_falls_back_to_the_prefiltered_set_on_junk(demo_world: Any, tmp_path: Path) -> None:
    cfg, qs, _ = demo_world
    # pass 1 junk: S1 = S2 = every pre-filtered column (prefilter_k=30 covers the demo database), pass 2 not asked
    stage, env = _dual(cfg, tmp_path, [{"template": S1, "reply": "ok ok ok ))) SELECT"}], "junk1")
    try:
        result = stage_contract(stage, env, qs[:2])
    finally:
        env.close()
    assert result.llm_calls_made == 2
    for t in result.tasks:
        full = columns_of(env.schema(t.example))
        assert columns_of(t.schemas[0].schema) == columns_of(t.schemas[1].schema) == full
        assert stage.outcomes[t.qid] == {"s1": "fallback", "s2": "skipped"}
    # pass 2 junk: S2 widens to the pre-filtered set, S1 stays precise; an explicit NONE keeps S2 = S1
    for reply, s2_outcome in [("I cannot tell.", "fallback"), ("NONE", "none")]:
        rules = [{"template": S2, "reply": reply}, {"template": S1, "answer": {"columns": ["teachers.name"]}}]
        stage, env = _dual(cfg, tmp_path, rules, f"s2-{s2_outcome}")
        try:
            t = stage_contract(stage, env, qs[:1]).tasks[0]
        finally:
            env.close()
        c1, c2 = columns_of(t.schemas[0].schema), columns_of(t.schemas[1].schema)
        assert c1 == {("teachers", "name"), ("teachers", "teacher_id")}
        assert c2 == (columns_of(env.schema(t.example)) if s2_outcome == "fallback" else c1)
        assert stage.outcomes[t.qid]["s2"] == s2_outcome


def test_dual_linker_on_the_tiny_model_never_fails_and_s2_contains_s1(demo_world: Any) -> None:
    cfg, qs, env = demo_world
    stage = build_stage("schema_linker", compose_config(["schema_linker=dual", "schema_linker.prefilter_k=5"],
                                                        cache_dir=Path(cfg.paths.cache_dir)).schema_linker, "dual")
    for t in stage_contract(stage, env, qs[:4]).tasks:
        assert [v.name for v in t.schemas] == ["S1", "S2"]
        assert columns_of(t.schemas[0].schema) <= columns_of(t.schemas[1].schema)


def test_zero_shot_after_dual_makes_one_candidate_per_view(session_cache: Path, tmp_path: Path) -> None:
    rules = [{"template": S2, "answer": {"columns": []}},
             {"template": S1, "answer": {"columns": ["teachers.name", "teachers.department"]}},
             # the generator's prompt shows the view's DDL: S2 differs from S1 only when pass 2 added columns
             GEN]
    cfg = compose_config(["dataset.limit=2", "schema_linker=dual", "llm=scripted",
                          f"llm.path={_rules(tmp_path, rules, 'gen')}", "run.llm_cache=false"],
                         cache_dir=session_cache, output_root=tmp_path / "outputs")
    metrics = run(cfg, run_dir=tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert [c["schema_view"] for c in r["candidates"]] == ["S1", "S2"]
        assert all(c["origin"] == "generator/zero_shot" for c in r["candidates"])
    assert metrics["options"]["schema_linker"] == "dual"


def test_pipeline_keeps_the_views_for_the_generator(demo_world: Any, tmp_path: Path) -> None:
    cfg, qs, _ = demo_world
    rules = [{"template": S2, "answer": {"columns": ["students.year"]}},
             {"template": S1, "answer": {"columns": ["students.name"]}},
             {"template": "zero_shot", "answer": {"sql": "SELECT name FROM students"}}]
    stage, env = _dual(cfg, tmp_path, rules, "pipe")
    gen = build_stage("generator", compose_config([], cache_dir=Path(cfg.paths.cache_dir)).generator, "zero_shot")
    try:
        pipeline = Pipeline([stage, gen])
        pipeline.setup(env)
        tasks = [Task(example=ex) for ex in qs[:2]]
        pipeline.run_batch(tasks)
        calls = list(env.llm("generator").inner.calls)
    finally:
        env.close()
    for t in tasks:
        assert [(c.schema_view, c.sql) for c in t.candidates] == [("S1", "SELECT name FROM students"),
                                                                  ("S2", "SELECT name FROM students")]
        # the generator saw each view's own schema text: S2 has the column pass 2 added, S1 does not
        prompts = [p for p in calls if "Question: " + t.example.question in p and "CREATE TABLE" in p]
        assert len(prompts) == 2 and "year" not in prompts[0] and "year" in prompts[1]


def test_prepare_builds_the_field_index_of_every_database_once(tmp_path: Path) -> None:
    from t2s.run.prepare import prepare

    cfg = compose_config(["schema_linker=embedding"], cache_dir=tmp_path / "cache")
    first = prepare(cfg, progress=False)
    assert first["artifacts"]["field_index"]["built_now"] == 3  # the three demo databases
    again = prepare(compose_config(["schema_linker=dual"], cache_dir=tmp_path / "cache"), progress=False)
    assert again["artifacts"]["field_index"]["built_now"] == 0  # dual uses the same index
    # another embedder is another index
    other = prepare(compose_config(["schema_linker=embedding", "embedder.dim=64"], cache_dir=tmp_path / "cache"),
                    progress=False)
    assert other["artifacts"]["field_index"]["built_now"] == 3


def test_pruned_views_keep_example_rows_aligned_with_their_columns(school: Any) -> None:
    from t2s.db.types import DatabaseSchema

    with_rows = DatabaseSchema.from_dict(school.to_dict())
    teachers = with_rows.table("teachers")
    teachers.rows = [[1, "Dr. Park", "Physics"]]
    pruned = prune(with_rows, [("teachers", "department")])
    t = pruned.table("teachers")
    assert [c.name for c in t.columns] == ["teacher_id", "department"] and t.rows == [[1, "Physics"]]
