#!/bin/sh
# vgpu plugins: lists the plugins with their parameters; finds the build
# tree's plugins beside the uninstalled libvgpu without VGPU_PLUGIN_PATH.
set -u
b=${top_builddir:-.}
out=$(env -u VGPU_PLUGIN_PATH "$b/tools/vgpu" plugins 2>&1) || { echo "$out"; exit 1; }
echo "$out"
for want in 'sched-fair  scheduler plugin' 'sched-fifo  scheduler plugin' \
	'sched-priority  scheduler plugin' 'weights' 'default_weight     double  1' \
	'aging              time    100ms'; do
	echo "$out" | grep -qF -- "$want" || { echo "missing: $want"; exit 1; }
done
# refused plugins are shown with the reason
out=$(VGPU_PLUGIN_PATH="$b/tests/.libs" "$b/tools/vgpu" plugins sched-badabi) || exit 1
echo "$out" | grep -q 'plugin ABI 999' || { echo "$out"; echo "no ABI refusal"; exit 1; }
# logs/errors to stderr, data to stdout
out=$("$b/tools/vgpu" plugins no-such-plugin 2>/dev/null) && exit 1
[ -z "$out" ] || { echo "stdout not empty on error"; exit 1; }
exit 0
