"""Coverage of the per-database SQL grammar (issue 23 item 2): the share of gold queries each mode accepts.

Each database's grammar is written once per mode (`t2s.sql.grammar.sql_grammar`, wrapped in the generators' answer
format, exactly the text a constrained request sends) and that one text is checked by both engines t2s decodes with:

- `hf`: llguidance, the `hf` backend's matcher (the GBNF converted by `t2s.llm.structured.llguidance_grammar`), with
  the embedded model's transformers tokenizer: the tokenized answer is consumed token by token, then the end token;
- `llamacpp`: llama.cpp's grammar sampler (`llama_sampler_init_grammar`) with the embedded GGUF's vocabulary, as
  the llamacpp backend decodes with it: each token of the tokenized answer must survive the sampler's mask on that
  one candidate (`llama_sampler_apply`) before it is accepted (`llama_sampler_accept`), then an end-of-generation
  token must survive it.

Both checks are the backends' own (`HFLLM.grammar_problem`, `LlamaCppLLM.grammar_problem`), on the embedded model.
The answer checked is "```sql\\n<gold query>\\n```" (the gold query stripped of surrounding whitespace). Sets: the
972 executable Spider dev gold queries (`dev`) and the `train_spider` gold queries whose database is present
(`train`: 6,904 of 7,000 here; baseball_1 and soccer_1 are absent), and with `--sets bird` BIRD's 1,534 dev gold
queries, their grammars written from `dev_tables.json` (BIRD's databases are not here). Every rejected query is written to `--out` (JSON lines:
set, qid, db_id, mode, engine, sql, reason). `sql_strict` has no target (gold SQL uses aliases and bare columns); the
run exits 1 when `sql` accepts fewer than `--target` (99 %) of the dev queries on either engine.

    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/grammar_coverage.py
    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/grammar_coverage.py --sets dev --engines llamacpp \
        --set depth=3 --set chain=8          # other bounds (conf/decoding/sql.yaml's keys)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s.data.spider import SpiderDataset  # noqa: E402
from t2s.db.introspect import introspect  # noqa: E402
from t2s.db.types import Column, DatabaseSchema, Table  # noqa: E402
from t2s.decoding import ANSWER_PREFIX, ANSWER_SUFFIX  # noqa: E402
from t2s.llm.base import Constraint  # noqa: E402
from t2s.sql.grammar import MODES, GrammarLimits, sql_grammar  # noqa: E402

ENGINES = ("hf", "llamacpp")
SETS = {"dev": "dev.json", "train": "train_spider.json", "bird": "dev_gold.sql"}


def answer(sql: str) -> str:
    """The fenced answer a generator would give for `sql`."""
    return f"{ANSWER_PREFIX}{sql.strip()}{ANSWER_SUFFIX}"


def make_engine(name: str, cache_dir: str) -> Any:
    """The backend whose `grammar_problem` checks answers: hf (llguidance) or llamacpp, on the embedded model."""
    if name == "hf":
        from t2s.llm.hf import HFLLM

        return HFLLM(model="embedded", cache_dir=cache_dir)
    from t2s.llm.llamacpp import LlamaCppLLM

    return LlamaCppLLM(model="embedded", cache_dir=cache_dir, n_ctx=512)


@dataclass
class Gold:
    """One gold query and the schema of its database (`schema` None: introspected from `db_path`)."""

    qid: str
    db_id: str
    gold_sql: str
    db_path: str = ""
    schema: DatabaseSchema | None = None


def bird_schemas(tables_json: Path) -> dict[str, DatabaseSchema]:
    """BIRD's schemas from its tables.json (the databases are not here): tables and their columns' original names."""
    out = {}
    for db in json.loads(tables_json.read_text()):
        cols: dict[int, list[Column]] = defaultdict(list)
        for (t, name), typ in zip(db["column_names_original"], db["column_types"]):
            if t >= 0:
                cols[t].append(Column(name=name, type=typ))
        out[db["db_id"]] = DatabaseSchema(db["db_id"], [Table(name, cols[i])
                                                        for i, name in enumerate(db["table_names_original"])])
    return out


def load_set(data: Path, name: str) -> list[Gold]:
    if name == "bird":
        schemas = bird_schemas(data / "bird" / "dev_tables.json")
        lines = (data / "bird" / "dev_gold.sql").read_text().splitlines()
        return [Gold(f"bird_dev_{i}", db, sql, schema=schemas[db])
                for i, (sql, db) in enumerate(line.rsplit("\t", 1) for line in lines if line.strip())]
    ds = SpiderDataset(root=str(data / "spider"), questions=SETS[name], split=name, name=f"spider_{name}",
                       on_missing_db="skip")
    return [Gold(e.qid, e.db_id, e.gold_sql, e.db_path) for e in ds.load().examples if e.gold_sql]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("T2S_DATA", str(ROOT / "data")), help="benchmark data root")
    ap.add_argument("--cache-dir", default=os.environ.get("T2S_CACHE", str(ROOT / ".cache")))
    ap.add_argument("--sets", nargs="+", default=["dev", "train"], choices=list(SETS),
                    help="dev, train (Spider) and bird (BIRD dev: schemas from dev_tables.json, no databases needed)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=N", help="a grammar bound (GrammarLimits field)")
    ap.add_argument("--limit", type=int, default=None, help="first N queries of each set (a quick look)")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "grammar_coverage" / "rejected.jsonl"))
    ap.add_argument("--target", type=float, default=0.99, help="the share of dev queries `sql` must accept")
    args = ap.parse_args(argv)

    limits = GrammarLimits(**{k: int(v) for k, v in (s.split("=", 1) for s in args.set)})
    engines: dict[str, Any] = {}
    for name in args.engines:
        t0 = time.perf_counter()
        engines[name] = make_engine(name, args.cache_dir)
        engines[name].load()
        print(f"{name}: ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    data = Path(args.data)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    seconds: dict[str, float] = defaultdict(float)
    schema_cache = Path(args.cache_dir) / "schemas"
    with open(out, "w", encoding="utf-8") as rejected:
        for set_name in args.sets:
            examples = load_set(data, set_name)[: args.limit]
            by_db: dict[str, list[Any]] = defaultdict(list)
            for e in examples:
                by_db[e.db_id].append(e)
            print(f"{set_name}: {len(examples)} gold queries on {len(by_db)} databases", file=sys.stderr)
            for db_id, group in sorted(by_db.items()):
                schema = group[0].schema or introspect(group[0].db_path, db_id, n_samples=0, n_rows=0,
                                                       cache_dir=schema_cache)
                for mode in args.modes:
                    grammar = Constraint.grammar(sql_grammar(schema, mode, limits).wrap(ANSWER_PREFIX, ANSWER_SUFFIX))
                    for name, llm in engines.items():
                        t0 = time.perf_counter()
                        for e in group:
                            problem = llm.grammar_problem(grammar, answer(e.gold_sql))
                            c = counts[(set_name, mode, name)]
                            c[1] += 1
                            if problem is None:
                                c[0] += 1
                                continue
                            rejected.write(json.dumps({"set": set_name, "qid": e.qid, "db_id": db_id, "mode": mode,
                                                       "engine": name, "sql": e.gold_sql, "reason": problem},
                                                      ensure_ascii=False) + "\n")
                        seconds[name] += time.perf_counter() - t0

    print(f"\nSQL grammar coverage of gold queries (answers in the ```sql fence; bounds: "
          f"{json.dumps(dataclasses.asdict(limits))})\n")
    print("| set | mode | engine | accepted | of | coverage |")
    print("|---|---|---|---:|---:|---:|")
    for (set_name, mode, engine), (ok, n) in sorted(counts.items()):
        print(f"| {set_name} | {mode} | {engine} | {ok} | {n} | {100 * ok / max(n, 1):.2f} % |")
    print(f"\nrejected queries with reasons: {out}")
    for engine, s in sorted(seconds.items()):
        print(f"{engine}: {s:.1f} s checking")
    failed = [(e, ok / n) for (s, m, e), (ok, n) in counts.items()
              if s == "dev" and m == "sql" and n and ok / n < args.target]
    for engine, share in failed:
        print(f"FAIL: mode sql accepts {100 * share:.2f} % of the dev gold queries with {engine}, below the target "
              f"{100 * args.target:.0f} %", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
