"""A run directory on disk: append-only results that survive `kill -9`, and the resume check."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from t2s.files import atomic_write

PREDICTIONS = "predictions.jsonl"
TRACES = "traces.jsonl"
METRICS = "metrics.json"
STATE = "run.json"
CONFIG = "config.yaml"
REPORT = "report.md"
#: the artifacts a run used, with their build cost (offline cost in metrics.json)
ARTIFACTS = "artifacts.json"
#: failed attempts: questions on which a stage raised (pipeline errors), appended per batch; never answers
ERRORS = "errors.jsonl"

log = logging.getLogger("t2s")

#: config keys that do not change what a question's pipeline produces; a resumed run may differ in these
NON_RESULT_KEYS = (
    "run.progress", "run.resume", "run.batch_size", "run.llm_cache", "run.allow_errors", "db.workers", "eval", "logger", "paths.output_root",
    "notes", "prices", "dataset.limit", "dataset.sample", "dataset.on_missing_db", "serve", "paths.shared_fs",
)


def _drop(d: dict[str, Any], dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in d:
        return
    if rest and isinstance(d[head], dict):
        _drop(d[head], rest)
    elif not rest:
        d.pop(head)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or (not d and prefix):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that decides results (see NON_RESULT_KEYS)."""
    c = json.loads(json.dumps(config, default=str))
    for key in NON_RESULT_KEYS:
        _drop(c, key)
    return c


#: `_target_` prefixes that moved without changing behaviour, new -> the name run directories made before the move
#: recorded: a run's fingerprint reads targets by the old name (the longest matching prefix wins), so such a run still
#: resumes and compares. The wheel ships `plugins/` as `t2s_plugins`; methods with several files became packages
#: (`plugins/<stage>/<method>/`) whose stage class lives in a module of the package.
MOVED_TARGETS = {
    "t2s_plugins.": "plugins.",
    "t2s_plugins.corrector.share.corrector.ShareCorrector": "plugins.corrector.share.ShareCorrector",
    "t2s_plugins.verifier.pv.verifier.PVVerifier": "plugins.verifier.pv.PVVerifier",
    "t2s_plugins.prober.pv.prober.PVProber": "plugins.prober.pv.PVProber",
    "t2s_plugins.selector.adaptive_tournament.selector.AdaptiveTournamentSelector":
        "plugins.selector.adaptive_tournament.AdaptiveTournamentSelector",
    "t2s_plugins.generator.mcts.generator.MCTSGenerator": "plugins.generator.mcts.MCTSGenerator",
    "t2s_plugins.fixer.chase.fixer.ChaseFixer": "plugins.fixer.chase.ChaseFixer",
    "t2s_plugins.generator.mcts.rstar.RStarSettings": "t2s.train.rstar_config.RStarSettings",
}


def canonical_targets(config: Any) -> Any:
    """`config` with every `_target_` written by its pre-move name (`MOVED_TARGETS`)."""
    if isinstance(config, dict):
        out = {}
        for k, v in config.items():
            if k == "_target_" and isinstance(v, str):
                moved = [new for new in MOVED_TARGETS if v.startswith(new)]
                if moved:
                    new = max(moved, key=len)
                    v = MOVED_TARGETS[new] + v[len(new):]
            out[k] = canonical_targets(v)
        return out
    if isinstance(config, list):
        return [canonical_targets(v) for v in config]
    return config


def without_free_decoding(config: Any) -> Any:
    """`config` without the `decoding` nodes that say free decoding (the root option and the stages' copies): runs made
    before the `decoding` group existed decoded freely and recorded no such key, so they still resume and compare."""
    if isinstance(config, dict):
        return {k: without_free_decoding(v) for k, v in config.items()
                if not (k == "decoding" and (v in (None, "free") or (isinstance(v, dict) and v.get("mode") == "free")))}
    if isinstance(config, list):
        return [without_free_decoding(v) for v in config]
    return config


def fingerprint(config: dict[str, Any]) -> str:
    """A short hash of a result config, with moved `_target_`s read by their old names (`canonical_targets`) and free
    decoding left out (`without_free_decoding`)."""
    canonical = without_free_decoding(canonical_targets(json.loads(json.dumps(config, default=str))))
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_diff(old: dict[str, Any], new: dict[str, Any], limit: int = 8) -> list[str]:
    """Human-readable differences between two configs: `key: old -> new`."""
    a, b = (_flatten(without_free_decoding(canonical_targets(c))) for c in (old, new))
    diffs = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
             for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    return diffs[:limit] + ([f"... and {len(diffs) - limit} more"] if len(diffs) > limit else [])


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked, or a run in it cannot be recorded as finished."""


#: the run directory's lock files: `flock`ed (always), and the lease of `paths.shared_fs=true`
LOCK = ".lock"
LEASE = ".lock.lease"
#: seconds a lease outlives its holder's last refresh before a process on another machine may take it over (the
#: holder refreshes it every third of that). Above NFS's longest attribute cache (`acregmax`, 60 s by default), so a
#: live holder's refresh is always seen in time; every process using a directory must agree on it.
#: `T2S_RUN_LOCK_LEASE_S` overrides it.
LEASE_SECONDS = 120.0


def lease_seconds() -> float:
    """The lease duration in force (`T2S_RUN_LOCK_LEASE_S`, else `LEASE_SECONDS`)."""
    return float(os.environ.get("T2S_RUN_LOCK_LEASE_S", LEASE_SECONDS))


def _this_host() -> str:
    """This process's host as filelock writes it in a lease (the host name, plus a PID-namespace mark in a
    container)."""
    try:
        from filelock._identity import host_name
    except ImportError:  # a filelock that names hosts otherwise: the plain host name
        import socket

        return socket.gethostname()
    return host_name()


def lease_holder(run_dir: Path) -> dict[str, str]:
    """Who holds the lease of `run_dir` as its lease file records it (`host`, `pid`; empty when there is none)."""
    try:
        text = (Path(run_dir) / LEASE).read_text(errors="replace")
    except OSError:
        return {}
    return {k: v for k, _, v in (line.partition("=") for line in text.splitlines()) if k in ("host", "pid")}


class RunDirLock:
    """The exclusive hold of one process on a run directory.

    Always an `flock` on `<dir>/.lock`, which the kernel releases when the process dies, even by `kill -9`. It
    excludes other processes on this machine; across machines only where the filesystem passes `flock` on (NFS
    mounts without `local_lock=flock`/`all`, GPFS, Lustre mounted with `-o flock`; not Lustre's `localflock` or
    BeeGFS's default). With `shared` (`paths.shared_fs=true`) also a lease, `<dir>/.lock.lease` (filelock's
    `SoftFileLease`): created exclusively, it records the holder's host and PID, and a heartbeat thread refreshes
    it every `lease_seconds() / 3`. A lease whose holder on this machine is dead is taken at once; one held on
    another machine is taken once it has gone unrefreshed for `lease_seconds()` (its holder died, or lost the
    filesystem), so a contender waits that long before refusing. An `flock` the filesystem refuses outright
    (ENOLCK, ENOSYS) is then left out; the lease alone holds.
    """

    def __init__(self, run_dir: Path, *, shared: bool) -> None:
        self.dir = Path(run_dir)
        self.shared = shared
        self._file: Any = None
        self._lease: Any = None

    def _in_use(self, why: str) -> RunDirError:
        return RunDirError(f"run directory {self.dir} is in use by another t2s process{why}; wait for it to finish "
                           f"or use another directory (hydra.run.dir=...)")

    def acquire(self, *, wait: bool = True) -> None:
        """Hold the directory, or raise `RunDirError` naming the holder. `wait`: with a lease held on another
        machine, wait up to `lease_seconds()` for it to lapse (False: refuse at once)."""
        if self.shared:  # the lease first: its refusal names the holder's host and PID
            self._take_lease(wait=wait)
        try:
            self._flock()
        except BaseException:
            self.release()
            raise

    def _flock(self) -> None:
        # a raw flock, not filelock's FileLock: on a filesystem without flock FileLock falls back to a SoftFileLock
        # that `kill -9` leaves behind, and it treats ENOLCK/EOPNOTSUPP/EINVAL as failures; here they are an error
        # without `shared` and leave the lease alone holding with it (the semantics tests/test_shared_fs.py checks)
        import errno

        self._file = open(self.dir / LOCK, "w")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise self._in_use("") from None
        except OSError as e:
            if not self.shared or e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                self._file.close()
                self._file = None
                raise
            log.debug("flock on %s refused by the filesystem (%s): the lease alone holds the directory", self.dir, e)

    def _take_lease(self, *, wait: bool) -> None:
        try:
            from filelock import SoftFileLease, Timeout
        except ImportError:
            import filelock

            raise RunDirError(f"paths.shared_fs=true locks run directories with filelock's SoftFileLease, which needs "
                              f"filelock>=3.30 (installed: {filelock.__version__}): pip install 'filelock>=3.30'") from None
        from filelock import LeaseSettingsMismatch

        def acquired(timeout: float) -> bool:
            try:
                lease.acquire(timeout=timeout)
            except Timeout:
                return False
            return True

        seconds = lease_seconds()
        lease = SoftFileLease(self.dir / LEASE, lease_duration=seconds, thread_local=False)
        try:
            if not acquired(0):
                holder = lease_holder(self.dir)
                pid, host = holder.get("pid", "?"), holder.get("host", "?")
                if not wait or host == _this_host():
                    # alive (a dead holder on this machine is taken at once), or asked not to wait
                    raise self._in_use(f" (pid {pid} on {host})")
                log.warning("run directory %s is leased by pid %s on %s: waiting up to %.0f s for the lease to lapse "
                            "(it does only if that process died)", self.dir, pid, host, seconds)
                if not acquired(seconds + min(seconds, 5.0)):  # filelock must see it unrefreshed for `seconds`
                    raise self._in_use(f" (pid {pid} on {host}, lease refreshed within the last {seconds:.0f} s)")
        except LeaseSettingsMismatch as e:
            raise RunDirError(f"{e} (set T2S_RUN_LOCK_LEASE_S alike for every process using {self.dir})") from None
        self._lease = lease

    def release(self) -> None:
        """Let go of the directory (idempotent)."""
        if self._lease is not None:
            lease, self._lease = self._lease, None
            try:
                lease.release()
            except (OSError, RuntimeError) as e:  # the lease file was removed with the directory
                log.debug("releasing the lease of %s: %s", self.dir, e)
        if self._file is not None:
            self._file.close()
            self._file = None


def hold_if_unused(run_dir: Path) -> RunDirLock | None:
    """Hold `run_dir` at once if no process does (the `flock`, and its lease when it has a lease file), else None.
    For removing a directory: release the lock after removing it."""
    lock = RunDirLock(run_dir, shared=(Path(run_dir) / LEASE).exists())
    try:
        lock.acquire(wait=False)
    except RunDirError:
        return None
    return lock


class PipelineErrorsError(RunDirError):
    """A run ended with questions that have no answer because a stage raised on them (pipeline errors: a damaged
    cache, an artifact, a backend). The run is recorded as failed and the next invocation retries those questions;
    `run.allow_errors=true` accepts such a run. `count` is how many questions."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


def read_jsonl(path: Path, *, repair: bool = False) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file. A torn last line (from a killed process) is skipped, and cut off with `repair`."""
    if not path.exists():
        return
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    if repair and good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    for line in data[:good].splitlines():
        if line.strip():
            yield json.loads(line)


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Append records and fsync, so a finished batch is on disk before the next starts."""
    if not records:
        return
    payload = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str))


class RunStore:
    """The files of one run directory.

    `predictions.jsonl` is the commit log: a question is finished once its record is there. Traces are written
    before predictions, so a trace without a prediction (a kill in between) is dropped on resume. A question on which
    a stage raised has no answer: its attempt (the error, its trace events) goes to `errors.jsonl` instead, and it
    is not finished, so the next invocation runs it again; the latest attempt per question is what `errors()` returns.
    """

    def __init__(self, run_dir: Path, *, shared_fs: bool = False) -> None:
        self.dir = Path(run_dir)
        self.shared_fs = shared_fs
        self._lock_held: RunDirLock | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.predictions_path = self.dir / PREDICTIONS
        self.traces_path = self.dir / TRACES
        self.state_path = self.dir / STATE
        self.errors_path = self.dir / ERRORS

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def _lock(self) -> None:
        """Hold the directory exclusively while this process uses it (`RunDirLock`: released at exit, also on kill -9;
        with `shared_fs`, a lease that holds across machines)."""
        lock = RunDirLock(self.dir, shared=self.shared_fs)
        lock.acquire()
        self._lock_held = lock

    def open(self, config: dict[str, Any], *, resume: bool, provenance: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Lock the directory, check it against `config` and return the finished prediction records by qid.

        A directory holding results of a different result-relevant config is refused (with the differences),
        unless `resume` is False, in which case its files are moved to `previous-<time>/` (nothing is deleted).
        Each call is recorded as a segment in `run.json` with its provenance (package versions, git commit); a
        resume under another commit or with a dirty tree is logged as a warning.
        """
        self._lock()
        try:
            return self._open(config, resume=resume, provenance=provenance)
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock_held is not None:
            self._lock_held.release()
            self._lock_held = None

    def _open(self, config: dict[str, Any], *, resume: bool, provenance: dict[str, Any]) -> dict[str, dict[str, Any]]:
        rc = result_config(config)
        old = self.state()
        has_results = any(p.exists() and p.stat().st_size > 0 for p in (self.predictions_path, self.errors_path))
        # compare under today's rules: the stored config is re-filtered, so a change of NON_RESULT_KEYS
        # between t2s versions does not orphan an old run directory
        old_rc = result_config(old.get("result_config", {}))
        if has_results and (not resume or fingerprint(old_rc) != fingerprint(rc)):
            if resume:
                diff = config_diff(old_rc, rc)
                raise RunDirError(
                    f"run directory {self.dir} holds results of a different configuration ("
                    + "; ".join(diff) + "). Use another directory (hydra.run.dir=...) or run.resume=false to move "
                    "the old results aside and start over."
                )
            aside = self.dir / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.mkdir()
            for name in (PREDICTIONS, TRACES, ERRORS, METRICS, STATE, REPORT, CONFIG):
                if (self.dir / name).exists():
                    os.replace(self.dir / name, aside / name)
            old = {}
        finished = {r["qid"]: r for r in read_jsonl(self.predictions_path, repair=True)}
        self._move_error_records(finished)
        list(read_jsonl(self.errors_path, repair=True))  # cut a torn last line
        traces = [t for t in read_jsonl(self.traces_path, repair=True) if t["qid"] in finished]
        if self.traces_path.exists():
            tmp = self.traces_path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in traces))
            os.replace(tmp, self.traces_path)
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        segments = list(old.get("segments", []))
        if segments and finished:
            prev = segments[-1]
            if (prev.get("git_commit"), prev.get("git_dirty")) != (provenance.get("git_commit"), provenance.get("git_dirty")):
                log.warning("resuming %s under code at commit %s (dirty: %s); its first %d question(s) ran at %s "
                            "(dirty: %s): results may mix code versions", self.dir, provenance.get("git_commit"),
                            provenance.get("git_dirty"), len(finished), prev.get("git_commit"), prev.get("git_dirty"))
        segments.append({**provenance, "started": now, "resumed_from": len(finished)})
        state = {k: v for k, v in old.items() if k not in ("error", "pipeline_errors")}
        state.update({**provenance, "segments": segments, "fingerprint": fingerprint(rc), "result_config": rc,
                      "status": "running", "resumed_from": len(finished), "updated": now})
        state.setdefault("started", now)
        write_json(self.state_path, state)
        return finished

    def _move_error_records(self, finished: dict[str, dict[str, Any]]) -> None:
        """Older t2s versions wrote a question a stage raised on to `predictions.jsonl` as if answered: move those
        records to `errors.jsonl` (out of `finished`), so they are run again."""
        failed = [r for r in finished.values() if r.get("pipeline_error")]
        if not failed:
            return
        append_jsonl(self.errors_path, [{**r, "status": "pipeline_error", "correct": None} for r in failed])
        for r in failed:
            del finished[r["qid"]]
        self.rewrite_predictions(list(finished.values()))
        log.info("%d question(s) recorded with a pipeline error as if answered (by an older t2s) are run again: %s",
                 len(failed), ", ".join(r["qid"] for r in failed[:10]))

    def append(self, records: list[dict[str, Any]], traces: list[dict[str, Any]]) -> None:
        """Commit finished questions: their traces, then their prediction records."""
        append_jsonl(self.traces_path, traces)
        append_jsonl(self.predictions_path, records)

    def append_errors(self, attempts: list[dict[str, Any]]) -> None:
        """Record failed attempts (questions without an answer) in `errors.jsonl`."""
        append_jsonl(self.errors_path, attempts)

    def errors(self) -> dict[str, dict[str, Any]]:
        """The latest failed attempt of every question that has one (finished questions included: filter them)."""
        return {r["qid"]: r for r in read_jsonl(self.errors_path)}

    def records(self) -> list[dict[str, Any]]:
        """Every stored prediction record (the latest per question), in file order."""
        latest: dict[str, dict[str, Any]] = {}
        for r in read_jsonl(self.predictions_path):
            latest[r["qid"]] = r
        return list(latest.values())

    def traces(self) -> dict[str, dict[str, Any]]:
        return {t["qid"]: t for t in read_jsonl(self.traces_path)}

    def rewrite_predictions(self, records: list[dict[str, Any]]) -> None:
        tmp = self.predictions_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
        os.replace(tmp, self.predictions_path)

    def finish(self, status: str, **extra: Any) -> None:
        """Record the run's status (and e.g. the error) and release the directory lock."""
        state = {**self.state(), "status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
        write_json(self.state_path, state)
        self._unlock()
