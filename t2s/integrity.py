"""Damaged cache and artifact files: how they are detected, moved aside, and the one error that names them.

- SQLite caches run `PRAGMA quick_check` the first time a process opens them (`quick_check_once`) and a full
  `PRAGMA integrity_check` after any database error (`damage_after`), so a damaged file is told apart from a locked
  or busy one.
- Artifacts keep the sha256 of each of their files in `meta.json`, checked on load (`t2s.artifacts`).

Where the SQLite caches' files may live: on a local disk every store uses WAL (readers never wait for the writer);
on a filesystem several machines share (NFS, Lustre, GPFS, BeeGFS), where SQLite does not support WAL (its
`-shm` index is shared memory, which only processes of one machine can share), `paths.shared_fs=true` makes every
store under `paths.cache_dir` use a rollback journal instead (`journal_mode=DELETE`): `configure_storage` records
the choice for the folder and `set_journal_mode` applies it to each connection the stores open.

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
from typing import Any

__all__ = ["DamagedFileError", "NetworkJournalError", "configure_storage", "damage_after", "journal_mode", "move_aside",
           "on_network_fs", "quick_check_once", "set_journal_mode", "set_network_fs", "sqlite_problem"]

log = logging.getLogger("t2s")

#: (process id, real path) of the SQLite files this process has quick-checked
_checked: set[tuple[int, str]] = set()
_checked_lock = threading.Lock()


#: real folders -> whether the SQLite files under them live on a filesystem shared by several machines
_network: dict[str, bool] = {}
_network_lock = threading.Lock()


def set_network_fs(directory: str | os.PathLike[str], shared: bool) -> None:
    """Declare whether the SQLite files under `directory` (and its subfolders) live on a filesystem several machines
    share. The nearest declared folder above a file decides; undeclared files count as local (WAL)."""
    with _network_lock:
        _network[os.path.realpath(directory)] = bool(shared)


def on_network_fs(path: str | os.PathLike[str]) -> bool:
    """Whether the file or folder at `path` is under a folder declared shared (`set_network_fs`)."""
    here = os.path.realpath(path)
    with _network_lock:
        while True:
            if here in _network:
                return _network[here]
            parent = os.path.dirname(here)
            if parent == here:
                return False
            here = parent


def configure_storage(paths: Any) -> None:
    """Apply the root config's `paths` section to this process: `paths.cache_dir` is declared shared or local
    according to `paths.shared_fs` (see `set_network_fs`). Every entry point that opens caches calls it first."""
    set_network_fs(str(paths.cache_dir), bool(getattr(paths, "shared_fs", False)))


def journal_mode(path: str | os.PathLike[str]) -> str:
    """The journal mode the SQLite store at `path` uses: "delete" on a shared filesystem, else "wal"."""
    return "delete" if on_network_fs(path) else "wal"


class NetworkJournalError(OSError):
    """A SQLite store could not be switched to the journal mode its folder needs (another process holds it open in
    the other mode). `path` is the file."""

    def __init__(self, path: str | os.PathLike[str], wanted: str, got: str) -> None:
        self.path = str(path)
        super().__init__(
            f"{self.path} stays in journal_mode={got} (wanted {wanted}, for paths.shared_fs="
            f"{'true' if wanted == 'delete' else 'false'}): another process has it open in {got} mode. Every t2s "
            f"process using this cache must agree on paths.shared_fs; stop the others (or wait for them), then rerun.")


def set_journal_mode(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> str:
    """Put the connection's database in the journal mode of its folder (`journal_mode(path)`) and return it.

    WAL: as the stores have always done (a failure to switch leaves the file in its mode, which is safe locally).
    DELETE: checked, since a file left in WAL on a shared filesystem is what must not happen: `NetworkJournalError`
    when SQLite keeps it in WAL (another connection holds it open in WAL mode; SQLite waits the connection's busy
    timeout first). The caller closes the connection. In DELETE mode the connection also
    syncs fully (`synchronous=FULL`), which a rollback journal needs to survive a crash."""
    wanted = journal_mode(path)
    try:
        got = str(conn.execute(f"PRAGMA journal_mode = {wanted.upper()}").fetchone()[0]).lower()
    except sqlite3.OperationalError as e:
        # leaving WAL needs the file to itself: SQLite waits out the busy timeout, then says it is locked
        if wanted != "delete" or "locked" not in str(e):
            raise
        got = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if got == "delete":
            raise
    if wanted == "delete":
        if got != "delete":
            raise NetworkJournalError(path, wanted, got)
        conn.execute("PRAGMA synchronous = FULL")
    return got


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
    return the new path. With `sqlite`, its `-wal`, `-shm` and `-journal` companions move along, so the moved file
    opens with its journal."""
    p = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = p.with_name(f"{p.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = p.with_name(f"{p.name}.corrupt-{stamp}-{n}")
    os.replace(p, aside)
    if sqlite:
        for suffix in ("-wal", "-shm", "-journal"):
            companion = p.with_name(p.name + suffix)
            if companion.exists():
                os.replace(companion, aside.with_name(aside.name + suffix))
    return aside
