"""Checking a composed config before anything loads, in one pass (`check_config`): every `_target_` node, nested
ones included, bound to its constructor's signature (unknown keys, missing keys, and each value against the
parameter's annotation and `RULES`); the root sections (`run`, `db`, `eval`, `serve`, ...) against their dataclasses in
`t2s.config`; every LLM and embedder a plugin names against `llms:` and `embedders:`. All problems are reported at
once, each naming the key, the value and the file it comes from. torchtune's `config/_validate.py` is the model.

The pass runs once per config: a config that passed is remembered (with a fingerprint of its content), so the
later checks of its nodes (`build_pipeline`, `build_stage`, the loaders, the LLM pool) return at once, and a node
that changed since, or that does not belong to a checked config, is checked in full.

Also where option names come from: an option's name is its YAML file's name (`conf/generator/zero_shot_n8.yaml` ->
`zero_shot_n8`), read from Hydra's record of the choices it composed (`hydra.runtime.choices`), so variants of one
class stay distinct in traces, attribution and `t2s compare`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import re
import sys
import types
import typing
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from t2s.stages import STAGE_GROUPS

#: groups whose option is a single `_target_` node checked here (the stage groups are added to these)
COMPONENT_GROUPS = ("dataset", "schema_format", "decoding", "logger")

#: where a root section's values (`db.timeout`, `eval.workers`, ...) come from, for error messages
ROOT_WHERE = "fix it on the command line or in the experiment file (defaults and types: t2s/config.py)"


class ConfigError(ValueError):
    """A config value that cannot work, with the key or file that holds it and what to do."""


@dataclass(frozen=True)
class Bound:
    """The range a numeric config value must lie in: `low <= value` (`<` when `low_open`), `value <= high` likewise."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    #: what the bound's edge means (e.g. "0 = no limit"), quoted in the error
    note: str = ""

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else str(x)

        if self.low is not None and self.high is not None:
            text = (f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}"
                    f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {num(self.low)}"
        else:
            assert self.high is not None
            text = f"{'<' if self.high_open else '<='} {num(self.high)}"
        return text + (f" ({self.note})" if self.note else "")


#: the range of a numeric key by its name, wherever the name appears: a root section (`eval.timeout`) or a plugin's
#: constructor (`llm.batch_size`, `generator.temperature`). A name means one thing everywhere it is used; keys not
#: named here have their type checked only. null is never range-checked (it means "not set").
RULES: dict[str, Bound] = {
    "batch_size": Bound(low=1),
    "n": Bound(low=1, note="candidates per question"),
    "limit": Bound(low=0),
    "sample": Bound(low=0),
    "timeout": Bound(low=0, low_open=True, note="seconds"),
    "probe_timeout": Bound(low=0, low_open=True, note="seconds"),
    "workers": Bound(low=0, note="0 = in this process"),
    "max_memory_mb": Bound(low=0, note="0 = no limit"),
    "max_result_mb": Bound(low=0, low_open=True),
    "max_rows": Bound(low=0),
    "sample_values": Bound(low=0),
    "sample_rows": Bound(low=0),
    "error_examples": Bound(low=0),
    "ves_iterations": Bound(low=1),
    "max_new_tokens": Bound(low=1),
    "temperature": Bound(low=0),
    "top_p": Bound(low=0, high=1, low_open=True),
    "num_threads": Bound(low=1, note="or null for the default"),
    "n_threads": Bound(low=1, note="or null for the default"),
    "n_ctx": Bound(low=1),
    "n_batch": Bound(low=1),
    "parallel": Bound(low=1),
    "max_concurrency": Bound(low=1),
    "max_retries": Bound(low=0),
    "tensor_parallel_size": Bound(low=1),
    "gpu_memory_utilization": Bound(low=0, high=1, low_open=True),
    "port": Bound(low=0, high=65535, note="0 = any free port"),
    "max_batch": Bound(low=1),
    "max_wait_ms": Bound(low=0),
}


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



# ---------------------------------------------------------------------------------------------- values


def _show(value: Any) -> str:
    """A config value as the user would write it (`'abc'` for a string, `null`, `true`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_of(value: Any) -> str:
    """What a value is, in words ("a string", "an integer", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (Mapping, DictConfig)):
        return "a mapping"
    if isinstance(value, (list, tuple, ListConfig)):
        return "a list"
    return f"a {type(value).__name__}"


def _members(ann: Any) -> tuple[Any, ...] | None:
    """The members of a union annotation (`int | None`, `Optional[int]`), else None."""
    return get_args(ann) if get_origin(ann) in (Union, types.UnionType) else None


def _fits(value: Any, ann: Any) -> bool | None:
    """Whether `value` is of the annotated type: True, False, or None when the annotation is not one this check
    reads (strings, paths, containers, classes: left to the constructor). Numbers and booleans are strict: `1` is
    not a boolean, `True` and `2.0` are not integers, `'5'` is not a number."""
    if get_origin(ann) is typing.Annotated:
        return _fits(value, get_args(ann)[0])
    members = _members(ann)
    if members is not None:
        results = [_fits(value, m) for m in members]
        if True in results:
            return True
        return None if None in results else False
    if get_origin(ann) is Literal:
        return any(type(value) is type(a) and value == a for a in get_args(ann))
    if ann is type(None) or ann is None:
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return True if isinstance(value, str) else None
    return None


def _expected(ann: Any) -> str:
    """An annotation in words ("an integer or null")."""
    if get_origin(ann) is typing.Annotated:
        return _expected(get_args(ann)[0])
    members = _members(ann)
    if members is not None:
        return " or ".join(dict.fromkeys(_expected(m) for m in members))
    if get_origin(ann) is Literal:
        return "one of " + ", ".join(_show(a) for a in get_args(ann))
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return words.get(ann, getattr(ann, "__name__", str(ann)))


def value_problem(key: str, value: Any, ann: Any) -> str | None:
    """What is wrong with `value` for a key named `key` annotated `ann`, as the text that follows `key`
    (`="abc" is a string; expected an integer or null`, `=0 must be >= 1`); None when nothing is (or nothing can be
    told: an annotation this check does not read)."""
    fits = _fits(value, ann)
    if fits is False:
        return f"={_show(value)} is {_kind_of(value)}; expected {_expected(ann)}"
    rule = RULES.get(key)
    if fits and rule is not None and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and not rule.holds(value):
        return f"={_show(value)} must be {rule}"
    return None


def _value(node: Any, key: str) -> tuple[bool, Any]:
    """(True, the value of `node[key]` with interpolations resolved), or (False, None) when it cannot be read here
    (a mandatory `???` value or an interpolation that does not resolve: the constructor's call reports those)."""
    try:
        return True, node[key]
    except Exception:  # noqa: BLE001 - omegaconf raises several kinds here
        return False, None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations of a class's constructor (a dataclass's fields). An annotation that cannot be
    evaluated (a name imported only for type checkers) is left out, so its key gets no type check."""
    init = cls.__init__
    try:
        return typing.get_type_hints(init, include_extras=True)
    except Exception:  # noqa: BLE001 - fall back to one annotation at a time
        pass
    namespace = dict(vars(sys.modules[cls.__module__])) if cls.__module__ in sys.modules else {}
    out: dict[str, Any] = {}
    for name, ann in getattr(init, "__annotations__", {}).items():
        if isinstance(ann, str):
            try:
                ann = eval(ann, namespace)  # noqa: S307 - what typing.get_type_hints does, one name at a time
            except Exception:  # noqa: BLE001
                continue
        out[name] = ann
    return out


# ---------------------------------------------------------------------------------------------- binding


@dataclass
class Binding:
    """What binding one `_target_` node's keys to its constructor's signature found (`bind`)."""

    target: str
    #: why the `_target_` cannot be imported (then nothing else is checked)
    error: str | None = None
    unknown: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    #: one text per value of the wrong type or out of range: `key=value ...` (see `value_problem`)
    values: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.error or self.unknown or self.missing or self.values)

    def summary(self) -> str:
        """Every problem in one line (for a node checked on its own, e.g. by the LLM pool)."""
        if self.error:
            return f"cannot import {self.target!r} ({self.error})"
        parts = [f"unknown key(s) {', '.join(self.unknown)}"] if self.unknown else []
        parts += [f"missing required key(s) {', '.join(self.missing)}"] if self.missing else []
        parts += self.values
        if self.unknown:
            parts.append(f"accepted keys: {', '.join(self.accepted)}")
        return "; ".join(parts)


def bind(node: Any) -> Binding:
    """Bind a `_target_` node's keys (those not starting with `_`) to its class's constructor: keys it does not take,
    required keys that are missing, and each value against its parameter's annotation and `RULES`. The node's own
    `_target_` nodes inside it are not looked at (`node_problems` walks them)."""
    target = str(node.get("_target_"))
    try:
        cls = get_class(target)
    except Exception as e:  # noqa: BLE001 - hydra raises several kinds here
        return Binding(target, error=f"{type(e).__name__}: {e}")
    found = Binding(target)
    params = inspect.signature(cls.__init__).parameters
    keys = [str(k) for k in node.keys() if not str(k).startswith("_")]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL}
        found.accepted = sorted(accepted)
        found.unknown = sorted(set(keys) - accepted)
        found.missing = sorted(n for n in accepted - set(keys) if params[n].default is inspect.Parameter.empty)
    hints = _hints(cls)
    for key in keys:
        if key not in params or key not in hints:
            continue
        readable, value = _value(node, key)
        problem = value_problem(key, value, hints[key]) if readable else None
        if problem:
            found.values.append(key + problem)
    return found


def _refs(key: str) -> str | None:
    """"llms" for an argument naming an LLM (`llm`, `*_llm`), "embedders" for one naming an embedder."""
    if key == "llm" or key.endswith("_llm"):
        return "llms"
    if key == "embedder" or key.endswith("_embedder"):
        return "embedders"
    return None


def node_problems(path: str, node: Any, where: str, *, pools: dict[str, set[str]] | None = None) -> list[str]:
    """Every problem of one `_target_` node and the `_target_` nodes inside it (`bind`: an import that fails, keys
    the constructor does not take, required keys that are missing, values of the wrong type or range) and, with
    `pools`, LLM / embedder names that are not declared. Each problem names `path` (the dotted key), the value, and
    `where` (the file)."""
    problems: list[str] = []
    target = node.get("_target_") if isinstance(node, (dict, DictConfig)) else None
    if isinstance(node, (dict, DictConfig)) and target:
        found = bind(node)
        if found.error:
            return [f"{path}._target_={target}: cannot import it ({found.error}) — in {where}"]
        if found.unknown:
            problems.append(f"{path} ({target}): unknown key(s) {found.unknown}; accepted keys are {found.accepted} "
                            f"— check {where}")
        if found.missing:
            problems.append(f"{path} ({target}): missing required key(s) {found.missing} — set them in {where}")
        problems += [f"{path}.{text} — fix {where}" for text in found.values]
        if pools is not None:
            for key in node.keys():
                pool = _refs(str(key))
                value = _value(node, str(key))[1] if pool else None
                if pool and isinstance(value, str) and value not in pools[pool]:
                    declared = ", ".join(sorted(pools[pool])) or "none"
                    problems.append(f"{path}.{key}={value!r} names an {pool[:-1]} that is not declared under `{pool}:` "
                                    f"(declared: {declared}) — fix {where}, or add `{pool}.{value}` (e.g. "
                                    f"`+{pool}.{value}=${{{pool}.{'generator' if pool == 'llms' else 'default'}}}`)")
    if isinstance(node, (dict, DictConfig)):
        for key in node.keys():
            if str(key).startswith("_"):
                continue
            child = _value(node, str(key))[1]
            if isinstance(child, (dict, DictConfig, list, ListConfig)):
                problems += node_problems(f"{path}.{key}", child, where, pools=pools)
    elif isinstance(node, (list, ListConfig)):
        for i, child in enumerate(node):
            problems += node_problems(f"{path}[{i}]", child, where, pools=pools)
    return problems


def check_arguments(group: str, node: DictConfig | dict[str, Any], *, where: str | None = None) -> None:
    """Check one group's node (and the nodes inside it) against their constructors; raise naming the file.

    A node of a config that `check_config` passed, unchanged since, is not checked again."""
    if is_checked(node):
        return
    if not isinstance(node, (dict, DictConfig)) or not node.get("_target_"):
        raise ConfigError(f"config group '{group}' has no _target_; every option file in conf/{group}/ needs one")
    problems = node_problems(group, node, where or f"conf/{group}/{module_name(node)}.yaml and your overrides")
    if problems:
        raise ConfigError(_format(problems))


# ---------------------------------------------------------------------------------------------- the whole config


def root_problems(cfg: Any) -> list[str]:
    """Every value of the root config's typed keys (`seed`) and sections (`run`, `db`, `eval`, `serve`, `paths`) that
    is not of its type in `t2s.config.T2SConfig` or is outside `RULES`. A composed config is already typed by Hydra;
    this also covers configs built otherwise, and the ranges, which a type does not say."""
    from t2s.config import T2SConfig

    problems: list[str] = []
    for name, ann in typing.get_type_hints(T2SConfig).items():
        if name not in cfg:
            continue
        readable, value = _value(cfg, name)
        if not readable:
            continue
        if dataclasses.is_dataclass(ann) and isinstance(ann, type):
            if not isinstance(value, (Mapping, DictConfig)):
                continue
            for key, key_ann in typing.get_type_hints(ann).items():
                if key not in value:
                    continue
                readable, item = _value(value, key)
                problem = value_problem(key, item, key_ann) if readable else None
                if problem:
                    problems.append(f"{name}.{key}{problem} — {ROOT_WHERE}")
        else:
            problem = value_problem(name, value, ann)
            if problem:
                problems.append(f"{name}{problem} — {ROOT_WHERE}")
    return problems


def _alias(parent: Any, key: str) -> str | None:
    """The root key that `parent.key` is a bare interpolation of (`llms.generator: ${llm}` -> "llm"), else None."""
    if not isinstance(parent, DictConfig):
        return None
    try:
        raw = parent._get_node(key)._value()  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001
        return None
    match = re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", raw) if isinstance(raw, str) else None
    return match.group(1) if match else None


def config_problems(cfg: DictConfig, choices: dict[str, str] | None = None) -> list[str]:
    """Every problem of a composed run config: the root sections' values, the components (dataset, schema format,
    logger), the LLMs and embedders, the stage plugins and the names they use."""
    choices = option_choices(cfg) if choices is None else choices
    problems = root_problems(cfg)
    llms = cfg.get("llms") or {}
    embedders = cfg.get("embedders") or {}
    pools = {"llms": {str(k) for k in llms.keys()}, "embedders": {str(k) for k in embedders.keys()}}
    for group in COMPONENT_GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        if not isinstance(node, (dict, DictConfig)) or not node.get("_target_"):
            problems.append(f"{group}: the option has no _target_ (every file in conf/{group}/ needs one)")
            continue
        problems += node_problems(group, node, source_of(group, node, choices))
    for pool, group in (("llms", "llm"), ("embedders", "embedder")):
        seen: set[str] = set()
        for name in (cfg.get(pool) or {}).keys():
            # `llms.generator: ${llm}` is the `llm` option itself: its keys are named as the user sets them (llm.*)
            alias = _alias(cfg.get(pool), str(name))
            path = alias if alias == group else f"{pool}.{name}"
            if path in seen:
                continue
            seen.add(path)
            node = _value(cfg.get(pool), str(name))[1]
            where = (f"conf/{group}/{choices.get(group, '?')}.yaml and your {group}.* overrides" if path == group else
                     f"the `{group}` option (conf/{group}/{choices.get(group, '?')}.yaml) and your {group}.* / "
                     f"{pool}.* overrides")
            if not isinstance(node, (dict, DictConfig)) or not node.get("_target_"):
                problems.append(f"{pool}.{name} must be a backend config with a `_target_` (options in conf/{group}/)")
                continue
            problems += node_problems(path, node, where)
    for group in STAGE_GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        if not isinstance(node, (dict, DictConfig)) or not node.get("_target_"):
            problems.append(f"{group}: the option has no _target_ (every file in conf/{group}/ needs one)")
            continue
        problems += node_problems(group, node, source_of(group, node, choices), pools=pools)
    return problems


def _format(problems: list[str]) -> str:
    """One problem on one line; several under a count, one per line."""
    if len(problems) == 1:
        return f"configuration problem: {problems[0]}"
    return "\n".join([f"{len(problems)} problem(s) in the configuration:", *(f"  - {p}" for p in problems)])


#: configs that passed `check_config`: id -> (weak reference, fingerprint of the content when checked)
_CHECKED: dict[int, tuple[weakref.ref[Any], str]] = {}


def _fingerprint(cfg: DictConfig) -> str:
    data = OmegaConf.to_container(cfg, resolve=False)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _root(node: Any) -> Any:
    return node._get_root() if isinstance(node, (DictConfig, ListConfig)) else None


def is_checked(node: Any) -> bool:
    """Whether `node` is (a node of) a config that `check_config` passed and whose content has not changed since."""
    root = _root(node)
    entry = _CHECKED.get(id(root)) if root is not None else None
    return entry is not None and entry[0]() is root and entry[1] == _fingerprint(root)


def check_config(cfg: DictConfig, choices: dict[str, str] | None = None) -> None:
    """Raise one `ConfigError` listing every problem of the config (see `config_problems`), before anything loads.

    The one config check of a run: a config that passes is remembered, so calling this again on it (unchanged)
    returns at once, and so do `check_arguments` and the LLM pool for its nodes."""
    if is_checked(cfg):
        return
    problems = config_problems(cfg, choices)
    if problems:
        raise ConfigError(_format(problems))
    root = _root(cfg)
    if root is cfg:
        key = id(cfg)
        _CHECKED[key] = (weakref.ref(cfg, lambda _ref, key=key: _CHECKED.pop(key, None)), _fingerprint(cfg))
