"""`t2s export`: a run's final SQL as the official evaluators' prediction files.

- `spider`: one line per question of the dataset file, in file order (what Spider's `evaluation.py` and the
  test-suite evaluator read next to the gold file). Each SQL is put on one line (line breaks become spaces).
  A question the run has no answer for (skipped for its database, outside `dataset.limit` / `dataset.sample`, or
  answered with an empty string) gets the placeholder `SELECT 1`, which is scored wrong: never a blank line, because
  `evaluation.py` treats blank lines as separators between interaction turns and asserts equal counts.
- `bird`: BIRD's `predict_dev.json`, `{"<position in the file>": "<SQL>\\t----- bird -----\\t<db_id>"}` for every
  question of the file, with the same placeholder.

The question list comes from the run's own `config.yaml` (its dataset node), so the file matches the gold file the
run was made on. `t2s eval predictions=<file>` reads both formats back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from t2s.data.base import Dataset

#: the SQL written for a question the run did not answer (valid SQL, so the official scripts parse it; scored wrong
#: unless the gold result happens to be the single value 1)
PLACEHOLDER = "SELECT 1"
FORMATS = ("spider", "bird")


def _one_line(sql: str) -> str:
    """The SQL on one line: line breaks become spaces; runs of spaces are kept, since they may sit inside a string
    literal (`'a  b'`). A line break inside a literal cannot survive the one-line format and becomes a space too."""
    return re.sub(r"[\r\n]+", " ", sql).strip()


def export_predictions(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> dict[str, Any]:
    """Write the run's predictions in `fmt` ("spider" or "bird") to `out` (default `<run_dir>/predict.<fmt>...`).

    Returns `{"path", "questions", "answered", "placeholders"}`. Raises ValueError naming the file when the run
    directory has no config or predictions, or `fmt` is unknown.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use --format spider (one SQL per line) or --format bird "
                         f"(BIRD's predict_dev.json)")
    run = Path(run_dir)
    config, predictions = run / "config.yaml", run / "predictions.jsonl"
    for f in (config, predictions):
        if not f.is_file():
            raise ValueError(f"{f} does not exist: give predictions=<a run directory> (one holding config.yaml and "
                             f"predictions.jsonl, as `t2s run` writes it)")
    cfg = OmegaConf.load(config)
    dataset = instantiate(cfg.dataset, _convert_="all")
    if not isinstance(dataset, Dataset):
        raise ValueError(f"{config}: dataset {cfg.dataset.get('_target_')} is not a t2s.data.base.Dataset")
    examples = dataset._read()
    answers: dict[str, str] = {}
    with open(predictions, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{predictions}:{n}: not valid JSON ({e.msg}); the run directory is damaged") from None
            answers[str(record["qid"])] = str(record.get("final_sql") or "")
    sqls = [_one_line(answers.get(ex.qid, "")) or PLACEHOLDER for ex in examples]
    answered = sum(1 for ex in examples if _one_line(answers.get(ex.qid, "")))
    target = Path(out) if out else run / ("predict.sql" if fmt == "spider" else "predict_dev.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "spider":
        target.write_text("".join(sql + "\n" for sql in sqls), encoding="utf-8")
    else:
        body = {str(i): f"{sql}\t----- bird -----\t{ex.db_id}" for i, (ex, sql) in enumerate(zip(examples, sqls))}
        target.write_text(json.dumps(body, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return {"path": str(target), "questions": len(examples), "answered": answered,
            "placeholders": len(examples) - answered}
