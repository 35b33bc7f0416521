#!/bin/sh
# The vecadd example runs on the default device and on a URI, and says OK.
set -u
b=${top_builddir:-.}
out=$("$b/examples/vecadd" 2>&1) || { echo "vecadd failed: $out"; exit 1; }
echo "$out"
echo "$out" | grep -q '^vecadd: OK cpu:0' || { echo "unexpected output"; exit 1; }
out=$(VGPU_URI='cpu:1?mem=64M' "$b/examples/vecadd" 2>&1) || { echo "vecadd failed: $out"; exit 1; }
echo "$out" | grep -q '^vecadd: OK cpu:1?mem=64M' || { echo "unexpected: $out"; exit 1; }
# too little memory: a clean error and exit status 1
if out=$(VGPU_URI='cpu:0?mem=1M' "$b/examples/vecadd" 2>&1); then
	echo "vecadd succeeded with 1 MiB"; exit 1
fi
echo "$out" | grep -q 'out of device memory' || { echo "unexpected: $out"; exit 1; }
echo "ok"
