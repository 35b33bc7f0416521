#!/bin/sh
# The remote suite (tests/test_remote) over the uring transport on sockets
# of 64 KiB (VGPU_TCP_SNDBUF=32K, which the kernel doubles; vgpud inherits
# the environment), where every copy above 64 KiB and every large reply
# must wait for the peer to read: partial and blocked sends everywhere in
# the protocol. Before 5fce143 sync_copy_ranges here took 90 s (each fused
# reply that found the client's socket full waited for vgpud's frame
# timeout); tests/test_tp_uring.sh is the test that fails on that.
VGPU_TCP_SNDBUF=32K VGPU_TCP_RCVBUF=32K VGPU_TEST_TRANSPORT=uring \
	exec "${top_builddir:-.}/tests/test_remote"
