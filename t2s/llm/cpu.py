"""How many CPU threads a local backend should use, so that parallel jobs do not oversubscribe the cores."""

from __future__ import annotations

import os

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

    `$T2S_NUM_THREADS`, else `$OMP_NUM_THREADS` (set by joblib in its workers to cores // n_jobs), else every
    usable core. llama.cpp's own default is half the cores, which on a 2-core machine runs at half speed.
    """
    for var in THREAD_ENV_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return usable_cores()
