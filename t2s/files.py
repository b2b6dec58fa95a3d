"""File helpers every cache in t2s shares: one content hash, one atomic write, one build-once-under-a-lock.

- `content_hash(path)`: the sha256 of a file's bytes, the one fingerprint of databases, model files and datasets.
  Memoized per process by (real path, size, mtime_ns) and, with `memo_dir`, on disk, so a large file is read once
  across runs.
- `atomic_write(path, data)`: a file appears whole or not at all (temp file in the same folder + `os.replace`).
- `build_once(target, build)`: a file or folder built by `build(tmp)` exactly once across processes (file lock, then
  rename into place), so two sweep jobs never build it twice nor read it half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

__all__ = ["atomic_write", "build_once", "content_hash", "forget_content_hashes", "tree_size"]

_CHUNK = 1 << 20
_memo: dict[tuple[str, int, int], str] = {}
_memo_lock = threading.Lock()


def content_hash(path: str | os.PathLike[str], *, memo_dir: str | os.PathLike[str] | None = None,
                 memo_min_bytes: int = 0) -> str:
    """The sha256 hex digest of the bytes of the file at `path`.

    Asking again for an unchanged file (same real path, size and mtime) costs one `stat`. With `memo_dir`, the digest
    is also remembered on disk there (one small JSON per file), for files too large to hash on every run; only files
    of at least `memo_min_bytes` get one (model fingerprints memoize weight files, not their small configs). Raises
    FileNotFoundError naming the path when there is no such file.
    """
    real = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot hash {real}: no such file") from None
    key = (real, st.st_size, st.st_mtime_ns)
    with _memo_lock:
        cached = _memo.get(key)
    if cached is not None:
        return cached
    memo_file = None
    if memo_dir is not None and st.st_size >= memo_min_bytes:
        memo_file = Path(memo_dir) / (hashlib.sha256(real.encode()).hexdigest()[:32] + ".json")
        try:
            d = json.loads(memo_file.read_text())
            if (d["size"], d["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
                cached = str(d["sha256"])
        except (OSError, ValueError, KeyError):
            pass
    if cached is None:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        cached = h.hexdigest()
        if memo_file is not None:
            atomic_write(memo_file, json.dumps({"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                "sha256": cached}))
    with _memo_lock:
        _memo[key] = cached
    return cached


def forget_content_hashes() -> None:
    """Empty the in-process memo of `content_hash` (on-disk memos stay)."""
    with _memo_lock:
        _memo.clear()


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, fsync: bool = False) -> Path:
    """Write `data` (text as UTF-8) to `path` so that readers see the old file or the new one, never a part.

    Creates missing parent folders. With `fsync`, the data is on disk before the rename (for commit logs).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def build_once(target: str | os.PathLike[str], build: Callable[[Path], object]) -> bool:
    """Make `target` (a file or a folder) exist, calling `build(tmp)` at most once across processes.

    `build` writes into `tmp` (a path next to `target` that does not exist yet); on success `tmp` is renamed to
    `target`. A file lock (`<target>.lock`) serializes builders: a second process waits, then finds the target
    built. A failed build leaves nothing behind, and the temporary path of a builder that was killed (the OS
    releases its lock) is removed by the next one. Returns True when this call built it.
    """
    t = Path(target)
    if t.exists():
        return False
    t.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(t) + ".lock"):
        if t.exists():
            return False
        for stale in t.parent.glob(f".{t.name}.tmp-*"):  # we hold the lock: no live builder owns these
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        tmp = t.with_name(f".{t.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
        try:
            build(tmp)
            if not tmp.exists():
                raise RuntimeError(f"building {t} wrote nothing at {tmp}")
            os.replace(tmp, t)
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
    return True


def tree_size(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or of every file under a folder."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
