"""One command for one CUDA GPU: LoRA SFT of the embedded model on Spider train, bounded GRPO, and EX of base, SFT and
SFT+GRPO on all 972 executable Spider dev questions, with wall seconds per phase (issue 13 item 7).

    python benchmarks/gpu_recipe.py                 # on a machine with one CUDA GPU (installs what it needs)
    python benchmarks/gpu_recipe.py --dry-run       # CPU, tiny random model, a few steps and questions (in the tests)

Phases: `install` (pip install -e '.[model]' and, when `--backend vllm`, '.[gpu]'; package registries only), `base`
(pipeline on dev with the base model), `sft` (t2s train train=sft on all of Spider train: LoRA r=16, bf16-mixed,
batch 16, one epoch by default), `sft_eval`, `grpo` (t2s train train=grpo from the SFT adapter, `--grpo-steps`
steps, group 8, KL 0.1), `grpo_eval`. Evaluation goes through `t2s.run.runner.run` with the adapter plugged in by
config (`llm.adapter=<dir>`), generation by vLLM (`--backend vllm`, default when importable) or batched `hf`.
Budget on one H100/H200-class GPU (design target, not measured here: this machine has no GPU): install ~2 min,
each dev evaluation ~1 min with vLLM, SFT ~3 min for 7,000 rows, GRPO ~2 min for 30 steps. Results: a table on
stdout and `<out>/gpu_recipe.json`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _phase(name: str, results: dict[str, Any], fn: Any) -> Any:
    t0 = time.perf_counter()
    value = fn()
    results[name] = {"seconds": round(time.perf_counter() - t0, 1)}
    print(f"[gpu_recipe] {name}: {results[name]['seconds']} s", flush=True)
    return value


def evaluate(args: argparse.Namespace, adapter: str | None, run_dir: Path) -> float:
    """EX (percent) of the zero-shot pipeline with the base model (+ adapter) on the dev set (all 972 executable questions)."""
    from t2s.config import compose_config
    from t2s.run.runner import run

    if args.dry_run:
        llm = ["llm=tiny", "generator.max_new_tokens=8", "dataset.limit=2"]
    elif args.backend == "vllm":
        llm = ["llm=vllm", "llm.model=embedded", "llm.dtype=bfloat16"]
    else:
        llm = ["llm=embedded", "llm.device=cuda", "llm.batch_size=64"]
    overrides = ["dataset=spider_dev", "embedder=hashing", "run.progress=false", "run.batch_size=64",
                 f"paths.cache_dir={args.cache}", *llm]
    if adapter:
        overrides.append(f"llm.adapter={adapter}")
    metrics = run(compose_config(overrides), run_dir=run_dir)
    return float(metrics.get("ex") or 0.0)


def train_overrides(args: argparse.Namespace, recipe: str) -> list[str]:
    """`t2s train` overrides of one phase (dry run: tiny model, a few steps on a few questions, CPU)."""
    common = [f"paths.cache_dir={args.cache}", "dataset=spider_train"]
    if args.dry_run:
        common += ["llm=tiny", "dataset.limit=8", "train.data.max_prompt_tokens=320", "train.data.val_size=2"]
        if recipe == "sft":
            return [*common, "train=sft", "train.max_steps=2", "train.val_every=2", "train.batch_size=4",
                    "train.val_max_new_tokens=8", "train.max_completion_tokens=64"]
        return [*common, "train=grpo", "train.max_steps=1", "train.group_size=2", "train.max_completion_tokens=8"]
    common += ["llm=embedded", "train.data.max_prompt_tokens=1536", "train.data.val_size=64"]
    if recipe == "sft":
        return [*common, "train=sft", "train.accelerator=gpu", "train.precision=bf16-mixed", "train.batch_size=16",
                f"train.max_steps={args.sft_steps}", "train.warmup_steps=20", "train.lr=2e-4", "train.peft.r=16",
                "train.peft.alpha=32", "train.val_every=100", "train.val_batch_size=64", "train.patience=0",
                "train.checkpoint_every=100"]
    return [*common, "train=grpo", "train.accelerator=gpu", "train.bf16=true", f"train.max_steps={args.grpo_steps}",
            "train.group_size=8", "train.prompts_per_step=4", "train.beta=0.1", "train.lr=5e-6",
            "train.max_completion_tokens=192", f"train.use_vllm={str(args.backend == 'vllm').lower()}"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every phase; print the table; return the results (also written to `<out>/gpu_recipe.json`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a few steps and questions")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "gpu_recipe"))
    parser.add_argument("--cache", default=os.environ.get("T2S_CACHE", str(ROOT / ".cache")))
    parser.add_argument("--sft-steps", type=int, default=437, help="optimizer steps of batch 16 (437 = 1 epoch)")
    parser.add_argument("--grpo-steps", type=int, default=30)
    parser.add_argument("--backend", choices=["vllm", "hf"],
                        default="vllm" if importlib.util.find_spec("vllm") else "hf")
    parser.add_argument("--no-install", action="store_true", help="skip the pip install phase")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"dry_run": args.dry_run, "backend": args.backend}
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA GPU visible; use --dry-run on CPU")
        if not args.no_install:
            extras = ".[model,gpu]" if args.backend == "vllm" else ".[model]"
            _phase("install", results, lambda: subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "-e", extras], cwd=ROOT, check=True))
    from t2s.train.app import compose_train_config, train

    results["base"] = {}
    ex = _phase("base", results, lambda: evaluate(args, None, out / "eval_base"))
    results["base"]["ex"] = ex
    sft = _phase("sft", results, lambda: train(compose_train_config(train_overrides(args, "sft")), out / "sft"))
    results["sft"].update({k: sft.get(k) for k in ("steps", "examples_per_second", "peak_rss_mb")})
    sft_adapter = sft["adapter"]
    results["sft_eval"] = {}
    results["sft_eval"]["ex"] = _phase("sft_eval", results, lambda: evaluate(args, sft_adapter, out / "eval_sft"))
    grpo = _phase("grpo", results, lambda: train(compose_train_config(
        [*train_overrides(args, "grpo"), f"train.init_adapter={sft_adapter}"]), out / "grpo"))
    results["grpo"].update({k: grpo.get(k) for k in ("steps", "seconds_per_step", "mean_reward")})
    results["grpo_eval"] = {}
    results["grpo_eval"]["ex"] = _phase("grpo_eval", results,
                                        lambda: evaluate(args, grpo["adapter"], out / "eval_grpo"))
    results["total_seconds"] = round(sum(v["seconds"] for v in results.values() if isinstance(v, dict)), 1)
    (out / "gpu_recipe.json").write_text(json.dumps(results, indent=2, default=str))
    print("| phase | EX | seconds |\n|---|---|---|")
    for name in ("install", "base", "sft", "sft_eval", "grpo", "grpo_eval"):
        if name in results:
            ex_value = results[name].get("ex")
            print(f"| {name} | {'' if ex_value is None else f'{ex_value:.1f}'} | {results[name]['seconds']} |")
    print(f"| total | | {results['total_seconds']} |")
    return results


if __name__ == "__main__":
    main()
