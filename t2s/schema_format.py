"""The schema serialization interface; plugins under `plugins/schema_format/` (`ddl`, `markdown`, `mschema`)."""

from __future__ import annotations

import abc

from t2s.db.types import DatabaseSchema


class SchemaFormat(abc.ABC):
    """Turns a `DatabaseSchema` (or a filtered view of one) into prompt text."""

    name: str = ""

    @abc.abstractmethod
    def format(self, schema: DatabaseSchema) -> str:
        """Serialize the schema. Must be deterministic (it is part of prompts, hence of cache keys)."""
