"""Building stages from config and running them over batches of tasks, with traces."""

from __future__ import annotations

import copy
import inspect
import logging
import time
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from t2s.stages import STAGE_GROUPS, STAGE_KINDS, Stage
from t2s.types import Task, TraceEvent, Usage

log = logging.getLogger("t2s")

#: the task fields stages write; restored when a stage raises
_OWNED_FIELDS = ("values", "examples", "schemas", "findings", "candidates", "final_sql")


class ConfigError(ValueError):
    """A config value that cannot work, with the key or file that holds it and what to do."""


def option_name(node: Any) -> str:
    """The plugin option name of a config node: the module name of its `_target_` (plugins/generator/zero_shot.py -> zero_shot)."""
    target = str(node.get("_target_", "")) if isinstance(node, (dict, DictConfig)) else ""
    parts = target.split(".")
    return parts[-2] if len(parts) >= 2 else target


def check_arguments(group: str, node: DictConfig | dict[str, Any], *, where: str | None = None) -> None:
    """Bind a node's keys against its `_target_`'s constructor so a misspelled key fails before anything loads."""
    target = node.get("_target_")
    if not target:
        raise ConfigError(f"config group '{group}' has no _target_; every option file in conf/{group}/ needs one")
    try:
        cls = get_class(str(target))
    except Exception as e:  # noqa: BLE001 - hydra raises several kinds here
        raise ConfigError(f"{group}._target_={target}: cannot import it ({e})") from None
    keys = [k for k in node.keys() if not str(k).startswith("_")]
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {n for n, p in params.items() if n != "self"}
    unknown = sorted(set(map(str, keys)) - accepted)
    if unknown:
        raise ConfigError(
            f"{group} ({target}): unknown key(s) {unknown}; accepted keys are {sorted(accepted)} "
            f"(check {where or f'conf/{group}/{option_name(node)}.yaml'} and your overrides)"
        )


def build_stage(group: str, node: DictConfig | dict[str, Any]) -> Stage:
    """Instantiate the stage of config group `group` and check it is a plugin of that kind."""
    kind = STAGE_KINDS[STAGE_GROUPS.index(group)]
    check_arguments(group, node)
    try:
        stage = instantiate(node, _convert_="all")
    except InstantiationException as e:
        raise ConfigError(f"{group}: building {node.get('_target_')} failed: {e.__cause__ or e}") from e
    if not isinstance(stage, kind):
        raise ConfigError(f"{group}: {node.get('_target_')} is a {type(stage).__name__}, not a {kind.__name__}")
    stage.name = option_name(node)
    return stage


def build_stages(cfg: DictConfig) -> list[Stage]:
    """Every configured stage in pipeline order (a group set to null is left out)."""
    out = []
    for group in STAGE_GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        out.append(build_stage(group, node))
    return out


def _sqls(task: Task, stage: Stage) -> list[str]:
    if stage.kind == "selector":
        return [task.final_sql] if task.final_sql is not None else []
    return [c.sql for c in task.candidates]


def _describe(task: Task, before: dict[str, Any], after: dict[str, Any]) -> str:
    changes = []
    for key, b in before.items():
        a = after[key]
        if a == b:
            continue
        if key == "final_sql":
            changes.append("final_sql set")
        elif isinstance(a, int) and isinstance(b, int):
            changes.append(f"{key} {a - b:+d}")
        else:
            changes.append(f"{key} changed")
    return ", ".join(changes) or "unchanged"


def _state(task: Task) -> dict[str, Any]:
    return {
        "values": len(task.values), "examples": len(task.examples), "schemas": len(task.schemas),
        "findings": len(task.findings), "candidates": len(task.candidates),
        "candidate_sql": [c.sql for c in task.candidates], "final_sql": task.final_sql,
    }


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
        saved = [copy.deepcopy({f: getattr(t, f) for f in _OWNED_FIELDS}) for t in tasks]
        befores = []
        for task in tasks:
            task.usage = Usage()
            befores.append((_state(task), [c.sql for c in task.candidates]))
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
            log.warning("question %s: %s (the question is scored as failed; the run goes on)", task.qid, task.error)
            task.trace.append(TraceEvent(stage=stage.kind, plugin=stage.name, change="failed",
                                         seconds=time.perf_counter() - start, sql_before=befores[0][1],
                                         sql_after=befores[0][1], error=task.error))
            return
        per_task = (time.perf_counter() - start) / max(1, len(tasks))
        for task, (state, sql_before) in zip(tasks, befores):
            u = task.usage
            task.trace.append(TraceEvent(
                stage=stage.kind, plugin=stage.name, change=_describe(task, state, _state(task)),
                seconds=per_task, llm_calls=u.llm_calls, cached_calls=u.cached_calls,
                prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                model_seconds=u.model_seconds, db_seconds=u.db_seconds, db_queries=u.db_queries,
                models=u.models, sql_before=sql_before, sql_after=_sqls(task, stage),
            ))
            task.usage = Usage()


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data with every interpolation resolved (Hydra's own node excluded)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    c.pop("hydra", None)
    return c
