"""Monte Carlo tree search over reasoning steps and SQL, after rStar ("rStar-Math: Small LLMs Can Master Math Reasoning
with Self-Evolved Deep Thinking", arXiv 2501.04519) and Alpha-SQL ("Alpha-SQL: Zero-Shot Text-to-SQL using Monte Carlo
Tree Search", arXiv 2502.17248).

- `generator.py`: the stage, `MCTSGenerator` (`conf/generator/mcts.yaml`), its tree and UCT.
- `prompts.py` beside `mcts_step_v1.yaml`, `mcts_sql_v1.yaml`, `mcts_revise_v1.yaml`, `mcts_ppm_v1.yaml`: the search's
  templates (`SearchPrompts`), which the rStar training rows rebuild from saved trees.
- `testing.py`: what the contract tests need to build it small.
- The self-evolution recipe (`t2s train train=rstar`) and its row builders live in `t2s/train/` for now.
"""

# the names the single-file plugin (`plugins/generator/mcts.py`) had, for code that imports them from here
from t2s_plugins.generator.mcts.generator import REASONING_ACTIONS, MCTSGenerator, Node, Tree, uct

__all__ = ["REASONING_ACTIONS", "MCTSGenerator", "Node", "Tree", "uct"]
