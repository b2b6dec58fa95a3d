"""The identity example_retriever: leaves every task as it is."""

from __future__ import annotations

from t2s.stages import ExampleRetriever
from t2s.types import Task


class NoExampleRetriever(ExampleRetriever):
    """Skip this stage: adds no examples (the ablation baseline `example_retriever=none`)."""

    def __init__(self) -> None:
        pass

    def run(self, tasks: list[Task]) -> None:
        return None
