#!/bin/sh
# tests/slurm/setup.sh STATEDIR - a one-node Slurm cluster on loopback for the
# autoscale tests: writes STATEDIR/slurm.conf (node "localhost", 2 CPUs,
# select/cons_tres, proctrack/linuxproc, task/none, no accounting), starts
# munged, slurmctld and slurmd with their state, logs and sockets under
# STATEDIR, and waits until the node is idle. Needs root (slurmd runs jobs
# as their users) and the Debian packages slurm-wlm and munge; no network
# beyond 127.0.0.1. Prints "export SLURM_CONF=..." for the caller to eval.
# tests/slurm/teardown.sh STATEDIR stops everything it started.
set -eu
d=${1:?usage: setup.sh STATEDIR}
mkdir -p "$d/munge" "$d/ctld" "$d/spool" "$d/log" "$d/run"
chmod 700 "$d/munge"
for p in munged slurmctld slurmd sinfo; do
	command -v $p >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || { echo "setup.sh: $p not found (apt-get install slurm-wlm munge)" >&2; exit 1; }
done
PATH=$PATH:/usr/sbin

# munge: its own key, socket and pid file (never the system's)
dd if=/dev/urandom of="$d/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$d/munge/munge.key"
munged --force --key-file="$d/munge/munge.key" --socket="$d/munge/munge.sock" \
	--pid-file="$d/munge/munged.pid" --log-file="$d/munge/munged.log" \
	--seed-file="$d/munge/munged.seed" || { cat "$d/munge/munged.log" >&2; exit 1; }

# two free loopback ports for slurmctld and slurmd
ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
set -- $ports
mem=$(awk '/MemTotal/ {print int($2/1024/2)}' /proc/meminfo)
[ "$mem" -gt 0 ] || mem=1000

cat > "$d/slurm.conf" <<EOC
ClusterName=vgputest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$1
SlurmdPort=$2
CommunicationParameters=NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$d/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$d/ctld
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/run/slurmctld.pid
SlurmdPidFile=$d/run/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge=30
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOC
export SLURM_CONF="$d/slurm.conf"

slurmctld -f "$SLURM_CONF" -i -c
slurmd -f "$SLURM_CONF" -N localhost
i=0
while [ $i -lt 300 ]; do
	st=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
	[ "$st" = idle ] && break
	sleep 0.1
	i=$((i+1))
done
if [ "$st" != idle ]; then
	echo "setup.sh: the node did not become idle (state '$st')" >&2
	tail -20 "$d/log/slurmctld.log" "$d/log/slurmd.log" >&2 2>/dev/null
	exit 1
fi
echo "export SLURM_CONF=$SLURM_CONF"
