#!/bin/sh
# Install into a DESTDIR, then build examples/vecadd out of the tree with
# nothing but pkg-config, and run it.
set -u
b=${top_builddir:-.}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dest=$tmp/dest
${MAKE:-make} -s -C "$b" install DESTDIR="$dest" >"$tmp/install.log" 2>&1 || {
	cat "$tmp/install.log"; echo "make install DESTDIR failed"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$b/pkgconfig/vgpu.pc")
pc=$(find "$dest" -name vgpu.pc | head -1)
[ -n "$pc" ] || { echo "vgpu.pc not installed"; exit 1; }
[ -f "$(dirname "$pc")/vgpu-plugin.pc" ] || { echo "vgpu-plugin.pc not installed"; exit 1; }
PKG="pkg-config --define-variable=prefix=$dest$prefix"
export PKG_CONFIG_PATH=$(dirname "$pc")
src=$(find "$dest" -type d -path '*share/vgpu/examples' | head -1)
[ -n "$src" ] || { echo "example sources not installed"; exit 1; }
for h in vgpu.h vgpu/kernel.h; do
	[ -f "$dest$prefix/include/$h" ] || { echo "$h not installed"; exit 1; }
done
cp -r "$src" "$tmp/build"
${MAKE:-make} -s -C "$tmp/build" -f Makefile.example PKG_CONFIG="$PKG" \
	CFLAGS="${VGPU_TEST_CFLAGS:--O2} -Wall" >"$tmp/build.log" 2>&1 || {
	cat "$tmp/build.log"; echo "out-of-tree build failed"; exit 1; }
out=$(VGPU_VECADD_DIR="$tmp/build" "$tmp/build/vecadd" 2>&1) || { echo "$out"; exit 1; }
echo "$out"
echo "$out" | grep -q '^vecadd: OK cpu:0' || exit 1
