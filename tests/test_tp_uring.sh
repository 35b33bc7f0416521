#!/bin/sh
# tests/test_tp_uring (the uring transport through its ops, on sockets with
# small buffers) with owned receive rings (the default), with ordinary ones,
# with multishot receives and with zero-copy sends of 4 KiB and more.
b=${top_builddir:-.}
rc=0
for env in VGPU_URING_DEFER= VGPU_URING_DEFER=0 VGPU_URING_MULTISHOT=1 VGPU_URING_ZC_MIN=4K; do
	echo "# $env"
	env $env "$b/tests/test_tp_uring" || rc=1
done
exit $rc
