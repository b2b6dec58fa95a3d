"""Telling secrets apart from config: which keys hold secrets, scrubbing them from overrides and names, and keeping
secrets given on the command line out of every file Hydra and t2s write (docs/security.md).

Used wherever config or command lines leave the process: run directory names, logged configs, wandb runs,
comparison tables.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

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


#: environment variable through which `t2s run` hands secret command-line overrides to its jobs (never a file)
SECRET_OVERRIDES_ENV = "T2S_SECRET_OVERRIDES"
#: a file of `NAME=value` lines loaded into the environment at start (variables already set win)
SECRETS_FILE_ENV = "T2S_SECRETS_FILE"
DEFAULT_SECRETS_FILE = "~/.config/t2s/secrets.env"


def split_secret_overrides(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Command-line arguments without the secret `key=value` overrides, and those secrets by key.

    Hydra writes every override into `.hydra/overrides.yaml`, `hydra.yaml`, `config.yaml` and a sweep's
    `multirun.yaml` before any t2s code runs, so a secret must leave the argument list before Hydra sees it.
    The keys lose a leading `+`/`++`/`~`; `hydra.*` arguments are left alone.
    """
    kept: list[str] = []
    secrets: dict[str, str] = {}
    for a in args:
        key, sep, value = a.partition("=")
        bare = key.lstrip("+~")
        if sep and not a.startswith("-") and not bare.startswith("hydra") and is_secret_key(bare):
            secrets[bare] = value
        else:
            kept.append(a)
    return kept, secrets


def export_secret_overrides(secrets: dict[str, str]) -> None:
    """Hand secret overrides to this process's jobs (and the launcher's worker processes) by environment."""
    if secrets:
        os.environ[SECRET_OVERRIDES_ENV] = json.dumps(secrets)


def apply_secret_overrides(cfg: Any) -> list[str]:
    """Put each secret override (`llm.api_key=...`, see `split_secret_overrides`) where its plugin reads it.

    A secret key `<node>.<name>` goes into the environment variable named by the sibling key `<node>.<name>_env`
    (`llm.api_key` -> the variable named by `llm.api_key_env`, e.g. OPENAI_API_KEY), so it never enters the
    config that is saved or logged. Returns the variables set. A node without such a sibling key is a
    `ValueError` saying where secrets go instead (docs/security.md).
    """
    raw = os.environ.get(SECRET_OVERRIDES_ENV)
    if not raw:
        return []
    names: list[str] = []
    for key, value in json.loads(raw).items():
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        var = OmegaConf.select(node, f"{name}_env") if node is not None and OmegaConf.is_config(node) else None
        if not var:
            raise ValueError(
                f"`{key}=...` on the command line: t2s keeps secrets out of configs (Hydra would write them into the "
                f"run directory), and `{parent or 'the root config'}` has no `{name}_env` key naming the environment "
                f"variable that receives it. Set the variable the plugin reads instead (e.g. "
                f"`export OPENAI_API_KEY=...`, or a line in {DEFAULT_SECRETS_FILE}); see docs/security.md.")
        os.environ[str(var)] = value
        names.append(str(var))
    return names


def load_secrets_file(path: str | None = None) -> list[str]:
    """Load a `.env` file (`NAME=value` lines, `#` comments, optional `export ` prefix and quotes; read by
    python-dotenv's `dotenv_values`, without `${VAR}` expansion) from `path`, else `$T2S_SECRETS_FILE`, else
    `~/.config/t2s/secrets.env` when it exists, into the environment.

    Variables already set are kept (the environment wins). Returns the names set. A name without `=value` is a
    `ValueError`; a line python-dotenv cannot parse is skipped with its warning. A file readable by other users gets a
    warning. Keep this file outside run directories and the repository (docs/security.md).
    """
    from dotenv import dotenv_values

    given = path or os.environ.get(SECRETS_FILE_ENV)
    f = Path(given or DEFAULT_SECRETS_FILE).expanduser()
    if not f.is_file():
        if given:
            raise FileNotFoundError(f"secrets file {f} (from {SECRETS_FILE_ENV}) does not exist")
        return []
    if f.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logging.getLogger("t2s").warning("secrets file %s is readable by other users; `chmod 600 %s`", f, f)
    names = []
    for name, value in dotenv_values(f, interpolate=False, encoding="utf-8").items():
        if value is None:
            raise ValueError(f"secrets file {f}: {name!r} has no value; expected NAME=value")
        if name not in os.environ:
            os.environ[name] = value
            names.append(name)
    return names
