"""SHARE's action trajectories (seed 000): typed steps, text form, SQL <-> trajectory, masking, perturbation.

(Full grammar documentation: see docs/share_trajectory.md.)
"""

from t2s.sql.trajectory.render import RenderError, plan_from, render_sql
from t2s.sql.trajectory.steps import *  # noqa: F401,F403
from t2s.sql.trajectory.text import MASK_TOKEN, TrajectoryError, format_trajectory, parse_trajectory, validate
from t2s.sql.trajectory.translate import TranslationError, Unsupported, sql_to_trajectory
from t2s.sql.trajectory.perturb import PERTURB_KINDS, Perturbation, fill_masks, mask_schema, perturb, perturbations
