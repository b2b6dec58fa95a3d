"""Settings of the SFT recipe (`conf/train/sft.yaml`, and the recipes that reuse its trainer with other rows).

Typed dataclasses built by Hydra's `instantiate` from the `train` node: an unknown key is a TypeError naming it,
before any model loads. The adapters: "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv 2106.09685),
"DoRA: Weight-Decomposed Low-Rank Adaptation" (arXiv 2402.09353), "QLoRA: Efficient Finetuning of Quantized LLMs"
(arXiv 2305.14314); checkpoints chosen by validation EX, early stopping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEFT_METHODS = ("lora", "dora", "qlora")
MONITORS = ("val_ex", "val_loss")


@dataclass
class PeftSettings:
    """The adapter (`conf/train/peft/`): `lora`, `dora` (PEFT `use_dora`: magnitude + direction), or `qlora` (LoRA on
    a 4-bit nf4 base loaded with bitsandbytes; every adapted layer's input size must be a multiple of 64).
    `r` rank, `alpha` scaling (alpha / r multiplies the update), `target_modules` module names to adapt."""

    method: str = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        if self.method not in PEFT_METHODS:
            raise ValueError(f"train.peft.method={self.method!r}: use one of {', '.join(PEFT_METHODS)}")
        if self.r < 1:
            raise ValueError(f"train.peft.r must be >= 1, got {self.r}")


@dataclass
class LoggerSettings:
    """Where curves go besides `curves.png` / `curves.json` / Lightning's CSV: wandb (`mode`: offline | online;
    offline runs are synced later with `wandb sync <out>/wandb/offline-run-*`)."""

    wandb: bool = False
    project: str = "t2s-train"
    mode: str = "offline"
    entity: str | None = None


@dataclass
class SFTConfig:
    """Supervised fine-tuning on Lightning + PEFT.

    Steps are optimizer steps (`batch_size * grad_accum` rows each). `lr` peaks after `warmup_steps` of linear warmup
    and decays by a cosine to 0 at `max_steps`. Every `val_every` steps: `val_loss` on the held-out questions' rows
    and, when the rows include `sql`, `val_ex` (greedy generation with the generator's prompt, scored by the project's
    execution scorer); `monitor` picks the metric for the best checkpoint / adapter and early stopping (`patience`
    validations without improvement; 0 = off). `checkpoint_every` steps a resumable `last.ckpt` (trainable weights,
    optimizer, scheduler, loop state) is written; a rerun of the same command resumes from it. `precision`,
    `accelerator`, `devices`, `num_nodes` go to Lightning's Trainer (`bf16-mixed`, `gpu`). `strategy`: `auto` (one
    process; DDP when `devices` or `num_nodes` > 1) or `ddp` (`devices` processes per node, gloo on CPU, NCCL on GPUs; `batch_size` is per process, so a
    step is `batch_size * grad_accum * devices * num_nodes` rows); `fsdp` and `deepspeed` are refused, saying why
    (`t2s.train.launch.strategy_problem`). `progress` shows a bar over the optimizer steps (rank 0, stderr).
    `gradient_checkpointing` recomputes activations in the backward pass instead of keeping them (same losses, less
    memory, more compute).
    """

    peft: PeftSettings
    data: Any
    logger: LoggerSettings = field(default_factory=LoggerSettings)
    lr: float = 2e-4
    weight_decay: float = 0.0
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 100
    warmup_steps: int = 10
    max_completion_tokens: int = 256
    val_every: int = 50
    val_max_new_tokens: int = 128
    val_batch_size: int = 8
    monitor: str = "val_ex"
    patience: int = 3
    checkpoint_every: int = 10
    precision: str = "32-true"
    gradient_checkpointing: bool = False
    strategy: str = "auto"
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    num_threads: int | None = None
    seed: int = 0
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        from t2s.train.launch import strategy_problem

        problem = strategy_problem(self.strategy, self.accelerator)
        if problem:
            raise ValueError(problem)
        if self.monitor not in MONITORS:
            raise ValueError(f"train.monitor={self.monitor!r}: use one of {', '.join(MONITORS)}")
        for name in ("batch_size", "grad_accum", "max_steps", "val_every", "checkpoint_every", "val_batch_size",
                     "devices", "num_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")

    def run(self, root: Any, out_dir: Path) -> dict[str, Any]:
        """Train (or resume) into `out_dir`; return the summary (also written to `out_dir/summary.json`)."""
        from t2s.train.sft_trainer import train_sft

        return train_sft(self, root, out_dir)
