"""rStar-style self-evolution, the `rstar` training recipe (`conf/train/rstar.yaml`, `t2s train train=rstar`), after
"rStar-Math: Small LLMs Can Master Math Reasoning with Self-Evolved Deep Thinking" (arXiv 2501.04519) and Alpha-SQL
("Alpha-SQL: Zero-Shot Text-to-SQL using Monte Carlo Tree Search", arXiv 2502.17248): rounds of MCTS on the training
questions -> keep the trajectories whose SQL executes correctly -> SFT the policy, and train the process preference
model (PPM) from step values. `RStarSettings` is the recipe's typed settings (found through the YAML's `_target_`;
`t2s/` never imports this module), `train_rstar` runs the rounds.

Round k (`<out>/round<k>/`):

1. `generate/`: a `t2s run` on the training questions with the configured generator (default `mcts`,
   `generator.py`, which saves every question's search tree) and the current policy (`llm.adapter` = round k-1's
   policy adapter, or the base in round 0); from round 1 on, with `ppm_in_search`, the search also scores its
   reasoning steps with round k-1's PPM (`generator.ppm_llm`, an hf LLM with the PPM adapter). Every candidate gets
   a verdict (`candidate_correct`) from the project's scorer.
2. `policy/`: SFT (`t2s.train.sft_trainer`) of the policy. With MCTS: `mcts_step` rows (`rows.py`), every step of the
   best trajectories that end in a correct SQL, in the exact search prompt that produced it (step values are backed
   up from the gold verdicts, as rStar does on training questions). With another generator: `self_sql` rows (the
   model's own correct SQL in the generator's prompt).
3. `ppm/` (if `ppm`): SFT of the PPM. With MCTS: `ppm_step` rows, sibling reasoning steps labelled Yes (leads to a
   correct SQL, highest Q first) / No (leads only to wrong SQL), the pointwise form of rStar's step-preference pairs
   that the generator's Yes/No PPM scores. With another generator: whole-query `select_pair` rows.
   A round whose trees hold no such sibling pair skips the PPM (`round.json` says so).

A finished round (its `round.json`) is skipped on re-run, so a killed run resumes at the round it was in (and that
round's SFT resumes from its own checkpoint). A round without rows for a model keeps the previous one and says why in
`round.json`. `<out>/adapter` and `<out>/ppm_adapter` are the last policy and step PPM (`experiments/rstar_adapter.yaml`
searches with both). Not here: rStar's pairwise (Bradley-Terry) PPM loss; the PPM is trained by SFT on its Yes/No
answer, which is what `generator.ppm_llm` scores.

Moved from `t2s/train/rstar_config.py` + `rstar_trainer.py`: `t2s.run.store.MOVED_TARGETS` reads the old `_target_`
(`t2s.train.rstar_config.RStarSettings`) as this one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from t2s_plugins.generator.mcts.rows import is_mcts, search_generator

from t2s.train.common import NoTrainingRows, save_config
from t2s.train.data import TrainData
from t2s.train.sft_config import SFTConfig
from t2s.train.sft_trainer import train_sft


@dataclass
class RStarSettings:
    """`rounds` of search -> filter by execution -> SFT. `generator`: the `t2s run` generator option that produces
    the trajectories (`mcts`: tree search, whose saved trees give step-level rows; any other, e.g. `zero_shot_n8`,
    gives whole-query rows), `generator_overrides`: extra `t2s run` overrides (e.g. `generator.simulations=16`).
    `policy`: the SFT settings of each round (its data builder's `tasks` are set to `[mcts_step]` or `[self_sql]`
    and `predictions` to the round's run). `ppm`: also train the process preference model (`ppm_step` rows from the
    trees, or `select_pair` rows without MCTS; monitor val_loss). `ppm_in_search`: from round 1 on, the search
    scores its steps with the previous round's PPM. `from_previous`: round k+1 generates with round k's policy
    adapter (True) or always with the base (False)."""

    policy: SFTConfig
    rounds: int = 2
    generator: str = "mcts"
    generator_overrides: list[str] = field(default_factory=list)
    ppm: bool = True
    ppm_in_search: bool = True
    from_previous: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"train.rounds must be >= 1, got {self.rounds}")

    def run(self, root: Any, out_dir: Path) -> dict[str, Any]:
        """Run (or resume, round by round) into `out_dir`; return the summary."""
        return train_rstar(self, root, out_dir)


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


def _sft(policy: SFTConfig, tasks: list[str], predictions: Path, monitor: str) -> SFTConfig:
    """The round's SFT settings: the policy's, with its data builder's row kinds set to `tasks` and its pools read
    from the round's run."""
    data: TrainData = policy.data
    return dataclasses.replace(policy, data=data.replace(tasks=tasks, predictions=str(predictions)), monitor=monitor)


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
