"""The tournament's judge prompt and the parsing of its reply.

The template is `tournament_v1.yaml` beside this module; the messages are built by `t2s.select.pair_messages`, which the
pairwise selection-model training rows (`rows.py` beside this module, `select_pair`) share, so a trained judge is asked what it
learned. The judge answers "A" or "B" (scored by log-probability when the backend can, else generated and parsed here);
`CHOICE_REPLY` pairs `parse_choice` with that one-letter reply (`reply:` in `tournament_v1.yaml`).
"""

from __future__ import annotations

import re

from t2s.prompts import ReplyFormat

_ANSWER = re.compile(r"\b(?:candidate\s*)?([AB])\b", re.IGNORECASE)


def parse_choice(text: str) -> str | None:
    """"A" or "B" from a judge's reply (the first standalone letter, "Candidate B" included), else None."""
    m = _ANSWER.search(text.strip())
    return m.group(1).upper() if m else None


def write_choice(*, choice: str) -> str:
    """The canonical judge reply: the letter alone (also the continuation scored under log-probability judging)."""
    return choice


#: the judge's replies: one letter, A or B
CHOICE_REPLY = ReplyFormat(fields=("choice",), write=write_choice, read=parse_choice, example={"choice": "B"})
