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
