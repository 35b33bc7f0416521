#!/bin/sh
# The shared library exports only vgpu_* symbols, under a version node, and
# the public headers stand alone.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
lib=$b/.libs/libvgpu.so
[ -f "$lib" ] || { echo "no $lib"; exit 1; }
bad=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | grep -v '^vgpu_' | grep -v '^VGPU_[0-9.]*$')
if [ -n "$bad" ]; then
	echo "symbols exported without the vgpu_ prefix:"; echo "$bad"; exit 1
fi
n=$(nm -D --defined-only "$lib" | awk '$2 == "T" {print $3}' | grep -c '^vgpu_')
[ "$n" -ge 30 ] || { echo "only $n vgpu_ functions exported"; exit 1; }
objdump -T "$lib" | grep -q 'VGPU_0.1 *vgpu_open$' || { echo "vgpu_open not under VGPU_0.1"; exit 1; }
# internal symbols must not leak
if nm -D --defined-only "$lib" | grep -q 'vgpu__'; then echo "internal vgpu__ symbols exported"; exit 1; fi
# headers stand alone, in C and C++
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '#include <vgpu.h>\nint main(void){return 0;}\n' > "$tmp/a.c"
printf '#include <vgpu/kernel.h>\nint x;\n' > "$tmp/k.c"
${CC:-cc} -std=c99 -Wall -Wextra -Werror -pedantic -I"$s/libvgpu/include" -c "$tmp/a.c" -o "$tmp/a.o" || exit 1
${CC:-cc} -std=c99 -Wall -Wextra -Werror -I"$s/libvgpu/include" -c "$tmp/k.c" -o "$tmp/k.o" || exit 1
if command -v g++ >/dev/null; then
	cp "$tmp/a.c" "$tmp/a.cc"
	g++ -Wall -Werror -I"$s/libvgpu/include" -c "$tmp/a.cc" -o "$tmp/b.o" || exit 1
fi
echo "ok: $n exported functions, all vgpu_*"
