#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for t2s's cluster tests (tests/test_cluster.py, `make test-cluster`)
# and for trying `t2s run -m hydra/launcher=slurm ...` without a cluster. Needs root and Debian/Ubuntu's packages.
#
#   sudo scripts/slurm/start.sh     # install slurm-wlm + munge if missing, write the config, start the daemons
#   scripts/slurm/stop.sh           # stop them (the packages and the config stay)
#
# What it sets up: munged (a key is created if there is none), slurmctld and slurmd, talking over 127.0.0.1 only
# (`CommunicationParameters=NoCtldInAddrAny,NoInAddrAny`: no daemon listens on another address), one node (`localhost`) declared
# with this machine's CPUs and memory as `slurmd -C` reads them, and one partition, `t2s` (the default). No
# accounting database: `sacct` is unavailable (submitit then waits on its result files, which is all it needs).
# Jobs are tracked and held to their CPUs and memory with cgroups (proctrack/cgroup, task/cgroup) where root can
# make a cgroup here, else without (proctrack/linuxproc, task/none: an unprivileged container); T2S_SLURM_CGROUP=1 or
# 0 forces the choice.
#
# Idempotent: run again, it finds the cluster up and says so (exit 0); with a changed config (another CPU count or
# memory) it restarts the daemons. It refuses to overwrite a slurm.conf it did not write.
# Environment: T2S_SLURM_CONF (default /etc/slurm/slurm.conf), T2S_SLURM_NO_INSTALL=1 (fail instead of apt-get
# install), T2S_SLURM_CGROUP=auto|1|0.
set -euo pipefail

CONF=${T2S_SLURM_CONF:-/etc/slurm/slurm.conf}
MARK="# written by t2s scripts/slurm/start.sh"
STATE=/var/lib/slurm
LOGS=/var/log/slurm
RUN=/run/slurm
PACKAGES=(slurm-wlm munge)
started=0

say() { echo "[slurm] $*"; }
die() { echo "[slurm] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts system daemons): sudo $0"

missing=()
for p in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "${T2S_SLURM_NO_INSTALL:-0}" = 1 ] && die "packages missing: ${missing[*]} (T2S_SLURM_NO_INSTALL=1)"
    command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get to install them"
    say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/tmp/t2s-slurm-apt.log 2>&1; then
        say "apt-get install failed; updating the package lists and trying again"
        apt-get update -q >>/tmp/t2s-slurm-apt.log 2>&1 || die "apt-get update failed: see /tmp/t2s-slurm-apt.log"
        apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>/tmp/t2s-slurm-apt.log 2>&1 \
            || die "apt-get install ${PACKAGES[*]} failed: see /tmp/t2s-slurm-apt.log"
    fi
fi

# ---------------------------------------------------------------- munge
if [ ! -s /etc/munge/munge.key ]; then
    say "creating the munge key /etc/munge/munge.key"
    mkdir -p /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    started=1
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged does not answer: see /var/log/munge/munged.log"
fi

# ---------------------------------------------------------------- slurm.conf
# CPUs and memory as slurmd measures them (a node declaring more than it has would be drained on registration)
hw=$(slurmd -C | head -1)
field() { echo "$hw" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
cpus=$(field CPUs); sockets=$(field SocketsPerBoard); cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore)
mem=$(field RealMemory)
[ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs and RealMemory from 'slurmd -C': $hw"

# cgroups where this machine lets root make one (jobs are then held to their --mem and CPUs), else none
cgroup_works() {
    local d
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then d=/sys/fs/cgroup/t2s-slurm-probe   # v2
    elif [ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/freezer ]; then d=/sys/fs/cgroup/memory/t2s-slurm-probe
    else return 1; fi
    mkdir "$d" 2>/dev/null && rmdir "$d"
}
case "${T2S_SLURM_CGROUP:-auto}" in
    1) use_cgroup=1 ;;
    0) use_cgroup=0 ;;
    *) if cgroup_works; then use_cgroup=1; else use_cgroup=0; fi ;;
esac
if [ "$use_cgroup" = 1 ]; then
    proctrack=proctrack/cgroup; task=task/cgroup,task/affinity
else
    proctrack=proctrack/linuxproc; task=task/none
fi

wanted=$(cat <<EOF
$MARK: a single-node cluster for t2s (do not edit; rerun the script)
ClusterName=t2s
SlurmctldHost=localhost(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=$proctrack
TaskPlugin=$task
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=t2s Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)

if [ -e "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and was not written by this script: refusing to overwrite it (set T2S_SLURM_CONF to use another file)"
fi
changed=0
if [ ! -e "$CONF" ] || [ "$(cat "$CONF")" != "$wanted" ]; then
    mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$wanted" >"$CONF"
    changed=1
    say "wrote $CONF (CPUs=$cpus RealMemory=${mem}MB, $proctrack)"
fi
export SLURM_CONF=$CONF
if [ "$use_cgroup" = 1 ] && [ ! -e "$(dirname "$CONF")/cgroup.conf" ]; then
    printf '%s\nCgroupPlugin=autodetect\nConstrainCores=yes\nConstrainRAMSpace=yes\n' "$MARK" \
        >"$(dirname "$CONF")/cgroup.conf"
fi

# ---------------------------------------------------------------- daemons
mkdir -p "$STATE/slurmctld" "$STATE/slurmd" "$LOGS" "$RUN"
alive() { [ -s "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

if [ "$changed" = 1 ] && { alive slurmctld || alive slurmd; }; then
    say "configuration changed: restarting the daemons"
    "$(dirname "$0")/stop.sh" --keep-munge
fi
if ! alive slurmctld; then
    say "starting slurmctld"
    started=1
    slurmctld -f "$CONF"
fi
if ! alive slurmd; then
    say "starting slurmd"
    started=1
    slurmd -f "$CONF" -N localhost
fi

# ---------------------------------------------------------------- wait for the node
state=""
deadline=$((SECONDS + 30))
while [ $SECONDS -lt $deadline ]; do
    state=$(timeout 10 sinfo -h -N -n localhost -o %T 2>/dev/null || true)
    case "$state" in
        idle*|mixed*|allocated*|completing*) break ;;
        drain*|down*)
            # a node that went down with a daemon (stop.sh, a reboot) comes back once its slurmd answers again
            timeout 10 scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
done
case "$state" in
    idle*|mixed*|allocated*|completing*) ;;
    *) die "node 'localhost' is '${state:-not reported}' after 30 s: see $LOGS/slurmctld.log and $LOGS/slurmd.log" ;;
esac
[ "$started" = 0 ] && say "already up (nothing started)"
say "up: partition t2s, node localhost ($state, CPUs=$cpus, RealMemory=${mem}MB), conf $CONF"
