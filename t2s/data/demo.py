"""The demo benchmark: three small SQLite databases built from SQL scripts shipped with t2s, and their questions.

Sources live in `t2s/demo/`: `sql/<db_id>.sql` (CREATE TABLE with keys, INSERT rows) and `questions.json`
(Spider keys: `db_id`, `question`, `query`). The databases are built on first use into a cache folder in
Spider's layout (`<build_dir>/<db_id>/<db_id>.sqlite`), so `make run` works on a fresh clone with no
benchmark data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import tempfile
from pathlib import Path

from t2s.data.spider import SpiderDataset
from t2s.types import Example

log = logging.getLogger(__name__)

#: the demo sources: `sql/<db_id>.sql` and `questions.json`
DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
#: part of every build stamp: bump when the build procedure itself changes
BUILD_VERSION = 1


def demo_db_ids() -> list[str]:
    """The demo databases, by script name, sorted."""
    return sorted(p.stem for p in (DEMO_DIR / "sql").glob("*.sql"))


def build_stamp(script: Path) -> int:
    """The build stamp of a script: 28 bits of sha256(BUILD_VERSION, script bytes), stored as the
    database's `PRAGMA user_version` so a changed script is detected without a side file."""
    digest = hashlib.sha256(f"t2s-demo-v{BUILD_VERSION}\n".encode() + script.read_bytes()).hexdigest()
    return int(digest[:7], 16)


def _stamp_of(db: Path) -> int | None:
    try:
        conn = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


def build_database(script: Path, target: Path) -> bool:
    """Build `target` from the SQL `script` unless it is already built from this very script.

    Returns True when it (re)built the file. The build writes a temporary file next to `target` with
    foreign keys enforced, then renames it over `target` (atomic on POSIX and Windows): readers never see
    a half-built database, and two processes building at once both end with a complete, identical file.
    """
    stamp = build_stamp(script)
    if target.is_file() and _stamp_of(target) == stamp:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.executescript(script.read_text(encoding="utf-8"))
            conn.execute(f"PRAGMA user_version = {stamp}")
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, target)
    except sqlite3.Error as e:
        Path(tmp).unlink(missing_ok=True)
        raise RuntimeError(f"building demo database {target} from {script} failed: {e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("built demo database %s", target)
    return True


def build_demo(build_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Build (or reuse) every demo database under `build_dir`; returns db_id -> database file."""
    out: dict[str, Path] = {}
    for db_id in demo_db_ids():
        target = Path(build_dir).expanduser().absolute() / db_id / f"{db_id}.sqlite"
        build_database(DEMO_DIR / "sql" / f"{db_id}.sql", target)
        out[db_id] = target
    return out


class DemoDataset(SpiderDataset):
    """t2s's own small benchmark: 3 databases (library, shop, school) and 55 questions with gold SQL
    (t2s/demo/questions.json).

    The questions span Spider's hardness levels: single-table filters, joins, GROUP BY / HAVING,
    ORDER BY / LIMIT, nested queries and set operations; every gold query returns a non-empty result.
    `load()` first builds the databases into `build_dir` (once; rebuilt when a script changes), then
    reads the questions like Spider, with qids `demo_<index>`.
    """

    def __init__(
        self,
        *,
        build_dir: str,
        name: str = "demo",
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        on_missing_db: str = "skip",
    ) -> None:
        super().__init__(
            root=build_dir, questions=str(DEMO_DIR / "questions.json"), db_dir=".", split="demo", name=name,
            limit=limit, sample=sample, seed=seed, on_missing_db=on_missing_db,
        )
        self.build_dir = self.root

    def _read(self) -> list[Example]:
        build_demo(self.build_dir)
        return super()._read()
