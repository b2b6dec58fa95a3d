"""The stage interfaces: one small abstract class per stage kind (DESIGN.md, "Data flow").

A plugin subclasses one of these under `plugins/<stage>/<name>.py` and is registered by exactly one
YAML file `conf/<stage>/<name>.yaml` (`_target_` plus keyword arguments). Constructors are typed and
keyword-only with no `**kwargs`, so a misspelled YAML key fails when the pipeline is built.

Every stage works on a whole batch (`run(tasks)`), mutates the tasks in place, and charges the LLM and
database work it does to each task (`task.charge_llm`, `env.execute(task, ...)`); the pipeline turns that
into trace events.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

from t2s.types import Task

if TYPE_CHECKING:
    from t2s.env import Env


class Stage(abc.ABC):
    """Base of every stage kind. `kind` is the config group name; `name` is set from the YAML file name."""

    kind: ClassVar[str] = ""
    #: set by the pipeline from the option name (e.g. "zero_shot"); used in traces and candidate origins
    name: str = ""

    def setup(self, env: Env) -> None:
        """Load models, build or load indexes for the run's databases. Called once before any `run`."""
        self.env = env

    @abc.abstractmethod
    def run(self, tasks: list[Task]) -> None:
        """Process one batch of questions in place."""

    @property
    def origin(self) -> str:
        return f"{self.kind}/{self.name}"


class ValueRetriever(Stage):
    """Fills `task.values` with database cell values that match the question's keywords."""

    kind = "value_retriever"


class ExampleRetriever(Stage):
    """Fills `task.examples` with few-shot question/SQL pairs."""

    kind = "example_retriever"


class SchemaLinker(Stage):
    """Fills `task.schemas` with one or more filtered schema views (`t2s.db.types.SchemaView`)."""

    kind = "schema_linker"


class Prober(Stage):
    """Runs exploration queries and records what they revealed in `task.findings`."""

    kind = "prober"


class Generator(Stage):
    """Adds SQL candidates to `task.candidates`."""

    kind = "generator"


class Fixer(Stage):
    """Repairs candidates whose execution fails or returns nothing (CHASE-style)."""

    kind = "fixer"


class Corrector(Stage):
    """Rewrites candidates judged wrong (SHARE-style)."""

    kind = "corrector"


class Verifier(Stage):
    """Checks candidates against constraints drawn from the question and repairs them (PV-SQL)."""

    kind = "verifier"


class Selector(Stage):
    """Sets `task.final_sql` from the candidates."""

    kind = "selector"


#: pipeline order; also the list of stage config groups
STAGE_KINDS: tuple[type[Stage], ...] = (
    ValueRetriever, ExampleRetriever, SchemaLinker, Prober, Generator, Fixer, Corrector, Verifier, Selector,
)
STAGE_GROUPS: tuple[str, ...] = tuple(k.kind for k in STAGE_KINDS)
