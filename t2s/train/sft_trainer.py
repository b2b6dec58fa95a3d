"""The SFT recipe: PEFT adapters trained with Lightning, validated by execution accuracy.

The adapters: "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv 2106.09685), "DoRA: Weight-Decomposed
Low-Rank Adaptation" (arXiv 2402.09353) and "QLoRA: Efficient Finetuning of Quantized LLMs" (arXiv 2305.14314, a
4-bit nf4 base). `SFTRecipe` runs in named steps (the recipe-class shape of torchtune's single-device recipes):

1. `_setup_model`: the base model named by the shared `llm` config (`tiny`, `tiny-128`, `embedded`, a local
   checkpoint) with a fresh adapter (`t2s.train.common.load_base`);
2. `_setup_data`: the rows from the `train.data` builder (`t2s.train.data`; saved as `data/rows-<hash>.jsonl` +
   stats), the held-out questions' rows and prompts, tokenized into data loaders;
3. `_setup_trainer`: the LightningModule (AdamW on the adapter's weights only, linear warmup then cosine decay,
   gradient accumulation), callbacks, loggers, strategy and the checkpoint to resume from;
4. `train`: fit, validating every `val_every` steps (loss on the held-out questions' rows, and EX of greedy
   generations for them: same prompt as the generator, `parse_sql`, `t2s.eval.execution.score_execution` with the
   official semantics), keeping the best adapter (by `monitor`) in `<out>/adapter/` (PEFT `save_pretrained`,
   loadable with `llms.<name>.adapter=<out>/adapter`), `last.ckpt` every `checkpoint_every` steps for resuming,
   curves in `curves.json` / `curves.png` (and wandb offline when enabled), and `summary.json`.

`train_sft(cfg, root, out_dir)` is the entry point (what `SFTConfig.run`, the DDP child ranks and method recipes
call). Checkpoints hold only the trainable (adapter) weights, the optimizer and scheduler, and the loop state, so a
0.5B model's checkpoint is a few MB. Resuming restores the step, optimizer, scheduler, early-stopping and
best-adapter state, and the data order continues where the checkpoint left it (`ResumableShuffle`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from t2s.train.common import (
    CURVES,
    NoTrainingRows,
    load_base,
    load_examples,
    make_executor,
    peak_rss_mb,
    save_config,
    schema_source,
    write_curves,
)
from t2s.train.data import BuiltData, SchemaSource, TrainData, TrainRow, render_prompt
from t2s.train.sft_config import SFTConfig

__all__ = ["SFTRecipe", "train_sft", "NoTrainingRows", "ResumableShuffle", "ValBatches", "tokenize_row", "collate",
           "generate_sql", "execution_accuracy", "execution_counts"]

log = logging.getLogger("t2s.train")

#: the launcher's environment variables, restored after a multi-process fit
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


# ------------------------------------------------------------------------------------------------ rows to tensors
def tokenize_row(tokenizer: Any, row: TrainRow, max_completion_tokens: int) -> dict[str, list[int]]:
    """input_ids / labels of one row: rendered prompt (labels -100) + completion + eos (learned)."""
    prompt = tokenizer(render_prompt(tokenizer, row.messages), add_special_tokens=False)["input_ids"]
    completion = tokenizer(row.completion, add_special_tokens=False)["input_ids"][:max_completion_tokens]
    completion = [*completion, tokenizer.eos_token_id]
    return {"input_ids": [*prompt, *completion], "labels": [-100] * len(prompt) + completion}


def collate(batch: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors (labels padded with -100)."""
    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, b in enumerate(batch):
        k = len(b["input_ids"])
        ids[i, :k] = torch.tensor(b["input_ids"])
        labels[i, :k] = torch.tensor(b["labels"])
        mask[i, :k] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@torch.no_grad()
def generate_sql(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], *, max_new_tokens: int,
                 batch_size: int) -> list[str]:
    """Greedy completions for chat prompts (left-padded batches), as the `hf` backend renders them."""
    out: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [render_prompt(tokenizer, p) for p in prompts[i:i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            out.extend(tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return out


def execution_accuracy(examples: list[Any], completions: list[str], executor: Any) -> tuple[float, list[bool]]:
    """EX of completions (SQL parsed with `parse_sql`) against the examples' gold, official Spider semantics."""
    correct, scorable, verdicts = execution_counts(examples, completions, executor)
    return (correct / scorable if scorable else 0.0), verdicts


def execution_counts(examples: list[Any], completions: list[str], executor: Any) -> tuple[int, int, list[bool]]:
    """(correct, scorable, correct per example): scorable leaves out questions whose gold SQL fails."""
    from t2s.eval.execution import score_execution
    from t2s.generation import parse_sql

    if not examples:
        return 0, 0, []
    items = [(ex.gold_sql, parse_sql(c), [ex.db_path]) for ex, c in zip(examples, completions)]
    verdicts = score_execution(items, executor=executor, timeout=executor.timeout, max_rows=executor.max_rows)
    scorable = [v for v in verdicts if v.status != "gold_error"]
    return sum(v.correct for v in scorable), len(scorable), [v.correct for v in verdicts]



# --------------------------------------------------------------------------------------------- Lightning parts
def _lightning() -> Any:
    import pytorch_lightning as pl

    return pl


class _Rows(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, list[int]]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


class ResumableShuffle(torch.utils.data.Sampler[int]):
    """A seeded shuffle of the training rows, a new order per epoch, that can start mid-epoch: a resumed run
    (`resume(batches_done)`) continues with the rows the uninterrupted run would have seen next instead of replaying
    the epoch from its start (what a plain shuffled DataLoader does; Lightning warns that it is "not resumable").
    Lightning calls `set_epoch` at the start of every epoch, the restored one included.

    With several processes (DDP) each rank takes every `world`-th row of the epoch's order (the order padded by its
    first rows to a multiple of `world`, as torch's DistributedSampler pads), so every rank has the same number of
    batches and `batches_done` counts one rank's batches. Rank and world size are read when iterating, after the
    process group exists."""

    def __init__(self, n: int, seed: int, batch_size: int) -> None:
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.epoch = 0
        self._resume_batches: int | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, batches_done: int) -> None:
        """Start at the epoch and row that follow `batches_done` batches (of one rank) of an uninterrupted run."""
        self._resume_batches = batches_done
        self.epoch = divmod(batches_done, self._per_epoch(self._world()[1]))[0]

    @staticmethod
    def _world() -> tuple[int, int]:
        from t2s.train.launch import world

        return world()

    def _per_rank(self, world: int) -> int:
        return -(-self.n // world)

    def _per_epoch(self, world: int) -> int:
        return max(1, -(-self._per_rank(world) // self.batch_size))

    def order(self, epoch: int) -> list[int]:
        """Epoch `epoch`'s row order (all ranks): a permutation seeded by (seed, epoch) alone."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Any:
        rank, size = self._world()
        skip = 0
        if self._resume_batches is not None:
            skip = divmod(self._resume_batches, self._per_epoch(size))[1] * self.batch_size
            self._resume_batches = None
        return iter(self.shard(self.epoch, rank, size)[skip:])

    def shard(self, epoch: int, rank: int, world: int) -> list[int]:
        """Rank `rank`'s rows of epoch `epoch` among `world` ranks (every rank gets `ceil(n / world)` rows)."""
        rows = self.order(epoch)
        rows += rows[:(-len(rows)) % world]
        return rows[rank::world]

    def __len__(self) -> int:
        return self._per_rank(self._world()[1])


class ValBatches(torch.utils.data.Dataset):
    """The validation rows as batches, this rank's share: batch `rank`, `rank + world`, ...; ranks with fewer
    batches get copies of batch 0 with `weight` 0, so every rank runs as many forward passes (DDP synchronises on
    each) and the weighted mean over all ranks is the single-process validation loss."""

    def __init__(self, items: list[dict[str, list[int]]], batch_size: int, pad_id: int) -> None:
        self.batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        self.pad_id = pad_id

    def __len__(self) -> int:
        return -(-len(self.batches) // ResumableShuffle._world()[1])

    def batch_index(self, i: int, rank: int, world: int) -> int | None:
        """Which batch is this rank's `i`-th (None: a weight-0 copy that only keeps the ranks in step)."""
        j = rank + i * world
        return j if j < len(self.batches) else None

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = self.batch_index(i, *ResumableShuffle._world())
        batch = collate(self.batches[0 if j is None else j], self.pad_id)
        batch["weight"] = torch.tensor(0.0 if j is None else 1.0)
        return batch


def all_sum(values: list[float]) -> list[float]:
    """`values` summed over every rank of the process group (unchanged without one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def make_module(cfg: SFTConfig, model: Any, tokenizer: Any, val_examples: list[Any], val_prompts: list[Any],
                executor: Any, want_ex: bool) -> Any:
    """The LightningModule: causal-LM loss on completion tokens; validation loss + EX; adapter-only checkpoints."""
    pl = _lightning()

    class SFTModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.strict_loading = False  # checkpoints hold the adapter's weights only
            self._val_losses: list[tuple[float, float]] = []
            self.last_val: dict[str, float] = {}
            self.micro_losses: list[float] = []  # the unscaled losses of the current optimizer step's micro-batches
            self.val_questions = 0  # questions scored by the last validation, over all ranks

        def on_train_start(self) -> None:
            self.model.train()  # from_pretrained leaves the model in eval mode (no adapter dropout)

        def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
            loss = self.model(**batch).loss
            self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
            self.micro_losses.append(float(loss.detach()))
            return loss

        def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
            weight = float(batch.pop("weight"))
            self._val_losses.append((float(self.model(**batch).loss) * weight, weight))

        def on_validation_epoch_end(self) -> None:
            # every rank holds a share of the validation batches and questions (`ValBatches`, every world-th
            # prompt); sums are reduced over the ranks, so each metric is computed once, on all rows, and every
            # rank logs the same value (EarlyStopping and ModelCheckpoint agree)
            from t2s.train.launch import world

            loss_sum, weight = sum(x for x, _ in self._val_losses), sum(w for _, w in self._val_losses)
            self._val_losses.clear()
            correct = scorable = 0
            if want_ex:
                rank, size = world()
                mine = list(range(rank, len(val_prompts), size))
                completions = generate_sql(self.model, tokenizer, [val_prompts[i] for i in mine],
                                           max_new_tokens=cfg.val_max_new_tokens, batch_size=cfg.val_batch_size)
                correct, scorable, _ = execution_counts([val_examples[i] for i in mine], completions, executor)
            loss_sum, weight, correct, scorable = all_sum([loss_sum, weight, correct, scorable])
            metrics = {"val_loss": loss_sum / max(1.0, weight)}
            if want_ex:
                metrics["val_ex"] = correct / scorable if scorable else 0.0
            for k, v in metrics.items():
                self.log(k, v, prog_bar=True, sync_dist=True)  # the same on every rank: their mean is the value
            self.last_val = metrics
            self.val_questions = int(scorable)

        def configure_optimizers(self) -> Any:
            from transformers import get_cosine_schedule_with_warmup

            params = [p for p in self.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.max_steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            trainable = {n for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    return SFTModule()


def make_callbacks(cfg: SFTConfig, out_dir: Path, monitor_mode: str) -> list[Any]:
    """Checkpoints (periodic last + best by monitor), early stopping, best adapter, curves, the progress bar.

    Every rank runs every callback (so their states agree across a resume); only global rank 0 writes files
    (Lightning's ModelCheckpoint saves on rank 0 by itself)."""
    pl = _lightning()
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    class BestAdapter(pl.Callback):
        """Saves the PEFT adapter to `<out>/adapter` whenever the monitored metric improves (stateful for resume)."""

        def __init__(self) -> None:
            self.best: float | None = None
            self.best_step = -1

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            if trainer.sanity_checking:
                return
            value = module.last_val.get(cfg.monitor)
            if value is None:
                return
            better = self.best is None or (value > self.best if monitor_mode == "max" else value < self.best)
            if better:
                self.best, self.best_step = float(value), int(trainer.global_step)
                if trainer.is_global_zero:
                    module.model.save_pretrained(str(out_dir / "adapter"))
                    (out_dir / "adapter" / "t2s_best.json").write_text(json.dumps(
                        {"metric": cfg.monitor, "value": self.best, "step": self.best_step,
                         "val_questions": module.val_questions}))

        def state_dict(self) -> dict[str, Any]:
            return {"best": self.best, "best_step": self.best_step}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.best, self.best_step = state["best"], state["best_step"]

    class Curves(pl.Callback):
        """Loss per optimizer step (the mean over every rank's micro-batches) and validation metrics, to
        curves.json / curves.png (kept across resumes)."""

        def __init__(self) -> None:
            old = json.loads((out_dir / CURVES).read_text()) if (out_dir / CURVES).is_file() else {}
            self.curves: dict[str, list[list[float]]] = {"train_loss": [], "val_loss": [], "val_ex": [], **old}
            self.t0 = time.perf_counter()

        def on_train_start(self, trainer: Any, module: Any) -> None:
            step = trainer.global_step  # drop points a killed run logged after its last checkpoint
            self.curves = {k: [p for p in v if p[0] <= step] for k, v in self.curves.items()}

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, idx: int) -> None:
            # one point per optimizer step: the mean loss of its micro-batches (Lightning's `outputs` holds only the
            # last one, divided by grad_accum); curves.json is rewritten every step so a kill loses no point
            if (idx + 1) % cfg.grad_accum == 0 and module.micro_losses:
                total, count = all_sum([sum(module.micro_losses), len(module.micro_losses)])
                module.micro_losses.clear()
                self.curves["train_loss"].append([trainer.global_step, total / count])
                if trainer.is_global_zero:
                    (out_dir / CURVES).write_text(json.dumps(self.curves))

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            if trainer.sanity_checking:
                return
            for k, v in module.last_val.items():
                self.curves.setdefault(k, []).append([trainer.global_step, float(v)])
            if trainer.is_global_zero:
                write_curves(out_dir, self.curves, out_dir.name)

        def on_train_end(self, trainer: Any, module: Any) -> None:
            if trainer.is_global_zero:
                write_curves(out_dir, self.curves, out_dir.name)

    class StepProgress(pl.Callback):
        """A tqdm bar over optimizer steps (rank 0, stderr), like `t2s run`'s bar over questions: it starts at the
        resumed step and shows the last train loss and validation metrics."""

        def __init__(self) -> None:
            self.bar: Any = None
            self.post: dict[str, str] = {}

        def on_train_start(self, trainer: Any, module: Any) -> None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=cfg.max_steps, initial=trainer.global_step, desc="train", unit="step",
                            disable=not trainer.is_global_zero, dynamic_ncols=True)

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, idx: int) -> None:
            if self.bar is None or trainer.global_step <= self.bar.n:
                return
            self.bar.update(trainer.global_step - self.bar.n)
            loss = trainer.callback_metrics.get("train_loss")
            if loss is not None:
                self.post["loss"] = f"{float(loss):.3f}"
            self.bar.set_postfix(self.post, refresh=False)

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            if self.bar is not None and not trainer.sanity_checking:
                self.post.update({k: f"{v:.3f}" for k, v in module.last_val.items()})
                self.bar.set_postfix(self.post)

        def on_train_end(self, trainer: Any, module: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    ckpt_dir = out_dir / "checkpoints"
    callbacks: list[Any] = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}", save_last=True, save_top_k=0,
                        every_n_train_steps=cfg.checkpoint_every, auto_insert_metric_name=False),
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=cfg.monitor, mode=monitor_mode, save_top_k=1,
                        auto_insert_metric_name=False),
        BestAdapter(), Curves(),
    ]
    if cfg.progress:
        callbacks.append(StepProgress())
    if cfg.patience > 0:
        callbacks.append(EarlyStopping(monitor=cfg.monitor, mode=monitor_mode, patience=cfg.patience))
    return callbacks


def atomic_checkpoint_io() -> Any:
    """Lightning's torch checkpoint writer, writing `<name>.tmp` then renaming it: a `kill -9` mid-save leaves the
    previous `last.ckpt` whole instead of a truncated file that the re-run could not load."""
    import os

    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """`TorchCheckpointIO` through a temporary file and `os.replace`."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            tmp = f"{path}.tmp"
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)

    return AtomicCheckpointIO()


def make_loggers(cfg: SFTConfig, out_dir: Path, fresh: bool) -> list[Any]:
    """Lightning's CSV logger always; wandb (offline by default) when `train.logger.wandb`, logging to the output
    directory's run id (`t2s.track.wandb_logger.init_run`: kept across resumes, a new one when `fresh` or when the
    run was deleted in the UI). Lightning's loggers write from rank 0 only; only rank 0 starts the wandb run."""
    from pytorch_lightning.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(str(out_dir), name="csv", version=0)]
    if cfg.logger.wandb:
        import os

        from pytorch_lightning.loggers import WandbLogger

        from t2s.train.launch import launch_rank

        os.environ.setdefault("WANDB_SILENT", "true")
        if launch_rank() == 0:
            import wandb

            from t2s.track.wandb_logger import init_run

            run = init_run(wandb.init, out_dir, fresh=fresh, project=cfg.logger.project, entity=cfg.logger.entity,
                           dir=str(out_dir), name=out_dir.name, mode=cfg.logger.mode, reinit="finish_previous")
            loggers.append(WandbLogger(experiment=run, save_dir=str(out_dir)))
    return loggers


# ------------------------------------------------------------------------------------------------ the recipe
class SFTRecipe:
    """One SFT training into `out_dir`: `setup()` (`_setup_model` -> `_setup_data` -> `_setup_trainer`), then
    `train()`; `close()` releases the executor and the process group. `run()` does all three.

    With `strategy=ddp` and `devices` > 1 this process is rank 0: it starts the other ranks when training starts
    (`t2s.train.launch`), and they run the same recipe. Every rank loads the model and builds the rows (the same,
    by seed); only rank 0 writes anything (config, rows, adapter, curves, checkpoints, summary)."""

    def __init__(self, cfg: SFTConfig, root: DictConfig, out_dir: Path) -> None:
        """Args:
            cfg: the recipe's settings (`conf/train/sft.yaml` and the recipes that reuse it).
            root: the whole training config (`llm`, `dataset`, `schema_format`, `db`, `paths`).
            out_dir: where everything goes; an existing `checkpoints/last.ckpt` there is resumed from.
        """
        from t2s.train.launch import launch_rank

        self.cfg, self.root, self.out_dir = cfg, root, Path(out_dir)
        self.rank = launch_rank()
        self.data: TrainData = cfg.data
        self.executor: Any = None
        self._launched: dict[str, str | None] | None = None

    def run(self) -> dict[str, Any]:
        """Set up, train, close; return the summary (rank 0: also `summary.json`)."""
        try:
            self.setup()
            return self.train()
        finally:
            self.close()

    def setup(self) -> None:
        """Record the config (rank 0), seed everything, then the model, the data and the trainer, in that order
        (the adapter's initial weights are drawn before the rows are built)."""
        pl = _lightning()
        if self.rank == 0:
            save_config(self.root, self.out_dir)
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        pl.seed_everything(self.cfg.seed, workers=True, verbose=False)
        self._setup_model()
        self._setup_data()
        self._setup_trainer()

    def _setup_model(self) -> None:
        """The tokenizer and the base model with a fresh adapter (`cfg.peft`, `cfg.precision`); with
        `gradient_checkpointing`, activations are recomputed in the backward pass."""
        self.tokenizer, self.model = load_base(self.root, self.cfg.peft, self.cfg.precision)
        if self.cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.enable_input_require_grads()

    def _setup_data(self) -> None:
        """The questions, schemas and executor of the shared configs; the training rows (rank 0 saves them under
        `data/`), the held-out questions' rows (validation loss) and SQL prompts (validation EX); the data loaders.

        Raises:
            NoTrainingRows: the builder made no training rows.
            ValueError: `monitor=val_ex` without a row kind that trains SQL, or without held-out questions.
        """
        cfg, data, tokenizer = self.cfg, self.data, self.tokenizer
        self.examples = load_examples(self.root)
        self.schemas = schema_source(self.root)
        self.executor = make_executor(self.root)
        self._launched = {k: os.environ.get(k) for k in LAUNCH_ENV}
        t0 = time.perf_counter()
        self.built: BuiltData = data.build(self.examples, self.schemas, tokenizer,
                                           self.out_dir / "data" if self.rank == 0 else None, executor=self.executor)
        val_rows = _val_rows(data, self.built, self.schemas, tokenizer, self.executor)
        self.data_seconds = time.perf_counter() - t0
        if not self.built.rows:
            raise NoTrainingRows(f"train.data built no training rows from dataset {self.root.dataset.get('name')!r} "
                                 f"(stats: {self.built.stats}); use more questions or other row kinds")
        self.want_ex = data.trains_sql and bool(self.built.val_examples)
        if cfg.monitor == "val_ex" and not self.want_ex:
            raise ValueError(f"train.monitor=val_ex needs a row kind that trains the model to write SQL (e.g. `sql`, "
                             f"`self_sql`; train.data.tasks={data.tasks}) and val_size > 0 (or set "
                             f"train.monitor=val_loss)")
        self.val_prompts = [data.val_prompt(ex, self.schemas.view(ex)) for ex in self.built.val_examples]
        pad = tokenizer.pad_token_id
        train_items = [tokenize_row(tokenizer, r, cfg.max_completion_tokens) for r in self.built.rows]
        val_items = [tokenize_row(tokenizer, r, cfg.max_completion_tokens) for r in val_rows] or train_items[:1]
        self.sampler = ResumableShuffle(len(train_items), cfg.seed, cfg.batch_size)
        self.train_dl = torch.utils.data.DataLoader(_Rows(train_items), batch_size=cfg.batch_size,
                                                    sampler=self.sampler, collate_fn=lambda b: collate(b, pad))
        self.val_dl = torch.utils.data.DataLoader(ValBatches(val_items, cfg.batch_size, pad), batch_size=None)

    def _setup_trainer(self) -> None:
        """The LightningModule, the strategy (DDP through `t2s.train.launch`: rank 0 writes the job its children
        rebuild), Lightning's Trainer with the callbacks and loggers, and the step to resume from (the data order
        continues where that checkpoint left it)."""
        from t2s.train.launch import JOB_FILE, ddp_strategy, write_job

        pl = _lightning()
        cfg, out_dir = self.cfg, self.out_dir
        self.module = make_module(cfg, self.model, self.tokenizer, self.built.val_examples, self.val_prompts,
                                  self.executor, self.want_ex)
        mode = "max" if cfg.monitor == "val_ex" else "min"
        self.last = out_dir / "checkpoints" / "last.ckpt"
        resuming = cfg.resume and self.last.is_file()
        strategy: Any = cfg.strategy
        if cfg.strategy == "ddp" or cfg.devices * cfg.num_nodes > 1:  # auto with several devices is DDP too
            job = out_dir / JOB_FILE
            if self.rank == 0:
                write_job(job, cfg, self.root, out_dir)
            strategy = ddp_strategy(job, cfg.accelerator)
        self.trainer = pl.Trainer(
            max_steps=cfg.max_steps, accumulate_grad_batches=cfg.grad_accum, precision=cfg.precision,
            strategy=strategy, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
            val_check_interval=cfg.val_every * cfg.grad_accum, check_val_every_n_epoch=None,
            num_sanity_val_steps=0, callbacks=make_callbacks(cfg, out_dir, mode),
            logger=make_loggers(cfg, out_dir, fresh=not resuming), plugins=[atomic_checkpoint_io()],
            enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
            default_root_dir=str(out_dir), deterministic=False, use_distributed_sampler=False)
        self.resumed_from: int | None = None
        if resuming:
            self.resumed_from = int(torch.load(self.last, map_location="cpu", weights_only=False)["global_step"])
            if self.rank == 0:
                log.info("resuming from %s (step %d)", self.last, self.resumed_from)
            self.sampler.resume(self.resumed_from * cfg.grad_accum)  # continue the data order where it left off

    def train(self) -> dict[str, Any]:
        """Fit (from the resumed checkpoint if any); on rank 0 keep the final adapter when no validation saved a
        best one, and write the summary. Other ranks return `{"recipe", "rank", "steps"}`."""
        trainer, module = self.trainer, self.module
        t1 = time.perf_counter()
        with warnings.catch_warnings():  # Lightning warns that a plain DataLoader restarts the epoch; ours does not
            warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
            trainer.fit(module, self.train_dl, self.val_dl,
                        ckpt_path=str(self.last) if self.resumed_from is not None else None)
        train_seconds = time.perf_counter() - t1
        if not trainer.is_global_zero:
            return {"recipe": "sft", "rank": int(trainer.global_rank), "steps": int(trainer.global_step)}
        if not (self.out_dir / "adapter").is_dir():  # no validation happened: keep the final adapter
            module.model.save_pretrained(str(self.out_dir / "adapter"))
        save_config(self.root, self.out_dir / "adapter")
        summary = self._summary(train_seconds)
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    def _summary(self, train_seconds: float) -> dict[str, Any]:
        """What `summary.json` says: steps, resume, best and last validation, data statistics, speed, memory."""
        cfg, trainer, module, out_dir = self.cfg, self.trainer, self.module, self.out_dir
        world_size = int(trainer.world_size)
        steps_done = int(trainer.global_step) - (self.resumed_from or 0)
        best_file = out_dir / "adapter" / "t2s_best.json"
        rows_per_step = cfg.batch_size * cfg.grad_accum * world_size
        return {
            "recipe": "sft", "out_dir": str(out_dir), "adapter": str(out_dir / "adapter"),
            "steps": int(trainer.global_step), "steps_this_run": steps_done, "resumed_from": self.resumed_from,
            "stopped_early": bool(trainer.should_stop and trainer.global_step < cfg.max_steps),
            "best": json.loads(best_file.read_text()) if best_file.is_file() else None,
            "last_val": module.last_val, "val_questions": module.val_questions,
            "strategy": cfg.strategy, "world_size": world_size, "rows_per_step": rows_per_step,
            "data": {**self.built.stats, "sha256": self.built.digest},
            "examples_per_second": round(steps_done * rows_per_step / train_seconds, 3)
            if train_seconds > 0 else None,
            "seconds_per_step": round(train_seconds / steps_done, 3) if steps_done else None,
            "data_seconds": round(self.data_seconds, 2), "train_seconds": round(train_seconds, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "trainable_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "gradient_checkpointing": bool(getattr(self.model, "is_gradient_checkpointing", False)),
        }

    def close(self) -> None:
        """Close the executor and leave the process group (restoring the launcher's environment variables)."""
        if self.executor is not None:
            self.executor.close()
            self.executor = None
        if self._launched is not None:
            _end_process_group(self._launched)
            self._launched = None


def train_sft(cfg: SFTConfig, root: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Build the data, train the adapter (resuming from `<out>/checkpoints/last.ckpt` if present and `resume`),
    keep the best adapter; return and write `summary.json` (`SFTRecipe`)."""
    return SFTRecipe(cfg, root, out_dir).run()


def _end_process_group(before: dict[str, str | None]) -> None:
    """After a multi-process fit: leave the process group and restore the launcher's environment variables, so a
    later training in this process (a recipe's next SFT, a notebook) starts its own ranks again."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _val_rows(builder: TrainData, built: BuiltData, schemas: SchemaSource, tokenizer: Any,
              executor: Any) -> list[TrainRow]:
    """Rows of the held-out questions (same kinds), for the validation loss."""
    import copy

    if not built.val_examples:
        return []
    b = copy.copy(builder)
    b.val_size = 0
    return b.build(built.val_examples, schemas, tokenizer, None, executor=executor).rows
