"""The SLURM path, really run (`make test-cluster`): a single-node cluster from Debian's packages, started by
scripts/slurm/start.sh (slurmctld + slurmd on 127.0.0.1, munge), and a 2x2 sweep with the tiny model sent through
Hydra's submitit launcher (`hydra/launcher=slurm`: one `sbatch` array, each job an `srun` step), waited for, then
every job's metrics, the SLURM records of its four array tasks and the sweep's `t2s compare` table checked. The
sweep runs with `paths.shared_fs=true`, as it would on a cluster's shared filesystem: its caches end in DELETE
journal mode and every run directory is released. Sending the same sweep again resumes every job: nothing reruns.

Needs root: the script installs slurm-wlm and munge with apt-get when they are missing and starts system daemons
(skipped otherwise, with the reason). The cluster is left running for the next session; scripts/slurm/stop.sh
stops it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "scripts" / "slurm" / "start.sh"
T2S = [sys.executable, "-m", "t2s.cli"]
#: the launcher's cpus_per_task: 4 / mem_gb: 16 do not fit a 2-CPU node: one CPU each, so two jobs run at once
FIT = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10"]
SWEEP = ["llm=tiny", "dataset.limit=1,2", "schema_format=ddl,markdown", "generator.max_new_tokens=8",
         "run.progress=false", "paths.shared_fs=true"]


def skip_reason() -> str | None:
    """Why this machine cannot run a cluster of its own, or None."""
    if sys.platform != "linux":
        return "a single-node SLURM cluster needs Linux"
    if os.geteuid() != 0:
        return ("needs root: scripts/slurm/start.sh installs slurm-wlm and munge and starts slurmctld, slurmd and "
                "munged (run `sudo scripts/slurm/start.sh`, then the tests as root)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it: install slurm-wlm and munge"
    return None


@pytest.fixture(scope="module")
def cluster() -> str:
    """The cluster, up (started, or found up): the start script's output."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([str(START)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"scripts/slurm/start.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def listening(port: int) -> set[str]:
    """The local addresses (hex, as in /proc/net/tcp) with a socket listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def test_start_script_finds_the_cluster_up_declared_as_this_node(cluster: str) -> None:
    again = subprocess.run([str(START)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already up (nothing started)" in again.stdout, again.stdout + again.stderr
    node = dict(kv.split("=", 1) for kv in scontrol("-o", "show", "node", "localhost").split() if "=" in kv)
    measured = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.split()
    hw = dict(kv.split("=", 1) for kv in measured if "=" in kv)
    assert node["CPUTot"] == hw["CPUs"] == str(len(os.sched_getaffinity(0)))
    assert node["RealMemory"] == hw["RealMemory"]
    assert node["State"].split("+")[0] in ("IDLE", "MIXED", "ALLOCATED")
    assert "Partitions=t2s" in scontrol("-o", "show", "node", "localhost")
    # slurmctld (6817) and slurmd (6818) listen on 127.0.0.1 only
    assert listening(6817) == {"0100007F"} and listening(6818) == {"0100007F"}


def array_tasks(array_id: str) -> dict[str, dict[str, str]]:
    """SLURM's records of an array's tasks by task id, once none is still running or completing (submitit returns as
    soon as a task's result file is written, before slurmd has finished the job)."""
    deadline = time.monotonic() + 120
    while True:
        tasks = {}
        for line in scontrol("-o", "show", "job", array_id).splitlines():
            rec = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            tasks[rec["ArrayTaskId"]] = rec
        if time.monotonic() > deadline or not any(t["JobState"] in ("RUNNING", "COMPLETING") for t in tasks.values()):
            return tasks
        time.sleep(0.5)


def only_sweep_dir(out: Path) -> Path:
    dirs = [d for d in (out / "multirun").iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def journal(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def job_key(job: Path) -> tuple[str, str]:
    """(dataset.limit, schema_format) of a job directory, read from its name (the job's overrides)."""
    values = dict(part.split("=", 1) for part in job.name.split(","))
    return values["dataset.limit"], values["schema_format"]


def table_rows(stdout: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in `t2s compare`'s output, by column name."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[1:]]


def test_a_2x2_sweep_through_sbatch_runs_every_job_and_compares(cluster: str, tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "T2S_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "WANDB_MODE": "offline"}
    env.pop("T2S_JOBS", None)
    cmd = [*T2S, "run", "-m", "hydra/launcher=slurm", *FIT, *SWEEP, f"paths.output_root={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Submitit 'slurm' sweep output dir" in proc.stdout + proc.stderr
    sweep = only_sweep_dir(out)

    # one sbatch array of four tasks, each run on the node and finished
    arrays = sorted(p for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" not in p.name)
    assert len(arrays) == 1, arrays
    array_id = arrays[0].name
    script = (arrays[0] / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-3" in script and "#SBATCH --cpus-per-task=1" in script and "#SBATCH --mem=2GB" in script
    tasks = array_tasks(array_id)
    assert sorted(tasks) == ["0", "1", "2", "3"]
    assert all(t["JobState"] == "COMPLETED" and t["NodeList"] == "localhost" and t["ExitCode"] == "0:0"
               for t in tasks.values()), tasks
    for i in range(4):
        log = (sweep / ".submitit" / f"{array_id}_{i}" / f"{array_id}_{i}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={array_id}_{i}," in log and "Job completed successfully" in log

    # every job: its own run directory, finished, every question answered and scored, the lock released
    jobs = {job_key(d): d for d in sweep.iterdir() if (d / ".hydra").is_dir()}
    assert sorted(jobs) == [(n, f) for n in ("1", "2") for f in ("ddl", "markdown")]
    metrics = {}
    for key, job in jobs.items():
        m = json.loads((job / "metrics.json").read_text())
        limit = int(key[0])
        assert m["n"] == m["scored"] == limit and m["pipeline_errors"]["count"] == 0, job.name
        assert m["cost"]["totals"]["llm_calls"] == limit and m["this_call"]["questions_run"] == limit
        assert json.loads((job / "run.json").read_text())["status"] == "finished"
        assert not (job / ".lock.lease").exists()
        metrics[key] = m
    # the caches the four jobs shared, in the journal mode paths.shared_fs asks for
    assert journal(cache / "llm_cache.sqlite") == "delete" and journal(cache / "gold" / "gold.sqlite") == "delete"

    # the sweep summary and `t2s compare`: one row per job, the jobs' own numbers
    assert len(list(csv.DictReader((sweep / "summary.csv").open()))) == 4
    cmp = subprocess.run([*T2S, "compare", str(sweep)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert cmp.returncode == 0, cmp.stderr
    rows = table_rows(cmp.stdout)
    assert [(r["dataset.limit"], r["schema_format"], r["status"]) for r in rows] == [
        ("1", "ddl", "finished"), ("1", "markdown", "finished"), ("2", "ddl", "finished"), ("2", "markdown", "finished")]
    for r in rows:
        m = metrics[(r["dataset.limit"], r["schema_format"])]
        assert int(r["questions"]) == m["n"] and float(r["EX %"]) == round(m["ex"], 1)
        assert float(r["LLM calls/q"]) == 1.0
    assert (sweep / "compare.md").is_file() and (sweep / "compare.csv").is_file()

    # the same sweep sent again: four new array tasks, each finding its run finished (nothing reruns)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert only_sweep_dir(out) == sweep
    second = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" not in p.name and p.name != array_id]
    assert len(second) == 1, second
    for i in range(4):
        log = (sweep / ".submitit" / f"{second[0]}_{i}" / f"{second[0]}_{i}_0_log.out").read_text()
        assert "[t2s] already finished" in log and "question(s) to run" not in log, log[-2000:]
    for job in jobs.values():
        assert json.loads((job / "metrics.json").read_text())["this_call"]["questions_run"] == 0
