"""`report.md` with tables and PNG plots, readable without opening any JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HARDNESS_ORDER = ("easy", "medium", "hard", "extra", "simple", "moderate", "challenging")

#: what `accounting` calls each way a question can leave EX, as the summary line and report.md write it
UNSCORED = {"no_gold": ("without gold SQL", "without gold SQL"), "gold_error": ("gold error", "gold errors"),
            "pipeline_error": ("pipeline error", "pipeline errors")}
SKIPPED = {"missing_database": "missing database", "not_a_database": "not a SQLite database",
           "empty_database": "empty database (0 bytes)"}


def accounting(metrics: dict[str, Any]) -> dict[str, int]:
    """Every question of the dataset by what became of it, so the parts add up to `questions`: `scored` (in EX), or
    out of EX as `no_gold` (unlabelled), `gold_error` (the gold query failed), `pipeline_error` (a stage raised: no
    answer, retried by the next invocation), or skipped at load as `missing_database`, `not_a_database` (no SQLite
    header) or `empty_database` (0 bytes); a skip reason outside these is counted under its own text."""
    from t2s.data.base import skip_kind

    n, scored = int(metrics.get("n") or 0), int(metrics.get("scored") or 0)
    gold = int((metrics.get("gold_errors") or {}).get("count") or 0)
    pipeline = int((metrics.get("pipeline_errors") or {}).get("count") or 0)
    out = {"questions": 0, "scored": scored, "no_gold": max(0, n - scored - gold - pipeline), "gold_error": gold,
           "pipeline_error": pipeline, **dict.fromkeys(SKIPPED, 0)}
    for reason, count in ((metrics.get("skipped") or {}).get("by_reason") or {}).items():
        kind = skip_kind(reason)
        out[kind] = out.get(kind, 0) + int(count)
    out["questions"] = sum(v for k, v in out.items() if k != "questions")
    return out


def unscored_clause(counts: dict[str, int]) -> str:
    """The part of a summary line naming every question outside EX (`accounting`'s counts), each kind apart:
    "not scored: 2 gold errors, 1 pipeline error; skipped: 1 missing database, 1 not a SQLite database"; "" when
    every question was scored."""
    parts = []
    out = [f"{counts[k]} {one if counts[k] == 1 else many}" for k, (one, many) in UNSCORED.items() if counts.get(k)]
    if out:
        parts.append("not scored: " + ", ".join(out))
    skipped = [f"{v} {SKIPPED.get(k, k)}" for k, v in counts.items()
               if v and k not in UNSCORED and k not in ("questions", "scored")]
    if skipped:
        parts.append("skipped: " + ", ".join(skipped))
    return "; ".join(parts)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3g}"
    return str(v)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; `|` and newlines in cells are escaped."""
    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _ordered(groups: dict[str, Any]) -> list[str]:
    return sorted(groups, key=lambda k: (HARDNESS_ORDER.index(k) if k in HARDNESS_ORDER else 99, k))


def _bar(path: Path, labels: list[str], values: list[float], title: str, ylabel: str, color: str = "#4C72B0") -> Path:
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(labels) + 2), 3.2))
    bars = ax.bar(labels, values, color=color)
    ax.bar_label(bars, labels=[f"{v:.1f}" if isinstance(v, float) else str(v) for v in values], fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=30 if len(labels) > 4 else 0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(path: Path, metrics: dict[str, Any], records: list[dict[str, Any]], *,
                 error_examples: int = 3) -> dict[str, Path]:
    """Write `report.md` (and its PNG plots beside it); returns the plots by name."""
    out_dir = path.parent
    images: dict[str, Path] = {}
    ev = metrics.get("eval", {})
    parts = [f"# Run report: {metrics.get('dataset')}", ""]
    parts.append(md_table(
        ["questions", "scored", "EX %", "exact match %", "timeouts", "rejected", "pred errors", "gold errors",
         "pipeline errors", "skipped"],
        [[metrics.get("n"), metrics.get("scored"), metrics.get("ex"), metrics.get("exact_match"),
          metrics.get("timeouts"), metrics.get("rejected"), metrics.get("pred_errors"),
          metrics.get("gold_errors", {}).get("count"), metrics.get("pipeline_errors", {}).get("count"),
          metrics.get("skipped", {}).get("count")]]))
    parts += ["", f"Execution semantics: **{ev.get('semantics')}** (time limit {ev.get('timeout')} s per query, "
                  f"DISTINCT {'kept' if ev.get('keep_distinct') else 'stripped'})."]
    if metrics.get("resource_limits"):
        parts.append(f"{metrics['resource_limits']} prediction(s) stopped at a memory bound (status `resource_limit`, "
                     f"counted wrong like timeouts; bounds `eval.max_memory_mb` / `eval.max_result_mb`).")
    empty = metrics.get("empty_predictions") or {}
    if empty.get("correct"):
        rest = metrics.get("scored", 0) - empty["correct"]
        ex_rest = 100.0 * (metrics.get("correct", 0) - empty["correct"]) / rest if rest else None
        parts.append(f"**Empty predictions counted correct: {empty['correct']}** (of {empty['count']} empty "
                     f"predictions): an empty SQL text scores correct when the gold result is empty too, as in the "
                     f"official evaluators. EX without them: {_fmt(ex_rest)} % on {rest} questions. "
                     f"Questions: {', '.join(empty.get('correct_qids', [])[:10])}.")
    cands = metrics.get("candidates") or {}
    if metrics.get("oracle") is not None:
        parts += ["", f"Candidate pools: {cands.get('mean_pool', 0):.2f} candidate(s) per question, "
                      f"{cands.get('correct_share') or 0:.1f} % of them correct; oracle upper bound (some candidate "
                      f"correct) **{metrics['oracle']:.1f} %** against EX {metrics.get('ex') or 0:.1f} %."]
    if cands.get("stopped_by_loop") or cands.get("hit_max_tokens"):
        parts.append(f"Generations stopped by the repetition guard: {cands.get('stopped_by_loop', 0)}; "
                     f"ran to max_new_tokens: {cands.get('hit_max_tokens', 0)}.")
    offline = metrics.get("offline") or {}
    if offline.get("artifacts"):
        parts += ["", "Offline cost (artifacts, built once per database content and parameters): "
                  + ", ".join(f"{k} x{v['count']} {v['build_seconds']:.1f} s {v['bytes'] / 1e6:.1f} MB"
                              for k, v in offline["artifacts"].items()) + "."]
    counts = metrics.get("accounting") or accounting(metrics)
    if counts["questions"] != counts["scored"]:
        parts += ["", f"Every question: {counts['questions']} in all, {counts['scored']} scored; "
                  + unscored_clause(counts) + "."]
    skipped = metrics.get("skipped", {})
    if skipped.get("count"):
        reasons = ", ".join(f"{reason} {n}" for reason, n in (skipped.get("by_reason") or {}).items())
        parts.append(f"Skipped {skipped['count']} question(s) whose database cannot be used ({reasons}): "
                     f"{', '.join(skipped['db_ids'])}.")
    gold = metrics.get("gold_errors") or {}
    if gold.get("count"):
        parts.append(f"Gold errors (the gold query failed, not scored): {gold['count']}: "
                     f"{', '.join(gold.get('qids', [])[:20])}.")
    pipe = metrics.get("pipeline_errors") or {}
    if pipe.get("count"):
        parts.append(f"**Pipeline errors (a stage raised: no answer, not scored; the next invocation retries them): "
                     f"{pipe['count']}**.")
        parts += [f"- `{q}`: {m}" for q, m in list((pipe.get("messages") or {}).items())[:error_examples]]
    for key, title in (("by_hardness", "EX by Spider hardness"), ("by_difficulty", "EX by difficulty")):
        groups = metrics.get(key) or {}
        if groups:
            order = _ordered(groups)
            parts += ["", f"## {title}", "", md_table(["level", "n", "correct", "EX %"],
                                                      [[k, groups[k]["n"], groups[k]["correct"], groups[k]["ex"]] for k in order])]
            images[key] = _bar(out_dir / f"{key}.png", order, [groups[k]["ex"] or 0.0 for k in order], title, "EX %")
            parts += ["", f"![{title}]({key}.png)"]
    feats = metrics.get("by_feature") or {}
    if feats:
        parts += ["", "## EX by SQL feature of the gold query", "",
                  md_table(["feature", "n", "correct", "EX %"], [[k, v["n"], v["correct"], v["ex"]] for k, v in feats.items()])]
        images["by_feature"] = _bar(out_dir / "by_feature.png", list(feats), [v["ex"] or 0.0 for v in feats.values()],
                                    "EX by SQL feature", "EX %", "#55A868")
        parts += ["", "![EX by SQL feature](by_feature.png)"]
    partial = metrics.get("partial") or {}
    if partial:
        parts += ["", "## Exact-set match by clause (Spider partial scores)", "",
                  md_table(["clause", "accuracy", "recall", "F1"],
                           [[k, v.get("acc"), v.get("rec"), v.get("f1")] for k, v in partial.items()])]
    errors = metrics.get("error_categories") or {}
    if errors:
        parts += ["", "## Error categories (wrong predictions)", "",
                  md_table(["category", "count"], [[k, v] for k, v in errors.items()])]
        images["error_categories"] = _bar(out_dir / "error_categories.png", list(errors), list(errors.values()),
                                          "Error categories", "questions", "#C44E52")
        parts += ["", "![Error categories](error_categories.png)", ""]
        for cat in errors:
            ex = [r for r in records if r.get("error_category") == cat][:error_examples]
            parts += [f"### {cat}", ""]
            for r in ex:
                parts += [f"- `{r['qid']}` ({r['db_id']}): {r['question']}",
                          f"  - predicted: `{' '.join((r.get('final_sql') or '').split())}`",
                          f"  - gold: `{' '.join((r.get('gold_sql') or '').split())}`"]
                if r.get("pred_error"):
                    parts.append(f"  - error: {r['pred_error']}")
            parts.append("")
    dbs = metrics.get("by_db") or {}
    if len(dbs) > 1:
        parts += ["", "## EX by database", "", md_table(["db_id", "n", "correct", "EX %"],
                                                  [[k, v["n"], v["correct"], v["ex"]] for k, v in dbs.items()])]
    cost = metrics.get("cost") or {}
    if cost.get("per_stage"):
        cols = ["llm_calls", "cached_calls", "prompt_tokens", "completion_tokens", "model_seconds", "db_seconds", "wall_seconds"]
        parts += ["", "## Cost per stage (totals)", "",
                  md_table(["stage"] + cols, [[s] + [v.get(c) for c in cols] for s, v in cost["per_stage"].items()])]
        m = cost.get("means", {})
        parts += ["", "Per question: " + ", ".join(f"{k.replace('_per_question', '')} {_fmt(v)}" for k, v in m.items())]
    attr = metrics.get("attribution") or {}
    if attr:
        parts += ["", "## Per-stage attribution", "",
                  "Representative SQL = first candidate (final SQL after the selector); fixed = input wrong, output correct.", "",
                  md_table(["stage", "n", "no input", "fixed", "broken", "unchanged", "overcorrection rate"],
                           [[k, a["n"], a.get("no_input", 0), a["fixed"], a["broken"], a["unchanged"],
                             a["overcorrection_rate"]] for k, a in attr.items()])]
    path.write_text("\n".join(parts) + "\n")
    return images
