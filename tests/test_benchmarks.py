"""The analysis helpers of benchmarks/ scripts that read finished run directories (no model is run)."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[1]


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def game(a: str, b: str, la: float, lb: float) -> dict[str, float | str]:
    return {"a": a, "b": b, "choice": "A" if la >= lb else "B", "logprob_a": la, "logprob_b": lb}


def test_the_debiased_margin_cancels_a_constant_position_preference() -> None:
    margins = script("judge_signal").margins
    # always "A" by the same margin, whatever is shown: no preference for either candidate is left
    assert margins([game("x", "y", -0.4, -1.0), game("y", "x", -0.4, -1.0)]) == {"x": 0.0, "y": 0.0}
    # always "A", but by more when x is first: x is preferred for its content
    m = margins([game("x", "y", -0.2, -1.2), game("y", "x", -0.5, -0.9)])
    assert m is not None and m["x"] > 0 > m["y"]
    # one order only, or generated verdicts: nothing to debias
    assert margins([game("x", "y", -0.4, -1.0)]) is None
    assert margins([{"a": "x", "b": "y", "choice": "A"}, {"a": "y", "b": "x", "choice": "A"}]) is None


def test_unknown_columns_are_sorted_by_the_reference_that_failed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "database" / "pets").mkdir(parents=True)
    with sqlite3.connect(root / "database" / "pets" / "pets.sqlite") as conn:
        conn.execute("CREATE TABLE Student (StuID INTEGER PRIMARY KEY, Fname TEXT)")
        conn.execute("CREATE TABLE Pets (PetID INTEGER PRIMARY KEY, PetType TEXT)")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"dataset": {"root": str(root), "db_dir": "database"}}))
    errors = {"q1": "no such column: PetType", "q2": "no such column: T2.PetType", "q3": "no such column: Pets.Fname",
              "q4": "no such column: pet_kind", "q5": "near \"FROM\": syntax error", "q6": None}
    preds = {q: {"qid": q, "db_id": "pets", "pred_error": e} for q, e in errors.items()}
    (run / "predictions.jsonl").write_text("\n".join(json.dumps(p) for p in preds.values()))
    kinds = script("decoding_effect").unknown_columns(run, preds)
    assert kinds == {"bare column, in the database": 1, "alias.column, in the database": 1,
                     "table.column, in the database": 1, "bare column, not in the database": 1}
