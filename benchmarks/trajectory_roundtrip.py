"""SHARE trajectory round trip on Spider dev: SQL -> trajectory -> text -> trajectory -> SQL, scored by execution.

For every Spider dev question whose database exists (972 of 1034: wta_1's database is absent), the gold SQL
goes through the deterministic BAM (`sql_to_trajectory`), the text form (`format_trajectory` then
`parse_trajectory`, which must give back the same steps and the same text), and the renderer
(`render_sql`); the rendered SQL is scored against the gold with `t2s.eval.execution.score_execution`,
the function `t2s eval` uses: the official Spider test-suite semantics (DISTINCT removed on both sides,
row order only when the gold has ORDER BY, multisets, column permutations), and again with DISTINCT kept
(`keep_distinct=True`, stricter). Prints: translated share, text round-trip share, rendered share,
execution-equivalent share (of all 972), failures by construct with counts, and with `--show N` up to N
non-equivalent examples.

    T2S_DATA=/work/shared/data .venv/bin/python benchmarks/trajectory_roundtrip.py [--show 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2s_plugins.corrector.share.trajectory import (  # noqa: E402
    format_trajectory,
    parse_trajectory,
    render_sql,
    sql_to_trajectory,
)

from t2s.db.introspect import introspect  # noqa: E402
from t2s.eval.execution import score_execution  # noqa: E402


def _construct(e: Exception) -> str:
    c = getattr(e, "construct", None)
    return c if c else f"{type(e).__name__}: {str(e)[:70]}"


def run(data_root: Path, *, workers: int = 2, timeout: float = 30.0) -> dict:
    """Round-trip every executable Spider dev gold query; returns counts, failures and per-question rows."""
    spider = data_root / "spider"
    dev = json.loads((spider / "dev.json").read_text(encoding="utf-8"))
    schemas: dict[str, object] = {}
    rows: list[dict] = []
    t0 = time.perf_counter()
    for i, r in enumerate(dev):
        db = spider / "database" / r["db_id"] / f"{r['db_id']}.sqlite"
        if not db.is_file():
            continue
        if r["db_id"] not in schemas:
            schemas[r["db_id"]] = introspect(str(db), r["db_id"], n_samples=0)
        schema = schemas[r["db_id"]]
        row = {"qid": f"dev_{i}", "db": str(db), "gold": r["query"], "stage": "ok", "construct": None,
               "text": None, "sql": None}
        try:
            traj = sql_to_trajectory(r["query"], schema)  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 - every failure is counted by its construct
            row.update(stage="translate", construct=_construct(e))
            rows.append(row)
            continue
        text = format_trajectory(traj)
        row["text"] = text
        try:
            back = parse_trajectory(text)
            if back != traj or format_trajectory(back) != text:
                raise ValueError("text round trip changed the trajectory")
        except Exception as e:  # noqa: BLE001
            row.update(stage="text", construct=f"text round trip: {str(e)[:70]}")
            rows.append(row)
            continue
        try:
            row["sql"] = render_sql(back, schema)  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001
            row.update(stage="render", construct=_construct(e))
        rows.append(row)
    t_translate = time.perf_counter() - t0
    rendered = [r for r in rows if r["sql"] is not None]
    out: dict = {"n": len(rows), "translate_seconds": round(t_translate, 2)}
    for keep in (False, True):
        verdicts = score_execution([(r["gold"], r["sql"], [r["db"]]) for r in rendered], semantics="spider",
                                   keep_distinct=keep, workers=workers, timeout=timeout)
        key = "equivalent_keep_distinct" if keep else "equivalent"
        for r, v in zip(rendered, verdicts):
            r[key] = v.correct
            r[key + "_status"] = v.status
        out[key] = sum(v.correct for v in verdicts)
        out[key + "_gold_errors"] = sum(v.status == "gold_error" for v in verdicts)
    out["translated"] = sum(r["stage"] not in ("translate",) for r in rows)
    out["text_roundtrip"] = sum(r["stage"] not in ("translate", "text") for r in rows)
    out["rendered"] = len(rendered)
    fails: Counter = Counter()
    for r in rows:
        if r["construct"] is not None:
            fails[f"{r['stage']}: {r['construct']}"] += 1
        elif not r.get("equivalent"):
            fails[f"not equivalent ({r.get('equivalent_status')})"] += 1
    out["failures"] = dict(fails.most_common())
    out["rows"] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("T2S_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--show", type=int, default=0, help="print up to N failing questions")
    ap.add_argument("--json", help="write every question's row to this JSON file")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    res = run(Path(args.data), workers=args.workers)
    n = res["n"]

    def pct(k: str) -> str:
        return f"{res[k]:4d} / {n} = {100 * res[k] / n:5.1f} %"

    print(f"Spider dev gold queries with a database: {n}  (translation {res['translate_seconds']} s)")
    print(f"  translated                          {pct('translated')}")
    print(f"  text round trip exact               {pct('text_roundtrip')}")
    print(f"  rendered to SQL                     {pct('rendered')}")
    print(f"  execution-equivalent (spider)       {pct('equivalent')}")
    print(f"  execution-equivalent (DISTINCT kept){pct('equivalent_keep_distinct')}")
    print("failures (spider semantics):")
    for k, v in res["failures"].items():
        print(f"  {v:4d}  {k}")
    if args.show:
        bad = [r for r in res["rows"] if r["construct"] is not None or not r.get("equivalent")
               or not r.get("equivalent_keep_distinct")]
        for r in bad[: args.show]:
            print(f"\n--- {r['qid']} [{r['stage']}: {r['construct'] or r.get('equivalent_status')}, "
                  f"keep_distinct={r.get('equivalent_keep_distinct')}]\ngold: {r['gold']}\n{r['text']}\nsql:  {r['sql']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
