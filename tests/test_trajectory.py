"""SHARE action trajectories: text parser/formatter, deterministic BAM translator, FK-join renderer,
masking and perturbation, on small real SQLite databases and a sample of Spider dev gold queries."""

from __future__ import annotations

import json
import os
import random
import sqlite3
from pathlib import Path

import pytest
from t2s_plugins.corrector.share.trajectory import (
    PERTURB_KINDS,
    Agg,
    BoolOp,
    Col,
    Cond,
    Func,
    GroupBy,
    Join,
    Limit,
    Num,
    OrderBy,
    RenderError,
    Star,
    Statement,
    Str,
    Trajectory,
    TrajectoryError,
    TranslationError,
    Unsupported,
    Where,
    fill_masks,
    format_trajectory,
    mask_schema,
    parse_trajectory,
    perturb,
    perturbations,
    render_sql,
    sql_to_trajectory,
)

from t2s.db.introspect import introspect
from t2s.db.types import DatabaseSchema
from t2s.eval.execution import score_execution

DATA = Path(os.environ.get("T2S_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SPIDER = DATA / "spider"
requires_spider = pytest.mark.skipif(not (SPIDER / "dev.json").is_file(),
                                     reason=f"Spider dev.json not found under {SPIDER} (set T2S_DATA)")

DDL = """
CREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, name TEXT, capacity INTEGER);
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, year INTEGER,
                      stadium_id INTEGER REFERENCES stadium(stadium_id));
CREATE TABLE singer_in_concert (concert_id INTEGER REFERENCES concert(concert_id),
                                singer_id INTEGER REFERENCES singer(singer_id));
CREATE TABLE "order" ("group" TEXT, "my value" INTEGER);
INSERT INTO stadium VALUES (1, 'Arena', 5000), (2, 'Dome', 12000), (3, 'Field', 800);
INSERT INTO singer VALUES (1, 'Ann', 'France', 31), (2, 'Bob', 'France', 25), (3, 'Cid', 'Spain', 40),
                          (4, 'Dee', 'Italy', 19), (5, 'Eve', 'Spain', 33);
INSERT INTO concert VALUES (1, 'Spring', 2014, 1), (2, 'Summer', 2015, 2), (3, 'Autumn', 2015, 2),
                           (4, 'Winter', 2016, 3);
INSERT INTO singer_in_concert VALUES (1, 1), (1, 2), (2, 1), (2, 3), (3, 3), (3, 4), (4, 5), (2, 5);
INSERT INTO "order" VALUES ('a', 1), ('b', 2), ('a', 3);
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, DatabaseSchema]:
    path = tmp_path_factory.mktemp("traj") / "concerts.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    conn.commit()
    conn.close()
    return str(path), introspect(str(path), "concerts", n_samples=0)


def equivalent(db_path: str, gold: str, pred: str) -> bool:
    """Execution equivalence under the official Spider semantics, DISTINCT kept (the stricter check)."""
    [v] = score_execution([(gold, pred, [db_path])], workers=0, keep_distinct=True)
    assert v.status == "ok", (v, pred)
    return v.correct


# --------------------------------------------------------------------------------------------------
# translator
# --------------------------------------------------------------------------------------------------


def test_translator_writes_share_style_steps(db):
    _, schema = db
    t = sql_to_trajectory("SELECT name FROM singer WHERE country = 'France'", schema)
    assert format_trajectory(t) == ("df1 = df.where(element = singer.country, filter = 'France')\n"
                                    "res = df1.select(singer.name)")
    assert t.statements[0] == Statement("df1", "df", (Where(Cond(Col("singer", "country"), "=", Str("France"))),))


def test_translator_groupby_agg_orderby_limit(db):
    _, schema = db
    t = sql_to_trajectory("SELECT country, count(*) FROM singer GROUP BY country HAVING count(*) > 1 "
                          "ORDER BY avg(age) DESC LIMIT 1", schema)
    assert format_trajectory(t) == (
        "df1 = df.groupby(singer.country).having(element = count(*), op = '>', filter = 1)\n"
        "df2 = df1.orderby(by = avg(singer.age), asc = False).limit(1)\n"
        "res = df2.agg(singer.country, count(*))")
    t = sql_to_trajectory("SELECT country, count(*) FROM singer GROUP BY country", schema)
    assert format_trajectory(t) == "res = df.groupby(singer.country).agg(singer.country, count(*))"


def test_translator_omits_joins_that_foreign_keys_rebuild(db):
    _, schema = db
    sql = ("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
           "JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = 2015")
    t = sql_to_trajectory(sql, schema)
    assert "join" not in format_trajectory(t)
    assert render_sql(t, schema) == (
        "SELECT T3.name FROM concert AS T1 JOIN singer_in_concert AS T2 ON T1.concert_id = T2.concert_id "
        "JOIN singer AS T3 ON T2.singer_id = T3.singer_id WHERE T1.year = 2015")


def test_translator_keeps_unreferenced_and_non_fk_joins(db):
    db_path, schema = db
    # the bridge table only multiplies rows: join(singer_in_concert) must stay, FKs place it
    sql = ("SELECT T1.name, count(*) FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
           "GROUP BY T1.singer_id")
    text = format_trajectory(sql_to_trajectory(sql, schema))
    assert text == "res = df.join(singer_in_concert).groupby(singer.singer_id).agg(singer.name, count(*))"
    assert equivalent(db_path, sql, render_sql(parse_trajectory(text), schema))
    # a join on columns no foreign key links is written out
    sql = "SELECT T1.name FROM singer AS T1 JOIN stadium AS T2 ON T1.age = T2.stadium_id"
    t = sql_to_trajectory(sql, schema)
    assert t.statements[0].actions[0] == Join(left=Col("singer", "age"), right=Col("stadium", "stadium_id"))
    assert equivalent(db_path, sql, render_sql(t, schema))
    # a table read by count(*) only
    assert format_trajectory(sql_to_trajectory("SELECT count(*) FROM concert", schema)) == \
        "res = df.join(concert).select(count(*))"


def test_translator_subqueries_and_set_operations(db):
    _, schema = db
    t = sql_to_trajectory("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer) "
                          "AND singer_id NOT IN (SELECT singer_id FROM singer_in_concert)", schema)
    assert format_trajectory(t) == (
        "tmp_res1 = df.select(avg(singer.age))\n"
        "tmp_res2 = df.select(singer_in_concert.singer_id)\n"
        "df1 = df.where(element = singer.age, op = '>', filter = tmp_res1)\n"
        "df2 = df1.where(element = singer.singer_id, op = 'not in', filter = tmp_res2)\n"
        "res = df2.select(singer.name)")
    t = sql_to_trajectory("SELECT name FROM singer WHERE country = 'France' "
                          "INTERSECT SELECT name FROM singer WHERE age < 30", schema)
    assert format_trajectory(t).splitlines()[-1] == "res = tmp_res1.intersect(tmp_res2)"


def test_translator_reads_double_quoted_strings_and_resolves_aliases(db):
    _, schema = db
    t = sql_to_trajectory('SELECT count(*) AS n FROM singer AS s WHERE s.country = "France" ORDER BY n', schema)
    assert Where(Cond(Col("singer", "country"), "=", Str("France"))) in t.statements[0].actions
    assert OrderBy((Func("count", (Star(),)),), (True,)) in t.statements[1].actions


def test_translator_errors_name_the_construct(db):
    _, schema = db
    with pytest.raises(Unsupported) as e:
        sql_to_trajectory("SELECT T1.name FROM singer AS T1 LEFT JOIN singer_in_concert AS T2 "
                          "ON T1.singer_id = T2.singer_id", schema)
    assert e.value.construct == "outer join"
    with pytest.raises(Unsupported) as e:
        sql_to_trajectory("SELECT T1.name FROM singer AS T1 JOIN singer AS T2 ON T1.age = T2.age", schema)
    assert e.value.construct == "self join"
    with pytest.raises(Unsupported) as e:
        sql_to_trajectory("SELECT name FROM singer AS s WHERE EXISTS (SELECT 1 FROM singer_in_concert AS c "
                          "WHERE c.singer_id = s.singer_id)", schema)
    assert e.value.construct == "correlated subquery"
    with pytest.raises(TranslationError, match="unknown column 'nope'"):
        sql_to_trajectory("SELECT nope FROM singer", schema)
    with pytest.raises(TranslationError, match="cannot parse"):
        sql_to_trajectory("SELECT FROM WHERE (", schema)


def test_lenient_translation_keeps_a_missing_column_for_sam(db):
    """SHARE's BAM writes what the SQL says; the lenient translator does too, so SAM sees the wrong column."""
    _, schema = db
    t = sql_to_trajectory("SELECT T1.nation, nope FROM singer AS T1 WHERE T1.age > 30", schema, lenient=True)
    assert format_trajectory(t) == ("df1 = df.where(element = singer.age, op = '>', filter = 30)\n"
                                    "res = df1.select(singer.nation, singer.nope)")
    with pytest.raises(TranslationError, match="unknown table"):
        sql_to_trajectory("SELECT name FROM singers", schema, lenient=True)


ROUND_TRIP_SQL = [
    "SELECT name FROM singer WHERE country = 'France' AND age >= 25",
    "SELECT name, age FROM singer ORDER BY age DESC, name ASC LIMIT 2 OFFSET 1",
    "SELECT DISTINCT country FROM singer WHERE age BETWEEN 20 AND 35",
    "SELECT name FROM singer WHERE country IN ('Spain', 'Italy') OR name LIKE 'A%'",
    "SELECT name FROM singer WHERE NOT (country = 'France' OR age < 20)",
    "SELECT count(DISTINCT country), max(age) - min(age) FROM singer",
    "SELECT T2.concert_name, count(*) FROM singer_in_concert AS T1 JOIN concert AS T2 "
    "ON T1.concert_id = T2.concert_id GROUP BY T2.concert_id HAVING count(*) >= 2 ORDER BY count(*) DESC",
    "SELECT T3.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
    "JOIN concert AS T4 ON T2.concert_id = T4.concert_id JOIN stadium AS T3 ON T4.stadium_id = T3.stadium_id "
    "WHERE T1.name = 'Cid'",
    "SELECT name FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert WHERE year = 2015)",
    "SELECT name FROM singer WHERE country = 'Spain' UNION SELECT name FROM singer WHERE age < 20",
    "SELECT name FROM singer EXCEPT SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 "
    "ON T1.singer_id = T2.singer_id JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = 2014",
    "SELECT count(*) FROM (SELECT country FROM singer GROUP BY country HAVING count(*) > 1)",
    "SELECT avg(n) FROM (SELECT country, count(*) AS n FROM singer GROUP BY country) AS t",
    'SELECT "group", sum("my value") FROM "order" GROUP BY "group"',
    "SELECT name FROM singer WHERE age > (SELECT max(age) FROM singer WHERE country = 'France')",
    "SELECT count(*) FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id",
    "SELECT name, capacity FROM stadium WHERE capacity > 1000 AND name != 'Dome' OR capacity IS NULL",
]


@pytest.mark.parametrize("sql", ROUND_TRIP_SQL)
def test_round_trip_is_execution_equivalent(db, sql):
    db_path, schema = db
    traj = sql_to_trajectory(sql, schema)
    text = format_trajectory(traj)
    assert parse_trajectory(text) == traj
    assert format_trajectory(parse_trajectory(text)) == text
    rendered = render_sql(traj, schema)
    assert equivalent(db_path, sql, rendered), (text, rendered)


# --------------------------------------------------------------------------------------------------
# renderer
# --------------------------------------------------------------------------------------------------


def test_renderer_infers_shortest_fk_path_and_quotes(db):
    db_path, schema = db
    text = ("df1 = df.where(element = stadium.name, filter = 'Dome')\n"
            "res = df1.select(singer.name).distinct()")
    sql = render_sql(parse_trajectory(text), schema)
    # stadium -> concert -> singer_in_concert -> singer: three joins, T-aliases in FROM order
    assert sql.count(" JOIN ") == 3 and sql.startswith("SELECT DISTINCT T4.name FROM stadium AS T1")
    assert equivalent(db_path, "SELECT DISTINCT name FROM singer WHERE singer_id IN (1, 3, 4, 5)", sql)
    quoted = render_sql(parse_trajectory("res = df.groupby(`order`.`group`).agg(`order`.`group`, "
                                         "sum(`order`.`my value`))"), schema)
    assert quoted == 'SELECT "group", SUM("my value") FROM "order" GROUP BY "group"'


def test_renderer_errors_name_the_reference(db):
    _, schema = db
    with pytest.raises(RenderError, match="unknown column singer.height"):
        render_sql(parse_trajectory("res = df.select(singer.height)"), schema)
    with pytest.raises(RenderError, match="unknown table 'singers'"):
        render_sql(parse_trajectory("res = df.select(singers.name)"), schema)
    masked, _ = mask_schema(parse_trajectory("res = df.select(singer.name)"))
    with pytest.raises(RenderError, match=r"\[MASK\]"):
        render_sql(parse_trajectory(masked), schema)


# --------------------------------------------------------------------------------------------------
# parser / formatter
# --------------------------------------------------------------------------------------------------


def test_parser_builds_typed_steps_and_tolerates_blank_lines_and_comments():
    text = ("# the singers of France\n\n"
            "df1 = df.where(or(cond(element = singer.age, op = 'between', filter = [20, 30]), "
            "cond(element = singer.name, op = 'is null')))\n"
            "df2 = df1.orderby(by = [singer.age, singer.name], asc = [False, True]).limit(3)\n\n"
            "res = df2.select(singer.name, singer.age * 2 + -1)")
    t = parse_trajectory(text)
    assert t.statements[0].actions[0] == Where(BoolOp("or", (
        Cond(Col("singer", "age"), "between", (Num("20"), Num("30"))),
        Cond(Col("singer", "name"), "is null", None))))
    assert t.statements[1].actions == (OrderBy((Col("singer", "age"), Col("singer", "name")), (False, True)),
                                       Limit(3))
    canonical = format_trajectory(t)
    assert "#" not in canonical and "\n\n" not in canonical
    assert parse_trajectory(canonical) == t and format_trajectory(parse_trajectory(canonical)) == canonical


def test_formatter_round_trips_hand_built_steps():
    t = Trajectory((
        Statement("df1", "df", (GroupBy((Col("my table", "col 1"),)),)),
        Statement("res", "df1", (Agg((Func("count", (Col("my table", "it's"),), distinct=True),
                                      Str("a'b"), Num("-2.5"))),)),
    ))
    text = format_trajectory(t)
    assert text == ("df1 = df.groupby(`my table`.`col 1`)\n"
                    "res = df1.agg(count(distinct `my table`.`it's`), 'a''b', -2.5)")
    assert parse_trajectory(text) == t


@pytest.mark.parametrize("text, message", [
    ("df1 = df.where(element = singer.name, filter = 'x')\nres = df1.selec(singer.name)", "line 2: unknown action 'selec'"),
    ("res = df2.select(singer.name)", "line 1: source 'df2' is not defined"),
    ("df1 = df.select(singer.name)\ndf1 = df.select(singer.age)\nres = df1.distinct()", "line 2: variable 'df1' is assigned twice"),
    ("df1 = df.where(element = singer.age, filter = 3)", "last statement must assign res"),
    ("res = df.where(element = singer.age, filter = 3)", "res has no projection"),
    ("df1 = df.where(element = singer.age, op = '=>', filter = 3)\nres = df1.select(singer.name)", "line 1: where: op must be one of"),
    ("df1 = df.where(element = singer.age, op = 'between', filter = [1])\nres = df1.select(singer.age)", "needs filter = [low, high]"),
    ("res = df.select(singer.name).where(element = singer.age, filter = 3)", "after the projection"),
    ("res = df.select(singer.name", "line 1: expected ')'"),
    ("res = df.select(singer.name) extra", "after the end of the statement"),
    ("df1 = df.where(element = singer.age, filter = tmp_res9)\nres = df1.select(singer.name)", "'tmp_res9' is used as a nested query"),
    ("res = df.select(singer.name) ; x", "line 1: unexpected character ';'"),
    ("res = df.orderby(by = singer.age).select(singer.age)", "orderby(...) takes exactly by"),
])
def test_parser_errors_name_the_line(text, message):
    with pytest.raises(TrajectoryError, match=None) as e:
        parse_trajectory(text)
    assert message in str(e.value), str(e.value)


# --------------------------------------------------------------------------------------------------
# masking and perturbation
# --------------------------------------------------------------------------------------------------


def test_mask_schema_hides_every_reference_and_fill_restores(db):
    _, schema = db
    t = sql_to_trajectory("SELECT T1.name, count(*) FROM singer AS T1 JOIN singer_in_concert AS T2 "
                          "ON T1.singer_id = T2.singer_id WHERE T1.age > 20 GROUP BY T1.singer_id", schema)
    masked, answers = mask_schema(t)
    assert masked == ("df1 = df.join([MASK]).where(element = [MASK], op = '>', filter = 20)\n"
                      "res = df1.groupby([MASK]).agg([MASK], count(*))")
    assert answers == ["singer_in_concert", "singer.age", "singer.singer_id", "singer.name"]
    assert format_trajectory(parse_trajectory(masked)) == masked
    assert fill_masks(masked, answers) == t
    with pytest.raises(TrajectoryError, match=r"more \[MASK\]s than the 4 answers"):
        fill_masks(masked.replace("count(*)", "count([MASK])"), answers)
    with pytest.raises(TrajectoryError, match="mask 1: expected a table, got .singer.age."):
        fill_masks(masked, ["singer.age", "singer.age", "singer.singer_id", "singer.name"])


def test_mask_keeps_derived_table_columns(db):
    _, schema = db
    t = sql_to_trajectory("SELECT avg(n) FROM (SELECT country, count(*) AS n FROM singer GROUP BY country)", schema)
    masked, answers = mask_schema(t)
    assert "tmp_res1.n" in masked and answers == ["singer.country", "singer.country"]


def test_perturbations_are_deterministic_valid_and_different(db):
    db_path, schema = db
    gold = "SELECT name FROM singer WHERE age > 20 AND country = 'France' ORDER BY age DESC LIMIT 1"
    t = sql_to_trajectory(gold, schema)
    for kind in PERTURB_KINDS:
        a = perturb(t, kind, random.Random(7), schema=schema)
        b = perturb(t, kind, random.Random(7), schema=schema)
        assert a is not None and a == b and a.kind == kind
        assert a.trajectory != t
        assert parse_trajectory(format_trajectory(a.trajectory)) == a.trajectory
        render_sql(a.trajectory, schema)
    details = {kind: {p.detail for p in perturbations(t, kind, schema=schema)} for kind in PERTURB_KINDS}
    assert "delete limit(1)" in details["delete"]
    assert "add distinct()" in details["add"]
    assert {"substitute op '>' -> '<'", "substitute sort direction", "substitute limit 1 -> 2",
            "substitute value 'France' -> 'france'"} <= details["substitute"]
    # deleting a where changes the answer on the real database
    dropped = next(p for p in perturbations(t, "delete", schema=schema) if "delete where(element = singer.country" in p.detail)
    assert not equivalent(db_path, gold, render_sql(dropped.trajectory, schema))
    draws = {perturb(t, "substitute", random.Random(s), schema=schema).detail for s in range(20)}
    assert len(draws) > 3
    with pytest.raises(ValueError, match="unknown perturbation kind"):
        perturb(t, "swap", random.Random(0))


def test_delete_drops_an_emptied_statement_and_rewires_readers(db):
    _, schema = db
    t = parse_trajectory("df1 = df.where(element = singer.age, op = '>', filter = 20)\n"
                         "res = df1.select(singer.name)")
    [p] = [p for p in perturbations(t, "delete") if p.detail.startswith("delete where")]
    assert format_trajectory(p.trajectory) == "res = df.select(singer.name)"
    assert perturbations(parse_trajectory("res = df.select(singer.name)"), "delete") == []


# --------------------------------------------------------------------------------------------------
# Spider dev gold sample
# --------------------------------------------------------------------------------------------------


def _spider_sample(step: int = 37) -> list[tuple[str, str, str]]:
    if not (SPIDER / "dev.json").is_file():
        return []
    dev = json.loads((SPIDER / "dev.json").read_text(encoding="utf-8"))
    out = []
    for i in range(0, len(dev), step):
        r = dev[i]
        out.append((f"dev_{i}", r["db_id"], r["query"]))
    return out


@requires_spider
@pytest.mark.parametrize("qid, db_id, sql", _spider_sample() or [("none", "none", "none")])
def test_spider_dev_gold_round_trip(qid, db_id, sql):
    db_file = SPIDER / "database" / db_id / f"{db_id}.sqlite"
    if not db_file.is_file():
        pytest.skip(f"{qid}: database {db_id} is not in the Spider download")
    schema = introspect(str(db_file), db_id, n_samples=0)
    traj = sql_to_trajectory(sql, schema)
    text = format_trajectory(traj)
    assert parse_trajectory(text) == traj
    masked, answers = mask_schema(traj)
    assert fill_masks(masked, answers) == traj
    assert equivalent(str(db_file), sql, render_sql(traj, schema)), text
