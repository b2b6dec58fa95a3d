"""PV-SQL's Verify & Repair ("PV-SQL: Synergizing Database Probing and Rule-based Verification for Text-to-SQL
Agents", arXiv 2604.17653): everything that is the verifier's alone.

- `verifier.py`: the stage, `PVVerifier` (`conf/verifier/pv.yaml`): checks every candidate, repairs the failing ones.
- `constraints.py`: the checklist: constraints extracted from the question by pattern matching (ten categories) and
  the syntax, execution, result-shape and constraint checks of a candidate (`docs/pv_constraints.md`).
- `prompts.py` beside `pv_repair_v1.yaml`: the repair template and the parser of its reply.

PV-SQL's other half, Probe, is the prober `plugins/prober/pv/`. The two stages share no code: the prober's probe
checks and the verifier's checklist are disjoint, and both use only seams of `t2s` (SQL extraction, `env.execute_many`,
prompts), so each lives with its own stage.
"""

# the name the single-file plugin (`plugins/verifier/pv.py`) had, for code that imports it from here
from t2s_plugins.verifier.pv.verifier import PVVerifier

__all__ = ["PVVerifier"]
