"""Settings of the rStar-style self-evolution recipe (`conf/train/rstar.yaml`; seed 001, rStar-Math / Alpha-SQL).

One recipe with a round count: each round searches the training questions with the current policy through the
pipeline's own generator (MCTS by default), keeps the trajectories whose SQL executes correctly, fine-tunes the policy
on them (SFT), and trains the process preference model from the trees' gold-backed step values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2s.train.sft_config import SFTConfig


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
        from t2s.train.rstar_trainer import train_rstar

        return train_rstar(self, root, out_dir)
