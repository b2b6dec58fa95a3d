"""The install lock (`requirements.lock` at the project root): the resolved versions `make` installs, read back
to warn when a run's installed versions differ from it.

`make lock` writes the file (docs/security.md is about secrets; docs/decisions.md, "Reproducible installs",
about this): every distribution of a fresh `make`-style install, one `name==version` per line, local version
labels (`+cpu`) dropped so the file works as pip constraints on any machine.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from t2s.config import PROJECT_ROOT

log = logging.getLogger("t2s")

LOCK_FILE = PROJECT_ROOT / "requirements.lock"
_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503: lower case, runs of `-_.` as one `-`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path | None = None) -> dict[str, str]:
    """`{canonical name: version}` from a lock file (empty when it does not exist); comments and options skipped."""
    f = Path(path) if path is not None else LOCK_FILE
    if not f.is_file():
        return {}
    out: dict[str, str] = {}
    for line in f.read_text(encoding="utf-8").splitlines():
        m = _LINE.match(line)
        if m:
            out[canonical(m.group(1))] = m.group(2)
    return out


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def lock_mismatches(versions: dict[str, str | None], lock: dict[str, str] | None = None) -> dict[str, dict[str, str | None]]:
    """Packages of `versions` (name -> installed version or None) whose version differs from the lock (local
    labels ignored: `2.13.0+cpu` matches `2.13.0`); packages the lock does not list are not compared."""
    lock = read_lock() if lock is None else lock
    out: dict[str, dict[str, str | None]] = {}
    for name, installed in versions.items():
        locked = lock.get(canonical(name))
        if locked is not None and (installed is None or _public(installed) != _public(locked)):
            out[name] = {"installed": installed, "locked": locked}
    return out


def warn_if_versions_differ(versions: dict[str, str | None], lock_path: Path | None = None) -> dict[str, dict[str, str | None]]:
    """Log one warning listing the packages whose installed version differs from the lock; returns them."""
    diff = lock_mismatches(versions, read_lock(lock_path))
    if diff:
        listing = ", ".join(f"{k} {v['installed']} (lock: {v['locked']})" for k, v in sorted(diff.items()))
        log.warning("installed versions differ from %s: %s. Results may not reproduce across machines; `make venv` "
                    "installs the locked versions (`make lock` refreshes the lock).", lock_path or LOCK_FILE.name, listing)
    return diff
