"""`t2s serve [overrides]` end to end: the console command composes the config, serves on 127.0.0.1, answers HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from t2s.config import PROJECT_ROOT
from t2s.serve.server import compose, serve_run_dir


def test_serve_run_dir_ignores_serve_keys(tmp_path: Path) -> None:
    cfg = compose([f"paths.output_root={tmp_path}", "llm=tiny"])
    a = serve_run_dir(cfg, ["llm=tiny", "serve.port=9000"])
    b = serve_run_dir(cfg, ["llm=tiny", "serve.port=9001"])
    assert a == b == tmp_path / "serve" / "llm=tiny"
    assert cfg.serve.host == "127.0.0.1", "serves on the loopback interface unless told otherwise"


@pytest.mark.slow
def test_t2s_serve_command_serves_the_configured_pipeline(session_cache: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "t2s.cli", "serve", "llm=tiny", "generator.max_new_tokens=16",
           f"paths.cache_dir={session_cache}", f"paths.output_root={tmp_path}", f"serve.port={port}",
           "serve.log_level=warning"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"t2s serve exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "t2s serve did not answer /health within 120 s"
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert health["llms"]["generator"].startswith("tiny") and health["dataset"] == "demo"
        r = httpx.post(f"{url}/generate_sql", json={"question": "How many students are there?", "db_id": "school"},
                       timeout=60)
        assert r.status_code == 200 and r.json()["trace"]["llm_calls"] == 1
        r = httpx.post(f"{url}/execute", json={"db_id": "school", "sql": "SELECT count(*) FROM students"}, timeout=60)
        assert r.status_code == 200 and r.json()["rows"][0][0] > 0
        assert "demo page" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
