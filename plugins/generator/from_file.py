"""Candidates from a file of predictions made by any other system."""

from __future__ import annotations

from pathlib import Path

from t2s.eval.predictions import load_predictions
from t2s.stages import Generator
from t2s.types import Candidate, Task


class FromFileGenerator(Generator):
    """Reads another system's predictions as candidates, so correction and selection research can start from them.

    Formats as in `t2s.eval.predictions` (Spider's one-SQL-per-line in dataset order, JSONL keyed by question id, BIRD's
    predict JSON). With `strict`, a question missing from the file stops the run at setup with its id; otherwise it
    gets no candidate. Makes no LLM calls.
    """

    def __init__(self, *, path: str, format: str = "auto", strict: bool = True) -> None:
        if not path:
            raise ValueError("generator=from_file needs generator.path=<predictions file>")
        self.path = Path(path)
        self.format = format
        self.strict = strict
        self.predictions: dict[str, str] = {}

    def setup(self, env) -> None:  # type: ignore[no-untyped-def]
        super().setup(env)
        self.predictions = load_predictions(self.path, env.examples, fmt=self.format, strict=self.strict)

    def run(self, tasks: list[Task]) -> None:
        for task in tasks:
            sql = self.predictions.get(task.qid)
            if sql is not None:
                task.candidates.append(Candidate(sql=sql, origin=self.origin, meta={"file": str(self.path)}))
