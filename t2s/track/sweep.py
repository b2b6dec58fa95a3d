"""Sweep summaries: a Hydra callback that writes the `t2s compare` table of a sweep's jobs into its directory.

Registered under `hydra.callbacks` in conf/config.yaml, so every `t2s run -m ...` ends with
`<sweep dir>/summary.md`, `summary.csv` and the accuracy/cost and attribution plots. Only the jobs of that
sweep are summarized (expanded from its `multirun.yaml`; see `t2s.track.compare.sweep_job_dirs`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from t2s.track.wandb_logger import scrub_overrides

log = logging.getLogger("t2s")


def _sweep_dir(config: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        HydraConfig.instance().set_config(config)
    return Path(str(config.hydra.sweep.dir))


def sweep_command(sweep_dir: Path) -> str:
    """The sweep's overrides as one command line (`t2s run -m a=1,2 b=x`), from its `multirun.yaml`; secret values
    (`llm.api_key=...`) redacted."""
    f = Path(sweep_dir) / "multirun.yaml"
    if not f.is_file():
        return ""
    hydra = (yaml.safe_load(f.read_text()) or {}).get("hydra") or {}
    ov = hydra.get("overrides") or {}
    launcher = [o for o in ov.get("hydra") or [] if str(o).startswith("hydra/launcher")]
    return " ".join(["t2s run -m", *scrub_overrides([str(o) for o in ov.get("task") or []]), *map(str, launcher)])


def summarize_sweep(sweep_dir: Path, *, stem: str = "summary") -> dict[str, Path]:
    """Write `<stem>.md`, `<stem>.csv` and plots for the jobs of the sweep in `sweep_dir`; returns the files."""
    from t2s.track.compare import CompareError, build_comparison, load_run, sweep_job_dirs, write_comparison

    sweep_dir = Path(sweep_dir)
    jobs = sweep_job_dirs(sweep_dir)
    if not jobs:
        raise CompareError(f"{sweep_dir}: no job directories of this sweep (is it a Hydra sweep directory?)")
    cmp = build_comparison([load_run(j) for j in jobs])
    command = sweep_command(sweep_dir)
    files = write_comparison(cmp, sweep_dir, stem=stem, title=f"Sweep summary: {sweep_dir.name}")
    if command:
        md = files["markdown"]
        text = md.read_text().split("\n", 2)
        md.write_text("\n".join([text[0], "", f"`{command}` ({len(jobs)} job(s))", *text[1:]]))
    return files


class SweepSummary(Callback):
    """Hydra callback: when a multirun ends, summarize its jobs in the sweep directory (`summary.md` / `.csv`).

    Also writes the summary when a job fails (the basic launcher stops the sweep there and `on_multirun_end`
    is never called), so an interrupted sweep still shows what finished. Never raises: a summary must not turn
    a finished sweep into a failed one.
    """

    def __init__(self, *, stem: str = "summary") -> None:
        self.stem = stem

    def _write(self, sweep_dir: Path) -> None:
        try:
            files = summarize_sweep(sweep_dir, stem=self.stem)
        except Exception as e:  # noqa: BLE001 - report and carry on
            log.warning("sweep summary for %s not written: %s: %s", sweep_dir, type(e).__name__, e)
            return
        log.info("sweep summary: %s", files["markdown"])
        print(f"[t2s] sweep summary: {files['markdown']}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarize the sweep's jobs (runs in the launching process, after every job returned)."""
        self._write(_sweep_dir(config))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """In a multirun, summarize what exists so far when a job failed."""
        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return
        self._write(_sweep_dir(config))
