#!/bin/sh
# The remote suite over the rdma transport (UCX) with UCX's tcp transport,
# as on a machine without RDMA hardware.
b=${top_builddir:-.}
VGPU_TRANSPORT_PATH="$b/transports/rdma/.libs${VGPU_TRANSPORT_PATH:+:$VGPU_TRANSPORT_PATH}"
UCX_TLS=tcp
UCX_WARN_UNUSED_ENV_VARS=n
# UCX's malloc/mmap hooks (libucm) crash LeakSanitizer in --enable-sanitizers
# builds; the tests do not need them (UCX then registers memory directly).
UCX_MEM_MALLOC_HOOKS=n
UCX_MEM_MMAP_HOOK_MODE=none
export UCX_MEM_MALLOC_HOOKS UCX_MEM_MMAP_HOOK_MODE
export VGPU_TRANSPORT_PATH UCX_TLS UCX_WARN_UNUSED_ENV_VARS
VGPU_TEST_TRANSPORT=rdma exec "$b/tests/test_remote"
