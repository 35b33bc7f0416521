#!/bin/sh
# ptx-check.sh - the committed PTX (examples/vecadd.ptx, tests/test_kernels.ptx)
# assembles for sm_80 and sm_90 with ptxas, and is what `make ptx` makes of
# the .cu sources today (comment lines aside), so it is never stale.
: "${top_srcdir:=.}"
cudabin=
for d in "${CUDA_DIR:+$CUDA_DIR/bin}" /usr/local/cuda/bin; do
	if [ -n "$d" ] && [ -x "$d/ptxas" ]; then cudabin=$d; break; fi
done
ptxas=${PTXAS:-${cudabin:+$cudabin/ptxas}}
nvcc=${NVCC:-${cudabin:+$cudabin/nvcc}}
[ -n "$ptxas" ] || ptxas=$(command -v ptxas)
[ -n "$nvcc" ] || nvcc=$(command -v nvcc)
if [ -z "$ptxas" ]; then
	echo "ptx-check: no ptxas (CUDA toolkit) found" >&2
	exit 77
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
rc=0
for f in examples/vecadd tests/test_kernels; do
	for arch in sm_80 sm_90; do
		if ! "$ptxas" -arch=$arch "$top_srcdir/$f.ptx" -o "$tmp/out.cubin"; then
			echo "FAIL $f.ptx does not assemble for $arch"
			rc=1
		fi
	done
	grep -q '^\.version 8\.0$' "$top_srcdir/$f.ptx" || { echo "FAIL $f.ptx: .version is not 8.0"; rc=1; }
	if [ -n "$nvcc" ]; then
		"$nvcc" -ptx -arch=compute_80 -o "$tmp/new.ptx" "$top_srcdir/$f.cu" || { rc=1; continue; }
		sed -e 's/^\.version .*/.version 8.0/' "$tmp/new.ptx" | grep -v '^//' > "$tmp/a"
		grep -v '^//' "$top_srcdir/$f.ptx" > "$tmp/b"
		if ! cmp -s "$tmp/a" "$tmp/b"; then
			echo "FAIL $f.ptx is stale: run 'make ptx' and commit it"
			diff "$tmp/b" "$tmp/a" | head -20
			rc=1
		fi
	fi
	echo "ok   $f.ptx"
done
exit $rc
