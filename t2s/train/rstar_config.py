"""Settings of the rStar-style self-evolution recipe (`conf/train/rstar.yaml`; seed 001, rStar-Math / Alpha-SQL).

One recipe with a round count: each round generates candidates for the training questions with the current policy
through the pipeline's own generator, keeps the SQL that executes correctly, fine-tunes the policy on it (SFT), and
trains a pairwise preference model on (correct, wrong) candidates of the same pools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2s.train.sft_config import SFTConfig


@dataclass
class RStarSettings:
    """`rounds` of generate -> filter by execution -> SFT. `generator`: the `t2s run` generator option that produces
    the trajectories (`zero_shot_n8`: 8 sampled candidates per question; `mcts` once `plugins/generator/mcts.py` is
    on main), `generator_overrides`: extra `t2s run` overrides (e.g. `generator.n=4`). `policy`: the SFT settings of
    each round (its data builder's `tasks` are forced to `[self_sql]` and `predictions` to the round's run).
    `ppm`: also train the preference model (SFT on `select_pair` rows of the same pools, monitor val_loss).
    `from_previous`: round k+1 generates with round k's adapter (True) or always with the base (False)."""

    policy: SFTConfig
    rounds: int = 2
    generator: str = "zero_shot_n8"
    generator_overrides: list[str] = field(default_factory=list)
    ppm: bool = True
    from_previous: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"train.rounds must be >= 1, got {self.rounds}")

    def run(self, root: Any, out_dir: Path) -> dict[str, Any]:
        """Run (or resume, round by round) into `out_dir`; return the summary."""
        from t2s.train.rstar_trainer import train_rstar

        return train_rstar(self, root, out_dir)
