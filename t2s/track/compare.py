"""`t2s compare`: one table over runs (rows) by the overrides that differ, EX and cost, plus accuracy/cost plots.

Runs come from run directories (`metrics.json`, `.hydra/overrides.yaml`, `config.yaml`, `run.json`), from a sweep
directory (only the jobs of that sweep: the job list is expanded from its `multirun.yaml`), or from wandb runs of
a project/group (`wandb.Api()`, online only). The sweep callback (`t2s.track.sweep.SweepSummary`) writes the same
table as `summary.md` / `summary.csv` when a sweep ends.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from t2s.eval.report import md_table
from t2s.run.store import CONFIG, METRICS, STATE
from t2s.track.wandb_logger import hydra_overrides, is_secret_key, redact

log = logging.getLogger("t2s")

#: override keys that never explain a difference in results (progress bars, workers, where files go, the logger);
#: keys naming secrets (`is_secret_key`) are never shown either
IGNORED_KEYS = ("run.resume", "run.progress", "run.batch_size", "eval.workers", "db.workers", "logger", "paths",
                "hydra", "notes")

def _tokens(m: dict[str, Any]) -> float | None:
    means = (m.get("cost") or {}).get("means") or {}
    if "prompt_tokens_per_question" not in means and "completion_tokens_per_question" not in means:
        return None
    return float(means.get("prompt_tokens_per_question", 0) or 0) + float(means.get("completion_tokens_per_question", 0) or 0)


def _mean(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda m: ((m.get("cost") or {}).get("means") or {}).get(f"{name}_per_question")


#: the metric columns: (header, getter over metrics.json); cost means are per question
METRIC_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("questions", lambda m: m.get("scored", m.get("n"))),
    ("EX %", lambda m: m.get("ex")),
    ("oracle %", lambda m: m.get("oracle")),
    ("pool/q", lambda m: (m.get("candidates") or {}).get("mean_pool")),
    ("exact %", lambda m: m.get("exact_match")),
    ("pred errors", lambda m: m.get("pred_errors")),
    ("timeouts", lambda m: m.get("timeouts")),
    ("LLM calls/q", _mean("llm_calls")),
    ("new calls/q", _mean("new_llm_calls")),
    ("completions/q", _mean("completions")),
    ("tokens/q", _tokens),
    ("prompt tok/q", _mean("prompt_tokens")),
    ("compl. tok/q", _mean("completion_tokens")),
    ("model s/q", _mean("model_seconds")),
    ("db s/q", _mean("db_seconds")),
    ("wall s/q", _mean("wall_seconds")),
    ("USD/q", _mean("usd")),
]
#: metric columns shown even when no run has a value for them
ALWAYS_SHOWN = ("questions", "EX %", "LLM calls/q", "tokens/q", "wall s/q")

#: the cost axes of the accuracy/cost plots: (file stem, axis label, metric column)
COST_AXES = (("llm_calls", "LLM calls per question", "LLM calls/q"),
             ("completions", "completions per question (samples + scoring calls)", "completions/q"),
             ("tokens", "tokens per question (prompt + completion)", "tokens/q"),
             ("seconds", "wall seconds per question", "wall s/q"))


class CompareError(RuntimeError):
    """Nothing to compare at the given place, or wandb cannot be reached."""


@dataclass
class RunRecord:
    """One run as `compare` sees it: where it is, how it was configured, what it measured."""

    name: str
    path: str
    #: `key=value` task overrides by key (leading `+`/`~` dropped), from `.hydra/overrides.yaml`
    overrides: dict[str, str] = field(default_factory=dict)
    #: config-group choices (`schema_format: ddl`) from `.hydra/hydra.yaml`
    choices: dict[str, str] = field(default_factory=dict)
    #: the composed config, flattened to dotted keys
    config: dict[str, Any] = field(default_factory=dict)
    #: `metrics.json` (empty when the run has not finished)
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "unknown"

    @property
    def has_hydra(self) -> bool:
        """Whether the run came from a Hydra app (it has overrides or group choices to compare by)."""
        return bool(self.overrides or self.choices)


def flatten_config(d: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested config as dotted keys (lists kept whole as values)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """`["a.b=1", "+c=x", "~d"]` -> `{"a.b": "1", "c": "x", "d": "<deleted>"}`."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        out[key.lstrip("+~")] = value if sep else "<deleted>"
    return out


def load_run(run_dir: Path) -> RunRecord:
    """Read one run directory (any of its files may be missing: a run that failed or is still running)."""
    run_dir = Path(run_dir)
    overrides, choices = hydra_overrides(run_dir)
    config: dict[str, Any] = {}
    if (run_dir / CONFIG).is_file():
        config = flatten_config(yaml.safe_load((run_dir / CONFIG).read_text()) or {})
    metrics: dict[str, Any] = {}
    if (run_dir / METRICS).is_file():
        metrics = json.loads((run_dir / METRICS).read_text())
    status = "unknown"
    if (run_dir / STATE).is_file():
        status = str(json.loads((run_dir / STATE).read_text()).get("status", "unknown"))
    elif metrics:
        status = "finished"
    return RunRecord(name=run_dir.name, path=str(run_dir), overrides=parse_overrides(overrides),
                     choices={k: str(v) for k, v in choices.items()}, config=config, metrics=metrics, status=status)


def is_run_dir(path: Path) -> bool:
    """A run directory holds `run.json` or `metrics.json` (written by `t2s run` / `t2s eval`)."""
    return (path / STATE).is_file() or (path / METRICS).is_file()


def _job_overrides(path: Path) -> list[str] | None:
    f = path / ".hydra" / "overrides.yaml"
    return [str(o) for o in (yaml.safe_load(f.read_text()) or [])] if f.is_file() else None


def _expected_jobs(sweep_dir: Path) -> list[list[str]] | None:
    """The job override lists of a basic-sweeper sweep, in job order, from its `multirun.yaml` (None: unknown)."""
    f = sweep_dir / "multirun.yaml"
    if not f.is_file():
        return None
    data = yaml.safe_load(f.read_text()) or {}
    hydra = data.get("hydra") or {}
    sweeper = str((hydra.get("sweeper") or {}).get("_target_", ""))
    if not sweeper.endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = [str(o) for o in (hydra.get("overrides") or {}).get("task") or []]
    params = [f"{k}={v}" for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides([*params, *task])
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception as e:  # noqa: BLE001 - e.g. glob sweeps need the config loader
        log.warning("cannot expand the overrides of %s (%s): taking every job directory in it", f, e)
        return None
    return [list(job) for job in itertools.chain.from_iterable(batches)]


def sweep_job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of one sweep, in job order.

    For Hydra's basic sweeper, the jobs are expanded from the sweep's `multirun.yaml` and matched to job
    directories by their `.hydra/overrides.yaml`, so directories of other sweeps written into the same folder
    are left out. Other sweepers (Optuna, ...): every job directory found in it.
    """
    sweep_dir = Path(sweep_dir)
    found: dict[tuple[str, ...], Path] = {}
    loose: list[Path] = []
    for ov in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        job = ov.parent.parent
        if "wandb" in job.relative_to(sweep_dir).parts or job == sweep_dir:
            continue
        found.setdefault(tuple(sorted(_job_overrides(job) or [])), job)
        loose.append(job)
    expected = _expected_jobs(sweep_dir)
    if expected is None:
        return loose
    jobs = [found[key] for key in (tuple(sorted(j)) for j in expected) if key in found]
    if len(jobs) < len(expected):
        log.info("%s: %d of %d jobs have a directory", sweep_dir, len(jobs), len(expected))
    return jobs


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named by `paths`: a run directory itself, the jobs of a sweep directory, or every run
    directory below a folder (e.g. `outputs/runs`). Order is kept; duplicates are dropped."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise CompareError(f"{p}: no such directory (give run directories, sweep directories or a folder of runs)")
        if is_run_dir(p):
            found = [p]
        elif (p / "multirun.yaml").is_file():
            found = sweep_job_dirs(p)
        else:
            found = [d.parent for d in sorted(p.glob(f"**/{STATE}"))
                     if not any(part.startswith("previous-") or part == "wandb" for part in d.relative_to(p).parts)]
        if not found:
            raise CompareError(f"{p}: no run directories in it (a run directory holds {STATE} or {METRICS})")
        out.extend(f for f in found if f.resolve() not in {o.resolve() for o in out})
    return out


def _option_of(target: Any) -> str:
    parts = str(target).split(".")
    return parts[-2] if len(parts) >= 2 else str(target)


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS) or is_secret_key(key)


def _value(run: RunRecord, key: str) -> str:
    if key in run.overrides:
        return run.overrides[key]
    if key in run.choices:
        return str(run.choices[key])
    if key in run.config:
        return _str(run.config[key])
    if f"{key}._target_" in run.config:
        return _group_choice(run, key) or _option_of(run.config[f"{key}._target_"])
    return "–"


def _subtree(config: dict[str, Any], key: str) -> dict[str, Any]:
    return {k[len(key):]: v for k, v in config.items() if k.startswith(key + ".")}


def _group_choice(run: RunRecord, key: str) -> str | None:
    """The option name of a node interpolated from a root group (`fixer.decoding: ${decoding}` shows `sql`, not
    the class's module): the choice of the root group whose composed node equals this one."""
    mine = _subtree(run.config, key)
    for group, choice in run.choices.items():
        if group != key and "." not in group and "@" not in group and _subtree(run.config, group) == mine:
            return str(choice)
    return None


def _str(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def differing_keys(runs: list[RunRecord]) -> list[str]:
    """The config keys whose values differ between runs, in first-seen order.

    Override keys (from `.hydra/overrides.yaml`) come first; for runs without Hydra metadata, the differing keys
    of their `config.yaml` are added, a whole group collapsed to its option name when its `_target_` differs.
    """
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys and not _ignored(k)]
    if any(not r.has_hydra for r in runs):
        flat_keys: list[str] = []
        for r in runs:
            flat_keys += [k for k in r.config if k not in flat_keys and not _ignored(k)]
        groups = {k.rsplit("._target_", 1)[0] for k in flat_keys if k.endswith("._target_")
                  and len({_str(r.config.get(k)) for r in runs}) > 1}
        for k in flat_keys:
            group = next((g for g in groups if k == g or k.startswith(g + ".")), None)
            name = group if group is not None else k
            if name not in keys:
                keys.append(name)
    return [k for k in keys if len({_value(r, k) for r in runs}) > 1]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) that no other point beats: lower-or-equal cost with higher-or-equal
    accuracy, strictly better in one. Sorted by cost."""
    front = []
    for i, (c, a) in enumerate(points):
        dominated = any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for j, (c2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


@dataclass
class Comparison:
    """The comparison table: one row per run; `header` = `#` (1-based run number; plus `run`, the directory name,
    when no key differs), the differing keys, status, metric columns, frontier."""

    runs: list[RunRecord]
    keys: list[str]
    header: list[str]
    rows: list[list[Any]]
    #: overrides shared by every run (`llm=tiny`, `dataset.limit=6`), shown above the table
    common: dict[str, str]

    def column(self, name: str) -> list[Any]:
        """The values of one column, in row order."""
        i = self.header.index(name)
        return [row[i] for row in self.rows]

    def labels(self) -> list[str]:
        """Short row labels for plots: the differing values (`ddl,2`), else the run name."""
        return [",".join(_value(r, k) for k in self.keys) or redact(r.name) for r in self.runs]


def build_comparison(runs: list[RunRecord]) -> Comparison:
    """The table over `runs`: differing keys, status, EX and other metrics, cost means per question, and which
    cost axes (`llm_calls`, `tokens`, `seconds`) the run is on the accuracy/cost Pareto frontier of. Optional
    columns no run has a value for (exact match when disabled, USD without a price table) are left out."""
    if not runs:
        raise CompareError("no runs to compare")
    keys = differing_keys(runs)
    columns = [(name, get) for name, get in METRIC_COLUMNS
               if name in ALWAYS_SHOWN or any(get(r.metrics) is not None for r in runs)]
    ident = ["#"] if keys else ["#", "run"]
    header = [*ident, *keys, "status", *(name for name, _ in columns), "frontier"]
    rows = [[i + 1, *([] if keys else [redact(r.name)]), *(_value(r, k) for k in keys), r.status,
             *(get(r.metrics) for _, get in columns), ""] for i, r in enumerate(runs)]
    for stem, _, col in COST_AXES:
        if col not in header:  # an optional column no run has (completions in runs made before it was counted)
            continue
        ci, ei = header.index(col), header.index("EX %")
        idx = [i for i, row in enumerate(rows) if row[ci] is not None and row[ei] is not None]
        for k in pareto_front([(float(rows[i][ci]), float(rows[i][ei])) for i in idx]):
            row = rows[idx[k]]
            row[-1] = ",".join(filter(None, [row[-1], stem]))
    common_keys = [k for k in runs[0].overrides if not _ignored(k) and k not in keys
                   and all(k in r.overrides and r.overrides[k] == runs[0].overrides[k] for r in runs)]
    return Comparison(runs=runs, keys=keys, header=header, rows=rows,
                      common={k: runs[0].overrides[k] for k in common_keys})


def plot_cost_accuracy(cmp: Comparison, out_dir: Path) -> dict[str, Path]:
    """`ex_vs_<axis>.png` for LLM calls, tokens and wall seconds per question, the Pareto frontier drawn as a step
    line through its runs. Axes where no run has both numbers are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: dict[str, Path] = {}
    labels = cmp.labels()
    ex = cmp.column("EX %")
    for stem, xlabel, col in COST_AXES:
        if col not in cmp.header:
            continue
        cost = cmp.column(col)
        idx = [i for i in range(len(ex)) if ex[i] is not None and cost[i] is not None]
        if not idx:
            continue
        pts = [(float(cost[i]), float(ex[i])) for i in idx]
        front = pareto_front(pts)
        fig, ax = plt.subplots(figsize=(6.0, 4.2))
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="#8C8C8C", zorder=2, label="runs")
        fx, fy = [pts[k][0] for k in front], [pts[k][1] for k in front]
        ax.step(fx, fy, where="post", color="#C44E52", zorder=1)
        ax.scatter(fx, fy, color="#C44E52", zorder=3, label="accuracy/cost frontier")
        for k, i in enumerate(idx):
            ax.annotate(labels[i], pts[k], textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("EX %")
        ax.set_title(f"EX against {xlabel}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out_dir / f"ex_vs_{stem}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        images[f"ex_vs_{stem}"] = path
    return images


def attribution_rows(cmp: Comparison) -> list[list[Any]]:
    """Long table of per-stage attribution: run label, stage/plugin, n, fixed, broken, unchanged, overcorrection
    (`none` stages left out)."""
    out = []
    for label, r in zip(cmp.labels(), cmp.runs):
        for key, a in (r.metrics.get("attribution") or {}).items():
            if a.get("plugin") == "none":  # identity stages never change a candidate
                continue
            out.append([label, key, a.get("n"), a.get("fixed"), a.get("broken"), a.get("unchanged"),
                        a.get("overcorrection_rate")])
    return out


def plot_attribution(cmp: Comparison, out_dir: Path) -> Path | None:
    """`attribution.png`: per run, one bar per stage up by the questions it fixed and down by those it broke."""
    rows = attribution_rows(cmp)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(dict.fromkeys(r[0] for r in rows))
    stages = list(dict.fromkeys(r[1] for r in rows))
    fixed = {(r[0], r[1]): r[3] or 0 for r in rows}
    broken = {(r[0], r[1]): r[4] or 0 for r in rows}
    x = np.arange(len(labels))
    width = 0.8 / len(stages)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) * max(1, len(stages)) ** 0.5 + 2), 4.2))
    colors = plt.get_cmap("tab10")
    for s, stage in enumerate(stages):
        pos = x - 0.4 + width * (s + 0.5)
        ax.bar(pos, [fixed.get((lb, stage), 0) for lb in labels], width, color=colors(s % 10), label=f"{stage} fixed")
        ax.bar(pos, [-broken.get((lb, stage), 0) for lb in labels], width, color=colors(s % 10), alpha=0.45,
               hatch="//", label=f"{stage} broken")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, rotation=30 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center",
                  fontsize=8)
    ax.set_ylabel("questions (fixed up, broken down)")
    ax.set_title("Per-stage attribution")
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    path = out_dir / "attribution.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def to_markdown(cmp: Comparison, images: dict[str, Path] | None = None, title: str = "Run comparison") -> str:
    """The comparison as a markdown document: common overrides, the table, attribution, plots."""
    parts = [f"# {title}", ""]
    if cmp.common:
        parts += ["Common to all runs: " + ", ".join(f"`{k}={v}`" for k, v in cmp.common.items()), ""]
    parts += [md_table(cmp.header, cmp.rows), "",
              "Cost columns are means per question from the traces (LLM calls include cached ones; `new calls` "
              "are the ones a model actually answered). `frontier`: the cost axes on which the run is on the "
              "accuracy/cost Pareto frontier.", ""]
    attr = attribution_rows(cmp)
    if attr:
        parts += ["## Per-stage attribution", "",
                  md_table(["run", "stage", "n", "fixed", "broken", "unchanged", "overcorrection rate"], attr), ""]
    for name, path in (images or {}).items():
        parts += [f"![{name}]({Path(path).name})", ""]
    parts += ["Runs:", "", *(f"{i}. `{redact(r.path)}`" for i, r in enumerate(cmp.runs, 1)), ""]
    return "\n".join(parts)


def write_csv(cmp: Comparison, path: Path) -> None:
    """The table as CSV (full precision, empty cells for missing values)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*cmp.header, "name", "path"])
        for row, r in zip(cmp.rows, cmp.runs):
            w.writerow([("" if v is None else v) for v in row] + [redact(r.name), redact(r.path)])


def write_comparison(cmp: Comparison, out_dir: Path, *, stem: str = "compare", title: str = "Run comparison") -> dict[str, Path]:
    """Write `<stem>.md`, `<stem>.csv` and the PNG plots into `out_dir`; returns every file written by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = plot_cost_accuracy(cmp, out_dir)
    attr = plot_attribution(cmp, out_dir)
    if attr is not None:
        images["attribution"] = attr
    md = out_dir / f"{stem}.md"
    md.write_text(to_markdown(cmp, images, title))
    csv_path = out_dir / f"{stem}.csv"
    write_csv(cmp, csv_path)
    return {"markdown": md, "csv": csv_path, **images}


def compare_dirs(paths: Iterable[str | Path]) -> Comparison:
    """The comparison over run directories / sweep directories / folders of runs."""
    return build_comparison([load_run(p) for p in find_runs(paths)])


def unflatten_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Nested metrics back from a wandb summary flattened with `/` by `t2s.track.wandb_logger.flatten`.

    `attribution/<stage>/<plugin>/<field>` keeps `<stage>/<plugin>` as one key, like `metrics.json`.
    """
    out: dict[str, Any] = {}
    for key, value in summary.items():
        parts = str(key).split("/")
        if parts[0] == "attribution" and len(parts) >= 3:
            parts = [parts[0], "/".join(parts[1:-1]), parts[-1]]
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        if not isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = value
    return out


def runs_from_wandb(project: str, group: str | None = None, entity: str | None = None) -> list[RunRecord]:
    """The runs of a wandb project (optionally one group = one sweep), as logged by `logger=wandb`. Needs network
    and a wandb login; raises `CompareError` saying so otherwise."""
    try:
        import wandb

        api = wandb.Api(timeout=30)
        path = f"{entity}/{project}" if entity else project
        found = list(api.runs(path, filters={"group": group} if group else None, order="+created_at"))
    except Exception as e:  # noqa: BLE001 - wandb raises many kinds (no key, no network, no project)
        raise CompareError(
            f"cannot read wandb project {project!r}{f' group {group!r}' if group else ''}: {type(e).__name__}: {str(e).rstrip('.')}. "
            "This needs network access and `wandb login` (or WANDB_API_KEY); offline runs must be uploaded first "
            "with `wandb sync <run dir>/wandb/offline-run-*`. Without network, compare the run directories: "
            "`t2s compare outputs/multirun/<sweep>`.") from None
    runs = []
    for r in found:
        cfg = dict(r.config)
        meta = cfg.pop("_t2s", {}) or {}
        summary = {k: v for k, v in dict(r.summary).items() if not str(k).startswith("_")}
        runs.append(RunRecord(
            name=str(r.name), path=str(getattr(r, "url", r.id)),
            overrides=parse_overrides(meta.get("overrides") or []),
            choices={k: str(v) for k, v in (meta.get("choices") or {}).items()},
            config=flatten_config(cfg), metrics=unflatten_summary(summary),
            status=str(summary.get("t2s_status") or r.state)))
    if not runs:
        raise CompareError(f"wandb project {project!r}{f' group {group!r}' if group else ''} has no runs")
    return runs
