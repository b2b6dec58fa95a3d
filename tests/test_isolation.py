"""A stage that raises on one question fails that question only; a systematic failure stops the run."""

from __future__ import annotations

import pytest

from t2s_plugins.selector.first import FirstSelector
from t2s.run.pipeline import Pipeline
from t2s.stages import Generator
from t2s.types import Candidate, Example, Task


class Picky(Generator):
    """Raises on question "bad" (e.g. a corrupt database), adds a candidate otherwise."""

    def __init__(self, bad: set[str]) -> None:
        self.bad = bad

    def run(self, tasks: list[Task]) -> None:
        for t in tasks:
            t.candidates.append(Candidate(sql=f"SELECT '{t.qid}'", origin="generator/picky"))
            if t.qid in self.bad:
                raise ValueError(f"file is not a database ({t.qid})")


def _tasks(*qids: str) -> list[Task]:
    return [Task(example=Example(qid=q, question="?", db_id="d", db_path="/nowhere")) for q in qids]


def _pipeline(bad: set[str]) -> Pipeline:
    gen, sel = Picky(bad), FirstSelector()
    gen.name, sel.name = "picky", "first"
    return Pipeline([gen, sel])


def test_one_bad_question_fails_alone() -> None:
    tasks = _tasks("a", "bad", "c")
    _pipeline({"bad"}).run_batch(tasks)
    ok = [t for t in tasks if t.qid != "bad"]
    assert all(t.error is None and t.final_sql == f"SELECT '{t.qid}'" for t in ok)
    assert all(len(t.candidates) == 1 for t in ok), "a retried stage must not duplicate candidates"
    bad = tasks[1]
    assert bad.error == "generator/picky: ValueError: file is not a database (bad)"
    assert bad.candidates == [] and bad.final_sql is None
    assert [e.stage for e in bad.trace] == ["generator"] and bad.trace[0].error == bad.error


def test_a_systematic_failure_stops_the_run() -> None:
    with pytest.raises(RuntimeError, match="failed on every question of the batch"):
        _pipeline({"a", "b"}).run_batch(_tasks("a", "b"))
