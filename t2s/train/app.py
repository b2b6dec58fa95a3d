"""The `t2s train` Hydra app: `conf/train.yaml` (shares the `dataset`, `llm` and `schema_format` groups with `t2s run`)
plus the recipe group `train` (`conf/train/<recipe>.yaml`) and its sub-groups `train/peft`, `train/data`,
`train/logger`. A thin `@hydra.main` calls `train(cfg) -> dict`, which tests call directly.

The output directory is one per distinct command line (`outputs/train/<overrides>`), so re-running a killed command
resumes from its last checkpoint. Several processes: `train.strategy=ddp train.devices=N` (SFT recipes; rank 0 starts
the others, `t2s.train.launch`), or `accelerate launch --multi_gpu --num_processes N -m t2s.train.app train=grpo`
(GRPO); only rank 0 prints the summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from t2s.config import CONF_DIR, register_configs


def compose_train_config(overrides: list[str] | None = None) -> DictConfig:
    """`conf/train.yaml` composed with `overrides`, as `t2s train` would (for tests and notebooks)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides or []))
    return cfg


def current_targets(node: Any) -> Any:
    """`node` (a plain container) with every `_target_` recorded under a name from before a move
    (`t2s.run.store.MOVED_TARGETS`, old -> new; the longest matching old prefix wins) written by its current name, so
    a `train_config.yaml` written before a recipe moved into its method's package still builds."""
    from t2s.run.store import MOVED_TARGETS

    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "_target_" and isinstance(v, str):
                olds = [(old, new) for new, old in MOVED_TARGETS.items() if v.startswith(old)]
                if olds:
                    old, new = max(olds, key=lambda p: len(p[0]))
                    v = new + v[len(old):]
            out[k] = current_targets(v)
        return out
    if isinstance(node, list):
        return [current_targets(v) for v in node]
    return node


def build_recipe(cfg: DictConfig) -> Any:
    """The recipe settings object of `cfg.train` (typed; an unknown or misspelt key fails here, naming it). A
    recipe recorded under a moved `_target_` (`current_targets`) builds as the class it moved to."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.create(current_targets(OmegaConf.to_container(cfg.train, resolve=True)))
        return instantiate(node, _convert_="all")
    except Exception as e:
        raise ValueError(f"the `train` recipe (conf/train/<recipe>.yaml) and your train.* overrides: {e}") from e


def train(cfg: DictConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the configured recipe into `out_dir` (default: Hydra's output directory); return its summary."""
    register_configs()
    if out_dir is None:
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir
    recipe = build_recipe(cfg)
    return dict(recipe.run(cfg, Path(out_dir)))


register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    """`t2s train train=<recipe> [overrides]`."""
    import json

    summary = train(cfg)
    if "rank" in summary:  # another process of a multi-process training: rank 0 reports
        return
    keys = ("recipe", "adapter", "steps", "resumed_from", "best", "seconds_per_step", "examples_per_second",
            "peak_rss_mb")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=2, default=str))
    print(f"[t2s train] wrote {summary.get('out_dir')}")


if __name__ == "__main__":
    main()
