"""The training-data builder: deterministic rows (prompt messages + target text) from a dataset config, saved with a
hash.

Every row is `TrainRow(task, qid, db_id, messages, completion)` (`t2s.train.rows`): `messages` are chat messages
rendered later with the model's own chat template (exactly what `t2s.llm.hf.HFLLM.render` does at inference),
`completion` the text the model must produce. Which rows: `TrainData.tasks` names row kinds, each a `RowBuilder` built
from `conf/train/rows/<kind>.yaml` (`t2s.train.rows` says what each shared kind makes and how a method adds its own);
`TrainData` runs them question by question in `tasks` order, all on one seeded rng.

Over-length policy: a row whose prompt has more than `max_prompt_tokens` tokens is dropped (`over_length: drop`) or
its schema text is cut, whole lines from the end, until it fits (`truncate`); both counts are in the statistics.
`build` returns the rows, held-out validation questions (a seeded slice of `val_size` questions that no training row
uses), and statistics (prompt / completion token min, mean, p50, p95, max; kinds; dropped; truncated; skipped), and
writes `rows-<hash12>.jsonl` + `stats.json` where the hash is sha256 of the rows' canonical JSON: same dataset,
config and tokenizer -> same file name.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from t2s.config import CONF_DIR
from t2s.db.introspect import introspect
from t2s.db.types import DatabaseSchema, SchemaView
from t2s.eval.execution import prepare_sql
from t2s.generation import ContextLimits
from t2s.prompts import load_prompt
from t2s.stages import SchemaFormat
from t2s.train.rows import Messages, RowBuilder, RowContext, RowSettings, TrainRow, sql_completion
from t2s.types import Example

__all__ = ["TrainData", "TrainRow", "BuiltData", "SchemaSource", "sql_completion", "rows_digest", "save_rows",
           "load_rows", "render_prompt", "prompt_tokens", "length_stats", "row_kinds", "build_row_builder",
           "read_pools", "ROWS_DIR"]

#: the row-kind registry: one YAML per kind (`_target_` = its `RowBuilder` class, and its arguments)
ROWS_DIR = CONF_DIR / "train" / "rows"
OVER_LENGTH = ("drop", "truncate")


@dataclass
class BuiltData:
    """What `TrainData.build` returns: training rows, held-out validation questions, statistics, the rows file."""

    rows: list[TrainRow]
    val_examples: list[Example]
    stats: dict[str, Any]
    path: Path | None = None
    digest: str = ""


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
        """The introspected schema of the question's database."""
        if ex.db_path not in self._schemas:
            self._schemas[ex.db_path] = introspect(ex.db_path, ex.db_id, n_samples=self.sample_values,
                                                   n_rows=self.sample_rows, cache_dir=self.cache_dir / "schemas")
        return self._schemas[ex.db_path]

    def view(self, ex: Example) -> SchemaView:
        """The full-schema view, as `Env.full_view` gives the generator."""
        if ex.db_path not in self._texts:
            self._texts[ex.db_path] = self.fmt.format(self.schema(ex))
        return SchemaView(name="full", schema=self.schema(ex), text=self._texts[ex.db_path])


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """The prompt text the model sees: `messages` through the tokenizer's chat template with the generation prompt
    (identical to `HFLLM.render`)."""
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def prompt_tokens(tokenizer: Any, messages: Messages) -> int:
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


# ------------------------------------------------------------------------------------------------ row kinds
def row_kinds() -> list[str]:
    """Every row kind: the names of `conf/train/rows/*.yaml`."""
    return sorted(p.stem for p in ROWS_DIR.glob("*.yaml"))


def build_row_builder(kind: str, data: dict[str, Any] | None = None,
                      override: dict[str, Any] | None = None) -> RowBuilder:
    """The builder of row kind `kind`: `conf/train/rows/<kind>.yaml` merged with `override` (arguments, or a whole
    node with `_target_` for a kind without a YAML), its `${data.<setting>}` interpolations read from `data` (the
    `train.data` settings), instantiated, and named `kind`."""
    from hydra.utils import instantiate

    path = ROWS_DIR / f"{kind}.yaml"
    node = OmegaConf.load(path) if path.is_file() else OmegaConf.create({})
    if override:
        node = OmegaConf.merge(node, OmegaConf.create(dict(override)))
    where = f"conf/train/rows/{kind}.yaml" if path.is_file() else f"train.data.rows.{kind}"
    if "_target_" not in node:
        raise ValueError(f"train.data.tasks: unknown row kind {kind!r}; choose from {', '.join(row_kinds())} "
                         f"(a kind is a file conf/train/rows/<kind>.yaml)")
    root = OmegaConf.create({"data": {k: v for k, v in (data or {}).items() if v is not None}, "row": node})
    try:
        resolved = OmegaConf.to_container(root.row, resolve=True)
        builder = instantiate(resolved, _convert_="all")
    except Exception as e:  # noqa: BLE001 - say which file and kind; the cause names the key
        raise ValueError(f"row kind {kind!r} ({where}, _target_ {node.get('_target_')}): {e.__cause__ or e}") from e
    if not isinstance(builder, RowBuilder):
        raise ValueError(f"row kind {kind!r} ({where}): {node.get('_target_')} is a {type(builder).__name__}, not a "
                         f"t2s.train.rows.RowBuilder")
    builder.kind = kind
    return builder


def _prompt_kinds() -> list[str]:
    """The row kinds whose builder takes a `prompt` (the ones `train.data.prompts` may set)."""
    return [k for k in row_kinds() if "prompt" in (OmegaConf.load(ROWS_DIR / f"{k}.yaml") or {})]


def read_pools(predictions: str) -> dict[str, list[dict[str, Any]]]:
    """Candidate pools with verdicts from a run's predictions.jsonl (or run directory):
    qid -> [{"sql", "correct", "origin", "meta"}] (`meta`: the candidate's own, e.g. where a search put it)."""
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
        pools[str(rec["qid"])] = [{"sql": c.get("sql", "") if isinstance(c, dict) else str(c), "correct": bool(v),
                                   "origin": c.get("origin") if isinstance(c, dict) else None,
                                   "meta": c.get("meta") if isinstance(c, dict) else None}
                                  for c, v in zip(cands, verdicts)]
    return pools


# ------------------------------------------------------------------------------------------------ the builder
class TrainData:
    """A training-data builder (the `train/data` config group): which row kinds, from which prompt, how long.

    `tasks`: row kinds, each `conf/train/rows/<kind>.yaml` (`row_kinds()`). `prompt`: the SQL prompt template (the
    generator's, `zero_shot_v1` by default: keep them equal). `max_prompt_tokens` / `over_length` (drop | truncate):
    the over-length policy. `val_size`: questions held out for validation EX (seeded by `seed`, never in a training
    row). `predictions`: a run's `predictions.jsonl` (or its run directory) giving candidate pools with verdicts (and,
    for kinds that read it, the run's own files). `include_gold`: pool-based kinds fall back to the gold SQL for
    questions without a correct candidate. `pairs_per_question`: at most this many rows (or trajectories) per question
    for the pool-based kinds. `prompts`: the prompt per row kind (`{kind: template id}`; sets that builder's `prompt`,
    e.g. the inference prompt of the stage that loads the adapter). `rows`: other arguments per row kind
    (`{kind: {arg: value}}`, or a whole node with `_target_` for a kind without a YAML). `share_kinds`, `semantics`,
    `keep_distinct`: settings that row-kind YAMLs read as `${data.<name>}` (the LOM perturbation kinds; how
    candidates are executed for the results pairwise rows show); the names are those of the options before row kinds
    became plugins, kept so command lines and recorded configs still work.
    """

    def __init__(self, *, tasks: list[str] | None = None, prompt: str = "zero_shot_v1", dialect: str = "SQLite",
                 use_evidence: bool = True, max_prompt_tokens: int = 1024, over_length: str = "truncate",
                 val_size: int = 8, predictions: str | None = None, pairs_per_question: int = 2,
                 share_kinds: list[str] | None = None, include_gold: bool = False,
                 prompts: dict[str, str] | None = None, rows: dict[str, dict[str, Any]] | None = None,
                 semantics: str = "spider", keep_distinct: bool = False, seed: int = 0) -> None:
        tasks = list(tasks or ["sql"])
        if over_length not in OVER_LENGTH:
            raise ValueError(f"train.data.over_length={over_length!r}: use 'drop' or 'truncate'")
        if max_prompt_tokens < 16 or val_size < 0 or pairs_per_question < 1:
            raise ValueError("train.data: need max_prompt_tokens >= 16, val_size >= 0, pairs_per_question >= 1")
        known = set(row_kinds()) | set(rows or {})
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise ValueError(f"train.data.tasks: unknown row kind(s) {unknown}; choose from {', '.join(row_kinds())} "
                             f"(a kind is a file conf/train/rows/<kind>.yaml)")
        with_prompt = set(_prompt_kinds())
        unknown_p = sorted(set(prompts or {}) - with_prompt - set(rows or {}))
        if unknown_p:
            raise ValueError(f"train.data.prompts: no prompt to set for row kind(s) {unknown_p}; the kinds that take "
                             f"one: {', '.join(sorted(with_prompt))}")
        prepare_sql("SELECT 1", semantics=semantics)  # an unknown semantics fails here, naming the choices
        self._args: dict[str, Any] = {
            "tasks": tasks, "prompt": prompt, "dialect": dialect, "use_evidence": use_evidence,
            "max_prompt_tokens": max_prompt_tokens, "over_length": over_length, "val_size": val_size,
            "predictions": predictions, "pairs_per_question": pairs_per_question,
            "share_kinds": list(share_kinds) if share_kinds is not None else None, "include_gold": include_gold,
            "prompts": dict(prompts or {}), "rows": {k: dict(v) for k, v in (rows or {}).items()},
            "semantics": semantics, "keep_distinct": keep_distinct, "seed": seed}
        self.tasks = tasks
        self.template = load_prompt(prompt)
        self.max_prompt_tokens = max_prompt_tokens
        self.over_length = over_length
        self.val_size = val_size
        self.predictions = predictions
        self.prompts = dict(prompts or {})
        self.seed = seed
        self.settings = RowSettings(sql_template=self.template, dialect=dialect,
                                    limits=ContextLimits(use_evidence=use_evidence), predictions=predictions,
                                    pairs_per_question=pairs_per_question, include_gold=include_gold, seed=seed)
        settings = {k: v for k, v in self._args.items() if k not in ("rows",)}
        self.builders: dict[str, RowBuilder] = {}
        for kind in dict.fromkeys(tasks):  # a kind listed twice is one builder, run twice per question
            override = dict((rows or {}).get(kind) or {})
            if kind in self.prompts:
                override["prompt"] = self.prompts[kind]
            self.builders[kind] = build_row_builder(kind, settings, override)

    def params(self) -> dict[str, Any]:
        """Everything that decides the rows (recorded in stats.json and the training config): the constructor's
        arguments and each row kind's builder settings."""
        return {**{k: v for k, v in self._args.items() if k != "rows"},
                "rows": {k: b.params() for k, b in self.builders.items()}}

    def replace(self, **changes: Any) -> TrainData:
        """A builder with the same arguments but `changes` (e.g. other `tasks` and `predictions`)."""
        return TrainData(**{**self._args, **changes})

    @property
    def trains_sql(self) -> bool:
        """Whether some row kind teaches the model to write SQL (so validation EX means something)."""
        return any(b.trains_sql for b in self.builders.values())

    # ------------------------------------------------------------------------------------------ split
    def split(self, examples: list[Example]) -> tuple[list[Example], list[Example]]:
        """(training questions, validation questions): a seeded slice of `val_size` held out, both in file order."""
        labelled = [e for e in examples if e.gold_sql]
        n_val = min(self.val_size, max(0, len(labelled) - 1))
        held = set(random.Random(self.seed).sample(range(len(labelled)), n_val)) if n_val else set()
        val = [e for i, e in enumerate(labelled) if i in held]
        return [e for i, e in enumerate(labelled) if i not in held], val

    def sql_prompt(self, ex: Example, view: SchemaView) -> Messages:
        """The generator's exact messages for one question and schema view."""
        return self.settings.sql_prompt(ex, view)

    def val_prompt(self, ex: Example, view: SchemaView) -> Messages:
        """The SQL prompt that validation EX asks the model: the generator's (`sql_prompt`) when a kind that trains on
        it is listed, else the first SQL-training kind's own (`RowBuilder.validation_prompt`, e.g. a search's root
        SQL prompt for a policy trained only on search steps), else the generator's."""
        own: Messages | None = None
        for b in self.builders.values():
            if b.trains_sql:
                msgs = b.validation_prompt(ex, view, self.settings)
                if msgs is None:
                    return self.sql_prompt(ex, view)
                own = own or msgs
        return own or self.sql_prompt(ex, view)

    # ------------------------------------------------------------------------------------------ build
    def build(self, examples: list[Example], schemas: SchemaSource, tokenizer: Any, out_dir: Path | None = None,
              *, executor: Any = None) -> BuiltData:
        """Rows for every training question and kind, the validation questions and statistics (see the module
        docstring). `executor` (a `t2s.db.execute.SQLExecutor`) runs candidate SQL for kinds that show or check
        results; without one those kinds use only what the predictions file says."""
        train, val = self.split(examples)
        pools = read_pools(self.predictions) if self.predictions else {}
        rng = random.Random(self.seed)
        raw: list[TrainRow] = []
        skipped: Counter[str] = Counter()
        for b in self.builders.values():
            b.begin(self.settings)
        for ex in train:
            ctx = RowContext(data=self.settings, example=ex, view=schemas.view(ex), schemas=schemas,
                             pool=pools.get(ex.qid, []), executor=executor, rng=rng, tokenizer=tokenizer)
            for kind in self.tasks:
                made = self.builders[kind].rows(ctx)
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
