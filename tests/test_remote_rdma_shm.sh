#!/bin/sh
# The remote suite over the rdma transport (UCX) with shared memory for the
# data path (UCX_TLS=posix,sysv,cma,self) and tcp sockets for connection
# establishment (the sockaddr listener needs them: UCX_SOCKADDR_TLS_PRIORITY).
b=${top_builddir:-.}
VGPU_TRANSPORT_PATH="$b/transports/rdma/.libs${VGPU_TRANSPORT_PATH:+:$VGPU_TRANSPORT_PATH}"
UCX_TLS=${VGPU_TEST_UCX_SHM_TLS:-posix,sysv,cma,self,tcp}
UCX_WARN_UNUSED_ENV_VARS=n
export VGPU_TRANSPORT_PATH UCX_TLS UCX_WARN_UNUSED_ENV_VARS
VGPU_TEST_TRANSPORT=rdma exec "$b/tests/test_remote"
