"""The field index: one text per column of a database, embedded with a named embedder, in a faiss index (an artifact).

A FAISS semantic index over field summaries, after "Automatic Metadata Extraction for Text-to-SQL" (arXiv
2505.19988); table and column names are embedded per database. Each column gets one text (`field_text`): its table
and column names as words (`SongName`, `song_name` -> "song name"), its declared type, the dataset's description when the schema carries
one, an optional summary (e.g. an LLM summary from the database profile; pass `summaries`), and a few sample values.
The vectors are L2-normalized, so the flat inner-product index ranks by cosine similarity; Spider and BIRD databases
have tens to hundreds of columns, where exact search takes microseconds.

The cache key holds the embedder's model id (its weights' hash), the text format's version, the number of sample
values and the summaries' id, so switching any of them rebuilds instead of reusing stale vectors. Because `t2s prepare`
asks a stage for its artifacts before the stage is set up, the artifact learns the model id from the environment
(`bind(env)`; `sources(env, ...)` and the linkers' `setup` call it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from t2s.artifacts import Artifact, Source, library_version
from t2s.db.introspect import introspect
from t2s.db.types import DatabaseSchema

if TYPE_CHECKING:
    from t2s.env import Env
    from t2s.types import Example

#: bump when `field_text` changes what it writes (part of the artifact key)
TEXT_VERSION = 1
#: characters of one sample value shown in a field text
SAMPLE_CHARS = 40

#: per-database summaries: {(table, column): text}, keys in any case
Summaries = Mapping[tuple[str, str], str]
#: gives the summaries of one database (e.g. from the profile artifact); None: no summaries
SummaryProvider = Callable[[Source, "Env"], Summaries]


def words(name: str) -> str:
    """An identifier as lower-case words: `SongName` / `song_name` / `Song-Name` -> "song name"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(re.split(r"[\W_]+", spaced)).strip().lower()


@dataclass(frozen=True)
class Field:
    """One column of a database in the field index: its table, column (the schema's spelling), and the indexed text."""

    table: str
    column: str
    text: str

    @property
    def key(self) -> tuple[str, str]:
        """`(table, column)` in lower case."""
        return self.table.lower(), self.column.lower()


def field_text(table: str, column: str, *, type: str = "", description: str = "", summary: str = "",
               samples: list[Any] | None = None, max_samples: int = 3) -> str:
    """The text embedded for one column (format version `TEXT_VERSION`): "<table words> <column words> (<type>):
    <description>. <summary>. values: v1, v2" with the empty parts left out. Deterministic."""
    head = f"{words(table)} {words(column)}".strip()
    if type:
        head += f" ({type.lower()})"
    parts = [head]
    for extra in (description, summary):
        extra = " ".join(str(extra).split())
        if extra:
            parts.append(extra.rstrip("."))
    vals = [" ".join(str(v).split())[:SAMPLE_CHARS] for v in (samples or [])[:max_samples]]
    vals = [v for v in vals if v]
    if vals:
        parts.append("values: " + ", ".join(vals))
    return ". ".join(parts)


def field_entries(schema: DatabaseSchema, summaries: Summaries | None = None, *, max_samples: int = 3) -> list[Field]:
    """One `Field` per column of `schema`, in schema order; `summaries` ({(table, column): text}, any case) adds a
    summary to the columns it names."""
    low = {(t.lower(), c.lower()): s for (t, c), s in (summaries or {}).items()}
    return [Field(table=t.name, column=c.name,
                  text=field_text(t.name, c.name, type=c.type, description=c.description,
                                  summary=low.get((t.name.lower(), c.name.lower()), ""),
                                  samples=c.samples, max_samples=max_samples))
            for t in schema.tables for c in t.columns]


class FieldIndex:
    """A loaded field index: the fields and their faiss index (inner product over L2-normalized vectors)."""

    def __init__(self, fields: list[Field], index: Any) -> None:
        if index.ntotal != len(fields):
            raise ValueError(f"field index holds {index.ntotal} vectors for {len(fields)} fields; rebuild it "
                             f"(delete its folder under <cache_dir>/artifacts/field_index)")
        self.fields = fields
        self.index = index

    def __len__(self) -> int:
        return len(self.fields)

    def rank(self, vector: np.ndarray, k: int | None = None) -> list[tuple[Field, float]]:
        """The `k` fields most similar to one query vector (all fields when k is None), best first, with cosine
        similarity."""
        n = len(self.fields) if k is None else min(k, len(self.fields))
        if n <= 0:
            return []
        scores, ids = self.index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), n)
        return [(self.fields[i], float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


class FieldIndexArtifact(Artifact):
    """The field index of one database (`FieldIndex`), embedded with the embedder `embedders.<embedder>`.

    `samples`: sample values per column in the field text; `summaries`: an optional provider of per-column summaries
    for a database, with `summaries_id` naming it in the cache key (e.g. "profile-v1-<llm>").
    """

    name = "field_index"
    version = 1

    def __init__(self, *, embedder: str = "default", samples: int = 3, summaries: SummaryProvider | None = None,
                 summaries_id: str = "") -> None:
        if summaries is not None and not summaries_id:
            raise ValueError("FieldIndexArtifact: give `summaries_id` (it keys the cache) with `summaries`")
        self.embedder = embedder
        self.samples = samples
        self.summaries = summaries
        self.summaries_id = summaries_id
        self.model_id: str | None = None

    def bind(self, env: Env) -> FieldIndexArtifact:
        """Learn the embedder's model id from the environment (needed before the cache key exists)."""
        if env.embedders is None:
            raise KeyError(f"the field index needs `embedders.{self.embedder}` (options in conf/embedder/)")
        self.model_id = env.embedders.get(self.embedder).model_id
        return self

    def sources(self, env: Env, examples: list[Example]) -> list[Source]:
        self.bind(env)
        return super().sources(env, examples)

    def params(self) -> dict[str, Any]:
        if self.model_id is None:
            raise RuntimeError("FieldIndexArtifact: call bind(env) before using it (the cache key needs the "
                               "embedder's model id)")
        return {"model": self.model_id, "samples": self.samples, "text": TEXT_VERSION, "summaries": self.summaries_id}

    def libraries(self) -> dict[str, str]:
        return {"faiss-cpu": library_version("faiss-cpu")}

    def build(self, source: Source, out: Path, env: Env) -> None:
        import faiss

        schema = introspect(source.path, source.id, n_samples=self.samples, cache_dir=env.cache_dir / "schemas")
        summaries = self.summaries(source, env) if self.summaries is not None else None
        fields = field_entries(schema, summaries, max_samples=self.samples)
        vectors = env.embed(self.embedder, [f.text for f in fields]) if fields else np.zeros((0, 1), np.float32)
        index = faiss.IndexFlatIP(int(vectors.shape[1]))
        if len(fields):
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        faiss.write_index(index, str(out / "index.faiss"))
        (out / "fields.json").write_text(json.dumps([f.__dict__ for f in fields], ensure_ascii=False, indent=1))

    def load(self, source: Source, path: Path) -> FieldIndex:
        import faiss

        fields = [Field(**d) for d in json.loads((path / "fields.json").read_text())]
        return FieldIndex(fields, faiss.read_index(str(path / "index.faiss")))
