"""Training-row builders: one class per row kind, one YAML per kind in `conf/train/rows/<kind>.yaml`.

A row kind is a `RowBuilder`: `rows(ctx)` turns one training question (`RowContext`: the question, its full-schema
view, its candidate pool from a run, the executor, the build's seeded rng, the tokenizer, and the `train.data`
settings every kind shares, `RowSettings`) into `TrainRow`s. `TrainData` (`t2s.train.data`) reads the kinds a recipe
lists (`train.data.tasks`), instantiates each one's YAML, and calls them question by question in that order, the way
the pipeline builds and runs its stages. A builder names its kind nowhere: the kind is its YAML's file name, set by
`TrainData` (`builder.kind`) as the pipeline names a stage after its option.

The kinds every method can use live here; a method's own kinds live in its package and reach `t2s` only through
their YAML's `_target_` (SHARE's `share_bam` / `share_sam` / `share_lom`, MCTS's `mcts_step` / `ppm_step`, the
tournament's `select_pair`):

- `sql` (`SqlRows`) — the generator's exact prompt (`t2s.generation.sql_messages`, the code
  `plugins/generator/zero_shot.py` calls) -> the gold SQL in a ```sql block (what `parse_sql` reads back).
- `self_sql` (`SelfSqlRows`) — the same prompt -> the model's own correct SQL from a run's candidate pools (distinct
  correct candidates, at most `pairs_per_question` per question; with `include_gold`, questions with none get the
  gold SQL instead): self-generated SFT data, as in "rStar-Math: Small LLMs Can Master Math Reasoning with
  Self-Evolved Deep Thinking" (arXiv 2501.04519).
- `reverse_question` / `reverse_evidence` / `self_refine` (`ReverseQuestionRows`, `ReverseEvidenceRows`,
  `SelfRefineRows`) — the multi-task rows of "A Preview of XiYan-SQL: A Multi-Generator Ensemble Framework for
  Text-to-SQL" (arXiv 2411.08599): question from SQL; evidence from question + SQL (only for questions that have
  evidence); a failed SQL + its feedback -> the gold SQL. Failed SQL comes from the run's pool (candidates whose
  verdict is wrong, with the executor's error or a wrong-result note) when `train.data.predictions` is set, else
  from perturbed gold SQL (`t2s.eval.perturb`) that runs but returns a different result (`wrong_candidates`).

Writing a row kind (a method's own or a shared one): subclass `RowBuilder` with a typed keyword-only constructor (the
kind's own knobs, e.g. its prompt id), implement `rows`, and add `conf/train/rows/<kind>.yaml` with `_target_` and
every argument. A YAML may take a default from a `train.data` setting by interpolation, `${data.<setting>}` (the
`train.data` node, only its settings that are set); `train.data.prompts.<kind>` sets a builder's `prompt` and
`train.data.rows.<kind>.<arg>` any other argument. `tests/test_train_rows.py` runs every YAML of the folder.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from t2s.db.types import SchemaView
from t2s.generation import ContextLimits, sql_messages
from t2s.prompts import PromptTemplate, load_prompt
from t2s.types import Example, Task

if TYPE_CHECKING:
    from t2s.train.data import SchemaSource

#: the perturbations `wrong_candidates` tries on gold SQL, in this order
PERTURB_ORDER = ("drop_where_condition", "swap_aggregate", "change_limit", "flip_order", "drop_distinct",
                 "permute_select")

Messages = list[dict[str, str]]


@dataclass
class TrainRow:
    """One training row: chat `messages` (the prompt) and the `completion` the model learns; `meta` says where the
    row came from (prompt id, over-length truncation, perturbation kind, which candidate is correct)."""

    task: str
    qid: str
    db_id: str
    messages: Messages
    completion: str
    meta: dict[str, Any] = field(default_factory=dict)


def sql_completion(sql: str) -> str:
    """The target text of a SQL row: the SQL in a ```sql block, as the generator prompts ask and `parse_sql` reads."""
    return f"```sql\n{sql.strip().rstrip(';').strip()}\n```"


@dataclass
class RowSettings:
    """The `train.data` settings every row kind shares (one per build). `sql_template`: the generator's SQL prompt
    (`train.data.prompt`); `predictions`: a run's `predictions.jsonl` or run directory (None without a run);
    `pairs_per_question`, `include_gold`: how many rows a pool-based kind makes per question, and whether it falls
    back to the gold SQL."""

    sql_template: PromptTemplate
    dialect: str = "SQLite"
    limits: ContextLimits = field(default_factory=ContextLimits)
    predictions: str | None = None
    pairs_per_question: int = 2
    include_gold: bool = False
    seed: int = 0
    _templates: dict[str, PromptTemplate] = field(default_factory=dict, repr=False)

    def prompt(self, name: str) -> PromptTemplate:
        """The template `name` (`load_prompt`, loaded once per build)."""
        if name not in self._templates:
            self._templates[name] = load_prompt(name)
        return self._templates[name]

    def sql_prompt(self, ex: Example, view: SchemaView) -> Messages:
        """The generator's exact messages for one question and schema view."""
        return sql_messages(self.sql_template, Task(example=ex), view, dialect=self.dialect, limits=self.limits)

    @property
    def run_dir(self) -> Path | None:
        """The run directory of `predictions` (the file's folder when it names `predictions.jsonl`)."""
        if not self.predictions:
            return None
        path = Path(self.predictions)
        return path if path.is_dir() else path.parent


@dataclass
class RowContext:
    """What a builder gets for one training question: the `train.data` settings (`data`), the question, its
    full-schema view (as `Env.full_view` gives the generator), the per-database schemas, its candidate pool from
    `train.data.predictions` (`[{"sql", "correct", "origin", "meta"}]`, empty without a run), the executor (a
    read-only `t2s.db.execute.SQLExecutor`, or None), the build's seeded rng (one for the whole build, shared by the
    kinds in `tasks` order, so a build is reproducible) and the tokenizer the rows are measured with."""

    data: RowSettings
    example: Example
    view: SchemaView
    schemas: SchemaSource
    pool: list[dict[str, Any]]
    executor: Any
    rng: random.Random
    tokenizer: Any = None

    def evidence_block(self, template: PromptTemplate) -> str:
        """The template's `evidence` block for this question ("" without evidence or with `use_evidence` off)."""
        ev = self.data.limits.use_evidence and self.example.evidence
        return template.block("evidence", [{"evidence": self.example.evidence}] if ev else [])


class RowBuilder:
    """A row kind: turns one training question into rows (`rows`), built from `conf/train/rows/<kind>.yaml`.

    `kind` is the YAML's name, set by `TrainData`. `trains_sql`: the rows teach the model to write SQL for a question,
    so validation EX means something (`train.monitor=val_ex`); `validation_prompt` then says which prompt validation
    asks (None: the generator's, `RowSettings.sql_prompt`). `begin` runs before each build (state that spans
    questions, e.g. an order-balance counter, starts there). `params` is what the build records in `stats.json`."""

    kind: str = ""
    trains_sql: ClassVar[bool] = False

    def __init__(self) -> None:
        """A kind without settings of its own (a YAML key it does not take is an error naming the key)."""

    def begin(self, data: RowSettings) -> None:
        """Reset state that spans the questions of one build (nothing by default)."""

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        """The rows of one question (an empty list when the question gives none: counted as skipped)."""
        raise NotImplementedError

    def validation_prompt(self, ex: Example, view: SchemaView, data: RowSettings) -> Messages | None:
        """The prompt validation EX asks a model trained on these rows, when it is not the generator's (None)."""
        return None

    def params(self) -> dict[str, Any]:
        """The builder's own settings (its constructor's arguments), recorded with the rows' statistics."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "kind"}

    def row(self, ctx: RowContext, messages: Messages, completion: str, **meta: Any) -> TrainRow:
        """A row of this kind for `ctx`'s question; `meta` starts with the schema text (used to cut an over-long
        prompt, then dropped) and adds the builder's `meta`."""
        ex = ctx.example
        return TrainRow(self.kind, ex.qid, ex.db_id, messages, completion, {"schema_text": ctx.view.text, **meta})


# ------------------------------------------------------------------------------------------------ shared kinds
class SqlRows(RowBuilder):
    """`sql`: the generator's exact prompt -> the gold SQL in a ```sql block."""

    trains_sql = True

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        gold = (ctx.example.gold_sql or "").strip()
        return [self.row(ctx, ctx.data.sql_prompt(ctx.example, ctx.view), sql_completion(gold),
                         prompt=ctx.data.sql_template.id)]


class SelfSqlRows(RowBuilder):
    """`self_sql`: the generator's prompt -> each distinct correct SQL of the question's pool (at most
    `pairs_per_question`; with `include_gold` the gold SQL when the pool has none)."""

    trains_sql = True

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        gold = (ctx.example.gold_sql or "").strip()
        good = list(dict.fromkeys(c["sql"].strip() for c in ctx.pool if c.get("correct") and c["sql"].strip()))
        good = good[: ctx.data.pairs_per_question] or ([gold] if ctx.data.include_gold else [])
        return [self.row(ctx, ctx.data.sql_prompt(ctx.example, ctx.view), sql_completion(s),
                         prompt=ctx.data.sql_template.id,
                         source="self" if s != gold or not ctx.data.include_gold else "gold") for s in good]


class ReverseQuestionRows(RowBuilder):
    """`reverse_question`: schema + gold SQL (+ evidence) -> the question (`prompt`, `train_reverse_question_v1`)."""

    def __init__(self, *, prompt: str = "train_reverse_question_v1") -> None:
        self.prompt = prompt

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        ex, t = ctx.example, ctx.data.prompt(self.prompt)
        return [self.row(ctx, t.render(dialect=ctx.data.dialect, schema=ctx.view.text, sql=(ex.gold_sql or "").strip(),
                                       evidence_block=ctx.evidence_block(t)), ex.question, prompt=t.id)]


class ReverseEvidenceRows(RowBuilder):
    """`reverse_evidence`: schema + question + gold SQL -> the evidence (BIRD), for questions that have evidence
    (`prompt`, `train_reverse_evidence_v1`)."""

    def __init__(self, *, prompt: str = "train_reverse_evidence_v1") -> None:
        self.prompt = prompt

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        ex = ctx.example
        if not ex.evidence:
            return []
        t = ctx.data.prompt(self.prompt)
        return [self.row(ctx, t.render(dialect=ctx.data.dialect, schema=ctx.view.text, question=ex.question,
                                       sql=(ex.gold_sql or "").strip()), ex.evidence, prompt=t.id)]


class SelfRefineRows(RowBuilder):
    """`self_refine`: a wrong SQL for the question (one of `wrong_candidates`, drawn with the build's rng) and its
    feedback -> the gold SQL (`prompt`, `train_self_refine_v1`)."""

    def __init__(self, *, prompt: str = "train_self_refine_v1") -> None:
        self.prompt = prompt

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        ex = ctx.example
        wrong = wrong_candidates(ex, ctx.pool, ctx.executor)
        if not wrong:
            return []
        sql, feedback, origin = wrong[ctx.rng.randrange(len(wrong))]
        t = ctx.data.prompt(self.prompt)
        return [self.row(ctx, t.render(dialect=ctx.data.dialect, schema=ctx.view.text, question=ex.question, sql=sql,
                                       feedback=feedback, evidence_block=ctx.evidence_block(t)),
                         sql_completion((ex.gold_sql or "").strip()), prompt=t.id, wrong_origin=origin)]


# ------------------------------------------------------------------------------------------------ helpers
def result_text(res: Any, max_rows: int = 5) -> str:
    """An execution result as a row prompt shows it: the first `max_rows` rows as JSON, or the error."""
    if res is None:
        return "not run"
    if not res.ok:
        return f"error: {res.error or 'timeout'}"
    rows = [list(r) for r in res.rows[:max_rows]]
    more = f" ... ({len(res.rows)} rows)" if len(res.rows) > max_rows else ""
    return json.dumps(rows, ensure_ascii=False, default=str) + more


def wrong_candidates(ex: Example, pool: list[dict[str, Any]], executor: Any) -> list[tuple[str, str, str]]:
    """(sql, feedback, origin) of wrong SQL for a question: the pool's wrong candidates (origin "pool"), then
    perturbed gold SQL whose result differs from the gold's (origin = perturbation kind; needs `executor`)."""
    from t2s.eval.execution import results_equal
    from t2s.eval.perturb import perturb as perturb_sql

    out: list[tuple[str, str, str]] = []
    seen = {(ex.gold_sql or "").strip()}
    wrong = [c["sql"] for c in pool if not c.get("correct") and c["sql"].strip() and c["sql"].strip() not in seen]
    for sql in dict.fromkeys(wrong):
        seen.add(sql)
        out.append((sql, "", "pool"))
    if executor is not None:
        pert = [(k, s) for k in PERTURB_ORDER if (s := perturb_sql(ex.gold_sql or "", k)) and s.strip() not in seen]
        results = executor.execute_many([(ex.db_path, s) for s in [ex.gold_sql or "", *[s for _, s in pert]]])
        gold_res, pert_res = results[0], results[1:]
        for (k, s), res in zip(pert, pert_res):
            if not gold_res.ok or not res.ok or not results_equal(gold_res.rows, res.rows):
                out.append((s, _feedback(res, gold_res), k))
        if out and out[0][2] == "pool":  # fill in pool feedback from execution
            pool_res = executor.execute_many([(ex.db_path, s) for s, _, o in out if o == "pool"])
            out = [(s, _feedback(pool_res[i], gold_res), o) if o == "pool" else (s, f, o)
                   for i, (s, f, o) in enumerate(out)]
    return out


def _feedback(res: Any, gold: Any) -> str:
    if not res.ok:
        return f"execution failed: {res.error or 'timeout'}"
    if not res.rows:
        return "the query returns no rows"
    return f"the query runs but returns a wrong result ({len(res.rows)} rows, first: {result_text(res, 1)})"
