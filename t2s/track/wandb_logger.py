"""`logger=wandb`: one Weights & Biases run per run directory (one Hydra job), offline unless told otherwise.

The run is grouped by sweep (the sweep directory's name), named after its overrides (the run directory's name),
and gets the composed config (secrets stripped), the flattened final metrics, cost and attribution tables, the
per-question table and the report's PNG plots. Its files live in `<run dir>/wandb/` (`offline-run-*/run-*.wandb`
in offline mode; `wandb sync <run dir>/wandb/offline-run-*` uploads them later).
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import yaml

from t2s.track.loggers import RunLogger
from t2s.track.secrets import REDACTED, SECRET_WORDS, is_secret_key, redact, scrub_overrides, strip_secrets  # noqa: F401

log = logging.getLogger("t2s")

#: the file, in a run or training directory, that holds its wandb run id
ID_FILE = "wandb_run_id"


def new_run_id() -> str:
    """A fresh wandb run id: 16 random hex digits (never derived from a path, which two machines can share)."""
    return secrets.token_hex(8)


def run_id_for(directory: Path, *, fresh: bool = False, write: bool = True) -> str:
    """The wandb run id of a run (or training) directory, kept in `<directory>/wandb_run_id`.

    A re-run of the same directory (a resume) reads the id back, so it logs to the same wandb run. A new id, written
    to the file, when there is none yet, or when `fresh`: the directory starts over (`run.resume=false`,
    `train.resume=false`), so its history must not be appended to the old run's. The id is random, so two machines
    whose run directories have the same path get two runs. `write=False` (the other ranks of a multi-process
    training) reads without writing."""
    path = Path(directory) / ID_FILE
    if not fresh and path.is_file():
        old = path.read_text().strip()
        if old:
            return old
    run_id = (None if fresh else _legacy_run_id(Path(directory))) or new_run_id()
    if write:
        replace_run_id(directory, run_id)
    return run_id


def _legacy_run_id(directory: Path) -> str | None:
    """The id an older t2s gave this directory (a hash of its path: 16 hex digits for runs, `t2s-` + 12 for
    trainings), when its `wandb/` folder holds a run of it: a directory from before the id file resumes its run."""
    import hashlib

    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()
    for old in (digest[:16], "t2s-" + digest[:12]):
        if any((directory / "wandb").glob(f"*run-*-{old}")):
            return old
    return None


def replace_run_id(directory: Path, run_id: str) -> None:
    """Record `run_id` as the directory's wandb run id (written atomically)."""
    path = Path(directory) / ID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(run_id + "\n")
    os.replace(tmp, path)


def deleted_run_error(error: BaseException) -> bool:
    """Whether `wandb.init` failed because the server refuses the id of a run deleted in the UI (wandb cannot reuse
    such an id: "run <id> was previously created and deleted; try a new run name")."""
    text = str(error).lower()
    return "deleted" in text and ("previously created" in text or "try a new" in text)


def init_run(init: Any, directory: Path, *, fresh: bool, **kwargs: Any) -> Any:
    """`init(id=..., resume="allow", **kwargs)` with the directory's run id (`run_id_for`); when the server says the
    run was deleted in the UI, once more with a new id, recorded in the directory (a warning says so)."""
    run_id = run_id_for(directory, fresh=fresh)
    try:
        return init(id=run_id, resume="allow", **kwargs)
    except Exception as e:
        if not deleted_run_error(e):
            raise
        new = new_run_id()
        log.warning("wandb run %s of %s was deleted on the server: logging to a new run %s", run_id, directory, new)
        replace_run_id(directory, new)
        return init(id=new, resume="allow", **kwargs)


def flatten(d: Any, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Scalar leaves (numbers, bools, strings) of a nested dict as `a/b/c` keys; lists and None are dropped."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{sep}{k}" if prefix else str(k), sep))
    elif isinstance(d, (bool, int, float, str)):
        out[prefix] = d
    return out


def hydra_overrides(run_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """The task overrides (`.hydra/overrides.yaml`) and config-group choices (`.hydra/hydra.yaml`) of a Hydra job dir.

    Both are empty when the run did not come from a Hydra app (e.g. `run(cfg, run_dir=...)` in a notebook).
    """
    overrides: list[str] = []
    choices: dict[str, Any] = {}
    ov = run_dir / ".hydra" / "overrides.yaml"
    hy = run_dir / ".hydra" / "hydra.yaml"
    if ov.is_file():
        overrides = [str(o) for o in (yaml.safe_load(ov.read_text()) or [])]
    if hy.is_file():
        data = yaml.safe_load(hy.read_text()) or {}
        raw = ((data.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        choices = {str(k): v for k, v in raw.items() if not str(k).startswith("hydra/")}
    return overrides, choices


class WandbLogger(RunLogger):
    """Logs one run to Weights & Biases: config, flattened metrics, cost/attribution/per-question tables, plots.

    `mode` is "offline" by default (the config sets `${oc.env:WANDB_MODE,offline}`), so nothing needs a network;
    `dir` defaults to the run directory. The wandb run id is kept in the run directory (`wandb_run_id`,
    `run_id_for`): re-running a job (a resumed sweep) writes to the same wandb run instead of adding a duplicate;
    `run.resume=false` (the results moved aside) starts a new wandb run; ids are random, so two machines with the
    same run directory path do not share a run; a run deleted in the UI is replaced by a new one. Keys that name
    secrets are stripped from the config, the overrides and the command line before anything is logged.
    """

    def __init__(self, *, project: str = "t2s", entity: str | None = None, mode: str = "offline",
                 dir: str | None = None, tags: list[str] | None = None, job_type: str = "run",
                 log_images: bool = True, log_predictions: bool = True, console: str = "auto") -> None:
        if mode not in ("online", "offline", "disabled", "shared"):
            raise ValueError(f"logger.mode={mode!r}: use offline (default), online or disabled "
                             "(conf/logger/wandb.yaml, or the WANDB_MODE environment variable)")
        self.project = project
        self.entity = entity
        self.mode = mode
        self.dir = dir
        self.tags = list(tags or [])
        self.job_type = job_type
        self.images = log_images
        self.predictions = log_predictions
        self.console = console
        self.run: Any = None
        self.run_dir: Path | None = None

    @staticmethod
    def run_id(run_dir: Path) -> str:
        """The wandb run id a run directory logs to (`<run_dir>/wandb_run_id`; a new one if it has none yet)."""
        return run_id_for(run_dir)

    def start(self, *, config: dict[str, Any], run_dir: Path, name: str, group: str | None) -> None:
        """Initialize the wandb run (in the calling process: each joblib/SLURM job starts its own)."""
        import wandb

        self.run_dir = Path(run_dir)
        target = Path(self.dir) if self.dir else self.run_dir
        target.mkdir(parents=True, exist_ok=True)
        overrides, choices = hydra_overrides(self.run_dir)
        logged = strip_secrets(config)
        logged["_t2s"] = {"run_dir": redact(str(self.run_dir.resolve())), "overrides": scrub_overrides(overrides),
                          "choices": strip_secrets(choices)}
        settings = wandb.Settings(console=self.console, silent=True, disable_code=True, save_code=False,
                                  x_save_requirements=False)
        argv = sys.argv
        sys.argv = [argv[0], *scrub_overrides(argv[1:])]  # wandb records sys.argv[1:] in the run's metadata
        try:
            fresh = (config.get("run") or {}).get("resume") is False  # run.resume=false: the results went aside
            self.run = init_run(wandb.init, self.run_dir, fresh=fresh, project=self.project, entity=self.entity,
                                mode=self.mode, dir=str(target), name=redact(name),
                                group=redact(group) if group else None, job_type=self.job_type,
                                tags=self.tags or None, config=logged, reinit="finish_previous", settings=settings)
        finally:
            sys.argv = argv
        log.info("wandb run %s (%s mode) in %s", self.run.id, self.mode, target / "wandb")

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """Flattened metrics (`cost/means/llm_calls_per_question`, ...) into the run summary, plus cost and
        attribution tables."""
        if self.run is None:
            return
        import wandb

        self.run.summary.update(flatten(metrics))
        cost = metrics.get("cost") or {}
        per_stage = cost.get("per_stage") or {}
        if per_stage:
            fields = sorted({f for v in per_stage.values() for f in v})
            self.run.log({"tables/cost_per_stage": wandb.Table(
                columns=["stage", *fields], data=[[s, *[v.get(f) for f in fields]] for s, v in per_stage.items()])})
        attr = metrics.get("attribution") or {}
        if attr:
            cols = ["stage", "plugin", "n", "fixed", "broken", "unchanged", "input_correct", "overcorrection_rate"]
            self.run.log({"tables/attribution": wandb.Table(columns=cols, data=[[a.get(c) for c in cols] for a in attr.values()],
                                                     allow_mixed_types=True)})

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table as `tables/<name>` (the runner sends `predictions`: question, final SQL, correct, error category)."""
        if self.run is None or (name == "predictions" and not self.predictions):
            return
        import wandb

        data = [[v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for v in row] for row in rows]
        self.run.log({f"tables/{name}": wandb.Table(columns=list(columns), data=data, allow_mixed_types=True)})

    def log_images(self, images: dict[str, Path]) -> None:
        """The report's PNG plots, as `report/<name>`."""
        if self.run is None or not self.images or not images:
            return
        import wandb

        self.run.log({f"report/{k}": wandb.Image(str(p)) for k, p in images.items() if Path(p).is_file()})

    def finish(self, ok: bool) -> None:
        """Close the run (exit code 1 when the job failed); safe to call twice or without `start`."""
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            run.summary["t2s_status"] = "finished" if ok else "failed"
        finally:
            run.finish(exit_code=0 if ok else 1)
