#!/bin/sh
# Autoscaling with a real Slurm (tests/slurm/setup.sh: one node on loopback).
# A vgpud with room for one session runs the autoscale-slurm plugin. Client 1
# takes the session; client 2 (vecadd, VGPU_URI=pool=FILE?wait=...) waits.
# Its demand makes the plugin sbatch a job; the job starts a second vgpud
# that adds itself to the pool file; client 2 lands there and runs vecadd.
# Once idle past the cooldown, the job's vgpud cancels its job (scancel) and
# its pool line goes away. Needs root, slurm-wlm and munge; everything is
# stopped on exit.
set -u
b=${top_builddir:-.}
src=${top_srcdir:-..}
case $b in /*) ;; *) b=$(cd "$b" && pwd) ;; esac
skip() {
	[ -n "${CI:-}" ] && { echo "FAIL: $* (CI must run this test)"; exit 1; }
	echo "SKIP: $*"; exit 77
}
[ "$(id -u)" = 0 ] || skip "needs root (slurmd runs the jobs)"
PATH=$PATH:/usr/sbin
for p in slurmctld slurmd munged sbatch squeue scancel; do
	command -v $p >/dev/null || skip "$p not found (apt-get install slurm-wlm munge)"
done

tmp=$(mktemp -d /tmp/vgpu-test-slurm-XXXXXX)
chmod 755 "$tmp"
pids=
cleanup() {
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
	sh "$src/tests/slurm/teardown.sh" "$tmp/slurm"
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
fail() {
	echo "FAIL: $*"
	for f in "$tmp"/ctl.log "$tmp"/vgpu-test-*.log "$tmp"/client2.out "$tmp/pool"; do
		[ -f "$f" ] && { echo "--- $f"; cat "$f"; }
	done
	tail -n 20 "$tmp"/slurm/log/*.log 2>/dev/null
	exit 1
}

mkdir -p "$tmp/slurm"
env=$(sh "$src/tests/slurm/setup.sh" "$tmp/slurm") || fail "Slurm did not start"
eval "$env"
export SLURM_CONF

job=vgpu-test-$$
pool="$tmp/pool"
: > "$pool"
spec="autoscale-slurm:pool_file=$pool,script_dir=$tmp,job_name=$job,vgpud=$b/tools/vgpud"
spec="$spec,vgpud_args=--allow-native-modules;--max-sessions;1,up_after=500ms,cooldown=3s,max=1"
"$b/tools/vgpud" --listen tcp://127.0.0.1:0 --max-sessions 1 --allow-native-modules \
	--log-level info --plugin "$spec" 2> "$tmp/ctl.log" &
cpid=$!
pids="$pids $cpid"
i=0
while [ $i -lt 100 ] && ! grep -q "listening on" "$tmp/ctl.log"; do sleep 0.1; i=$((i+1)); done
ctl=$(sed -n 's/^vgpud: listening on //p' "$tmp/ctl.log")
[ -n "$ctl" ] || fail "controller vgpud did not start"
echo "$ctl/0  # the controller" >> "$pool"

# client 1 takes the only session
"$b/tests/vgpu_hold" "pool=$pool" 1 > "$tmp/client1.out" &
hpid=$!
pids="$pids $hpid"
i=0
while [ $i -lt 100 ] && ! grep -q held "$tmp/client1.out"; do sleep 0.1; i=$((i+1)); done
grep -q "held $ctl/0" "$tmp/client1.out" || fail "client 1 not on the controller: $(cat "$tmp/client1.out")"

# client 2 waits, the plugin submits a job, client 2 lands on the job's vgpud
t0=$(date +%s)
VGPU_URI="pool=$pool?wait=120s" "$b/examples/vecadd" > "$tmp/client2.out" 2>&1 ||
	fail "vecadd through the pool failed"
cat "$tmp/client2.out"
grep -q "^vecadd: OK tcp://127.0.0.1:" "$tmp/client2.out" || fail "vecadd output"
grep -q "vecadd: OK $ctl/" "$tmp/client2.out" && fail "client 2 ran on the full controller"
grep -q "submitted Slurm job" "$tmp/ctl.log" || fail "no job submitted"
id=$(sed -n 's/.*submitted Slurm job \([0-9]*\).*/\1/p' "$tmp/ctl.log" | head -n 1)
echo "job $id served client 2 after $(( $(date +%s) - t0 )) s"
grep -q "# slurm job $id" "$pool" || fail "the job's vgpud is not in the pool file"

# idle past the cooldown: the job cancels itself and leaves the pool
i=0
while [ $i -lt 300 ] && squeue -h -j "$id" 2>/dev/null | grep -q .; do sleep 0.1; i=$((i+1)); done
squeue -h -j "$id" 2>/dev/null | grep -q . && fail "job $id still running after 30 s"
grep -q "cancelling job $id" "$tmp/$job-$id.log" || fail "the job was not cancelled by its vgpud"
scontrol show job "$id" 2>/dev/null | grep -q "JobState=CANCELLED" || fail "job $id not CANCELLED"
i=0
while [ $i -lt 50 ] && grep -q "# slurm job $id" "$pool"; do sleep 0.1; i=$((i+1)); done
grep -q "# slurm job $id" "$pool" && fail "the ended job is still in the pool file"
# the controller sees its job end and submits nothing more (nobody waits)
i=0
while [ $i -lt 60 ] && ! grep -q "Slurm job $id has ended" "$tmp/ctl.log"; do sleep 0.1; i=$((i+1)); done
grep -q "Slurm job $id has ended" "$tmp/ctl.log" || fail "controller did not see the job end"
[ "$(grep -c 'submitted Slurm job' "$tmp/ctl.log")" = 1 ] || fail "more than one job submitted"
# clean stop of the controller (plugin finished, no sanitizer report)
kill -TERM $hpid; wait $hpid
kill -TERM $cpid; wait $cpid; rc=$?
[ $rc -eq 0 ] || fail "controller exit status $rc after SIGTERM"
grep -q "Sanitizer\|runtime error" "$tmp/ctl.log" "$tmp/$job-$id.log" && fail "sanitizer report"
echo ok
