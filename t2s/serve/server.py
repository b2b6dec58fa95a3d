"""`t2s serve [overrides]`: compose the root config like `t2s run`, start the `Service`, run uvicorn."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from omegaconf import DictConfig

from t2s.config import compose_config, run_name
from t2s.run.checks import ConfigError

log = logging.getLogger("t2s.serve")

#: seconds uvicorn waits for open requests after SIGTERM / SIGINT before cancelling them
GRACEFUL_SHUTDOWN_SECONDS = 5


def compose(overrides: list[str]) -> DictConfig:
    """The root config (conf/config.yaml) with command-line overrides, exactly as `t2s run` composes it
    (`t2s.config.compose_config`, which keeps the chosen option names for stage names)."""
    return compose_config(list(overrides))


def serve_run_dir(cfg: DictConfig, overrides: list[str]) -> Path:
    """Where the served pipeline's stages may write: `<paths.output_root>/serve/<name of the overrides>`."""
    keep = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("serve.")]
    return Path(cfg.paths.output_root) / "serve" / run_name(keep)


def check_serve_config(cfg: DictConfig) -> tuple[str, int]:
    """`(serve.host, serve.port)`, or `ConfigError` naming the key and the value (checked before models load)."""
    host, port = cfg.serve.host, cfg.serve.port
    if not isinstance(host, str) or not host.strip():
        raise ConfigError(f"serve.host={host!r} is not a host to bind: use an address such as 127.0.0.1")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"serve.port={port!r} is not a TCP port: use a number from 1 to 65535")
    for key in ("max_batch", "max_rows"):
        value = cfg.serve[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"serve.{key}={value!r} must be a whole number >= 1")
    wait = cfg.serve.max_wait_ms
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < float("inf"):
        raise ConfigError(f"serve.max_wait_ms={wait!r} must be a number of milliseconds >= 0")
    return host, port


def uvicorn_server(config: Any, service: Any) -> Any:
    """A `uvicorn.Server` whose SIGTERM / SIGINT also stops the service's batcher at once, so no request waits on a
    pipeline that will not answer it (they get a 503 `shutting_down`) and the process exits."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # in a thread, not in the signal handler: the signal may have interrupted a holder of the batcher's lock
            threading.Thread(target=service.shutdown, name="t2s-serve-shutdown", daemon=True).start()

    return Server(config)


def serve(cfg: DictConfig, run_dir: Path) -> None:
    """Load the pipeline and models, then answer HTTP on `serve.host:serve.port` until SIGTERM / SIGINT.

    The `serve.*` keys are checked first (a bad port fails in one line, before any model loads). On a signal the
    batcher stops (waiting requests get a 503), open requests get `GRACEFUL_SHUTDOWN_SECONDS`, and the service
    closes (the executor's workers and the models)."""
    import uvicorn

    from t2s.serve.app import create_app
    from t2s.serve.service import Service

    host, port = check_serve_config(cfg)
    started = time.perf_counter()
    service = Service(cfg, run_dir)
    app = create_app(service)
    print(f"[t2s] serving {' -> '.join(service.stages())} on {service.dataset_name} "
          f"({len(service.databases)} databases); models loaded in {time.perf_counter() - started:.1f} s")
    print(f"[t2s] demo page: http://{host}:{port}/   API: http://{host}:{port}/openapi.json", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=str(cfg.serve.log_level),
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    uvicorn_server(config, service).run()
