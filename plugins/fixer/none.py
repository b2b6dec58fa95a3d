"""The identity fixer: leaves every task as it is."""

from __future__ import annotations

from t2s.stages import Fixer
from t2s.types import Task


class NoFixer(Fixer):
    """Skip this stage: leaves the candidates unchanged (the ablation baseline `fixer=none`)."""

    def __init__(self) -> None:
        pass

    def run(self, tasks: list[Task]) -> None:
        return None
