"""Reading predictions made by any system, keyed by question id.

Formats (chosen by `fmt`, or by the file's content with "auto"):
- `lines`: Spider's official format, one SQL per line in the dataset file's order (covering every question of
  the file, also those a run skips); an optional `<TAB>db_id` suffix is dropped.
- `jsonl`: one object per line with an id key (`qid`, `id` or `question_id`) and a SQL key (`sql`, `prediction`,
  `predicted_sql` or `final_sql`) — this is also what t2s writes in `predictions.jsonl`.
- `bird_json`: BIRD's `predict_dev.json`, a JSON object {"<i>": "SQL\\t----- bird -----\\t<db_id>"} whose key i is
  the question's position in the dataset file (BIRD's own script reads the values in that order).
"""

from __future__ import annotations

import json
from pathlib import Path

from t2s.types import Example

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
    text = path.read_text(encoding="utf-8", errors="replace")
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
        return by_key
    if fmt == "bird_json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a BIRD predictions JSON object ({e.msg} at line {e.lineno}); "
                             f"for one JSON object per line pass format=jsonl") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{question_id: SQL}}, got a {type(data).__name__}")
        for k, v in data.items():
            by_key[str(k)] = str(v).split("\t----- bird -----\t")[0].strip()
    elif fmt == "jsonl":
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
            by_key[str(key)] = str(sql or "")
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
    return out
