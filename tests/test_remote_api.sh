#!/bin/sh
# The API test programs and the vecadd example, run against a real vgpud
# over tcp, a unix socket, uring and rdma (UCX over its tcp transport, when
# the module was built) (VGPU_TEST_URI / VGPU_URI): a remote handle behaves
# as a local one, test_threads using one handle from 8 threads at once
# included. The server is killed whatever happens.
set -u
b=${top_builddir:-.}
tmp=$(mktemp -d /tmp/vgpu-test-remote-api-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

schemes="tcp unix uring"
set -- --listen tcp://127.0.0.1:0 --listen "unix://$tmp/v.sock" --listen uring://127.0.0.1:0
if [ -e "$b/transports/rdma/.libs/transport_rdma.so" ]; then
	# as tests/test_remote_rdma_tcp.sh
	VGPU_TRANSPORT_PATH="$b/transports/rdma/.libs${VGPU_TRANSPORT_PATH:+:$VGPU_TRANSPORT_PATH}"
	UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n UCX_MEM_MALLOC_HOOKS=n UCX_MEM_MMAP_HOOK_MODE=none
	export VGPU_TRANSPORT_PATH UCX_TLS UCX_WARN_UNUSED_ENV_VARS UCX_MEM_MALLOC_HOOKS \
		UCX_MEM_MMAP_HOOK_MODE
	schemes="$schemes rdma"
	set -- "$@" --listen rdma://127.0.0.1:0
fi
"$b/tools/vgpud" "$@" --allow-native-modules 2> "$tmp/log" &
pid=$!
uris=
for s in $schemes; do
	i=0
	while [ $i -lt 200 ] && ! grep -q "listening on $s:" "$tmp/log"; do sleep 0.05; i=$((i+1)); done
	u=$(sed -n "s/^vgpud: listening on \($s:.*\)\$/\1/p" "$tmp/log")
	[ -n "$u" ] || { echo "vgpud did not start on $s:"; cat "$tmp/log"; exit 1; }
	uris="$uris $u/0"
done
rc=0
for uri in $uris; do
	for t in test_basic test_memory test_launch test_streams test_threads; do
		if out=$(VGPU_TEST_URI=$uri "$b/tests/$t" 2>&1); then
			echo "ok   $t on $uri"
		else
			echo "FAIL $t on $uri"; echo "$out" | grep -v '^ok' | sed 's/^/     /'; rc=1
		fi
	done
	if out=$(VGPU_URI=$uri "$b/examples/vecadd" 2>&1) && echo "$out" | grep -q "^vecadd: OK $uri"; then
		echo "ok   vecadd on $uri"
	else
		echo "FAIL vecadd on $uri: $out"; rc=1
	fi
done
kill -TERM $pid; wait $pid; st=$?; pid=
[ $st -eq 0 ] || { echo "FAIL vgpud exit status $st"; cat "$tmp/log"; rc=1; }
if grep -q "Sanitizer\|runtime error:" "$tmp/log"; then
	echo "FAIL vgpud sanitizer report:"; cat "$tmp/log"; rc=1
fi
exit $rc
