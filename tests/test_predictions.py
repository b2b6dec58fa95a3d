from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2s.eval.predictions import load_predictions
from t2s.types import Example


def _ex(i: int, db: str = "db") -> Example:
    return Example(qid=f"dev_{i}", question=f"q{i}", db_id=db, db_path=f"/x/{db}.sqlite", gold_sql="SELECT 1",
                   meta={"index": i})


def test_lines_format_in_dataset_order_with_db_suffix(tmp_path: Path) -> None:
    p = tmp_path / "pred.sql"
    p.write_text("SELECT a FROM t\tdb\nSELECT b FROM t\nSELECT c FROM t\n")
    exs = [_ex(0), _ex(2)]  # question 1 skipped by the run: line positions still follow the file
    assert load_predictions(p, exs) == {"dev_0": "SELECT a FROM t", "dev_2": "SELECT c FROM t"}


def test_lines_format_too_short_names_file(tmp_path: Path) -> None:
    p = tmp_path / "pred.sql"
    p.write_text("SELECT 1\n")
    with pytest.raises(ValueError, match=r"pred.sql has 1 lines but the dataset needs 3"):
        load_predictions(p, [_ex(0), _ex(2)])


def test_jsonl_by_qid_and_missing_questions(tmp_path: Path) -> None:
    p = tmp_path / "pred.jsonl"
    p.write_text(json.dumps({"qid": "dev_0", "sql": "SELECT 1"}) + "\n" + json.dumps({"id": "dev_1", "prediction": "SELECT 2"}) + "\n")
    assert load_predictions(p, [_ex(0), _ex(1)]) == {"dev_0": "SELECT 1", "dev_1": "SELECT 2"}
    with pytest.raises(ValueError, match=r"no prediction for 1 question\(s\), e.g. \['dev_5'\]"):
        load_predictions(p, [_ex(0), _ex(5)])
    assert load_predictions(p, [_ex(0), _ex(5)], strict=False) == {"dev_0": "SELECT 1"}


def test_jsonl_bad_line_names_line(tmp_path: Path) -> None:
    p = tmp_path / "pred.jsonl"
    p.write_text('{"qid": "dev_0", "sql": "SELECT 1"}\n{"qid": "dev_1"}\n')
    with pytest.raises(ValueError, match=r"pred.jsonl:2: needs an id key"):
        load_predictions(p, [_ex(0)])


def test_bird_predict_json(tmp_path: Path) -> None:
    p = tmp_path / "predict_dev.json"
    p.write_text(json.dumps({"0": "SELECT 1\t----- bird -----\tdb", "1": "SELECT 2\t----- bird -----\tdb"}))
    exs = [Example(qid="1471", question="", db_id="db", db_path="", meta={"index": 0}),
           Example(qid="1472", question="", db_id="db", db_path="", meta={"index": 1})]
    assert load_predictions(p, exs) == {"1471": "SELECT 1", "1472": "SELECT 2"}


def test_lines_split_only_on_newlines(tmp_path: Path) -> None:
    p = tmp_path / "pred.sql"
    p.write_bytes("SELECT 'a\u2028b'\r\nSELECT 2\n".encode())
    assert load_predictions(p, [_ex(0), _ex(1)]) == {"dev_0": "SELECT 'a\u2028b'", "dev_1": "SELECT 2"}


def test_json_array_is_refused_with_the_file_name(tmp_path: Path) -> None:
    p = tmp_path / "preds.json"
    p.write_text('["SELECT 1"]')
    with pytest.raises(ValueError, match=r"preds.json: a JSON array"):
        load_predictions(p, [_ex(0)])
