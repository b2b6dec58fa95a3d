"""The identity prober: leaves every task as it is."""

from __future__ import annotations

from t2s.stages import Prober
from t2s.types import Task


class NoProber(Prober):
    """Skip this stage: adds no findings (the ablation baseline `prober=none`)."""

    def __init__(self) -> None:
        pass

    def run(self, tasks: list[Task]) -> None:
        return None
