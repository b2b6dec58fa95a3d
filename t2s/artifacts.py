"""Artifacts: files derived from a database (or a dataset) once, cached by content hash and parameters.

A plugin declares an artifact as a subclass of `Artifact` (name, version, the parameters that change it, `build`,
`load`) and asks the environment for it: `env.artifact(MyIndex(k=5), task.example)`. The `ArtifactStore` builds it
once per (name, version, parameters, source content hash) under `<cache_dir>/artifacts/`, under a file lock, into a
temporary folder renamed into place, so two sweep jobs never build it twice nor read it half-written. Its build time,
size and the sha256 of each of its files are kept in the artifact's `meta.json`; the checksums are verified on load,
and a damaged artifact is moved aside (`<folder>.corrupt-<time>`) and rebuilt (docs/decisions.md, "Damaged caches and
artifacts"). Build time and size are reported as offline cost in `metrics.json`, apart from the per-question cost.
`t2s prepare` builds every artifact a configured pipeline needs ahead of time.

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

from filelock import FileLock

from t2s.files import atomic_write, build_once, content_hash, tree_size
from t2s.integrity import DamagedFileError, move_aside

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
        """The loaded artifact for `source`, built first if no process has built it yet.

        Before loading, every file is checked against the sha256 recorded in `meta.json` when it was built. A
        damaged artifact (garbage or truncated files, an unreadable `meta.json`, a missing file, or, for one built
        before checksums existed, a load that fails) is logged with its path, moved aside to
        `<folder>.corrupt-<time>` and rebuilt. An artifact built before checksums existed that loads gets them now.
        """
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
                    "files": file_checksums(tmp),
                }, indent=2, default=str))
                log.info("built artifact %s for %s %s in %.1f s", artifact.name, source.kind, source.id, seconds)

            built = build_once(target, build)
            loaded = self._load_checked(artifact, source, target)
            if isinstance(loaded, str):
                self._set_aside(artifact, source, target, loaded)
                built = build_once(target, build) or built
                loaded = self._load_checked(artifact, source, target, retry=False)
            value, meta = loaded
            self._loaded[memo] = value
            self._records[memo] = BuildRecord(name=artifact.name, source=source.id, path=str(target),
                                              build_seconds=float(meta.get("build_seconds", 0.0)),
                                              bytes=int(meta.get("bytes", 0)), built_now=built)
            return value

    def _load_checked(self, artifact: Artifact, source: Source, target: Path, *,
                      retry: bool = True) -> tuple[Any, dict[str, Any]] | str:
        """(loaded value, metadata) of a sound artifact; what is wrong with a damaged one (with `retry`; without it,
        a damaged artifact raises `DamagedFileError`: it was just rebuilt)."""
        problem, meta = artifact_problem(target)
        if problem is None:
            assert meta is not None
            try:
                value = artifact.load(source, target)
            except Exception as e:  # noqa: BLE001 - any failure of a loader reading unchecked files means damage
                if "files" in meta:
                    raise RuntimeError(
                        f"artifact {artifact.name} at {target} matches its checksums but does not load "
                        f"({type(e).__name__}: {e}): a bug in {type(artifact).__name__}.load/build or a library "
                        f"change; move the folder aside to rebuild it") from e
                problem = f"it does not load: {type(e).__name__}: {e}"
            else:
                if "files" not in meta:  # built before checksums existed: it loads, so record them now
                    meta["files"] = file_checksums(target)
                    try:
                        atomic_write(target / META, json.dumps(meta, indent=2, default=str))
                    except OSError as e:  # a read-only cache still works, unchecked
                        log.debug("cannot add checksums to %s: %s", target / META, e)
                return value, meta
        if retry:
            return problem
        raise DamagedFileError(target, problem, f"It was rebuilt just now: check the disk under {self.root} and "
                                                f"{type(artifact).__name__}.build")

    def _set_aside(self, artifact: Artifact, source: Source, target: Path, problem: str) -> None:
        """Move a damaged artifact folder aside (under its build lock; skipped when another process already did)."""
        try:
            seen = target.stat().st_ino
        except FileNotFoundError:
            return
        with FileLock(str(target) + ".lock"):
            try:
                if target.stat().st_ino != seen:
                    return  # another process moved it and built a new one meanwhile
            except FileNotFoundError:
                return
            aside = move_aside(target)
        log.warning("artifact %s for %s %s at %s is damaged (%s): moved to %s, rebuilding", artifact.name,
                    source.kind, source.id, target, problem, aside.name)

    def records(self) -> list[BuildRecord]:
        """Every artifact used so far by this store, in first-use order."""
        return list(self._records.values())


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under an artifact folder but its `meta.json`, by path relative to the folder."""
    return {f.relative_to(folder).as_posix(): _sha256(f) for f in sorted(folder.rglob("*"))
            if f.is_file() and f.relative_to(folder).as_posix() != META}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def artifact_problem(folder: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(what is wrong with a built artifact folder, its metadata): None and the metadata when `meta.json` reads and
    every file it lists matches its checksum (an artifact built before checksums existed lists none)."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{META} is missing", None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"{META} does not read as JSON: {e}", None
    files = meta.get("files", {}) if isinstance(meta, dict) else None
    if not isinstance(files, dict):
        return f"{META} holds no valid file list", None
    for rel, digest in files.items():
        f = folder / rel
        if not f.is_file():
            return f"{rel} is missing", meta
        if _sha256(f) != digest:
            return f"{rel} does not match its checksum", meta
    return None, meta


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
