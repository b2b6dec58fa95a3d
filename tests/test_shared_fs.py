"""Caches and run directories on a filesystem several machines share (`paths.shared_fs`, docs/cluster.md).

- Every SQLite store under `paths.cache_dir` (LLM responses, gold results, embeddings) is in WAL mode by default and
  in DELETE (rollback journal) mode with `paths.shared_fs=true`, read back with `PRAGMA journal_mode` from a fresh
  connection after a real run; a WAL cache switches to DELETE when the setting is turned on; a cache another process
  holds open in WAL mode is refused with a message, never silently left in WAL.
- The run-directory lock: with `paths.shared_fs=true` a lease that holds across machines. A second machine is played
  by a process in its own PID and UTS namespaces (`unshare`: another host name, other PIDs, the same files): it is
  refused while the holder lives, takes a lease whose holder on this machine died at once, and one whose holder on
  the other machine died only after the lease lapses.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import compose_config

from t2s.integrity import NetworkJournalError, configure_storage, journal_mode, set_network_fs
from t2s.llm.cache import ResponseCache
from t2s.run.app import discard_unused_run_dir
from t2s.run.runner import run
from t2s.run.store import LEASE, NON_RESULT_KEYS, RunDirError, RunStore, lease_holder

STORES = ("llm_cache.sqlite", "gold/gold.sqlite", "embeddings.sqlite")


def read_journal_mode(path: Path) -> str:
    """The journal mode a fresh connection finds the file in (WAL is recorded in the file; DELETE is the default)."""
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def run_with_every_store(tmp_path: Path, cache: Path, *overrides: str) -> dict:
    """A one-question run that opens all three stores: the LLM cache (tiny model), the gold cache (scoring) and the
    embedding cache (the embedding schema linker, hashing embedder)."""
    cfg = compose_config(["dataset.limit=1", "schema_linker=embedding", "generator.max_new_tokens=4", *overrides],
                         cache_dir=cache, output_root=tmp_path / "out")
    return run(cfg, run_dir=tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}")


def test_shared_fs_puts_every_cache_under_cache_dir_in_delete_mode(tmp_path: Path) -> None:
    local, shared = tmp_path / "local-cache", tmp_path / "shared-cache"
    run_with_every_store(tmp_path, local)
    run_with_every_store(tmp_path, shared, "paths.shared_fs=true")
    for name in STORES:
        assert read_journal_mode(local / name) == "wal", name
        assert read_journal_mode(shared / name) == "delete", name
        assert not (shared / f"{name}-wal").exists() and not (shared / f"{name}-shm").exists(), name

    # turning it on for a cache that was in WAL switches that cache over, and the run still hits its LLM cache
    again = run_with_every_store(tmp_path, local, "paths.shared_fs=true")
    for name in STORES:
        assert read_journal_mode(local / name) == "delete", name
    assert again["this_call"]["llm_calls"] >= 1 and again["this_call"]["new_llm_calls"] == 0


def test_shared_fs_does_not_change_a_runs_fingerprint(tmp_path: Path) -> None:
    assert "paths.shared_fs" in NON_RESULT_KEYS
    cache = tmp_path / "cache"
    cfg = compose_config(["dataset.limit=1", "generator.max_new_tokens=4"], cache_dir=cache, output_root=tmp_path)
    run(cfg, run_dir=tmp_path / "run")
    cfg = compose_config(["dataset.limit=1", "generator.max_new_tokens=4", "paths.shared_fs=true"], cache_dir=cache,
                         output_root=tmp_path)
    resumed = run(cfg, run_dir=tmp_path / "run")  # same directory: resumed (reported), not refused
    assert resumed["this_call"]["questions_run"] == 0


def test_a_cache_held_open_in_wal_mode_is_refused_not_left_in_wal(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "llm_cache.sqlite"
    holder = ResponseCache(path)  # WAL, connection kept open (another process would do the same)
    holder.get_many(["k"])
    assert read_journal_mode(path) == "wal"
    code = textwrap.dedent(f"""
        import sys
        from t2s.integrity import set_network_fs
        from t2s.llm.cache import ResponseCache
        set_network_fs({str(path.parent)!r}, True)
        try:
            ResponseCache({str(path)!r}, timeout=1.0)
        except OSError as e:
            print(type(e).__name__, e)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.startswith("NetworkJournalError") and "paths.shared_fs" in proc.stdout
    assert read_journal_mode(path) == "wal"
    holder.close()


def test_journal_mode_follows_the_nearest_declared_folder(tmp_path: Path) -> None:
    set_network_fs(tmp_path / "a", True)
    set_network_fs(tmp_path / "a" / "local", False)
    assert journal_mode(tmp_path / "a" / "x" / "gold.sqlite") == "delete"
    assert journal_mode(tmp_path / "a" / "local" / "y.sqlite") == "wal"
    assert journal_mode(tmp_path / "b.sqlite") == "wal"
    configure_storage(compose_config([], cache_dir=tmp_path / "a").paths)  # shared_fs=false by default
    assert journal_mode(tmp_path / "a" / "x" / "gold.sqlite") == "wal"
    with pytest.raises(NetworkJournalError, match="wanted delete"):
        raise NetworkJournalError(tmp_path / "f", "delete", "wal")


# ---------------------------------------------------------------- the run-directory lock across machines

HOLDER = """
import sys, time
from pathlib import Path
from t2s.run.store import RunStore
store = RunStore(Path(sys.argv[1]), shared_fs=True)
store.open({"a": 1}, resume=True, provenance={})
print("holding", flush=True)
time.sleep(600)
"""


def can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--uts", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


other_machine = pytest.mark.skipif(not can_unshare(), reason="needs `unshare --pid --uts` (root, util-linux) to "
                                   "play a second machine")


def start_holder(run_dir: Path, *, other_host: bool, lease_s: float) -> subprocess.Popen[str]:
    """A process holding `run_dir` (shared_fs lock), on this machine or on a simulated other one."""
    cmd = [sys.executable, "-c", HOLDER, str(run_dir)]
    if other_host:
        cmd = ["unshare", "--pid", "--uts", "--fork", "--mount-proc", "sh", "-c",
               'hostname t2s-other-node && exec "$@"', "sh", *cmd]
    env = {**os.environ, "T2S_RUN_LOCK_LEASE_S": str(lease_s)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, 9)
    proc.wait()


def open_store(run_dir: Path) -> RunStore:
    store = RunStore(run_dir, shared_fs=True)
    store.open({"a": 1}, resume=True, provenance={})
    return store


@other_machine
def test_lease_refuses_a_run_dir_held_on_another_machine_and_takes_it_once_the_holder_died(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lease_s = 3.0  # the holder refreshes every second: long enough not to be taken over on a loaded machine
    monkeypatch.setenv("T2S_RUN_LOCK_LEASE_S", str(lease_s))
    run_dir = tmp_path / "run"
    holder = start_holder(run_dir, other_host=True, lease_s=lease_s)
    try:
        assert lease_holder(run_dir)["host"].startswith("t2s-other-node")
        start = time.monotonic()
        with pytest.raises(RunDirError, match=r"in use by another t2s process \(pid 1 on t2s-other-node"):
            open_store(run_dir)
        # a live holder refreshes its lease: the contender waited past a whole lease and was still refused
        assert time.monotonic() - start >= lease_s
        assert not discard_unused_run_dir(run_dir) and run_dir.is_dir()  # its lease keeps it from removal too
    finally:
        kill(holder)
    # the holder died without releasing: its lease file stays, and lapses after lease_s
    assert (run_dir / LEASE).exists()
    store = open_store(run_dir)
    assert lease_holder(run_dir)["pid"] == str(os.getpid())
    store.finish("finished")
    assert not (run_dir / LEASE).exists()


@other_machine
def test_lease_held_on_another_machine_is_refused_at_once_by_removal(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = start_holder(run_dir, other_host=True, lease_s=120.0)
    try:
        start = time.monotonic()
        assert not discard_unused_run_dir(run_dir)
        assert time.monotonic() - start < 30 and run_dir.is_dir()
    finally:
        kill(holder)


def test_lease_of_a_dead_holder_on_this_machine_is_taken_at_once(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T2S_RUN_LOCK_LEASE_S", "120")
    run_dir = tmp_path / "run"
    holder = start_holder(run_dir, other_host=False, lease_s=120.0)
    try:
        with pytest.raises(RunDirError, match=rf"in use by another t2s process \(pid {holder.pid} on "):
            open_store(run_dir)  # a live holder on this machine: refused at once, no wait for the lease
        monkeypatch.setenv("T2S_RUN_LOCK_LEASE_S", "2")
        with pytest.raises(RunDirError, match="lease_duration.*T2S_RUN_LOCK_LEASE_S alike"):
            open_store(run_dir)  # every process must agree on the lease duration
        monkeypatch.setenv("T2S_RUN_LOCK_LEASE_S", "120")
    finally:
        kill(holder)
    start = time.monotonic()
    store = open_store(run_dir)  # kill -9 left the lease file; its holder is provably dead
    assert time.monotonic() - start < 30
    store.finish("finished")


def test_one_process_holds_a_shared_run_dir_at_a_time(tmp_path: Path) -> None:
    first = open_store(tmp_path / "run")
    with pytest.raises(RunDirError, match="in use by another t2s process"):
        open_store(tmp_path / "run")
    with pytest.raises(RunDirError, match="in use by another t2s process"):
        RunStore(tmp_path / "run").open({"a": 1}, resume=True, provenance={})  # flock: also without shared_fs
    first.finish("finished")
    state = json.loads((tmp_path / "run" / "run.json").read_text())
    assert state["status"] == "finished"
    open_store(tmp_path / "run").finish("finished")
