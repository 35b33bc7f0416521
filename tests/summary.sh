#!/bin/sh
# summary.sh LOG... - add up automake test-suite.log counts and print the one
# closing line CI reads: "N passed, N failed[, N skipped]". Exit 1 on any
# failure or error.
pass=0 fail=0 skip=0
for log in "$@"; do
	[ -f "$log" ] || { echo "summary: $log missing"; fail=$((fail + 1)); continue; }
	p=$(sed -n 's/^# PASS: *//p' "$log"); f=$(sed -n 's/^# FAIL: *//p' "$log")
	e=$(sed -n 's/^# ERROR: *//p' "$log"); s=$(sed -n 's/^# SKIP: *//p' "$log")
	x=$(sed -n 's/^# XPASS: *//p' "$log")
	# name what failed, so that the tail of a CI log says which test
	sed -n 's/^\(FAIL\|ERROR\|XPASS\): \(.*\)/summary: \1: \2/p' "$log" |
		sed "s|\$| ($(basename "$(dirname "$log")"))|"
	pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0} + ${e:-0} + ${x:-0})); skip=$((skip + ${s:-0}))
done
if [ "$skip" -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
