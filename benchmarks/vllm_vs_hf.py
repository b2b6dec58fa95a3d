"""vLLM against transformers on the demo set: the same greedy SQL, EX of each, seconds.

Runs the default zero-shot pipeline on the demo set (`dataset=demo`, 55 questions) twice with the embedded 0.5B model
and the LLM response cache off: once with `llm=embedded_hf` (transformers, batch 8) and once with `llm=vllm
llm.model=embedded` (vLLM in-process, the whole set in one batch), in the same dtype and the same number of threads.
Prints one row per backend (EX, seconds of the whole run and of the model alone, completion tokens, finish reasons)
and how many questions got the same final SQL from both, then lists the questions that differ: finish reasons on
each side, the first token where the two answers part, and by how many nats the hf model prefers its own token there
(a near tie, a few hundredths of a nat, is what different bf16 kernels flip). Needs vLLM: run it in the vLLM
lane (`make venv-vllm`):

    T2S_DATA=../shared/data .venv-vllm/bin/python benchmarks/vllm_vs_hf.py [--limit 55] [--threads 1]

`--threads N` gives the hf backend N torch threads and binds vLLM's worker to cores 0..N-1
(`VLLM_CPU_OMP_THREADS_BIND`); `--eager` runs vLLM without torch.compile.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_backend(overrides: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], float]:
    """(metrics, predictions rows, trace rows, wall seconds) of one pipeline run in a temporary directory."""
    from hydra import compose, initialize_config_dir

    from t2s.config import CONF_DIR
    from t2s.run.runner import run

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = run(cfg, run_dir=Path(tmp) / "run")
        wall = time.perf_counter() - start
        preds = [json.loads(line) for line in (Path(tmp) / "run" / "predictions.jsonl").read_text().splitlines()]
        traces = [json.loads(line) for line in (Path(tmp) / "run" / "traces.jsonl").read_text().splitlines()]
    return metrics, preds, traces, wall


def near_ties(overrides: list[str], qids: list[str], hf_raw: dict[str, str], vllm_raw: dict[str, str],
              threads: int) -> dict[str, dict[str, Any]]:
    """Where each differing answer first parts: the token index, both tokens, and how many nats the hf model
    prefers its own token there (`logprob(hf token) - logprob(vLLM token)` after the same prompt and prefix).

    The prompts are the pipeline's own (`ZeroShotGenerator.requests` of the hf config); the margin is scored with
    the hf backend on the same checkpoint and dtype.
    """
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer

    from t2s.config import CONF_DIR
    from t2s.data.base import load_dataset
    from t2s.llm.base import ScoreRequest
    from t2s.llm.hf import HFLLM
    from t2s.llm.models import resolve_model
    from t2s.run.runner import build_pipeline
    from t2s.types import Task

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    data = load_dataset(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline, env = build_pipeline(cfg, data.examples, Path(tmp))
        try:
            generator = next(s for s in pipeline.stages if hasattr(s, "requests"))
            tasks = [Task(example=ex) for ex in data.examples if ex.qid in qids]
            requests = {task.qid: req for task, _, req in generator.requests(tasks)}
        finally:
            env.close()
    tok = AutoTokenizer.from_pretrained(resolve_model("embedded", cfg.paths.cache_dir))
    llm = HFLLM(model="embedded", dtype=str(cfg.llm.dtype), cache_dir=str(cfg.paths.cache_dir), num_threads=threads)
    out = {}
    for q in qids:
        a = tok(hf_raw[q], add_special_tokens=False)["input_ids"]
        b = tok(vllm_raw[q], add_special_tokens=False)["input_ids"]
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if k >= min(len(a), len(b)):
            out[q] = {"token": k, "hf": tok.decode(a[k:k + 1]), "vllm": tok.decode(b[k:k + 1]), "margin": None}
            continue
        request = ScoreRequest(messages=requests[q].messages,
                               continuations=(tok.decode(a[:k + 1]), tok.decode(b[:k + 1])))
        lp = llm.score([request])[0].logprobs
        out[q] = {"token": k, "hf": tok.decode(a[k:k + 1]), "vllm": tok.decode(b[k:k + 1]), "margin": lp[0] - lp[1]}
    llm.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=55, help="first N demo questions (55: all)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kv-cache-gb", type=float, default=1.0)
    ap.add_argument("--eager", action="store_true", help="vLLM without torch.compile (enforce_eager)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows and the differing questions here")
    args = ap.parse_args()
    os.environ.setdefault("T2S_DATA", str(ROOT.parent / "shared" / "data"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{args.threads - 1}" if args.threads > 1 else "0"
    from t2s.config import register_configs

    register_configs()
    common = ["dataset=demo", f"dataset.limit={args.limit}", "run.llm_cache=false", "run.progress=false"]
    backends = {
        "hf": [*common, "llm=embedded_hf", f"llm.dtype={args.dtype}", f"llm.num_threads={args.threads}"],
        "vllm": [*common, "llm=vllm", "llm.model=embedded", f"llm.dtype={args.dtype}", "llm.max_model_len=4096",
                 f"llm.kv_cache_memory_gb={args.kv_cache_gb}", f"llm.enforce_eager={str(args.eager).lower()}",
                 f"run.batch_size={args.limit}"],
    }
    results = {name: run_backend(overrides) for name, overrides in backends.items()}

    def finals(name: str) -> dict[str, str]:
        return {p["qid"]: p["final_sql"] for p in results[name][1]}

    def reasons(name: str) -> dict[str, list[str]]:
        return {p["qid"]: [c["meta"].get("finish_reason", "?") for c in p["candidates"]] for p in results[name][1]}

    hf_sql, vllm_sql = finals("hf"), finals("vllm")
    differ = sorted((q for q in hf_sql if hf_sql[q] != vllm_sql.get(q)), key=lambda q: int(q.split("_")[-1]))
    same = len(hf_sql) - len(differ)
    rows = []
    for name, (m, _preds, traces, wall) in results.items():
        model_s = sum(e["model_seconds"] for t in traces for e in t["events"])
        tokens = sum(e["completion_tokens"] for t in traces for e in t["events"])
        finish = [f for fs in reasons(name).values() for f in fs]
        rows.append({"backend": name, "questions": m["scored"], "same greedy SQL": f"{same}/{len(hf_sql)}",
                     "EX %": round(m["ex"], 1), "wall s": round(wall, 1), "model s": round(model_s, 1),
                     "completion tokens": tokens,
                     "finish (stop/length/loop)": "/".join(str(finish.count(r)) for r in ("stop", "length", "loop"))})
    print(f"\ndemo set, {args.limit} questions, embedded 0.5B model, {args.dtype}, {args.threads} thread(s), "
          f"response cache off{', vLLM eager' if args.eager else ''}")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")
    hf_reasons, vllm_reasons = reasons("hf"), reasons("vllm")
    raw = {name: {p["qid"]: p["candidates"][0]["meta"]["raw"] for p in results[name][1] if p["candidates"]}
           for name in results}
    ties = near_ties(backends["hf"], differ, raw["hf"], raw["vllm"], args.threads) if differ else {}
    hf_ok = {p["qid"]: p["correct"] for p in results["hf"][1]}
    vllm_ok = {p["qid"]: p["correct"] for p in results["vllm"][1]}
    print(f"\n{len(differ)} question(s) with different final SQL:")
    for q in differ:
        t = ties.get(q, {})
        margin = "n/a" if t.get("margin") is None else f"{t['margin']:.3f}"
        print(f"- {q}: hf {hf_reasons.get(q)} correct={hf_ok.get(q)} | vllm {vllm_reasons.get(q)} "
              f"correct={vllm_ok.get(q)}; first different token #{t.get('token')}: hf {t.get('hf')!r} vs vllm "
              f"{t.get('vllm')!r}, hf prefers its own by {margin} nats\n"
              f"    hf:   {hf_sql[q][:160]!r}\n    vllm: {vllm_sql.get(q, '')[:160]!r}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "differ": [
            {"qid": q, "hf": hf_sql[q], "vllm": vllm_sql.get(q), "hf_finish": hf_reasons.get(q),
             "vllm_finish": vllm_reasons.get(q), "hf_correct": hf_ok.get(q), "vllm_correct": vllm_ok.get(q),
             "first_difference": ties.get(q)}
            for q in differ]}, indent=1))


if __name__ == "__main__":
    main()
