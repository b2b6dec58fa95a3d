"""The run's named LLMs (`llms.<name>` in the config), each built once, lazily, behind the response cache."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from t2s.llm.base import LLM
from t2s.llm.cache import CachedLLM, ResponseCache


def _plain(config: Any) -> Any:
    """A DictConfig (interpolations resolved) or a mapping as plain Python containers."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            return OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        pass
    return config


class LLMPool:
    """Builds each named LLM from its config on first `get(name)`, once, and wraps it in the response cache.

    `configs` maps names (`generator`, `selector`, ...) to backend configs with a `_target_` (DictConfig nodes
    of the run config, or plain dicts). Names whose configs are identical after interpolation share one
    backend instance (one copy of the weights in memory), but keep separate `stats()`. `cache_path` is the
    SQLite response cache (None, or `enabled_cache=False`: no caching).
    """

    def __init__(
        self,
        *,
        configs: Mapping[str, Any],
        cache_path: Path | None,
        enabled_cache: bool = True,
    ) -> None:
        self.configs = dict(configs)
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.enabled_cache = enabled_cache
        self._cache: ResponseCache | None = None
        self._backends: dict[str, LLM] = {}
        self._named: dict[str, CachedLLM] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"LLMPool(names={self.names}, built={sorted(self._named)}, cache_path={self.cache_path})"

    @property
    def names(self) -> list[str]:
        """The configured LLM names."""
        return sorted(self.configs)

    def __contains__(self, name: object) -> bool:
        return name in self.configs

    @property
    def cache(self) -> ResponseCache | None:
        """The shared response cache (opened on first use), or None when caching is off."""
        if self._cache is None and self.enabled_cache and self.cache_path is not None:
            self._cache = ResponseCache(self.cache_path)
        return self._cache

    def get(self, name: str) -> LLM:
        """The LLM configured as `llms.<name>`, built on first call; later calls return the same object."""
        with self._lock:
            if name in self._named:
                return self._named[name]
            if name not in self.configs:
                known = ", ".join(self.names) or "none"
                raise KeyError(
                    f"no LLM named {name!r}: add `llms.{name}` to the config (e.g. `+llms.{name}=${{llms.generator}}` "
                    f"or a backend from conf/llm/); configured LLMs: {known}"
                )
            config = _plain(self.configs[name])
            if not isinstance(config, Mapping) or "_target_" not in config:
                raise ValueError(
                    f"`llms.{name}` must be a backend config with a `_target_` (see conf/llm/*.yaml), got {config!r}"
                )
            signature = json.dumps(config, sort_keys=True, default=str)
            backend = self._backends.get(signature)
            if backend is None:
                self._check(name, self.configs[name], config)
                backend = self._build(name, config)
                self._backends[signature] = backend
            wrapped = CachedLLM(backend, self.cache)
            self._named[name] = wrapped
            return wrapped

    @staticmethod
    def _check(name: str, node: Any, config: Mapping[str, Any]) -> None:
        """Fail before anything is built when `config` does not bind to its class's constructor (unknown or missing
        keys, a value of the wrong type or range: `t2s.run.checks.bind`). A node of a run config that
        `check_config` passed is not checked again."""
        from t2s.run.checks import ConfigError, bind, is_checked

        if is_checked(node):
            return
        found = bind(config)
        if found.error:
            raise ConfigError(f"`llms.{name}._target_`: {found.summary()}")
        if not found.ok:
            raise ConfigError(f"`llms.{name}` ({found.target}): {found.summary()}")

    @staticmethod
    def _build(name: str, config: Mapping[str, Any]) -> LLM:
        from hydra.utils import instantiate

        try:
            llm = instantiate(dict(config), _convert_="all")
        except Exception as e:
            raise ValueError(f"could not build `llms.{name}` ({config.get('_target_')}): {e}") from e
        if not isinstance(llm, LLM):
            raise TypeError(f"`llms.{name}._target_` built a {type(llm).__name__}, not a t2s.llm.base.LLM")
        return llm

    def built(self) -> list[str]:
        """The names built so far."""
        return sorted(self._named)

    def stats(self) -> dict[str, dict[str, float | int]]:
        """Per built name: calls, cached_calls, backend_calls, prompt/completion tokens, model seconds."""
        return {name: llm.stats.to_dict() for name, llm in sorted(self._named.items())}

    def close(self) -> None:
        """Close every backend once and the cache; the pool can be used again afterwards (rebuilds lazily)."""
        with self._lock:
            for backend in self._backends.values():
                backend.close()
            self._backends.clear()
            self._named.clear()
            if self._cache is not None:
                self._cache.close()
                self._cache = None

    def __enter__(self) -> LLMPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
