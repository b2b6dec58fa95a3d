"""The stage interfaces: one small abstract class per stage kind (docs/design.md, "The pipeline").

A plugin subclasses one of these under `plugins/<stage>/<name>.py` and is registered by exactly one
YAML file `conf/<stage>/<name>.yaml` (`_target_` plus keyword arguments). Constructors are typed and
keyword-only with no `**kwargs`, so a misspelled YAML key fails when the pipeline is built.

Every stage works on a whole batch (`run(tasks)`) and mutates the tasks in place, writing only the `Task` fields its
kind declares in `writes` (the pipeline's snapshots, trace diffs, per-stage attribution and the contract suite all
derive from that one declaration). Model calls and SQL go through the environment (`env.generate`, `env.score`,
`env.execute`), which charges each to its question; the pipeline turns the charges into trace events.

A stage that needs per-database (or per-dataset) artifacts lists them in `artifacts()`, so `t2s prepare` can build
them ahead of time; names of LLMs and embedders it refers to are constructor arguments named `llm` / `*_llm` and
`embedder` / `*_embedder`, checked against `llms:` and `embedders:` when the pipeline is built.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

from t2s.types import Task

if TYPE_CHECKING:
    from t2s.artifacts import Artifact
    from t2s.db.types import DatabaseSchema
    from t2s.env import Env


class Stage(abc.ABC):
    """Base of every stage kind. `kind` is the config group name; `name` is set from the YAML file name."""

    kind: ClassVar[str] = ""
    #: the `Task` fields this kind writes; every other field is left as it was
    writes: ClassVar[tuple[str, ...]] = ()
    #: set by the pipeline from the option's YAML file name (e.g. "zero_shot_n8"); used in traces and origins
    name: str = ""

    def setup(self, env: Env) -> None:
        """Load models, build or load indexes for the run's databases. Called once before any `run`."""
        self.env = env

    @abc.abstractmethod
    def run(self, tasks: list[Task]) -> None:
        """Process one batch of questions in place."""

    def artifacts(self) -> list[Any]:
        """The artifacts this stage needs (`t2s.artifacts.Artifact` instances), built per database of the dataset
        (or once per source, for dataset-level artifacts) by `t2s prepare`. Default: none."""
        return []

    @property
    def origin(self) -> str:
        return f"{self.kind}/{self.name}"


class ValueRetriever(Stage):
    """Fills `task.values` with database cell values that match the question's keywords."""

    kind = "value_retriever"
    writes = ("values",)


class ExampleRetriever(Stage):
    """Fills `task.examples` with few-shot question/SQL pairs."""

    kind = "example_retriever"
    writes = ("examples",)


class SchemaLinker(Stage):
    """Fills `task.schemas` with one or more filtered schema views (`t2s.db.types.SchemaView`)."""

    kind = "schema_linker"
    writes = ("schemas",)


class Prober(Stage):
    """Runs exploration queries and records what they revealed in `task.findings`."""

    kind = "prober"
    writes = ("findings",)


class Generator(Stage):
    """Adds SQL candidates to `task.candidates`."""

    kind = "generator"
    writes = ("candidates",)


class Fixer(Stage):
    """Repairs candidates whose execution fails or returns nothing (CHASE-style)."""

    kind = "fixer"
    writes = ("candidates",)


class Corrector(Stage):
    """Rewrites candidates judged wrong (SHARE-style)."""

    kind = "corrector"
    writes = ("candidates",)


class Verifier(Stage):
    """Checks candidates against constraints drawn from the question and repairs them (PV-SQL)."""

    kind = "verifier"
    writes = ("candidates",)


class Selector(Stage):
    """Sets `task.final_sql` from the candidates."""

    kind = "selector"
    writes = ("final_sql",)


class SchemaFormat(abc.ABC):
    """Turns a `DatabaseSchema` (or a filtered view of one) into prompt text. Not a stage: the `schema_format`
    component (`conf/schema_format/`, plugins under `plugins/schema_format/`) that stages render schemas with.

    A format that reads per-database artifacts (the database profile, for summaries and top values) lists them in
    `artifacts(env)` and renders in `format_with(schema, loaded)`; `Env.view` loads them for the view's database and
    `t2s prepare` builds them. Formats that need nothing but the schema implement `format` only.
    """

    name: str = ""

    @abc.abstractmethod
    def format(self, schema: DatabaseSchema) -> str:
        """Serialize the schema. Must be deterministic (it is part of prompts, hence of cache keys)."""

    def artifacts(self, env: Env) -> list[Artifact]:
        """The per-database artifacts `format_with` reads, in order. Default: none."""
        return []

    def format_with(self, schema: DatabaseSchema, loaded: list[Any]) -> str:
        """Serialize the schema with its database's loaded artifacts (in `artifacts()` order). Default: `format`."""
        return self.format(schema)


#: pipeline order; also the list of stage config groups
STAGE_KINDS: tuple[type[Stage], ...] = (
    ValueRetriever, ExampleRetriever, SchemaLinker, Prober, Generator, Fixer, Corrector, Verifier, Selector,
)
STAGE_GROUPS: tuple[str, ...] = tuple(k.kind for k in STAGE_KINDS)
#: every Task field some stage kind writes (what the pipeline snapshots and restores)
WRITABLE_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(f for k in STAGE_KINDS for f in k.writes))
#: stages whose effect on the SQL is attributed (they write candidates or the final SQL)
SQL_STAGES: tuple[str, ...] = tuple(k.kind for k in STAGE_KINDS if {"candidates", "final_sql"} & set(k.writes))


def stage_kind(group: str) -> type[Stage]:
    """The stage class of a config group ("generator" -> `Generator`)."""
    return STAGE_KINDS[STAGE_GROUPS.index(group)]
