"""PV-SQL checklist (plugins/verifier/pv/constraints.py): extraction, AST / execution / shape checks, repair prompt.

Questions in the extraction tests are written here (not taken from Spider dev, the held-out split).
Checks run on small real SQLite files through the real `SQLExecutor`; the Spider sample tests need T2S_DATA.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from t2s_plugins.verifier.pv.constraints import (
    CATEGORIES,
    CheckReport,
    Constraint,
    Violation,
    check_candidate,
    check_candidates,
    check_syntax,
    constraint_satisfied,
    extract_constraints,
    gold_features,
)
from t2s_plugins.verifier.pv.prompts import REPAIR_PROMPT, build_repair_messages, parse_repair_response

from t2s.db.execute import SQLExecutor
from t2s.prompts import load_prompt

SPIDER = Path(os.environ.get("T2S_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "spider"
requires_spider = pytest.mark.skipif(not (SPIDER / "dev.json").is_file(),
                                     reason=f"Spider dev not found under {SPIDER} (set T2S_DATA to the shared data root)")


def cats(question: str, evidence: str = "") -> dict[str, list[Constraint]]:
    out: dict[str, list[Constraint]] = {}
    for c in extract_constraints(question, evidence):
        out.setdefault(c.category, []).append(c)
    return out


def tree(sql: str) -> exp.Expression:
    t = check_syntax(sql)
    assert not isinstance(t, Violation), t
    return t


# ------------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize(("question", "category", "params"), [
    ("List the distinct cities of the airports.", "distinct", {}),
    ("Show the 4 largest lakes by area.", "top_k", {"k": 4}),
    ("Which are the top five teams by wins?", "top_k", {"k": 5}),
    ("How many pilots are there?", "count", {"scalar": True}),
    ("How many pilots does each airline employ?", "count", {"scalar": False}),
    ("Which lake has the largest area?", "order", {"direction": "desc", "kind": "superlative"}),
    ("Name the cheapest product.", "order", {}),
    ("Which employee is the youngest?", "order", {"direction": None, "kind": "superlative"}),
    ("List the teams in descending order of wins.", "order", {"direction": "desc", "kind": "sort"}),
    ("List the teams alphabetically.", "order", {"direction": "asc", "kind": "sort"}),
    ("List the teams in reverse alphabetical order.", "order", {"direction": "desc", "kind": "sort"}),
    ("Which lakes have more than 300 fish?", "comparison", {"op": "gt", "value": 300.0}),
    ("Which teams won at least 10 games?", "comparison", {"op": "ge", "value": 10.0}),
    ("Products priced between 5 and 20?", "comparison", {"op": "between", "value": [5.0, 20.0]}),
    ("Which pilots have never flown a Boeing?", "negation", {}),
    ("How many flights leave from each airport?", "grouping", {}),
    ("What is the average salary of pilots?", "aggregate", {"agg": "avg"}),
    ("What is the sum of all salaries?", "aggregate", {"agg": "sum"}),
    ("Which albums were released after 1999?", "date", {"value": "1999", "op": "gt"}),
    ("Which orders were placed before 2001-05-02?", "date", {"value": "2001-05-02", "op": "lt"}),
    ("Which films came out in 1984?", "date", {"value": "1984", "op": "eq"}),
    ("Which airports have both domestic and international flights?", "set_operation", {"kind": "both"}),
    ("Which pilots fly either Airbus or Boeing planes?", "set_operation", {"kind": "either"}),
    ("Which cities have airports but no train stations?", "set_operation", {"kind": "but_not"}),
])
def test_extracts_each_category(question: str, category: str, params: dict) -> None:
    found = cats(question).get(category)
    assert found, f"no {category} constraint in {question!r}: {extract_constraints(question)}"
    assert any(all(c.params.get(k) == v for k, v in params.items()) for c in found), found
    assert all(c.span and c.span.lower() in " ".join(question.split()).lower() for c in found)


def test_all_ten_categories_are_reachable() -> None:
    assert len(CATEGORIES) == 10


@pytest.mark.parametrize(("question", "category"), [
    ("List the name and age of each singer.", "grouping"),        # "each" without an aggregate
    ("Which teams won at most 3 games?", "order"),                # "at most" is a comparison, not a superlative
    ("Which countries are different from France?", "distinct"),   # "different from"
    ("Name players with no more than 2 cards.", "negation"),      # "no more than" is a comparison
    ("What is the average max temperature?", "order"),            # "average" + column word, not a superlative
    ("Which songs were released after 1999?", "comparison"),      # a year goes to `date`, not `comparison`
    ("What is the name of the first singer?", "top_k"),           # no number after "first"
    ("List the room count of each apartment.", "count"),          # "count" inside a column phrase
])
def test_precision_guards(question: str, category: str) -> None:
    assert category not in cats(question), extract_constraints(question)


def test_evidence_adds_only_explicit_sql() -> None:
    got = cats("Which school is best?", "best refers to MAX(score); DISTINCT school names")
    assert any(c.source == "evidence" and c.params["direction"] == "desc" for c in got["order"])
    assert got["distinct"][0].source == "evidence"
    assert "count" not in cats("Name the schools.", "schools refers to the number of rows in school")


def test_records_round_trip_through_json() -> None:
    cons = extract_constraints("Show the 3 oldest singers from each country that are not French, after 1990.")
    assert {c.category for c in cons} >= {"top_k", "order", "negation", "date"}
    back = [Constraint.from_dict(json.loads(json.dumps(c.to_dict()))) for c in cons]
    assert back == cons
    report = CheckReport(sql="SELECT 1", violations=[Violation(stage="shape", message="m", category="top_k")],
                         checks=3, passed=2, rows=4)
    again = CheckReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report and isinstance(again.violations[0], Violation)


# ------------------------------------------------------------------------------------------ AST checks


@pytest.mark.parametrize(("question", "good", "bad"), [
    ("List the distinct cities.", "SELECT DISTINCT city FROM a", "SELECT city FROM a"),
    ("Show the 3 largest lakes.", "SELECT name FROM lake ORDER BY area DESC LIMIT 3", "SELECT name FROM lake ORDER BY area DESC"),
    ("How many lakes are there?", "SELECT count(*) FROM lake", "SELECT name FROM lake"),
    ("Which lake has the largest area?", "SELECT name FROM lake WHERE area = (SELECT max(area) FROM lake)",
     "SELECT name FROM lake ORDER BY area ASC LIMIT 1"),
    ("List the lakes in descending order of depth.", "SELECT name FROM lake ORDER BY depth DESC",
     "SELECT name FROM lake ORDER BY depth"),
    ("Which lakes have more than 300 fish?", "SELECT name FROM lake WHERE fish > 300",
     "SELECT name FROM lake WHERE fish < 300"),
    ("Lakes with depth between 5 and 20?", "SELECT name FROM lake WHERE depth >= 5 AND depth <= 20",
     "SELECT name FROM lake WHERE depth >= 5"),
    ("Which pilots have never flown?", "SELECT name FROM pilot WHERE id NOT IN (SELECT pilot FROM flight)",
     "SELECT name FROM pilot WHERE id IN (SELECT pilot FROM flight)"),
    ("How many flights leave each airport?", "SELECT src, count(*) FROM flight GROUP BY src",
     "SELECT src, count(*) FROM flight"),
    ("What is the average salary?", "SELECT CAST(sum(salary) AS REAL) / count(*) FROM pilot",
     "SELECT max(salary) FROM pilot"),
    ("Which albums came out after 1999?", "SELECT title FROM album WHERE year > 1999",
     "SELECT title FROM album WHERE year < 1999"),
    ("Orders before 2001-05-02?", "SELECT id FROM orders WHERE placed < \"2001-05-02\"",
     "SELECT id FROM orders WHERE placed > '2001-05-02'"),
    ("Which airports have both domestic and international flights?",
     "SELECT a FROM f WHERE k = 'd' INTERSECT SELECT a FROM f WHERE k = 'i'", "SELECT a FROM f WHERE k = 'd'"),
    ("Which cities have airports but no stations?", "SELECT city FROM airport EXCEPT SELECT city FROM station",
     "SELECT city FROM airport UNION SELECT city FROM station"),
])
def test_constraint_checks_accept_good_and_flag_bad(question: str, good: str, bad: str) -> None:
    cons = extract_constraints(question)
    assert cons, question
    assert all(constraint_satisfied(c, tree(good)) for c in cons), [c for c in cons if not constraint_satisfied(c, tree(good))]
    assert not all(constraint_satisfied(c, tree(bad)) for c in cons)


def test_gold_features() -> None:
    t = tree("SELECT DISTINCT a, count(*) FROM t WHERE y > 2001 AND z != 3 AND w > 5 GROUP BY a "
             "ORDER BY avg(b) DESC LIMIT 3")
    assert gold_features(t) == {"distinct", "count", "date", "negation", "comparison", "grouping", "order",
                                "aggregate", "top_k"}
    assert gold_features(tree("SELECT a FROM t UNION SELECT b FROM u")) == {"set_operation"}


# ------------------------------------------------------------------------------ checks on a real database


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("pv") / "music.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER, debut INTEGER);
        CREATE TABLE song (id INTEGER PRIMARY KEY, singer_id INTEGER REFERENCES singer(id), title TEXT, sales REAL);
    """)
    con.executemany("INSERT INTO singer VALUES (?, ?, ?, ?, ?)", [
        (1, "Ada", "France", 52, 1990), (2, "Bo", "France", 31, 2005), (3, "Cy", "Spain", 45, 1998),
        (4, "Di", "Italy", 28, 2012), (5, "Ed", "Spain", 61, 1985),
    ])
    con.executemany("INSERT INTO song VALUES (?, ?, ?, ?)", [
        (1, 1, "A1", 10.5), (2, 1, "A2", 3.0), (3, 3, "C1", 7.25), (4, 4, "D1", 1.0),
    ])
    con.commit()
    con.close()
    return str(path)


@pytest.fixture(scope="module")
def executor() -> Iterator[SQLExecutor]:
    with SQLExecutor(timeout=2.0, workers=1) as ex:
        yield ex


def test_top_k_shape_and_constraint(db: str, executor: SQLExecutor) -> None:
    cons = extract_constraints("Who are the 3 oldest singers?")
    bad = check_candidate("SELECT name FROM singer ORDER BY age DESC", cons, db_path=db, executor=executor)
    stages = {(v.stage, v.category) for v in bad.violations}
    assert ("shape", "top_k") in stages and ("constraint", "top_k") in stages
    msg = next(v.message for v in bad.violations if v.stage == "constraint")
    assert "3 oldest" in msg and "no LIMIT" in msg and "LIMIT 3" in msg
    assert next(v.message for v in bad.violations if v.stage == "shape").count("returned 5 rows")
    good = check_candidate("SELECT name FROM singer ORDER BY age DESC LIMIT 3", cons, db_path=db, executor=executor)
    assert good.ok and good.rows == 3 and good.passed == good.checks
    assert good.passed > bad.passed and good.checks == bad.checks


def test_scalar_count_expects_one_number(db: str, executor: SQLExecutor) -> None:
    cons = extract_constraints("How many singers are from Spain?")
    assert cons[0].params["scalar"] is True
    good = check_candidate("SELECT count(*) FROM singer WHERE country = 'Spain'", cons, db_path=db, executor=executor)
    assert good.ok, good.violations
    bad = check_candidate("SELECT name FROM singer WHERE country = 'Spain'", cons, db_path=db, executor=executor)
    shape = [v for v in bad.violations if v.stage == "shape"]
    assert shape and "one number" in shape[0].message and "2 row(s) x 1 column(s)" in shape[0].message
    wide = check_candidate("SELECT count(*), country FROM singer", cons, db_path=db, executor=executor)
    assert [v.stage for v in wide.violations] == ["shape"]


def test_syntax_error_stops_the_pipeline(db: str, executor: SQLExecutor) -> None:
    cons = extract_constraints("How many singers are there?")
    r = check_candidate("SELECT count(* FROM singer", cons, db_path=db, executor=executor)
    assert [v.stage for v in r.violations] == ["syntax"] and r.passed == 0 and r.checks == 4
    assert "not valid" in r.violations[0].message
    drop = check_candidate("DROP TABLE singer", cons, db_path=db, executor=executor)
    assert drop.violations[0].stage == "syntax" and "not a SELECT" in drop.violations[0].message
    assert check_candidate("", cons).violations[0].message.endswith("the SQL is empty.")


def test_execution_error_and_timeout(db: str, executor: SQLExecutor) -> None:
    cons = extract_constraints("What is the average age of singers?")
    r = check_candidate("SELECT avg(agee) FROM singer", cons, db_path=db, executor=executor)
    assert [v.stage for v in r.violations] == ["execution"]
    assert "no such column: agee" in r.violations[0].message and r.exec_error
    assert r.passed == 2  # syntax + the AVG constraint still checked on the AST
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT avg(x) FROM c")
    t = check_candidate(slow, cons, db_path=db, executor=executor, timeout=0.3)
    assert t.exec_error == "timed out" and "time limit" in t.violations[0].message
    missing = check_candidate("SELECT avg(age) FROM singer", cons, db_path=db + ".absent", executor=executor)
    assert "database file not found" in missing.violations[0].message


def test_checks_without_database_skip_execution() -> None:
    cons = extract_constraints("Who are the 2 youngest singers?")
    r = check_candidate("SELECT name FROM singer ORDER BY age LIMIT 2", cons)
    assert r.ok and r.rows is None and r.checks == 1 + len(cons)


def test_batch_keeps_input_order(db: str, executor: SQLExecutor) -> None:
    q1 = extract_constraints("Which singers are not from France?")
    q2 = extract_constraints("List singers in descending order of age.")
    reports = check_candidates([
        ("SELECT name FROM singer WHERE country != 'France'", q1, db),
        ("SELECT name FROM singer ORDER BY age", q2, db),
        ("SELEC name", q2, db),
        ("SELECT name FROM singer WHERE country = 'France'", q1, db),
    ], executor)
    assert [r.ok for r in reports] == [True, False, False, False]
    assert reports[0].rows == 3 and reports[1].violations[0].category == "order"
    assert reports[3].violations[0].category == "negation"


def test_evidence_constraint_message(db: str, executor: SQLExecutor) -> None:
    cons = extract_constraints("Which song sold best?", "sold best refers to MAX(sales)")
    r = check_candidate("SELECT title FROM song ORDER BY sales LIMIT 1", cons, db_path=db, executor=executor)
    assert r.violations and all("MAX" in v.message or "DESC" in v.message for v in r.violations)
    assert any("evidence says" in v.message for v in r.violations)


# ------------------------------------------------------------------------------------------ repair prompt


def test_repair_prompt_request_and_response(db: str, executor: SQLExecutor) -> None:
    question = "Who are the 2 oldest singers from Spain?"
    cons = extract_constraints(question)
    report = check_candidate("SELECT name FROM singer WHERE country = 'Spain'", cons, db_path=db, executor=executor)
    msgs = build_repair_messages(question=question, schema="CREATE TABLE singer (name TEXT, age INT)",
                                 sql="SELECT name FROM singer WHERE country = 'Spain'", report=report,
                                 constraints=cons, evidence="Spain is a country", findings="age is in years")
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    for text in (question, "CREATE TABLE singer", "SELECT name FROM singer WHERE country = 'Spain'",
                 "Evidence: Spain is a country", "age is in years", "1. ", "LIMIT 2", "\u201c2 oldest\u201d"):
        assert text in user, text
    assert not any(f"{{{f}}}" in user for f in ("checklist", "violations", "sql", "schema", "question"))
    plain = build_repair_messages(question=question, schema="s", sql="SELECT 1", report=report, constraints=[])
    assert "Evidence:" not in plain[1]["content"] and "(none)" in plain[1]["content"]
    with pytest.raises(ValueError, match="nothing to repair"):
        build_repair_messages(question=question, schema="s", sql="SELECT 1", report=CheckReport(sql="SELECT 1"),
                              constraints=cons)
    reply = "The LIMIT was missing.\n```sql\nSELECT name FROM singer WHERE country = 'Spain' ORDER BY age DESC LIMIT 2;\n```"
    fixed = parse_repair_response(reply)
    assert fixed == "SELECT name FROM singer WHERE country = 'Spain' ORDER BY age DESC LIMIT 2"
    assert check_candidate(fixed, cons, db_path=db, executor=executor).ok
    assert parse_repair_response("I cannot help.") == ""


def test_repair_template_is_versioned() -> None:
    tpl = load_prompt(REPAIR_PROMPT)
    assert tpl.id == "pv_repair_v1"
    assert tpl.fields() == {"dialect", "schema", "question", "sql", "checklist", "violations", "evidence_block",
                            "findings_block"}


# ------------------------------------------------------------------------------------ real Spider sample


def _spider_sample(step: int) -> list[tuple[str, str, str]]:
    rows = json.loads((SPIDER / "dev.json").read_text())
    out = []
    for r in rows[::step]:
        path = SPIDER / "database" / r["db_id"] / f"{r['db_id']}.sqlite"
        if path.is_file():
            out.append((r["question"], r["query"], str(path)))
    return out


@requires_spider
def test_spider_sample_gold_mostly_passes(executor: SQLExecutor) -> None:
    sample = _spider_sample(8)
    assert len(sample) > 100
    checklists = [extract_constraints(q) for q, _, _ in sample]
    reports = check_candidates([(g, c, db) for (_, g, db), c in zip(sample, checklists, strict=True)], executor)
    extracted = sum(len(c) for c in checklists)
    satisfied = sum(len(c) - sum(v.stage == "constraint" for v in r.violations) for c, r in zip(checklists, reports, strict=True))
    assert extracted > 0.6 * len(sample)
    assert satisfied / extracted >= 0.9
    assert all(r.exec_error is None for r in reports)
    assert sum(not r.ok for r in reports) / len(reports) <= 0.08


@requires_spider
def test_spider_sample_dropping_limit_is_flagged(executor: SQLExecutor) -> None:
    flagged = tried = 0
    for question, gold, db in _spider_sample(2):
        cons = [c for c in extract_constraints(question) if c.category == "top_k"]
        if not cons:
            continue
        t = sqlglot.parse_one(gold, read="sqlite")
        if not isinstance(t, exp.Select) or t.args.get("limit") is None:
            continue
        t.set("limit", None)
        tried += 1
        r = check_candidate(t.sql(dialect="sqlite"), cons, db_path=db, executor=executor)
        flagged += any(v.category == "top_k" for v in r.violations)
    assert tried >= 1 and flagged == tried
