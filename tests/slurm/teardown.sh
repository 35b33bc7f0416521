#!/bin/sh
# tests/slurm/teardown.sh STATEDIR - cancel every job of the test cluster and
# stop the slurmd, slurmctld and munged that setup.sh started (by their pid
# files under STATEDIR; nothing else is touched).
d=${1:?usage: teardown.sh STATEDIR}
PATH=$PATH:/usr/sbin
export SLURM_CONF="$d/slurm.conf"
if [ -f "$d/run/slurmctld.pid" ]; then
	scancel --full --quiet --partition=debug 2>/dev/null
	i=0
	while [ $i -lt 50 ] && [ -n "$(squeue -h 2>/dev/null)" ]; do sleep 0.1; i=$((i+1)); done
fi
stop() {
	[ -f "$1" ] || return 0
	pid=$(cat "$1")
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	i=0
	while [ $i -lt 50 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
	kill -KILL "$pid" 2>/dev/null
	rm -f "$1"
}
stop "$d/run/slurmd.pid"
stop "$d/run/slurmctld.pid"
stop "$d/munge/munged.pid"
exit 0
