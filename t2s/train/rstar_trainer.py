"""rStar-style self-evolution (seed 001): rounds of generate -> keep what executes correctly -> SFT the policy, and a
preference model from the same candidate pools.

Round k (`<out>/round<k>/`):

1. `generate/`: a `t2s run` on the training questions with the configured generator (default `zero_shot_n8`) and the
   current policy (`llm.adapter` = round k-1's adapter, or the base in round 0); every candidate gets a verdict
   (`candidate_correct`) from the project's scorer.
2. `policy/`: SFT (`t2s.train.sft_trainer`) on `self_sql` rows (the model's own correct SQL, in the generator's
   prompt) -> `policy/adapter`, the next round's generator.
3. `ppm/` (if `ppm`): SFT of a pairwise preference model on `select_pair` rows of the same pools (seed 004 op 4),
   the process-preference model of rStar reduced to whole-query preferences.

A finished round (its `round.json`) is skipped on re-run, so a killed run resumes at the round it was in (and that
round's SFT resumes from its own checkpoint). What is not here: step-level Q-values and a process preference model
over MCTS steps need the MCTS generator (`plugins/generator/mcts.py`, a parallel issue); with it, set
`train.generator=mcts` and the loop is the same, with whole-query preferences as the PPM's training signal.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from t2s.train.data import TrainData
from t2s.train.rstar_config import RStarSettings
from t2s.train.sft_trainer import save_config, train_sft


def _generate(cfg: RStarSettings, root: DictConfig, adapter: str | None, run_dir: Path) -> dict[str, Any]:
    """One `t2s run` of the configured generator over the training dataset with the current policy."""
    from t2s.config import compose_config
    from t2s.run.runner import run

    choices = [f"generator={cfg.generator}", f"paths.cache_dir={root.paths.cache_dir}",
               f"paths.data_root={root.paths.data_root}", "run.progress=false", "embedder=hashing",
               *cfg.generator_overrides]
    run_cfg = compose_config(choices)
    with open_dict(run_cfg):
        run_cfg.dataset = OmegaConf.create(OmegaConf.to_container(root.dataset, resolve=True))
        llm = OmegaConf.to_container(root.llm, resolve=True)
        if "adapter" not in llm:  # a backend without PEFT adapters (llama.cpp): the hf backend on the same model
            hf = compose_config([*choices, "llm=embedded_hf"]).llm
            llm = {**OmegaConf.to_container(hf, resolve=True), "model": llm["model"]}
        run_cfg.llm = OmegaConf.create(llm)
        run_cfg.llm.adapter = adapter
        run_cfg.schema_format = OmegaConf.create(OmegaConf.to_container(root.schema_format, resolve=True))
        run_cfg.seed = int(root.seed)
    return run(run_cfg, run_dir=run_dir)


def _sft(policy: Any, tasks: list[str], predictions: Path, monitor: str) -> Any:
    data: TrainData = policy.data
    params = {k: v for k, v in data.params().items() if k not in ("prompt",)}
    builder = TrainData(**{**params, "prompt": data.template.id, "tasks": tasks, "predictions": str(predictions)})
    return dataclasses.replace(policy, data=builder, monitor=monitor)


def train_rstar(cfg: RStarSettings, root: DictConfig, out_dir: Path) -> dict[str, Any]:
    """All rounds (finished ones skipped); `<out>/adapter` is a copy of the last round's policy adapter."""
    import shutil

    out_dir = Path(out_dir)
    save_config(root, out_dir)
    adapter: str | None = root.llm.get("adapter")
    rounds: list[dict[str, Any]] = []
    for k in range(cfg.rounds):
        rdir = out_dir / f"round{k}"
        done = rdir / "round.json"
        if done.is_file():
            rec = json.loads(done.read_text())
        else:
            metrics = _generate(cfg, root, adapter if cfg.from_previous or k == 0 else root.llm.get("adapter"),
                                rdir / "generate")
            policy = _sft(cfg.policy, ["self_sql"], rdir / "generate",
                          cfg.policy.monitor if cfg.policy.data.val_size > 0 else "val_loss")
            pol = train_sft(policy, root, rdir / "policy")
            rec = {"round": k, "generator_adapter": adapter, "generate_ex": metrics.get("ex"),
                   "oracle": metrics.get("oracle"), "policy": {key: pol.get(key) for key in
                                                             ("adapter", "steps", "best", "last_val")},
                   "self_rows": pol["data"]["n_rows"]}
            if cfg.ppm:
                ppm = train_sft(_sft(cfg.policy, ["select_pair"], rdir / "generate", "val_loss"), root, rdir / "ppm")
                rec["ppm"] = {key: ppm.get(key) for key in ("adapter", "steps", "best")}
            done.write_text(json.dumps(rec, indent=2, default=str))
        rounds.append(rec)
        adapter = rec["policy"]["adapter"]
    if adapter and Path(adapter).is_dir():
        if (out_dir / "adapter").exists():
            shutil.rmtree(out_dir / "adapter")
        shutil.copytree(adapter, out_dir / "adapter")
    summary = {"recipe": "rstar", "out_dir": str(out_dir), "adapter": str(out_dir / "adapter"), "rounds": rounds}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
