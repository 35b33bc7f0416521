#!/bin/sh
# The remote suite over the rdma transport (UCX) with shared memory for the
# data path. On UCX 1.13 a client-server (sockaddr) endpoint needs a tcp
# interface for connection establishment, and shared-memory transports are
# only selected with UCX_MM_ERROR_HANDLING=y (the endpoints ask for peer
# error handling), hence UCX_TLS=sm,self,tcp. A first check makes sure the
# active-message lane really is shared memory (sysv or posix).
b=${top_builddir:-.}
VGPU_TRANSPORT_PATH="$b/transports/rdma/.libs${VGPU_TRANSPORT_PATH:+:$VGPU_TRANSPORT_PATH}"
UCX_TLS=${VGPU_TEST_UCX_SHM_TLS:-sm,self,tcp}
UCX_MM_ERROR_HANDLING=y
UCX_WARN_UNUSED_ENV_VARS=n
# UCX's malloc/mmap hooks (libucm) crash LeakSanitizer in --enable-sanitizers
# builds; the tests do not need them (UCX then registers memory directly).
UCX_MEM_MALLOC_HOOKS=n
UCX_MEM_MMAP_HOOK_MODE=none
export UCX_MEM_MALLOC_HOOKS UCX_MEM_MMAP_HOOK_MODE
export VGPU_TRANSPORT_PATH UCX_TLS UCX_MM_ERROR_HANDLING UCX_WARN_UNUSED_ENV_VARS

tmp=$(mktemp -d /tmp/vgpu-rdma-shm-XXXXXX) || exit 1
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
"$b/tools/vgpud" --allow-native-modules --listen rdma://127.0.0.1:0 2>"$tmp/log" &
pid=$!
i=0
while [ $i -lt 100 ] && ! grep -q "listening on rdma://" "$tmp/log"; do sleep 0.1; i=$((i+1)); done
uri=$(sed -n 's/^vgpud: listening on //p' "$tmp/log")
[ -n "$uri" ] || { echo "vgpud did not start:"; cat "$tmp/log"; exit 1; }
VGPU_URI="$uri/0" UCX_LOG_LEVEL=info "$b/examples/vecadd" >"$tmp/out" 2>&1 ||
	{ echo "vecadd over $uri failed:"; cat "$tmp/out"; exit 1; }
if ! grep -q "am(\(sysv\|posix\)/memory" "$tmp/out"; then
	echo "UCX did not pick shared memory for active messages:"; grep "ep_cfg" "$tmp/out"; exit 1
fi
echo "shared memory lane: $(grep -o 'am([^)]*)' "$tmp/out" | tail -n 1)"
kill "$pid"; wait "$pid" 2>/dev/null; pid=

VGPU_TEST_TRANSPORT=rdma "$b/tests/test_remote"
