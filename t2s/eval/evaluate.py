"""`t2s eval`: score predictions made by any system against any dataset config, like a run does."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tqdm.auto import tqdm

from t2s.config import CONF_DIR, register_configs, run_name
from t2s.data.base import load_dataset
from t2s.eval.predictions import load_predictions
from t2s.eval.report import accounting, unscored_clause, write_report
from t2s.eval.scorer import Scorer, summarize
from t2s.integrity import configure_storage
from t2s.run.store import METRICS, PREDICTIONS, REPORT, write_json

CHUNK = 256


def evaluate(cfg: DictConfig, predictions: str | Path, out_dir: str | Path, *, fmt: str = "auto",
             strict: bool = True) -> dict[str, Any]:
    """Score `predictions` on `cfg.dataset` with `cfg.eval`; writes predictions.jsonl, metrics.json, report.md.

    The root sections (`eval.timeout`, `eval.workers`, ...) are checked first, so a bad value fails in one message
    naming the key before any file is read (`t2s.run.checks.root_problems`)."""
    from t2s.run.checks import ConfigError, root_problems

    problems = root_problems(cfg)
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"{len(problems)} problems in the configuration:\n" + "\n".join(f"  - {p}" for p in problems))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = load_dataset(cfg)
    preds = load_predictions(predictions, data.examples, fmt=fmt, strict=strict)
    configure_storage(cfg.paths)
    scorer = Scorer.from_config(cfg.eval, cache_dir=Path(cfg.paths.cache_dir))
    records: list[dict[str, Any]] = []
    with tqdm(total=len(data.examples), desc="scoring", unit="q", disable=not cfg.run.progress) as bar:
        for i in range(0, len(data.examples), CHUNK):
            batch = data.examples[i: i + CHUNK]
            for ex, s in zip(batch, scorer.score(batch, preds)):
                records.append({"qid": ex.qid, "db_id": ex.db_id, "question": ex.question, "gold_sql": ex.gold_sql,
                                "final_sql": preds.get(ex.qid, ""), **s})
            bar.update(len(batch))
    metrics = summarize(records, {}, skipped=data.skipped, dataset=data.name, scorer=scorer)
    metrics.pop("cost", None)
    metrics.pop("attribution", None)
    metrics["accounting"] = accounting(metrics)
    metrics["predictions_file"] = str(predictions)
    metrics["wall_seconds"] = time.perf_counter() - start
    with open(out / PREDICTIONS, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    write_json(out / METRICS, metrics)
    write_report(out / REPORT, metrics, records, error_examples=int(cfg.eval.error_examples))
    return metrics


def evaluate_cli(args: list[str]) -> int:
    """`t2s eval predictions=FILE [format=auto] [strict=true] [out=DIR] [hydra-style overrides...]`."""
    register_configs()
    own = {"predictions": None, "out": None, "format": "auto", "strict": "true"}
    overrides = []
    for a in args:
        key = a.split("=", 1)[0]
        if key in own and "=" in a:
            own[key] = a.split("=", 1)[1]
        else:
            overrides.append(a)
    if not own["predictions"]:
        print("t2s eval: give predictions=FILE (Spider one-SQL-per-line, JSONL keyed by qid, or BIRD predict JSON)",
              file=sys.stderr)
        return 2
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    pred_path = Path(str(own["predictions"])).resolve()
    tag = hashlib.sha256(str(pred_path).encode()).hexdigest()[:8]
    out = own["out"] or str(Path(cfg.paths.output_root) / "eval" / run_name(
        [*overrides, f"predictions={pred_path.name}-{tag}"]))
    if (Path(out) / "run.json").exists():
        print(f"t2s eval: {out} is a run directory; give another out=DIR so its predictions are not overwritten",
              file=sys.stderr)
        return 2
    m = evaluate(cfg, str(own["predictions"]), out, fmt=str(own["format"]), strict=str(own["strict"]).lower() == "true")
    hard = m.get("by_hardness") or {}
    line = f"[t2s] EX {m['ex']:.1f}% on {m['scored']} questions" if m.get("ex") is not None else "[t2s] nothing scored"
    if m.get("exact_match") is not None:
        line += f", exact match {m['exact_match']:.1f}%"
    if m.get("timeouts"):
        line += f", {m['timeouts']} timeouts"
    unscored = unscored_clause(m["accounting"])
    if unscored:
        line += f"; {unscored}"
    print(line)
    if hard:
        order = [k for k in ("easy", "medium", "hard", "extra") if k in hard] + [k for k in hard if k not in
                                                                                  ("easy", "medium", "hard", "extra")]
        print("[t2s] hardness: " + ", ".join(f"{k} {hard[k]['n']} (EX {hard[k]['ex']:.1f})" for k in order))
    print(f"[t2s] semantics {m['eval']['semantics']}; results: {out}")
    return 0
