"""The identity corrector: leaves every task as it is."""

from __future__ import annotations

from t2s.stages import Corrector
from t2s.types import Task


class NoCorrector(Corrector):
    """Skip this stage: leaves the candidates unchanged (the ablation baseline `corrector=none`)."""

    def __init__(self) -> None:
        pass

    def run(self, tasks: list[Task]) -> None:
        return None
