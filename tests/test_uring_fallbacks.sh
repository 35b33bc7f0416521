#!/bin/sh
# The uring transport's other paths, forced: the multishot receive into a
# buffer ring instead of plain receives, no zero-copy send, zero-copy for
# every segment of 4 KiB or more, and ordinary receive rings on the accepting
# side (no SINGLE_ISSUER|DEFER_TASKRUN). tests/test_proto's echo test (3 MiB
# through mixed iovecs, both directions) and send_recv timeout test run
# under each.
b=${top_builddir:-.}
rc=0
for env in VGPU_URING_MULTISHOT=1 VGPU_URING_ZC_MIN=0 VGPU_URING_ZC_MIN=4K VGPU_URING_DEFER=0 \
	"VGPU_URING_MULTISHOT=1 VGPU_URING_ZC_MIN=4K"; do
	if out=$(env $env "$b/tests/test_proto" 2>&1); then
		echo "ok   $env"
	else
		echo "FAIL $env"; echo "$out" | sed 's/^/     /'; rc=1
	fi
done
exit $rc
