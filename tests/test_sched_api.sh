#!/bin/sh
# The API tests again with a scheduler plugin loaded: every call, the
# synchronous ones included, then goes through the dispatcher.
set -u
b=${top_builddir:-.}
export VGPU_PLUGINS=sched-fair
export VGPU_TEST_URI='cpu:0?slots=4'
for t in test_basic test_memory test_launch test_streams test_threads; do
	echo "== $t (VGPU_PLUGINS=$VGPU_PLUGINS, $VGPU_TEST_URI)"
	"$b/tests/$t" || { echo "$t failed under $VGPU_PLUGINS"; exit 1; }
done
# and on the cuda backend over the fake driver, when built (the scheduled
# synchronous path then runs on a backend stream of its own)
fake="$b/tests/fake-cuda/.libs/libcuda.so"
[ -f "$fake" ] || exit 0
for t in test_basic test_memory test_streams test_threads; do
	echo "== $t (VGPU_PLUGINS=$VGPU_PLUGINS, cuda:0 on the fake driver)"
	VGPU_TEST_URI='cuda:0?slots=4' VGPU_CUDA_LIBRARY=$fake FAKE_CUDA_RECOVERABLE_FAULTS=1 \
		FAKE_CUDA_DELAY_US=20 "$b/tests/$t" || { echo "$t failed on cuda under $VGPU_PLUGINS"; exit 1; }
done
