"""Spider exact-set match over sqlglot: agreement with the official semantics on typical differences,
robustness to unparsable predictions, official partial averaging, and the whole Spider dev set."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import requires_spider

from t2s.db.types import Column, DatabaseSchema, ForeignKey, Table
from t2s.eval.exact_match import (
    PARTIAL_TYPES,
    ExactMatchResult,
    SchemaReferenceError,
    SpiderSQL,
    SqlSyntaxError,
    UnsupportedSqlError,
    aggregate_partial,
    exact_match,
    normalize,
    parse_spider_sql,
)
from t2s.eval.spider_schema import load_spider_tables

DATA = Path(os.environ.get("T2S_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SPIDER = DATA / "spider"


def _table(name: str, *cols: str) -> Table:
    return Table(name=name, columns=[Column(name=c, type="text") for c in cols])


@pytest.fixture(scope="module")
def schema() -> DatabaseSchema:
    """A slice of Spider's concert_singer, with its foreign keys."""
    return DatabaseSchema(
        db_id="concert_singer",
        tables=[
            _table("stadium", "Stadium_ID", "Location", "Name", "Capacity"),
            _table("singer", "Singer_ID", "Name", "Country", "Age"),
            _table("concert", "concert_ID", "concert_Name", "Theme", "Stadium_ID", "Year"),
            _table("singer_in_concert", "concert_ID", "Singer_ID"),
        ],
        foreign_keys=[
            ForeignKey("concert", "Stadium_ID", "stadium", "Stadium_ID"),
            ForeignKey("singer_in_concert", "Singer_ID", "singer", "Singer_ID"),
            ForeignKey("singer_in_concert", "concert_ID", "concert", "concert_ID"),
        ],
    )


GOLD = ("SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
        "WHERE T1.year = '2014' AND T2.capacity > 100 GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1")


@pytest.mark.parametrize("pred", [
    pytest.param(GOLD, id="identical"),
    pytest.param("SELECT b.Name, COUNT(*) FROM concert a JOIN stadium b ON b.Stadium_ID = a.Stadium_ID "
                 "WHERE a.Year = '2014' AND b.Capacity > 100 GROUP BY a.Stadium_ID ORDER BY COUNT(*) DESC LIMIT 1",
                 id="other-aliases-and-case"),
    pytest.param("SELECT stadium.name, count(*) FROM concert JOIN stadium ON concert.stadium_id = stadium.stadium_id "
                 "WHERE capacity > 100 AND year = '2014' GROUP BY concert.stadium_id ORDER BY count(*) DESC LIMIT 1",
                 id="no-aliases-unqualified-and-AND-order-swapped"),
    pytest.param("SELECT count(*), T2.name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
                 "WHERE T1.year = '2014' AND T2.capacity > 100 GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1",
                 id="select-columns-reordered"),
    pytest.param("SELECT T2.name, count(*) AS n FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
                 "WHERE T1.year = '1999' AND T2.capacity > 5 GROUP BY T1.stadium_id ORDER BY n DESC LIMIT 3",
                 id="values-ignored-and-select-alias-in-order-by"),
    pytest.param("SELECT DISTINCT T2.name, count(*) FROM stadium AS T2 JOIN concert AS T1 ON T1.stadium_id = T2.stadium_id "
                 "WHERE T1.year = '2014' AND T2.capacity > 100 GROUP BY T2.stadium_id ORDER BY count(*) DESC LIMIT 1",
                 id="distinct-ignored-join-order-and-fk-equivalent-group-column"),
])
def test_equivalent_forms_match(pred: str, schema: DatabaseSchema) -> None:
    r = exact_match(pred, GOLD, schema)
    assert r.error is None
    assert r.exact, {k: v for k, v in r.partial.items() if v["f1"] != 1}
    assert set(r.partial) == set(PARTIAL_TYPES)


@pytest.mark.parametrize(("pred", "failing"), [
    pytest.param(GOLD.replace("T2.name", "T2.location"), {"select", "select(no AGG)"}, id="different-column"),
    pytest.param(GOLD.replace("T2.name, count(*)", "T2.name, max(T2.capacity)"), {"select", "select(no AGG)"},
                 id="different-aggregate"),
    pytest.param(GOLD.replace("T1.year = '2014' AND ", ""), {"where", "where(no OP)", "and/or"},
                 id="missing-where-condition"),
    pytest.param(GOLD.replace("T2.capacity > 100", "T2.capacity < 100"), {"where"}, id="different-operator"),
    pytest.param(GOLD.replace("DESC", "ASC"), {"order", "keywords"}, id="order-direction"),
    pytest.param(GOLD.replace(" LIMIT 1", ""), {"order", "keywords"}, id="limit-missing"),
    pytest.param(GOLD.replace("ORDER BY count(*)", "ORDER BY sum(T2.capacity)"), {"order"}, id="order-expression"),
    pytest.param(GOLD.replace("GROUP BY T1.stadium_id", "GROUP BY T2.name"), {"group(no Having)", "group"},
                 id="group-column"),
    pytest.param(GOLD.replace(" AND T2.capacity > 100", " OR T2.capacity > 100"), {"and/or", "keywords"}, id="and-vs-or"),
])
def test_typical_differences_mismatch(pred: str, failing: set[str], schema: DatabaseSchema) -> None:
    r = exact_match(pred, GOLD, schema)
    assert not r.exact
    assert r.error is None
    assert {k for k, v in r.partial.items() if v["f1"] != 1} == failing


def test_extra_join_table_fails_only_on_the_table_units(schema: DatabaseSchema) -> None:
    gold = "SELECT T1.name FROM singer AS T1 WHERE T1.age > 20"
    pred = ("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
            "WHERE T1.age > 20")
    r = exact_match(pred, gold, schema)
    assert all(v["f1"] == 1 for v in r.partial.values())  # the official partial scores do not see FROM
    assert not r.exact


def test_foreign_key_columns_are_interchangeable_in_the_top_query(schema: DatabaseSchema) -> None:
    gold = "SELECT T1.name FROM stadium AS T1 JOIN concert AS T2 ON T1.stadium_id = T2.stadium_id WHERE T1.stadium_id = 1"
    pred = "SELECT T1.name FROM stadium AS T1 JOIN concert AS T2 ON T1.stadium_id = T2.stadium_id WHERE T2.stadium_id = 1"
    assert exact_match(pred, gold, schema).exact
    assert not exact_match(pred, gold, None).exact  # without a schema there is no foreign-key map


def test_set_operations_nest_to_the_right_and_order_goes_to_the_last_branch(schema: DatabaseSchema) -> None:
    s = parse_spider_sql("SELECT name FROM singer UNION SELECT name FROM stadium EXCEPT SELECT name FROM singer "
                         "WHERE age > 3 ORDER BY name LIMIT 2", schema)
    assert [op for op, _ in s.branches()] == [None, "union", "except"]
    last = s.branches()[-1][1]
    assert last.limit == 2 and last.order_by == ("asc", ((0, (0, "__singer.name__", False), None),))
    assert s.limit is None and s.union is not None and s.union.except_ is last
    gold = "SELECT name FROM singer INTERSECT SELECT name FROM stadium"
    r = exact_match("SELECT name FROM singer UNION SELECT name FROM stadium", gold, schema)
    assert not r.exact and r.partial["IUEN"]["f1"] == 0


def test_nested_query_is_compared_whole(schema: DatabaseSchema) -> None:
    gold = "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)"
    assert exact_match("SELECT name FROM singer WHERE age > (SELECT avg(Age) FROM singer AS s)", gold, schema).exact
    r = exact_match("SELECT name FROM singer WHERE age > (SELECT max(age) FROM singer)", gold, schema)
    assert not r.exact and r.partial["where"]["f1"] == 0 and r.partial["where(no OP)"]["f1"] == 1


@pytest.mark.parametrize(("pred", "error_type"), [
    ("SELECT name FROM WHERE", SqlSyntaxError),
    ("", SqlSyntaxError),
    ("SELECT title FROM singer", SchemaReferenceError),
    ("SELECT name FROM singers", SchemaReferenceError),
    ("SELECT X.name FROM singer AS T1", SchemaReferenceError),
    ("DELETE FROM singer", UnsupportedSqlError),
    ("WITH RECURSIVE s(n) AS (SELECT 1 UNION SELECT n + 1 FROM s) SELECT n FROM s", UnsupportedSqlError),
    ("SELECT name FROM singer; SELECT name FROM stadium", UnsupportedSqlError),
])
def test_unparsable_prediction_scores_zero_without_crashing(pred: str, error_type: type, schema: DatabaseSchema) -> None:
    with pytest.raises(error_type):
        parse_spider_sql(pred, schema)
    r = exact_match(pred, "SELECT name FROM singer", schema)
    assert not r.exact and r.error
    assert r.partial["select"] == {"acc": 0, "rec": 0, "f1": 0, "label_total": 1, "pred_total": 0}
    assert r.partial["where"]["f1"] == 1  # scored as the official empty query: absent clauses agree


def test_common_table_expressions_become_from_subqueries(schema: DatabaseSchema) -> None:
    gold = "SELECT x.name FROM (SELECT name, age FROM singer WHERE age > 30) AS x ORDER BY x.age"
    pred = "WITH old AS (SELECT name, age FROM singer WHERE age > 30) SELECT name FROM old ORDER BY age"
    assert exact_match(pred, gold, schema).exact
    # as officially, a subquery in FROM is compared whole and keeps its values (rebuild_sql_val skips it)
    assert not exact_match(pred.replace("30", "40"), gold, schema).exact
    other = "WITH old AS (SELECT name, country FROM singer) SELECT name FROM old ORDER BY name"
    assert not exact_match(other, gold, schema).exact


def test_unparsable_gold_is_reported_not_scored(schema: DatabaseSchema) -> None:
    r = exact_match("SELECT name FROM singer", "SELECT FROM", schema)
    assert not r.exact and r.partial == {} and r.error is not None and r.error.startswith("gold:")


def test_double_quoted_strings_are_values_and_sqlite_quirks_parse(schema: DatabaseSchema) -> None:
    s = parse_spider_sql('SELECT name FROM singer WHERE country = "France" AND age NOT IN (1, 2) '
                         'AND name IS NOT NULL AND name NOT LIKE "%a%"', schema)
    conds = s.where[::2]
    assert conds[0][3] == '"France"'
    assert conds[1][:2] == (True, 8) and conds[1][3] == (1.0, 2.0)
    assert conds[2][:2] == (True, 10) and conds[3][:2] == (True, 9)


def test_normalize_drops_values_and_distinct_only_where_the_official_does(schema: DatabaseSchema) -> None:
    s = parse_spider_sql("SELECT DISTINCT count(DISTINCT name) FROM singer WHERE age IN "
                         "(SELECT DISTINCT age FROM singer WHERE country = 'x')", schema)
    n = normalize(s, schema)
    assert n.select[0] is None and n.select[1][0][1][1][2] is None
    nested = n.where[0][3]
    assert isinstance(nested, SpiderSQL)
    assert nested.select[0] is True  # nested queries keep DISTINCT (official rebuild_sql_col does not recurse)
    assert nested.where[0][3] is None  # ... but lose their values (rebuild_sql_val does)


def test_aggregate_partial_follows_the_official_averaging() -> None:
    def part(acc: int, lt: int, pt: int) -> dict[str, dict[str, float]]:
        return {k: {"acc": acc, "rec": acc, "f1": acc, "label_total": lt, "pred_total": pt} for k in PARTIAL_TYPES}

    results = [
        ExactMatchResult(exact=True, partial=part(1, 1, 1)),
        ExactMatchResult(exact=False, partial=part(0, 1, 0)),  # gold has the clause, prediction not: recall only
        ExactMatchResult(exact=False, partial=part(0, 0, 1)),  # prediction has it, gold not: accuracy only
        ExactMatchResult(exact=False, partial={}, error="gold: unparsable"),  # skipped
    ]
    agg = aggregate_partial(results)
    assert agg["select"]["acc"] == pytest.approx(0.5)
    assert agg["select"]["rec"] == pytest.approx(0.5)
    assert agg["select"]["f1"] == pytest.approx(0.5)
    none = aggregate_partial([ExactMatchResult(exact=False, partial=part(0, 0, 0))])
    assert none["where"] == {"acc": 0.0, "rec": 0.0, "f1": 1.0}  # the official script's f1 when nothing counts


@pytest.fixture(scope="module")
def spider_dev() -> tuple[list[dict], dict[str, DatabaseSchema]]:
    dev = json.loads((SPIDER / "dev.json").read_text(encoding="utf-8"))
    return dev, load_spider_tables(SPIDER / "tables.json")


# dev questions where the official parser itself is wrong: it drops the OR'ed half of `ON a = b OR a = c`
# (225-228), and it keeps one alias map for the whole query, so `T1` of the second INTERSECT branch
# (Likes) overrides `T1` of the first (Friend) (900, 901). Their official hardness is unaffected.
OFFICIAL_PARSER_BUGS = {225, 226, 227, 228, 900, 901}


@requires_spider
def test_parse_equals_the_official_structure_on_spider_dev(spider_dev: tuple[list[dict], dict[str, DatabaseSchema]]) -> None:
    dev, schemas = spider_dev
    differ = [i for i, q in enumerate(dev)
              if parse_spider_sql(q["query"], schemas[q["db_id"]])
              != SpiderSQL.from_official_json(q["sql"], schemas[q["db_id"]])]
    assert set(differ) == OFFICIAL_PARSER_BUGS


@requires_spider
def test_every_dev_gold_matches_itself_quickly(spider_dev: tuple[list[dict], dict[str, DatabaseSchema]]) -> None:
    dev, schemas = spider_dev
    start = time.perf_counter()
    failures = [(i, r.error) for i, q in enumerate(dev)
                if not (r := exact_match(q["query"], q["query"], schemas[q["db_id"]])).exact]
    seconds = time.perf_counter() - start
    assert failures == []
    assert seconds < 30, f"exact match of 1034 dev pairs took {seconds:.1f}s"
    agg = aggregate_partial([exact_match(q["query"], q["query"], schemas[q["db_id"]]) for q in dev])
    assert all(v == {"acc": 1.0, "rec": 1.0, "f1": 1.0} for v in agg.values())
