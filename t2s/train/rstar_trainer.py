"""rStar-style self-evolution (seed 001): rounds of MCTS on the training questions -> keep the trajectories whose SQL
executes correctly -> SFT the policy, and train the process preference model (PPM) from step values.

Round k (`<out>/round<k>/`):

1. `generate/`: a `t2s run` on the training questions with the configured generator (default `mcts`,
   `plugins/generator/mcts.py`, which saves every question's search tree) and the current policy (`llm.adapter` =
   round k-1's policy adapter, or the base in round 0); from round 1 on, with `ppm_in_search`, the search also
   scores its reasoning steps with round k-1's PPM (`generator.ppm_llm`, an hf LLM with the PPM adapter). Every
   candidate gets a verdict (`candidate_correct`) from the project's scorer.
2. `policy/`: SFT (`t2s.train.sft_trainer`) of the policy. With MCTS: `mcts_step` rows, every step of the best
   trajectories that end in a correct SQL, in the exact search prompt that produced it (`t2s.train.data`; step values
   are backed up from the gold verdicts, as rStar does on training questions). With another generator: `self_sql`
   rows (the model's own correct SQL in the generator's prompt).
3. `ppm/` (if `ppm`): SFT of the PPM. With MCTS: `ppm_step` rows, sibling reasoning steps labelled Yes (leads to a
   correct SQL, highest Q first) / No (leads only to wrong SQL), the pointwise form of rStar's step-preference pairs
   that the generator's Yes/No PPM scores. With another generator: whole-query `select_pair` rows (seed 004 op 4).
   A round whose trees hold no such sibling pair skips the PPM (`round.json` says so).

A finished round (its `round.json`) is skipped on re-run, so a killed run resumes at the round it was in (and that
round's SFT resumes from its own checkpoint). A round without rows for a model keeps the previous one and says why in
`round.json`. `<out>/adapter` and `<out>/ppm_adapter` are the last policy and step PPM (`experiments/rstar_adapter.yaml`
searches with both). Not here: rStar's pairwise (Bradley-Terry) PPM loss; the PPM is
trained by SFT on its Yes/No answer, which is what `generator.ppm_llm` scores.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from t2s.train.data import TrainData, is_mcts, search_generator
from t2s.train.rstar_config import RStarSettings
from t2s.train.sft_trainer import NoTrainingRows, save_config, train_sft


def _hf_llm(root: DictConfig, choices: list[str]) -> dict[str, Any]:
    """The training model as an LLM config whose backend loads PEFT adapters and scores continuations: the configured
    one if it does (hf, vllm), else the hf backend on the same model (for llama.cpp)."""
    from hydra.utils import get_class

    from t2s.config import compose_config

    llm = OmegaConf.to_container(root.llm, resolve=True)
    if getattr(get_class(str(llm["_target_"])), "supports_adapters", False):
        return dict(llm)
    hf = compose_config([*choices, "llm=embedded_hf"]).llm
    return {**OmegaConf.to_container(hf, resolve=True), "model": llm["model"]}


def _generate(cfg: RStarSettings, root: DictConfig, adapter: str | None, run_dir: Path,
              ppm_adapter: str | None = None) -> dict[str, Any]:
    """One `t2s run` of the configured generator over the training dataset with the current policy (and PPM)."""
    from t2s.config import compose_config
    from t2s.run.runner import run

    choices = [f"generator={cfg.generator}", f"paths.cache_dir={root.paths.cache_dir}",
               f"paths.data_root={root.paths.data_root}", "run.progress=false", "embedder=hashing",
               *cfg.generator_overrides]
    run_cfg = compose_config(choices)
    use_ppm = bool(ppm_adapter) and is_mcts(run_cfg.generator)
    with open_dict(run_cfg):
        run_cfg.dataset = OmegaConf.create(OmegaConf.to_container(root.dataset, resolve=True))
        if adapter is None and not use_ppm:  # the base model: any backend (llama.cpp is the fast one on a CPU)
            run_cfg.llm = OmegaConf.create(OmegaConf.to_container(root.llm, resolve=True))
        else:
            run_cfg.llm = OmegaConf.create(_hf_llm(root, choices))
            run_cfg.llm.adapter = adapter
        if use_ppm:
            run_cfg.llms.ppm = OmegaConf.create({**_hf_llm(root, choices), "adapter": ppm_adapter})
            run_cfg.generator.ppm_llm = "ppm"
        # the schema text of the search prompts must be the training rows' (`t2s.train.data.SchemaSource`)
        run_cfg.schema_format = OmegaConf.create(OmegaConf.to_container(root.schema_format, resolve=True))
        for key in ("sample_values", "sample_rows"):
            run_cfg.db[key] = root.db[key]
        run_cfg.seed = int(root.seed)
    return run(run_cfg, run_dir=run_dir)


def _sft(policy: Any, tasks: list[str], predictions: Path, monitor: str) -> Any:
    data: TrainData = policy.data
    params = {k: v for k, v in data.params().items() if k not in ("prompt",)}
    builder = TrainData(**{**params, "prompt": data.template.id, "tasks": tasks, "predictions": str(predictions)})
    return dataclasses.replace(policy, data=builder, monitor=monitor)


def train_rstar(cfg: RStarSettings, root: DictConfig, out_dir: Path) -> dict[str, Any]:
    """All rounds (finished ones skipped); `<out>/adapter` is a copy of the last round's policy adapter and
    `<out>/ppm_adapter` of the last step PPM."""
    import shutil

    out_dir = Path(out_dir)
    save_config(root, out_dir)
    adapter: str | None = root.llm.get("adapter")
    ppm_adapter: str | None = None
    rounds: list[dict[str, Any]] = []
    for k in range(cfg.rounds):
        rdir = out_dir / f"round{k}"
        done = rdir / "round.json"
        if done.is_file():
            rec = json.loads(done.read_text())
        else:
            metrics = _generate(cfg, root, adapter if cfg.from_previous or k == 0 else root.llm.get("adapter"),
                                rdir / "generate", ppm_adapter if cfg.ppm_in_search else None)
            search = search_generator(rdir / "generate") is not None
            policy = _sft(cfg.policy, ["mcts_step" if search else "self_sql"], rdir / "generate",
                          cfg.policy.monitor if cfg.policy.data.val_size > 0 else "val_loss")
            rec = {"round": k, "generator_adapter": adapter, "ppm_in_search": ppm_adapter if cfg.ppm_in_search else None,
                   "generate_ex": metrics.get("ex"), "oracle": metrics.get("oracle")}
            try:
                pol = train_sft(policy, root, rdir / "policy")
                rec.update(policy={key: pol.get(key) for key in ("adapter", "steps", "best", "last_val")},
                           self_rows=pol["data"]["n_rows"], policy_rows=pol["data"]["kinds"])
            except NoTrainingRows as e:  # no correct trajectory this round: the policy stays as it was
                rec.update(policy={"adapter": adapter, "skipped": str(e)}, self_rows=0, policy_rows={})
            if cfg.ppm:
                kind = "ppm_step" if search else "select_pair"
                try:
                    ppm = train_sft(_sft(cfg.policy, [kind], rdir / "generate", "val_loss"), root, rdir / "ppm")
                    rec["ppm"] = {**{key: ppm.get(key) for key in ("adapter", "steps", "best")}, "kind": kind,
                                  "rows": ppm["data"]["kinds"]}
                except NoTrainingRows as e:
                    rec["ppm"] = {"adapter": None, "kind": kind, "skipped": str(e)}
            done.write_text(json.dumps(rec, indent=2, default=str))
        rounds.append(rec)
        adapter = rec["policy"]["adapter"]
        ppm = rec.get("ppm") or {}
        if ppm.get("adapter") and ppm.get("kind") == "ppm_step":  # only a step PPM scores search steps
            ppm_adapter = ppm["adapter"]
    if adapter and Path(adapter).is_dir():
        if (out_dir / "adapter").exists():
            shutil.rmtree(out_dir / "adapter")
        shutil.copytree(adapter, out_dir / "adapter")
    if ppm_adapter and Path(ppm_adapter).is_dir():
        if (out_dir / "ppm_adapter").exists():
            shutil.rmtree(out_dir / "ppm_adapter")
        shutil.copytree(ppm_adapter, out_dir / "ppm_adapter")
    summary = {"recipe": "rstar", "out_dir": str(out_dir), "adapter": str(out_dir / "adapter"),
               "ppm_adapter": str(out_dir / "ppm_adapter") if ppm_adapter else None, "rounds": rounds}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
