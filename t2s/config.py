"""The root structured config (registered once, in `register_configs`) and the config resolvers.

The schema types every top-level key, so `t2s run seeed=1` or `run.bach_size=4` fails at composition
with Hydra's "Key 'seeed' not in 'T2SConfig'". Stage, dataset, LLM and logger nodes are `Any`: their
keys are checked against the plugin constructor's signature when the pipeline builds them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

_CHECKOUT = Path(__file__).resolve().parents[1]
#: the source checkout this package runs from (`conf/` beside `t2s/`), or None for an installed wheel
SOURCE_ROOT: Path | None = (_CHECKOUT if (_CHECKOUT / "conf" / "config.yaml").is_file()
                             and (_CHECKOUT / "pyproject.toml").is_file() else None)
#: where relative paths in the config (`data/`, `.cache`, `outputs`) and the lock file are taken from: the checkout,
#: or for an installed package the working directory `t2s` was started in
PROJECT_ROOT = SOURCE_ROOT if SOURCE_ROOT is not None else Path.cwd()
#: the config tree: `conf/` of the checkout, or the copy a wheel ships as package data (`t2s/conf/`, see setup.py)
CONF_DIR = SOURCE_ROOT / "conf" if SOURCE_ROOT is not None else Path(__file__).resolve().parent / "conf"


@dataclass
class RunConf:
    """How the pipeline runs: questions per batch (what an LLM backend may batch), resume behaviour, progress bars,
    whether a run with pipeline errors counts as finished."""

    batch_size: int = 8
    #: re-running in a directory that has results resumes from them; False starts over (moving old files aside)
    resume: bool = True
    progress: bool = True
    #: answer repeated LLM requests from the persistent response cache (paths.cache_dir/llm_cache.sqlite)
    llm_cache: bool = True
    #: a run in which some question has no answer because a stage raised on it (a damaged cache or artifact, a
    #: backend error) exits 0 and is recorded as finished; false: it exits 1 and is recorded as failed. Either way the
    #: errors are counted (run.json, metrics.json, the summary line) and the next invocation retries those questions
    allow_errors: bool = False


@dataclass
class DBConf:
    """Execution of model-written SQL by stages (fixers, probers, selectors): time limit (s), row cap, worker processes,
    memory bounds (a query over one gets status `resource_limit`)."""

    timeout: float = 10.0
    max_rows: int = 1000
    workers: int = 1
    #: distinct sample values per column and first rows per table that introspection keeps (schema formats show them)
    sample_values: int = 3
    sample_rows: int = 3
    #: address-space limit of each executor worker process (MB; 0 = none) and byte budget of one query's rows (MB)
    max_memory_mb: int = 1024
    max_result_mb: float = 256.0


@dataclass
class EvalConf:
    """Scoring: semantics ("spider" test-suite or "bird" set comparison), per-query time limit (s), worker processes."""

    semantics: str = "spider"
    timeout: float = 30.0
    workers: int = 2
    keep_distinct: bool = False
    exact_match: bool = True
    ves: bool = False
    ves_iterations: int = 100
    soft_f1: bool = False
    #: examples of each error category kept in the report
    error_examples: int = 3
    #: memory bounds of the scoring workers, as `db.max_memory_mb` / `db.max_result_mb` (not part of the eval fingerprint)
    max_memory_mb: int = 1024
    max_result_mb: float = 256.0


@dataclass
class ServeConf:
    """`t2s serve`: address, micro-batching (questions arriving within `max_wait_ms` share one pipeline batch of at
    most `max_batch`), the row cap of returned results. Queries run with `db.timeout` as their time limit."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_rows: int = 1000
    log_level: str = "info"


@dataclass
class PathsConf:
    """Where data, caches and outputs live. `shared_fs`: `cache_dir` and `output_root` are on a filesystem several
    machines share (NFS, Lustre, GPFS: a SLURM cluster's home or project space). Then every SQLite cache under
    `cache_dir` uses a rollback journal (`journal_mode=DELETE`) instead of WAL, which SQLite does not support across
    machines, and a run directory is held with a lease file that excludes processes on every machine, besides the
    `flock` that many such filesystems keep per machine (docs/cluster.md). Off (local disk): WAL, and `flock` only."""

    data_root: str = "data"
    cache_dir: str = ".cache"
    output_root: str = "outputs"
    shared_fs: bool = False


@dataclass
class T2SConfig:
    """Root of every t2s config (conf/config.yaml)."""

    dataset: Any = None
    schema_format: Any = None
    llm: Any = None
    llms: dict[str, Any] = field(default_factory=dict)
    #: how stages that write SQL decode (conf/decoding/: free, sql, sql_strict); stages take it as `decoding: ${decoding}`
    decoding: Any = None
    embedder: Any = None
    embedders: dict[str, Any] = field(default_factory=dict)
    value_retriever: Any = None
    example_retriever: Any = None
    schema_linker: Any = None
    prober: Any = None
    generator: Any = None
    fixer: Any = None
    corrector: Any = None
    verifier: Any = None
    selector: Any = None
    logger: Any = None
    experiment: Any = None
    seed: int = 0
    run: RunConf = field(default_factory=RunConf)
    db: DBConf = field(default_factory=DBConf)
    eval: EvalConf = field(default_factory=EvalConf)
    paths: PathsConf = field(default_factory=PathsConf)
    serve: ServeConf = field(default_factory=ServeConf)
    #: USD per 1M tokens by model id: {model_id: {prompt: float, completion: float}}; turns tokens into money
    prices: dict[str, Any] = field(default_factory=dict)
    #: free-form notes recorded with the run (e.g. what an experiment reproduces)
    notes: str = ""


def run_name(overrides: Any) -> str:
    """A directory name for a list of overrides (or Hydra's override_dirname string); "default" when empty.

    Deterministic, so the same command line maps to the same run directory (and resumes). Values of secret
    keys (`t2s.track.secrets.is_secret_key`) are replaced by `<redacted>`. Long names are cut and suffixed with a
    hash of the whole.
    """
    from t2s.track.secrets import redact, scrub_overrides

    if isinstance(overrides, str):
        text = redact(overrides)
    else:
        text = ",".join(sorted(scrub_overrides([str(o) for o in overrides])))
    if not text:
        return "default"
    safe = re.sub(r"[^A-Za-z0-9=,._+\-@]", "_", text)
    if safe != text and len(safe) <= 120:
        # replaced characters could make two command lines share a name: keep them apart
        safe = safe + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    if len(safe) > 120:
        safe = safe[:100] + "-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    return safe


def _project_path(p: str) -> str:
    path = Path(str(p)).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


_registered = False


def register_configs() -> None:
    """Register the root schema and the `t2s.*` resolvers. Idempotent; called by every entry point."""
    global _registered
    if _registered:
        return
    ConfigStore.instance().store(name="t2s_root_schema", node=T2SConfig)
    OmegaConf.register_new_resolver("t2s.path", _project_path, replace=True)
    OmegaConf.register_new_resolver("t2s.run_name", run_name, replace=True)
    _registered = True


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """`conf/config.yaml` composed with `overrides` as `t2s run` would, for use outside the Hydra app (`t2s prepare`,
    `t2s serve`, tests, notebooks).

    Hydra's own node is dropped except `hydra.runtime.choices` (the option chosen in each group), from which option
    names are read (`t2s.run.checks.option_choices`).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    # inside a running Hydra app (`t2s train` composing its generation runs) the app's Hydra is set aside and put back
    gh = GlobalHydra.instance()
    outer = gh.hydra if gh.is_initialized() else None
    if outer is not None:
        gh.clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides or []), return_hydra_config=True)
    finally:
        if outer is not None:
            gh.clear()
            gh.initialize(outer)
    choices = {str(k): v for k, v in OmegaConf.to_container(cfg.hydra.runtime.choices).items()}  # type: ignore[union-attr]
    with open_dict(cfg):
        del cfg["hydra"]
        cfg["hydra"] = {"runtime": {"choices": choices}}
    return cfg


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data with every interpolation resolved (Hydra's own node excluded)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    c.pop("hydra", None)
    return c
