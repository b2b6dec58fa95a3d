"""Local inference side by side: a plain llama-cpp-python loop vs t2s with `llamacpp` vs t2s with `hf` (batch 1, 8).

The same zero-shot prompts on the same first N Spider dev questions (issue 9, item 6):

- `plain`: no framework. The prompts t2s's zero-shot generator builds are recorded first (a recording LLM in
  place of `llms.generator`, which also warms the schema and gold-result caches), then one `llama_cpp.Llama` on
  the embedded GGUF answers them in a bare `create_chat_completion` loop (greedy, 256 tokens). Its wall time
  covers model load + the loop; its SQL is extracted and scored afterwards, untimed, by `t2s.eval.evaluate`.
- `llamacpp`, `llamacpp_pN`, `hf1`, `hf8`: `t2s.run.runner.run` with `llm=llamacpp` (embedded GGUF; `_pN`:
  `llm.parallel=N`, N completions decoded together) or `llm=embedded_hf` at `run.batch_size = llm.batch_size =
  1 / 8`, response cache off. Wall time is the whole run (dataset, model load,
  generation, execution, scoring, report).

For each: wall seconds, model seconds, seconds per question outside the model ((wall - model) / N), completion
tokens per model second, EX, and completions that hit the token limit ("length") or were stopped as loops.
Model conversion (hf) and GGUF assembly happen before any timing.

    T2S_DATA=../shared/data .venv/bin/python benchmarks/inference_speed.py --questions 100 [--configs plain,llamacpp,hf8,hf1]
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

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from t2s.config import CONF_DIR, register_configs  # noqa: E402
from t2s.llm.base import LLM, LLMRequest, LLMResponse  # noqa: E402
from t2s.llm.cpu import default_threads  # noqa: E402
from t2s.run.runner import run  # noqa: E402

RECORDED: list[LLMRequest] = []


class Recorder(LLM):
    """A stand-in LLM that records the requests t2s sends and answers with empty text."""

    backend = "recorder"

    @property
    def model_id(self) -> str:
        return "recorder"

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        RECORDED.extend(requests)
        return [LLMResponse(texts=[""] * r.params.n, prompt_tokens=0, completion_tokens=0, seconds=0.0,
                            finish_reasons=["stop"] * r.params.n) for r in requests]


def config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def record_prompts(base: list[str], out: Path) -> tuple[list[LLMRequest], list[str]]:
    """The generator's requests for the questions, in dataset order, and their qids."""
    cfg = config(base)
    with open_dict(cfg):
        cfg.llms.generator = {"_target_": "__main__.Recorder"}
    run(cfg, run_dir=out)
    qids = [json.loads(line)["qid"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    if len(RECORDED) != len(qids):
        raise RuntimeError(f"recorded {len(RECORDED)} requests for {len(qids)} questions (one schema view expected)")
    return list(RECORDED), qids


def plain_loop(requests: list[LLMRequest], qids: list[str], base: list[str], cache_dir: Path, out: Path,
               threads: int) -> dict[str, Any]:
    """The no-framework baseline: llama_cpp.Llama + create_chat_completion in a loop."""
    from llama_cpp import Llama

    from t2s.eval.evaluate import evaluate
    from t2s.llm.models import embedded_gguf
    from t2s.sql.extract import extract_sql

    gguf = embedded_gguf("embedded", cache_dir)
    start = time.perf_counter()
    llm = Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    texts, completion, lengths = [], 0, 0
    for r in requests:
        answer = llm.create_chat_completion(messages=r.message_dicts(), max_tokens=r.params.max_new_tokens,
                                            temperature=0.0)
        texts.append(answer["choices"][0]["message"]["content"] or "")
        completion += answer["usage"]["completion_tokens"]
        lengths += answer["choices"][0]["finish_reason"] == "length"
    wall = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    preds = out / "plain_predictions.jsonl"
    preds.write_text("".join(json.dumps({"qid": q, "sql": extract_sql(t)}) + "\n" for q, t in zip(qids, texts)))
    metrics = evaluate(config(base), preds, out / "eval")
    return {"config": "plain llama-cpp-python loop", "n": len(requests), "wall_s": wall, "model_s": wall,
            "completion_tokens": completion, "ex": metrics["ex"], "length": lengths, "loop": 0}


def t2s_run(name: str, overrides: list[str], out: Path) -> dict[str, Any]:
    cfg = config(overrides)
    start = time.perf_counter()
    m = run(cfg, run_dir=out)
    wall = time.perf_counter() - start
    traces = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    model = sum(e["model_seconds"] for t in traces for e in t["events"])
    tokens = sum(e["completion_tokens"] for t in traces for e in t["events"])
    reasons: dict[str, int] = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        for c in json.loads(line).get("candidates", []):
            for r in (c.get("meta") or {}).get("finish_reasons", [c.get("meta", {}).get("finish_reason")]):
                if r:
                    reasons[r] = reasons.get(r, 0) + 1
    return {"config": name, "n": len(traces), "wall_s": wall, "model_s": model, "completion_tokens": tokens,
            "ex": m["ex"], "length": reasons.get("length", 0) if reasons else "?",
            "loop": reasons.get("loop", 0) if reasons else "?"}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| config | questions | wall s | model s | s/question outside model | completion tok/s | EX % | "
             "length | loop |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        outside = (r["wall_s"] - r["model_s"]) / r["n"] if r["n"] else 0.0
        tps = r["completion_tokens"] / r["model_s"] if r["model_s"] else 0.0
        lines.append(f"| {r['config']} | {r['n']} | {r['wall_s']:.1f} | {r['model_s']:.1f} | {outside:.3f} | "
                     f"{tps:.1f} | {r['ex']:.1f} | {r['length']} | {r['loop']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=100, help="the first N Spider dev questions")
    ap.add_argument("--configs", default="plain,llamacpp,hf8,hf1",
                    help="any of plain, llamacpp, llamacpp_pN (N sequences decoded together), hf1, hf8")
    ap.add_argument("--dataset", default="spider_dev")
    ap.add_argument("--out", default=None, help="JSON file for the rows (default: print only)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for every config (default: t2s.llm.cpu.default_threads())")
    args = ap.parse_args()
    os.environ.setdefault("T2S_DATA", str(ROOT.parent / "shared" / "data"))
    register_configs()
    base = [f"dataset={args.dataset}", f"dataset.limit={args.questions}", "run.llm_cache=false", "run.progress=false"]
    cache_dir = Path(config(base).paths.cache_dir)
    configs = args.configs.split(",")
    threads = args.threads or default_threads()
    from t2s.llm.models import embedded_gguf, resolve_model

    embedded_gguf("embedded", cache_dir)
    if any(c.startswith("hf") for c in configs):
        resolve_model("embedded", cache_dir)  # convert once, before any timing
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        requests, qids = record_prompts(base, Path(tmp) / "record")
        print(f"recorded {len(requests)} zero-shot prompts; threads={threads}", flush=True)
        for name in configs:
            if name == "plain":
                row = plain_loop(requests, qids, base, cache_dir, Path(tmp) / "plain", threads)
            elif name == "llamacpp" or name.startswith("llamacpp_p"):
                parallel = int(name[len("llamacpp_p"):]) if name != "llamacpp" else 1
                label = "t2s llm=llamacpp" + (f" llm.parallel={parallel}" if parallel > 1 else "")
                row = t2s_run(label, [*base, "llm=llamacpp", f"llm.n_threads={threads}", f"llm.parallel={parallel}"],
                              Path(tmp) / name)
            elif name in ("hf1", "hf8"):
                bs = int(name[2:])
                row = t2s_run(f"t2s llm=embedded_hf batch {bs}",
                              [*base, "llm=embedded_hf", f"run.batch_size={bs}", f"llm.batch_size={bs}",
                               f"llm.num_threads={threads}"],
                              Path(tmp) / name)
            else:
                raise SystemExit(f"unknown config {name!r} (--configs): plain, llamacpp, llamacpp_pN, hf1, hf8")
            rows.append(row)
            print(table(rows), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\n{args.dataset}, first {args.questions} questions, zero-shot, greedy, 256 new tokens max, "
          f"response cache off, {threads} threads; load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
