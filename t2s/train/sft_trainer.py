"""The SFT recipe: PEFT adapters (LoRA / DoRA / QLoRA) trained with Lightning, validated by execution accuracy.

Seed 003 phase 3: Lightning's `ModelCheckpoint` and `EarlyStopping` on the validation-EX metric (phase 3.6), QLoRA
(4-bit nf4 base), diagnostics as curves. Seed 001: LoRA / DoRA SFT of a small coder model. What `train_sft` does:

1. loads the base model named by the shared `llm` config (`tiny`, `tiny-128`, `embedded`, a local checkpoint);
2. builds the rows with the `train.data` builder (`t2s.train.data`; saved as `data/rows-<hash>.jsonl` + stats);
3. trains the adapter (AdamW on the adapter's weights only, linear warmup then cosine decay, gradient
   accumulation, Lightning precision / strategy from config);
4. validates every `val_every` steps: loss on the held-out questions' rows, and EX of greedy generations for them
   (same prompt as the generator, `parse_sql`, `t2s.eval.execution.score_execution` with the official semantics);
5. keeps the best adapter (by `monitor`) in `<out>/adapter/` (PEFT `save_pretrained`, loadable with
   `llms.<name>.adapter=<out>/adapter`), `last.ckpt` every `checkpoint_every` steps for resuming, curves in
   `curves.json` / `curves.png` (and wandb offline when enabled), `summary.json`.

Checkpoints hold only the trainable (adapter) weights, the optimizer and scheduler, and the loop state, so a 0.5B
model's checkpoint is a few MB. Resuming restores the step, optimizer, scheduler, early-stopping and best-adapter
state; the data order after a resume is that of a fresh epoch (Lightning's sampler state), not the exact remainder.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from t2s.train.data import BuiltData, SchemaSource, TrainData, TrainRow, render_prompt
from t2s.train.sft_config import PeftSettings, SFTConfig

log = logging.getLogger("t2s.train")

CURVES = "curves.json"


# ------------------------------------------------------------------------------------------------ shared helpers
def base_model_path(root: DictConfig) -> str:
    """The checkpoint directory (or hub id) of the shared `llm` config's model, building named models if needed."""
    from t2s.llm.models import is_named_model, resolve_model

    model = str(root.llm.model)
    return str(resolve_model(model, root.paths.cache_dir)) if is_named_model(model) else model


def load_base(root: DictConfig, peft: PeftSettings, precision: str) -> tuple[Any, Any]:
    """(tokenizer, model with a fresh PEFT adapter). QLoRA loads the base in 4-bit nf4 (bitsandbytes)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = base_model_path(root)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if precision.startswith("bf16-true") else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if peft.method == "qlora":
        try:
            from transformers import BitsAndBytesConfig
        except ImportError as e:  # pragma: no cover - transformers always has it
            raise ImportError("train.peft.method=qlora needs bitsandbytes: pip install bitsandbytes") from e
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if peft.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout,
                        target_modules=list(peft.target_modules), use_dora=peft.method == "dora",
                        task_type="CAUSAL_LM")
    return tokenizer, get_peft_model(model, config)


def load_examples(root: DictConfig) -> list[Any]:
    """The questions of the shared `dataset` config (same loader and selection as `t2s run`)."""
    from hydra.utils import instantiate

    return list(instantiate(root.dataset, _convert_="all").load().examples)


def schema_source(root: DictConfig) -> SchemaSource:
    """Schemas in the run's `schema_format` (the generator's), cached under `paths.cache_dir/schemas`."""
    from hydra.utils import instantiate

    db = root.get("db") or {}
    return SchemaSource(instantiate(root.schema_format, _convert_="all"), Path(root.paths.cache_dir),
                        sample_values=int(db.get("sample_values", 3)), sample_rows=int(db.get("sample_rows", 3)))


def make_executor(root: DictConfig) -> Any:
    """A read-only, time-limited executor for model SQL and candidate results."""
    from t2s.db.execute import SQLExecutor

    db = root.get("db") or {}
    return SQLExecutor(timeout=float(db.get("timeout", 10.0)), max_rows=int(db.get("max_rows", 1000)), workers=1,
                       decode_errors="ignore")


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
    from t2s.eval.execution import score_execution
    from t2s.generation import parse_sql

    if not examples:
        return 0.0, []
    items = [(ex.gold_sql, parse_sql(c), [ex.db_path]) for ex, c in zip(examples, completions)]
    verdicts = score_execution(items, executor=executor, timeout=executor.timeout, max_rows=executor.max_rows)
    scorable = [v for v in verdicts if v.status != "gold_error"]
    return (sum(v.correct for v in scorable) / len(scorable) if scorable else 0.0), [v.correct for v in verdicts]


def write_curves(out_dir: Path, curves: dict[str, list[list[float]]], title: str) -> None:
    """`curves.json` and `curves.png` (one panel per metric, x = optimizer step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out_dir / CURVES).write_text(json.dumps(curves))
    names = [k for k, v in curves.items() if v]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        xs, ys = zip(*curves[name])
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=80)
    plt.close(fig)


def save_config(root: DictConfig, out_dir: Path) -> None:
    """The resolved training config as `train_config.yaml` (secrets are not part of a training config)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_config.yaml").write_text(OmegaConf.to_yaml(root, resolve=True))


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB, from getrusage)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    Lightning calls `set_epoch` at the start of every epoch, the restored one included."""

    def __init__(self, n: int, seed: int, batch_size: int) -> None:
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, batches_done: int) -> None:
        """Start at the epoch and row that follow `batches_done` batches of an uninterrupted run."""
        per_epoch = max(1, -(-self.n // self.batch_size))
        self.epoch, within = divmod(batches_done, per_epoch)
        self._skip = within * self.batch_size

    def order(self, epoch: int) -> list[int]:
        """Epoch `epoch`'s row order: a permutation seeded by (seed, epoch) alone."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Any:
        skip, self._skip = self._skip, 0
        return iter(self.order(self.epoch)[skip:])

    def __len__(self) -> int:
        return self.n


def make_module(cfg: SFTConfig, model: Any, tokenizer: Any, val_examples: list[Any], val_prompts: list[Any],
                executor: Any, want_ex: bool) -> Any:
    """The LightningModule: causal-LM loss on completion tokens; validation loss + EX; adapter-only checkpoints."""
    pl = _lightning()

    class SFTModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.strict_loading = False  # checkpoints hold the adapter's weights only
            self._val_losses: list[float] = []
            self.last_val: dict[str, float] = {}
            self.micro_losses: list[float] = []  # the unscaled losses of the current optimizer step's micro-batches

        def on_train_start(self) -> None:
            self.model.train()  # from_pretrained leaves the model in eval mode (no adapter dropout)

        def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
            loss = self.model(**batch).loss
            self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
            self.micro_losses.append(float(loss.detach()))
            return loss

        def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
            self._val_losses.append(float(self.model(**batch).loss))

        def on_validation_epoch_end(self) -> None:
            metrics = {"val_loss": sum(self._val_losses) / max(1, len(self._val_losses))}
            self._val_losses.clear()
            if want_ex:
                completions = generate_sql(self.model, tokenizer, val_prompts, max_new_tokens=cfg.val_max_new_tokens,
                                           batch_size=cfg.val_batch_size)
                metrics["val_ex"], _ = execution_accuracy(val_examples, completions, executor)
            for k, v in metrics.items():
                self.log(k, v, prog_bar=True)
            self.last_val = metrics

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
    """Checkpoints (periodic last + best by monitor), early stopping, best adapter, curves."""
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
                module.model.save_pretrained(str(out_dir / "adapter"))
                (out_dir / "adapter" / "t2s_best.json").write_text(
                    json.dumps({"metric": cfg.monitor, "value": self.best, "step": self.best_step}))

        def state_dict(self) -> dict[str, Any]:
            return {"best": self.best, "best_step": self.best_step}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.best, self.best_step = state["best"], state["best_step"]

    class Curves(pl.Callback):
        """Loss per optimizer step and validation metrics, to curves.json / curves.png (kept across resumes)."""

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
                self.curves["train_loss"].append([trainer.global_step, statistics.mean(module.micro_losses)])
                module.micro_losses.clear()
                (out_dir / CURVES).write_text(json.dumps(self.curves))

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            if trainer.sanity_checking:
                return
            for k, v in module.last_val.items():
                self.curves.setdefault(k, []).append([trainer.global_step, float(v)])
            write_curves(out_dir, self.curves, out_dir.name)

        def on_train_end(self, trainer: Any, module: Any) -> None:
            write_curves(out_dir, self.curves, out_dir.name)

    ckpt_dir = out_dir / "checkpoints"
    callbacks: list[Any] = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}", save_last=True, save_top_k=0,
                        every_n_train_steps=cfg.checkpoint_every, auto_insert_metric_name=False),
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=cfg.monitor, mode=monitor_mode, save_top_k=1,
                        auto_insert_metric_name=False),
        BestAdapter(), Curves(),
    ]
    if cfg.patience > 0:
        callbacks.append(EarlyStopping(monitor=cfg.monitor, mode=monitor_mode, patience=cfg.patience))
    return callbacks


def make_loggers(cfg: SFTConfig, out_dir: Path) -> list[Any]:
    """Lightning's CSV logger always; wandb (offline by default) when `train.logger.wandb`."""
    from pytorch_lightning.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(str(out_dir), name="csv", version=0)]
    if cfg.logger.wandb:
        import os

        from pytorch_lightning.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, save_dir=str(out_dir),
                                   name=out_dir.name, id=_wandb_id(out_dir),
                                   offline=cfg.logger.mode == "offline", resume="allow"))
    return loggers


def _wandb_id(out_dir: Path) -> str:
    """A wandb run id stable for an output directory, so a resumed training continues the same wandb run."""
    import hashlib

    return "t2s-" + hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ the recipe
class NoTrainingRows(ValueError):
    """The data builder made no rows (too few questions, or no usable candidates in a run's pools)."""


def train_sft(cfg: SFTConfig, root: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Build the data, train the adapter (resuming from `<out>/checkpoints/last.ckpt` if present and `resume`),
    keep the best adapter; return and write `summary.json`."""
    pl = _lightning()
    out_dir = Path(out_dir)
    save_config(root, out_dir)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data_builder: TrainData = cfg.data
    tokenizer, model = load_base(root, cfg.peft, cfg.precision)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    examples = load_examples(root)
    schemas = schema_source(root)
    executor = make_executor(root)
    t0 = time.perf_counter()
    try:
        built: BuiltData = data_builder.build(examples, schemas, tokenizer, out_dir / "data", executor=executor)
        val_rows = _val_rows(data_builder, built, schemas, tokenizer, executor)
        data_seconds = time.perf_counter() - t0
        if not built.rows:
            raise NoTrainingRows(f"train.data built no training rows from dataset {root.dataset.get('name')!r} "
                             f"(stats: {built.stats}); use more questions or other row kinds")
        want_ex = bool({"sql", "self_sql", "mcts_step"} & set(data_builder.tasks)) and bool(built.val_examples)
        if cfg.monitor == "val_ex" and not want_ex:
            raise ValueError("train.monitor=val_ex needs `sql`, `self_sql` or `mcts_step` rows and val_size > 0 (set "
                             "train.monitor=val_loss)")
        val_prompts = [data_builder.val_prompt(ex, schemas.view(ex)) for ex in built.val_examples]
        module = make_module(cfg, model, tokenizer, built.val_examples, val_prompts, executor, want_ex)
        pad = tokenizer.pad_token_id
        train_items = [tokenize_row(tokenizer, r, cfg.max_completion_tokens) for r in built.rows]
        val_items = [tokenize_row(tokenizer, r, cfg.max_completion_tokens) for r in val_rows] or train_items[:1]
        sampler = ResumableShuffle(len(train_items), cfg.seed, cfg.batch_size)
        train_dl = torch.utils.data.DataLoader(_Rows(train_items), batch_size=cfg.batch_size, sampler=sampler,
                                               collate_fn=lambda b: collate(b, pad))
        val_dl = torch.utils.data.DataLoader(_Rows(val_items), batch_size=cfg.batch_size,
                                             collate_fn=lambda b: collate(b, pad))
        mode = "max" if cfg.monitor == "val_ex" else "min"
        trainer = pl.Trainer(
            max_steps=cfg.max_steps, accumulate_grad_batches=cfg.grad_accum, precision=cfg.precision,
            strategy=cfg.strategy, accelerator=cfg.accelerator, devices=cfg.devices,
            val_check_interval=cfg.val_every * cfg.grad_accum, check_val_every_n_epoch=None,
            num_sanity_val_steps=0, callbacks=make_callbacks(cfg, out_dir, mode), logger=make_loggers(cfg, out_dir),
            enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
            default_root_dir=str(out_dir), deterministic=False)
        last = out_dir / "checkpoints" / "last.ckpt"
        resumed_from = None
        if cfg.resume and last.is_file():
            resumed_from = int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])
            log.info("resuming from %s (step %d)", last, resumed_from)
            sampler.resume(resumed_from * cfg.grad_accum)  # continue the data order where the checkpoint left it
        t1 = time.perf_counter()
        with warnings.catch_warnings():  # Lightning warns that a plain DataLoader restarts the epoch; ours does not
            warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
            trainer.fit(module, train_dl, val_dl, ckpt_path=str(last) if resumed_from is not None else None)
        train_seconds = time.perf_counter() - t1
        if not (out_dir / "adapter").is_dir():  # no validation happened: keep the final adapter
            module.model.save_pretrained(str(out_dir / "adapter"))
        steps_done = int(trainer.global_step) - (resumed_from or 0)
        best = json.loads((out_dir / "adapter" / "t2s_best.json").read_text()) \
            if (out_dir / "adapter" / "t2s_best.json").is_file() else None
        save_config(root, out_dir / "adapter")
        summary = {
            "recipe": "sft", "out_dir": str(out_dir), "adapter": str(out_dir / "adapter"),
            "steps": int(trainer.global_step), "steps_this_run": steps_done, "resumed_from": resumed_from,
            "stopped_early": bool(trainer.should_stop and trainer.global_step < cfg.max_steps),
            "best": best, "last_val": module.last_val, "data": {**built.stats, "sha256": built.digest},
            "examples_per_second": round(steps_done * cfg.batch_size * cfg.grad_accum / train_seconds, 3)
            if train_seconds > 0 else None,
            "seconds_per_step": round(train_seconds / steps_done, 3) if steps_done else None,
            "data_seconds": round(data_seconds, 2), "train_seconds": round(train_seconds, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False)),
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary
    finally:
        executor.close()


def _val_rows(builder: TrainData, built: BuiltData, schemas: SchemaSource, tokenizer: Any,
              executor: Any) -> list[TrainRow]:
    """Rows of the held-out questions (same kinds), for the validation loss."""
    import copy

    if not built.val_examples:
        return []
    b = copy.copy(builder)
    b.val_size = 0
    return b.build(built.val_examples, schemas, tokenizer, None, executor=executor).rows
