"""Damaged cache and artifact files: how they are detected, moved aside, and the one error that names them.

- SQLite caches run `PRAGMA quick_check` the first time a process opens them (`quick_check_once`) and a full
  `PRAGMA integrity_check` after any database error (`damage_after`), so a damaged file is told apart from a locked
  or busy one.
- Artifacts keep the sha256 of each of their files in `meta.json`, checked on load (`t2s.artifacts`).

What happens to a damaged file is each store's choice (docs/decisions.md, "Damaged caches and artifacts"): the gold
result cache and artifacts are derived data, moved aside (`move_aside`) and rebuilt; the LLM response cache holds
model answers that may have cost money and that make sampled re-runs repeat, so it is refused with the command that
repairs it (`python -m t2s.llm.cache recover <file>`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["DamagedFileError", "damage_after", "move_aside", "quick_check_once", "sqlite_problem"]

log = logging.getLogger("t2s")

#: (process id, real path) of the SQLite files this process has quick-checked
_checked: set[tuple[int, str]] = set()
_checked_lock = threading.Lock()


class DamagedFileError(OSError):
    """A cache or artifact file that is damaged. `path` is the file, `problem` what the check found, `fix` what to
    do; the message holds all three."""

    def __init__(self, path: str | os.PathLike[str], problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path} is damaged ({problem}). {fix}")

    def __reduce__(self) -> tuple[type[DamagedFileError], tuple[str, str, str]]:
        return type(self), (self.path, self.problem, self.fix)


def sqlite_problem(conn: sqlite3.Connection, *, full: bool = False) -> str | None:
    """None when the database passes `PRAGMA quick_check` (with `full`, `PRAGMA integrity_check`), else what SQLite
    found (its first few findings, or the error the check itself raised, e.g. "file is not a database")."""
    try:
        rows = conn.execute(f"PRAGMA {'integrity_check' if full else 'quick_check'}(5)").fetchall()
    except sqlite3.DatabaseError as e:
        return str(e)
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "; ".join(found)


def quick_check_once(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> str | None:
    """`sqlite_problem(conn)` the first time this process checks the file at `path`; None (unchecked) afterwards
    once it passed. A file that fails is checked again next time."""
    key = (os.getpid(), os.path.realpath(path))
    with _checked_lock:
        if key in _checked:
            return None
    problem = sqlite_problem(conn)
    if problem is None:
        with _checked_lock:
            _checked.add(key)
    return problem


def forget_checks() -> None:
    """Forget which files this process has quick-checked (for tests that damage a file the process opened)."""
    with _checked_lock:
        _checked.clear()


def damage_after(error: sqlite3.DatabaseError, path: str | os.PathLike[str]) -> str | None:
    """After a database error on the SQLite file at `path`: what a full `integrity_check` on a fresh connection finds
    (None: the file is sound, the error had another cause such as a lock or a full disk). A file SQLite cannot even
    open as a database counts as damaged with `error`'s message."""
    if not Path(path).is_file():
        return None
    try:
        conn = sqlite3.connect(str(path), timeout=60)
    except sqlite3.Error:
        return None  # cannot open it at all (permissions, a missing folder): not a damaged file
    try:
        problem = sqlite_problem(conn, full=True)
    finally:
        conn.close()
    if problem is not None:
        with _checked_lock:  # a file found damaged is quick-checked again by the next open
            _checked.discard((os.getpid(), os.path.realpath(path)))
    return problem


def move_aside(path: str | os.PathLike[str], *, sqlite: bool = False) -> Path:
    """Rename a damaged file or folder to `<path>.corrupt-<time>` (kept for inspection or recovery, never deleted) and
    return the new path. With `sqlite`, its `-wal` and `-shm` companions move along, so the moved file opens with
    its journal."""
    p = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = p.with_name(f"{p.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = p.with_name(f"{p.name}.corrupt-{stamp}-{n}")
    os.replace(p, aside)
    if sqlite:
        for suffix in ("-wal", "-shm"):
            companion = p.with_name(p.name + suffix)
            if companion.exists():
                os.replace(companion, aside.with_name(aside.name + suffix))
    return aside
