"""LLM column choice (the paper's "column selection"; named apart from `t2s.select`, which picks the final SQL), after
the iterative column selection of "A Preview of XiYan-SQL: A Multi-Generator
Ensemble Framework for Text-to-SQL" (arXiv 2411.08599): building the request, reading the reply.

`column_choice_request` renders a column-selection prompt template (`dual_link_s1_v1`, `dual_link_s2_v1`) over candidate
columns; `parse_column_choice` reads the columns the model chose back, keeping only candidates. The two are separate so
a column-selection model could be trained on exactly the prompts it is served (the SFT data builders call
`column_choice_request` too) and so the parser is tested on its own.

What the parser accepts: `table.column` references anywhere in the reply (bare, quoted with "", `` or [], in JSON
lists, with bullets or numbers); a reference whose table is wrong but whose column is a candidate's (small models
often write `pets.fname` for `student.fname`) counts for every candidate column of that name; and comma- or
line-separated bare column names when exactly one candidate has that name.
"NONE" alone (or an empty JSON list) is an explicit empty choice, and so is a reply that names only columns
given as `selected` (pass 2 models often repeat the pass-1 columns instead of saying NONE). Anything else (prose, SQL that names no
candidate, the random tiny model's noise) is `junk`: the caller falls back instead of trusting it.

`COLUMNS_REPLY` pairs the parser with the reply it reads (`reply:` in `dual_link_s1_v1.yaml` / `dual_link_s2_v1.yaml`):
one `table.column` per line (a name that is not a plain identifier in double quotes), or NONE for no column. The
dual linker's constrained decoding (`t2s.decoding.choice_list_constraint`) accepts that form and the comma list the
parser also reads (`a.x, b.y` on one line), when the columns are candidates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from t2s.context.fields import Field
from t2s.db.types import DatabaseSchema
from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import PromptTemplate, ReplyFormat
from t2s.types import Task

#: characters of one sample value shown after a candidate column
DETAIL_SAMPLE_CHARS = 30

_IDENT = r'(?:"[^"\n]+"|`[^`\n]+`|\[[^\]\n]+\]|[A-Za-z_][\w]*)'
_DOTTED = re.compile(rf"({_IDENT})\s*\.\s*({_IDENT})")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class ColumnChoice:
    """Columns chosen by the model, as (table, column) in the schema's spelling, in reply order, and `status`:
    "ok" (at least one candidate named), "none" (an explicit empty choice) or "junk" (nothing usable)."""

    columns: tuple[tuple[str, str], ...]
    status: str


def column_detail(schema: DatabaseSchema, table: str, column: str, *, samples: int = 2, summary: str = "") -> str:
    """What follows `table.column` in a candidate list: " (type; description or summary; e.g. v1, v2)", or "" ."""
    t = schema.table(table)
    c = t.column(column) if t is not None else None
    if c is None:
        return ""
    parts = [c.type.lower()] if c.type else []
    text = " ".join((summary or c.description).split())
    if text:
        parts.append(text)
    vals = [" ".join(str(v).split())[:DETAIL_SAMPLE_CHARS] for v in c.samples[:samples]]
    vals = [v for v in vals if v]
    if vals:
        parts.append("e.g. " + ", ".join(vals))
    return f" ({'; '.join(parts)})" if parts else ""


def column_choice_request(template: PromptTemplate, task: Task, schema: DatabaseSchema, fields: Sequence[Field],
                      params: GenParams, *, selected: Sequence[tuple[str, str]] = (), use_evidence: bool = True,
                      samples: int = 2) -> LLMRequest:
    """The column-selection request for one question: the candidate `fields` (with type and sample values from
    `schema`), the columns `selected` already (pass 2), the evidence when used, the question."""
    items = [{"table": f.table, "column": f.column, "detail": column_detail(schema, f.table, f.column, samples=samples)}
             for f in fields]
    ex = task.example
    blocks = {"fields_block": template.block("fields", items)}
    if "evidence" in template.blocks:
        blocks["evidence_block"] = template.block(
            "evidence", [{"evidence": ex.evidence}] if use_evidence and ex.evidence else [])
    if "selected" in template.blocks:
        blocks["selected_block"] = template.block("selected", [{"table": t, "column": c} for t, c in selected])
    fields_needed = template.fields()
    return LLMRequest.chat(template.render(question=ex.question, **{k: v for k, v in blocks.items() if k in fields_needed}),
                           params)


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] + name[-1] in ('""', "``", "[]"):
        return name[1:-1]
    return name


def parse_column_choice(text: str, candidates: Sequence[Field], selected: Sequence[tuple[str, str]] = ()) -> ColumnChoice:
    """The candidate columns a reply names (see the module docstring); never raises. `selected`: columns chosen
    before (pass 2), which are not candidates; a reply naming only those is an empty choice ("none")."""
    by_key = {f.key: f for f in candidates}
    by_column: dict[str, list[Field]] = {}
    for f in candidates:
        by_column.setdefault(f.column.lower(), []).append(f)
    chosen: list[tuple[str, str]] = []
    known_before = {(t.lower(), c.lower()) for t, c in selected}

    def take(f: Field) -> None:
        if (f.table, f.column) not in chosen:
            chosen.append((f.table, f.column))

    for m in _DOTTED.finditer(text or ""):
        key = (_unquote(m.group(1)).strip().lower(), _unquote(m.group(2)).strip().lower())
        if key in by_key:
            take(by_key[key])
        elif key not in known_before:
            for f in by_column.get(key[1], []):  # wrong table, known column
                take(f)
    for line in (text or "").splitlines():
        for item in re.split(r"[,;]", line):
            bare = _BULLET.sub("", item).strip().strip("'\"`[]").strip()
            owners = by_column.get(bare.lower(), [])
            if len(owners) == 1:
                take(owners[0])
    if chosen:
        return ColumnChoice(columns=tuple(chosen), status="ok")
    if selected:
        before = [Field(table=t, column=c, text="") for t, c in selected]
        if parse_column_choice(text, before).status == "ok":
            return ColumnChoice(columns=(), status="none")
    stripped = (text or "").strip().strip("`").strip()
    if re.fullmatch(r"(?is)(?:none\.?|\[\s*\]|no (?:other|additional) columns?\.?)", stripped):
        return ColumnChoice(columns=(), status="none")
    return ColumnChoice(columns=(), status="junk")


def _quoted(name: str) -> str:
    return name if _PLAIN.match(name) else '"' + name + '"'


def write_column_choice(*, columns: Sequence[str]) -> str:
    """The canonical column-list reply: each `"table.column"` on its own line (a part that is not a plain identifier
    in double quotes, as `t2s.decoding.qualified_names(quote='"')` writes it), or NONE for an empty choice."""
    lines = []
    for ref in columns:
        table, dot, column = ref.partition(".")
        if not dot or not table or not column:
            raise ValueError(f"a column choice is written table.column, got {ref!r}")
        lines.append(f"{_quoted(table)}.{_quoted(column)}")
    return "\n".join(lines) if lines else "NONE"


def read_column_choice(text: str) -> list[str]:
    """The columns a reply chooses as `"table.column"` strings, read by `parse_column_choice` with the references
    the reply itself names as the candidates (a reply format knows no request's candidates): [] for NONE (and for
    junk, which the stage tells apart with its own candidates)."""
    named = [Field(table=_unquote(m.group(1)).strip(), column=_unquote(m.group(2)).strip(), text="")
             for m in _DOTTED.finditer(text or "")]
    return [f"{t}.{c}" for t, c in parse_column_choice(text, named).columns]


#: the replies of `dual_link_s1_v1` and `dual_link_s2_v1`: candidate columns, one per line, or NONE
COLUMNS_REPLY = ReplyFormat(fields=("columns",), write=write_column_choice, read=read_column_choice,
                            example={"columns": ["singer.name", "singer.Home Town"]})
