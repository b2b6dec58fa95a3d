"""How the stages that write SQL decode: the root `decoding` config group (conf/decoding/), and the per-database SQL
grammar artifact behind its constrained modes (issue 23; docs/decoding.md).

- `free`: today's decoding, no constraint.
- `sql`: the answer is the stage's answer format (a ```` ```sql ```` fence) around one SELECT of the database's
  grammar (`t2s.sql.grammar`, mode `sql`: aliases allowed, names restricted to the database's own).
- `sql_strict`: the same with the grammar's strict mode (no aliases, every column `<table>.<column>` of its table).

The root option (`decoding=sql`) is the default every SQL-writing stage takes through `decoding: ${decoding}` in its
YAML; one stage can differ: `fixer.decoding=free` (a mode name, default bounds) or
`+decoding@fixer.decoding=sql_strict` (a whole option, whose bounds `fixer.decoding.depth=3` then changes). A stage
builds its requests' constraint with `answer_constraint(env, example, decoding)`, which loads the database's grammar
(`SqlGrammarArtifact`, built once per database content, mode and bounds) and wraps it in the answer format; stages
list `grammar_artifacts(decoding)` in `artifacts()` so `t2s prepare` builds them ahead.

Stages whose replies are not (only) SQL build their reply formats from the pieces here, none of which knows a method:
`sql_reply_constraint` (a root rule of the stage's own around the database's grammar rules, e.g. `limited_select`: one
SELECT ending in `LIMIT 1..n`), `identifier` / `qualified_names` (a database's names as a reply writes them) and
`choice_list_constraint` (choices one per line or comma-separated, or an explicit "none").
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2s.artifacts import Artifact, Source
from t2s.llm.base import Constraint, GenParams, LLMRequest
from t2s.sql.grammar import GRAMMAR_VERSION, MODES, GrammarLimits, SqlGrammar, gbnf_literal, sql_grammar, trie

if TYPE_CHECKING:
    from t2s.env import Env
    from t2s.types import Example

#: the decoding modes (conf/decoding/<mode>.yaml)
DECODING_MODES = ("free", *MODES)

#: the answer format of the SQL prompts (zero_shot, few_shot, chase_fix: "the SQL in a ```sql code block"), which
#: `t2s.generation.parse_sql` reads
ANSWER_PREFIX = "```sql\n"
ANSWER_SUFFIX = "\n```"


@dataclass(frozen=True)
class Decoding(GrammarLimits):
    """A decoding mode (`mode`: free, sql or sql_strict), the bounds of its grammar (the `GrammarLimits` fields,
    unused by `free`) and `instruction`, a sentence the stages add to their prompt's system message under this mode
    (`instructed`; empty: the prompt is unchanged). Built from conf/decoding/<mode>.yaml; a stage also takes a bare
    mode name."""

    mode: str = "free"
    instruction: str = ""

    def __post_init__(self) -> None:
        if self.mode not in DECODING_MODES:
            raise ValueError(f"decoding mode {self.mode!r} is not one of {', '.join(DECODING_MODES)} "
                             f"(conf/decoding/, key `decoding.mode` or a stage's `decoding`)")
        super().__post_init__()

    @property
    def free(self) -> bool:
        return self.mode == "free"

    @property
    def limits(self) -> GrammarLimits:
        return GrammarLimits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GrammarLimits)})

    @classmethod
    def of(cls, value: Decoding | str | dict[str, Any] | None) -> Decoding:
        """A stage's `decoding` argument as a `Decoding`: one as is, a mode name with the default bounds, a mapping of
        fields (a config node built without Hydra's recursion), None for free decoding."""
        if value is None:
            return cls()
        if isinstance(value, Decoding):
            return value
        if isinstance(value, str):
            return cls(mode=value)
        if isinstance(value, dict):
            fields = {k: v for k, v in value.items() if not str(k).startswith("_")}
            unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"decoding: unknown key(s) {', '.join(sorted(unknown))}; the keys are those of "
                                 f"conf/decoding/sql.yaml")
            return cls(**fields)
        raise TypeError(f"decoding must be a conf/decoding option or a mode name ({', '.join(DECODING_MODES)}), got "
                        f"{type(value).__name__}")


class SqlGrammarArtifact(Artifact):
    """A database's SQL grammar in one mode and bounds (`grammar.gbnf`: the rules, no root; `names.json`: the
    tables and columns it allows), built from the database's introspected schema, keyed by its content."""

    name = "sql_grammar"
    version = GRAMMAR_VERSION

    def __init__(self, *, mode: str = "sql", limits: GrammarLimits | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"SqlGrammarArtifact mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.limits = limits or GrammarLimits()

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "limits": dataclasses.asdict(self.limits)}

    def build(self, source: Source, out: Path, env: Env) -> None:
        from t2s.db.introspect import introspect

        schema = introspect(source.path, source.id, n_samples=env.sample_values, n_rows=env.sample_rows,
                            cache_dir=Path(env.cache_dir) / "schemas")
        grammar = sql_grammar(schema, self.mode, self.limits)
        (out / "grammar.gbnf").write_text(grammar.rules, encoding="utf-8")
        (out / "names.json").write_text(json.dumps({"db_id": grammar.db_id, "tables": list(grammar.tables),
                                                    "columns": list(grammar.columns)}, indent=1), encoding="utf-8")

    def load(self, source: Source, path: Path) -> SqlGrammar:
        names = json.loads((path / "names.json").read_text(encoding="utf-8"))
        rules = (path / "grammar.gbnf").read_text(encoding="utf-8")
        return SqlGrammar(db_id=names["db_id"], mode=self.mode, rules=rules, tables=tuple(names["tables"]),
                          columns=tuple(names["columns"]), limits=self.limits)


def grammar_artifacts(decoding: Decoding) -> list[Artifact]:
    """The artifacts a stage decoding this way needs (none for free decoding)."""
    return [] if decoding.free else [SqlGrammarArtifact(mode=decoding.mode, limits=decoding.limits)]


def database_grammar(env: Env, example: Example, decoding: Decoding) -> SqlGrammar:
    """The SQL grammar of `example`'s database for a constrained `decoding` (built once per database content)."""
    if decoding.free:
        raise ValueError("free decoding has no grammar")
    grammar: SqlGrammar = env.artifact(SqlGrammarArtifact(mode=decoding.mode, limits=decoding.limits), example)
    return grammar


def answer_constraint(env: Env, example: Example, decoding: Decoding, *, prefix: str = ANSWER_PREFIX,
                      suffix: str = ANSWER_SUFFIX, lead: str | None = None, bare: bool = False,
                      label: str = "") -> Constraint | None:
    """The constraint of an SQL answer to `example` under `decoding`: None for free decoding; else the database's
    grammar wrapped in the answer format (`prefix`, the SQL, an optional `;`, `suffix`), after `lead` (a GBNF rule
    body for what may come first, e.g. a reflection), or with `bare` also the SQL alone. `label` names the reply
    format in messages."""
    if decoding.free:
        return None
    grammar = database_grammar(env, example, decoding)
    name = f"{label or 'answer'}:{decoding.mode}:{example.db_id}"
    return Constraint.grammar(grammar.wrap(prefix, suffix, lead=lead, bare=bare), name=name)


def instructed(request: LLMRequest, decoding: Decoding) -> LLMRequest:
    """`request` with `decoding.instruction` appended to its system message (to the first message when there is no
    system message); unchanged when the instruction is empty, so free and `sql` prompts keep their text."""
    if not decoding.instruction or not request.messages:
        return request
    messages = list(request.messages)
    k = next((i for i, (role, _) in enumerate(messages) if role == "system"), 0)
    role, content = messages[k]
    messages[k] = (role, f"{content} {decoding.instruction}".strip())
    return dataclasses.replace(request, messages=tuple(messages))


def constrained(params: GenParams, constraint: Constraint | None) -> GenParams:
    """`params` with `constraint` (unchanged when it is None, so free decoding keeps today's cache keys)."""
    return params if constraint is None else dataclasses.replace(params, constraint=constraint)


# ------------------------------------------------------------------------------------- pieces of reply formats
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: closing character of each quote an identifier may be written in
_CLOSE = {"`": "`", '"': '"', "[": "]"}


def identifier(names: Sequence[str], *, quote: str = "`", any_case: bool = True,
               reserved: frozenset[str] | set[str] = frozenset()) -> str:
    """A GBNF expression matching any of `names` as a reply writes an identifier: bare when the name is plain
    (letters, digits, `_`, not in `reserved`, compared in lower case), else in `quote` (`` ` ``, `"` or `[`; the
    closing quote doubled inside, as SQL and the trajectory text escape it). With `any_case` letters match in any
    case (names compared without case); else as written. Terminals only, so it can be a lexeme (an UPPERCASE rule)."""
    if quote not in _CLOSE:
        raise ValueError(f"identifier: quote must be one of {', '.join(_CLOSE)}, got {quote!r}")
    close = _CLOSE[quote]
    bare = [n for n in names if _PLAIN.match(n) and n.lower() not in reserved]
    quoted = [n.replace(close, close * 2) for n in names if n and n not in bare]
    alts = [trie(bare, any_case=any_case)] if bare else []
    if quoted:
        alts.append(f"{gbnf_literal(quote)} {trie(quoted, any_case=any_case)} {gbnf_literal(close)}")
    if not alts:
        raise ValueError("identifier: no names")
    return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"


def qualified_names(columns: Mapping[str, Sequence[str]], *, quote: str = "`", any_case: bool = True,
                    reserved: frozenset[str] | set[str] = frozenset()) -> str:
    """A GBNF expression matching `<table>.<column>` with each table's own columns (`columns`: table -> its
    columns), names written as `identifier` writes them. Terminals only (a lexeme when put in an UPPERCASE rule)."""
    alts = [f"{identifier([t], quote=quote, any_case=any_case, reserved=reserved)} \".\" "
            f"{identifier(list(cols), quote=quote, any_case=any_case, reserved=reserved)}"
            for t, cols in columns.items() if cols]
    if not alts:
        raise ValueError("qualified_names: no table with columns")
    return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"


def choice_list_constraint(choice: str, *, most: int, empty: str | None = None, name: str = "") -> Constraint:
    """A reply listing choices (`choice`: a GBNF expression of terminals, e.g. `qualified_names`), at least one and at
    most `most`, one per line or separated by commas on a line (`a.x, b.y`: both are what the column-choice parser
    reads, and small models write the comma list even when the prompt asks for lines), no bullets and nothing else;
    or, with `empty`, that word alone (an explicit empty choice, "NONE")."""
    if most < 1:
        raise ValueError(f"choice_list_constraint: most must be >= 1, got {most}")
    lines = "CHOICE" if most == 1 else f'CHOICE (SEP CHOICE){{0,{most - 1}}}'
    root = f"{lines} | {gbnf_literal(empty)}" if empty else lines
    sep = '' if most == 1 else 'SEP ::= "\\n" | ", " | ","\n'
    return Constraint.grammar(f"root ::= {root}\nCHOICE ::= {choice}\n{sep}", name=name)


def limited_select(most: int) -> str:
    """A GBNF expression, over the rules of a database's SQL grammar, of one SELECT (no set operation) that ends in
    `LIMIT k` with 1 <= k <= `most` (an optional ORDER BY before it): an exploratory query that reads a few rows."""
    if most < 1:
        raise ValueError(f"limited_select: most must be >= 1, got {most}")
    counts = " | ".join(gbnf_literal(str(k)) for k in range(1, most + 1))
    return f"select-0 (WS order-0)? WS KW-LIMIT WS ({counts})"


def sql_reply_constraint(env: Env, example: Example, decoding: Decoding, root: str, *, rules: str = "",
                         label: str = "") -> Constraint | None:
    """The constraint of a reply in a stage's own format holding SQL of `example`'s database: None for free decoding;
    else `root ::= <root>` (a GBNF body that may name the grammar's rules: `query` for one SELECT statement, or
    `limited_select(n)`), `rules` (the format's own rules, UPPERCASE for lexemes) and the database's grammar rules
    under `decoding`. `label` names the reply format in messages."""
    if decoding.free:
        return None
    grammar = database_grammar(env, example, decoding)
    extra = rules if not rules or rules.endswith("\n") else rules + "\n"
    name = f"{label or 'reply'}:{decoding.mode}:{example.db_id}"
    return Constraint.grammar(f"root ::= {root}\n{extra}{grammar.rules}", name=name)
