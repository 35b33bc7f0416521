#!/bin/sh
# test_fuzz_regress.sh - every fuzz target, built as a plain program, replays
# its seed corpus and every saved crash input (fuzz/regressions/<target>/).
: "${top_builddir:=.}" "${top_srcdir:=..}"
for t in frame request handshake; do
	timeout 300 "$top_builddir/fuzz/fuzz_$t" "$top_srcdir/fuzz/corpus/$t" \
		"$top_srcdir/fuzz/regressions/$t" || { echo "FAIL: fuzz_$t"; exit 1; }
done
exit 0
