"""The `t2s` command: `run` (the Hydra app), `eval` (score any system's predictions), `plugins` (list the registry)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from t2s.config import register_configs, run_name

USAGE = """usage: t2s <command> [args]

commands:
  run [overrides]          run the pipeline (Hydra app; -m for sweeps), e.g. t2s run dataset=spider_dev dataset.limit=20
  eval predictions=FILE [overrides] [out=DIR]
                           score another system's predictions against a dataset config
  plugins                  list every config group, its options and each plugin's one-line description
"""


def _sweep_args(args: list[str]) -> list[str]:
    """With -m and no explicit sweep dir, name the sweep directory after the command's overrides (resumable)."""
    if not any(a in ("-m", "--multirun") for a in args) or any(a.startswith("hydra.sweep.dir=") for a in args):
        return args
    overrides = [a for a in args if not a.startswith("-") and "=" in a and not a.startswith("hydra.")]
    name = run_name(overrides).replace("'", "_")
    return [*args, f"hydra.sweep.dir='${{paths.output_root}}/multirun/{name}'"]


def cmd_run(args: list[str]) -> int:
    from t2s import run as run_app

    sys.argv = ["t2s run", *_sweep_args(args)]
    run_app.main()
    return 0


def cmd_eval(args: list[str]) -> int:
    from t2s.evaluate import evaluate_cli

    return evaluate_cli(args)


def cmd_plugins(args: list[str]) -> int:
    from t2s.registry import format_registry

    parser = argparse.ArgumentParser(prog="t2s plugins")
    parser.add_argument("--group", help="only this config group")
    ns = parser.parse_args(args)
    print(format_registry(ns.group))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `t2s` console script."""
    register_configs()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    commands = {"run": cmd_run, "eval": cmd_eval, "plugins": cmd_plugins}
    if cmd not in commands:
        print(f"t2s: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return commands[cmd](rest)


if __name__ == "__main__":
    sys.exit(main())
