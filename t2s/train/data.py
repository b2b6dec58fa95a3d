"""Training-data builders: deterministic rows (prompt messages + target text) from a dataset config, saved with a hash.

Every row is `TrainRow(task, qid, db_id, messages, completion)`: `messages` are chat messages rendered later with
the model's own chat template (exactly what `t2s.llm.hf.HFLLM.render` does at inference), `completion` the text the
model must produce. Row kinds (`TrainData.tasks`):

- `sql` — the generator's exact prompt (`t2s.generation.sql_messages`, the code `plugins/generator/zero_shot.py`
  calls) -> the gold SQL in a ```sql block (what `parse_sql` reads back). Seed 003 phase 1, seed 001 SFT.
- `self_sql` — the same prompt -> the model's own correct SQL from a run's candidate pools (`predictions`; distinct
  correct candidates, at most `pairs_per_question` per question; with `include_gold`, questions with none get the
  gold SQL instead): rStar-style self-generated SFT data (seed 001).
- `reverse_question` / `reverse_evidence` / `self_refine` — XiYan-style multi-task rows (seed 004 op 3): question from
  SQL; evidence from question + SQL (only for questions that have evidence); a failed SQL + its feedback -> the gold
  SQL. Failed SQL comes from a run's `predictions.jsonl` (candidates whose verdict is wrong, with the executor's
  error or a wrong-result note) when `predictions` is set, else from perturbed gold SQL (`t2s.eval.perturb`) that
  runs but returns a different result.
- `select_pair` — pairwise selection rows (seed 004 op 4): question, schema, two candidates with their execution
  results, answer "A"/"B". Pairs are (correct, wrong) from a run's candidate pools plus hard negatives from perturbed
  gold SQL; the correct one is put first in exactly half the rows (order balance), and wrong candidates alternate
  between pool and perturbation origins when both exist.
- `mcts_step` / `ppm_step` — rStar self-evolution rows (seed 001) from the search trees of a `generator=mcts` run
  (`predictions` = its run directory; its `config.yaml` gives the search prompts, `t2s.generation.SearchPrompts`, the
  code the generator calls). Step values are backed up from the gold verdicts (`gold_values`). `mcts_step`: each
  step of the best `pairs_per_question` correct trajectories in the exact prompt that produced it -> its text;
  `ppm_step`: sibling reasoning steps -> "Yes" (leads to a correct SQL) / "No" (only to wrong SQL), balanced. The
  rows use this config's schema format, which must be the run's (the `rstar` recipe makes it so).
- `share_bam` / `share_sam` / `share_lom` — SHARE's three models (seed 000 section 3.4): SQL -> trajectory
  (`t2s.sql.trajectory.sql_to_trajectory`), schema-masked trajectory -> filled (`mask_schema`), perturbed trajectory
  (add / delete / substitute one action, `perturb`) -> correct trajectory. Questions the translator does not express
  are counted (`skipped`) and left out.

Over-length policy (seed 003 phase 1.6): a row whose prompt has more than `max_prompt_tokens` tokens is dropped
(`over_length: drop`) or its schema text is cut, whole lines from the end, until it fits (`truncate`); both counts are
in the statistics. `build` returns the rows, held-out validation questions (a seeded slice of `val_size` questions
that no training row uses), and statistics (prompt / completion token min, mean, p50, p95, max; kinds; dropped;
truncated), and writes `rows-<hash12>.jsonl` + `stats.json` where the hash is sha256 of the rows' canonical JSON:
same dataset, config and tokenizer -> same file name.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from t2s_plugins.generator.mcts.prompts import SearchPrompts, SearchStep

from t2s.db.introspect import introspect
from t2s.db.types import DatabaseSchema, SchemaView
from t2s.eval.execution import prepare_sql
from t2s.generation import ContextLimits, sql_messages, template_messages
from t2s.prompts import PromptTemplate, load_prompt
from t2s.select import pair_messages
from t2s.stages import SchemaFormat
from t2s.types import Example, Task

TASKS = ("sql", "self_sql", "reverse_question", "reverse_evidence", "self_refine", "select_pair", "share_bam", "share_sam",
         "share_lom", "mcts_step", "ppm_step")
#: row kinds read from the search trees of a `generator=mcts` run
SEARCH_TASKS = ("mcts_step", "ppm_step")
OVER_LENGTH = ("drop", "truncate")
#: the stage prompt each adapter-trained row kind is built with: the prompt the stage that loads the adapter asks
#: (`selector=adaptive_tournament`'s `prompt`, `corrector=share`'s `bam_prompt` / `sam_prompt` / `lom_prompt`);
#: keep `train.data.prompts` equal to the stage's settings
INFERENCE_PROMPTS = {"select_pair": "tournament_v1", "share_bam": "share_bam_v1", "share_sam": "share_sam_v1",
                     "share_lom": "share_lom_v1"}
PERTURB_ORDER = ("drop_where_condition", "swap_aggregate", "change_limit", "flip_order", "drop_distinct",
                 "permute_select")


@dataclass
class TrainRow:
    """One training row: chat `messages` (the prompt) and the `completion` the model learns; `meta` says where the
    row came from (prompt id, over-length truncation, perturbation kind, which candidate is correct)."""

    task: str
    qid: str
    db_id: str
    messages: list[dict[str, str]]
    completion: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuiltData:
    """What `TrainData.build` returns: training rows, held-out validation questions, statistics, the rows file."""

    rows: list[TrainRow]
    val_examples: list[Example]
    stats: dict[str, Any]
    path: Path | None = None
    digest: str = ""


def sql_completion(sql: str) -> str:
    """The target text of a SQL row: the SQL in a ```sql block, as the generator prompts ask and `parse_sql` reads."""
    return f"```sql\n{sql.strip().rstrip(';').strip()}\n```"


class SchemaSource:
    """Introspected schemas (cached under `cache_dir/schemas`) and their text in one schema format, per database."""

    def __init__(self, schema_format: SchemaFormat, cache_dir: Path, *, sample_values: int = 3,
                 sample_rows: int = 3) -> None:
        self.fmt = schema_format
        self.cache_dir = Path(cache_dir)
        self.sample_values = sample_values
        self.sample_rows = sample_rows
        self._schemas: dict[str, DatabaseSchema] = {}
        self._texts: dict[str, str] = {}

    def schema(self, ex: Example) -> DatabaseSchema:
        if ex.db_path not in self._schemas:
            self._schemas[ex.db_path] = introspect(ex.db_path, ex.db_id, n_samples=self.sample_values,
                                                   n_rows=self.sample_rows, cache_dir=self.cache_dir / "schemas")
        return self._schemas[ex.db_path]

    def view(self, ex: Example) -> SchemaView:
        """The full-schema view, as `Env.full_view` gives the generator."""
        if ex.db_path not in self._texts:
            self._texts[ex.db_path] = self.fmt.format(self.schema(ex))
        return SchemaView(name="full", schema=self.schema(ex), text=self._texts[ex.db_path])


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text the model sees: `messages` through the tokenizer's chat template with the generation prompt
    (identical to `HFLLM.render`)."""
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Token count of the rendered prompt (no special tokens added beyond the chat template's, as at inference)."""
    return len(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])


def _percentile(values: Sequence[int], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return float(s[min(len(s) - 1, int(round(q * (len(s) - 1))))])


def length_stats(values: Sequence[int]) -> dict[str, float]:
    """min / mean / p50 / p95 / max of token counts (zeros for an empty list)."""
    if not values:
        return {"min": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0}
    return {"min": min(values), "mean": round(sum(values) / len(values), 1), "p50": _percentile(values, 0.5),
            "p95": _percentile(values, 0.95), "max": max(values)}


def rows_digest(rows: Sequence[TrainRow]) -> str:
    """sha256 of the rows' canonical JSON (sorted keys): the identity of a training set."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(asdict(r), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def save_rows(rows: Sequence[TrainRow], out_dir: Path, stats: dict[str, Any]) -> tuple[Path, str]:
    """Write `rows-<hash12>.jsonl` and `stats.json` into `out_dir`; return the rows path and the full hash."""
    digest = rows_digest(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"rows-{digest[:12]}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            for r in rows:
                f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
        tmp.replace(path)
    (out_dir / "stats.json").write_text(json.dumps({**stats, "rows_file": path.name, "sha256": digest}, indent=2))
    return path, digest


def load_rows(path: Path) -> list[TrainRow]:
    """Rows written by `save_rows`."""
    return [TrainRow(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def _result_text(res: Any, max_rows: int = 5) -> str:
    if res is None:
        return "not run"
    if not res.ok:
        return f"error: {res.error or 'timeout'}"
    rows = [list(r) for r in res.rows[:max_rows]]
    more = f" ... ({len(res.rows)} rows)" if len(res.rows) > max_rows else ""
    return json.dumps(rows, ensure_ascii=False, default=str) + more


class TrainData:
    """A training-data builder (the `train/data` config group): which row kinds, from which prompt, how long.

    `tasks`: row kinds (see the module docstring; `TASKS`). `prompt`: the SQL prompt template (the generator's,
    `zero_shot_v1` by default: keep them equal). `max_prompt_tokens` / `over_length` (drop | truncate): the
    over-length policy. `val_size`: questions held out for validation EX (seeded by `seed`, never in a training row).
    `predictions`: a run's `predictions.jsonl` (or its run directory) giving candidate pools with verdicts, for
    `self_sql`, `self_refine` and `select_pair` (without it the last two use perturbed gold SQL only), and for
    `mcts_step` / `ppm_step` the run's search trees. `include_gold`: `self_sql` and `mcts_step` fall back to the gold
    SQL for questions without a correct candidate. `pairs_per_question`: at most this many selection rows, `self_sql`
    rows or `mcts_step` trajectories per question. `share_kinds`: LOM perturbation kinds. `prompts`: the inference
    prompt per stage-adapter row kind (`INFERENCE_PROMPTS`). `semantics` / `keep_distinct`: how `select_pair`
    candidates are executed for the results the rows show (the tournament's `eval.semantics` / `eval.keep_distinct`).
    """

    def __init__(self, *, tasks: list[str] | None = None, prompt: str = "zero_shot_v1", dialect: str = "SQLite",
                 use_evidence: bool = True, max_prompt_tokens: int = 1024, over_length: str = "truncate",
                 val_size: int = 8, predictions: str | None = None, pairs_per_question: int = 2,
                 share_kinds: list[str] | None = None, include_gold: bool = False,
                 prompts: dict[str, str] | None = None, semantics: str = "spider", keep_distinct: bool = False,
                 seed: int = 0) -> None:
        tasks = list(tasks or ["sql"])
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"train.data.tasks: unknown row kind(s) {unknown}; choose from {', '.join(TASKS)}")
        if over_length not in OVER_LENGTH:
            raise ValueError(f"train.data.over_length={over_length!r}: use 'drop' or 'truncate'")
        if max_prompt_tokens < 16 or val_size < 0 or pairs_per_question < 1:
            raise ValueError("train.data: need max_prompt_tokens >= 16, val_size >= 0, pairs_per_question >= 1")
        self.tasks = tasks
        self.template = load_prompt(prompt)
        self.dialect = dialect
        self.limits = ContextLimits(use_evidence=use_evidence)
        self.max_prompt_tokens = max_prompt_tokens
        self.over_length = over_length
        self.val_size = val_size
        self.predictions = predictions
        self.pairs_per_question = pairs_per_question
        self.share_kinds = list(share_kinds or ["add", "delete", "substitute"])
        self.include_gold = include_gold
        unknown_p = sorted(set(prompts or {}) - set(INFERENCE_PROMPTS))
        if unknown_p:
            raise ValueError(f"train.data.prompts: no inference prompt for row kind(s) {unknown_p}; the kinds that use "
                             f"one: {', '.join(INFERENCE_PROMPTS)}")
        self.prompts = {**INFERENCE_PROMPTS, **(prompts or {})}
        prepare_sql("SELECT 1", semantics=semantics)  # an unknown semantics fails here, naming the choices
        self.semantics = semantics
        self.keep_distinct = keep_distinct
        self.seed = seed
        self._prompts: dict[str, PromptTemplate] = {}
        self._n_pairs = 0
        self._search_cache: tuple[Path, SearchPrompts] | None = None

    def params(self) -> dict[str, Any]:
        """Everything that decides the rows (recorded in stats.json and the training config)."""
        return {"tasks": self.tasks, "prompt": self.template.id, "dialect": self.dialect,
                "use_evidence": self.limits.use_evidence, "max_prompt_tokens": self.max_prompt_tokens,
                "over_length": self.over_length, "val_size": self.val_size, "predictions": self.predictions,
                "pairs_per_question": self.pairs_per_question, "share_kinds": self.share_kinds,
                "include_gold": self.include_gold, "prompts": self.prompts, "semantics": self.semantics,
                "keep_distinct": self.keep_distinct, "seed": self.seed}

    def _prompt(self, name: str) -> PromptTemplate:
        if name not in self._prompts:
            self._prompts[name] = load_prompt(name)
        return self._prompts[name]

    # ------------------------------------------------------------------------------------------ split
    def split(self, examples: list[Example]) -> tuple[list[Example], list[Example]]:
        """(training questions, validation questions): a seeded slice of `val_size` held out, both in file order."""
        labelled = [e for e in examples if e.gold_sql]
        n_val = min(self.val_size, max(0, len(labelled) - 1))
        held = set(random.Random(self.seed).sample(range(len(labelled)), n_val)) if n_val else set()
        val = [e for i, e in enumerate(labelled) if i in held]
        return [e for i, e in enumerate(labelled) if i not in held], val

    def sql_prompt(self, ex: Example, view: SchemaView) -> list[dict[str, str]]:
        """The generator's exact messages for one question and schema view."""
        return sql_messages(self.template, Task(example=ex), view, dialect=self.dialect, limits=self.limits)

    def val_prompt(self, ex: Example, view: SchemaView) -> list[dict[str, str]]:
        """The SQL prompt that validation EX asks the model: the generator's (`sql_prompt`), or for a policy trained
        only on search steps (`mcts_step`) the search's own SQL prompt at the root, the prompt it learned."""
        if "mcts_step" in self.tasks and not {"sql", "self_sql"} & set(self.tasks):
            return _root_sql(self._search()[1], ex, view)
        return self.sql_prompt(ex, view)

    # ------------------------------------------------------------------------------------------ build
    def build(self, examples: list[Example], schemas: SchemaSource, tokenizer: Any, out_dir: Path | None = None,
              *, executor: Any = None) -> BuiltData:
        """Rows for every training question and kind, the validation questions and statistics (see the module
        docstring). `executor` (a `t2s.db.execute.SQLExecutor`) runs candidate SQL for `self_refine` feedback and
        `select_pair` results; without one those kinds use only what the predictions file says."""
        train, val = self.split(examples)
        pools = _read_pools(self.predictions) if self.predictions else {}
        rng = random.Random(self.seed)
        raw: list[TrainRow] = []
        skipped: Counter[str] = Counter()
        self._n_pairs = 0
        for ex in train:
            view = schemas.view(ex)
            for kind in self.tasks:
                made = self._rows(kind, ex, view, schemas, pools.get(ex.qid, []), rng, executor)
                if not made:
                    skipped[kind] += 1
                raw.extend(made)
        rows: list[TrainRow] = []
        dropped = truncated = 0
        p_lens: list[int] = []
        c_lens: list[int] = []
        for r in raw:
            n = prompt_tokens(tokenizer, r.messages)
            if n > self.max_prompt_tokens:
                if self.over_length == "drop":
                    dropped += 1
                    continue
                fitted = self._truncate(r, tokenizer)
                if fitted is None:
                    dropped += 1
                    continue
                r, n = fitted
                truncated += 1
            r.meta.pop("schema_text", None)  # only needed to cut the schema; not stored
            rows.append(r)
            p_lens.append(n)
            c_lens.append(len(tokenizer(r.completion, add_special_tokens=False)["input_ids"]) + 1)
        stats = {"n_questions": len(train), "n_val": len(val), "n_rows": len(rows),
                 "kinds": dict(Counter(r.task for r in rows)), "dropped_over_length": dropped,
                 "truncated_schema": truncated, "skipped": dict(skipped), "prompt_tokens": length_stats(p_lens),
                 "completion_tokens": length_stats(c_lens), "params": self.params(),
                 "val_qids": [e.qid for e in val]}
        data = BuiltData(rows=rows, val_examples=val, stats=stats)
        if out_dir is not None:
            data.path, data.digest = save_rows(rows, out_dir, stats)
        else:
            data.digest = rows_digest(rows)
        return data

    def _truncate(self, row: TrainRow, tokenizer: Any) -> tuple[TrainRow, int] | None:
        """The row with its schema text cut (whole lines from the end) to fit, or None if even no schema is too long."""
        schema_text = row.meta.get("schema_text")
        if not schema_text:
            return None
        lines = schema_text.splitlines()
        lo, hi, best = 0, len(lines) - 1, None
        while lo <= hi:  # the most schema lines that fit
            mid = (lo + hi) // 2
            cut = "\n".join(lines[:mid])
            msgs = [{**m, "content": m["content"].replace(schema_text, cut)} for m in row.messages]
            n = prompt_tokens(tokenizer, msgs)
            if n <= self.max_prompt_tokens:
                best, lo = (msgs, n, mid), mid + 1
            else:
                hi = mid - 1
        if best is None:
            return None
        msgs, n, kept = best
        return TrainRow(row.task, row.qid, row.db_id, msgs, row.completion,
                        {**row.meta, "truncated_lines": len(lines) - kept}), n

    def _rows(self, kind: str, ex: Example, view: SchemaView, schemas: SchemaSource, pool: list[dict[str, Any]],
              rng: random.Random, executor: Any) -> list[TrainRow]:
        gold = (ex.gold_sql or "").strip()
        meta = {"schema_text": view.text}
        ev = self.limits.use_evidence and ex.evidence

        def evidence_block(t: PromptTemplate) -> str:
            return t.block("evidence", [{"evidence": ex.evidence}] if ev else [])

        def row(messages: list[dict[str, str]], completion: str, **extra: Any) -> TrainRow:
            return TrainRow(kind, ex.qid, ex.db_id, messages, completion, {**meta, **extra})

        if kind == "sql":
            return [row(self.sql_prompt(ex, view), sql_completion(gold), prompt=self.template.id)]
        if kind == "self_sql":
            good = list(dict.fromkeys(c["sql"].strip() for c in pool if c.get("correct") and c["sql"].strip()))
            good = good[: self.pairs_per_question] or ([gold] if self.include_gold else [])
            return [row(self.sql_prompt(ex, view), sql_completion(s), prompt=self.template.id,
                        source="self" if s != gold or not self.include_gold else "gold") for s in good]
        if kind == "reverse_question":
            t = self._prompt("train_reverse_question_v1")
            return [row(t.render(dialect=self.dialect, schema=view.text, sql=gold, evidence_block=evidence_block(t)),
                        ex.question, prompt=t.id)]
        if kind == "reverse_evidence":
            if not ex.evidence:
                return []
            t = self._prompt("train_reverse_evidence_v1")
            return [row(t.render(dialect=self.dialect, schema=view.text, question=ex.question, sql=gold),
                        ex.evidence, prompt=t.id)]
        if kind == "self_refine":
            wrong = _wrong_candidates(ex, pool, executor)
            if not wrong:
                return []
            sql, feedback, origin = wrong[rng.randrange(len(wrong))]
            t = self._prompt("train_self_refine_v1")
            return [row(t.render(dialect=self.dialect, schema=view.text, question=ex.question, sql=sql,
                                 feedback=feedback, evidence_block=evidence_block(t)),
                        sql_completion(gold), prompt=t.id, wrong_origin=origin)]
        if kind == "select_pair":
            return self._select_rows(ex, view, pool, executor, row)
        if kind in SEARCH_TASKS:
            return self._search_rows(kind, ex, view, pool, row)
        return self._share_rows(kind, ex, view, schemas, rng, row)

    # ------------------------------------------------------------------------------------------ search trees
    def _search(self) -> tuple[Path, SearchPrompts]:
        """The run directory of `predictions` and the search prompts of its `generator=mcts` config."""
        if self._search_cache is None:
            if not self.predictions:
                raise ValueError(f"train.data.tasks {list(SEARCH_TASKS)} read the search trees of a `t2s run "
                                 f"generator=mcts`: set train.data.predictions=<that run's directory>")
            run_dir = Path(self.predictions)
            run_dir = run_dir if run_dir.is_dir() else run_dir.parent
            gen = search_generator(run_dir)
            if gen is None:
                raise ValueError(f"train.data.predictions={self.predictions}: {run_dir / 'config.yaml'} is not the "
                                 f"config of a `t2s run generator=mcts` run, so it has no search trees for "
                                 f"{list(SEARCH_TASKS)}")
            defaults = {"step_prompt": "mcts_step_v1", "sql_prompt": "mcts_sql_v1", "revise_prompt": "mcts_revise_v1",
                        "ppm_prompt": "mcts_ppm_v1", "dialect": "SQLite", "use_evidence": True}
            prompts = SearchPrompts(actions=list(gen.get("actions") or ["values", "plan"]),
                                    **{k: gen.get(k, v) for k, v in defaults.items()})
            self._search_cache = (run_dir, prompts)
        return self._search_cache

    def _search_rows(self, kind: str, ex: Example, view: SchemaView, pool: list[dict[str, Any]],
                     row: Callable[..., TrainRow]) -> list[TrainRow]:
        """rStar self-evolution rows from a question's saved MCTS tree, with Q-values backed up from gold verdicts
        (`gold_values`). `mcts_step`: every step on the best `pairs_per_question` paths that end in a correct SQL
        (ranked by the mean Q of their steps, as rStar keeps its top trajectories), each as the exact
        search prompt that produced it -> the node's text (SQL nodes in a ```sql block); a wrong SQL that a revise
        step repaired is context, not a target. `ppm_step`: process-preference rows, rStar's step pairs made
        pointwise for a Yes/No PPM: among sibling reasoning steps, up to two that lead to a correct SQL (highest Q)
        -> "Yes" and as many that lead only to wrong SQL -> "No"."""
        run_dir, prompts = self._search()
        ref = next((c for c in pool if c.get("tree")), None)
        fallback = kind == "mcts_step" and self.include_gold
        if ref is None or not (run_dir / str(ref["tree"])).is_file():
            return self._gold_step(ex, view, prompts, row) if fallback else []
        nodes = json.loads((run_dir / str(ref["tree"])).read_text())["nodes"]
        by_id = {int(n["id"]): n for n in nodes}
        correct = {int(c["node"]): bool(c["correct"]) for c in pool if c.get("node") is not None}
        q = gold_values(nodes, correct)

        def path(nid: int) -> list[dict[str, Any]]:
            out = [by_id[nid]]
            while out[-1].get("parent") is not None:
                out.append(by_id[int(out[-1]["parent"])])
            return out[::-1]

        def steps(p: list[dict[str, Any]]) -> list[SearchStep]:
            return [SearchStep.of(n) for n in p]

        fields = {"schema": view.text, "question": ex.question, "evidence": ex.evidence}
        if kind == "ppm_step":
            out: list[TrainRow] = []
            for parent in nodes:
                kids = [by_id[int(k)] for k in parent.get("children") or []]
                kids = [k for k in kids if k["action"] in prompts.actions and int(k["id"]) in q]
                pos = sorted((k for k in kids if q[int(k["id"])] > 0), key=lambda k: (-q[int(k["id"])], int(k["id"])))
                # hard negatives first: the wrong steps the search itself valued most
                neg = sorted((k for k in kids if q[int(k["id"])] == 0),
                             key=lambda k: (-float(k.get("mean") or 0.0), -int(k.get("visits") or 0), int(k["id"])))
                m = min(2, len(pos), len(neg))
                for k, label in [*[(k, "Yes") for k in pos[:m]], *[(k, "No") for k in neg[:m]]]:
                    out.append(row(prompts.ppm_messages(**fields, path=steps(path(int(k["id"])))), label,
                                   prompt=prompts.ppm.id, node=int(k["id"]), q=round(q[int(k["id"])], 4)))
            return out
        ends = [n for n in nodes if correct.get(int(n["id"])) and n.get("sql")]

        def rank(n: dict[str, Any]) -> tuple[float, int, int]:  # mean Q over the path's steps (root excluded)
            qs = [q.get(int(p["id"]), 0.0) for p in path(int(n["id"]))[1:]]
            return (-sum(qs) / len(qs), -int(n.get("visits") or 0), int(n["id"]))

        kept: dict[int, TrainRow] = {}
        for end in sorted(ends, key=rank)[: self.pairs_per_question]:
            p = path(int(end["id"]))
            for i, n in enumerate(p[1:], start=1):
                nid = int(n["id"])
                if nid in kept or (n.get("sql") is not None and nid != int(end["id"])):
                    continue  # shared prefix already kept; a failed SQL that a revise step repaired is context
                target = sql_completion(n["sql"]) if n.get("sql") is not None else str(n.get("text") or "").strip()
                msgs = prompts.messages(str(n["action"]), **fields, path=steps(p[:i]))
                template = {"sql": prompts.sql, "revise": prompts.revise}.get(str(n["action"]), prompts.step)
                kept[nid] = row(msgs, target, prompt=template.id, action=n["action"], node=nid,
                                q=round(q.get(nid, 0.0), 4), source="search")
        if not kept and fallback:
            return self._gold_step(ex, view, prompts, row)
        return list(kept.values())

    def _gold_step(self, ex: Example, view: SchemaView, prompts: SearchPrompts,
                   row: Callable[..., TrainRow]) -> list[TrainRow]:
        """`include_gold`: a question without a correct search path gets the gold SQL as the root's `sql` step."""
        return [row(_root_sql(prompts, ex, view), sql_completion(ex.gold_sql or ""), prompt=prompts.sql.id,
                    action="sql", source="gold")]

    def _select_rows(self, ex: Example, view: SchemaView, pool: list[dict[str, Any]], executor: Any,
                     row: Callable[..., TrainRow]) -> list[TrainRow]:
        gold = (ex.gold_sql or "").strip()
        right = [c["sql"] for c in pool if c.get("correct") and c["sql"].strip()] or [gold]
        wrong_pool = [c for c in _wrong_candidates(ex, pool, executor) if c[2] == "pool"]
        wrong_pert = [c for c in _wrong_candidates(ex, [], executor) if c[2] != "pool"]
        wrong: list[tuple[str, str, str]] = []
        while (wrong_pool or wrong_pert) and len(wrong) < self.pairs_per_question:  # alternate origins
            for src in (wrong_pool, wrong_pert):
                if src and len(wrong) < self.pairs_per_question:
                    wrong.append(src.pop(0))
        t = self._prompt(self.prompts["select_pair"])
        out = []
        for i, (bad, _, origin) in enumerate(wrong):
            good = right[i % len(right)]
            first = self._n_pairs % 2 == 0  # alternate over the whole set: correct-first in half the rows
            self._n_pairs += 1
            a, b = (good, bad) if first else (bad, good)
            # executed as the tournament executes candidates (`t2s.select.execute_candidates`), shown as written
            run = [prepare_sql(x, semantics=self.semantics, keep_distinct=self.keep_distinct) for x in (a, b)]
            res = executor.execute_many([(ex.db_path, x) for x in run]) if executor is not None else [None, None]
            out.append(row(pair_messages(t, schema=view.text, question=ex.question, evidence=ex.evidence,
                                         use_evidence=self.limits.use_evidence, dialect=self.dialect, sql_a=a,
                                         result_a=res[0], sql_b=b, result_b=res[1]),
                           "A" if first else "B", prompt=t.id, wrong_origin=origin))
        return out

    def _share_rows(self, kind: str, ex: Example, view: SchemaView, schemas: SchemaSource, rng: random.Random,
                    row: Callable[..., TrainRow]) -> list[TrainRow]:
        from t2s_plugins.corrector.share.trajectory import (
            format_trajectory,
            mask_answers_reply,
            mask_schema,
            perturb,
            sql_to_trajectory,
            trajectory_reply,
        )

        schema = schemas.schema(ex)
        try:
            traj = sql_to_trajectory(ex.gold_sql or "", schema)
        except Exception:  # noqa: BLE001 - the translator's Unsupported / parse errors: the question is skipped
            return []
        target = trajectory_reply(traj)
        t = self._prompt(self.prompts[kind])

        def ask(**fields: str) -> list[dict[str, str]]:
            return template_messages(t, schema=view.text, question=ex.question, evidence=ex.evidence,
                                     use_evidence=self.limits.use_evidence, dialect=self.dialect, **fields)

        if kind == "share_bam":
            return [row(ask(sql=ex.gold_sql or ""), target, prompt=t.id)]
        if kind == "share_sam":
            masked, answers = mask_schema(traj)
            if not answers:
                return []
            return [row(ask(masked=masked, n_masks=str(len(answers))), mask_answers_reply(answers), prompt=t.id)]
        kinds = list(self.share_kinds)
        rng.shuffle(kinds)
        for k in kinds:
            p = perturb(traj, k, rng, schema=schema)
            if p is not None:
                return [row(ask(trajectory=format_trajectory(p.trajectory)), target, prompt=t.id,
                            perturbation=p.kind, detail=p.detail)]
        return []


def _read_pools(predictions: str) -> dict[str, list[dict[str, Any]]]:
    """Candidate pools with verdicts from a run's predictions.jsonl (or run directory): qid -> [{sql, correct, ...}]."""
    path = Path(predictions)
    if path.is_dir():
        path = path / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"train.data.predictions: {path} is not a predictions.jsonl file or a run directory "
                                f"holding one (give the output directory of a `t2s run`)")
    pools: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        verdicts = rec.get("candidate_correct") or []
        cands = rec.get("candidates") or []
        pools[str(rec["qid"])] = [{"sql": c.get("sql", "") if isinstance(c, dict) else str(c),
                                   "correct": bool(v), "origin": c.get("origin") if isinstance(c, dict) else None,
                                   **_search_ref(c)}
                                  for c, v in zip(cands, verdicts)]
    return pools


def is_mcts(generator: Any) -> bool:
    """Whether a generator config is the MCTS generator's (the one that saves search trees)."""
    return str((generator or {}).get("_target_", "")).endswith("MCTSGenerator")


def search_generator(run_dir: Path) -> Any:
    """The generator config of a run directory made by the MCTS generator, or None for any other run."""
    cfg_file = Path(run_dir) / "config.yaml"
    gen = OmegaConf.load(cfg_file).get("generator") if cfg_file.is_file() else None
    return gen if is_mcts(gen) else None


def _root_sql(prompts: SearchPrompts, ex: Example, view: SchemaView) -> list[dict[str, str]]:
    """The search's SQL prompt at the root (no reasoning steps yet)."""
    return prompts.messages("sql", schema=view.text, question=ex.question, evidence=ex.evidence,
                            path=[SearchStep("root", "")])


def _search_ref(cand: Any) -> dict[str, Any]:
    """Where an MCTS candidate sits in its saved tree: {"node": id, "tree": path relative to the run} (or {})."""
    meta = cand.get("meta") if isinstance(cand, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("mcts"), dict) or meta["mcts"].get("node") is None:
        return {}
    return {"node": int(meta["mcts"]["node"]), "tree": meta.get("tree")}


def gold_values(nodes: list[dict[str, Any]], correct: dict[int, bool]) -> dict[int, float]:
    """Q-values of a search tree's nodes backed up from gold verdicts instead of the search's execution reward (what
    rStar's self-evolution does on training questions): Q(n) = the visit-weighted share of correct SQL nodes in
    n's subtree (n included). Nodes without a judged SQL node below them get no value."""
    by_id = {int(n["id"]): n for n in nodes}
    num: Counter[int] = Counter()
    den: Counter[int] = Counter()
    for nid, ok in correct.items():
        if nid not in by_id:
            continue
        node = by_id[nid]  # its own backups: a revised SQL's visits include its revision's
        own = int(node.get("visits") or 0) - sum(int(by_id[int(k)].get("visits") or 0) for k in node.get("children") or []
                                                  if int(k) in by_id)
        w = max(1, own)
        cur: int | None = nid
        while cur is not None:
            num[cur] += w * int(ok)
            den[cur] += w
            parent = by_id[cur].get("parent")
            cur = None if parent is None else int(parent)
    return {nid: num[nid] / den[nid] for nid in den}


def _wrong_candidates(ex: Example, pool: list[dict[str, Any]], executor: Any) -> list[tuple[str, str, str]]:
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
    return f"the query runs but returns a wrong result ({len(res.rows)} rows, first: {_result_text(res, 1)})"
