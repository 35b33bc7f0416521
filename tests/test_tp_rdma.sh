#!/bin/sh
# tests/test_tp_rdma (the rdma transport through its ops, no protocol) with
# UCX over tcp, then over shared memory (see test_remote_rdma_shm.sh for
# why shared memory needs these settings).
b=${top_builddir:-.}
VGPU_TRANSPORT_PATH="$b/transports/rdma/.libs${VGPU_TRANSPORT_PATH:+:$VGPU_TRANSPORT_PATH}"
UCX_WARN_UNUSED_ENV_VARS=n
UCX_MEM_MALLOC_HOOKS=n
UCX_MEM_MMAP_HOOK_MODE=none
export VGPU_TRANSPORT_PATH UCX_WARN_UNUSED_ENV_VARS UCX_MEM_MALLOC_HOOKS UCX_MEM_MMAP_HOOK_MODE

echo "# UCX_TLS=tcp"
UCX_TLS=tcp "$b/tests/test_tp_rdma" || exit $?
echo "# UCX_TLS=sm,self,tcp UCX_MM_ERROR_HANDLING=y"
UCX_TLS=sm,self,tcp UCX_MM_ERROR_HANDLING=y "$b/tests/test_tp_rdma"
