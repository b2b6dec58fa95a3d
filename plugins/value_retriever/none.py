"""The identity value_retriever: leaves every task as it is."""

from __future__ import annotations

from t2s.stages import ValueRetriever
from t2s.types import Task


class NoValueRetriever(ValueRetriever):
    """Skip this stage: adds no values (the ablation baseline `value_retriever=none`)."""

    def __init__(self) -> None:
        pass

    def run(self, tasks: list[Task]) -> None:
        return None
