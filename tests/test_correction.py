"""The correction stages (issue 11): fixer `chase`, corrector `share`, verifier `pv`.

Each runs end to end (`t2s.run.runner.run`) on a small real SQLite database, candidates read with
`generator=from_file`, a scripted LLM answering by rules on the template and its fields, written in the template's
reply format or, where a test is about the parser's tolerance, as a literal reply (so they hold whatever the prompt's
wording): for each stage a repair that fixes, one that breaks (seen in `metrics.json["attribution"]`), and one that
loops until its round limit; plus SHARE's chain with the deterministic BAM (and the deterministic renderer).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compose_config
from t2s_plugins.corrector.share import parse_mask_answers, parse_trajectory_reply, schema_problems
from t2s_plugins.corrector.share.trajectory import parse_trajectory
from t2s_plugins.fixer.chase import column_hint, last_sql

from t2s.db.introspect import introspect
from t2s.run.runner import run

DB_SQL = """
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, title TEXT, year INTEGER,
                      singer_id INTEGER REFERENCES singer(singer_id));
INSERT INTO singer VALUES (1,'Ana','France',52),(2,'Bo','France',45),(3,'Cy','Germany',30),(4,'Di','Spain',25),
                          (5,'Ed','Germany',20);
INSERT INTO concert VALUES (1,'Spring',2014,1),(2,'Summer',2015,1),(3,'Fall',2015,3),(4,'Winter',2016,4);
"""

QUESTIONS = {
    "france": ("What are the names of singers from France?", "SELECT name FROM singer WHERE country = 'France'"),
    "count": ("How many singers are there?", "SELECT count(*) FROM singer"),
    "oldest": ("What are the names of the 2 oldest singers?", "SELECT name FROM singer ORDER BY age DESC LIMIT 2"),
    "mars": ("Which singers are from Mars?", "SELECT name FROM singer WHERE country = 'Mars'"),
    "titles": ("What are the titles of concerts by singers from France?",
               "SELECT T1.title FROM concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id "
               "WHERE T2.country = 'France'"),
}


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    db_dir = tmp_path / "dbs" / "concerts"
    db_dir.mkdir(parents=True)
    con = sqlite3.connect(db_dir / "concerts.sqlite")
    con.executescript(DB_SQL)
    con.commit()
    con.close()
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": k, "question": q, "db_id": "concerts", "sql": s}) + "\n"
                                 for k, (q, s) in QUESTIONS.items()))
    return {"root": tmp_path, "questions": questions, "db_dir": tmp_path / "dbs", "db": db_dir / "concerts.sqlite"}


def run_stage(world: dict[str, Path], session_cache: Path, preds: dict[str, str], rules: list[dict[str, Any]],
              overrides: list[str], name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """One run over the questions in `preds` (their initial SQL read from a file), with a scripted LLM; returns the
    metrics and the prediction records by qid."""
    root = world["root"]
    (root / f"{name}.preds.jsonl").write_text("".join(json.dumps({"qid": k, "sql": s}) + "\n" for k, s in preds.items()))
    kept = [k for k in QUESTIONS if k in preds]
    (root / f"{name}.q.jsonl").write_text("".join(json.dumps({"id": k, "question": QUESTIONS[k][0], "db_id": "concerts",
                                                              "sql": QUESTIONS[k][1]}) + "\n" for k in kept))
    (root / f"{name}.rules.yaml").write_text(yaml.safe_dump({"rules": rules, "default": "no idea"}))
    cfg = compose_config([
        "dataset=jsonl", f"dataset.path={root / f'{name}.q.jsonl'}", f"dataset.db_dir={world['db_dir']}",
        "generator=from_file", f"generator.path={root / f'{name}.preds.jsonl'}",
        "llm=scripted", f"llm.path={root / f'{name}.rules.yaml'}", "run.llm_cache=false", *overrides,
    ], cache_dir=session_cache)
    metrics = run(cfg, run_dir=root / name)
    records = {r["qid"]: r for r in map(json.loads, (root / name / "predictions.jsonl").read_text().splitlines())}
    return metrics, records


def stage_calls(world: dict[str, Path], name: str, stage: str) -> dict[str, int]:
    traces = [json.loads(line) for line in (world["root"] / name / "traces.jsonl").read_text().splitlines()]
    return {t["qid"]: sum(e["llm_calls"] for e in t["events"] if e["stage"] == stage) for t in traces}


def fence(sql: str, prose: str = "") -> str:
    return f"{prose}\n```sql\n{sql}\n```"


# ---------------------------------------------------------------------- chase


def test_chase_fixes_an_error_keeps_good_candidates_and_links_the_repair(world: dict[str, Path],
                                                                           session_cache: Path) -> None:
    preds = {"france": "SELECT nme FROM singer WHERE country = 'France'", "count": "SELECT count(*) FROM singer"}
    # chase_fix_v2 lists the columns of the tables the failing query reads after the error
    rules = [{"template": "chase_fix_v2", "when": {"problem_block": "no such column: nme",
                                                   "columns_block": r"singer\b.*singer_id, name, country, age"},
              "answer": {"reflection": "The column is name, not nme.", "sql": QUESTIONS["france"][1]}}]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["fixer=chase"], "chase_fix")
    a = metrics["attribution"]["fixer/chase"]
    assert (a["fixed"], a["broken"], a["unchanged"]) == (1, 0, 1)
    assert recs["france"]["correct"] and recs["count"]["correct"]
    fixed = recs["france"]["candidates"][0]
    assert fixed["origin"] == "fixer/chase" and fixed["parent"] == "c0"
    assert "no such column: nme" in fixed["meta"]["trigger"] and fixed["meta"]["prompt"] == "chase_fix_v2"
    assert [r["outcome"] for r in fixed["meta"]["rounds"]] == ["error", "rows"]
    assert recs["france"]["dropped"][0]["sql"] == preds["france"]
    # a candidate that runs with rows passes unchanged, with no model call
    assert recs["count"]["candidates"][0]["origin"] == "generator/from_file"
    assert stage_calls(world, "chase_fix", "fixer") == {"france": 1, "count": 0}


def test_chase_repairing_an_empty_but_correct_answer_breaks_it(world: dict[str, Path], session_cache: Path) -> None:
    preds = {"mars": QUESTIONS["mars"][1]}
    rules = [{"template": "chase_fix", "when": {"sql": "'Mars'"},
              "answer": {"reflection": "Mars is not a country here.", "sql": "SELECT name FROM singer"}}]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["fixer=chase"], "chase_break")
    a = metrics["attribution"]["fixer/chase"]
    assert (a["fixed"], a["broken"], a["overcorrection_rate"]) == (0, 1, 1.0)
    assert recs["mars"]["candidates"][0]["meta"]["trigger"] == "empty result"
    # with fix_empty=false the empty (correct) answer is left alone
    metrics, _ = run_stage(world, session_cache, preds, rules, ["fixer=chase", "fixer.fix_empty=false"], "chase_noempty")
    assert metrics["attribution"]["fixer/chase"]["broken"] == 0


@pytest.mark.parametrize("rounds", [2, 3])
def test_chase_stops_at_its_round_limit_when_repairs_keep_failing(world: dict[str, Path], session_cache: Path,
                                                                 rounds: int) -> None:
    preds = {"count": "SELECT count(*) FROM singr"}
    rules = [{"template": "chase_fix", "when": {"problem_block": "no such table"},
              "answers": [{"sql": f"SELECT count(*) FROM singr{'r' * k}"} for k in range(1, 6)]}]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["fixer=chase", f"fixer.max_rounds={rounds}"],
                              f"chase_loop{rounds}")
    assert stage_calls(world, f"chase_loop{rounds}", "fixer") == {"count": rounds}
    cand = recs["count"]["candidates"][0]
    assert len(cand["meta"]["rounds"]) == rounds + 1 and all(r["outcome"] == "error" for r in cand["meta"]["rounds"])
    assert cand["sql"] == f"SELECT count(*) FROM singr{'r' * rounds}"  # the last attempt (all equally bad)
    assert metrics["attribution"]["fixer/chase"]["unchanged"] == 1


def test_chase_keeps_the_input_when_the_repair_of_an_empty_result_errors(world: dict[str, Path],
                                                                          session_cache: Path) -> None:
    preds = {"france": "SELECT name FROM singer WHERE country = 'france'"}
    # the repair of the empty result errors; the repair of that error answers nothing new (the default reply)
    rules = [{"template": "chase_fix", "when": {"sql": "= 'france'"},
              "answer": {"sql": "SELECT name FROM singers WHERE country = 'France'"}}]
    _, recs = run_stage(world, session_cache, preds, rules, ["fixer=chase"], "chase_keep")
    assert recs["france"]["candidates"][0]["sql"] == preds["france"]
    assert stage_calls(world, "chase_keep", "fixer") == {"france": 2}


def test_chase_column_hint_lists_every_table_when_the_query_names_none_it_knows(world: dict[str, Path]) -> None:
    schema = introspect(world["db"], "concerts")
    assert [h["table"] for h in column_hint("SELECT count(*) FROM singr", schema)] == ["singer", "concert"]
    assert column_hint("SELECT T1.title FROM concert AS T1 WHERE T1.nope = 1", schema) == [
        {"table": "concert", "columns": "concert_id, title, year, singer_id"}]


def test_last_sql_takes_the_answer_after_the_reflection() -> None:
    reply = "The query ```sql\nSELECT nme FROM t\n``` uses nme.\n```sql\nSELECT name FROM t\n```"
    assert last_sql(reply) == "SELECT name FROM t"
    assert last_sql("SELECT a FROM b") == "SELECT a FROM b" and last_sql("no sql here") == ""
    # a small model echoing the schema in a fence: the DDL is not the answer
    assert last_sql("```sql\nSELECT x FROM t\n```\n```sql\nCREATE TABLE t (x INT)\n```") == "SELECT x FROM t"
    assert last_sql("```sql\nCREATE TABLE t (x INT)\n```") == ""


# ---------------------------------------------------------------------- pv


def test_pv_repairs_a_violated_constraint(world: dict[str, Path], session_cache: Path) -> None:
    preds = {"oldest": "SELECT name FROM singer ORDER BY age DESC", "count": "SELECT count(*) FROM singer"}
    rules = [{"template": "pv_repair", "when": {"violations": "no LIMIT"}, "answer": {"sql": QUESTIONS["oldest"][1]}}]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["verifier=pv"], "pv_fix")
    a = metrics["attribution"]["verifier/pv"]
    assert (a["fixed"], a["broken"]) == (1, 0)
    cand = recs["oldest"]["candidates"][0]
    assert cand["origin"] == "verifier/pv" and cand["parent"] == "c0" and cand["meta"]["prompt"] == "pv_repair_v1"
    before, after = cand["meta"]["checks"]["before"], cand["meta"]["checks"]["after"]
    assert after[0] > before[0] and after[0] == after[1]
    assert any("LIMIT" in m for m in cand["meta"]["trigger"])
    assert stage_calls(world, "pv_fix", "verifier") == {"oldest": 1, "count": 0}


def test_pv_a_repair_passing_more_checks_can_break_a_correct_answer(world: dict[str, Path], session_cache: Path) -> None:
    # correct by execution (the two oldest, in order) but with no LIMIT / ORDER BY: PV flags it, and the repair
    # passes every check with the wrong rows
    preds = {"oldest": "SELECT name FROM singer WHERE age >= 45"}
    rules = [{"template": "pv_repair", "when": {"violations": "no LIMIT"},
              "answer": {"sql": "SELECT name FROM singer ORDER BY age DESC LIMIT 2 OFFSET 1"}}]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["verifier=pv"], "pv_break")
    a = metrics["attribution"]["verifier/pv"]
    assert (a["fixed"], a["broken"], a["input_correct"], a["overcorrection_rate"]) == (0, 1, 1, 1.0)
    assert "OFFSET 1" in recs["oldest"]["final_sql"]


def test_pv_loops_to_its_round_limit_and_keeps_the_original_when_no_repair_passes_more(
        world: dict[str, Path], session_cache: Path) -> None:
    preds = {"oldest": "SELECT name FROM singer WHERE age >= 45"}
    rules = [{"template": "pv_repair", "when": {"violations": "no LIMIT"},
              "answers": [{"sql": f"SELECT name FROM singer WHERE age >= {k}"} for k in range(40, 46)]}]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["verifier=pv", "verifier.max_rounds=3"], "pv_loop")
    assert stage_calls(world, "pv_loop", "verifier") == {"oldest": 3}
    assert recs["oldest"]["candidates"][0]["sql"] == preds["oldest"]  # no repair passed more checks
    assert recs["oldest"]["candidates"][0]["origin"] == "generator/from_file"
    assert metrics["attribution"]["verifier/pv"]["unchanged"] == 1


def test_pv_repairs_sql_that_fails_to_run(world: dict[str, Path], session_cache: Path) -> None:
    preds = {"count": "SELECT count(*) FROM singers"}
    rules = [{"template": "pv_repair", "when": {"violations": "no such table: singers"},
              "answer": {"sql": "SELECT count(*) FROM singer"}}]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["verifier=pv"], "pv_exec")
    assert metrics["attribution"]["verifier/pv"]["fixed"] == 1 and recs["count"]["correct"]


# ---------------------------------------------------------------------- share

# by template and fields, answered in each template's reply format (`MASK_REPLY`, `TRAJECTORY_REPLY`, `SQL_REPLY`)
SAM_RULE = {"template": "share_sam", "answer": {"answers": ["singer.country", "singer.name"]}}


def lom_answer(country: str) -> dict[str, Any]:
    return {"trajectory": f"df1 = df.where(element = singer.country, filter = '{country}')\nres = df1.select(singer.name)"}


def lom_rule(country: str) -> dict[str, Any]:
    return {"template": "share_lom", "answer": lom_answer(country)}


def regen_answer(country: str) -> dict[str, Any]:
    return {"sql": f"SELECT name FROM singer WHERE country = '{country}'"}


def regen_rule(country: str) -> dict[str, Any]:
    return {"template": "share_regen", "answer": regen_answer(country)}


def test_share_chain_with_the_deterministic_bam_fixes_a_wrong_filter(world: dict[str, Path], session_cache: Path) -> None:
    preds = {"france": "SELECT name FROM singer WHERE country = 'Germany'"}
    rules = [SAM_RULE, lom_rule("France"), regen_rule("France")]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["corrector=share"], "share_fix")
    a = metrics["attribution"]["corrector/share"]
    assert (a["fixed"], a["broken"]) == (1, 0)
    cand = recs["france"]["candidates"][0]
    assert cand["origin"] == "corrector/share" and cand["parent"] == "c0"
    [step] = cand["meta"]["steps"]
    assert step["bam"] == "df1 = df.where(element = singer.country, filter = 'Germany')\nres = df1.select(singer.name)"
    assert step["sam_answers"] == ["singer.country", "singer.name"] and "'France'" in step["lom"]
    assert stage_calls(world, "share_fix", "corrector") == {"france": 3}  # SAM, LOM, regenerate (BAM is free)


def test_share_repairs_a_column_the_schema_lacks(world: dict[str, Path], session_cache: Path) -> None:
    """The lenient BAM keeps `singer.nation` in the trajectory; SAM re-links it to `singer.country`."""
    preds = {"france": "SELECT name FROM singer WHERE nation = 'France'"}
    rules = [SAM_RULE, lom_rule("France"), regen_rule("France")]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["corrector=share"], "share_column")
    assert metrics["attribution"]["corrector/share"]["fixed"] == 1
    [step] = recs["france"]["candidates"][0]["meta"]["steps"]
    assert "singer.nation" in step["bam"] and "singer.country" in step["sam"]
    _, recs = run_stage(world, session_cache, preds, rules, ["corrector=share", "corrector.lenient=false"],
                        "share_column_strict")
    assert recs["france"]["candidates"][0]["origin"] == "generator/from_file"


def test_share_render_regeneration_joins_by_foreign_keys_without_a_model_call(world: dict[str, Path],
                                                                            session_cache: Path) -> None:
    preds = {"titles": "SELECT T1.title FROM concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id "
                       "WHERE T2.country = 'Germany'"}
    # SAM's answers unnumbered, as small models write them: the parser reads them too
    rules = [{"template": "share_sam", "reply": "```\nsinger.country\nconcert.title\n```"},
             {"template": "share_lom", "answer": {"trajectory": "df1 = df.where(element = singer.country, filter = "
                                                                "'France')\nres = df1.select(concert.title)"}}]
    metrics, recs = run_stage(world, session_cache, preds, rules,
                              ["corrector=share", "corrector.regenerate=render"], "share_render")
    assert metrics["attribution"]["corrector/share"]["fixed"] == 1
    assert "JOIN" in recs["titles"]["final_sql"] and "'France'" in recs["titles"]["final_sql"]
    assert stage_calls(world, "share_render", "corrector") == {"titles": 2}


def test_share_overcorrects_a_correct_candidate(world: dict[str, Path], session_cache: Path) -> None:
    preds = {"france": QUESTIONS["france"][1]}
    rules = [SAM_RULE, lom_rule("Germany"), regen_rule("Germany")]
    metrics, _ = run_stage(world, session_cache, preds, rules, ["corrector=share"], "share_break")
    a = metrics["attribution"]["corrector/share"]
    assert (a["fixed"], a["broken"], a["overcorrection_rate"]) == (0, 1, 1.0)


def test_share_keeps_the_input_when_a_step_does_not_parse(world: dict[str, Path], session_cache: Path) -> None:
    preds = {"france": "SELECT name FROM singer WHERE country = 'Germany'", "count": "SELECT count(*) FROM singer"}
    rules = [SAM_RULE, {"template": "share_lom", "reply": "The trajectory looks fine to me!"},
             regen_rule("France"), {"template": "share_sam", "reply": "no"}]
    metrics, recs = run_stage(world, session_cache, preds, rules, ["corrector=share"], "share_junk")
    assert all(r["candidates"][0]["origin"] == "generator/from_file" for r in recs.values())
    assert metrics["attribution"]["corrector/share"]["unchanged"] == 2
    # a SAM fill naming a column the schema lacks stops the chain before LOM, too
    rules = [{"template": "share_sam", "answer": {"answers": ["singer.nation", "singer.name"]}}, lom_rule("France"),
             regen_rule("France")]
    _, recs = run_stage(world, session_cache, {"france": preds["france"]}, rules, ["corrector=share"], "share_badcol")
    assert recs["france"]["candidates"][0]["sql"] == preds["france"]
    assert stage_calls(world, "share_badcol", "corrector") == {"france": 1}
    # a regeneration that echoes the schema's DDL instead of a query keeps the input
    rules = [SAM_RULE, lom_rule("France"), {"template": "share_regen", "answer": {"sql": "CREATE TABLE singer (name TEXT)"}}]
    _, recs = run_stage(world, session_cache, {"france": preds["france"]}, rules, ["corrector=share"], "share_ddl")
    assert recs["france"]["candidates"][0]["sql"] == preds["france"]


def test_share_with_rounds_runs_the_chain_again_until_its_limit(world: dict[str, Path], session_cache: Path) -> None:
    preds = {"france": "SELECT name FROM singer WHERE country = 'Germany'"}
    countries = ["Spain", "Italy", "Peru", "Chile", "Japan"]
    rules = [SAM_RULE,
             {"template": "share_lom", "answers": [lom_answer(c) for c in countries]},
             {"template": "share_regen", "answers": [regen_answer(c) for c in countries]}]
    _, recs = run_stage(world, session_cache, preds, rules, ["corrector=share", "corrector.rounds=3"], "share_loop")
    cand = recs["france"]["candidates"][0]
    assert len(cand["meta"]["steps"]) == 3 and cand["sql"].endswith("'Peru'")
    assert stage_calls(world, "share_loop", "corrector") == {"france": 9}


def test_share_llm_bam_parses_the_models_trajectory(world: dict[str, Path], session_cache: Path) -> None:
    preds = {"france": "SELECT name FROM singer WHERE country = 'Germany'"}
    # prose and a fence of another language around the trajectory: the parser reads it
    rules = [{"template": "share_bam", "when": {"sql": "'Germany'"}, "reply": "Here it is:\n```python\ndf1 = df.where(element = "
              "singer.country, filter = 'Germany')\nres = df1.select(singer.name)\n```"},
             SAM_RULE, lom_rule("France"), regen_rule("France")]
    metrics, _ = run_stage(world, session_cache, preds, rules, ["corrector=share_llm"], "share_llm")
    assert metrics["attribution"]["corrector/share_llm"]["fixed"] == 1
    assert stage_calls(world, "share_llm", "corrector") == {"france": 4}


def test_share_reply_parsers(world: dict[str, Path]) -> None:
    assert parse_mask_answers("```\n1. singer.Name\n2) [MASK] -> `my t`.`a b`\n- concert\n```") == [
        "singer.Name", "`my t`.`a b`", "concert"]
    # SQL instead of answers is not an answer (the 0.5B model does this): it cannot fill a mask
    assert parse_mask_answers("SELECT count(*) FROM singer") == ["SELECT count(*) FROM singer"]
    traj = parse_trajectory_reply("Sure.\n```\n# step\ndf1 = df.where(element = singer.age, op = '>', filter = 30)\n"
                                  "res = df1.select(singer.name)\n```\nDone.")
    assert traj == parse_trajectory("df1 = df.where(element = singer.age, op = '>', filter = 30)\n"
                                    "res = df1.select(singer.name)")
    schema = introspect(str(world["db"]), "concerts")
    assert schema_problems(traj, schema) == []
    bad = parse_trajectory("res = df.select(singer.nation, [MASK])")
    assert schema_problems(bad, schema) == ["singer.nation", "[MASK]"]
