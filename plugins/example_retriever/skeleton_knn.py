"""Skeleton k-nearest-neighbour example retrieval, after the skeleton-indexed example stores of "Agentar-Scale-SQL:
Advancing Text-to-SQL through Orchestrated Test-Time Scaling" (arXiv 2509.24403) and "A Preview of XiYan-SQL: A
Multi-Generator Ensemble Framework for Text-to-SQL" (arXiv 2411.08599)."""

from __future__ import annotations

import random

from t2s.context.examples import ExampleStore, ExampleStoreArtifact, skeleton_of
from t2s.data.base import Dataset
from t2s.env import Env
from t2s.stages import ExampleRetriever
from t2s.types import FewShot, Task

MODES = ("knn", "random")


class SkeletonKnnRetriever(ExampleRetriever):
    """The `k` training examples whose question skeletons are nearest to the question's skeleton, into `task.examples`.

    The question is masked into its skeleton with its own database's table and column names
    (`t2s.sql.skeleton.question_skeleton`), embedded with the named embedder, and looked up in the example store of
    the training set `train` (a dataset config, Spider train by default; `t2s.context.examples`, built once per
    training set by `t2s prepare` or on first use). Examples come best first (the generator's prompt decides the
    order it shows them in), each with its cosine `score` and `source` "<train dataset>:<qid>".

    - `exclude_same_db`: never return an example from the evaluated question's own database (by `db_id`), so a
      training set that shares databases with the evaluation set cannot leak near-copies of the answer.
    - `dedupe_sql`: skip an example whose SQL (whitespace- and case-normalized) repeats one already chosen (Spider
      asks most queries twice, in two wordings).
    - `mode: random` (the `random` option): `k` examples drawn uniformly, seeded by the run seed and the question
      id, with the same exclusions: the baseline that skeleton retrieval must beat.
    - `mask: false` embeds the raw questions instead of skeletons (the ablation of the masking).
    """

    def __init__(self, *, train: Dataset, embedder: str = "default", k: int = 5, mode: str = "knn",
                 exclude_same_db: bool = True, dedupe_sql: bool = True, mask: bool = True) -> None:
        if mode not in MODES:
            raise ValueError(f"example_retriever.mode must be one of {MODES}, got {mode!r}")
        if k < 1:
            raise ValueError(f"example_retriever.k must be >= 1, got {k}")
        if not isinstance(train, Dataset):
            raise TypeError(f"example_retriever.train must be a dataset config (a `_target_` loader such as "
                            f"conf/dataset/spider_train.yaml), got {type(train).__name__}")
        self.train = train
        self.embedder = embedder
        self.k = k
        self.mode = mode
        self.exclude_same_db = exclude_same_db
        self.dedupe_sql = dedupe_sql
        self.mask = mask
        self.store: ExampleStore | None = None

    def artifacts(self) -> list[ExampleStoreArtifact]:
        return [ExampleStoreArtifact(dataset=self.train, embedder=self.embedder, mask=self.mask)]

    def setup(self, env: Env) -> None:
        super().setup(env)
        art = self.artifacts()[0]
        self.store = env.artifact(art, art.sources(env, env.examples)[0])

    def run(self, tasks: list[Task]) -> None:
        store = self.store
        assert store is not None, "setup(env) was not called"
        excl = [t.example.db_id if self.exclude_same_db else None for t in tasks]
        if self.mode == "random":
            picks = [store.sample(self.k, random.Random(f"{self.env.seed}:{t.qid}"), exclude_db=d,
                                  dedupe_sql=self.dedupe_sql) for t, d in zip(tasks, excl)]
        else:
            texts = [skeleton_of(self.env, t.example) if self.mask else t.example.question for t in tasks]
            picks = store.search(self.env.embed(self.embedder, texts), self.k, exclude_db=excl,
                                 dedupe_sql=self.dedupe_sql)
        for task, chosen in zip(tasks, picks):
            for i, score in chosen:
                r = store.records[i]
                task.examples.append(FewShot(question=r.question, sql=" ".join(r.sql.split()), score=round(score, 6),
                                             source=f"{store.dataset}:{r.qid}", db_id=r.db_id, evidence=r.evidence))
