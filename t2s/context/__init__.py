"""Offline context built from a database or a training set, shared by stages and schema formats (seed 004,
operations 0 and 1).

- `t2s.context.profile`: the database profile artifact (per-column statistics, MinHash sketches, optional LLM
  summaries) and dataset-supplied descriptions (BIRD `database_description/*.csv`, KaggleDBQA-style `tables.json`).
- `t2s.context.values`: the value index artifact (datasketch `MinHashLSH` over character shingles of text values)
  and its query with re-ranking.
- `t2s.context.examples`: the example store artifact (skeleton-masked training questions, embedded, in a faiss
  index), built once per training set.
- `t2s.context.fields`: the field index artifact (faiss over one text per column, seed 004 op 1 / seed 003 phase 2).
- `t2s.context.linking`: closing a column selection under keys and foreign-key join paths; scoring a linked schema
  against the gold SQL's tables and columns.
- `t2s.context.selection`: LLM column selection requests and reply parsing (dual schema linking, seed 004 op 6).
"""
