"""The training rows of SHARE's three small models ("SHARE: An SLM-based Hierarchical Action CorREction Assistant for
Text-to-SQL", arXiv 2506.00391, section 3.4), as `t2s.train.rows.RowBuilder`s:

- `share_bam` (`BamRows`, `conf/train/rows/share_bam.yaml`): the gold SQL -> its action trajectory
  (`trajectory.sql_to_trajectory`, the deterministic translator);
- `share_sam` (`SamRows`, `share_sam.yaml`): the schema-masked trajectory (`mask_schema`) -> the filled masks;
- `share_lom` (`LomRows`, `share_lom.yaml`): a perturbed trajectory (add / delete / substitute one action, `perturb`)
  -> the correct trajectory.

Each row is asked with the prompt the corrector asks the adapter it trains (`corrector=share`'s `bam_prompt` /
`sam_prompt` / `lom_prompt`; keep each builder's `prompt` equal to that setting). Questions the translator does not
express are left out (counted as skipped).
"""

from __future__ import annotations

from typing import Any

from t2s_plugins.corrector.share.trajectory import (
    PERTURB_KINDS,
    format_trajectory,
    mask_answers_reply,
    mask_schema,
    perturb,
    sql_to_trajectory,
    trajectory_reply,
)

from t2s.generation import template_messages
from t2s.prompts import PromptTemplate
from t2s.train.rows import Messages, RowBuilder, RowContext, TrainRow


class _TrajectoryRows(RowBuilder):
    """What the three kinds share: the gold SQL's trajectory and a prompt about the question."""

    def __init__(self, *, prompt: str) -> None:
        self.prompt = prompt

    def trajectory(self, ctx: RowContext) -> Any:
        """The gold SQL's trajectory, or None when the translator does not express it."""
        try:
            return sql_to_trajectory(ctx.example.gold_sql or "", ctx.schemas.schema(ctx.example))
        except Exception:  # noqa: BLE001 - the translator's Unsupported / parse errors: the question is skipped
            return None

    def ask(self, ctx: RowContext, template: PromptTemplate, **fields: str) -> Messages:
        """The corrector's prompt about the question (schema, question, evidence, dialect) with `fields`."""
        ex = ctx.example
        return template_messages(template, schema=ctx.view.text, question=ex.question, evidence=ex.evidence,
                                 use_evidence=ctx.data.limits.use_evidence, dialect=ctx.data.dialect, **fields)


class BamRows(_TrajectoryRows):
    """`share_bam`: the gold SQL -> its action trajectory (`prompt`: the corrector's `bam_prompt`)."""

    def __init__(self, *, prompt: str = "share_bam_v1") -> None:
        super().__init__(prompt=prompt)

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        traj = self.trajectory(ctx)
        if traj is None:
            return []
        t = ctx.data.prompt(self.prompt)
        return [self.row(ctx, self.ask(ctx, t, sql=ctx.example.gold_sql or ""), trajectory_reply(traj), prompt=t.id)]


class SamRows(_TrajectoryRows):
    """`share_sam`: the trajectory with its schema items masked -> the masks' answers (`prompt`: `sam_prompt`);
    a trajectory without a schema item gives no row."""

    def __init__(self, *, prompt: str = "share_sam_v1") -> None:
        super().__init__(prompt=prompt)

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        traj = self.trajectory(ctx)
        if traj is None:
            return []
        t = ctx.data.prompt(self.prompt)
        masked, answers = mask_schema(traj)
        if not answers:
            return []
        return [self.row(ctx, self.ask(ctx, t, masked=masked, n_masks=str(len(answers))), mask_answers_reply(answers),
                         prompt=t.id)]


class LomRows(_TrajectoryRows):
    """`share_lom`: a perturbed trajectory -> the correct one (`prompt`: `lom_prompt`). `kinds`: the perturbations,
    tried in an order drawn from the build's rng until one applies (`train.data.share_kinds` by default)."""

    def __init__(self, *, prompt: str = "share_lom_v1", kinds: list[str] | None = None) -> None:
        super().__init__(prompt=prompt)
        self.kinds = list(kinds if kinds is not None else PERTURB_KINDS)
        bad = sorted(set(self.kinds) - set(PERTURB_KINDS))
        if bad:  # fails when the recipe is built, not at the first question
            raise ValueError(f"share_lom kinds {bad}: use {', '.join(PERTURB_KINDS)}")

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        traj = self.trajectory(ctx)
        if traj is None:
            return []
        t = ctx.data.prompt(self.prompt)
        kinds = list(self.kinds)
        ctx.rng.shuffle(kinds)
        schema = ctx.schemas.schema(ctx.example)
        for k in kinds:
            p = perturb(traj, k, ctx.rng, schema=schema)
            if p is not None:
                return [self.row(ctx, self.ask(ctx, t, trajectory=format_trajectory(p.trajectory)),
                                 trajectory_reply(traj), prompt=t.id, perturbation=p.kind, detail=p.detail)]
        return []
