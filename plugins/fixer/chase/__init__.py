"""CHASE-SQL's query fixer ("CHASE-SQL: Multi-Path Reasoning and Preference Optimized Candidate Selection in
Text-to-SQL", arXiv 2410.01943): a candidate that fails or returns no rows is repaired by the LLM from the error.

- `fixer.py`: the stage, `ChaseFixer` (`conf/fixer/chase.yaml`), and the column hint of a failing query.
- `prompts.py` beside `chase_fix_v1.yaml`, `chase_fix_v2.yaml`: the templates and the reading of their replies.
"""

# the names the single-file plugin (`plugins/fixer/chase.py`) had, for code that imports them from here
from t2s_plugins.fixer.chase.fixer import ChaseFixer, column_hint, outcome, problem_text
from t2s_plugins.fixer.chase.prompts import REFLECTION, last_sql

__all__ = ["REFLECTION", "ChaseFixer", "column_hint", "last_sql", "outcome", "problem_text"]
