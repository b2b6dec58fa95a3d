#!/usr/bin/env bash
# Stop the single-node cluster scripts/slurm/start.sh started: slurmd, slurmctld, then munged (by their pid files).
# Jobs still running are killed with their slurmd. The packages, the config and the state directory stay, so
# start.sh brings the same cluster back.
set -euo pipefail

RUN=/run/slurm
say() { echo "[slurm] $*"; }
[ "$(id -u)" = 0 ] || { echo "[slurm] error: needs root: sudo $0" >&2; exit 1; }

stop() {  # name pidfile
    local pid
    [ -s "$2" ] || { say "$1 not running"; return 0; }
    pid=$(cat "$2")
    if ! kill -0 "$pid" 2>/dev/null; then
        say "$1 not running (stale pid file)"; rm -f "$2"; return 0
    fi
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$1 ($pid) did not stop in 10 s: killing it"; kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$2"
    say "stopped $1 ($pid)"
}

stop slurmd "$RUN/slurmd.pid"
stop slurmctld "$RUN/slurmctld.pid"
if [ "${1:-}" != "--keep-munge" ]; then
    stop munged /run/munge/munged.pid
fi
