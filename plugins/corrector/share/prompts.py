"""SHARE's prompts and the parsing of their replies.

The templates are the `share_*_v1.yaml` files beside this module: `share_bam_v1` (SQL -> action trajectory),
`share_sam_v1` (fill the masked schema references), `share_lom_v1` (repair the trajectory's logic) and
`share_regen_v1` (SQL from the question and the corrected trajectory; its reply is read with
`t2s.generation.parse_sql`, like every generator's). A reply that does not parse raises `TrajectoryError`, and the
corrector keeps the input candidate.

Each template names the format of its replies (`reply:` in its YAML, `t2s.prompts.ReplyFormat`): BAM and LOM
`TRAJECTORY_REPLY` (the trajectory in a ``` fence, read by `parse_trajectory_reply`), SAM `MASK_REPLY` (one numbered
reference per mask in a ``` fence, read by `parse_mask_answers`), the regeneration `t2s.generation.SQL_REPLY`. Each
writes what the stage's constrained decoding accepts (`trajectory/grammar.py`) when the answer is in the database.
"""

from __future__ import annotations

import re

from t2s_plugins.corrector.share.trajectory import (
    Trajectory,
    TrajectoryError,
    format_trajectory,
    mask_answers_reply,
    parse_trajectory,
)

from t2s.prompts import ReplyFormat

_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_STATEMENT = re.compile(r"^\s*[A-Za-z_]\w*\s*=\s*[A-Za-z_]\w*\s*\.")
_REF = re.compile(r"(?:`[^`]+`|[A-Za-z_]\w*)(?:\s*\.\s*(?:`[^`]+`|[A-Za-z_]\w*))?")
_NUMBERING = re.compile(r"^\s*(?:\d+\s*[.):]|[-*])\s*")


def reply_body(text: str) -> str:
    """The content of the reply's first code fence, or else the reply itself."""
    m = _FENCE.search(text)
    return m.group(1) if m and m.group(1).strip() else text


def parse_trajectory_reply(text: str) -> Trajectory:
    """The trajectory in a model's reply: the first code fence (or the whole reply), keeping only the lines that look
    like statements (`x = y.action(...)`), parsed strictly. Raises `TrajectoryError` when nothing parses."""
    lines = [ln for ln in reply_body(text).splitlines() if _STATEMENT.match(ln)]
    if not lines:
        raise TrajectoryError("the reply holds no trajectory statement (`name = source.action(...)`)")
    return parse_trajectory("\n".join(lines))


def parse_mask_answers(text: str) -> list[str]:
    """SAM's answers: one per non-empty line of the first fence (or the reply), numbering and a "[MASK] ->" or
    "[MASK] =" lead stripped; a line that is not one `table.column` or `table` reference is kept as written, so
    `fill_masks` rejects it (a reply that writes SQL instead of answers fills nothing)."""
    out = []
    for line in reply_body(text).splitlines():
        line = _NUMBERING.sub("", line.replace("[MASK]", " ")).strip()
        line = re.sub(r"^[\s=>:-]+", "", line).rstrip(" ,.;").strip()
        if line:
            out.append(re.sub(r"\s*\.\s*", ".", line) if _REF.fullmatch(line) else line)
    return out


def write_trajectory(*, trajectory: str) -> str:
    """The canonical BAM / LOM reply: the trajectory's text (one statement per line) alone in a ``` fence, the form
    `trajectory.grammar.trajectory_grammar` constrains to (for canonical text, what `trajectory_reply` writes for
    the training rows)."""
    return f"```\n{trajectory.strip()}\n```"


def read_trajectory(text: str) -> str:
    """The trajectory of a BAM / LOM reply as the corrector reads it (`parse_trajectory_reply`), in its canonical
    text form (`format_trajectory`); raises `TrajectoryError` when nothing parses."""
    return format_trajectory(parse_trajectory_reply(text))


#: the replies of `share_bam_v1` and `share_lom_v1`: a trajectory in a ``` fence (`parse_trajectory_reply`)
TRAJECTORY_REPLY = ReplyFormat(fields=("trajectory",), write=write_trajectory, read=read_trajectory,
                               example={"trajectory": "df1 = df.where(element = singer.country, filter = 'France')\n"
                                                      "res = df1.select(singer.name)"})


def write_mask_answers(*, answers: list[str]) -> str:
    """The canonical SAM reply: one reference per mask, numbered, in a ``` fence (`mask_answers_reply`, what the
    training rows write and `trajectory.grammar.mask_answers_grammar` constrains to)."""
    return mask_answers_reply(list(answers))


#: the replies of `share_sam_v1`: the masks' references in order (`parse_mask_answers`)
MASK_REPLY = ReplyFormat(fields=("answers",), write=write_mask_answers, read=parse_mask_answers,
                         example={"answers": ["singer.country", "singer.name"]})
