"""Offline context built from a database or a training set, shared by stages and schema formats: profiles and
indexes after "Automatic Metadata Extraction for Text-to-SQL" (arXiv 2505.19988).

- `t2s.context.profile`: the database profile artifact (per-column statistics, MinHash sketches, optional LLM
  summaries) and dataset-supplied descriptions (BIRD `database_description/*.csv`, KaggleDBQA-style `tables.json`).
- `t2s.context.values`: the value index artifact (datasketch `MinHashLSH` over character shingles of text values)
  and its query with re-ranking.
- `t2s.context.examples`: the example store artifact (skeleton-masked training questions, embedded, in a faiss
  index), built once per training set.
- `t2s.context.fields`: the field index artifact (faiss over one text per column).
- `t2s.context.linking`: closing a column selection under keys and foreign-key join paths; scoring a linked schema
  against the gold SQL's tables and columns.
- `t2s.context.column_choice`: LLM column selection requests and reply parsing (dual schema linking,
  after XiYan-SQL, arXiv 2411.08599).
"""
