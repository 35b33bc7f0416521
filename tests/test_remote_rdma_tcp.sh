#!/bin/sh
# The remote suite over the rdma transport (UCX) with UCX's tcp transport,
# as on a machine without RDMA hardware.
b=${top_builddir:-.}
VGPU_TRANSPORT_PATH="$b/transports/rdma/.libs${VGPU_TRANSPORT_PATH:+:$VGPU_TRANSPORT_PATH}"
UCX_TLS=tcp
UCX_WARN_UNUSED_ENV_VARS=n
export VGPU_TRANSPORT_PATH UCX_TLS UCX_WARN_UNUSED_ENV_VARS
VGPU_TEST_TRANSPORT=rdma exec "$b/tests/test_remote"
