#!/bin/sh
# One vgpud listening on tcp, unix, uring and rdma at once (rdma when the
# module was built): each listener is announced, and vecadd runs over each.
set -u
b=${top_builddir:-.}
tmp=$(mktemp -d /tmp/vgpu-test-transports-XXXXXX) || exit 1
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
schemes="tcp unix uring"
set -- --listen tcp://127.0.0.1:0 --listen "unix://$tmp/v.sock" --listen uring://127.0.0.1:0
if [ -f "$b/transports/rdma/.libs/transport_rdma.so" ]; then
	VGPU_TRANSPORT_PATH="$b/transports/rdma/.libs"
	UCX_TLS=${UCX_TLS:-tcp}
	UCX_WARN_UNUSED_ENV_VARS=n
	UCX_MEM_MALLOC_HOOKS=n        # see test_remote_rdma_tcp.sh
	UCX_MEM_MMAP_HOOK_MODE=none
	export VGPU_TRANSPORT_PATH UCX_TLS UCX_WARN_UNUSED_ENV_VARS UCX_MEM_MALLOC_HOOKS UCX_MEM_MMAP_HOOK_MODE
	schemes="$schemes rdma"
	set -- "$@" --listen rdma://127.0.0.1:0
fi
"$b/tools/vgpud" --allow-native-modules "$@" 2>"$tmp/log" &
pid=$!
n=$(echo $schemes | wc -w)
i=0
while [ $i -lt 200 ] && [ "$(grep -c 'listening on' "$tmp/log")" -lt "$n" ]; do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.05; i=$((i+1))
done
rc=0
for s in $schemes; do
	uri=$(sed -n "s|^vgpud: listening on \($s://.*\)$|\1|p" "$tmp/log")
	if [ -z "$uri" ]; then
		echo "FAIL no '$s' listener:"; cat "$tmp/log"; rc=1; continue
	fi
	if out=$(VGPU_URI="$uri/0" "$b/examples/vecadd" 2>&1) && echo "$out" | grep -q "^vecadd: OK $uri/0"; then
		echo "ok   vecadd over $uri"
	else
		echo "FAIL vecadd over $uri: $out"; rc=1
	fi
done
kill "$pid"; wait "$pid"; st=$?; pid=
[ $st -eq 0 ] || { echo "FAIL vgpud exit status $st after SIGTERM"; cat "$tmp/log"; rc=1; }
exit $rc
