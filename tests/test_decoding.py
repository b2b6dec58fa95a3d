"""Constrained decoding (issue 23): constraints in requests and cache keys, the per-database SQL grammar on both
engines (llguidance and llama.cpp), every backend enforcing a constraint or refusing it, the `decoding` config group,
the stages' constrained reply formats with a scripted LLM, and the tiny model under `decoding=sql`.

Real engines only: llguidance's matcher, llama.cpp's grammar sampler on the embedded GGUF, real SQLite.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlglot
import yaml
from conftest import compose_config, requires_spider
from sqlglot import exp

from t2s.db.introspect import introspect
from t2s.db.types import Column, DatabaseSchema, Table
from t2s.decoding import ANSWER_PREFIX, ANSWER_SUFFIX, Decoding, SqlGrammarArtifact
from t2s.llm.base import LLM, Constraint, GenParams, LLMRequest, LLMResponse
from t2s.llm.cache import request_key, request_payload
from t2s.llm.scripted import ScriptedLLM
from t2s.llm.structured import ConstraintNotSupported, ConstraintViolation, check_supported, text_matcher
from t2s.run.pipeline import build_stage
from t2s.run.runner import run
from t2s.run.store import fingerprint, result_config
from t2s.sql.grammar import GrammarLimits, sql_grammar

SCHEMA = DatabaseSchema("music", [
    Table("singer", [Column("singer_id", "INTEGER", True), Column("name", "TEXT"), Column("country", "TEXT"),
                     Column("age", "INTEGER"), Column("Home Town", "TEXT"), Column("Range", "TEXT"),
                     Column("order", "INTEGER")]),
    Table("concert", [Column("concert_id", "INTEGER", True), Column("concert_name", "TEXT"), Column("year", "INTEGER"),
                      Column("singer_id", "INTEGER")]),
])

#: answers the `sql` grammar of SCHEMA takes (inside the ```sql fence)
ACCEPTED = [
    "SELECT count(*) FROM singer",
    "select T1.name ,  T2.concert_name from singer as t1 join concert as t2 on t1.singer_id = t2.singer_id "
    "where t2.year > 2014",
    'SELECT name FROM singer WHERE country = "France" AND age BETWEEN 20 AND 30;',
    "SELECT `Home Town`, [order], \"Range\", Range FROM SINGER",
    "SELECT country, avg(age) AS mean_age FROM singer GROUP BY country HAVING count(*) > 1 ORDER BY avg(age) DESC "
    "LIMIT 3",
    "SELECT name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM concert) EXCEPT SELECT name FROM singer "
    "WHERE age < 20",
    "SELECT name FROM singer WHERE name LIKE '%a''b%' OR age IS NOT NULL",
    "SELECT CAST(count(*) AS REAL) * 100 / (SELECT count(*) FROM concert) FROM singer",
    "SELECT\n    name\nFROM singer\nWHERE age > (SELECT avg(age) FROM singer)",
]

#: answers it refuses, with why
REJECTED = [
    ("SELECT pet_type FROM singer", "a column the database lacks"),
    ("SELECT name FROM singers", "a table the database lacks"),
    ("SELECT pet_type.name FROM singer", "a qualifier that is neither a table nor an alias T<n>"),
    ('SELECT "France" FROM singer', "a double-quoted string where a column stands"),
    ("SELECT order FROM singer", "a reserved word as a bare name"),
    ("CREATE TABLE pets (pet_type TEXT)", "not a SELECT"),
    ("SELECT name FROM singer; SELECT age FROM singer", "two statements"),
    ("SELECT replace(name) FROM singer", "a function called with the wrong number of arguments"),
    ("SELECT name FROM singer WHERE (SELECT count(*) FROM concert WHERE year IN (SELECT year FROM concert WHERE "
     "concert_id IN (SELECT concert_id FROM concert))) > 1", "deeper than the bound"),
]

#: answers the `sql_strict` grammar takes and refuses
STRICT_ACCEPTED = ["SELECT singer.name FROM singer WHERE singer.age > 30",
                   "SELECT count(*) FROM singer JOIN concert ON singer.singer_id = concert.singer_id "
                   "WHERE concert.year = 2014"]
STRICT_REJECTED = ["SELECT name FROM singer", "SELECT T1.name FROM singer AS T1", "SELECT singer.year FROM singer",
                   "SELECT count(*) AS n FROM singer"]


def fenced(sql: str) -> str:
    return f"{ANSWER_PREFIX}{sql}{ANSWER_SUFFIX}"


def grammar(mode: str = "sql", **limits: int) -> Constraint:
    return Constraint.grammar(sql_grammar(SCHEMA, mode, GrammarLimits(**limits)).wrap(), name=f"test:{mode}")


# ---------------------------------------------------------------------------------------------- requests, keys
def test_an_unconstrained_request_keeps_its_cache_key() -> None:
    """Keys computed with the code before constraints existed (commit 12c1ce4): cached baselines stay valid."""
    chat = LLMRequest.chat([{"role": "system", "content": "You write SQL."}, {"role": "user", "content": "How many singers?"}],
                           GenParams(max_new_tokens=64, stop_after_fence=True))
    assert request_key("llamacpp", "qwen2.5-coder-0.5b@1d9614638d18", chat) == \
        "72301eaa0cda39ec974b9fc96cf91835960f83d5d9e053f55c1a06710095139a"
    sampled = LLMRequest(prompt="SELECT", params=GenParams(max_new_tokens=16, temperature=0.7, top_p=0.9, n=4, seed=3,
                                                           stop=("\n\n",)))
    assert request_key("hf", "tiny@abc:float32", sampled) == \
        "96eb95aaba9259fee0500a6738eadec998abb6c800d5c37a76262816f8f568e5"
    assert "constraint" not in request_payload("hf", "m", sampled)["params"]


def test_a_constraint_is_part_of_the_key_by_its_hash() -> None:
    base = LLMRequest(prompt="Q", params=GenParams())
    c = grammar()
    constrained = dataclasses.replace(base, params=dataclasses.replace(base.params, constraint=c))
    renamed = dataclasses.replace(base, params=dataclasses.replace(
        base.params, constraint=Constraint.grammar(c.text, name="another label")))
    payload = request_payload("hf", "m", constrained)
    assert payload["params"]["constraint"] == {"kind": "grammar", "sha256": c.sha256}
    assert c.text not in json.dumps(payload)  # the cache stores the hash, not tens of kilobytes per entry
    assert request_key("hf", "m", constrained) != request_key("hf", "m", base)
    assert request_key("hf", "m", renamed) == request_key("hf", "m", constrained)
    schema = Constraint.json_schema({"type": "array", "items": {"enum": ["a", "b"]}})
    assert schema.text == Constraint.json_schema({"items": {"enum": ["a", "b"]}, "type": "array"}).text


@pytest.mark.parametrize("kind,text,why", [("regex", "a+", "kind"), ("grammar", "  ", "empty"),
                                           ("json_schema", "{not json", "not JSON"), ("json_schema", "[1]", "object")])
def test_a_malformed_constraint_is_refused(kind: str, text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Constraint(kind, text)


# ------------------------------------------------------------------------------------------------ the grammar
@pytest.mark.parametrize("sql", ACCEPTED)
def test_the_sql_grammar_accepts_spider_style_sql(sql: str) -> None:
    assert text_matcher().problem(grammar(), fenced(sql)) is None


@pytest.mark.parametrize("sql,why", REJECTED)
def test_the_sql_grammar_refuses(sql: str, why: str) -> None:
    assert text_matcher().problem(grammar(), fenced(sql)) is not None, why


def test_the_strict_grammar_wants_every_column_in_its_own_table() -> None:
    strict = grammar("sql_strict")
    for sql in STRICT_ACCEPTED:
        assert text_matcher().problem(strict, fenced(sql)) is None, sql
    for sql in STRICT_REJECTED + [s for s, _ in REJECTED]:
        assert text_matcher().problem(strict, fenced(sql)) is not None, sql


def test_the_bounds_decide_how_deep_and_long_an_answer_may_be() -> None:
    nested = "SELECT CAST(SUM(CASE WHEN country = 'France' THEN 1 ELSE 0 END) AS REAL) FROM singer"
    assert text_matcher().problem(grammar(), fenced(nested)) is not None  # depth 2: CASE inside SUM inside CAST
    assert text_matcher().problem(grammar(depth=3), fenced(nested)) is None
    many = "SELECT name, age, country FROM singer"
    assert text_matcher().problem(grammar(select_items=2), fenced(many)) is not None
    assert text_matcher().problem(grammar(select_items=3), fenced(many)) is None
    with pytest.raises(ValueError, match="select_items"):
        GrammarLimits(select_items=0)


def test_llama_cpp_and_the_hf_matcher_read_the_grammar_alike(embedded_llamacpp: Any, make_tiny_llm: Any) -> None:
    """One grammar source, three readers: llama.cpp's sampler on the embedded vocabulary, llguidance on the tiny
    model's vocabulary (the hf backend's matcher) and llguidance byte by byte."""
    tiny = make_tiny_llm()
    for mode, good, bad in (("sql", ACCEPTED, [s for s, _ in REJECTED]), ("sql_strict", STRICT_ACCEPTED, STRICT_REJECTED)):
        c = grammar(mode)
        for sql in good:
            assert embedded_llamacpp.grammar_problem(c, fenced(sql)) is None, (mode, sql)
            assert tiny.grammar_problem(c, fenced(sql)) is None, (mode, sql)
        for sql in bad:
            assert embedded_llamacpp.grammar_problem(c, fenced(sql)) is not None, (mode, sql)
            assert tiny.grammar_problem(c, fenced(sql)) is not None, (mode, sql)


# ----------------------------------------------------------------------------------- the constraint reaches the engine
FORCED = Constraint.grammar('root ::= "```sql\\nSELECT " [0-9] [0-9] " FROM singer\\n```"', name="forced")
PICK = Constraint.json_schema({"type": "array", "items": {"enum": ["singer.name", "singer.age"]}, "minItems": 1,
                               "maxItems": 2}, name="columns")
QUESTION = [{"role": "system", "content": "Reply with the SQL in a ```sql code block."},
            {"role": "user", "content": "CREATE TABLE singer (name TEXT, age INTEGER);\nHow many singers are there?"}]


def _forced_ok(text: str) -> bool:
    return re.fullmatch(r"```sql\nSELECT \d\d FROM singer\n```", text) is not None


def test_the_hf_backend_enforces_grammars_and_schemas(make_tiny_llm: Any) -> None:
    """The tiny random model writes token soup; under a constraint, greedy and sampled rows alike follow it."""
    llm = make_tiny_llm()
    free, forced, sampled, picked, sql = llm.generate([
        LLMRequest.chat(QUESTION, GenParams(max_new_tokens=24)),
        LLMRequest.chat(QUESTION, GenParams(max_new_tokens=24, constraint=FORCED)),
        LLMRequest.chat(QUESTION, GenParams(max_new_tokens=24, temperature=1.0, n=3, seed=4, constraint=FORCED)),
        LLMRequest.chat(QUESTION, GenParams(max_new_tokens=40, constraint=PICK)),
        LLMRequest.chat(QUESTION, GenParams(max_new_tokens=160, constraint=grammar())),
    ])
    assert not _forced_ok(free.text)
    assert _forced_ok(forced.text) and forced.finish_reasons == ["stop"]
    assert all(_forced_ok(t) for t in sampled.texts) and sampled.finish_reasons == ["stop"] * 3
    assert picked.finish_reasons == ["stop"]
    assert set(json.loads(picked.text)) <= {"singer.name", "singer.age"}
    if sql.finish_reasons == ["stop"]:
        assert text_matcher().problem(grammar(), sql.text) is None
    else:  # cut by max_new_tokens: still a prefix the grammar allows
        assert text_matcher().problem(grammar(), sql.text).startswith("the text ends before")


def test_the_llamacpp_backend_enforces_grammars_and_schemas(embedded_llamacpp: Any, embedded_gguf_file: Path) -> None:
    """One-at-a-time decoding and the parallel decoder both go through llama.cpp's grammar sampler."""
    from conftest_llm import project_cache

    from t2s.llm.llamacpp import LlamaCppLLM

    requests = [LLMRequest.chat(QUESTION, GenParams(max_new_tokens=24, constraint=FORCED)),
                LLMRequest.chat(QUESTION, GenParams(max_new_tokens=24, temperature=0.8, n=2, seed=1, constraint=FORCED)),
                LLMRequest.chat(QUESTION, GenParams(max_new_tokens=24, constraint=PICK))]
    parallel = LlamaCppLLM(model="embedded", cache_dir=str(project_cache()), n_ctx=1024, parallel=2)
    try:
        for llm in (embedded_llamacpp, parallel):
            forced, sampled, picked = llm.generate(requests)
            assert _forced_ok(forced.text) and forced.finish_reasons == ["stop"], forced.text
            assert all(_forced_ok(t) for t in sampled.texts), sampled.texts
            assert set(json.loads(picked.text)) <= {"singer.name", "singer.age"}, picked.text
    finally:
        parallel.close()


def test_the_openai_backend_sends_schemas_and_grammars(openai_server: Any) -> None:
    from t2s.llm.openai import OpenAILLM

    plain = OpenAILLM(model="m", base_url=openai_server.url)
    plain.generate([LLMRequest.chat(QUESTION, GenParams(constraint=PICK)),
                    LLMRequest(prompt="Q", params=GenParams(constraint=PICK))])
    chat, completion = (r["body"] for r in openai_server.requests)
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "columns", "schema": PICK.schema,
                                                                              "strict": True}}
    assert completion["response_format"]["json_schema"]["schema"] == PICK.schema
    with pytest.raises(ConstraintNotSupported, match="grammar_field"):
        plain.generate([LLMRequest.chat(QUESTION, GenParams(constraint=FORCED))])
    openai_server.requests.clear()
    OpenAILLM(model="m", base_url=openai_server.url, grammar_field="grammar").generate(
        [LLMRequest.chat(QUESTION, GenParams(constraint=FORCED))])
    OpenAILLM(model="m", base_url=openai_server.url, grammar_field="structured_outputs.grammar",
              grammar_syntax="lark").generate([LLMRequest.chat(QUESTION, GenParams(constraint=grammar()))])
    llama_body, vllm_body = (r["body"] for r in openai_server.requests)
    assert llama_body["grammar"] == FORCED.text
    assert vllm_body["structured_outputs"]["grammar"].startswith("%llguidance")


def test_a_grammar_reaches_a_llama_cpp_server(llama_server: Any) -> None:
    """llama-cpp-python's OpenAI-compatible server applies the grammar sent under `grammar`."""
    from t2s.llm.openai import OpenAILLM

    llm = OpenAILLM(model=llama_server.model, base_url=llama_server.url, grammar_field="grammar")
    answer, = llm.generate([LLMRequest.chat(QUESTION, GenParams(max_new_tokens=24, constraint=FORCED))])
    assert _forced_ok(answer.text), answer.text


def test_the_scripted_llm_holds_its_replies_to_the_constraint() -> None:
    llm = ScriptedLLM(rules=[{"match": "good", "reply": fenced("SELECT name FROM singer")},
                             {"match": "bad", "reply": fenced("SELECT pet_type FROM singer")}])
    ok, = llm.generate([LLMRequest(prompt="good", params=GenParams(constraint=grammar()))])
    assert ok.text == fenced("SELECT name FROM singer")
    with pytest.raises(ConstraintViolation, match="pet"):
        llm.generate([LLMRequest(prompt="bad", params=GenParams(constraint=grammar()))])
    llm.generate([LLMRequest(prompt="bad")])  # no constraint, no check


class _NoConstraints(LLM):
    """A backend with no constrained decoding."""

    backend = "none"

    @property
    def model_id(self) -> str:
        return "none"

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        return [LLMResponse(texts=["SELECT 1"], prompt_tokens=1, completion_tokens=1, seconds=0.0) for _ in requests]


def test_a_backend_without_a_mechanism_refuses_instead_of_ignoring() -> None:
    llm = _NoConstraints()
    check_supported(llm, [LLMRequest(prompt="x")])
    with pytest.raises(ConstraintNotSupported, match="decoding=free"):
        check_supported(llm, [LLMRequest(prompt="x", params=GenParams(constraint=FORCED))], "generator")
    from t2s.llm.vllm import VLLM

    # the vllm backend passes both kinds on as structured outputs (tests/test_llm_vllm.py, in the vLLM lane)
    assert set(VLLM.constraint_kinds) == {"grammar", "json_schema"}


# ------------------------------------------------------------------------------------------------ configuration
def test_the_decoding_group_reaches_every_sql_stage(session_cache: Path) -> None:
    cfg = compose_config(["decoding=sql", "fixer=chase", "fixer.decoding=free"], cache_dir=session_cache)
    generator, fixer = build_stage("generator", cfg.generator), build_stage("fixer", cfg.fixer)
    assert generator.decoding.mode == "sql" and fixer.decoding.mode == "free"
    assert [type(a) for a in generator.artifacts()] == [SqlGrammarArtifact] and fixer.artifacts() == []
    cfg = compose_config(["decoding=sql", "fixer=chase", "+decoding@fixer.decoding=sql_strict", "decoding.depth=3",
                          "generator=few_shot"], cache_dir=session_cache)
    generator, fixer = build_stage("generator", cfg.generator), build_stage("fixer", cfg.fixer)
    assert (generator.decoding.mode, generator.decoding.depth) == ("sql", 3)
    assert (fixer.decoding.mode, fixer.decoding.depth) == ("sql_strict", 2)
    with pytest.raises(ValueError, match="decoding mode"):
        Decoding(mode="regex")


def test_only_the_strict_mode_changes_the_prompt(session_cache: Path) -> None:
    """sql_strict asks for <table>.<column> in the system message; free and sql send the prompt as it was."""
    from t2s.decoding import instructed

    request = LLMRequest.chat(QUESTION)
    for mode in ("free", "sql"):
        cfg = compose_config([f"decoding={mode}"], cache_dir=session_cache)
        assert instructed(request, build_stage("generator", cfg.generator).decoding) == request
    cfg = compose_config(["decoding=sql_strict"], cache_dir=session_cache)
    strict = instructed(request, build_stage("generator", cfg.generator).decoding)
    assert strict.messages[0][1].startswith(QUESTION[0]["content"]) and "<table>.<column>" in strict.messages[0][1]
    assert strict.messages[1:] == request.messages[1:]


def test_free_decoding_keeps_the_fingerprint_of_runs_made_before_it(session_cache: Path) -> None:
    """A run directory made before the `decoding` group existed records no decoding keys; it still resumes."""
    cfg = result_config(_plain(compose_config(["fixer=chase"], cache_dir=session_cache)))
    before = json.loads(json.dumps(cfg))
    before.pop("decoding")
    for stage in ("generator", "fixer"):
        before[stage].pop("decoding")
    assert fingerprint(before) == fingerprint(cfg)
    constrained = result_config(_plain(compose_config(["fixer=chase", "decoding=sql"], cache_dir=session_cache)))
    assert fingerprint(constrained) != fingerprint(cfg)


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    out.pop("hydra", None)
    return out


# ------------------------------------------------------------------ the stages' reply formats, with a scripted LLM
DB_SQL = """
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
INSERT INTO singer VALUES (1,'Ana','France',52),(2,'Bo','France',45),(3,'Cy','Germany',30);
"""


def _world(tmp_path: Path, rules: list[dict[str, Any]], questions: dict[str, tuple[str, str]]) -> list[str]:
    db = tmp_path / "dbs" / "music" / "music.sqlite"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.executescript(DB_SQL)
    con.close()
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"id": k, "question": q, "db_id": "music", "sql": s}) + "\n"
                                              for k, (q, s) in questions.items()))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"rules": rules, "default": "no idea"}))
    return ["dataset=jsonl", f"dataset.path={tmp_path / 'q.jsonl'}", f"dataset.db_dir={tmp_path / 'dbs'}",
            "llm=scripted", f"llm.path={tmp_path / 'rules.yaml'}", "run.llm_cache=false", "decoding=sql"]


def _records(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {r["qid"]: r for r in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines())}


def test_a_generator_answer_in_its_format_passes_and_one_outside_it_is_refused(tmp_path: Path,
                                                                              session_cache: Path) -> None:
    """zero_shot under decoding=sql: the fenced SELECT is what the grammar allows and what `parse_sql` reads; a reply
    naming a column the database lacks cannot come from a constrained model (the scripted LLM refuses to give it)."""
    questions = {"count": ("How many singers are there?", "SELECT count(*) FROM singer"),
                 "pets": ("What are the pet types?", "SELECT name FROM singer")}
    rules = [{"match": "How many singers", "reply": fenced("SELECT count(*) FROM singer;")},
             {"match": "pet types", "reply": fenced("SELECT pet_type FROM singer")}]
    cfg = compose_config([*_world(tmp_path, rules, questions), "run.allow_errors=true"], cache_dir=session_cache)
    metrics = run(cfg, run_dir=tmp_path / "run")
    recs = _records(tmp_path / "run")
    assert recs["count"]["final_sql"] == "SELECT count(*) FROM singer" and recs["count"]["correct"]
    assert recs["count"]["candidates"][0]["meta"]["decoding"] == "sql"
    assert "pets" not in recs
    error, = map(json.loads, (tmp_path / "run" / "errors.jsonl").read_text().splitlines())
    assert error["qid"] == "pets" and "ConstraintViolation" in error["pipeline_error"]
    assert "pet_type" in error["pipeline_error"] and "generator/zero_shot:sql:music" in error["pipeline_error"]
    assert metrics["pipeline_errors"]["count"] == 1


def test_a_chase_repair_is_a_reflection_and_one_select(tmp_path: Path, session_cache: Path) -> None:
    """fixer=chase under decoding=sql: the repair prompt's reply format (a reflection, then one ```sql fence with one
    SELECT of the database) carries the constraint, and `last_sql` reads the repaired query from it."""
    questions = {"france": ("Names of singers from France?", "SELECT name FROM singer WHERE country = 'France'")}
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"qid": "france", "sql": "SELECT nme FROM singer WHERE country = 'France'"}) + "\n")
    reply = "The column is called name, not nme.\n\n" + fenced("SELECT name FROM singer WHERE country = \"France\"")
    rules = [{"match": "no such column", "reply": reply}]
    cfg = compose_config([*_world(tmp_path, rules, questions), "generator=from_file", f"generator.path={preds}",
                          "fixer=chase"], cache_dir=session_cache)
    run(cfg, run_dir=tmp_path / "run")
    rec = _records(tmp_path / "run")["france"]
    assert rec["final_sql"] == 'SELECT name FROM singer WHERE country = "France"' and rec["correct"]
    assert rec["candidates"][0]["origin"] == "fixer/chase" and rec["candidates"][0]["meta"]["decoding"] == "sql"
    chase = ScriptedLLM(rules=[{"match": ".", "reply": "Add the column.\n```sql\nCREATE TABLE singer (nme TEXT)\n```"}])
    fixer = build_stage("fixer", cfg.fixer)
    constraint = Constraint.grammar(sql_grammar(introspect(tmp_path / "dbs" / "music" / "music.sqlite", "music"),
                                                "sql").wrap(lead="[^`]{0,400}"))
    with pytest.raises(ConstraintViolation, match="CREATE"):
        chase.generate([LLMRequest(prompt="x", params=dataclasses.replace(fixer.params, constraint=constraint))])


# --------------------------------------------------------------------------------- the tiny model under decoding=sql
def names_problem(sql: str, schema: DatabaseSchema) -> str | None:
    """Why `sql` is not a query over `schema`'s own names (None when it is): it must parse (sqlglot, SQLite), name
    only schema tables, and only schema columns; a double-quoted name that is no column is a string to SQLite."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError as e:
        return f"does not parse: {e}"
    tables = {t.name.lower() for t in schema.tables}
    columns = {c.name.lower() for t in schema.tables for c in t.columns}
    for t in tree.find_all(exp.Table):
        if t.name and t.name.lower() not in tables:
            return f"table {t.name!r}"
    for c in tree.find_all(exp.Column):
        if c.name.lower() not in columns and f'"{c.name}"' not in sql:
            return f"column {c.name!r}"
    return None


@requires_spider
def test_the_tiny_model_under_decoding_sql_writes_only_schema_sql(tmp_path: Path, session_cache: Path) -> None:
    """`t2s run llm=tiny decoding=sql dataset=spider_dev dataset.limit=20`: the random model's answers that end
    (not cut by max_new_tokens) all parse and name only their database's tables and columns; most end."""
    cfg = compose_config(["decoding=sql", "dataset=spider_dev", "dataset.limit=20"], cache_dir=session_cache)
    run(cfg, run_dir=tmp_path / "run")
    finished, cut = [], []
    for rec in _records(tmp_path / "run").values():
        cand, = rec["candidates"]
        (finished if cand["meta"]["finish_reason"] == "stop" else cut).append(rec)
    assert len(finished) + len(cut) == 20 and len(finished) > len(cut)
    schemas: dict[str, DatabaseSchema] = {}
    for rec in finished:
        db = Path(cfg.dataset.root) / "database" / rec["db_id"] / f"{rec['db_id']}.sqlite"
        schema = schemas.setdefault(rec["db_id"], introspect(db, rec["db_id"], cache_dir=session_cache / "schemas"))
        assert names_problem(rec["final_sql"], schema) is None, (names_problem(rec["final_sql"], schema),
                                                                 rec["final_sql"])
    for rec in cut:  # cut answers are counted apart: a prefix of the grammar, not a whole query
        assert rec["candidates"][0]["meta"]["finish_reason"] in ("length", "loop")
