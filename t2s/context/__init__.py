"""Offline context built from a database or a training set, shared by stages and schema formats (seed 004,
operations 0 and 1).

- `t2s.context.profile`: the database profile artifact (per-column statistics, MinHash sketches, optional LLM
  summaries) and dataset-supplied descriptions (BIRD `database_description/*.csv`, KaggleDBQA-style `tables.json`).
- `t2s.context.values`: the value index artifact (datasketch `MinHashLSH` over character shingles of text values)
  and its query with re-ranking.
- `t2s.context.examples`: the example store artifact (skeleton-masked training questions, embedded, in a faiss
  index), built once per training set.
"""
