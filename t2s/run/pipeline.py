"""Building stages from config and running them over batches of tasks, with traces.

`ConfigError` and `check_arguments` live in `t2s.run.checks` and are re-exported here.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from t2s.run.checks import (  # noqa: F401 - ConfigError and check_arguments are re-exported
    ConfigError,
    check_arguments,
    module_name,
    option_choices,
    option_name,
)
from t2s.stages import STAGE_GROUPS, WRITABLE_FIELDS, Stage, stage_kind
from t2s.types import Task, TraceEvent, Usage

log = logging.getLogger("t2s")


def build_stage(group: str, node: DictConfig | dict[str, Any], name: str | None = None) -> Stage:
    """Instantiate the stage of config group `group` and check it is a plugin of that kind.

    `name` is the option's name (its YAML file's name); by default the `_target_`'s module name.
    """
    kind = stage_kind(group)
    check_arguments(group, node)
    try:
        stage = instantiate(node, _convert_="all")
    except InstantiationException as e:
        raise ConfigError(f"{group}: building {node.get('_target_')} failed: {e.__cause__ or e}") from e
    if not isinstance(stage, kind):
        raise ConfigError(f"{group}: {node.get('_target_')} is a {type(stage).__name__}, not a {kind.__name__}")
    stage.name = name or module_name(node)
    return stage


def build_stages(cfg: DictConfig, choices: dict[str, str] | None = None) -> list[Stage]:
    """Every configured stage in pipeline order (a group set to null is left out), named after its option file."""
    choices = option_choices(cfg) if choices is None else choices
    out = []
    for group in STAGE_GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        out.append(build_stage(group, node, option_name(group, node, choices)))
    return out


def _sqls(task: Task, stage: Stage) -> list[str]:
    if "final_sql" in stage.writes:
        return [task.final_sql] if task.final_sql is not None else []
    return [c.sql for c in task.candidates]


def _describe(before: dict[str, Any], after: dict[str, Any]) -> str:
    changes = []
    for key, b in before.items():
        a = after[key]
        if a == b:
            continue
        if key == "final_sql":
            changes.append("final_sql set")
        elif isinstance(a, list) and isinstance(b, list) and len(a) != len(b):
            changes.append(f"{key} {len(a) - len(b):+d}")
        else:
            changes.append(f"{key} changed")
    return ", ".join(changes) or "unchanged"


def _state(task: Task, fields: tuple[str, ...]) -> dict[str, Any]:
    """What a stage may change of a task (its kind's `writes`), comparable before and after the stage."""
    out: dict[str, Any] = {}
    for f in fields:
        v = getattr(task, f)
        out[f] = [c.to_dict() if hasattr(c, "to_dict") else c for c in v] if isinstance(v, list) else v
    return out


def _saved(task: Task) -> dict[str, Any]:
    return copy.deepcopy({f: getattr(task, f) for f in (*WRITABLE_FIELDS, "dropped", "next_id")})


def _settle_candidates(task: Task, ids_before: list[str], pool_before: list[Any]) -> None:
    """After a stage: number new candidates and keep the ones that left the pool in `task.dropped`."""
    task.number_candidates()
    now = {c.id for c in task.candidates}
    task.dropped.extend(c for c, cid in zip(pool_before, ids_before) if cid not in now)


class Pipeline:
    """The configured stages in order. `run_batch` runs each over one batch and appends a `TraceEvent` per task."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages

    def setup(self, env: Any) -> None:
        for stage in self.stages:
            stage.setup(env)

    def run_batch(self, tasks: list[Task]) -> None:
        """Run every stage over the batch. A question on which a stage raises gets `task.error`, an event with the
        error, and no later stage; the other questions go on. If every question of a batch of several fails
        alone too, the failure is systematic (a bug, a broken model) and the run stops with the error."""
        active = [t for t in tasks if t.error is None]
        for stage in self.stages:
            if not active:
                break
            self._run_stage(stage, active)
            active = [t for t in active if t.error is None]

    def _run_stage(self, stage: Stage, tasks: list[Task]) -> None:
        saved = [_saved(t) for t in tasks]
        befores = []
        for task in tasks:
            task.usage = Usage()
            task.number_candidates()
            befores.append((_state(task, stage.writes), [c.sql for c in task.candidates], [c.id for c in task.candidates],
                            list(task.candidates)))
        start = time.perf_counter()
        try:
            stage.run(tasks)
        except Exception as e:  # noqa: BLE001 - isolate the question, see run_batch
            for task, fields in zip(tasks, saved):
                for f, v in fields.items():
                    setattr(task, f, v)
                task.usage = Usage()
            if len(tasks) > 1:
                log.warning("stage %s failed on a batch of %d (%s: %s); retrying one question at a time",
                            stage.origin, len(tasks), type(e).__name__, e)
                for task in tasks:
                    self._run_stage(stage, [task])
                if all(t.error is not None for t in tasks):
                    raise RuntimeError(
                        f"stage {stage.origin} ({type(stage).__name__}) failed on every question of the batch "
                        f"{[t.qid for t in tasks][:8]}: {type(e).__name__}: {e}") from e
                return
            task = tasks[0]
            task.error = f"{stage.origin}: {type(e).__name__}: {e}"
            log.warning("question %s: %s (the question has no answer in this run; the next invocation retries it)", task.qid, task.error)
            task.trace.append(TraceEvent(stage=stage.kind, plugin=stage.name, change="failed",
                                         seconds=time.perf_counter() - start, sql_before=befores[0][1],
                                         sql_after=befores[0][1], error=task.error))
            return
        per_task = (time.perf_counter() - start) / max(1, len(tasks))
        for task, (state, sql_before, ids_before, pool_before) in zip(tasks, befores):
            _settle_candidates(task, ids_before, pool_before)
            u = task.usage
            task.trace.append(TraceEvent(
                stage=stage.kind, plugin=stage.name, change=_describe(state, _state(task, stage.writes)),
                seconds=per_task, llm_calls=u.llm_calls, cached_calls=u.cached_calls, completions=u.completions,
                prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                model_seconds=u.model_seconds, db_seconds=u.db_seconds, db_queries=u.db_queries,
                models=u.models, sql_before=sql_before, sql_after=_sqls(task, stage),
            ))
            task.usage = Usage()
