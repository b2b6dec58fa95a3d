"""Reading predictions made by any system, keyed by question id.

Formats (chosen by `fmt`, or by the file's content with "auto"):
- `lines`: Spider's official format, one SQL per line in the dataset file's order (covering every question of
  the file, also those a run skips); an optional `<TAB>db_id` suffix is dropped.
- `jsonl`: one object per line with an id key (`qid`, `id` or `question_id`) and a SQL key (`sql`, `prediction`,
  `predicted_sql` or `final_sql`) — this is also what t2s writes in `predictions.jsonl`.
- `bird_json`: BIRD's `predict_dev.json`, a JSON object {"<i>": "SQL\\t----- bird -----\\t<db_id>"} whose key i is
  the question's position in the dataset file (BIRD's own script reads the values in that order).

Bad inputs are never scored in silence: a file that is not valid UTF-8 fails naming the line and byte (it
used to be decoded with U+FFFD replacements and scored); a question id given twice (JSONL lines, BIRD keys)
fails naming both lines when the two SQL texts differ, and is a warning when they are equal; when more than
half of the predictions are empty strings, a warning says so (an empty prediction scores correct whenever
the gold result is empty too, as in the official evaluators: `empty_prediction_summary` counts those).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from t2s.types import Example

log = logging.getLogger("t2s")

_ID_KEYS = ("qid", "id", "question_id")
_SQL_KEYS = ("final_sql", "sql", "prediction", "predicted_sql")


def _detect(path: Path, head: str) -> str:
    s = head.lstrip()
    if s.startswith("[") and path.suffix == ".json":
        raise ValueError(f"{path}: a JSON array is not a predictions format; use one SQL per line, JSONL keyed by "
                         f"question id, or BIRD's {{question_id: SQL}} object")
    if s.startswith("{") and path.suffix == ".json":
        return "bird_json"
    if s.startswith("{"):
        return "jsonl"
    return "lines"


def source_index(example: Example) -> int:
    """Position of the example in its dataset file (`meta["index"]`, set by every `Dataset.load`)."""
    if "index" not in example.meta:
        raise ValueError(f"question {example.qid!r} has no position in its dataset file; "
                         f"use a JSONL predictions file keyed by qid")
    return int(example.meta["index"])


def load_predictions(path: str | Path, examples: list[Example], *, fmt: str = "auto", strict: bool = True) -> dict[str, str]:
    """Map each example's qid to the predicted SQL in `path`.

    With `strict`, an example without a prediction is an error naming the file and the first missing ids;
    otherwise it is left out of the result (callers score it as an empty prediction).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    text = _read_utf8(path)
    fmt = _detect(path, text[:200]) if fmt == "auto" else fmt
    by_key: dict[str, str] = {}
    if fmt == "lines":
        # split on newlines only: str.splitlines() also splits on \x0b, \x1c, \u2028 ... inside SQL
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
        if lines and lines[-1] == "":
            lines.pop()
        for ex in examples:
            i = source_index(ex)
            if i < len(lines):
                sql = lines[i]
                if "\t" in sql:
                    head, _, tail = sql.rpartition("\t")
                    if tail.strip() == ex.db_id:
                        sql = head
                by_key[ex.qid] = sql.strip()
        if strict and len(by_key) < len(examples):
            need = max(source_index(ex) for ex in examples) + 1
            raise ValueError(f"predictions file {path} has {len(lines)} lines but the dataset needs {need} "
                             f"(one SQL per line in the dataset file's order)")
        _warn_if_mostly_empty(path, by_key, len(examples))
        return by_key
    if fmt == "bird_json":
        try:
            data = json.loads(text, object_pairs_hook=lambda pairs: _unique_pairs(path, pairs))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a BIRD predictions JSON object ({e.msg} at line {e.lineno}); "
                             f"for one JSON object per line pass format=jsonl") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{question_id: SQL}}, got a {type(data).__name__}")
        for k, v in data.items():
            by_key[str(k)] = str(v).split("\t----- bird -----\t")[0].strip()
    elif fmt == "jsonl":
        line_of: dict[str, int] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            key = next((obj[k] for k in _ID_KEYS if k in obj), None)
            sql = next((obj[k] for k in _SQL_KEYS if k in obj), None)
            if key is None or sql is None:
                raise ValueError(f"{path}:{n}: needs an id key ({'/'.join(_ID_KEYS)}) and a SQL key ({'/'.join(_SQL_KEYS)})")
            key, sql = str(key), str(sql or "")
            if key in by_key:
                _duplicate(path, key, f"line {line_of[key]}", f"line {n}", by_key[key], sql)
            else:
                line_of[key] = n
            by_key[key] = sql
    else:
        raise ValueError(f"unknown predictions format {fmt!r}; use auto, lines, jsonl or bird_json")
    out: dict[str, str] = {}
    missing: list[str] = []
    for ex in examples:
        # BIRD's evaluation reads predict JSON values in order: key i is the i-th question of the file
        keys = [str(source_index(ex))] if fmt == "bird_json" else [ex.qid]
        sql = next((by_key[k] for k in keys if k in by_key), None)
        if sql is None:
            missing.append(ex.qid)
        else:
            out[ex.qid] = sql
    if strict and missing:
        raise ValueError(f"predictions file {path} has no prediction for {len(missing)} question(s), e.g. {missing[:5]}; "
                         f"pass strict=false to score them as empty")
    _warn_if_mostly_empty(path, out, len(examples))
    return out


def _read_utf8(path: Path) -> str:
    """The file's text; ValueError naming the line and byte offset of the first invalid UTF-8 byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"predictions file {path}: line {line} is not valid UTF-8 (byte {data[e.start:e.start + 1]!r} at offset "
            f"{e.start}). Write predictions as UTF-8, or convert the file (e.g. `iconv -f latin1 -t utf-8`); "
            f"t2s does not guess, because a replaced character would change the SQL that is scored."
        ) from None


def _duplicate(path: Path, key: str, first: str, second: str, old: str, new: str) -> None:
    """A question id given twice: an error when the SQL differs (which one counts?), a warning when equal."""
    if old.strip() != new.strip():
        raise ValueError(f"predictions file {path}: question id {key!r} appears twice with different SQL ({first} and "
                         f"{second}); keep one prediction per question")
    log.warning("predictions file %s: question id %r appears twice (%s and %s), with the same SQL", path, key, first,
                second)


def _unique_pairs(path: Path, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads` hook: a JSON object, checking that no key repeats (json keeps the last one silently)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            _duplicate(path, k, "first entry", "second entry", str(out[k]), str(v))
        out[k] = v
    return out


def _warn_if_mostly_empty(path: Path, preds: dict[str, str], n_examples: int) -> None:
    """Warn when more than half of the questions' predictions are missing or empty strings."""
    empty = n_examples - sum(bool(sql.strip()) for sql in preds.values())
    if n_examples and empty * 2 > n_examples:
        log.warning("predictions file %s: %d of %d predictions are empty or missing; check the file (its SQL key, "
                    "its format) before trusting the scores. Empty predictions score correct when the gold result is "
                    "empty too (official behaviour): metrics.json counts them under `empty_predictions`.",
                    path, empty, n_examples)


def empty_prediction_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How many scored records have an empty (blank) prediction, and how many of those count as correct
    because the gold result is empty too (official behaviour, kept): `count`, `correct`, `correct_qids`
    (at most 50)."""
    empty = [r for r in records if not str(r.get("final_sql") or "").strip()]
    correct = [r["qid"] for r in empty if r.get("correct")]
    return {"count": len(empty), "correct": len(correct), "correct_qids": correct[:50]}
