"""SHARE, hierarchical action correction ("SHARE: An SLM-based Hierarchical Action CorREction Assistant for
Text-to-SQL", arXiv 2506.00391): everything that is SHARE's alone.

- `corrector.py`: the stage, `ShareCorrector` (`conf/corrector/share.yaml`, `share_llm.yaml`): BAM -> SAM -> LOM ->
  regenerate.
- `trajectory/`: the action-trajectory language: SQL -> trajectory (the deterministic BAM), trajectory -> SQL, the
  strict text form, SAM's mask-and-fill and the perturbations that make LOM's training rows; `trajectory/grammar.py`
  the grammars of SAM's and LOM's replies under constrained decoding (`corrector.decoding`).
- `prompts.py` beside `share_bam_v1.yaml`, `share_sam_v1.yaml`, `share_lom_v1.yaml`, `share_regen_v1.yaml`: the
  templates, the parsers of their replies and the reply formats that pair them (`TRAJECTORY_REPLY`, `MASK_REPLY`).
- `rows.py`: the builders of the rows that train BAM, SAM and LOM (kinds `share_bam`, `share_sam`, `share_lom`,
  `conf/train/rows/`), from `trajectory`; `docs/share_trajectory.md` has the grammar with examples.
"""

# the names the single-file plugin (`plugins/corrector/share.py`) had, for code that imports them from here
from t2s_plugins.corrector.share.corrector import ShareCorrector, schema_problems
from t2s_plugins.corrector.share.prompts import parse_mask_answers, parse_trajectory_reply, reply_body

__all__ = ["ShareCorrector", "parse_mask_answers", "parse_trajectory_reply", "reply_body", "schema_problems"]
