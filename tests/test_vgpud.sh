#!/bin/sh
# vgpud's command line and config file: errors are clear, port 0 prints the
# real port, SIGTERM exits 0. Every server started here is killed on exit.
set -u
b=${top_builddir:-.}
vgpud="$b/tools/vgpud"
tmp=$(mktemp -d /tmp/vgpu-test-vgpud-XXXXXX)
pids=
cleanup() { for p in $pids; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; [ -f "$tmp/log" ] && cat "$tmp/log"; exit 1; }

# refuses: plugins, unknown backend, no listener, public address without secrets
out=$("$vgpud" --listen tcp://127.0.0.1:0 --plugin sched-fair:weight=2 2>&1) && fail "plugin accepted"
echo "$out" | grep -q "unknown parameter 'weight'" || fail "plugin message: $out"
out=$(VGPU_PLUGIN_PATH=$tmp "$vgpud" --listen tcp://127.0.0.1:0 --plugin no-such-plugin:weight=2 2>&1) &&
	fail "unknown plugin accepted"
echo "$out" | grep -q "no-such-plugin" || fail "plugin message: $out"
out=$("$vgpud" --listen tcp://127.0.0.1:0 --backend opencl 2>&1) && fail "backend accepted"
echo "$out" | grep -q "unknown backend 'opencl'" || fail "backend message: $out"
out=$("$vgpud" 2>&1) && fail "no listener accepted"
echo "$out" | grep -q "no listener" || fail "listener message: $out"
out=$("$vgpud" --listen tcp://0.0.0.0:0 2>&1) && fail "public listener without secrets"
echo "$out" | grep -q "without secrets" || fail "secrets message: $out"
out=$("$vgpud" --bogus 2>&1) && fail "unknown flag accepted"
out=$("$vgpud" --listen tcp://127.0.0.1:0 --queue-limit 16X 2>&1) && fail "queue limit 16X accepted"
echo "$out" | grep -q "queue_limit: '16X' is not a size" || fail "queue limit message: $out"
out=$("$vgpud" --listen tcp://127.0.0.1:0 --queue-limit -1 2>&1) && fail "queue limit -1 accepted"
out=$("$vgpud" --listen tcp://127.0.0.1:0 --max-handles many 2>&1) && fail "max handles 'many' accepted"
echo "$out" | grep -q "max_handles: 'many' is not a non-negative integer" || fail "max handles message: $out"
"$vgpud" --help | grep -q -- "--allow-native-modules" || fail "help"

# config file: same settings as the flags; errors name the file and line
cat > "$tmp/bad.conf" <<EOC
[vgpud]
listen = tcp://127.0.0.1:0
colour = blue
EOC
out=$("$vgpud" --config "$tmp/bad.conf" 2>&1) && fail "bad config accepted"
echo "$out" | grep -q "unknown setting 'colour'" || fail "config message: $out"
echo "$out" | grep -q "bad.conf:3" || fail "config line: $out"
echo "alice:s3cret" > "$tmp/secrets"
chmod 600 "$tmp/secrets"
cat > "$tmp/good.conf" <<EOC
# comment
[vgpud]
listen = tcp://127.0.0.1:0
listen = unix://$tmp/v.sock
backend = cpu
secrets = $tmp/secrets
allow_native_modules = true
log_level = info
stop_timeout = 5
metrics = 127.0.0.1:0
queue_limit = 1M
max_handles = 1000
EOC
"$vgpud" --config "$tmp/good.conf" 2> "$tmp/log" &
pid=$!; pids="$pids $pid"
i=0
while [ $i -lt 100 ] && ! grep -q "listening on unix" "$tmp/log"; do sleep 0.1; i=$((i+1)); done
grep -q "vgpud: listening on tcp://127.0.0.1:[1-9][0-9]*$" "$tmp/log" || fail "tcp listener line"
grep -q "vgpud: listening on unix://$tmp/v.sock$" "$tmp/log" || fail "unix listener line"
grep -q "vgpud: metrics on http://127.0.0.1:[1-9][0-9]*/metrics$" "$tmp/log" || fail "metrics line"
[ -S "$tmp/v.sock" ] || fail "no socket"
# a second server on the same unix socket is refused, the first keeps it
out=$("$vgpud" --listen "unix://$tmp/v.sock" 2>&1) && fail "second server on the socket"
echo "$out" | grep -q "another server is listening" || fail "socket message: $out"
kill -TERM $pid
wait $pid; rc=$?
[ $rc -eq 0 ] || fail "exit status $rc after SIGTERM"
[ -e "$tmp/v.sock" ] && fail "socket left behind"
echo ok
