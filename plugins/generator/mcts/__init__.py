"""Monte Carlo tree search over reasoning steps and SQL, after rStar ("rStar-Math: Small LLMs Can Master Math Reasoning
with Self-Evolved Deep Thinking", arXiv 2501.04519) and Alpha-SQL ("Alpha-SQL: Zero-Shot Text-to-SQL using Monte Carlo
Tree Search", arXiv 2502.17248).

- `generator.py`: the stage, `MCTSGenerator` (`conf/generator/mcts.yaml`), its tree and UCT.
- `prompts.py` beside `mcts_step_v1.yaml`, `mcts_sql_v1.yaml`, `mcts_revise_v1.yaml`, `mcts_ppm_v1.yaml`: the search's
  templates (`SearchPrompts`) and their reply formats, which the rStar training rows rebuild from saved trees.
- `testing.py`: what the contract tests need to build it small.
- `rows.py`: the rStar training-row builders (kinds `mcts_step`, `ppm_step`), which rebuild the search's prompts
  from saved trees; `rstar.py`: the self-evolution recipe (`t2s train train=rstar`, found through its YAML's
  `_target_`).
"""

# the names the single-file plugin (`plugins/generator/mcts.py`) had, for code that imports them from here
from t2s_plugins.generator.mcts.generator import REASONING_ACTIONS, MCTSGenerator, Node, Tree, uct

__all__ = ["REASONING_ACTIONS", "MCTSGenerator", "Node", "Tree", "uct"]
