"""The GRPO recipe: TRL's `GRPOTrainer` on a PEFT adapter, rewards computed by t2s's own scorer.

GRPO is the algorithm of "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models" (arXiv
2402.03300); the execution reward (1 if the SQL's result matches the gold's, 0.1 if it runs but differs, 0 if it
fails) follows the GRPO generator of "Agentar-Scale-SQL: Advancing Text-to-SQL through Orchestrated Test-Time Scaling"
(arXiv 2509.24403); group size 4-8, KL 0.1, and an optional component-match partial reward from Spider exact-set
match. Prompts are the generator's exact prompts (`t2s.train.data`, row kind `sql`), so a trained adapter plugs into
`generator=zero_shot`. For the selection model (`reward.task=select_pair`) prompts are pairwise selection rows and the
reward is binary.

`GRPORecipe` runs in named steps (`_setup_model`, `_setup_data`, `_setup_rewards`, `_setup_trainer`, `train`);
`train_grpo` is its entry point (what `GRPOSettings.run` calls).

Rewards are plain callables `(prompts, completions, **columns) -> list[float]` (TRL's interface); each records, per
call, the within-group reward spread (groups are `group_size` consecutive completions of one prompt), written to
`rewards.jsonl` with TRL's logged means; `rewards.png` plots them. Model SQL runs through `SQLExecutor` (read-only,
time-limited) via `t2s.eval.execution.score_execution`.

Several processes: `accelerate launch --num_processes N [--cpu] -m t2s.train.app train=grpo ...` runs the recipe
in every process (TRL splits each step's prompts between them: `prompts_per_step` per process). Every process scores
its own completions; the reward log gathers the group statistics of all of them and only the main process
(`RANK` 0) writes the config, the rows, the reward log, the adapter, the curves and the summary, and starts the
wandb run (its id kept in `<out>/wandb_run_id`, so a resumed training logs to the same run).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from t2s.train.common import (
    NoTrainingRows,
    base_model_path,
    load_base,
    load_examples,
    make_executor,
    peak_rss_mb,
    save_config,
    schema_source,
    write_curves,
)
from t2s.train.grpo_config import GRPOSettings, RewardSettings

RewardFn = Callable[..., list[float]]


def _text(completion: Any) -> str:
    """A TRL completion (conversational: [{"role": "assistant", "content": ...}], or a string) as text."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


class GroupStats:
    """Within-group reward statistics of the last calls (groups = `group_size` consecutive completions)."""

    def __init__(self, group_size: int) -> None:
        self.group_size = group_size
        self.records: list[dict[str, float]] = []

    def add(self, name: str, rewards: list[float], statuses: list[str] | None = None) -> None:
        """Record one reward call; `statuses`: the execution status of each completion ("ok", "error", "empty")."""
        groups = [rewards[i:i + self.group_size] for i in range(0, len(rewards), self.group_size)]
        stds = [statistics.pstdev(g) for g in groups if len(g) > 1]
        self.records.append({"reward_fn": name, "mean": sum(rewards) / max(1, len(rewards)),
                             "within_group_std": sum(stds) / max(1, len(stds)),
                             "groups_with_variance": sum(s > 0 for s in stds) / max(1, len(stds)),
                             "statuses": dict(Counter(statuses or []))})


def execution_reward(settings: RewardSettings, executor: Any, stats: GroupStats | None = None) -> RewardFn:
    """1 (`execution`) when the parsed SQL's result matches the gold's (official Spider semantics), `executes_wrong`
    when it runs but differs, 0 when it fails, times out or is empty. Needs dataset columns `gold_sql`, `db_path`."""
    from t2s.eval.execution import score_execution
    from t2s.generation import parse_sql

    def reward(prompts: list[Any], completions: list[Any], gold_sql: list[str], db_path: list[str],
               **_: Any) -> list[float]:
        sqls = [parse_sql(_text(c)) for c in completions]
        verdicts = score_execution([(g, s, [d]) for g, s, d in zip(gold_sql, sqls, db_path)], executor=executor,
                                   timeout=executor.timeout, max_rows=executor.max_rows)
        out = [settings.execution if v.correct else (settings.executes_wrong if v.status == "ok" and s else 0.0)
               for v, s in zip(verdicts, sqls)]
        if stats is not None:
            stats.add("execution", out, [v.status if s else "empty" for v, s in zip(verdicts, sqls)])
        return out

    reward.__name__ = "execution"
    return reward


def component_reward(settings: RewardSettings, schemas: dict[str, Any]) -> RewardFn:
    """A partial reward: `component` x mean F1 over Spider's exact-set clause components (select, where,
    group, order, ...; components absent from both sides are left out). Needs columns `gold_sql`, `db_path`."""
    from t2s.eval.exact_match import exact_match
    from t2s.generation import parse_sql

    def reward(prompts: list[Any], completions: list[Any], gold_sql: list[str], db_path: list[str],
               **_: Any) -> list[float]:
        out = []
        for c, g, d in zip(completions, gold_sql, db_path):
            res = exact_match(parse_sql(_text(c)), g, schemas.get(d))
            parts = [p["f1"] for p in res.partial.values() if p.get("label_total", 0) or p.get("pred_total", 0)]
            out.append(settings.component * (sum(parts) / len(parts) if parts else 0.0))
        return out

    reward.__name__ = "component"
    return reward


def format_reward(settings: RewardSettings) -> RewardFn:
    """`format` when the completion has a ```sql block holding a statement (what the generator prompt asks)."""
    from t2s.generation import parse_sql

    def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        texts = [_text(c) for c in completions]
        return [settings.format if "```sql" in t and parse_sql(t) else 0.0 for t in texts]

    reward.__name__ = "format"
    return reward


def selection_reward(stats: GroupStats | None = None) -> RewardFn:
    """Binary reward of the selection model: 1 when the reply's first letter is the correct candidate (`answer`)."""

    def reward(prompts: list[Any], completions: list[Any], answer: list[str], **_: Any) -> list[float]:
        out = [1.0 if _text(c).strip()[:1].upper() == a else 0.0 for c, a in zip(completions, answer)]
        if stats is not None:
            stats.add("selection", out)
        return out

    reward.__name__ = "selection"
    return reward


def _log_records(path: Path) -> list[dict[str, Any]]:
    """The reward log's records; a line cut short by a kill mid-write is skipped."""
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


def _mean(values: Any) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(statistics.mean(vals), 4) if vals else None


def _gathered(record: dict[str, Any]) -> dict[str, Any]:
    """One process's within-group statistics of the last reward call combined with every other process's (their
    means weighted equally: each process scores the same number of groups); unchanged in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return record
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, record)
    parts = [p for p in parts if p]
    if not parts:
        return {}
    statuses: Counter[str] = Counter()
    for p in parts:
        statuses.update(p.get("statuses") or {})
    return {"within_group_std": _mean(p.get("within_group_std") for p in parts),
            "groups_with_variance": _mean(p.get("groups_with_variance") for p in parts), "statuses": dict(statuses)}


def _start_wandb(cfg: GRPOSettings, out_dir: Path, *, fresh: bool) -> None:
    """Start the wandb run that transformers' WandbCallback then logs to (it reuses a running `wandb.run`): the
    output directory's run id (`t2s.track.wandb_logger.init_run`), so a resumed training continues the same run."""
    import os

    import wandb

    from t2s.track.wandb_logger import init_run

    os.environ.setdefault("WANDB_SILENT", "true")
    init_run(wandb.init, out_dir, fresh=fresh, project=cfg.logger.project, entity=cfg.logger.entity,
             mode=cfg.logger.mode, dir=str(out_dir), name=out_dir.name, reinit="finish_previous")


def _latest_checkpoint(directory: Path) -> str | None:
    ckpts = sorted(directory.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


class GRPORecipe:
    """One GRPO training into `out_dir`: `setup()` (`_setup_model` -> `_setup_data` -> `_setup_rewards` ->
    `_setup_trainer`), then `train()`; `close()` releases the executor. `run()` does all three.

    Under `accelerate launch` every process runs the same recipe; only the main process (`RANK` 0) writes."""

    def __init__(self, cfg: GRPOSettings, root: DictConfig, out_dir: Path) -> None:
        """Args:
            cfg: the recipe's settings (`conf/train/grpo.yaml`).
            root: the whole training config (`llm`, `dataset`, `schema_format`, `db`, `paths`).
            out_dir: where everything goes; the latest `checkpoints/checkpoint-<step>` there is resumed from.
        """
        from t2s.train.launch import launch_rank

        self.cfg, self.root, self.out_dir = cfg, root, Path(out_dir)
        self.main_process = launch_rank() == 0
        self.stats = GroupStats(cfg.group_size)
        self.log_path = self.out_dir / "rewards.jsonl"
        self.executor: Any = None

    def run(self) -> dict[str, Any]:
        """Set up, train, close; return the summary (main process: also `summary.json`)."""
        try:
            self.setup()
            return self.train()
        finally:
            self.close()

    def setup(self) -> None:
        """Record the config (main process), then the model, the prompts, the rewards and the trainer."""
        if self.main_process:
            save_config(self.root, self.out_dir)
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        self._setup_model()
        self._setup_data()
        self._setup_rewards()
        self._setup_trainer()

    def _setup_model(self) -> None:
        """The tokenizer and the policy: the base with a fresh adapter (`cfg.peft`), or with `init_adapter` an SFT
        adapter's weights as the trained adapter's start."""
        cfg, root = self.cfg, self.root
        if cfg.init_adapter:
            from peft import PeftModel
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = base_model_path(root)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                                                   cfg.init_adapter, is_trainable=True)
        else:
            self.tokenizer, self.model = load_base(root, cfg.peft, "bf16-true" if cfg.bf16 else "32-true")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _setup_data(self) -> None:
        """The questions, schemas and executor of the shared configs, the rows (main process: saved under
        `data/`), and TRL's prompt table: the rows of the reward's kind (`reward.task`: `sql` or `select_pair`)
        with the columns the rewards read (`gold_sql`, `db_path`, `answer`).

        Raises:
            NoTrainingRows: the builder made no rows of that kind.
        """
        from datasets import Dataset

        cfg = self.cfg
        self.examples = load_examples(self.root)
        by_qid = {e.qid: e for e in self.examples}
        self.schemas = schema_source(self.root)
        self.executor = make_executor(self.root)
        self.built = cfg.data.build(self.examples, self.schemas, self.tokenizer,
                                    self.out_dir / "data" if self.main_process else None, executor=self.executor)
        self.kind = "select_pair" if cfg.reward.task == "select_pair" else "sql"
        rows = [r for r in self.built.rows if r.task == self.kind]
        if not rows:
            raise NoTrainingRows(f"train=grpo: the data builder made no `{self.kind}` rows (train.data.tasks must "
                                 f"include it)")
        self.table = Dataset.from_list([{"prompt": r.messages, "qid": r.qid, "gold_sql": by_qid[r.qid].gold_sql or "",
                                         "db_path": by_qid[r.qid].db_path, "answer": r.completion} for r in rows])

    def _setup_rewards(self) -> None:
        """The reward callables: execution + format (+ component when weighted) for SQL rows, the binary selection
        reward for pairwise rows; each records its within-group spread in `self.stats`."""
        cfg = self.cfg
        if self.kind == "sql":
            funcs: list[RewardFn] = [execution_reward(cfg.reward, self.executor, self.stats), format_reward(cfg.reward)]
            if cfg.reward.component > 0:
                funcs.append(component_reward(cfg.reward, {e.db_path: self.schemas.schema(e) for e in self.examples}))
        else:
            funcs = [selection_reward(self.stats)]
        self.reward_funcs = funcs

    def _setup_trainer(self) -> None:
        """TRL's `GRPOConfig` and `GRPOTrainer` with the reward log callback, the checkpoint to resume from, the
        wandb run (main process), and the reward log cut back to the resumed step."""
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        cfg, out_dir, stats, log_path = self.cfg, self.out_dir, self.stats, self.log_path

        class RewardLog(TrainerCallback):
            """TRL's logged means (already over all processes) + t2s's within-group spread over every process's
            groups, one JSON line per logged step, written by the main process only."""

            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                       **_: Any) -> None:
                if not logs or not any(k.startswith("reward") for k in logs):
                    return
                group = _gathered(stats.records[-1] if stats.records else {})  # every process logs each step
                if not state.is_world_process_zero:
                    return
                rec = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                       "within_group_std": group.get("within_group_std"),
                       "groups_with_variance": group.get("groups_with_variance"),
                       "exec_statuses": group.get("statuses")}
                with log_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")

        args = GRPOConfig(
            output_dir=str(out_dir / "checkpoints"), max_steps=cfg.max_steps, learning_rate=cfg.lr,
            lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps,
            per_device_train_batch_size=cfg.group_size * cfg.prompts_per_step,
            gradient_accumulation_steps=cfg.grad_accum, num_generations=cfg.group_size, beta=cfg.beta,
            temperature=cfg.temperature, top_p=cfg.top_p, max_completion_length=cfg.max_completion_tokens,
            logging_steps=1, save_strategy="steps", save_steps=cfg.save_every, save_only_model=False,
            report_to=["wandb"] if cfg.logger.wandb else [], use_cpu=cfg.accelerator == "cpu", bf16=cfg.bf16,
            seed=cfg.seed, use_vllm=cfg.use_vllm, dataloader_num_workers=0, disable_tqdm=not cfg.progress,
        )
        self.resume = _latest_checkpoint(out_dir / "checkpoints") if cfg.resume else None
        self.resumed_from = int(self.resume.rsplit("-", 1)[-1]) if self.resume else None
        if cfg.logger.wandb and self.main_process:
            _start_wandb(cfg, out_dir, fresh=self.resume is None)
        self.trainer = GRPOTrainer(model=self.model, reward_funcs=self.reward_funcs, args=args,
                                   train_dataset=self.table, processing_class=self.tokenizer, callbacks=[RewardLog()])
        if log_path.is_file() and self.main_process:  # steps logged after the checkpoint we resume from run again
            kept = [r for r in _log_records(log_path) if self.resumed_from is not None and r["step"] <= self.resumed_from]
            log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def train(self) -> dict[str, Any]:
        """Train (from the resumed checkpoint if any); on the main process save the adapter, the reward curves
        (`rewards.png`) and the summary. Other processes return `{"recipe", "rank", "steps"}`."""
        from t2s.train.launch import launch_rank

        trainer, out_dir = self.trainer, self.out_dir
        t0 = time.perf_counter()
        trainer.train(resume_from_checkpoint=self.resume)
        seconds = time.perf_counter() - t0
        if not trainer.is_world_process_zero():
            return {"recipe": "grpo", "rank": launch_rank(), "steps": int(trainer.state.global_step)}
        trainer.model.save_pretrained(str(out_dir / "adapter"))
        save_config(self.root, out_dir / "adapter")
        by_step = {r["step"]: r for r in _log_records(self.log_path)}  # one record per step (the last one logged)
        records = [by_step[k] for k in sorted(by_step)]
        curves = {k: [[r["step"], r[k]] for r in records if r.get(k) is not None]
                  for k in ("reward", "reward_std", "within_group_std", "kl")}
        write_curves(out_dir, curves, f"GRPO {out_dir.name}")
        if (out_dir / "curves.png").is_file():
            (out_dir / "curves.png").replace(out_dir / "rewards.png")
        summary = self._summary(records, seconds)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    def _summary(self, records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
        """What `summary.json` says: steps, resume, speed, memory, the reward curve and its within-group spread."""
        cfg, trainer = self.cfg, self.trainer
        steps_this_run = int(trainer.state.global_step) - (self.resumed_from or 0)
        return {
            "recipe": "grpo", "out_dir": str(self.out_dir), "adapter": str(self.out_dir / "adapter"),
            "steps": int(trainer.state.global_step), "steps_this_run": steps_this_run,
            "resumed_from": self.resumed_from,
            "seconds_per_step": round(seconds / steps_this_run, 2) if steps_this_run else None,
            "train_seconds": round(seconds, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
            "mean_reward": statistics.mean(r["reward"] for r in records if "reward" in r) if records else None,
            "mean_within_group_std": _mean(r.get("within_group_std") for r in records),
            "groups_with_variance": _mean(r.get("groups_with_variance") for r in records),
            "steps_with_reward_variance": sum(1 for r in records if (r.get("within_group_std") or 0) > 0),
            "mean_step_seconds": _mean(r.get("step_time") for r in records),
            "reward_curve": [[r["step"], r.get("reward")] for r in records],
            "processes": int(trainer.accelerator.num_processes),
            "prompts_per_step": cfg.prompts_per_step * int(trainer.accelerator.num_processes),
            "data": {**self.built.stats, "sha256": self.built.digest},
        }

    def close(self) -> None:
        """Close the executor."""
        if self.executor is not None:
            self.executor.close()
            self.executor = None


def train_grpo(cfg: GRPOSettings, root: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Build prompts, run TRL's GRPO for `max_steps` (resuming from the latest checkpoint), save the adapter and the
    reward curve; return and write `summary.json` (`GRPORecipe`)."""
    return GRPORecipe(cfg, root, out_dir).run()
