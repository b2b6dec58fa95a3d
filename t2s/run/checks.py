"""Checking a composed config before anything loads: every `_target_` node, nested ones included, against its
constructor; every LLM and embedder a plugin names against `llms:` and `embedders:`; all problems reported at once,
each naming the file it comes from.

Also where option names come from: an option's name is its YAML file's name (`conf/generator/zero_shot_n8.yaml` ->
`zero_shot_n8`), read from Hydra's record of the choices it composed (`hydra.runtime.choices`), so variants of one
class stay distinct in traces, attribution and `t2s compare`.
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from t2s.stages import STAGE_GROUPS

#: groups whose option is a single `_target_` node checked here (the stage groups are added to these)
COMPONENT_GROUPS = ("dataset", "schema_format", "logger")


class ConfigError(ValueError):
    """A config value that cannot work, with the key or file that holds it and what to do."""


def option_choices(cfg: Any) -> dict[str, str]:
    """The option chosen for each config group ({"generator": "zero_shot_n8", ...}).

    From the config's own `hydra.runtime.choices` (composed with `return_hydra_config=True`), else from the running
    Hydra app; empty when neither is there (then option names fall back to the `_target_`'s module name).
    """
    try:
        node = OmegaConf.select(cfg, "hydra.runtime.choices") if isinstance(cfg, DictConfig) else None
    except Exception:  # noqa: BLE001 - a config without a hydra node
        node = None
    if node is None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            node = HydraConfig.get().runtime.choices
    if node is None:
        return {}
    return {str(k): str(v) for k, v in dict(node).items() if v is not None}


def module_name(node: Any) -> str:
    """The module name of a node's `_target_` (plugins/generator/zero_shot.py -> zero_shot): the fallback name."""
    target = str(node.get("_target_", "")) if isinstance(node, (dict, DictConfig)) else ""
    parts = target.split(".")
    return parts[-2] if len(parts) >= 2 else target


def option_name(group: str, node: Any, choices: dict[str, str] | None = None) -> str:
    """The option name of a group's node: its YAML file's name when known, else its `_target_`'s module name."""
    if choices and choices.get(group):
        return choices[group].split("/")[-1]
    return module_name(node)


def source_of(group: str, node: Any, choices: dict[str, str] | None = None) -> str:
    """Where a group's node comes from, for error messages."""
    name = option_name(group, node, choices)
    return f"conf/{group}/{name}.yaml (or the experiment file / overrides that changed it)"


def _refs(key: str) -> str | None:
    """"llms" for an argument naming an LLM (`llm`, `*_llm`), "embedders" for one naming an embedder."""
    if key == "llm" or key.endswith("_llm"):
        return "llms"
    if key == "embedder" or key.endswith("_embedder"):
        return "embedders"
    return None


def node_problems(path: str, node: Any, where: str, *, pools: dict[str, set[str]] | None = None) -> list[str]:
    """Every problem of one `_target_` node and the `_target_` nodes inside it: an import that fails, keys the
    constructor does not take, required keys that are missing, and (with `pools`) LLM / embedder names that are not
    declared. Each problem names `path` (the dotted key) and `where` (the file)."""
    problems: list[str] = []
    target = node.get("_target_") if isinstance(node, (dict, DictConfig)) else None
    if isinstance(node, (dict, DictConfig)) and target:
        try:
            cls = get_class(str(target))
        except Exception as e:  # noqa: BLE001 - hydra raises several kinds here
            return [f"{path}._target_={target}: cannot import it ({type(e).__name__}: {e}) — in {where}"]
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            accepted = {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL}
            keys = {str(k) for k in node.keys() if not str(k).startswith("_")}
            unknown = sorted(keys - accepted)
            missing = sorted(n for n in accepted - keys if params[n].default is inspect.Parameter.empty)
            if unknown:
                problems.append(f"{path} ({target}): unknown key(s) {unknown}; accepted keys are {sorted(accepted)} "
                                f"— check {where}")
            if missing:
                problems.append(f"{path} ({target}): missing required key(s) {missing} — set them in {where}")
        if pools is not None:
            for key in node.keys():
                pool = _refs(str(key))
                value = node.get(key)
                if pool and isinstance(value, str) and value not in pools[pool]:
                    declared = ", ".join(sorted(pools[pool])) or "none"
                    problems.append(f"{path}.{key}={value!r} names an {pool[:-1]} that is not declared under `{pool}:` "
                                    f"(declared: {declared}) — fix {where}, or add `{pool}.{value}` (e.g. "
                                    f"`+{pool}.{value}=${{{pool}.{'generator' if pool == 'llms' else 'default'}}}`)")
    if isinstance(node, (dict, DictConfig)):
        for key in node.keys():
            if str(key).startswith("_"):
                continue
            child = node.get(key)
            if isinstance(child, (dict, DictConfig, list, ListConfig)):
                problems += node_problems(f"{path}.{key}", child, where, pools=pools)
    elif isinstance(node, (list, ListConfig)):
        for i, child in enumerate(node):
            problems += node_problems(f"{path}[{i}]", child, where, pools=pools)
    return problems


def check_arguments(group: str, node: DictConfig | dict[str, Any], *, where: str | None = None) -> None:
    """Check one group's node (and the nodes inside it) against their constructors; raise naming the file."""
    if not isinstance(node, (dict, DictConfig)) or not node.get("_target_"):
        raise ConfigError(f"config group '{group}' has no _target_; every option file in conf/{group}/ needs one")
    problems = node_problems(group, node, where or f"conf/{group}/{module_name(node)}.yaml and your overrides")
    if problems:
        raise ConfigError("\n".join(problems))


def config_problems(cfg: DictConfig, choices: dict[str, str] | None = None) -> list[str]:
    """Every problem of a composed run config (components, LLMs, embedders, stage plugins and the names they use)."""
    choices = option_choices(cfg) if choices is None else choices
    problems: list[str] = []
    llms = cfg.get("llms") or {}
    embedders = cfg.get("embedders") or {}
    pools = {"llms": {str(k) for k in llms.keys()}, "embedders": {str(k) for k in embedders.keys()}}
    for group in COMPONENT_GROUPS:
        node = cfg.get(group)
        if node is not None:
            problems += node_problems(group, node, source_of(group, node, choices))
    for pool, group in (("llms", "llm"), ("embedders", "embedder")):
        for name, node in (cfg.get(pool) or {}).items():
            where = (f"the `{group}` option (conf/{group}/{choices.get(group, '?')}.yaml) and your {group}.* / "
                     f"{pool}.* overrides")
            if not isinstance(node, (dict, DictConfig)) or not node.get("_target_"):
                problems.append(f"{pool}.{name} must be a backend config with a `_target_` (options in conf/{group}/)")
                continue
            problems += node_problems(f"{pool}.{name}", node, where)
    for group in STAGE_GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        if not isinstance(node, (dict, DictConfig)) or not node.get("_target_"):
            problems.append(f"{group}: the option has no _target_ (every file in conf/{group}/ needs one)")
            continue
        problems += node_problems(group, node, source_of(group, node, choices), pools=pools)
    return problems


def check_config(cfg: DictConfig, choices: dict[str, str] | None = None) -> None:
    """Raise one `ConfigError` listing every problem of the config (see `config_problems`), before anything loads."""
    problems = config_problems(cfg, choices)
    if problems:
        head = f"{len(problems)} problem(s) in the configuration:" if len(problems) > 1 else "configuration problem:"
        raise ConfigError("\n".join([head, *(f"  - {p}" for p in problems)]))
