"""Telling secrets apart from config: which keys hold secrets, and scrubbing them from overrides and names.

Used wherever config or command lines leave the process: run directory names, logged configs, wandb runs,
comparison tables.
"""

from __future__ import annotations

import re
from typing import Any

#: a config key is a secret when one of its `_`/`-`/`.`-separated words is one of these (so `hf_token` and
#: `openai_api_key` are secrets, `max_new_tokens` is not)
SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "apikey", "api_key", "credentials", "auth"})
REDACTED = "<redacted>"


def is_secret_key(key: str) -> bool:
    """Whether a config key (plain or dotted, any case) names a secret: api_key, token, secret, password, ...

    Keys ending in `_env` (`api_key_env: OPENAI_API_KEY`) name an environment variable, not a value: kept.
    """
    k = str(key).lower().rsplit(".", 1)[-1]
    if k.endswith("_env"):
        return False
    if "api_key" in k or "apikey" in k or "api-key" in k:
        return True
    words = set(re.split(r"[_\-.\s/]+", k))
    return bool(words & SECRET_WORDS)


def strip_secrets(obj: Any) -> Any:
    """A copy of a nested dict/list config with every secret key (see `is_secret_key`) removed."""
    if isinstance(obj, dict):
        return {k: strip_secrets(v) for k, v in obj.items() if not is_secret_key(str(k))}
    if isinstance(obj, (list, tuple)):
        return [strip_secrets(v) for v in obj]
    return obj


def scrub_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides with the value of every secret key replaced by `<redacted>` (`a.api_key=x` -> `a.api_key=<redacted>`)."""
    out = []
    for o in overrides:
        key, sep, _ = str(o).partition("=")
        out.append(f"{key}{sep}{REDACTED}" if sep and is_secret_key(key.lstrip("+~")) else str(o))
    return out


def redact(text: str) -> str:
    """A run name or path with the values of secret `key=value` parts (split at `,` and `/`) replaced by
    `<redacted>`: Hydra names job directories after their overrides, secrets included."""
    return "/".join(",".join(scrub_overrides(part.split(","))) for part in str(text).split("/"))
