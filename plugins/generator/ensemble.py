"""Ensemble generation: several member generators in one stage, every candidate tagged with its member: the
diverse generation of "A Preview of XiYan-SQL: A Multi-Generator Ensemble Framework for Text-to-SQL" (arXiv
2411.08599)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from t2s.config import CONF_DIR
from t2s.db.types import SchemaView
from t2s.env import Env
from t2s.run.checks import ConfigError, node_problems
from t2s.stages import Generator, SchemaFormat
from t2s.types import Task

#: keys of a member node read by the ensemble itself (never passed to the member's constructor)
RESERVED = ("_views_", "_schema_format_")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


class _Batcher:
    """Joins the `env.generate` calls of member threads: when every member still running waits on a call, the calls
    are sent as one `env.generate` per LLM name (members in rank order), and each member gets its own slice back."""

    def __init__(self, env: Env, live: int) -> None:
        self.env = env
        self.live = live
        self.pending: dict[int, tuple[str, list[tuple[Task, Any]]]] = {}
        self.results: dict[int, Any] = {}
        self.cond = threading.Condition()
        #: held around every model call and every execution of a member: backends (llama.cpp) and the SQL
        #: executor are not safe to call from several threads at once
        self.io = threading.RLock()
        #: number of `env.generate` calls sent and their sizes (for tests and the docs' batching claim)
        self.flushes: list[tuple[str, int]] = []

    def generate(self, member: int, name: str, items: Sequence[tuple[Task, Any]]) -> list[Any]:
        with self.cond:
            self.pending[member] = (name, list(items))
            self._flush_if_ready()
            while member not in self.results:
                self.cond.wait()
            out = self.results.pop(member)
        if isinstance(out, BaseException):
            raise out
        return out

    def done(self) -> None:
        with self.cond:
            self.live -= 1
            self._flush_if_ready()

    def _flush_if_ready(self) -> None:
        if not self.pending or len(self.pending) < self.live:
            return
        waiting = sorted(self.pending.items())
        self.pending = {}
        by_llm: dict[str, list[tuple[int, list[tuple[Task, Any]]]]] = {}
        for member, (name, items) in waiting:
            by_llm.setdefault(name, []).append((member, items))
        for name, group in by_llm.items():
            joined = [it for _, items in group for it in items]
            try:
                with self.io:
                    responses = self.env.generate(name, joined) if joined else []
                self.flushes.append((name, len(joined)))
            except BaseException as e:  # noqa: BLE001 - handed to every member of the failed call
                for member, _ in group:
                    self.results[member] = e
                continue
            start = 0
            for member, items in group:
                self.results[member] = responses[start:start + len(items)]
                start += len(items)
        self.cond.notify_all()


class MemberEnv:
    """The environment one member sees: the run's `Env` with the member's schema views (`_views_`: names to keep)
    and schema format (`_schema_format_`), `generate` routed through the ensemble's batcher, and model scoring and
    SQL execution serialized across the member threads."""

    def __init__(self, env: Env, *, index: int, views: list[str] | None, schema_format: SchemaFormat | None,
                 batcher: _Batcher | None = None) -> None:
        self._env = env
        self._index = index
        self._views = views
        self._format = schema_format
        self._batcher = batcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    @property
    def schema_format(self) -> SchemaFormat:
        return self._format or self._env.schema_format

    def generate(self, name: str, items: Sequence[tuple[Task, Any]]) -> list[Any]:
        if self._batcher is None:
            return self._env.generate(name, items)
        return self._batcher.generate(self._index, name, items)

    def score(self, name: str, items: Sequence[tuple[Task, Any]]) -> list[Any]:
        if self._batcher is None:
            return self._env.score(name, items)
        with self._batcher.io:
            return self._env.score(name, items)

    def execute(self, task: Task, sql: str, **kw: Any) -> Any:
        return self.execute_many([(task, sql)], **kw)[0]

    def execute_many(self, items: Sequence[tuple[Task, str]], **kw: Any) -> list[Any]:
        if self._batcher is None:
            return self._env.execute_many(items, **kw)
        with self._batcher.io:
            return self._env.execute_many(items, **kw)

    def view(self, name: str, schema: Any) -> SchemaView:
        return SchemaView(name=name, schema=schema, text=self.schema_format.format(schema))

    def full_view(self, example: Any) -> SchemaView:
        return self.view("full", self._env.schema(example))

    def views(self, task: Task) -> list[SchemaView]:
        """The task's views named in `_views_` (all when not set), in this member's schema format; the full schema
        when the task has none of them (no linker ran, or it made other views)."""
        views = list(task.schemas)
        if self._views is not None:
            views = [v for v in views if v.name in self._views]
        if not views:
            return [self.full_view(task.example)]
        if self._format is None:
            return views
        return [self.view(v.name, v.schema) for v in views]


@dataclasses.dataclass
class Member:
    """One built member: its name (the key in `members`), rank (position, 0 = best), generator and options."""

    name: str
    rank: int
    generator: Generator
    views: list[str] | None
    schema_format: SchemaFormat | None
    format_name: str | None


def _schema_format(name: str, value: Any) -> tuple[SchemaFormat, str]:
    if isinstance(value, str):
        path = CONF_DIR / "schema_format" / f"{value}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in (CONF_DIR / "schema_format").glob("*.yaml"))
            raise ConfigError(f"generator.members.{name}._schema_format_={value!r}: no conf/schema_format/{value}.yaml "
                              f"(options: {', '.join(known)})")
        node, label = OmegaConf.to_container(OmegaConf.load(path), resolve=True), value
    else:
        node, label = value, str(value.get("_target_", "")).split(".")[-1]
    fmt = instantiate(node, _convert_="all")
    if not isinstance(fmt, SchemaFormat):
        raise ConfigError(f"generator.members.{name}._schema_format_ built a {type(fmt).__name__}, not a SchemaFormat")
    return fmt, label


class EnsembleGenerator(Generator):
    """Several member generators run as one stage; each candidate records the member that wrote it.

    `members` maps a member name to any generator config node (a `_target_` plus its arguments: zero_shot with its
    prompt, temperature and n, few_shot, a fine-tuned adapter's LLM name, mcts, ...). Two optional reserved keys per
    member, read here and not passed on: `_views_` (schema view names the member uses, e.g. [S1]; default all of the
    task's views; the full schema when the task has none of them) and `_schema_format_` (an option name from
    conf/schema_format/ or a node; default the run's `schema_format`). A member set to null is left out (how an
    experiment drops a member of the default list: `generator.members.ddl_sampled=null`). Members are listed best first: the position is
    the member rank that selectors use to break ties (`meta["member_rank"]`).

    Members run concurrently in threads over the same batch; their `env.generate` calls are joined so members that
    share an LLM send one batch (one call per LLM name per round of requests). Candidates are appended in member
    order, each with origin `generator/<option>:<member>` and `meta["member"]`, so attribution and `t2s compare` can
    count what each member contributes. Seeds: members with identical requests get identical samples (the cache keys
    on the run's seed): make members differ in prompt, view, format or temperature.
    """

    def __init__(self, *, members: Mapping[str, Any]) -> None:
        members = _plain(members)
        if not isinstance(members, Mapping) or not any(v is not None for v in members.values()):
            raise ConfigError("generator.members must map member names to generator configs (with `_target_`); "
                              "see conf/generator/ensemble.yaml")
        self.members: list[Member] = []
        # a member set to null is left out (how an experiment drops a member of a composed default)
        for rank, (name, node) in enumerate((k, v) for k, v in members.items() if v is not None):
            if not isinstance(node, Mapping) or "_target_" not in node:
                raise ConfigError(f"generator.members.{name} must be a generator config with a `_target_` "
                                  f"(e.g. the content of conf/generator/zero_shot.yaml)")
            node = dict(node)
            views = node.pop("_views_", None)
            fmt_value = node.pop("_schema_format_", None)
            problems = node_problems(f"generator.members.{name}", node, "conf/generator/ensemble.yaml or the experiment")
            if problems:
                raise ConfigError("\n".join(problems))
            try:
                gen = instantiate(node, _convert_="all")
            except Exception as e:
                raise ConfigError(f"generator.members.{name}: building {node['_target_']} failed: "
                                  f"{getattr(e, '__cause__', None) or e}") from e
            if not isinstance(gen, Generator):
                raise ConfigError(f"generator.members.{name}: {node['_target_']} is a {type(gen).__name__}, "
                                  f"not a Generator")
            gen.name = str(name)
            fmt, label = _schema_format(str(name), fmt_value) if fmt_value is not None else (None, None)
            if views is not None and (isinstance(views, str) or not isinstance(views, Sequence)):
                raise ConfigError(f"generator.members.{name}._views_ must be a list of schema view names, e.g. [S1]")
            self.members.append(Member(name=str(name), rank=rank, generator=gen,
                                       views=[str(v) for v in views] if views is not None else None,
                                       schema_format=fmt, format_name=label))
        self.last_batcher: _Batcher | None = None

    def setup(self, env: Env) -> None:
        self.env = env
        for m in self.members:
            m.generator.setup(MemberEnv(env, index=m.rank, views=m.views, schema_format=m.schema_format))  # type: ignore[arg-type]

    def artifacts(self) -> list[Any]:
        out: list[Any] = []
        for m in self.members:
            out.extend(m.generator.artifacts())
        return out

    def run(self, tasks: list[Task]) -> None:
        batcher = _Batcher(self.env, len(self.members))
        self.last_batcher = batcher
        proxies = [[dataclasses.replace(t, candidates=[]) for t in tasks] for _ in self.members]
        errors: list[BaseException | None] = [None] * len(self.members)

        def work(m: Member) -> None:
            try:
                m.generator.env = MemberEnv(self.env, index=m.rank, views=m.views,  # type: ignore[assignment]
                                            schema_format=m.schema_format, batcher=batcher)
                m.generator.run(proxies[m.rank])
            except BaseException as e:  # noqa: BLE001 - re-raised below, in member order
                errors[m.rank] = e
            finally:
                batcher.done()

        threads = [threading.Thread(target=work, args=(m,), name=f"ensemble-{m.name}") for m in self.members]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for m, e in zip(self.members, errors):
            if e is not None:
                raise RuntimeError(f"ensemble member {m.name!r} ({type(m.generator).__name__}) failed: "
                                   f"{type(e).__name__}: {e}") from e
        for m in self.members:
            for task, proxy in zip(tasks, proxies[m.rank]):
                for c in proxy.candidates:
                    c.meta = {**c.meta, "member": m.name, "member_rank": m.rank, "member_origin": c.origin}
                    if m.format_name:
                        c.meta["schema_format"] = m.format_name
                    c.origin = f"{self.origin}:{m.name}"
                    task.candidates.append(c)
