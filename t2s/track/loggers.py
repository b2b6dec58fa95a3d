"""Experiment loggers (the `logger` config group): where a run's config, metrics and tables go besides its directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RunLogger:
    """Base logger: does nothing. `logger=none` (the default) uses it as is.

    The runner calls `start` once, `log_metrics` and `log_table` at the end, `log_images` for report plots, and
    `finish(ok)` always (also when the run fails).
    """

    def __init__(self) -> None:
        pass

    def start(self, *, config: dict[str, Any], run_dir: Path, name: str, group: str | None) -> None:
        """Begin logging one run (one Hydra job)."""

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """Final metrics (flat or nested dict of numbers)."""

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table, e.g. per-question results."""

    def log_images(self, images: dict[str, Path]) -> None:
        """PNG plots by name."""

    def finish(self, ok: bool) -> None:
        """Close the run; `ok` is False when the run raised."""
