"""How many CPU threads a local backend should use, so that parallel jobs do not oversubscribe the cores."""

from __future__ import annotations

import os
import statistics
import time

#: environment variables that fix the thread count, first match wins. joblib's loky workers (the Hydra joblib
#: launcher) get `OMP_NUM_THREADS = cores // n_jobs` from joblib itself, so a sweep with n_jobs=2 on 2 cores gives
#: each job 1 thread with no configuration.
THREAD_ENV_VARS = ("T2S_NUM_THREADS", "OMP_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it, else `os.cpu_count()`)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Threads for a local model when the config leaves them unset (`n_threads: null`).

    `$T2S_NUM_THREADS`, else `$OMP_NUM_THREADS` (set by joblib in its workers to cores // n_jobs), else the usable
    cores that other processes leave free right now (`busy_elsewhere()`), at least 1. Oversubscription is far worse than idling a core: on the shared 2-core machine at load 18,
    the embedded model answered 3 Spider questions in 170 s with 2 llama.cpp threads and in 33 s with 1 (threads
    spin at each step's barrier while their peers wait for a core); on an idle machine 2 threads are ~1.7x faster
    than 1. llama.cpp's own default is half the cores.
    """
    for var in THREAD_ENV_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    cores = usable_cores()
    return max(1, min(cores, cores - busy_elsewhere()))


def busy_elsewhere(samples: int = 5, interval: float = 0.01) -> int:
    """How many threads of other processes are runnable now: on Linux the median over `samples` readings of the
    runnable count in /proc/loadavg, minus this reading thread; elsewhere the 1-minute load average minus 1.

    Not the load average on Linux: it lags by about a minute, so a run started just after another job ended got 1
    thread on an idle 2-core machine (`make run` took 111 s instead of 78 s)."""
    try:
        counts = []
        for i in range(samples):
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
            if i + 1 < samples:
                time.sleep(interval)
        return max(0, round(statistics.median(counts)) - 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return max(0, round(os.getloadavg()[0] - 1.0))
    except OSError:  # no load average on this platform
        return 0
