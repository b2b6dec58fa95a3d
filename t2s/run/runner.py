"""`run(cfg) -> metrics`: one pipeline run over a dataset, resumable, scored, reported.

The Hydra app (`t2s run`, `python -m t2s.run`) is a thin wrapper around this function, so tests and
notebooks call it directly with a composed config and a run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import random
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from t2s.artifacts import ArtifactStore, BuildRecord, offline_cost
from t2s.config import PROJECT_ROOT, register_configs, resolved
from t2s.data.base import load_dataset
from t2s.db.execute import SQLExecutor
from t2s.embed import EmbedderPool
from t2s.env import Env
from t2s.eval.report import accounting, unscored_clause, write_report
from t2s.eval.scorer import Scorer, summarize
from t2s.integrity import DamagedFileError, configure_storage
from t2s.llm.pool import LLMPool
from t2s.run.checks import ConfigError, check_arguments, check_config, option_choices
from t2s.run.pipeline import Pipeline, build_stages
from t2s.run.store import ARTIFACTS, CONFIG, ERRORS, METRICS, REPORT, PipelineErrorsError, RunStore, write_json
from t2s.stages import STAGE_GROUPS, SchemaFormat
from t2s.track.lockfile import warn_if_versions_differ
from t2s.track.loggers import RunLogger
from t2s.track.secrets import scrub_overrides, strip_secrets
from t2s.types import Example, Task

log = logging.getLogger("t2s")

KEY_PACKAGES = ("torch", "transformers", "peft", "trl", "sqlglot", "hydra-core", "omegaconf", "faiss-cpu",
                "datasketch", "sentence-transformers", "pytorch-lightning", "wandb", "numpy")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (if imported or importable) with one seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def provenance() -> dict[str, Any]:
    """Installed versions of key packages, the git commit (and whether the tree was dirty), Python, command line."""
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"versions": versions, "git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
            "argv": scrub_overrides(sys.argv), "lock_mismatches": warn_if_versions_differ(versions)}


def _run_dir(run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise ValueError("run(cfg) outside a Hydra app needs run_dir=")
    return Path(HydraConfig.get().runtime.output_dir)


def _record(task: Task, score: dict[str, Any]) -> dict[str, Any]:
    ex = task.example
    return {
        "qid": ex.qid, "db_id": ex.db_id, "question": ex.question, "evidence": ex.evidence,
        "gold_sql": ex.gold_sql, "final_sql": task.final_sql or "", "pipeline_error": task.error,
        "candidates": [c.to_dict() for c in task.candidates],
        "dropped": [c.to_dict() for c in task.dropped],
        **score,
    }


def run(cfg: DictConfig, run_dir: str | Path | None = None, logger: RunLogger | None = None) -> dict[str, Any]:
    """Run the configured pipeline over the dataset into `run_dir` (default: Hydra's output directory).

    Finished questions are appended to `predictions.jsonl` batch by batch; calling `run` again on the same
    directory with the same config resumes, and on a finished run only re-reports. Returns the metrics.

    A question on which a stage raised (a damaged cache or artifact, a backend error) has no answer: it goes to
    `errors.jsonl`, is counted apart (`pipeline_errors` in metrics.json and run.json, the summary line) and is run
    again by the next call. With any such question the run is recorded as failed and `PipelineErrorsError` is
    raised after the results are written, unless `run.allow_errors` is true.
    """
    register_configs()
    start = time.perf_counter()
    choices = option_choices(cfg)
    # every plugin, LLM and embedder reference is checked before anything loads; all problems are reported at once
    check_config(cfg, choices)
    directory = _run_dir(run_dir)
    # secrets (api keys, tokens) never reach the run directory, its fingerprint or a logger
    config = strip_secrets(resolved(cfg))
    seed_everything(int(cfg.seed))
    configure_storage(cfg.paths)
    store = RunStore(directory, shared_fs=bool(cfg.paths.shared_fs))
    data = load_dataset(cfg)
    previous_status = store.state().get("status")
    finished = store.open(config, resume=bool(cfg.run.resume), provenance=provenance())
    (directory / CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    current = {ex.qid for ex in data.examples}
    todo = [ex for ex in data.examples if ex.qid not in finished]
    n_done = len(current & set(finished))
    if logger is None:
        check_arguments("logger", cfg.logger)
        logger = instantiate(cfg.logger, _convert_="all")
    assert logger is not None
    logger.start(config=config, run_dir=directory, name=directory.name,
                 group=directory.parent.name if directory.parent.name != "runs" else None)
    ok = False
    problem: PipelineErrorsError | None = None
    scorer = Scorer.from_config(cfg.eval, cache_dir=Path(cfg.paths.cache_dir))
    try:
        if not todo and (directory / METRICS).exists() and previous_status == "finished":
            log.info("run already finished: results in %s", directory)
            print(f"[t2s] already finished: {n_done} questions, results in {directory}")
        this_call = {"questions_run": 0, "llm_calls": 0, "new_llm_calls": 0, "pipeline_errors": 0}
        if todo:
            log.info("%d question(s) to run, %d already finished in %s", len(todo), n_done, directory)
            this_call = _generate(cfg, data.examples, todo, store, scorer, directory, choices)
        records = [r for r in store.records() if r["qid"] in current]
        records = scorer.rescore_stale(data.examples, records, store)
        traces = {q: t for q, t in store.traces().items() if q in current}
        answered = {r["qid"] for r in records}
        failed = [a for q, a in store.errors().items() if q in current and q not in answered]
        traces.update({a["qid"]: {"qid": a["qid"], "events": a.get("events", [])} for a in failed})
        records += [{k: v for k, v in a.items() if k != "events"} for a in failed]
        metrics = summarize(records, traces, skipped=data.skipped, dataset=data.name, scorer=scorer, config=config)
        metrics["pipeline_errors"]["messages"] = {a["qid"]: a.get("pipeline_error") for a in failed[:50]}
        metrics["accounting"] = accounting(metrics)
        metrics["offline"] = read_offline(directory)
        metrics["options"] = {g: choices[g] for g in STAGE_GROUPS if g in choices}
        metrics["this_call"] = {**this_call, "wall_seconds": time.perf_counter() - start}
        write_json(directory / METRICS, metrics)
        images = write_report(directory / REPORT, metrics, records, error_examples=int(cfg.eval.error_examples))
        logger.log_metrics(metrics)
        logger.log_images(images)
        cols = ["qid", "db_id", "question", "final_sql", "gold_sql", "correct", "status", "error_category"]
        logger.log_table("predictions", cols, [[r.get(c) for c in cols] for r in records])
        if failed and not bool(cfg.run.allow_errors):
            problem = PipelineErrorsError(_errors_message(failed, len(records), store), len(failed))
        store.finish("finished" if problem is None else "failed", pipeline_errors=len(failed),
                     **({"error": str(problem)} if problem is not None else {}))
        ok = problem is None
        _print_summary(metrics, directory)
    except BaseException as e:
        store.finish("failed" if not isinstance(e, KeyboardInterrupt) else "interrupted", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        scorer.close()
        logger.finish(ok)
    if problem is not None:
        raise problem
    return metrics


def _errors_message(failed: list[dict[str, Any]], n: int, store: RunStore) -> str:
    """What a run that ended with pipeline errors tells its user: how many, the first one, where, and what to do."""
    first = failed[0]
    return (f"{len(failed)} of {n} question(s) have no answer because a stage raised on them (pipeline errors, e.g. "
            f"{first['qid']}: {first.get('pipeline_error')}). They are recorded as failed attempts in "
            f"{store.errors_path}, not as answers, and the next invocation of the same command runs them again: fix "
            f"the cause, then rerun it. To accept a run with such questions, set run.allow_errors=true.")


def make_env(cfg: DictConfig, examples: list[Example], run_dir: Path) -> Env:
    """The shared resources of a run: schema format, LLM and embedder pools (lazy), SQL executor, artifact store.
    Close it with `env.close()`."""
    check_arguments("schema_format", cfg.schema_format)
    fmt = instantiate(cfg.schema_format, _convert_="all")
    if not isinstance(fmt, SchemaFormat):
        raise ConfigError(f"schema_format: {cfg.schema_format._target_} is not a t2s.stages.SchemaFormat")
    for name, node in cfg.llms.items():
        # a typo in an LLM's config fails here, before any question runs, not inside the first batch
        check_arguments(f"llms.{name}", node, where="the `llm` option (conf/llm/) and your llm.* / llms.* overrides")
    cache_dir = Path(cfg.paths.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    configure_storage(cfg.paths)
    pool = LLMPool(configs=cfg.llms, cache_path=cache_dir / "llm_cache.sqlite", enabled_cache=bool(cfg.run.llm_cache))
    _ = pool.cache  # opened and checked now: a damaged response cache is refused before anything runs
    embedders = EmbedderPool(configs=cfg.get("embedders") or {}, cache_path=cache_dir / "embeddings.sqlite")
    executor = SQLExecutor(timeout=float(cfg.db.timeout), max_rows=int(cfg.db.max_rows), workers=int(cfg.db.workers),
                           max_memory_mb=int(cfg.db.max_memory_mb), max_result_mb=float(cfg.db.max_result_mb))
    return Env(llms=pool, executor=executor, schema_format=fmt, cache_dir=cache_dir, run_dir=run_dir,
               seed=int(cfg.seed), examples=examples, sample_values=int(cfg.db.sample_values),
               sample_rows=int(cfg.db.get("sample_rows", 3)), embedders=embedders,
               artifacts=ArtifactStore(cache_dir / "artifacts"))


def read_offline(directory: Path) -> dict[str, Any]:
    """The offline cost of a run directory's artifacts (`artifacts.json`, written as the run uses them)."""
    path = directory / ARTIFACTS
    records = json.loads(path.read_text()) if path.is_file() else []
    return offline_cost([BuildRecord(**r) for r in records])


def _save_offline(directory: Path, env: Env) -> None:
    """Merge the artifacts this call used into the run directory's `artifacts.json` (one entry per artifact)."""
    assert env.artifacts is not None
    path = directory / ARTIFACTS
    old = {(r["name"], r["path"]): r for r in (json.loads(path.read_text()) if path.is_file() else [])}
    for r in env.artifacts.records():
        prev = old.get((r.name, r.path))
        entry = dataclasses.asdict(r)
        entry["built_now"] = bool(r.built_now or (prev and prev.get("built_now")))
        old[(r.name, r.path)] = entry
    if old:
        write_json(path, list(old.values()))


def build_pipeline(cfg: DictConfig, examples: list[Example], run_dir: Path,
                   choices: dict[str, str] | None = None) -> tuple[Pipeline, Env]:
    """The configured pipeline, set up on its environment: what `t2s run` uses and what `t2s serve` must reuse.

    Every plugin's arguments are checked before anything loads; stages are named after their option files
    (`choices`, default: from the config). The caller closes the environment (`env.close()`).
    """
    choices = option_choices(cfg) if choices is None else choices
    check_config(cfg, choices)
    stages = build_stages(cfg, choices)
    env = make_env(cfg, examples, run_dir)
    try:
        pipeline = Pipeline(stages)
        pipeline.setup(env)
    except BaseException:
        env.close()
        raise
    return pipeline, env


def _generate(cfg: DictConfig, examples: list[Example], todo: list[Example], store: RunStore, scorer: Scorer,
              directory: Path, choices: dict[str, str] | None = None) -> dict[str, int]:
    """Build the stages and the environment, then run, score and append one batch at a time.

    Returns what this call did: questions run, LLM calls, and LLM calls that reached a model (not the cache).
    """
    done = {"questions_run": 0, "llm_calls": 0, "new_llm_calls": 0, "pipeline_errors": 0}
    pipeline, env = build_pipeline(cfg, examples, directory, choices)
    try:
        size = max(1, int(cfg.run.batch_size))
        with tqdm(total=len(todo), desc="questions", unit="q", disable=not cfg.run.progress) as bar:
            for i in range(0, len(todo), size):
                batch = todo[i: i + size]
                tasks = [Task(example=ex) for ex in batch]
                _run_batch(pipeline, tasks)
                answered = [t for t in tasks if t.error is None]
                failed = [t for t in tasks if t.error is not None]
                scores = scorer.score([t.example for t in answered], {t.qid: t.final_sql or "" for t in answered},
                                      traces=[t.trace for t in answered],
                                      candidates={t.qid: [c.sql for c in t.candidates] for t in answered},
                                      dropped={t.qid: [c.sql for c in t.dropped] for t in answered})
                store.append_errors([_attempt(t, scorer) for t in failed])
                store.append(
                    [_record(t, s) for t, s in zip(answered, scores)],
                    [{"qid": t.qid, "events": [e.to_dict() for e in t.trace]} for t in answered],
                )
                bar.update(len(batch))
                done["questions_run"] += len(batch)
                done["pipeline_errors"] += len(failed)
                for t in tasks:
                    for e in t.trace:
                        done["llm_calls"] += e.llm_calls
                        done["new_llm_calls"] += e.llm_calls - e.cached_calls
    finally:
        _save_offline(directory, env)
        env.close()
    return done


def _run_batch(pipeline: Pipeline, tasks: list[Task]) -> None:
    """`pipeline.run_batch`; a batch that failed whole because a cache or artifact file is damaged raises that error
    itself (it names the file and the fix)."""
    try:
        pipeline.run_batch(tasks)
    except RuntimeError as e:
        cause = e.__cause__
        if isinstance(cause, DamagedFileError):
            raise DamagedFileError(cause.path, cause.problem, cause.fix) from e
        raise


def _attempt(task: Task, scorer: Scorer) -> dict[str, Any]:
    """The record of a question a stage raised on: no answer, not scored, with its trace events."""
    return {**_record(task, {"status": "pipeline_error", "correct": None, "eval_fingerprint": scorer.fingerprint,
                             "difficulty": task.example.difficulty}),
            "events": [e.to_dict() for e in task.trace], "attempted": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _print_summary(metrics: dict[str, Any], directory: Path) -> None:
    ex = metrics.get("ex")
    n = metrics.get("scored", 0)
    cost = metrics.get("cost", {}).get("totals", {})
    line = (f"[t2s] {metrics.get('dataset')}: EX {ex:.1f}% on {n} questions" if ex is not None
            else f"[t2s] {metrics.get('dataset')}: {metrics.get('n', 0)} questions (no gold SQL: not scored)")
    if metrics.get("exact_match") is not None:
        line += f", exact match {metrics['exact_match']:.1f}%"
    unscored = unscored_clause(metrics.get("accounting") or accounting(metrics))
    if unscored:
        line += f"; {unscored}"
    line += (f"; LLM calls {cost.get('llm_calls', 0)}, tokens {cost.get('prompt_tokens', 0)}+"
             f"{cost.get('completion_tokens', 0)}")
    print(line)
    now = metrics.get("this_call", {})
    print(f"[t2s] this invocation: {now.get('questions_run', 0)} question(s) run, "
          f"{now.get('new_llm_calls', 0)} new LLM call(s) ({now.get('llm_calls', 0) - now.get('new_llm_calls', 0)} "
          f"answered by the cache), {now.get('wall_seconds', 0.0):.1f} s")
    errors = metrics.get("pipeline_errors", {}).get("count", 0)
    if errors:
        print(f"[t2s] {errors} question(s) without an answer (pipeline errors, listed in {directory / ERRORS}): the "
              f"next invocation runs them again")
    print(f"[t2s] results: {directory}")
