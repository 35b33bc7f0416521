#!/bin/sh
# examples/sched-plugin: install libvgpu into a DESTDIR, build the example
# plugin from the installed sources with its own Makefile (pkg-config
# vgpu-plugin only), check the installed vgpu finds the installed plugins
# beside the installed library, then run a program under the example
# plugin (in-process, VGPU_PLUGINS).
set -u
b=${top_builddir:-.}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dest=$tmp/dest
${MAKE:-make} -s -C "$b" install DESTDIR="$dest" >"$tmp/install.log" 2>&1 || {
	cat "$tmp/install.log"; echo "make install DESTDIR failed"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$b/pkgconfig/vgpu.pc")
pc=$(find "$dest" -name vgpu-plugin.pc | head -1)
[ -n "$pc" ] || { echo "vgpu-plugin.pc not installed"; exit 1; }
[ -f "$dest$prefix/include/vgpu/plugin.h" ] || { echo "vgpu/plugin.h not installed"; exit 1; }
PKG="pkg-config --define-variable=prefix=$dest$prefix"
export PKG_CONFIG_PATH=$(dirname "$pc")
plugindir=$($PKG --variable=plugindir vgpu-plugin)
for p in sched-fifo sched-fair sched-priority; do
	[ -f "$plugindir/$p.so" ] || { echo "$p.so not installed in $plugindir"; exit 1; }
done
src=$(find "$dest" -type d -path '*share/vgpu/examples/sched-plugin' | head -1)
[ -n "$src" ] || { echo "example plugin sources not installed"; exit 1; }
cp -r "$src" "$tmp/build"
${MAKE:-make} -s -C "$tmp/build" PKG_CONFIG="$PKG" CFLAGS="-O2 -Wall -Wextra -Werror" \
	>"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; echo "plugin build failed"; exit 1; }
[ -f "$tmp/build/sched-lottery.so" ] || { echo "no sched-lottery.so"; exit 1; }

# the installed vgpu finds the installed plugins beside the installed library
libdir=$(dirname "$(find "$dest" -name 'libvgpu.so.0' | head -1)")
out=$(env -u VGPU_PLUGIN_PATH LD_LIBRARY_PATH="$libdir" "$dest$prefix/bin/vgpu" plugins) || {
	echo "$out"; exit 1; }
echo "$out" | grep -q "^sched-fair  scheduler plugin" || { echo "$out"; echo "installed "\
	"plugins not found beside the installed library"; exit 1; }

# the example: listed with its parameters, refused with a bad one, run
out=$(VGPU_PLUGIN_PATH="$tmp/build" "$b/tools/vgpu" plugins sched-lottery) || { echo "$out"; exit 1; }
echo "$out"
echo "$out" | grep -q "tickets" || { echo "parameters not listed"; exit 1; }
out=$(VGPU_PLUGIN_PATH="$tmp/build" VGPU_PLUGINS=sched-lottery:tickets=0 \
	"$b/examples/vecadd" 2>&1) && { echo "$out"; echo "tickets=0 accepted"; exit 1; }
echo "$out" | grep -q "parameter 'tickets'" || { echo "$out"; echo "no parameter name"; exit 1; }
out=$(VGPU_PLUGIN_PATH="$tmp/build" VGPU_PLUGINS=sched-lottery:tickets=10,seed=42 \
	VGPU_LOG=info "$b/examples/vecadd" 2>&1) || { echo "$out"; exit 1; }
echo "$out"
echo "$out" | grep -q "plugin sched-lottery: 10 tickets per session" || {
	echo "the example plugin did not run"; exit 1; }
echo "$out" | grep -q '^vecadd: OK cpu:0' || exit 1

# and in a vgpud, for its remote clients
[ -x "$b/tools/vgpud" ] || exit 0
VGPU_PLUGIN_PATH="$tmp/build" "$b/tools/vgpud" --listen tcp://127.0.0.1:0 --allow-native-modules \
	--plugin sched-lottery:tickets=10,seed=42 --log-level info 2> "$tmp/vgpud.log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
i=0
while [ $i -lt 200 ] && ! grep -q "listening on tcp" "$tmp/vgpud.log"; do sleep 0.05; i=$((i+1)); done
tcp=$(sed -n 's/^vgpud: listening on \(tcp:.*\)$/\1/p' "$tmp/vgpud.log")
[ -n "$tcp" ] || { echo "vgpud did not start:"; cat "$tmp/vgpud.log"; exit 1; }
out=$(VGPU_URI="$tcp/0" "$b/examples/vecadd" 2>&1) || { echo "$out"; cat "$tmp/vgpud.log"; exit 1; }
echo "$out"
echo "$out" | grep -q "^vecadd: OK $tcp/0" || exit 1
kill -TERM $pid; wait $pid || { echo "vgpud exit status $?"; cat "$tmp/vgpud.log"; exit 1; }
grep -q "plugin sched-lottery: 10 tickets per session" "$tmp/vgpud.log" || {
	cat "$tmp/vgpud.log"; echo "the example plugin did not run in vgpud"; exit 1; }
