"""`t2s export` (issue 21, item 6) and the Python API (`from t2s import compose, run_pipeline, evaluate`, item 1): a run's
final SQL as Spider's one-line-per-question file and BIRD's JSON, with a placeholder wherever the run has no
answer, read back by `t2s eval` to the same EX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import t2s
from t2s.cli import main as cli_main
from t2s.eval.export import PLACEHOLDER


def test_export_writes_one_line_per_question_of_the_file_and_scores_back_the_same(make_cfg: Any, tmp_path: Path,
                                                                                  capsys: Any) -> None:
    cfg = make_cfg(["dataset.limit=3"])
    metrics = t2s.run_pipeline(cfg, tmp_path / "run")
    assert metrics["scored"] == 3
    everything = json.loads((Path(t2s.__file__).parent / "demo" / "questions.json").read_text())
    n = len(everything["questions"] if isinstance(everything, dict) else everything)
    assert cli_main(["export", f"predictions={tmp_path / 'run'}", "--format", "spider", f"out={tmp_path / 'p.sql'}"]) == 0
    lines = (tmp_path / "p.sql").read_text().split("\n")
    assert lines[-1] == "" and len(lines) - 1 == n > 3  # one line per question of the file, a newline at the end
    assert all(line.strip() and "\n" not in line for line in lines[:-1])  # never a blank line
    assert lines[3:-1] == [PLACEHOLDER] * (n - 3)
    finals = [json.loads(r)["final_sql"] for r in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [" ".join(s.replace("\r", "\n").split("\n")).strip() or PLACEHOLDER for s in finals] == lines[:3]
    answered = sum(1 for s in finals if s.strip())
    assert f"{n} questions, {answered} answered, {n - answered} written as `SELECT 1`" in capsys.readouterr().out
    scored = t2s.evaluate(cfg, tmp_path / "p.sql", tmp_path / "eval")
    assert scored["ex"] == metrics["ex"] and scored["scored"] == 3

    assert cli_main(["export", f"predictions={tmp_path / 'run'}", "--format=bird", f"out={tmp_path / 'p.json'}"]) == 0
    bird = json.loads((tmp_path / "p.json").read_text())
    assert list(bird) == [str(i) for i in range(n)]
    sql, db = bird["0"].split("\t----- bird -----\t")
    assert sql == lines[0] and db


def test_export_errors_name_the_directory_and_the_formats(tmp_path: Path, capsys: Any) -> None:
    assert cli_main(["export", f"predictions={tmp_path}", "--format", "spider"]) == 1
    assert "config.yaml does not exist" in capsys.readouterr().err
    assert cli_main(["export", f"predictions={tmp_path}", "--format", "csv"]) == 1
    assert "use --format spider" in capsys.readouterr().err
    assert cli_main(["export", "--format", "spider"]) == 2


def test_the_python_api_composes_runs_and_resumes(session_cache: Path, tmp_path: Path) -> None:
    overrides = [f"paths.cache_dir={session_cache}", "llm=tiny", "embedder=hashing", "run.progress=false",
                 "dataset.limit=2"]
    cfg = t2s.compose(overrides)
    assert cfg.dataset.limit == 2 and cfg.hydra.runtime.choices["llm"] == "tiny"
    first = t2s.run_pipeline(overrides, tmp_path / "api")
    again = t2s.run_pipeline(cfg, tmp_path / "api")  # a finished run re-reports
    assert first["scored"] == again["scored"] == 2 and first["ex"] == again["ex"]
    assert isinstance(t2s.__version__, str)
