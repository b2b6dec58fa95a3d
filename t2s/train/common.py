"""What the training recipes share: the base model with a fresh PEFT adapter, the questions, schemas and executor of
the shared `dataset` / `schema_format` / `db` configs, the recorded config, curves and memory figures.

The SFT recipe (`t2s.train.sft_trainer`), GRPO (`t2s.train.grpo_trainer`) and method recipes found through their
YAML's `_target_` (e.g. self-evolution rounds that run SFT per round) load and record through these, so every recipe
reads the config the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from t2s.train.data import SchemaSource
from t2s.train.sft_config import PeftSettings

CURVES = "curves.json"


class NoTrainingRows(ValueError):
    """The data builder made no rows (too few questions, or no usable candidates in a run's pools)."""


def base_model_path(root: DictConfig) -> str:
    """The checkpoint directory (or hub id) of the shared `llm` config's model, building named models if needed."""
    from t2s.llm.models import is_named_model, resolve_model

    model = str(root.llm.model)
    return str(resolve_model(model, root.paths.cache_dir)) if is_named_model(model) else model


def load_base(root: DictConfig, peft: PeftSettings, precision: str) -> tuple[Any, Any]:
    """(tokenizer, model with a fresh PEFT adapter). QLoRA loads the base in 4-bit nf4 (bitsandbytes)."""
    import torch
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
