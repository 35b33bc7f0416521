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
# plugins export their entry symbol only; vgpu/plugin.h stands alone (C99
# pedantic, C++)
s=${top_srcdir:-.}
for p in "$b"/plugins/.libs/sched-*.so; do
	syms=$(nm -D --defined-only "$p" | awk '$2 ~ /^[TDBRVW]$/ {print $3}')
	[ "$syms" = vgpu_plugin_entry ] || { echo "$p exports: $syms"; exit 1; }
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '#include <vgpu/plugin.h>\nint x;\n' > "$tmp/p.c"
${CC:-cc} -std=c99 -Wall -Wextra -Werror -pedantic -I"$s/libvgpu/include" -c "$tmp/p.c" \
	-o "$tmp/p.o" || exit 1
if command -v g++ >/dev/null; then
	cp "$tmp/p.c" "$tmp/p.cc"
	g++ -Wall -Wextra -Werror -I"$s/libvgpu/include" -c "$tmp/p.cc" -o "$tmp/q.o" || exit 1
fi
exit 0
