"""The database profile, after "Automatic Metadata Extraction for Text-to-SQL" (arXiv 2505.19988): per-column
statistics, sketches, optional LLM summaries, and the descriptions a dataset supplies.

`profile_database` makes one pass of simple SQL per column over a read-only connection:

- `rows`, `nulls`, `min` / `max` (SQLite's ordering, so mixed-type columns compare by type class);
- `distinct`: exact `COUNT(DISTINCT)` when the table has at most `exact_distinct_limit` rows, else a datasketch
  `HyperLogLog` estimate over the whole column (`distinct_exact` says which);
- `top_values`: the `top_k` most frequent non-null values with their counts (ties by value);
- `shapes` and `lengths`: over the first `scan_rows` non-null values, the share of each value shape (integer, decimal,
  date, datetime, time, alpha, alnum, empty, other, blob) and the min / max / mean length of the text form;
- `minhash`: the hash values of a datasketch `MinHash` (`num_perm` permutations) over the lower-cased distinct values
  of that scan, so column overlap (join candidates, duplicate columns) can be estimated with Jaccard.

Optionally a named LLM (`summary_llm`) writes a short summary (one line, for schema linking) and a long one (value
patterns and formats, for generation) per column from its profile text; the requests go out as one batch through
`env.generate`, charged to a per-database build task (offline cost, not any question's), and the answers are stored
in the profile, so they are cached with it. The prompt is `t2s/prompts/column_summary_v1.yaml`.

Dataset-supplied descriptions are loaded by `load_descriptions`: BIRD's `database_description/<table>.csv` beside
the database file (columns `original_column_name, column_name, column_description, data_format,
value_description`; UTF-8, with a BOM or not, else Latin-1) and a KaggleDBQA-style `tables.json` whose database
entry has `column_descriptions` parallel to `column_names_original` (and optionally `table_descriptions`). They are
attached to the profile's columns (`description`, `value_description`) and hashed into the artifact's source, so an
edited description file rebuilds the profile.

`ProfileArtifact` is the cached form (`t2s.artifacts`); `enrich_schema` turns a profile into the `Column.description`
and `Column.samples` the schema formats render.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2s.artifacts import Artifact, Source, library_version
from t2s.db.introspect import connect_readonly, introspect, quote_sqlite_identifier
from t2s.db.types import DatabaseSchema
from t2s.files import atomic_write, content_hash
from t2s.prompts.replies import ReplyFormat
from t2s.records import JsonRecord

if TYPE_CHECKING:
    from t2s.env import Env
    from t2s.types import Example

log = logging.getLogger("t2s")

PROFILE_FILE = "profile.json"
#: text values longer than this are cut (with "...") in top values, min and max
VALUE_MAX_CHARS = 100
SUMMARY_PROMPT = "column_summary_v1"
SUMMARY_MODES = ("short", "long", "none")

_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("integer", re.compile(r"[+-]?\d+\Z")),
    ("decimal", re.compile(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?\Z")),
    ("datetime", re.compile(r"\d{4}-\d{1,2}-\d{1,2}[ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\Z")),
    ("date", re.compile(r"(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})\Z")),
    ("time", re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\Z")),
    ("alpha", re.compile(r"[^\W\d_][^\W\d_ .,'&()-]*([ .,'&()-]+[^\W\d_]*)*\Z")),
    ("alnum", re.compile(r"[\w .,'&()/#:+-]+\Z")),
)


def value_shape(value: Any) -> str:
    """The shape class of one non-null value: integer, decimal, datetime, date, time, alpha (letters with spaces and
    punctuation), alnum (letters, digits and punctuation), empty, blob or other. Numbers stored as text get the
    numeric class."""
    if isinstance(value, bool) or isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "blob"
    s = str(value).strip()
    if not s:
        return "empty"
    for name, pattern in _SHAPES:
        if pattern.match(s):
            return name
    return "other"


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return f"<blob {len(bytes(v))} bytes>"
    if isinstance(v, str) and len(v) > VALUE_MAX_CHARS:
        return v[:VALUE_MAX_CHARS] + "..."
    return v


@dataclass
class ColumnProfile(JsonRecord):
    """Statistics and descriptions of one column (see the module docstring for how each figure is computed).

    `top_values` holds `[value, count]` pairs, most frequent first; `shapes` maps a shape class to its share of the
    scanned values (0..1); `lengths` has `min`, `max`, `mean` of the values' text length; `minhash` the MinHash hash
    values (empty for a column without values). `description` / `value_description` come from the dataset;
    `short_summary` / `long_summary` from the summary LLM ("" when none was asked for or its answer did not parse).
    """

    table: str
    column: str
    type: str = ""
    primary_key: bool = False
    rows: int = 0
    nulls: int = 0
    distinct: int = 0
    distinct_exact: bool = True
    min: Any = None
    max: Any = None
    top_values: list[list[Any]] = field(default_factory=list)
    shapes: dict[str, float] = field(default_factory=dict)
    lengths: dict[str, float] = field(default_factory=dict)
    minhash: list[int] = field(default_factory=list)
    description: str = ""
    value_description: str = ""
    short_summary: str = ""
    long_summary: str = ""

    def main_shape(self) -> str:
        """The most common shape class ("" for a column without values)."""
        return max(self.shapes.items(), key=lambda kv: (kv[1], kv[0]))[0] if self.shapes else ""

    def jaccard(self, other: ColumnProfile) -> float:
        """Estimated Jaccard similarity of the two columns' (scanned, lower-cased) distinct values."""
        if not self.minhash or len(self.minhash) != len(other.minhash):
            return 0.0
        return sum(a == b for a, b in zip(self.minhash, other.minhash)) / len(self.minhash)


@dataclass
class DatabaseProfile(JsonRecord):
    """The profile of one database: its columns in schema order, table descriptions from the dataset, and which
    LLM (by name and config fingerprint) and prompt wrote the summaries ("" when none)."""

    db_id: str
    columns: list[ColumnProfile] = field(default_factory=list)
    table_descriptions: dict[str, str] = field(default_factory=dict)
    summary_llm: str = ""
    summary_prompt: str = ""

    def column(self, table: str, column: str) -> ColumnProfile | None:
        """The profile of `table.column` (case-insensitive), or None."""
        t, c = table.lower(), column.lower()
        return next((p for p in self.columns if p.table.lower() == t and p.column.lower() == c), None)


# ---------------------------------------------------------------------- statistics


def _scalar(conn: sqlite3.Connection, sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    return row[0] if row else None


def profile_column(conn: sqlite3.Connection, table: str, column: str, *, rows: int, top_k: int = 10,
                   exact_distinct_limit: int = 200_000, scan_rows: int = 10_000, num_perm: int = 64) -> ColumnProfile:
    """The statistics of one column (descriptions and summaries left empty); `rows` is the table's row count."""
    from datasketch import HyperLogLog, MinHash

    t, c = quote_sqlite_identifier(table), quote_sqlite_identifier(column)
    count, lo, hi = conn.execute(f"SELECT COUNT({c}), MIN({c}), MAX({c}) FROM {t}").fetchone()
    prof = ColumnProfile(table=table, column=column, rows=rows, nulls=rows - int(count or 0),
                         min=_jsonable(lo), max=_jsonable(hi))
    if not count:
        return prof
    if rows <= exact_distinct_limit:
        prof.distinct = int(_scalar(conn, f"SELECT COUNT(DISTINCT {c}) FROM {t}") or 0)
    else:
        hll = HyperLogLog(p=14)
        for (v,) in conn.execute(f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL"):
            hll.update(repr(v).encode("utf-8", "replace"))
        prof.distinct, prof.distinct_exact = int(round(hll.count())), False
    if top_k > 0:
        prof.top_values = [[_jsonable(v), int(n)] for v, n in conn.execute(
            f"SELECT {c}, COUNT(*) AS n FROM {t} WHERE {c} IS NOT NULL GROUP BY {c} ORDER BY n DESC, {c} LIMIT {int(top_k)}")]
    scanned = [v for (v,) in conn.execute(f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL LIMIT {int(scan_rows)}")]
    if scanned:
        shapes: dict[str, int] = {}
        for v in scanned:
            s = value_shape(v)
            shapes[s] = shapes.get(s, 0) + 1
        prof.shapes = {k: round(n / len(scanned), 3) for k, n in sorted(shapes.items())}
        lengths = [len(bytes(v)) if isinstance(v, (bytes, memoryview)) else len(str(v)) for v in scanned]
        prof.lengths = {"min": min(lengths), "max": max(lengths), "mean": round(sum(lengths) / len(lengths), 2)}
        distinct = sorted({str(v).strip().lower() for v in scanned if not isinstance(v, (bytes, memoryview))})
        if distinct:
            mh = MinHash(num_perm=num_perm, seed=1)
            mh.update_batch([s.encode("utf-8", "replace") for s in distinct])
            prof.minhash = [int(h) for h in mh.hashvalues]
    return prof


def profile_database(db_path: str, db_id: str, *, top_k: int = 10, exact_distinct_limit: int = 200_000,
                     scan_rows: int = 10_000, num_perm: int = 64) -> DatabaseProfile:
    """The statistics of every column of the SQLite database at `db_path`, in schema order (no descriptions)."""
    schema = introspect(db_path, db_id, n_samples=0)
    conn = connect_readonly(db_path)
    out = DatabaseProfile(db_id=db_id)
    try:
        for table in schema.tables:
            try:
                rows = int(_scalar(conn, f"SELECT COUNT(*) FROM {quote_sqlite_identifier(table.name)}") or 0)
            except sqlite3.DatabaseError as e:
                log.warning("%s: cannot count the rows of %s (%s); its columns get empty profiles", db_id, table.name, e)
                rows = -1
            for col in table.columns:
                if rows < 0:
                    prof = ColumnProfile(table=table.name, column=col.name)
                else:
                    try:
                        prof = profile_column(conn, table.name, col.name, rows=rows, top_k=top_k,
                                              exact_distinct_limit=exact_distinct_limit, scan_rows=scan_rows,
                                              num_perm=num_perm)
                    except sqlite3.DatabaseError as e:
                        log.warning("%s: cannot profile %s.%s (%s); left empty", db_id, table.name, col.name, e)
                        prof = ColumnProfile(table=table.name, column=col.name, rows=rows)
                prof.type, prof.primary_key = col.type, col.primary_key
                out.columns.append(prof)
    finally:
        conn.close()
    return out


# ---------------------------------------------------------------------- dataset-supplied descriptions


@dataclass
class Descriptions:
    """Descriptions a dataset supplies for one database: `columns[(table_lower, column_lower)] = (description,
    value_description)` and `tables[table_lower] = description`; `files` lists what they were read from."""

    columns: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _clean(text: Any) -> str:
    return " ".join(str(text or "").split())


def bird_description_files(db_path: str | Path) -> list[Path]:
    """BIRD's `database_description/*.csv` beside the database file, sorted by name (empty when there are none)."""
    folder = Path(db_path).parent / "database_description"
    return sorted(folder.glob("*.csv")) if folder.is_dir() else []


def read_bird_descriptions(db_path: str | Path) -> Descriptions:
    """The column descriptions of BIRD's `database_description/<table>.csv` files (one file per table, the table
    named by the file stem). The description joins the expanded column name (when it says more than the original
    name) and `column_description`; `value_description` joins `data_format` and `value_description`."""
    out = Descriptions()
    for path in bird_description_files(db_path):
        reader = csv.DictReader(io.StringIO(_read_text(path)))
        fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
        if "original_column_name" not in fields:
            log.warning("%s has no `original_column_name` column (columns: %s); skipped", path, reader.fieldnames)
            continue
        out.files.append(str(path))

        def get(row: dict[str, Any], key: str, fields: dict[str, Any] = fields) -> str:
            return _clean(row.get(fields.get(key, ""), ""))

        for row in reader:
            original = get(row, "original_column_name")
            if not original:
                continue
            expanded, desc = get(row, "column_name"), get(row, "column_description")
            parts = [expanded] if expanded and expanded.lower() != original.lower() else []
            if desc and desc.lower() not in {p.lower() for p in parts} and desc.lower() != original.lower():
                parts.append(desc)
            fmt, values = get(row, "data_format"), get(row, "value_description")
            value_parts = ([f"format: {fmt}"] if fmt else []) + ([values] if values else [])
            out.columns[(path.stem.lower(), original.lower())] = ("; ".join(parts), "; ".join(value_parts))
    return out


@functools.lru_cache(maxsize=8)
def _tables_file(path: str, size: int, mtime_ns: int) -> dict[str, dict[str, Any]]:
    entries = json.loads(_read_text(Path(path)))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of database entries (Spider / KaggleDBQA tables.json format)")
    return {str(e.get("db_id")): e for e in entries if isinstance(e, dict)}


def _tables_entry(tables_json: str | Path, db_id: str) -> dict[str, Any] | None:
    """The entry of `db_id` in a tables.json (the parsed file is memoized while it is unchanged)."""
    path = Path(tables_json)
    if not path.is_file():
        raise FileNotFoundError(f"descriptions file {path} (profile `tables_json`) does not exist; fix the path or "
                                f"set it to null")
    st = path.stat()
    return _tables_file(str(path.resolve()), st.st_size, st.st_mtime_ns).get(db_id)


def read_tables_json_descriptions(tables_json: str | Path, db_id: str) -> Descriptions:
    """The column (and table) descriptions of `db_id` in a KaggleDBQA-style `tables.json`: `column_descriptions`
    parallel to `column_names_original` (each a string or a `[table_index, text]` pair), `table_descriptions`
    parallel to `table_names_original`. An entry without them gives no descriptions (Spider's own tables.json)."""
    out = Descriptions()
    entry = _tables_entry(tables_json, db_id)
    if entry is None:
        return out
    tables = entry.get("table_names_original") or entry.get("table_names") or []
    columns = entry.get("column_names_original") or entry.get("column_names") or []
    descs = entry.get("column_descriptions") or []
    if descs and len(descs) != len(columns):
        raise ValueError(f"{tables_json}, db_id {db_id!r}: {len(descs)} column_descriptions for {len(columns)} columns; "
                         f"they must be parallel to column_names_original")
    for (ti, name), desc in zip(columns, descs):
        text = desc[-1] if isinstance(desc, list) else desc
        if 0 <= ti < len(tables) and _clean(text):
            out.columns[(str(tables[ti]).lower(), str(name).lower())] = (_clean(text), "")
    for name, desc in zip(tables, entry.get("table_descriptions") or []):
        if _clean(desc):
            out.tables[str(name).lower()] = _clean(desc)
    if descs or out.tables:
        out.files.append(str(tables_json))
    return out


def load_descriptions(db_path: str | Path, db_id: str, tables_json: str | None = None) -> Descriptions:
    """Every dataset-supplied description of a database: BIRD's CSV files beside it, then (overriding) the
    `tables_json` entry's descriptions when a file is given."""
    out = read_bird_descriptions(db_path)
    if tables_json:
        extra = read_tables_json_descriptions(tables_json, db_id)
        out.columns.update(extra.columns)
        out.tables.update(extra.tables)
        out.files += extra.files
    return out


def attach_descriptions(profile: DatabaseProfile, descriptions: Descriptions) -> None:
    """Copy descriptions onto the profile's columns and tables (names matched case-insensitively)."""
    for col in profile.columns:
        found = descriptions.columns.get((col.table.lower(), col.column.lower()))
        if found:
            col.description, col.value_description = found
    profile.table_descriptions = {t.table: d for t in _tables_of(profile)
                                  if (d := descriptions.tables.get(t.table.lower()))}


def _tables_of(profile: DatabaseProfile) -> list[ColumnProfile]:
    return list({c.table.lower(): c for c in profile.columns}.values())


# ---------------------------------------------------------------------- text views of a profile


def _lit(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(v)


_NUMERIC_TYPES = ("INT", "REAL", "FLOA", "DOUB", "NUM", "DEC", "BOOL")


def stats_note(col: ColumnProfile, *, max_values: int = 0) -> str:
    """A compact deterministic summary of a column's statistics for prompts, e.g.
    `12 distinct; 3 null; range 1990..2010; dates as text`: "unique" when every non-null value differs, the range for
    numeric and date-like columns, and the value shape only when it says more than the declared type (dates, times,
    numbers stored as text); with `max_values`, the most frequent values with their counts."""
    if col.rows <= 0:
        return "empty table" if col.rows == 0 else ""
    present = col.rows - col.nulls
    if present == 0:
        return "always null"
    parts = ["unique" if col.distinct_exact and col.distinct == present and present > 1
             else f"{'~' if not col.distinct_exact else ''}{col.distinct} distinct"]
    if col.nulls:
        parts.append(f"{col.nulls} null")
    shape = col.main_shape()
    if col.min is not None and shape in {"integer", "decimal", "date", "datetime", "time"} and col.min != col.max:
        parts.append(f"range {_lit(col.min)}..{_lit(col.max)}")
    numeric_type = any(k in col.type.upper() for k in _NUMERIC_TYPES)
    if shape in {"date", "datetime", "time"} or (shape in {"integer", "decimal"} and not numeric_type):
        share = col.shapes.get(shape, 0.0)
        parts.append(f"{'' if share >= 0.999 else 'mostly '}{shape}s as text")
    if max_values and col.top_values:
        parts.append("top: " + ", ".join(f"{_lit(v)} ({n})" for v, n in col.top_values[:max_values]))
    return "; ".join(parts)


def profile_text(col: ColumnProfile) -> str:
    """The multi-line description of a column the summary LLM reads (statistics, top values, descriptions)."""
    lines = [f"type: {col.type or 'untyped'}{' (primary key)' if col.primary_key else ''}",
             f"rows: {col.rows}; statistics: {stats_note(col) or 'no rows'}"]
    if col.min is not None:
        lines.append(f"min: {_lit(col.min)}; max: {_lit(col.max)}")
    if col.lengths:
        lines.append(f"text length: {col.lengths['min']}..{col.lengths['max']} (mean {col.lengths['mean']})")
    if col.shapes:
        lines.append("value shapes: " + ", ".join(f"{k} {v:.0%}" for k, v in sorted(col.shapes.items(), key=lambda kv: -kv[1])))
    if col.top_values:
        lines.append("most frequent values: " + ", ".join(f"{_lit(v)} ({n})" for v, n in col.top_values))
    if col.description:
        lines.append(f"dataset description: {col.description}")
    if col.value_description:
        lines.append(f"dataset value notes: {col.value_description}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- LLM summaries


_SHORT = re.compile(r"^\s*\**\s*short(?: summary)?\s*\**\s*:\s*(.+)$", re.I | re.M)
_LONG = re.compile(r"^\s*\**\s*long(?: summary)?\s*\**\s*:\s*(.+?)(?=^\s*\**\s*short(?: summary)?\s*\**\s*:|\Z)",
                   re.I | re.M | re.S)


def parse_summary(text: str) -> tuple[str, str]:
    """(short, long) from a summary reply with `Short: ...` and `Long: ...` lines; "" for a part that is missing.
    The short one is cut at 200 characters, the long one at 800."""
    short = _SHORT.search(text or "")
    long = _LONG.search(text or "")
    return (_clean(short.group(1))[:200] if short else "", _clean(long.group(1))[:800] if long else "")


def write_summary(*, short: str, long: str) -> str:
    """The canonical summary reply: a `Short:` line and a `Long:` line."""
    return f"Short: {short}\nLong: {long}"


def _read_summary(text: str) -> dict[str, str]:
    short, long = parse_summary(text)
    return {"short": short, "long": long}


#: the replies of `column_summary_v1` (its `reply:`): a short and a long summary, read by `parse_summary`
SUMMARY_REPLY = ReplyFormat(fields=("short", "long"), write=write_summary, read=_read_summary,
                            example={"short": "customer segment code", "long": "Two codes, A1 and B2."})


def summarize_columns(profile: DatabaseProfile, env: Env, llm: str, db_path: str, *,
                      prompt: str = SUMMARY_PROMPT, max_new_tokens: int = 160) -> int:
    """Ask the LLM `llms.<llm>` for a short and a long summary of every column, in one batch, and store the parsed
    answers in the profile. The calls are charged to one build task per database (offline cost). Returns how many
    answers parsed."""
    from t2s.llm.base import GenParams, LLMRequest
    from t2s.prompts import load_prompt
    from t2s.types import Example, Task

    template = load_prompt(prompt)
    task = Task(example=Example(qid=f"profile:{profile.db_id}", question="", db_id=profile.db_id, db_path=db_path))
    params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
    columns_of = {}
    for c in profile.columns:
        columns_of.setdefault(c.table, []).append(c.column)
    requests = [(task, LLMRequest.chat(template.render(
        db_id=profile.db_id, table=c.table, column=c.column, table_columns=", ".join(columns_of[c.table]),
        profile=profile_text(c)), params)) for c in profile.columns]
    parsed = 0
    for col, resp in zip(profile.columns, env.generate(llm, requests)):
        col.short_summary, col.long_summary = parse_summary(resp.text)
        parsed += bool(col.short_summary or col.long_summary)
    profile.summary_llm, profile.summary_prompt = llm, template.id
    return parsed


# ---------------------------------------------------------------------- the artifact


def _llm_fingerprint(env: Env, name: str) -> str:
    configs = getattr(env.llms, "configs", {})
    if name not in configs:
        declared = ", ".join(sorted(str(k) for k in configs)) or "none"
        raise KeyError(f"summary_llm={name!r} names an LLM that is not declared under `llms:` (declared: {declared}); "
                       f"set schema_format.summary_llm to one of them or null")
    from omegaconf import OmegaConf

    node = configs[name]
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ProfileArtifact(Artifact):
    """The database profile as a cached artifact (`profile.json`), one per database and parameters.

    Its source hashes the database file together with the description files that apply (BIRD CSVs beside it, the
    `tables_json` entry), so editing a description rebuilds it. With `summary_llm`, the key also holds a
    fingerprint of that LLM's config (`llm_fingerprint`, computed from the run's `llms:`), so summaries from another
    model are never reused. The datasketch major version is in the key (the MinHash hash values depend on it).
    """

    name = "profile"
    version = 1

    def __init__(self, *, top_k: int = 10, exact_distinct_limit: int = 200_000, scan_rows: int = 10_000,
                 num_perm: int = 64, tables_json: str | None = None, summary_llm: str | None = None,
                 llm_fingerprint: str = "", summary_prompt: str = SUMMARY_PROMPT) -> None:
        for key, value in (("top_k", top_k), ("scan_rows", scan_rows), ("num_perm", num_perm)):
            if value < 0 or (key == "num_perm" and value == 0):
                raise ValueError(f"profile {key} must be {'> 0' if key == 'num_perm' else '>= 0'}, got {value}")
        self.top_k, self.exact_distinct_limit, self.scan_rows, self.num_perm = top_k, exact_distinct_limit, scan_rows, num_perm
        self.tables_json = tables_json
        self.summary_llm = summary_llm
        self.llm_fingerprint = llm_fingerprint
        self.summary_prompt = summary_prompt

    @classmethod
    def for_env(cls, env: Env, *, summary_llm: str | None = None, **kwargs: Any) -> ProfileArtifact:
        """The artifact with the summary LLM's config fingerprint taken from the run's `llms:`."""
        fingerprint = _llm_fingerprint(env, summary_llm) if summary_llm else ""
        return cls(summary_llm=summary_llm, llm_fingerprint=fingerprint, **kwargs)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"top_k": self.top_k, "exact_distinct_limit": self.exact_distinct_limit,
                               "scan_rows": self.scan_rows, "num_perm": self.num_perm,
                               "tables_json": str(Path(self.tables_json).absolute()) if self.tables_json else None}
        if self.summary_llm:
            out.update(summary_llm=self.summary_llm, llm=self.llm_fingerprint, summary_prompt=self.summary_prompt)
        return out

    def libraries(self) -> dict[str, str]:
        return {"datasketch": library_version("datasketch")}

    def source(self, example: Example) -> Source:
        h = hashlib.sha256(content_hash(example.db_path).encode())
        for path in bird_description_files(example.db_path):
            h.update(f"\0{path.name}\0{content_hash(path)}".encode())
        if self.tables_json:
            entry = _tables_entry(self.tables_json, example.db_id)
            h.update(json.dumps(entry, sort_keys=True).encode())
        return Source(kind="database", id=example.db_id, path=example.db_path, content_hash=h.hexdigest())

    def build(self, source: Source, out: Path, env: Env) -> None:
        profile = profile_database(source.path, source.id, top_k=self.top_k, scan_rows=self.scan_rows,
                                   exact_distinct_limit=self.exact_distinct_limit, num_perm=self.num_perm)
        attach_descriptions(profile, load_descriptions(source.path, source.id, self.tables_json))
        if self.summary_llm:
            parsed = summarize_columns(profile, env, self.summary_llm, source.path, prompt=self.summary_prompt)
            log.info("%s: %d of %d column summaries parsed", source.id, parsed, len(profile.columns))
        atomic_write(out / PROFILE_FILE, json.dumps(profile.to_dict(), ensure_ascii=False, indent=1, default=str))

    def load(self, source: Source, path: Path) -> DatabaseProfile:
        profile = DatabaseProfile.from_dict(json.loads((path / PROFILE_FILE).read_text(encoding="utf-8")))
        profile.db_id = source.id
        return profile


# ---------------------------------------------------------------------- enriched schemas


def enrich_schema(schema: DatabaseSchema, profile: DatabaseProfile, *, summary: str = "short",
                  descriptions: bool = True, stats: bool = True, top_values: bool = True,
                  max_samples: int = 3) -> DatabaseSchema:
    """A copy of `schema` whose columns carry the profile: `description` = dataset description, then the LLM summary
    (`summary`: "short", "long" or "none"; a missing long summary falls back to the short one), then the statistics
    note (`stats`); `samples` = the `max_samples` most frequent values when `top_values` (else the introspected
    samples). Table descriptions come from the dataset. Columns without a profile are left as they are."""
    if summary not in SUMMARY_MODES:
        raise ValueError(f"summary must be one of {SUMMARY_MODES}, got {summary!r}")
    tables = []
    for table in schema.tables:
        cols = []
        for col in table.columns:
            prof = profile.column(table.name, col.name)
            if prof is None:
                cols.append(col)
                continue
            parts = []
            if descriptions:
                parts += [p for p in (col.description.strip() or prof.description, prof.value_description) if p]
            if summary == "long":
                parts.append(prof.long_summary or prof.short_summary)
            elif summary == "short":
                parts.append(prof.short_summary)
            if stats:
                parts.append(stats_note(prof))
            samples = [v for v, _ in prof.top_values[:max_samples]] if top_values and prof.top_values else col.samples
            cols.append(dataclasses.replace(col, description="; ".join(p for p in parts if p), samples=list(samples)))
        desc = table.description
        if descriptions and not desc.strip():
            desc = profile.table_descriptions.get(table.name, "")
        tables.append(dataclasses.replace(table, columns=cols, description=desc))
    return dataclasses.replace(schema, tables=tables, foreign_keys=list(schema.foreign_keys))
