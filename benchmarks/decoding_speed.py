"""The SQL grammar's cost in decoding time (issue 23 item 4): the same zero-shot requests decoded free and under
`decoding=sql`, alternated (free, sql, free, sql, ...) on the same loaded backend, bypassing the response cache.

Prints the wall seconds per question of each pass, their means per mode, the completion tokens, how many answers the
grammar changed, and for llama.cpp how many decoding steps had to mask the vocabulary (the chain's first pick broke
the grammar; `t2s.llm.llamacpp_parallel.Sampler`).

    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/decoding_speed.py --questions 20 --rounds 2
    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/decoding_speed.py -o llm=embedded_hf   # the hf backend
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s.config import compose_config  # noqa: E402
from t2s.decoding import Decoding  # noqa: E402
from t2s.llm.structured import backend_of  # noqa: E402
from t2s.run.pipeline import build_stage  # noqa: E402
from t2s.run.runner import load_dataset, make_env  # noqa: E402
from t2s.types import Task  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="spider_dev_sample100")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mode", default="sql", choices=["sql", "sql_strict"])
    ap.add_argument("-o", "--override", action="append", default=[], help="a config override (llm=embedded_hf, ...)")
    args = ap.parse_args(argv)

    cfg = compose_config([f"dataset={args.dataset}", f"dataset.limit={args.questions}", *args.override])
    data = load_dataset(cfg)
    env = make_env(cfg, data.examples, Path(cfg.paths.cache_dir) / "bench-decoding-speed")
    try:
        stage = build_stage("generator", cfg.generator)
        stage.setup(env)
        tasks = [Task(example=e) for e in data.examples]
        stage.decoding = Decoding()
        free = [req for _, _, req in stage.requests(tasks)]
        stage.decoding = Decoding(mode=args.mode)
        constrained = [req for _, _, req in stage.requests(tasks)]
        backend = backend_of(env.llm(stage.llm_name))
        print(f"{type(backend).__name__} {backend.model_id}: {len(tasks)} questions, {args.rounds} rounds", file=sys.stderr)
        seconds: dict[str, list[float]] = {"free": [], args.mode: []}
        texts: dict[str, list[str]] = {}
        tokens: dict[str, int] = {}
        backend.generate(free[:1])  # load the model before timing
        for r in range(args.rounds):
            for mode, requests in (("free", free), (args.mode, constrained)):
                start = time.perf_counter()
                out = backend.generate(requests)
                seconds[mode].append((time.perf_counter() - start) / len(requests))
                texts[mode], tokens[mode] = [o.text for o in out], sum(o.completion_tokens for o in out)
                print(f"round {r + 1} {mode}: {seconds[mode][-1]:.2f} s / question", file=sys.stderr)
        changed = sum(a != b for a, b in zip(texts["free"], texts[args.mode]))
        print("\n| mode | s / question (each round) | mean | completion tokens |\n|---|---|---:|---:|")
        for mode, s in seconds.items():
            print(f"| {mode} | {', '.join(f'{x:.2f}' for x in s)} | {statistics.mean(s):.2f} | {tokens[mode]} |")
        print(f"\nanswers the grammar changed: {changed} of {len(tasks)}; grammar overhead "
              f"{100 * (statistics.mean(seconds[args.mode]) / statistics.mean(seconds['free']) - 1):+.0f} %")
        masked = getattr(backend, "masked_steps", None)
        if masked is not None:
            print(f"steps that masked the vocabulary: {masked}")
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
