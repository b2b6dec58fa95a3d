"""Serving profile (seed 003, phase 5.4): `t2s serve` with the embedded model, measured from outside over HTTP.

Starts `t2s serve` as its own process (the embedded Qwen2.5-Coder-0.5B-Instruct on the `hf` backend as configured by
default, LLM response cache off so every request reaches the model), then measures:

- cold start: seconds from launching the process to the first `GET /health` 200 (imports, dataset, pipeline set-up,
  model load); the one-time GGUF conversion is done before and reported apart;
- latency per `POST /generate_sql` request (demo questions, `execute=true`): p50 / p95 at concurrency 1 and 8
  (8 client threads; the server batches concurrent questions into one pipeline batch);
- throughput: requests per second and completion tokens per wall second for each phase, and completion tokens
  per model second (prefill included; from the traces);
- peak memory: the server process's peak resident set (VmHWM from /proc), at the end.

    .venv/bin/python benchmarks/serve_latency.py [--requests 4] [--concurrent-requests 8] [--llm embedded] [overrides]

Results are printed and written to outputs/bench/serve_latency.json. The CPU is shared: keep request counts small.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a process (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phase(url: str, questions: list[dict[str, Any]], n: int, concurrency: int) -> dict[str, Any]:
    """Send `n` demo questions with `concurrency` client threads; latency and throughput figures."""
    jobs = [questions[i % len(questions)] for i in range(n)]
    latencies: list[float] = []
    bodies: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(q: dict[str, Any]) -> None:
        start = time.perf_counter()
        r = httpx.post(f"{url}/generate_sql", json={"question": q["question"], "db_id": q["db_id"], "execute": True},
                       timeout=None)  # measure however long it takes on a loaded machine
        took = time.perf_counter() - start
        r.raise_for_status()
        with lock:
            latencies.append(took)
            bodies.append(r.json())

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, jobs))
    wall = time.perf_counter() - start
    tokens = sum(b["trace"]["completion_tokens"] for b in bodies)
    model_s = sum(b["trace"]["model_seconds"] for b in bodies)
    sizes = [b["trace"]["batch_size"] for b in bodies]
    return {
        "concurrency": concurrency, "requests": n, "wall_s": wall,
        "p50_s": percentile(latencies, 0.5), "p95_s": percentile(latencies, 0.95), "mean_s": statistics.mean(latencies),
        "requests_per_s": n / wall, "completion_tokens": tokens, "tokens_per_wall_s": tokens / wall,
        # model time of a batch is split evenly among its rows by the hf backend, so this sums to the model's time
        "completion_tokens_per_model_s": tokens / model_s if model_s else float("nan"),
        "mean_prompt_tokens": statistics.mean(b["trace"]["prompt_tokens"] for b in bodies),
        "mean_batch_size": statistics.mean(sizes), "executed_ok": sum(b["execution"]["status"] == "ok" for b in bodies),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", default="embedded")
    ap.add_argument("--requests", type=int, default=4, help="requests at concurrency 1")
    ap.add_argument("--concurrent-requests", type=int, default=8, help="requests at concurrency 8")
    ap.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    ap.add_argument("overrides", nargs="*", help="extra config overrides for the server, e.g. llm.num_threads=1")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "serve_latency.json"))
    args = ap.parse_args()

    from t2s.data.demo import DEMO_DIR
    from t2s.llm.models import is_named_model, resolve_model

    prep = 0.0
    if is_named_model(args.llm if args.llm != "embedded_1.5b" else "qwen2.5-coder-1.5b"):
        start = time.perf_counter()
        resolve_model(args.llm, args.cache_dir)  # the one-time GGUF -> safetensors conversion, not cold start
        prep = time.perf_counter() - start

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "t2s.cli", "serve", f"llm={args.llm}", "run.llm_cache=false",
           f"paths.cache_dir={args.cache_dir}", f"serve.port={port}", "serve.log_level=warning", *args.overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    log = open(Path(args.out).with_suffix(".server.log"), "w")  # noqa: SIM115 - closed in finally
    launched = time.perf_counter()
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}; see {log.name}")
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        cold = time.perf_counter() - launched
        rss_ready = peak_rss_mb(server.pid)
        questions = json.loads((DEMO_DIR / "questions.json").read_text())
        first = phase(url, questions[:1], 1, 1)  # the first request after start-up (lazy paths, caches)
        c1 = phase(url, questions[1:], args.requests, 1)
        c8 = phase(url, questions[1 + args.requests:], args.concurrent_requests, 8)
        result = {
            "llm": args.llm, "overrides": args.overrides, "model": health["llms"], "stages": health["stages"],
            "model_preparation_s": prep, "cold_start_s": cold, "startup_in_process_s": health["startup_seconds"],
            "first_request_s": first["p50_s"], "peak_rss_mb_at_ready": rss_ready,
            "peak_rss_mb": peak_rss_mb(server.pid), "concurrency_1": c1, "concurrency_8": c8,
            "cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"model {result['model']}; cold start {cold:.1f} s (in-process start-up {health['startup_seconds']:.1f} s; "
          f"model preparation {prep:.1f} s); first request {result['first_request_s']:.2f} s; "
          f"peak RSS {result['peak_rss_mb']:.0f} MiB ({rss_ready:.0f} MiB when ready)")
    print("| concurrency | requests | p50 s | p95 s | req/s | completion tok/s (wall) | completion tok/model s | "
          "mean batch | executed ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in (c1, c8):
        print(f"| {r['concurrency']} | {r['requests']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['requests_per_s']:.2f} "
              f"| {r['tokens_per_wall_s']:.1f} | {r['completion_tokens_per_model_s']:.1f} | {r['mean_batch_size']:.1f} "
              f"| {r['executed_ok']}/{r['requests']} |")
    print(f"[t2s] wrote {args.out}")


if __name__ == "__main__":
    main()
