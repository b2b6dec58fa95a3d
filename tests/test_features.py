"""SQL features used for accuracy breakdowns."""

from __future__ import annotations

import pytest

from t2s.eval.exact_match import SpiderParseError
from t2s.eval.features import SQL_FEATURES, sql_features


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT name FROM singer", set()),
    ("SELECT name FROM singer WHERE age > 3", set()),
    ("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.singer_id", {"join"}),
    ("SELECT a.name FROM singer a, concert b WHERE a.id = b.singer_id", {"join"}),
    ("SELECT name FROM singer WHERE id IN (SELECT singer_id FROM concert)", {"nested"}),
    ("SELECT name FROM singer WHERE EXISTS (SELECT 1 FROM concert)", {"nested"}),
    ("SELECT x FROM (SELECT name AS x FROM singer)", {"nested"}),
    ("SELECT count(*) FROM singer", {"aggregation"}),
    ("SELECT name FROM singer UNION SELECT name FROM stadium", {"set_operation"}),
    ("SELECT name FROM singer EXCEPT SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)",
     {"set_operation", "nested", "aggregation"}),
    ("SELECT name FROM singer ORDER BY age", {"order_limit"}),
    ("SELECT name FROM singer LIMIT 3", {"order_limit"}),
    ("SELECT country FROM singer GROUP BY country", {"group_having"}),
    ("SELECT country, count(*) FROM singer GROUP BY country HAVING count(*) > 2 ORDER BY count(*) DESC LIMIT 1",
     {"group_having", "aggregation", "order_limit"}),
])
def test_features(sql: str, expected: set[str]) -> None:
    found = sql_features(sql)
    assert found == expected
    assert found <= set(SQL_FEATURES)


def test_unparsable_sql_raises() -> None:
    with pytest.raises(SpiderParseError):
        sql_features("SELECT FROM (")
