"""Core per-question types: what a benchmark gives (`Example`), what stages share (`Task`), what they emit.

Every stage reads and writes one `Task` per question (docs/design.md, "The pipeline"). Everything here is plain
data that round-trips through JSON, so a run directory can be resumed and re-scored without the code
that wrote it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from t2s.db.types import SchemaView
from t2s.records import JsonRecord


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
    """One SQL candidate.

    - `origin`: the option that produced it ("generator/zero_shot_n8", "fixer/chase"); `schema_view`: the view it
      was generated from ("full", "S1", "S2"; None when not applicable).
    - `id`: unique within its question ("c0", "c1", ... in order of appearance), assigned by the pipeline after the
      stage that added the candidate; `parent`: the id of the candidate it was derived from (a fixer's or corrector's
      output points to its input), so a trace shows the repair chain.
    - `meta`: free-form (raw model output, prompt id, finish reason, the error that triggered a repair, scores).
    """

    sql: str
    origin: str
    schema_view: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    parent: str | None = None

    def derive(self, sql: str, origin: str, **meta: Any) -> Candidate:
        """A new candidate derived from this one (same schema view, `parent` = this id), e.g. a repair."""
        return Candidate(sql=sql, origin=origin, schema_view=self.schema_view, meta=dict(meta), parent=self.id or None)


@dataclass
class CellValue(JsonRecord):
    """A database cell value matched to the question (value retrievers): `table.column = value`, with the
    retriever's `score` (higher is better; its scale is the retriever's) and `origin` (the option that found it)."""

    table: str
    column: str
    value: Any
    score: float = 0.0
    origin: str = ""


@dataclass
class FewShot(JsonRecord):
    """A few-shot example (example retrievers): a question with its SQL, the retriever's `score`, and `source`
    ("<dataset>:<qid>"), `db_id` of the example's database."""

    question: str
    sql: str
    score: float = 0.0
    source: str = ""
    db_id: str = ""
    evidence: str = ""


@dataclass
class Finding(JsonRecord):
    """What one exploration query revealed (probers): the SQL, its `status` ("ok", "empty", "error", "timeout",
    "rejected", "malformed"), the first rows and their columns, a one-line `note` for the generator, what the
    probe `asked`, and the option that made it (`origin`). Malformed probes and errors are findings too."""

    sql: str
    status: str
    rows: list[list[Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    note: str = ""
    asked: str = ""
    origin: str = ""


@dataclass
class Usage(JsonRecord):
    """Resources one question spent in one stage: LLM calls and tokens, model / database seconds.

    Stages add to `task.usage` as they work (`Task.charge_llm`, `Task.charge_db`); the pipeline moves
    the totals into the stage's `TraceEvent` and resets them.
    """

    llm_calls: int = 0
    cached_calls: int = 0
    #: model outputs: every sampled completion of a generation call (`n` of them), and 1 per scoring call
    completions: int = 0
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
    #: sampled completions plus scoring calls (`Usage.completions`); absent (0) in traces written before it existed
    completions: int = 0
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
class Task(JsonRecord):
    """Per-question state that flows through the pipeline (docs/design.md, "The pipeline").

    Which stage kind writes which field is declared once, by `t2s.stages.Stage.writes`:
    `values` (value_retriever), `examples` (example_retriever), `schemas` (schema_linker; empty means "use the full
    schema"), `findings` (prober), `candidates` (generator, fixer, corrector, verifier: the current pool),
    `final_sql` (selector). `dropped` keeps candidates that left the pool (a fixer replacing its input), so the
    repair chains stay scorable; the pipeline maintains it and assigns candidate ids (`next_id`).
    """

    example: Example
    values: list[CellValue] = field(default_factory=list)
    examples: list[FewShot] = field(default_factory=list)
    schemas: list[SchemaView] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    final_sql: str | None = None
    dropped: list[Candidate] = field(default_factory=list)
    next_id: int = 0
    #: set when a stage raised on this question: "<stage>/<plugin>: <error>"; later stages skip the question
    error: str | None = None
    trace: list[TraceEvent] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)

    def number_candidates(self) -> None:
        """Give every candidate without an id the next one ("c<k>"), in pool order."""
        for c in self.candidates:
            if not c.id:
                c.id = f"c{self.next_id}"
                self.next_id += 1

    @property
    def qid(self) -> str:
        return self.example.qid

    def charge_llm(self, response: Any) -> None:
        """Add one LLM response (`t2s.llm.LLMResponse`, or a scoring response) to this question's running usage.

        Only the environment calls this (`Env.generate` / `Env.score`): plugins never charge anything themselves.
        Cached responses count as calls with their original tokens and model seconds, so a re-run's cost figures
        equal the first run's; `cached_calls` says how many of them the cache answered (new model calls =
        llm_calls - cached_calls).
        """
        prompt = int(getattr(response, "prompt_tokens", 0))
        completion = int(getattr(response, "completion_tokens", 0))
        self.usage.llm_calls += 1
        self.usage.cached_calls += 1 if getattr(response, "cached", False) else 0
        texts = getattr(response, "texts", None)
        self.usage.completions += max(1, len(texts)) if texts is not None else 1
        self.usage.prompt_tokens += prompt
        self.usage.completion_tokens += completion
        self.usage.model_seconds += float(getattr(response, "seconds", 0.0))
        m = self.usage.models.setdefault(getattr(response, "model", "") or "unknown",
                                         {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        m["calls"] += 1
        m["prompt_tokens"] += prompt
        m["completion_tokens"] += completion

    def charge_db(self, seconds: float, queries: int = 1) -> None:
        """Add database time (seconds) spent on behalf of this question."""
        self.usage.db_seconds += seconds
        self.usage.db_queries += queries
