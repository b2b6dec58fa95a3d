"""The database profile (t2s.context.profile), its artifact, dataset descriptions and the profile-enriched formats."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import compose_config

from t2s.artifacts import library_version
from t2s.context.profile import (
    ProfileArtifact,
    load_descriptions,
    parse_summary,
    profile_database,
    read_bird_descriptions,
    stats_note,
    value_shape,
)
from t2s.run.prepare import prepare
from t2s.run.runner import make_env
from t2s.types import Example


def make_db(path: Path) -> Path:
    """A small real database: people with names, cities, birth dates (as text), scores (some null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, city TEXT, born TEXT, score REAL, c14 TEXT);
        CREATE TABLE visit (person_id INTEGER REFERENCES person(id), city TEXT);
    """)
    cities = ["Paris", "Paris", "Paris", "Lyon", "Lyon", "Nice", "New York", "Paris", None, "Lyon"]
    for i, city in enumerate(cities, 1):
        conn.execute("INSERT INTO person VALUES (?, ?, ?, ?, ?, ?)",
                     (i, f"Person {i}", city, f"19{60 + i}-0{1 + i % 9}-1{i % 10}", None if i % 4 == 0 else i * 1.5,
                      "A1" if i % 2 else "B2"))
    for i, city in enumerate(["Paris", "Lyon", "Nice", "Berlin"], 1):
        conn.execute("INSERT INTO visit VALUES (?, ?)", (i, city))
    conn.commit()
    conn.close()
    return path


def example(db: Path, db_id: str = "people") -> Example:
    return Example(qid="q0", question="Who lives in Paris?", db_id=db_id, db_path=str(db), gold_sql="SELECT 1")


def test_profile_statistics_on_a_real_database(tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.sqlite")
    prof = profile_database(str(db), "people", top_k=2)
    city = prof.column("person", "CITY")
    assert city is not None and city.rows == 10 and city.nulls == 1
    assert city.distinct == 4 and city.distinct_exact
    assert city.top_values == [["Paris", 4], ["Lyon", 3]]
    assert (city.min, city.max) == ("Lyon", "Paris")
    assert city.shapes == {"alpha": 1.0}
    assert city.lengths == {"min": 4, "max": 8, "mean": round((5 * 4 + 4 * 3 + 4 + 8) / 9, 2)}
    assert len(city.minhash) == 64
    born = prof.column("person", "born")
    assert born.main_shape() == "date" and "dates as text" in stats_note(born) and "unique" in stats_note(born)
    score = prof.column("person", "score")
    assert score.nulls == 2 and score.min == 1.5 and score.max == 15.0 and "2 null" in stats_note(score)
    # MinHash estimates column overlap: visit.city shares 3 of 5 distinct values with person.city
    assert 0.3 < city.jaccard(prof.column("visit", "city")) < 0.9
    assert city.jaccard(prof.column("person", "born")) < 0.2
    # above the exact limit, distinct counts are HyperLogLog estimates
    est = profile_database(str(db), "people", exact_distinct_limit=5).column("person", "name")
    assert not est.distinct_exact and abs(est.distinct - 10) <= 1 and stats_note(est).startswith("~")


def test_value_shapes() -> None:
    assert [value_shape(v) for v in (3, 2.5, "42", "-1.5", "2001-02-03", "03/04/1999", "2001-02-03 10:00:00",
                                     "10:30", "New York", "A1", "", b"\x00", "x@y.z!")] == [
        "integer", "decimal", "integer", "decimal", "date", "date", "datetime", "time", "alpha", "alnum", "empty",
        "blob", "other"]


def test_summary_parsing_tolerates_junk() -> None:
    assert parse_summary("Short: the city\nLong: City of residence;\nvalues like 'Paris'.") == (
        "the city", "City of residence; values like 'Paris'.")
    assert parse_summary("**Short summary**: x") == ("x", "")
    assert parse_summary("<unk> 17 ;; SELECT") == ("", "")


def write_bird_descriptions(db_dir: Path) -> None:
    folder = db_dir / "database_description"
    folder.mkdir(parents=True)
    # BIRD ships UTF-8 with a BOM and some files in Latin-1
    (folder / "person.csv").write_bytes("\ufefforiginal_column_name,column_name,column_description,data_format,"
                                        "value_description\nc14,customer segment,segment of the customer,text,"
                                        "A1: retail; B2: wholesale\nname,,,text,\n".encode("utf-8"))
    (folder / "Visit.csv").write_bytes("original_column_name,column_name,column_description,data_format,"
                                       "value_description\ncity,city,city visited (caf\xe9 trips),,\n".encode("latin-1"))


def test_bird_description_csvs_load_and_reach_the_schema_view(tmp_path: Path) -> None:
    db = make_db(tmp_path / "dev_databases" / "people" / "people.sqlite")
    write_bird_descriptions(db.parent)
    d = read_bird_descriptions(db)
    assert d.columns[("person", "c14")] == ("customer segment; segment of the customer",
                                            "format: text; A1: retail; B2: wholesale")
    assert d.columns[("person", "name")] == ("", "format: text")
    assert d.columns[("visit", "city")] == ("city visited (caf\xe9 trips)", "")

    cfg = compose_config(["schema_format=ddl_profile"], cache_dir=tmp_path / "cache")
    ex = example(db)
    env = make_env(cfg, [ex], tmp_path / "run")
    try:
        text = env.full_view(ex).text
        assert "c14 TEXT, -- customer segment; segment of the customer; format: text; A1: retail; B2: wholesale" in text
        assert "examples: 'Paris', 'Lyon'" in text  # most frequent values first
        # a linker's filtered view (no example given) is enriched from the same profile
        sub = env.view("S1", env.schema(ex).subset({"person": ["c14"]}))
        assert "CREATE TABLE person" in sub.text and "segment of the customer" in sub.text and "city" not in sub.text
        assert [c.name for c in sub.schema.tables[0].columns] == ["id", "c14"] and not sub.schema.tables[0].columns[1].description
        records = env.artifacts.records()
        assert [r.name for r in records] == ["profile"] and records[0].built_now
        first_path = records[0].path
    finally:
        env.close()
    # an edited description file is a different source: the profile is rebuilt
    csv = db.parent / "database_description" / "person.csv"
    csv.write_text(csv.read_text(encoding="utf-8-sig").replace("segment of the customer", "customer tier"))
    env = make_env(cfg, [ex], tmp_path / "run")
    try:
        assert "customer segment; customer tier" in env.full_view(ex).text
        assert env.artifacts.records()[0].path != first_path
    finally:
        env.close()


def test_kaggledbqa_style_tables_json_descriptions(tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.sqlite")
    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps([{
        "db_id": "people", "table_names_original": ["person", "visit"],
        "column_names_original": [[-1, "*"], [0, "id"], [0, "c14"], [1, "city"]],
        "column_descriptions": ["", "person id", "customer segment code", [1, "visited city"]],
        "table_descriptions": ["people we know", ""]}]))
    d = load_descriptions(db, "people", str(tables))
    assert d.columns[("person", "c14")] == ("customer segment code", "")
    assert d.columns[("visit", "city")] == ("visited city", "")
    assert d.tables == {"person": "people we know"}
    cfg = compose_config(["schema_format=markdown_profile", f"schema_format.tables_json={tables}"],
                         cache_dir=tmp_path / "cache")
    env = make_env(cfg, [example(db)], tmp_path / "run")
    try:
        text = env.full_view(example(db)).text
        assert "people we know" in text and "| c14 | TEXT | | customer segment code; unique" not in text
        assert "customer segment code; 2 distinct" in text
    finally:
        env.close()
    with pytest.raises(FileNotFoundError, match="tables_json"):
        load_descriptions(db, "people", str(tmp_path / "nope.json"))


def test_llm_summaries_are_batched_charged_offline_and_cached(tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.sqlite")
    rules = tmp_path / "rules.yaml"
    # by template and column (the columns of make_db), answered in column_summary's reply format (SUMMARY_REPLY)
    rules.write_text(yaml.safe_dump({"rules": [
        {"template": "column_summary", "when": {"column": "^c14$"},
         "answer": {"short": "customer segment code", "long": "Two codes, A1 and B2."}},
        *[{"template": "column_summary", "when": {"column": f"^{c}$"},
           "answer": {"short": f"the {c}", "long": f"Values of {c}."}}
          for c in ("id", "name", "city", "born", "score", "person_id")]]}))
    cfg = compose_config(["schema_format=ddl_profile", "schema_format.summary_llm=generator", "llm=scripted",
                          f"llm.path={rules}"], cache_dir=tmp_path / "cache")
    ex = example(db)
    env = make_env(cfg, [ex], tmp_path / "run")
    try:
        text = env.full_view(ex).text
        stats = env.llms.stats()
        assert "c14 TEXT, -- customer segment code; 2 distinct" in text
        assert "city TEXT, -- the city;" in text
        assert sum(int(s.get("calls", 0)) for s in stats.values()) == 8  # one per column, in one batch
        profile = env.artifact(env.schema_format.artifacts(env)[0], ex)
        assert profile.summary_llm == "generator" and profile.summary_prompt == "column_summary_v1"
        assert profile.column("person", "c14").long_summary == "Two codes, A1 and B2."
    finally:
        env.close()
    # another model behind the same name gets its own profile
    other = compose_config(["schema_format=ddl_profile", "schema_format.summary_llm=generator", "llm=scripted",
                            f"llm.path={rules}", "llm.default=other"], cache_dir=tmp_path / "cache")
    env2 = make_env(other, [ex], tmp_path / "run")
    env = make_env(cfg, [ex], tmp_path / "run")
    try:
        assert env2.schema_format.artifacts(env2)[0].key() != env.schema_format.artifacts(env)[0].key()
    finally:
        env.close()
        env2.close()


def test_datasketch_major_version_is_in_the_profile_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import t2s.artifacts as artifacts

    spec = ProfileArtifact()
    assert spec.libraries() == {"datasketch": library_version("datasketch")} != {"datasketch": "absent"}
    before = spec.key()
    monkeypatch.setattr(artifacts.metadata, "version", lambda package: "99.0.0")
    assert ProfileArtifact().libraries() == {"datasketch": "99"} and ProfileArtifact().key() != before


def test_prepare_builds_profiles_once(tmp_path: Path) -> None:
    cfg = compose_config(["schema_format=ddl_profile", "dataset.limit=4"], cache_dir=tmp_path / "cache")
    first = prepare(cfg, progress=False)
    assert first["artifacts"]["profile"]["built_now"] == first["artifacts"]["profile"]["count"] >= 1
    second = prepare(cfg, progress=False)
    assert second["artifacts"]["profile"]["built_now"] == 0
