#!/bin/sh
# vgpud runs scheduler plugins: --plugin and the config file select them;
# bad plugins and parameters stop vgpud with a message naming them; a
# remote client is scheduled (its device time is capped by share=).
set -u
b=${top_builddir:-.}
vgpud="$b/tools/vgpud"
tmp=$(mktemp -d /tmp/vgpu-test-sched-vgpud-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; [ -f "$tmp/log" ] && cat "$tmp/log"; exit 1; }

out=$("$vgpud" --listen tcp://127.0.0.1:0 --plugin sched-fair:default_weight=zero 2>&1) &&
	fail "bad parameter accepted"
echo "$out" | grep -q "parameter 'default_weight'" || fail "parameter message: $out"
out=$("$vgpud" --listen tcp://127.0.0.1:0 --plugin sched-badabi 2>&1) && fail "bad ABI accepted"
echo "$out" | grep -q "plugin ABI 999" || fail "ABI message: $out"
out=$("$vgpud" --listen tcp://127.0.0.1:0 --plugin sched-nosuch 2>&1) && fail "missing plugin"
echo "$out" | grep -q "plugin 'sched-nosuch' not found" || fail "not found message: $out"
out=$("$vgpud" --listen tcp://127.0.0.1:0 --tenant-shares a=0.5 2>&1) && fail "shares alone"
echo "$out" | grep -q "need a scheduler plugin" || fail "shares message: $out"

# the config file: a list value with ';' and a per-tenant share
cat > "$tmp/v.conf" <<EOC
[vgpud]
listen = tcp://127.0.0.1:0
allow_native_modules = true
plugin = sched-fair:weights=alice=3;bob=1
tenant_shares = carol=0.25
max_sessions = 8
slots = 4
EOC
"$vgpud" --config "$tmp/v.conf" 2> "$tmp/log" &
pid=$!
i=0
while [ $i -lt 200 ] && ! grep -q "listening on tcp" "$tmp/log"; do sleep 0.05; i=$((i+1)); done
tcp=$(sed -n 's/^vgpud: listening on \(tcp:.*\)$/\1/p' "$tmp/log")
[ -n "$tcp" ] || fail "vgpud did not start"
for t in test_basic test_streams; do
	VGPU_TEST_URI="$tcp/0?tenant=alice" "$b/tests/$t" >"$tmp/out" 2>&1 || {
		cat "$tmp/out"; fail "$t under sched-fair in vgpud"; }
done
# a remote tenant with a configured share; a client's scheduling parameters
# reach the server's engine (and are checked there)
out=$(VGPU_URI="$tcp/0?tenant=carol" "$b/examples/vecadd" 2>&1) || fail "vecadd: $out"
out=$(VGPU_URI="$tcp/0?tenant=bob&share=0.5&priority=2" "$b/examples/vecadd" 2>&1) ||
	fail "vecadd with share and priority: $out"
out=$(VGPU_URI="$tcp/0?share=2" "$b/examples/vecadd" 2>&1) && fail "share=2 accepted"
echo "$out" | grep -q "share=2" || fail "share message: $out"
kill -TERM $pid; wait $pid; st=$?; pid=
[ $st -eq 0 ] || fail "vgpud exit status $st"
if grep -q "Sanitizer\|runtime error:" "$tmp/log"; then fail "sanitizer report"; fi
exit 0
