"""`t2s serve [overrides]`: compose the root config like `t2s run`, start the `Service`, run uvicorn."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from t2s.config import compose_config, run_name

log = logging.getLogger("t2s.serve")


def compose(overrides: list[str]) -> DictConfig:
    """The root config (conf/config.yaml) with command-line overrides, exactly as `t2s run` composes it
    (`t2s.config.compose_config`, which keeps the chosen option names for stage names)."""
    return compose_config(list(overrides))


def serve_run_dir(cfg: DictConfig, overrides: list[str]) -> Path:
    """Where the served pipeline's stages may write: `<paths.output_root>/serve/<name of the overrides>`."""
    keep = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("serve.")]
    return Path(cfg.paths.output_root) / "serve" / run_name(keep)


def serve(cfg: DictConfig, run_dir: Path) -> None:
    """Load the pipeline and models, then answer HTTP on `serve.host:serve.port` until interrupted."""
    import uvicorn

    from t2s.serve.app import create_app
    from t2s.serve.service import Service

    started = time.perf_counter()
    service = Service(cfg, run_dir)
    app = create_app(service)
    host, port = str(cfg.serve.host), int(cfg.serve.port)
    print(f"[t2s] serving {' -> '.join(service.stages())} on {service.dataset_name} "
          f"({len(service.databases)} databases); models loaded in {time.perf_counter() - started:.1f} s")
    print(f"[t2s] demo page: http://{host}:{port}/   API docs: http://{host}:{port}/docs", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=str(cfg.serve.log_level))
