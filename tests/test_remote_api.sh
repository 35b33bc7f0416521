#!/bin/sh
# The API test programs and the vecadd example, run against a real vgpud
# over tcp and over a unix socket (VGPU_TEST_URI / VGPU_URI): a remote
# handle behaves as a local one. The server is killed whatever happens.
set -u
b=${top_builddir:-.}
tmp=$(mktemp -d /tmp/vgpu-test-remote-api-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

"$b/tools/vgpud" --listen tcp://127.0.0.1:0 --listen "unix://$tmp/v.sock" \
	--allow-native-modules 2> "$tmp/log" &
pid=$!
i=0
while [ $i -lt 200 ] && ! grep -q "listening on unix" "$tmp/log"; do sleep 0.05; i=$((i+1)); done
tcp=$(sed -n 's/^vgpud: listening on \(tcp:.*\)$/\1/p' "$tmp/log")
[ -n "$tcp" ] || { echo "vgpud did not start:"; cat "$tmp/log"; exit 1; }
rc=0
for uri in "$tcp/0" "unix://$tmp/v.sock/0"; do
	for t in test_basic test_memory test_launch test_streams test_threads; do
		if out=$(VGPU_TEST_URI=$uri "$b/tests/$t" 2>&1); then
			echo "ok   $t on $uri"
		else
			echo "FAIL $t on $uri"; echo "$out" | grep -v '^ok' | sed 's/^/     /'; rc=1
		fi
	done
	if out=$(VGPU_URI=$uri "$b/examples/vecadd" 2>&1) && echo "$out" | grep -q "^vecadd: OK $uri"; then
		echo "ok   vecadd on $uri"
	else
		echo "FAIL vecadd on $uri: $out"; rc=1
	fi
done
kill -TERM $pid; wait $pid; st=$?; pid=
[ $st -eq 0 ] || { echo "FAIL vgpud exit status $st"; cat "$tmp/log"; rc=1; }
if grep -q "Sanitizer\|runtime error:" "$tmp/log"; then
	echo "FAIL vgpud sanitizer report:"; cat "$tmp/log"; rc=1
fi
exit $rc
