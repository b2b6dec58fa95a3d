"""The `t2s` command: `run` (the Hydra app), `eval` (score any system's predictions), `plugins` (list the registry).

Errors reach the user as one message on stderr and a non-zero exit status (1; 2 for usage errors); the
traceback only with `T2S_DEBUG=1` or `HYDRA_FULL_ERROR=1`. Secrets are never written: `key=value` overrides of
secret keys leave the argument list before Hydra sees it (docs/security.md), and `~/.config/t2s/secrets.env`
(or `$T2S_SECRETS_FILE`) is loaded into the environment at start.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from t2s.config import register_configs, run_name

USAGE = """usage: t2s <command> [args]

commands:
  run [overrides]          run the pipeline (Hydra app; -m for sweeps), e.g. t2s run dataset=spider_dev dataset.limit=20
  eval predictions=FILE [overrides] [out=DIR]
                           score another system's predictions against a dataset config
  prepare [overrides]      build every artifact the configured pipeline needs (indexes, profiles) ahead of time
  train train=<recipe> [overrides]
                           train an adapter for one stage (Hydra app, conf/train.yaml; recipes in conf/train/)
  serve [overrides]        the configured pipeline behind an HTTP API and a demo page (serve.host, serve.port),
                           e.g. t2s serve llm=tiny serve.port=8080
  plugins                  list every config group, its options and each plugin's one-line description
  export predictions=RUN_DIR --format spider|bird [out=FILE]
                           a run's final SQL as the official evaluators' prediction file (one line per question
                           of the dataset file, `SELECT 1` where the run has no answer; or BIRD's JSON)
  compare DIR [DIR...] [--out DIR]
                           one table (+ CSV, accuracy/cost and attribution plots) over run directories or a sweep
  compare --wandb-project P [--wandb-group G] [--wandb-entity E]
                           the same table from wandb runs (online)
"""


def _name_exclude_keys() -> list[str]:
    """Keys that do not name a run (conf/config.yaml: hydra.job.config.override_dirname.exclude_keys)."""
    import yaml

    from t2s.config import CONF_DIR

    data = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    return list(data["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"])


def _sweep_args(args: list[str]) -> list[str]:
    """With -m and no explicit sweep dir, name the sweep directory after the command's overrides (resumable)."""
    if not any(a in ("-m", "--multirun") for a in args) or any(a.startswith("hydra.sweep.dir=") for a in args):
        return args
    exclude = set(_name_exclude_keys())
    overrides = [a for a in args if not a.startswith("-") and "=" in a and not a.startswith(("hydra.", "hydra/"))
                 and a.split("=", 1)[0].lstrip("+~") not in exclude]
    name = run_name(overrides).replace("'", "_")
    return [*args, f"hydra.sweep.dir='${{paths.output_root}}/multirun/{name}'"]


def cmd_run(args: list[str]) -> int:
    from t2s.run import app as run_app
    from t2s.track.secrets import export_secret_overrides, split_secret_overrides

    args, secrets = split_secret_overrides(args)
    export_secret_overrides(secrets)
    return _hydra_app(run_app.main, ["t2s run", *_sweep_args(args)])


class _WithoutJobLine:
    """A stderr that drops the line Hydra writes before re-raising a single job's error ("Error executing job with
    overrides: [...]"): `main` prints the error itself, in one message. Everything else passes through."""

    PREFIX = "Error executing job with overrides:"

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if text.startswith(self.PREFIX):
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _hydra_app(app_main: Any, argv: list[str]) -> int:
    """Run a Hydra app with `argv`. Hydra prints a (shortened) traceback itself unless HYDRA_FULL_ERROR is set; with
    it set, the error reaches `main`, which prints one message (restored afterwards). In a sweep (-m) Hydra's line
    naming the failed job's overrides is kept; for one job it would only repeat the command line."""
    sys.argv = argv
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    stderr = sys.stderr
    if not any(a in ("-m", "--multirun") for a in argv):
        sys.stderr = _WithoutJobLine(stderr)  # type: ignore[assignment]
    try:
        app_main()
    finally:
        if sys.stderr is not stderr and isinstance(sys.stderr, _WithoutJobLine):
            sys.stderr = stderr
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before
    return 0


def cmd_train(args: list[str]) -> int:
    """`t2s train train=<recipe> [overrides]`: the training Hydra app (t2s/train/app.py)."""
    from t2s.train import app as train_app

    return _hydra_app(train_app.main, ["t2s train", *args])


def cmd_eval(args: list[str]) -> int:
    from t2s.eval.evaluate import evaluate_cli

    return evaluate_cli(args)


def cmd_prepare(args: list[str]) -> int:
    """`t2s prepare [overrides]`: build the configured pipeline's artifacts for every database of the dataset."""
    from t2s.config import compose_config
    from t2s.run.prepare import format_summary, prepare

    print(format_summary(prepare(compose_config(args))))
    return 0


def cmd_serve(args: list[str]) -> int:
    """`t2s serve [overrides]`: the pipeline `t2s run` would build from the same overrides, over HTTP."""
    from t2s.config import compose_config
    from t2s.serve.server import serve, serve_run_dir

    cfg = compose_config(args)
    serve(cfg, serve_run_dir(cfg, args))
    return 0


def cmd_plugins(args: list[str]) -> int:
    from t2s.registry import format_registry

    parser = argparse.ArgumentParser(prog="t2s plugins")
    parser.add_argument("--group", help="only this config group")
    ns = parser.parse_args(args)
    print(format_registry(ns.group))
    return 0


def cmd_compare(args: list[str]) -> int:
    """`t2s compare`: print the comparison table and write compare.md, compare.csv and the PNG plots."""
    from t2s.eval.report import md_table
    from t2s.track.compare import CompareError, build_comparison, compare_dirs, runs_from_wandb, write_comparison

    parser = argparse.ArgumentParser(
        prog="t2s compare",
        description="Compare runs: rows = runs, columns = the overrides that differ, EX and other metrics, cost "
                    "means per question. Give run directories, sweep directories (only that sweep's jobs) or "
                    "folders of runs; or a wandb project (needs network).")
    parser.add_argument("dirs", nargs="*", help="run directories, sweep directories or folders holding runs")
    parser.add_argument("--out", "-o", help="where compare.md, compare.csv and the plots go (default: the directory "
                                            "given, if one; else outputs/compare/<names>)")
    parser.add_argument("--wandb-project", help="read the runs from this wandb project instead of directories")
    parser.add_argument("--wandb-group", help="only this wandb group (a sweep directory's name)")
    parser.add_argument("--wandb-entity", help="wandb entity (user or team) of the project")
    ns = parser.parse_args(args)
    if bool(ns.dirs) == bool(ns.wandb_project):
        parser.error("give run/sweep directories or --wandb-project (one of the two)")
    try:
        if ns.wandb_project:
            cmp = build_comparison(runs_from_wandb(ns.wandb_project, ns.wandb_group, ns.wandb_entity))
            default = Path("outputs") / "compare" / run_name(["wandb", ns.wandb_project, ns.wandb_group or "all"])
        else:
            cmp = compare_dirs(ns.dirs)
            default = (Path(ns.dirs[0]) if len(ns.dirs) == 1 else
                       Path("outputs") / "compare" / run_name([Path(d).name for d in ns.dirs]))
        files = write_comparison(cmp, Path(ns.out) if ns.out else default)
    except CompareError as e:
        print(f"t2s compare: {e}", file=sys.stderr)
        return 1
    if cmp.common:
        print("common: " + " ".join(f"{k}={v}" for k, v in cmp.common.items()))
    print(md_table(cmp.header, cmp.rows))
    print(f"\n[t2s] wrote {files['markdown']}, {files['csv'].name} and "
          f"{len(files) - 2} plot(s) in {files['markdown'].parent}")
    return 0


def cmd_export(args: list[str]) -> int:
    """`t2s export predictions=RUN_DIR --format spider|bird [out=FILE]` (`t2s.eval.export`)."""
    from t2s.eval.export import FORMATS, export_predictions

    own: dict[str, str | None] = {"predictions": None, "format": None, "out": None}
    rest = list(args)
    while rest:
        a = rest.pop(0)
        if a in ("--format", "-f") and rest:
            own["format"] = rest.pop(0)
        elif a.startswith("--format="):
            own["format"] = a.split("=", 1)[1]
        elif "=" in a and a.split("=", 1)[0] in own:
            own[a.split("=", 1)[0]] = a.split("=", 1)[1]
        else:
            print(f"t2s export: unexpected argument {a!r}; usage: t2s export predictions=RUN_DIR --format "
                  f"{'|'.join(FORMATS)} [out=FILE]", file=sys.stderr)
            return 2
    if not own["predictions"] or not own["format"]:
        print(f"t2s export: give predictions=RUN_DIR and --format {'|'.join(FORMATS)}", file=sys.stderr)
        return 2
    done = export_predictions(own["predictions"], own["format"], own["out"])
    print(f"[t2s] wrote {done['path']}: {done['questions']} questions, {done['answered']} answered, "
          f"{done['placeholders']} written as `SELECT 1` (no answer in the run)")
    return 0


DEBUG_VARIABLES = ("T2S_DEBUG", "HYDRA_FULL_ERROR")


def debug_requested() -> bool:
    """Whether the user asked for tracebacks (`T2S_DEBUG=1` or `HYDRA_FULL_ERROR=1` in the environment)."""
    return any(os.environ.get(k, "").strip().lower() not in ("", "0", "false", "no") for k in DEBUG_VARIABLES)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from t2s.run.checks import ConfigError
    from t2s.run.store import RunDirError
    from t2s.track.compare import CompareError

    return HydraException, OmegaConfBaseException, ConfigError, RunDirError, CompareError, OSError, ValueError


#: the detail lines OmegaConf appends to its errors ("    full_key: run.batch_size", "    object_type=RunConf")
_OMEGACONF_DETAIL = re.compile(r"^\s+(full_key|reference_type|object_type)[:=]")


def error_message(e: BaseException) -> str:
    """One readable message for an exception: its text, then the text of its causes when they add something
    (Hydra wraps a plugin's error in "Error in call to target ..."). OmegaConf's detail lines are left out, and a
    rejected override is one line: `Error merging override run.batch_size=abc: Value 'abc' of type 'str' could not be
    converted to Integer`."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen and len(parts) < 4:
        seen.add(id(cur))
        text = "\n".join(line for line in str(cur).strip().splitlines() if not _OMEGACONF_DETAIL.match(line))
        text = text.strip() or type(cur).__name__
        if isinstance(cur, (KeyError, AttributeError, TypeError, NameError)) or not str(cur).strip():
            text = f"{type(cur).__name__}: {text}"
        if not any(text in p for p in parts):
            parts.append(text)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    if len(parts) == 2 and parts[0].startswith("Error merging override ") and "\n" not in "".join(parts):
        return ": ".join(parts)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `t2s` console script: one message and exit status 1 on error (traceback only in debug)."""
    register_configs()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    commands = {"run": cmd_run, "eval": cmd_eval, "prepare": cmd_prepare, "plugins": cmd_plugins, "compare": cmd_compare,
                "serve": cmd_serve, "train": cmd_train, "export": cmd_export}
    if cmd not in commands:
        print(f"t2s: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    debug = debug_requested()  # read before `cmd_run` sets HYDRA_FULL_ERROR for its own use
    try:
        from t2s.track.secrets import load_secrets_file

        load_secrets_file()
        return commands[cmd](rest)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"t2s {cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error becomes one message
        if debug:
            raise
        print(f"t2s {cmd}: error: {error_message(e)}", file=sys.stderr)
        if not isinstance(e, _user_error_types()):
            print(f"(unexpected {type(e).__name__}: this may be a bug in t2s or a plugin; rerun with T2S_DEBUG=1 "
                  "for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
