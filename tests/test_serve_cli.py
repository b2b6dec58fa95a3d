"""`t2s serve [overrides]` end to end: the console command composes the config, serves on 127.0.0.1, answers HTTP,
refuses a bad `serve.*` value in one line before any model loads, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from t2s.config import PROJECT_ROOT
from t2s.run.checks import ConfigError
from t2s.serve.server import check_serve_config, compose, serve_run_dir


def test_serve_run_dir_ignores_serve_keys(tmp_path: Path) -> None:
    cfg = compose([f"paths.output_root={tmp_path}", "llm=tiny"])
    a = serve_run_dir(cfg, ["llm=tiny", "serve.port=9000"])
    b = serve_run_dir(cfg, ["llm=tiny", "serve.port=9001"])
    assert a == b == tmp_path / "serve" / "llm=tiny"
    assert cfg.serve.host == "127.0.0.1", "serves on the loopback interface unless told otherwise"


@pytest.mark.parametrize("override, says", [
    ("serve.port=70000", "serve.port=70000"),
    ("serve.port=-1", "serve.port=-1"),
    ("serve.port=0", "serve.port=0"),
    ("serve.max_batch=0", "serve.max_batch=0"),
    ("serve.max_rows=-5", "serve.max_rows=-5"),
    ("serve.max_wait_ms=-1", "serve.max_wait_ms=-1.0"),
    ("serve.host=' '", "serve.host=' '"),
])
def test_bad_serve_values_are_refused_with_the_key(tmp_path: Path, override: str, says: str) -> None:
    cfg = compose([f"paths.output_root={tmp_path}", "llm=tiny", override])
    with pytest.raises(ConfigError) as e:
        check_serve_config(cfg)
    assert str(e.value).startswith(says)
    assert check_serve_config(compose(["serve.port=8080"])) == ("127.0.0.1", 8080)


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_t2s_serve_with_a_bad_port_exits_in_one_line_before_loading_models(session_cache: Path, tmp_path: Path,
                                                                          port: str) -> None:
    cmd = [sys.executable, "-m", "t2s.cli", "serve", "llm=tiny", f"paths.cache_dir={session_cache}",
           f"paths.output_root={tmp_path}", f"serve.port={port}"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("T2S_DEBUG", None)
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"serve.port={port}" in lines[0] and "1 to 65535" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "models loaded" not in done.stdout
    assert not (tmp_path / "serve").exists(), "nothing was set up"


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
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # it used to hang here when a batch was stuck
        assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
