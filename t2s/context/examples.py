"""The example store: a training set's questions, skeleton-masked, embedded and indexed with faiss, after
"A Preview of XiYan-SQL: A Multi-Generator Ensemble Framework for Text-to-SQL" (arXiv 2411.08599) and
"Agentar-Scale-SQL: Advancing Text-to-SQL through Orchestrated Test-Time Scaling" (arXiv 2509.24403).

Built once per training set (a dataset config such as `conf/dataset/spider_train.yaml`, loaded with its loader), as a
dataset-level artifact (`ExampleStoreArtifact`): its one `Source` is the training questions file, so an edited file
rebuilds it, and the embedder's model id is folded into that source's content hash, so switching embedders never
reuses vectors of another model. Each labeled training question is masked into its skeleton with its own
database's table and column names (`t2s.sql.skeleton.question_skeleton`), the skeletons are embedded with the named
embedder (`env.embed`, L2-normalized, so inner product = cosine) and put in an exact `faiss.IndexFlatIP`.

Files: `index.faiss` (the vectors), `examples.jsonl` (one `StoredExample` per row, in index order). The store
answers nearest-neighbour queries (`ExampleStore.search`) and seeded random draws (`ExampleStore.sample`, the
baseline), both optionally excluding given databases and repeated SQL. Online use is the
`example_retriever` options `skeleton_knn` and `random`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from t2s.artifacts import Artifact, Source, library_version
from t2s.sql.skeleton import SchemaNames, question_skeleton, sql_skeleton
from t2s.types import Example

if TYPE_CHECKING:
    from t2s.data.base import Dataset
    from t2s.env import Env

#: bump when `question_skeleton`'s masking changes what is stored
SKELETON_VERSION = 2


@dataclass
class StoredExample:
    """One training example in the store: its question and SQL, where it comes from, and its two skeletons."""

    qid: str
    question: str
    sql: str
    db_id: str
    evidence: str
    skeleton: str
    sql_skeleton: str | None


def schema_names(env: Env, example: Example) -> SchemaNames:
    """The table and column names of an example's database (introspected once per run and cached on disk)."""
    return SchemaNames.of_schema(env.schema(example))


def skeleton_of(env: Env, example: Example) -> str:
    """The question skeleton of `example`, masked with its own database's names."""
    return question_skeleton(example.question, schema_names(env, example))


def _dataset_hash(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.qid, e.db_id, e.question, e.gold_sql, e.evidence]).encode())
    return h.hexdigest()


class ExampleStore:
    """A loaded example store: `records` (in index order) and the faiss `index` over their skeleton vectors."""

    def __init__(self, records: list[StoredExample], index: Any, dataset: str) -> None:
        self.records = records
        self.index = index
        self.dataset = dataset
        self.per_db = Counter(r.db_id for r in records)

    def __len__(self) -> int:
        return len(self.records)

    def _pick(self, order: list[tuple[int, float]], k: int, exclude_db: str | None,
              dedupe_sql: bool) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        seen: set[str] = set()
        for i, score in order:
            r = self.records[i]
            if exclude_db is not None and r.db_id == exclude_db:
                continue
            key = " ".join(r.sql.lower().split())
            if dedupe_sql and key in seen:
                continue
            seen.add(key)
            out.append((i, score))
            if len(out) == k:
                break
        return out

    def search(self, vectors: np.ndarray, k: int, *, exclude_db: list[str | None] | None = None,
               dedupe_sql: bool = True) -> list[list[tuple[int, float]]]:
        """The `k` nearest records (index, cosine) for each query vector, best first; records of the query's
        `exclude_db` (one entry per query, None: keep all) and repeats of an SQL already chosen are skipped."""
        n = len(self.records)
        excl = exclude_db or [None] * len(vectors)
        out: list[list[tuple[int, float]]] = []
        if n == 0 or k <= 0:
            return [[] for _ in range(len(vectors))]
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        want = min(n, max(4 * k, k + max((self.per_db.get(d, 0) for d in excl if d), default=0) + 2 * k))
        while True:
            scores, idx = self.index.search(q, want)
            out = [self._pick([(int(i), float(s)) for i, s in zip(ri, rs) if i >= 0], k, d, dedupe_sql)
                   for ri, rs, d in zip(idx, scores, excl)]
            if want >= n or all(len(o) == k for o in out):
                return out
            want = min(n, want * 4)

    def sample(self, k: int, rng: random.Random, *, exclude_db: str | None = None,
               dedupe_sql: bool = True) -> list[tuple[int, float]]:
        """`k` records drawn at random (score 0.0), with the same exclusions as `search`."""
        order = list(range(len(self.records)))
        rng.shuffle(order)
        return self._pick([(i, 0.0) for i in order], k, exclude_db, dedupe_sql)


class ExampleStoreArtifact(Artifact):
    """The example store of one training set (see the module docstring): dataset-level, built once per training
    file content, masking setting and embedder model."""

    name = "example_store"
    version = 1

    def __init__(self, *, dataset: Dataset, embedder: str = "default", mask: bool = True,
                 batch_size: int = 512) -> None:
        self.dataset = dataset
        self.embedder = embedder
        self.mask = mask
        self.batch_size = batch_size

    def params(self) -> dict[str, Any]:
        d = self.dataset
        return {"dataset": d.name, "loader": f"{type(d).__module__}.{type(d).__qualname__}", "limit": d.limit,
                "sample": d.sample, "seed": d.seed if d.sample is not None else None, "mask": self.mask,
                "skeleton_version": SKELETON_VERSION}

    def libraries(self) -> dict[str, str]:
        return {"faiss-cpu": library_version("faiss-cpu")}

    def sources(self, env: Env, examples: list[Example]) -> list[Source]:
        """One source: the training questions file (or, for a loader without one, the loaded questions), its
        content hash combined with the embedder's model id."""
        model_id = env.embedders.get(self.embedder).model_id if env.embedders is not None else "none"
        path = getattr(self.dataset, "questions", None) or getattr(self.dataset, "path", None)
        if path is not None and Path(path).is_file():
            base = Source.of_file(path, kind="dataset", id=self.dataset.name)
            digest, where = base.content_hash, base.path
        else:
            digest, where = _dataset_hash(self.dataset.load().examples), f"<{self.dataset.name}>"
        combined = hashlib.sha256(f"{digest}\0{model_id}".encode()).hexdigest()
        return [Source(kind="dataset", id=self.dataset.name, path=str(where), content_hash=combined)]

    def build(self, source: Source, out: Path, env: Env) -> None:
        import faiss

        loaded = self.dataset.load()
        examples = [e for e in loaded.examples if e.gold_sql]
        if not examples:
            raise ValueError(f"example store: the training dataset {self.dataset.name!r} ({source.path}) has no "
                             f"labeled questions; point the retriever's `train` at a dataset with gold SQL")
        names: dict[str, SchemaNames] = {}
        records = []
        for e in examples:
            if e.db_path not in names:
                try:
                    names[e.db_path] = schema_names(env, e)
                except Exception:  # noqa: BLE001 - an unreadable training database only loses schema masking
                    names[e.db_path] = SchemaNames.of([], [])
            skel = question_skeleton(e.question, names[e.db_path]) if self.mask else e.question
            records.append(StoredExample(qid=e.qid, question=e.question, sql=e.gold_sql or "", db_id=e.db_id,
                                         evidence=e.evidence, skeleton=skel, sql_skeleton=sql_skeleton(e.gold_sql or "")))
        chunks = [env.embed(self.embedder, [r.skeleton for r in records[i:i + self.batch_size]])
                  for i in range(0, len(records), self.batch_size)]
        vectors = np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        faiss.write_index(index, str(out / "index.faiss"))
        with open(out / "examples.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")

    def load(self, source: Source, path: Path) -> ExampleStore:
        import faiss

        records = [StoredExample(**json.loads(line)) for line in (path / "examples.jsonl").read_text().splitlines()
                   if line.strip()]
        return ExampleStore(records, faiss.read_index(str(path / "index.faiss")), self.dataset.name)
