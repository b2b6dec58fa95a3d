"""Artifacts: files derived from a database (or a dataset) once, cached by content hash and parameters.

A plugin declares an artifact as a subclass of `Artifact` (name, version, the parameters that change it, `build`,
`load`) and asks the environment for it: `env.artifact(MyIndex(k=5), task.example)`. The `ArtifactStore` builds it
once per (name, version, parameters, source content hash) under `<cache_dir>/artifacts/`, under a file lock, into a
temporary folder renamed into place, so two sweep jobs never build it twice nor read it half-written. Its build time
and size are kept in the artifact's `meta.json` and reported as offline cost in `metrics.json`, apart from the
per-question cost. `t2s prepare` builds every artifact a configured pipeline needs ahead of time.

The database profile, the value index, the field vector index and the example store are artifacts.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from t2s.files import atomic_write, build_once, content_hash, tree_size

if TYPE_CHECKING:
    from t2s.env import Env
    from t2s.types import Example

log = logging.getLogger("t2s")

META = "meta.json"


@dataclass(frozen=True)
class Source:
    """What an artifact is built from: a database file (`kind="database"`, `id` = db_id) or any other file, such as
    a training set (`kind="dataset"`). `content_hash` keys the cache: an edited file never reuses a stale build."""

    kind: str
    id: str
    path: str
    content_hash: str

    @classmethod
    def of_file(cls, path: str | Path, *, kind: str, id: str) -> Source:
        return cls(kind=kind, id=id, path=str(path), content_hash=content_hash(path))

    @classmethod
    def database(cls, example: Example) -> Source:
        """The database of a question."""
        return cls.of_file(example.db_path, kind="database", id=example.db_id)


class Artifact(abc.ABC):
    """A derived, cached file set. Subclasses set `name` and `version` (bump it when `build` changes what it writes)
    and implement `params`, `build` and `load`.

    - `params()`: everything that changes the built files (JSON-able); part of the cache key.
    - `libraries()`: packages whose stored formats `load` reads back (e.g. a pickled datasketch index), as
      {package: version prefix}; part of the key, so upgrading across a format change rebuilds instead of failing.
    - `source(example)`: what a question's artifact is built from; default: its database file (`Source.database`).
      An artifact that also reads other files (dataset-supplied descriptions) hashes them into the source here.
    - `sources(env, examples)`: what to build it from; default: `source` of each distinct database of the examples.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def params(self) -> dict[str, Any]:
        return {}

    def libraries(self) -> dict[str, str]:
        return {}

    def source(self, example: Example) -> Source:
        return Source.database(example)

    def sources(self, env: Env, examples: list[Example]) -> list[Source]:
        seen: dict[str, Source] = {}
        for ex in examples:
            if ex.db_path not in seen:
                seen[ex.db_path] = self.source(ex)
        return list(seen.values())

    @abc.abstractmethod
    def build(self, source: Source, out: Path, env: Env) -> None:
        """Write the artifact's files into the (new, empty) folder `out`."""

    @abc.abstractmethod
    def load(self, source: Source, path: Path) -> Any:
        """Read a built artifact from its folder."""

    def key(self) -> str:
        """`v<version>-<hash of params and library versions>`: the folder name under the artifact's name."""
        blob = json.dumps({"params": self.params(), "libraries": self.libraries()}, sort_keys=True, default=str)
        return f"v{self.version}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def library_version(package: str, parts: int = 1) -> str:
    """The first `parts` components of an installed package's version ("1" for datasketch 1.6.5 with parts=1)."""
    try:
        return ".".join(metadata.version(package).split(".")[:parts])
    except metadata.PackageNotFoundError:
        return "absent"


@dataclass
class BuildRecord:
    """One artifact used by a run: where it is, how long it took to build (whenever it was built), its size, and
    whether this process built it."""

    name: str
    source: str
    path: str
    build_seconds: float
    bytes: int
    built_now: bool


class ArtifactStore:
    """Builds and loads artifacts under `root` (normally `<cache_dir>/artifacts`), once per key, memoized per process."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._loaded: dict[tuple[str, str, str], Any] = {}
        self._records: dict[tuple[str, str, str], BuildRecord] = {}
        self._lock = threading.RLock()

    def path(self, artifact: Artifact, source: Source) -> Path:
        if not artifact.name:
            raise ValueError(f"{type(artifact).__name__} has no `name`; every Artifact subclass sets one")
        return self.root / artifact.name / artifact.key() / f"{source.kind}-{source.content_hash[:32]}"

    def get(self, artifact: Artifact, source: Source, env: Env) -> Any:
        """The loaded artifact for `source`, built first if no process has built it yet."""
        target = self.path(artifact, source)
        memo = (artifact.name, artifact.key(), source.content_hash)
        with self._lock:
            if memo in self._loaded:
                return self._loaded[memo]

            def build(tmp: Path) -> None:
                tmp.mkdir(parents=True)
                start = time.perf_counter()
                artifact.build(source, tmp, env)
                seconds = time.perf_counter() - start
                atomic_write(tmp / META, json.dumps({
                    "name": artifact.name, "version": artifact.version, "params": artifact.params(),
                    "libraries": artifact.libraries(), "source": {"kind": source.kind, "id": source.id,
                                                                   "path": source.path, "content_hash": source.content_hash},
                    "build_seconds": seconds, "bytes": tree_size(tmp), "built_at": time.time(),
                }, indent=2, default=str))
                log.info("built artifact %s for %s %s in %.1f s", artifact.name, source.kind, source.id, seconds)

            built = build_once(target, build)
            meta = json.loads((target / META).read_text())
            value = artifact.load(source, target)
            self._loaded[memo] = value
            self._records[memo] = BuildRecord(name=artifact.name, source=source.id, path=str(target),
                                              build_seconds=float(meta.get("build_seconds", 0.0)),
                                              bytes=int(meta.get("bytes", 0)), built_now=built)
            return value

    def records(self) -> list[BuildRecord]:
        """Every artifact used so far by this store, in first-use order."""
        return list(self._records.values())


def offline_cost(records: list[BuildRecord]) -> dict[str, Any]:
    """Offline cost by artifact name: count, build seconds (whenever built), bytes, how many this call built."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        a = out.setdefault(r.name, {"count": 0, "build_seconds": 0.0, "bytes": 0, "built_now": 0})
        a["count"] += 1
        a["build_seconds"] += r.build_seconds
        a["bytes"] += r.bytes
        a["built_now"] += int(r.built_now)
    return {"artifacts": out, "build_seconds": sum(a["build_seconds"] for a in out.values()),
            "bytes": sum(a["bytes"] for a in out.values())}
