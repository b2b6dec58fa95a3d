"""benchmarks/gpu_recipe.py's CPU dry run (tiny model, a few steps, 2 dev questions) runs, so the GPU command cannot rot.

In the default suite (about 20 s on 2 cores), not behind the `slow` marker."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from conftest import requires_spider

from t2s.config import PROJECT_ROOT


@requires_spider
def test_gpu_recipe_dry_run(session_cache: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_recipe", PROJECT_ROOT / "benchmarks" / "gpu_recipe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--dry-run", "--out", str(tmp_path / "out"), "--cache", str(session_cache)])
    assert set(results) >= {"base", "sft", "sft_eval", "grpo", "grpo_eval", "total_seconds"}
    assert all(results[p]["ex"] is not None for p in ("base", "sft_eval", "grpo_eval"))
    assert results["sft"]["steps"] == 2 and results["grpo"]["steps"] == 1
    saved = json.loads((tmp_path / "out" / "gpu_recipe.json").read_text())
    assert saved["total_seconds"] == results["total_seconds"]
    assert (tmp_path / "out" / "grpo" / "adapter" / "adapter_config.json").is_file()
