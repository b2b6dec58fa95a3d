"""Settings of the GRPO recipe (`conf/train/grpo.yaml`): TRL's `GRPOTrainer` with rewards from t2s's scorer.

GRPO from "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models" (arXiv 2402.03300);
the GRPO generator's reward of "Agentar-Scale-SQL: Advancing Text-to-SQL through Orchestrated Test-Time Scaling"
(arXiv 2509.24403): 1 correct / 0.1 executes but wrong / 0 fails; group 4-8, KL 0.1, an optional component-match
partial reward. Typed: an unknown key fails at `instantiate`, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2s.train.sft_config import LoggerSettings, PeftSettings


@dataclass
class RewardSettings:
    """Reward functions and their weights. `execution`: 1 / `executes_wrong` (0.1) / 0 from the project's execution
    scorer; `component`: mean F1 of the Spider exact-set clause components (a partial reward; 0 = off);
    `format`: 1 when the completion holds a ```sql block with a statement. `task`: `sql` (generator) or `select_pair`
    (selection model: binary reward, 1 when the answer letter is the correct candidate; execution/component unused)."""

    task: str = "sql"
    execution: float = 1.0
    executes_wrong: float = 0.1
    component: float = 0.0
    format: float = 0.1

    def __post_init__(self) -> None:
        if self.task not in ("sql", "select_pair"):
            raise ValueError(f"train.reward.task={self.task!r}: use 'sql' or 'select_pair'")


@dataclass
class GRPOSettings:
    """GRPO on TRL: `group_size` sampled completions per prompt (`num_generations`), `prompts_per_step` prompts per
    optimizer step, KL coefficient `beta` to the base model (0 = no reference model), sampling `temperature`,
    `max_completion_tokens`. Every `save_every` steps a TRL checkpoint (resumed from on re-run); the adapter lands in
    `<out>/adapter`, the reward curve in `rewards.png` / `rewards.jsonl`. `use_vllm` generates with vLLM (GPU).
    `progress` shows transformers' bar over the steps. Several processes: `accelerate launch --num_processes N`
    (docs/training.md, "Several processes"); each takes `prompts_per_step` prompts per step."""

    peft: PeftSettings
    data: Any
    reward: RewardSettings = field(default_factory=RewardSettings)
    logger: LoggerSettings = field(default_factory=LoggerSettings)
    group_size: int = 4
    prompts_per_step: int = 1
    beta: float = 0.1
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_tokens: int = 128
    lr: float = 1e-5
    max_steps: int = 20
    warmup_steps: int = 0
    grad_accum: int = 1
    save_every: int = 10
    use_vllm: bool = False
    bf16: bool = False
    accelerator: str = "cpu"
    num_threads: int | None = None
    seed: int = 0
    resume: bool = True
    progress: bool = True
    #: start from an SFT adapter (its weights initialise the trained adapter), e.g. <sft out>/adapter
    init_adapter: str | None = None

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"train.group_size must be >= 2 (GRPO compares completions within a group), "
                             f"got {self.group_size}")
        if self.max_steps < 1 or self.prompts_per_step < 1:
            raise ValueError("train.max_steps and train.prompts_per_step must be >= 1")

    def run(self, root: Any, out_dir: Path) -> dict[str, Any]:
        """Train (or resume) into `out_dir`; return the summary (also `out_dir/summary.json`)."""
        from t2s.train.grpo_trainer import train_grpo

        return train_grpo(self, root, out_dir)
