"""Sweeps: launcher presets compose, the sweep summary covers exactly the sweep's jobs; end to end with the tiny
model, a 2x2 joblib sweep with wandb + `t2s compare` (~30 s on 2 cores) and (slow) a sweep killed in its third job
that resumes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from t2s.config import CONF_DIR, PROJECT_ROOT, register_configs
from t2s.run.store import read_jsonl

T2S = [sys.executable, "-m", "t2s.cli"]


def compose_hydra(overrides: list[str], tmp_path: Path) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[f"paths.cache_dir={tmp_path}", *overrides],
                       return_hydra_config=True)


def test_parallel_preset_bounds_jobs_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T2S_JOBS", raising=False)
    cfg = compose_hydra(["hydra/launcher=parallel"], tmp_path)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    monkeypatch.setenv("T2S_JOBS", "3")
    assert compose_hydra(["hydra/launcher=parallel"], tmp_path).hydra.launcher.n_jobs == 3
    assert compose_hydra(["hydra/launcher=parallel", "hydra.launcher.n_jobs=1"], tmp_path).hydra.launcher.n_jobs == 1


def test_slurm_preset_composes_and_its_launcher_class_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T2S_SLURM_PARTITION", "cpu")
    cfg = compose_hydra(["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=1"], tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher.partition == "cpu" and launcher.gpus_per_node == 1 and launcher.array_parallelism == 16
    raw = OmegaConf.to_container(launcher, resolve=False)
    assert raw["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"  # inside the sweep directory
    cls = get_class(launcher._target_)
    assert cls.__name__ == "SlurmLauncher"


def test_sweep_summary_callback_is_registered(tmp_path: Path) -> None:
    cfg = compose_hydra([], tmp_path)
    assert cfg.hydra.callbacks.sweep_summary._target_ == "t2s.track.sweep.SweepSummary"
    assert "paths.output_root" in cfg.hydra.job.config.override_dirname.exclude_keys


TOY_APP = '''
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    if cfg.a == 7:
        (out / "run.json").write_text(json.dumps({"status": "failed"}))
        raise RuntimeError("job a=7 fails on purpose")
    calls = float(cfg.a)
    metrics = {"n": 4, "scored": 4, "ex": 10.0 * cfg.a + (5.0 if cfg.b == "y" else 0.0),
               "cost": {"means": {"llm_calls_per_question": calls, "prompt_tokens_per_question": 100 * calls,
                                  "completion_tokens_per_question": 10 * calls, "wall_seconds_per_question": calls}}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "run.json").write_text(json.dumps({"status": "finished"}))


main()
'''

TOY_CONFIG = '''
a: 1
b: x
hydra:
  callbacks:
    sweep_summary:
      _target_: t2s.track.sweep.SweepSummary
  sweep:
    dir: ${oc.env:TOY_SWEEP_DIR}
    subdir: ${hydra:job.override_dirname}
'''


def run_toy(app_dir: Path, sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOY_SWEEP_DIR": str(sweep_dir), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, str(app_dir / "app.py"), "-m", *overrides], capture_output=True, text=True,
                          env=env, cwd=app_dir, timeout=120)


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep_dir / "summary.csv").open()))


def test_summary_holds_exactly_the_jobs_of_its_sweep(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(textwrap.dedent(TOY_CONFIG))
    (tmp_path / "app.py").write_text(TOY_APP)
    sweep = tmp_path / "sweep"

    proc = run_toy(tmp_path, sweep, "a=1,2", "b=x,y")
    assert proc.returncode == 0, proc.stderr
    rows = summary_rows(sweep)
    assert [(r["a"], r["b"], r["EX %"]) for r in rows] == [("1", "x", "10.0"), ("1", "y", "15.0"),
                                                          ("2", "x", "20.0"), ("2", "y", "25.0")]
    assert [r["frontier"] for r in rows][3] == "llm_calls,tokens,seconds"
    md = (sweep / "summary.md").read_text()
    assert "`t2s run -m a=1,2 b=x,y` (4 job(s))" in md and (sweep / "ex_vs_llm_calls.png").is_file()

    # a second, different sweep into the same directory: its summary lists its own job only
    proc = run_toy(tmp_path, sweep, "a=3", "+api_key=sk-TOY")
    assert proc.returncode == 0, proc.stderr
    assert [(r["name"], r["EX %"]) for r in summary_rows(sweep)] == [("+api_key=<redacted>,a=3", "30.0")]
    assert "sk-TOY" not in (sweep / "summary.md").read_text() and "+api_key=<redacted>" in (sweep / "summary.md").read_text()

    # a sweep whose second job fails still gets a summary, with the failure in it
    proc = run_toy(tmp_path, sweep, "a=6,7")
    assert proc.returncode != 0 and "fails on purpose" in proc.stderr
    assert [(r["a"], r["status"]) for r in summary_rows(sweep)] == [("6", "finished"), ("7", "failed")]


# ---------------------------------------------------------------- end to end with the real pipeline

def t2s_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "T2S_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline", "T2S_JOBS": "2",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def only_sweep_dir(out: Path) -> Path:
    dirs = [d for d in (out / "multirun").iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_joblib_2x2_sweep_with_wandb_and_compare(tmp_path: Path) -> None:
    """The issue's check: 2x2 sweep, joblib launcher, four job dirs, four offline wandb runs, one 4-row table."""
    from test_wandb import closed_records

    out = tmp_path / "out"
    cmd = [*T2S, "run", "-m", "hydra/launcher=parallel", "logger=wandb", "schema_format=ddl,markdown",
           "generator.n=1,2", "llm=tiny", "dataset.limit=4", "generator.max_new_tokens=8", "run.progress=false",
           f"paths.output_root={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=t2s_env(tmp_path), cwd=PROJECT_ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stderr + proc.stdout
    sweep = only_sweep_dir(out)
    jobs = sorted(d for d in sweep.iterdir() if (d / ".hydra").is_dir())
    assert len(jobs) == 4
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["n"] == 4 and metrics["cost"]["totals"]["llm_calls"] == 4
        runs = sorted(job.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(runs) == 1, f"{job.name}: {runs}"
        run = next(r.run for r in closed_records(runs[0]) if r.WhichOneof("record_type") == "run")
        assert run.display_name == job.name and run.run_group == sweep.name
    assert len(summary_rows(sweep)) == 4

    cmp = subprocess.run([*T2S, "compare", str(sweep), "--out", str(tmp_path / "cmp")], capture_output=True,
                         text=True, cwd=PROJECT_ROOT, timeout=120)
    assert cmp.returncode == 0, cmp.stderr
    table = [ln for ln in cmp.stdout.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + 4 and "| schema_format | generator.n |" in table[0]
    for name in ("compare.md", "compare.csv", "ex_vs_llm_calls.png", "ex_vs_tokens.png", "ex_vs_seconds.png",
                 "attribution.png"):
        assert (tmp_path / "cmp" / name).is_file(), name


@pytest.mark.slow
def test_sweep_killed_in_third_job_resumes_without_redoing_work(tmp_path: Path) -> None:
    """Basic launcher, 3 jobs of 8 questions one per batch; SIGKILL while job 3 has some questions done; rerun."""
    out = tmp_path / "out"
    cmd = [*T2S, "run", "-m", "schema_format=ddl,markdown,mschema", "llm=tiny", "dataset.limit=8",
           "generator.max_new_tokens=48", "run.batch_size=1", "run.progress=false", f"paths.output_root={out}"]
    env = t2s_env(tmp_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=PROJECT_ROOT,
                            start_new_session=True)
    third = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            sweeps = list((out / "multirun").glob("*/*schema_format=mschema/predictions.jsonl"))
            if sweeps and sweeps[0].stat().st_size > 0:
                third = sweeps[0]
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert third is not None, "the sweep ended (or timed out) before its third job wrote a prediction"
    sweep = third.parent.parent
    done3 = list(read_jsonl(third))
    assert 0 < len(done3) < 8, f"third job had {len(done3)} of 8 questions when killed; the test needs a partial job"
    assert json.loads((third.parent / "run.json").read_text())["status"] == "running"  # killed: no clean exit
    first_two = [sweep / d for d in sorted(os.listdir(sweep)) if "schema_format=mschema" not in d
                 and (sweep / d / ".hydra").is_dir()]
    assert len(first_two) == 2 and all((d / "metrics.json").is_file() for d in first_two)
    before = {d: (d / "predictions.jsonl").stat().st_mtime_ns for d in first_two}
    prefix = third.read_bytes()[: third.read_bytes().rfind(b"\n") + 1]

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert only_sweep_dir(out) == sweep
    output = again.stdout + again.stderr
    # jobs 1-2 generate nothing (no "question(s) to run" line from them), job 3 only its unfinished questions
    k = len(prefix.splitlines())
    assert output.count("question(s) to run") == 1 and f"{8 - k} question(s) to run, {k} already finished" in output
    assert {d: (d / "predictions.jsonl").stat().st_mtime_ns for d in first_two} == before
    records = list(read_jsonl(third))
    assert third.read_bytes().startswith(prefix), "finished questions of job 3 were rewritten"
    assert len(records) == 8 and len({r["qid"] for r in records}) == 8
    assert [r["status"] for r in summary_rows(sweep)] == ["finished"] * 3
