"""The identity verifier: leaves every task as it is."""

from __future__ import annotations

from t2s.stages import Verifier
from t2s.types import Task


class NoVerifier(Verifier):
    """Skip this stage: leaves the candidates unchanged (the ablation baseline `verifier=none`)."""

    def __init__(self) -> None:
        pass

    def run(self, tasks: list[Task]) -> None:
        return None
