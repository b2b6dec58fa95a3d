"""The identity schema_linker: leaves every task as it is."""

from __future__ import annotations

from t2s.stages import SchemaLinker
from t2s.types import Task


class NoSchemaLinker(SchemaLinker):
    """Skip this stage: adds no schemas (generators then use the full schema) (the ablation baseline `schema_linker=none`)."""

    def __init__(self) -> None:
        pass

    def run(self, tasks: list[Task]) -> None:
        return None
