"""Adaptive grouped tournament selection: XiYan-SQL's adaptive strategy ("A Preview of XiYan-SQL: A Multi-Generator
Ensemble Framework for Text-to-SQL", arXiv 2411.08599) with Agentar-Scale-SQL's tournament ("Agentar-Scale-SQL:
Advancing Text-to-SQL through Orchestrated Test-Time Scaling", arXiv 2509.24403).

- `selector.py`: the stage, `AdaptiveTournamentSelector` (`conf/selector/adaptive_tournament.yaml`).
- `prompts.py` beside `tournament_v1.yaml`: the judge's template and the parser of its reply, paired by `CHOICE_REPLY`.
- `rows.py`: the builder of the pairwise judge's training rows (kind `select_pair`, `conf/train/rows/select_pair.yaml`).

The execution clusters it plays on are a seam it shares with `selector=majority` and the MCTS rewards
(`t2s.select`), and so are the pairwise messages (`t2s.select.pair_messages`), which the selection model's training
rows are built with.
"""

# the names the single-file plugin (`plugins/selector/adaptive_tournament.py`) had, for code that imports them from here
from t2s_plugins.selector.adaptive_tournament.prompts import parse_choice
from t2s_plugins.selector.adaptive_tournament.selector import SCORING_MODES, AdaptiveTournamentSelector

__all__ = ["SCORING_MODES", "AdaptiveTournamentSelector", "parse_choice"]
