#!/bin/sh
# run-on-fake-cuda.sh - rerun the engine's backend-independent tests on the
# cuda backend (cuda:0) over the fake driver (tests/fake-cuda), so that the
# whole stack - public API, engine, cuda backend - runs in `make check`
# without a GPU. Override the list with FAKE_CUDA_ENGINE_TESTS.
#
# Two things these tests expect of every backend do not hold on CUDA:
#  - after a kernel fault (trap) the device keeps working. On CUDA a fault
#    is fatal for the process ("the process must be terminated and
#    relaunched"); the fake does that by default (tests/fake-cuda/
#    test_cuda_load checks it) and is told here to report a fault once and
#    go on (FAKE_CUDA_RECOVERABLE_FAULTS=1) so the cases after a trap run;
#  - an argument of the wrong type but the right size is refused: the
#    driver's cuFuncGetParamInfo gives sizes only (sig->type[i] = 0).
# Cases known to fail for these reasons are listed in KNOWN below and
# reported as XFAIL; any other failure, or a skip of a whole program, fails.
: "${top_builddir:=.}"
fake="$top_builddir/tests/fake-cuda/.libs/libcuda.so"
if [ ! -f "$fake" ]; then
	echo "run-on-fake-cuda: $fake not built" >&2
	exit 1
fi
VGPU_TEST_URI=cuda:0
VGPU_CUDA_LIBRARY=$fake
FAKE_CUDA_RECOVERABLE_FAULTS=1
# Slow the fake's streams a little so that ordering bugs show.
FAKE_CUDA_DELAY_US=${FAKE_CUDA_DELAY_US:-20}
export VGPU_TEST_URI VGPU_CUDA_LIBRARY FAKE_CUDA_RECOVERABLE_FAULTS FAKE_CUDA_DELAY_US
unset FAKE_CUDA_FAIL FAKE_CUDA_DRIVER_VERSION FAKE_CUDA_DEVICES FAKE_CUDA_NO_VMM

KNOWN="tests/test_launch:bad_args"

tests=${FAKE_CUDA_ENGINE_TESTS:-"tests/test_basic tests/test_memory tests/test_launch tests/test_streams tests/test_threads"}
# and some of them on a GPU without virtual memory management (cuMemAlloc)
novmm_tests=${FAKE_CUDA_NOVMM_TESTS:-"tests/test_memory tests/test_launch"}
out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
rc=0
for t in $tests novmm: $novmm_tests; do
	if [ "$t" = novmm: ]; then
		FAKE_CUDA_NO_VMM=1
		export FAKE_CUDA_NO_VMM
		echo "== the following with FAKE_CUDA_NO_VMM=1"
		continue
	fi
	if [ ! -x "$top_builddir/$t" ]; then
		echo "FAIL $t: not built"
		rc=1
		continue
	fi
	echo "== $t on cuda:0 (fake driver)"
	"$top_builddir/$t" >"$out" 2>&1
	st=$?
	cat "$out"
	case $st in
	0) continue ;;
	77) echo "FAIL $t skipped everything on cuda:0"; rc=1; continue ;;
	esac
	for c in $(sed -n 's/^FAIL \([^ ]*\)$/\1/p' "$out"); do
		case " $KNOWN " in
		*" $t:$c "*) echo "XFAIL $t:$c (known CUDA difference, see this script)" ;;
		*) echo "FAIL $t:$c on cuda:0"; rc=1 ;;
		esac
	done
	if ! grep -q '^FAIL ' "$out"; then
		echo "FAIL $t exited $st on cuda:0"
		rc=1
	fi
done

unset FAKE_CUDA_NO_VMM

# The vecadd example on cuda:0: it loads examples/vecadd.ptx.
: "${top_srcdir:=.}"
echo "== examples/vecadd on cuda:0 (fake driver)"
if o=$(VGPU_URI=cuda:0 VGPU_VECADD_DIR="$top_srcdir/examples" "$top_builddir/examples/vecadd" 2>&1) &&
   echo "$o" | grep -q '^vecadd: OK cuda:0'; then
	echo "$o"
else
	echo "FAIL examples/vecadd on cuda:0: $o"
	rc=1
fi
# ... and on the CUDA toolkit's stub library: a clear error, exit status 1.
for stub in "${CUDA_DIR:-/usr/local/cuda}/lib64/stubs/libcuda.so" \
	    /usr/local/cuda/targets/*/lib/stubs/libcuda.so; do
	[ -f "$stub" ] || continue
	echo "== examples/vecadd on cuda:0 with $stub"
	if o=$(VGPU_URI=cuda:0 VGPU_CUDA_LIBRARY=$stub VGPU_VECADD_DIR="$top_srcdir/examples" \
		"$top_builddir/examples/vecadd" 2>&1); then
		echo "FAIL vecadd succeeded on the stub library: $o"
		rc=1
	elif echo "$o" | grep -q 'CUDA_ERROR_STUB_LIBRARY'; then
		echo "$o"
	else
		echo "FAIL unexpected error on the stub library: $o"
		rc=1
	fi
	break
done
exit $rc
