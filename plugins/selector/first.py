"""The simplest selector: the first candidate."""

from __future__ import annotations

from t2s.stages import Selector
from t2s.types import Task


class FirstSelector(Selector):
    """Final SQL = the first non-empty candidate in generation order ("" when there is none)."""

    def __init__(self) -> None:
        pass

    def run(self, tasks: list[Task]) -> None:
        for task in tasks:
            task.final_sql = next((c.sql for c in task.candidates if c.sql.strip()), "")
