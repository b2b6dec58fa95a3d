"""The shortest candidate: a selector with no model call and no execution (Occam's baseline for selection)."""

from __future__ import annotations

from t2s.stages import Selector
from t2s.types import Task

LENGTHS = ("chars", "tokens")


class ShortestSelector(Selector):
    """Final SQL = the shortest non-empty candidate (whitespace ignored; ties: pool order). No model call, no execution.

    `by`: `chars` counts characters other than whitespace, `tokens` counts whitespace-separated words. Empty
    candidates never win; a question without a non-empty candidate gets "".
    """

    def __init__(self, *, by: str = "chars") -> None:
        if by not in LENGTHS:
            raise ValueError(f"selector.by={by!r}: choose one of {', '.join(LENGTHS)}")
        self.by = by

    def length(self, sql: str) -> int:
        """The length `by` counts."""
        return len(sql.split()) if self.by == "tokens" else len("".join(sql.split()))

    def run(self, tasks: list[Task]) -> None:
        for task in tasks:
            sqls = [c.sql for c in task.candidates if c.sql.strip()]
            task.final_sql = min(sqls, key=self.length) if sqls else ""
