"""Offline context built once and shared by stages (seed 004, operations 0 and 1).

- `t2s.context.examples`: the example store artifact (skeleton-masked training questions, embedded, in a faiss
  index), built once per training set.
"""
