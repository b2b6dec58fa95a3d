"""Spider hardness: the official distribution on Spider dev, per-level examples, and the official quirks."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from conftest import requires_spider

from t2s.eval.exact_match import SpiderParseError, SpiderSQL, parse_spider_sql
from t2s.eval.hardness import HARDNESS_LEVELS, count_others, hardness_of, spider_hardness
from t2s.eval.spider_schema import load_spider_tables

DATA = Path(os.environ.get("T2S_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SPIDER = DATA / "spider"

# the "count" row of the official evaluation.py on Spider dev (found in many published evaluation logs)
OFFICIAL_DEV = {"easy": 248, "medium": 446, "hard": 174, "extra": 166}
# the 972 questions whose database ships here (wta_1 is missing), measured with this implementation
EXECUTABLE_DEV = {"easy": 232, "medium": 416, "hard": 160, "extra": 164}


@pytest.mark.parametrize(("sql", "level"), [
    ("SELECT count(*) FROM singer", "easy"),
    ("SELECT name FROM singer WHERE age > 20", "easy"),
    ("SELECT name, country FROM singer WHERE age > 20", "medium"),
    ("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id", "easy"),
    ("SELECT T1.name, T1.age FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id", "medium"),
    ("SELECT name FROM singer INTERSECT SELECT name FROM stadium", "hard"),
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", "hard"),
    ("SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
     "WHERE T1.year > 2013 GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1", "extra"),
    ("SELECT name FROM singer WHERE age > 20 EXCEPT SELECT name FROM singer WHERE country = 'France'", "hard"),
    ("SELECT name, age FROM singer WHERE age > 20 EXCEPT SELECT name, age FROM singer WHERE country = 'x'", "extra"),
])
def test_levels(sql: str, level: str) -> None:
    assert spider_hardness(sql) == level


def test_official_counting_quirks() -> None:
    # "aggregations" in WHERE are conditions with NOT; in HAVING every connective counts too
    plain = parse_spider_sql("SELECT name FROM singer WHERE age > 1 AND country = 'x'")
    negated = parse_spider_sql("SELECT name FROM singer WHERE age NOT IN (1) AND country NOT LIKE 'x'")
    assert count_others(plain) == 1 and count_others(negated) == 2
    having = parse_spider_sql("SELECT count(*) FROM singer GROUP BY name HAVING min(age) > 1 AND max(age) < 9")
    assert count_others(having) == 1  # count(*) + the 'and'; min/max in HAVING are not seen as aggregations
    single = parse_spider_sql("SELECT count(*) FROM singer GROUP BY name HAVING min(age) > 1")
    assert count_others(single) == 0
    assert spider_hardness("SELECT a FROM t WHERE b = 1", schema=None) == "easy"


def test_unparsable_sql_raises_a_value_error() -> None:
    with pytest.raises(SpiderParseError):
        spider_hardness("SELECT FROM WHERE")
    assert issubclass(SpiderParseError, ValueError)


@requires_spider
def test_spider_dev_distribution_is_official() -> None:
    dev = json.loads((SPIDER / "dev.json").read_text(encoding="utf-8"))
    schemas = load_spider_tables(SPIDER / "tables.json")
    mine = [spider_hardness(q["query"]) for q in dev]
    assert Counter(mine) == OFFICIAL_DEV
    # level by level, equal to the hardness of the official parser's own structure (dev.json "sql")
    official = [hardness_of(SpiderSQL.from_official_json(q["sql"], schemas[q["db_id"]])) for q in dev]
    assert mine == official
    executable = [h for q, h in zip(dev, mine)
                  if (SPIDER / "database" / q["db_id"] / f"{q['db_id']}.sqlite").is_file()]
    if len(executable) == 972:
        assert Counter(executable) == EXECUTABLE_DEV
    assert set(mine) == set(HARDNESS_LEVELS)
