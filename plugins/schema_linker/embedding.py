"""Embedding schema linker: the top-k columns by similarity to the question, closed under keys and join paths."""

from __future__ import annotations

from typing import TYPE_CHECKING

from t2s.artifacts import Artifact
from t2s.context.fields import FieldIndexArtifact
from t2s.context.linking import prune
from t2s.stages import SchemaLinker
from t2s.types import Task

if TYPE_CHECKING:
    from t2s.env import Env


class EmbeddingSchemaLinker(SchemaLinker):
    """Embedding schema linker: embed columns, retrieve the top-k by cosine similarity, prune.

    The question (and BIRD evidence, with `use_evidence`) is embedded with `embedders.<embedder>` and searched in the
    database's field index (`t2s.context.fields`); the `k` most similar columns, their tables' primary keys, the
    foreign-key columns between kept tables and the tables on the shortest foreign-key path joining them
    (`t2s.context.linking.join_closure`) form one view named `view_name` in `task.schemas`. With `whole_tables`, every
    column of the kept tables is kept (table-level pruning). No LLM calls.
    """

    def __init__(self, *, embedder: str = "default", k: int = 10, whole_tables: bool = False, paths: bool = True,
                 use_evidence: bool = True, samples: int = 3, view_name: str = "linked") -> None:
        if k < 1:
            raise ValueError(f"schema_linker.k must be >= 1 (got {k}): the number of columns kept before keys")
        self.embedder = embedder
        self.k = k
        self.whole_tables = whole_tables
        self.paths = paths
        self.use_evidence = use_evidence
        self.view_name = view_name
        self.index_spec = FieldIndexArtifact(embedder=embedder, samples=samples)

    def artifacts(self) -> list[Artifact]:
        return [self.index_spec]

    def setup(self, env: Env) -> None:
        super().setup(env)
        self.index_spec.bind(env)

    def query_text(self, task: Task) -> str:
        """What is embedded for a question: the question, then the evidence when used."""
        ex = task.example
        return f"{ex.question} {ex.evidence}".strip() if self.use_evidence and ex.evidence else ex.question

    def run(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        vectors = self.env.embed(self.embedder, [self.query_text(t) for t in tasks])
        for task, vec in zip(tasks, vectors):
            index = self.env.artifact(self.index_spec, task.example)
            picked = [f.key for f, _ in index.rank(vec, self.k)]
            schema = prune(self.env.schema(task.example), picked, paths=self.paths, whole_tables=self.whole_tables)
            task.schemas.append(self.env.view(self.view_name, schema))
