"""Core per-question types: what a benchmark gives (`Example`), what stages share (`Task`), what they emit.

Every stage reads and writes one `Task` per question (DESIGN.md, "Data flow"). Everything here is plain
data that round-trips through JSON, so a run directory can be resumed and re-scored without the code
that wrote it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self


class JsonRecord:
    """Dataclasses that round-trip through JSON: `to_dict()` / `from_dict(d)` (fields only, no nesting)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(**d)


@dataclass
class Example(JsonRecord):
    """One benchmark question.

    `qid` is unique within a dataset and stable across runs (it keys predictions, caches and resumes).
    `db_path` is the SQLite file the question runs against; `gold_sql` is None for unlabeled questions.
    `difficulty` is the dataset's own label (BIRD's simple/moderate/challenging) or None; Spider
    hardness is computed from the gold SQL by the evaluator.
    """

    qid: str
    question: str
    db_id: str
    db_path: str
    gold_sql: str | None = None
    evidence: str = ""
    difficulty: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)



@dataclass
class Candidate(JsonRecord):
    """One SQL candidate: the SQL, the plugin that produced it (`origin`, e.g. "generator/zero_shot"),
    the schema view it was generated from (None when not applicable) and free-form metadata
    (raw model output, scores, repair history)."""

    sql: str
    origin: str
    schema_view: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)



@dataclass
class Usage:
    """Resources one question spent in one stage: LLM calls and tokens, model / database seconds.

    Stages add to `task.usage` as they work (`Task.charge_llm`, `Task.charge_db`); the pipeline moves
    the totals into the stage's `TraceEvent` and resets them.
    """

    llm_calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0
    db_seconds: float = 0.0
    db_queries: int = 0
    #: tokens by model id: {model_id: {"calls": n, "prompt_tokens": n, "completion_tokens": n}} (for prices)
    models: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, other: Usage) -> None:
        for f in dataclasses.fields(self):
            if f.name == "models":
                for m, counts in other.models.items():
                    mine = self.models.setdefault(m, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
                    for k, v in counts.items():
                        mine[k] = mine.get(k, 0) + v
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class TraceEvent(JsonRecord):
    """What one stage did to one question.

    `change` is a short human-readable summary ("+3 candidates", "final_sql set", "unchanged").
    `sql_before` / `sql_after` are the candidate SQL lists around the stage (for the selector, `sql_after`
    is `[final_sql]`), which is what per-stage attribution scores. `seconds` is the stage's wall time for
    the batch divided evenly among the batch's questions; `model_seconds` and `db_seconds` are measured per
    question.
    """

    stage: str
    plugin: str
    change: str
    seconds: float
    llm_calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0
    db_seconds: float = 0.0
    db_queries: int = 0
    models: dict[str, dict[str, int]] = field(default_factory=dict)
    sql_before: list[str] = field(default_factory=list)
    sql_after: list[str] = field(default_factory=list)
    error: str | None = None



@dataclass
class Task:
    """Per-question state that flows through the pipeline (DESIGN.md, "Data flow").

    - `values`: cell values matched to question keywords (value_retriever), dicts with at least
      `table`, `column`, `value`.
    - `examples`: few-shot pairs (example_retriever), dicts with `question`, `sql`.
    - `schemas`: schema views (schema_linker); empty means "use the full schema".
    - `findings`: probe queries and what they revealed (prober), dicts with `sql`, `result`, `note`.
    - `candidates`: SQL candidates (generator, fixer, corrector, verifier).
    - `final_sql`: the selector's choice.
    """

    example: Example
    values: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    schemas: list[Any] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    final_sql: str | None = None
    #: set when a stage raised on this question: "<stage>/<plugin>: <error>"; later stages skip the question
    error: str | None = None
    trace: list[TraceEvent] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)

    @property
    def qid(self) -> str:
        return self.example.qid

    def charge_llm(self, response: Any) -> None:
        """Add one LLM response (`t2s.llm.LLMResponse`) to this question's running usage.

        Cached responses count as calls with their original tokens and model seconds, so a re-run's cost
        figures equal the first run's; `cached_calls` says how many of them the cache answered
        (new model calls = llm_calls - cached_calls).
        """
        self.usage.llm_calls += 1
        self.usage.cached_calls += 1 if response.cached else 0
        self.usage.prompt_tokens += response.prompt_tokens
        self.usage.completion_tokens += response.completion_tokens
        self.usage.model_seconds += response.seconds
        m = self.usage.models.setdefault(getattr(response, "model", "") or "unknown",
                                         {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        m["calls"] += 1
        m["prompt_tokens"] += response.prompt_tokens
        m["completion_tokens"] += response.completion_tokens

    def charge_db(self, seconds: float, queries: int = 1) -> None:
        """Add database time (seconds) spent on behalf of this question."""
        self.usage.db_seconds += seconds
        self.usage.db_queries += queries
