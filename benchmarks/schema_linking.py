"""Schema-linking figures against the gold SQL's tables and columns (issue 10 item 3).

For every question of a dataset, the gold SQL's tables and columns are found with sqlglot
(`t2s.sql.columns.used_schema`) and each schema view a linker writes is scored (`t2s.context.linking.score_link`):
column recall, table recall, column precision, table precision, the share of questions whose view keeps every gold
column and table (`complete`: the query stays writable), and schema size (columns kept / columns in the database).
Figures are means over questions. The full schema is the reference row (recall 1, size 1).

    # embedding linker, no LLM, all 972 executable Spider dev questions, several k (MiniLM embedder)
    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/schema_linking.py embedding --k 5 10 20 --whole-tables
    # dual linker with the embedded model on the fixed sample (first 30 questions with --limit 30)
    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/schema_linking.py dual \
        --dataset spider_dev_sample100 --llm embedded [--limit 30]

`--json out.json` also writes per-question rows. `-o KEY=VALUE` (repeatable) adds a config override
(e.g. `-o llm.n_threads=1`, `-o paths.cache_dir=/tmp/cache`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omegaconf import OmegaConf, open_dict  # noqa: E402

from t2s.config import compose_config  # noqa: E402
from t2s.context.linking import LinkScore, score_link  # noqa: E402
from t2s.data.base import load_dataset  # noqa: E402
from t2s.run.pipeline import build_stage  # noqa: E402
from t2s.run.runner import make_env  # noqa: E402
from t2s.sql.columns import used_schema  # noqa: E402
from t2s.types import Task  # noqa: E402

FIELDS = ("column_recall", "table_recall", "column_precision", "table_precision")


def summarize(scores: list[LinkScore]) -> dict[str, float]:
    """Means over questions of a list of link scores."""
    out = {f: mean(getattr(s, f) for s in scores) for f in FIELDS}
    out["complete"] = mean(float(s.complete) for s in scores)
    out["size"] = mean(s.reduction for s in scores)
    out["kept_columns"] = mean(s.kept_columns for s in scores)
    out["questions"] = len(scores)
    return out


def link(stage: Any, tasks: list[Task], batch: int) -> float:
    """Run a linker over the tasks in batches; returns wall seconds."""
    start = time.perf_counter()
    for i in range(0, len(tasks), batch):
        stage.run(tasks[i:i + batch])
        print(f"  {min(i + batch, len(tasks))}/{len(tasks)} questions", file=sys.stderr, flush=True)
    return time.perf_counter() - start


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    """A Markdown table of summaries."""
    head = ("| linker / view | col recall | table recall | col precision | table precision | all gold kept "
            "| cols kept | size (kept/all) | LLM calls/q | s/q |")
    lines = [head, "|" + "---|" * 10]
    for name, s in rows:
        lines.append(f"| {name} | {s['column_recall']:.3f} | {s['table_recall']:.3f} | {s['column_precision']:.3f} "
                     f"| {s['table_precision']:.3f} | {s['complete']:.3f} | {s['kept_columns']:.1f} | {s['size']:.3f} "
                     f"| {s.get('llm_calls', 0.0):.2f} | {s.get('seconds', 0.0):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("linker", choices=["embedding", "dual"])
    p.add_argument("--dataset", default="spider_dev")
    p.add_argument("--embedder", default="minilm")
    p.add_argument("--llm", default="embedded")
    p.add_argument("--k", type=int, nargs="+", default=[10], help="embedding: columns kept by similarity")
    p.add_argument("--whole-tables", action="store_true", help="embedding: also score whole-table pruning")
    p.add_argument("--prefilter-k", type=int, default=30, help="dual: candidate columns for pass 1")
    p.add_argument("--limit", type=int, default=None, help="first N questions of the dataset")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("-o", "--override", dest="overrides", action="append", default=[], help="a config override")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    overrides = [f"dataset={a.dataset}", f"embedder={a.embedder}", f"llm={a.llm}", f"schema_linker={a.linker}",
                 "run.progress=false", *a.overrides]
    if a.limit:
        overrides.append(f"dataset.limit={a.limit}")
    cfg = compose_config(overrides)
    data = load_dataset(cfg)
    env = make_env(cfg, data.examples, Path(cfg.paths.cache_dir) / "bench-schema-linking")
    gold = {}
    for ex in data.examples:
        gold[ex.qid] = used_schema(ex.gold_sql or "", env.schema(ex))
    bad = sum(1 for g in gold.values() if g.error)
    print(f"{len(data.examples)} questions ({a.dataset}); gold SQL that sqlglot cannot read: {bad}", file=sys.stderr)

    variants: list[tuple[str, dict[str, Any]]] = []
    if a.linker == "embedding":
        for k in a.k:
            variants.append((f"embedding k={k}", {"k": k, "whole_tables": False}))
            if a.whole_tables:
                variants.append((f"embedding k={k} whole tables", {"k": k, "whole_tables": True}))
    else:
        variants.append(("dual", {"prefilter_k": a.prefilter_k}))

    rows: list[tuple[str, dict[str, float]]] = []
    full = [score_link(env.schema(ex), env.schema(ex), gold[ex.qid]) for ex in data.examples]
    rows.append(("full schema", summarize(full)))
    per_question: list[dict[str, Any]] = []
    try:
        for name, args in variants:
            node = OmegaConf.create(OmegaConf.to_container(cfg.schema_linker, resolve=True))
            with open_dict(node):
                node.update(args)
            stage = build_stage("schema_linker", node, a.linker)
            stage.setup(env)
            tasks = [Task(example=ex) for ex in data.examples]
            print(f"{name}:", file=sys.stderr)
            seconds = link(stage, tasks, a.batch)
            views: dict[str, list[LinkScore]] = {}
            for t in tasks:
                row: dict[str, Any] = {"variant": name, "qid": t.qid, "llm_calls": t.usage.llm_calls,
                                       "gold_columns": sorted(map(list, gold[t.qid].columns))}
                for v in t.schemas:
                    s = score_link(v.schema, env.schema(t.example), gold[t.qid])
                    views.setdefault(v.name, []).append(s)
                    row[v.name] = s.__dict__ | {"columns": sorted([tb.name, c.name] for tb in v.schema.tables
                                                                   for c in tb.columns)}
                if hasattr(stage, "outcomes"):
                    row["outcome"] = stage.outcomes.get(t.qid)
                    row["replies"] = stage.replies.get(t.qid)
                per_question.append(row)
            calls = mean(t.usage.llm_calls for t in tasks)
            for view, scores in views.items():
                s = summarize(scores)
                s["llm_calls"] = calls
                s["seconds"] = seconds / len(tasks)
                rows.append((f"{name} / {view}" if len(views) > 1 else name, s))
            if hasattr(stage, "outcomes"):
                from collections import Counter

                counts = Counter(f"{k}={v}" for q, o in stage.outcomes.items() for k, v in o.items())
                print(f"{name} outcomes: {dict(sorted(counts.items()))}")
    finally:
        env.close()
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "summary": rows,
                                      "questions": per_question}, indent=1, default=str))


if __name__ == "__main__":
    main()
