"""Pipeline speed on Spider dev with the embedded model: time outside the model, and hf batch 1 vs 8.

For the same N Spider dev questions (default 20), runs the zero-shot pipeline twice with the LLM response
cache off — once with batch size 1 (run.batch_size=1, llm.batch_size=1), once with batch size 8 — and prints
for each: seconds per question in total, in the model, outside the model (prompting, schema, execution,
scoring, bookkeeping), and generation throughput (completion tokens per model second), plus EX.

    T2S_DATA=../shared/data .venv/bin/python benchmarks/pipeline_speed.py [--limit 20] [--llm embedded]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from t2s.config import CONF_DIR, register_configs  # noqa: E402
from t2s.run.runner import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--llm", default="embedded")
    ap.add_argument("--dataset", default="spider_dev")
    ap.add_argument("--batch-sizes", default="1,8")
    args = ap.parse_args()
    os.environ.setdefault("T2S_DATA", str(ROOT.parent / "shared" / "data"))
    register_configs()
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        overrides = [f"dataset={args.dataset}", f"dataset.limit={args.limit}", f"llm={args.llm}", "run.llm_cache=false",
                     f"run.batch_size={bs}", f"llm.batch_size={bs}", "run.progress=false"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            m = run(cfg, run_dir=Path(tmp) / "run")
            wall = time.perf_counter() - start
            traces = [json.loads(line) for line in (Path(tmp) / "run" / "traces.jsonl").read_text().splitlines()]
        n = len(traces)
        model = sum(e["model_seconds"] for t in traces for e in t["events"])
        tokens = sum(e["completion_tokens"] for t in traces for e in t["events"])
        prompt = sum(e["prompt_tokens"] for t in traces for e in t["events"])
        stage_wall = sum(e["seconds"] for t in traces for e in t["events"])
        rows.append({
            "batch_size": bs, "questions": n, "ex": m["ex"],
            "wall_s_per_q": wall / n, "model_s_per_q": model / n,
            "outside_model_s_per_q": (wall - model) / n,
            "pipeline_outside_model_s_per_q": (stage_wall - model) / n,
            "completion_tok_per_model_s": tokens / model if model else 0.0,
            "prompt_tokens_per_q": prompt / n,
        })
    print(f"\nSpider dev, {args.limit} questions, llm={args.llm}, hf backend, response cache off")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    print("\noutside_model = whole run (incl. model load, scoring) minus model time; "
          "pipeline_outside_model = stage wall time minus model time (prompting, schema, parsing).")


if __name__ == "__main__":
    main()
