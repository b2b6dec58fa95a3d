"""Training in several processes, really run: Lightning's DDP with two gloo processes on CPU (SFT) and TRL's GRPO
under `accelerate launch` with two processes (`cluster` marker, `make test-cluster`), the tiny model on Spider
train rows. Which process wrote what is observed, not assumed: every process of a run loads an audit hook
(`sitecustomize.py` on PYTHONPATH) that records each file it opens for writing under the output directory with its
rank. Quick checks in the default suite: the strategies refused before anything loads, the per-rank shards, the
progress bar."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import requires_spider

from t2s.config import PROJECT_ROOT
from t2s.train.app import build_recipe, compose_train_config, train
from t2s.train.sft_trainer import ResumableShuffle, ValBatches

TINY = ["llm=tiny", "dataset.limit=12", "train.data.max_prompt_tokens=320", "train.data.val_size=3"]
TINY_SFT = [*TINY, "train.batch_size=2", "train.max_completion_tokens=64", "train.val_max_new_tokens=16",
            "train.warmup_steps=1", "train.lr=1e-3", "train.num_threads=1"]

#: records (pid, rank, path) of every file a process opens for writing (or renames into place) under $T2S_AUDIT_DIR
AUDIT_HOOK = '''
import os, sys
_dir = os.environ.get("T2S_AUDIT_DIR")
_log = os.environ.get("T2S_AUDIT_LOG")
_busy = [False]

def _rank():
    return os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0"

def _note(kind, path):
    if _busy[0]:
        return
    _busy[0] = True
    try:
        fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, ("%d\\t%s\\t%s\\t%s\\n" % (os.getpid(), _rank(), kind, path)).encode())
        os.close(fd)
    finally:
        _busy[0] = False

def _hook(event, args):
    if _busy[0]:
        return
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
        if writes and isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(_dir):
            _note("write", os.path.relpath(os.path.abspath(path), _dir))
    elif event in ("os.rename", "os.replace"):
        dst = args[1]
        if isinstance(dst, (str, os.PathLike)) and os.path.abspath(dst).startswith(_dir):
            _note("write", os.path.relpath(os.path.abspath(dst), _dir))

if _dir and _log:
    _note("start", " ".join(sys.argv))
    sys.addaudithook(_hook)
'''


def audited_env(tmp_path: Path, out: Path) -> tuple[dict[str, str], Path]:
    """The environment of an audited run: the hook first on PYTHONPATH, the audit log and directory."""
    hook_dir = tmp_path / "audit"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    log = tmp_path / "audit.tsv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook_dir), str(PROJECT_ROOT)]),
           "T2S_AUDIT_DIR": str(out), "T2S_AUDIT_LOG": str(log), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return env, log


def audit_records(log: Path) -> list[tuple[int, str, str, str]]:
    out = []
    for line in log.read_text().splitlines():
        pid, rank, kind, path = line.split("\t", 3)
        out.append((int(pid), rank, kind, path))
    return out


def processes_by_rank(records: list[tuple[int, str, str, str]]) -> dict[int, str]:
    """Each audited process's rank: the one it had when it last wrote (Lightning's rank 0 sets LOCAL_RANK=0
    itself when it starts the others), else when it started."""
    ranks: dict[int, str] = {}
    for pid, rank, _, _ in records:
        ranks[pid] = rank
    return ranks


# ------------------------------------------------------------------------------------------------ default suite
def test_fsdp_and_deepspeed_are_refused_before_anything_loads(tmp_path: Path) -> None:
    cases = {("fsdp", "cpu"): "needs CUDA GPUs: Lightning's FSDPStrategy refuses accelerator=cpu",
             ("fsdp", "gpu"): "train.strategy=fsdp is not offered",
             ("deepspeed", "cpu"): "DeepSpeedStrategy runs only on CUDA GPUs",
             ("deepspeed", "gpu"): "checkpoint folder instead of last.ckpt",
             ("ddp_spawn", "cpu"): "use one of auto, ddp"}
    for (strategy, accelerator), message in cases.items():
        cfg = compose_train_config([f"paths.cache_dir={tmp_path / 'cache'}", "llm=tiny",
                                    f"train.strategy={strategy}", f"train.accelerator={accelerator}"])
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            train(cfg, tmp_path / "out")
        assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # nothing loaded or written
    assert build_recipe(compose_train_config(["train.strategy=ddp", "train.devices=2"])).devices == 2


def test_every_rank_gets_as_many_training_rows_and_validation_batches() -> None:
    sampler = ResumableShuffle(7, 0, 2)
    for epoch in range(2):
        shards = [sampler.shard(epoch, r, 2) for r in range(2)]
        assert len(shards[0]) == len(shards[1]) == 4  # 7 rows padded to 8
        assert set(shards[0]) | set(shards[1]) == set(range(7))
        assert sorted(shards[0] + shards[1]) == sorted(sampler.order(epoch) + sampler.order(epoch)[:1])
    assert sampler.shard(0, 0, 1) == sampler.order(0)  # one process: the single-process order
    val = ValBatches([{"input_ids": [1], "labels": [1]}] * 5, 2, 0)  # 3 batches over 2 ranks
    assert [val.batch_index(i, 0, 2) for i in range(2)] == [0, 2]
    assert [val.batch_index(i, 1, 2) for i in range(2)] == [1, None]  # a weight-0 copy keeps rank 1 in step


@requires_spider
def test_training_shows_a_progress_bar_over_the_steps(session_cache: Path, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    cfg = compose_train_config([f"paths.cache_dir={session_cache}", *TINY_SFT, "train.max_steps=2",
                                "train.val_every=2", "train.checkpoint_every=2"])
    summary = train(cfg, tmp_path / "bar")
    err = capfd.readouterr().err
    assert summary["steps"] == 2 and summary["world_size"] == 1
    assert "train: 100%" in err and "2/2" in err and "val_ex=" in err, err[-2000:]
    quiet = compose_train_config([f"paths.cache_dir={session_cache}", *TINY_SFT, "train.max_steps=1",
                                  "train.val_every=1", "train.checkpoint_every=1", "train.progress=false"])
    train(quiet, tmp_path / "quiet")
    assert "train:" not in capfd.readouterr().err


@requires_spider
def test_grpo_shows_a_progress_bar_over_the_steps(session_cache: Path, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    cfg = compose_train_config([f"paths.cache_dir={session_cache}", "train=grpo", *TINY, "train.max_steps=1",
                                "train.group_size=2", "train.max_completion_tokens=4", "train.save_every=1"])
    assert train(cfg, tmp_path / "grpo")["steps"] == 1
    err = capfd.readouterr().err
    assert "100%" in err and "1/1" in err, err[-2000:]


# ------------------------------------------------------------------------------------------------ multi-process
def _wait_for(path: Path, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.time() + seconds
    while not path.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert path.is_file(), f"{path} was not written (exit status {proc.poll()})"


@pytest.mark.cluster
@requires_spider
def test_sft_ddp_two_gloo_processes_rank0_writes_once_and_resumes_after_kill(session_cache: Path,
                                                                             tmp_path: Path) -> None:
    """`t2s train train.strategy=ddp train.devices=2`: two processes train (gloo), only rank 0 writes the
    artifacts, validation EX scores each held-out question once, and a kill -9 of every process mid-training then
    the same command resumes from last.ckpt, logging to the same wandb run."""
    out = tmp_path / "ddp"
    args = [f"paths.cache_dir={session_cache}", *TINY_SFT, "train.max_steps=24", "train.val_every=4",
            "train.checkpoint_every=4", "train.patience=0", "train.strategy=ddp", "train.devices=2",
            "train/logger=wandb", f"hydra.run.dir={out}"]
    env, log = audited_env(tmp_path, out)
    command = [sys.executable, "-m", "t2s.cli", "train", *args]
    proc = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(out / "checkpoints" / "last.ckpt", proc, 600)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its child rank: one process group
        proc.wait()
    assert not (out / "summary.json").exists()
    killed_at = len(audit_records(log))
    done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["rows_per_step"] == 4
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 4
    assert summary["steps"] == 24 and summary["steps_this_run"] == 24 - summary["resumed_from"]
    assert summary["val_questions"] == 3  # the 3 held-out questions, each scored once over the two ranks
    assert json.loads((out / "adapter" / "t2s_best.json").read_text())["val_questions"] == 3
    curves = json.loads((out / "curves.json").read_text())
    steps = [p[0] for p in curves["train_loss"]]
    assert steps == sorted(steps) and steps[-1] == 24 and len(steps) == len(set(steps))
    # Lightning writes a step's checkpoint before that step's validation: a kill in between loses that one point
    val_steps = [p[0] for p in curves["val_ex"]]
    assert [s for s in val_steps if s != summary["resumed_from"]] == \
        [s for s in (4, 8, 12, 16, 20, 24) if s != summary["resumed_from"]]

    run_id = (out / "wandb_run_id").read_text().strip()  # the resumed run logs to the killed run's wandb run
    runs = sorted(out.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs), runs

    records = audit_records(log)
    ranks = processes_by_rank(records)
    for part in (records[:killed_at], records[killed_at:]):  # both runs had a rank 1 that started and trained
        assert any(r == "1" and k == "start" and "ddp_job.pkl" in p for _, r, k, p in part), part[:5]
    written = {(ranks[pid], path) for pid, _, kind, path in records if kind == "write"}
    by_rank1 = sorted(p for r, p in written if r != "0")
    assert by_rank1 == [], by_rank1
    paths = {p for _, p in written}
    for artifact in ("checkpoints/last.ckpt", "curves.json", "curves.png", "summary.json", "train_config.yaml",
                     "adapter/adapter_config.json", "adapter/t2s_best.json", "csv/version_0/metrics.csv"):
        assert artifact in paths, sorted(paths)


@pytest.mark.cluster
@requires_spider
def test_grpo_two_processes_under_accelerate_one_reward_log_one_wandb_run(session_cache: Path,
                                                                           tmp_path: Path) -> None:
    """`accelerate launch --multi_gpu --num_processes 2 -m t2s.train.app train=grpo` on CPU: two gloo processes
    (per-rank RNG states in the checkpoints, two prompts per step), one reward log written by rank 0 with every
    process's groups, and the resumed run logs to the same wandb run id."""
    out = tmp_path / "grpo"
    env, log = audited_env(tmp_path, out)
    base = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "t2s.train.app",
            "train=grpo", f"paths.cache_dir={session_cache}", *TINY, "train.group_size=2",
            "train.max_completion_tokens=12", "train.save_every=1", "train/logger=wandb", f"hydra.run.dir={out}"]
    for steps in (2, 3):  # the second command resumes from checkpoint-2 and trains step 3
        done = subprocess.run([*base, f"train.max_steps={steps}"], env=env, cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["prompts_per_step"] == 2
    assert summary["resumed_from"] == 2 and summary["steps"] == 3
    assert {p.name for p in (out / "checkpoints" / "checkpoint-1").glob("rng_state_*.pth")} == \
        {"rng_state_0.pth", "rng_state_1.pth"}
    lines = [json.loads(x) for x in (out / "rewards.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert all(sum(r["exec_statuses"].values()) == 4 for r in lines)  # 2 processes x one group of 2
    assert [p.name for p in out.glob("rewards*.jsonl")] == ["rewards.jsonl"]

    run_id = (out / "wandb_run_id").read_text().strip()
    runs = sorted(out.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs), runs

    records = audit_records(log)
    writers = {path: {r for _, r, k, p in records if k == "write" and p == path} for path in
               ("rewards.jsonl", "summary.json", "curves.json", "adapter/adapter_config.json", "wandb_run_id")}
    assert all(w == {"0"} for w in writers.values()), writers
    assert {r for _, r, k, _ in records if k == "start"} >= {"0", "1"}
