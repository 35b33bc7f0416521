#!/bin/bash
# vgpu ls, vgpu smi (table and --json) and vgpud --metrics (checked with
# promtool) against a real vgpud on loopback with two tenants' sessions.
# Every process started here is killed on exit.
set -u
b=${top_builddir:-.}
vgpud="$b/tools/vgpud"
vgpu="$b/tools/vgpu"
hold="$b/tests/vgpu_hold"
tmp=$(mktemp -d /tmp/vgpu-test-smi-XXXXXX)
pids=
cleanup() { for p in $pids; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; [ -f "$tmp/log" ] && cat "$tmp/log"; exit 1; }
if ! command -v promtool >/dev/null; then
	[ -n "${CI:-}" ] && fail "promtool not found (Debian package prometheus)"
	echo "SKIP: promtool not found (Debian package prometheus)"; exit 77
fi

"$vgpud" --listen tcp://127.0.0.1:0 --max-sessions 4 --metrics 127.0.0.1:0 2> "$tmp/log" &
vpid=$!
pids="$pids $vpid"
i=0
while [ $i -lt 100 ] && ! grep -q "listening on" "$tmp/log"; do sleep 0.1; i=$((i+1)); done
uri=$(sed -n 's/^vgpud: listening on //p' "$tmp/log")
maddr=$(sed -n 's|^vgpud: metrics on http://\(.*\)/metrics$|\1|p' "$tmp/log")
[ -n "$uri" ] && [ -n "$maddr" ] || fail "vgpud did not start"

"$hold" "$uri/0?tenant=alice" 16 > "$tmp/h1" & h1=$!; pids="$pids $h1"
"$hold" "$uri/0?tenant=bob&token=not-for-your-eyes" 4 > "$tmp/h2" & h2=$!; pids="$pids $h2"
i=0
while [ $i -lt 100 ] && ! { grep -q held "$tmp/h1" && grep -q held "$tmp/h2"; }; do sleep 0.1; i=$((i+1)); done
grep -q held "$tmp/h1" && grep -q held "$tmp/h2" || fail "holders did not start"

# vgpu ls: one line per device
out=$("$vgpu" ls "$uri") || fail "vgpu ls: $out"
echo "$out" | grep -q "^$uri/0	libvgpu cpu device 0	cpu	mem 20 MiB / 1024 MiB	sessions 2/4	queue 0" ||
	fail "vgpu ls output: $out"

# a token in the URI never reaches the output
out=$("$vgpu" ls "$uri/0?tenant=carol&token=zzz-secret" 2>&1) || fail "vgpu ls with a token: $out"
echo "$out" | grep -q "zzz-secret" && fail "vgpu ls printed the token: $out"
"$vgpu" smi --json "$uri/0?token=zzz-secret" 2>&1 | grep -q "zzz-secret" && fail "smi printed the token"

# vgpu smi: the table
out=$("$vgpu" smi "$uri" 2>"$tmp/err") || fail "vgpu smi: $out"
echo "$out"
echo "$out" | grep -q "libvgpu cpu device 0" || fail "smi: no device line"
echo "$out" | grep -q "| alice " || fail "smi: no alice session"
echo "$out" | grep -q "| bob " || fail "smi: no bob session"
[ -s "$tmp/err" ] && fail "smi wrote to stderr: $(cat "$tmp/err")"

# vgpu smi --json: valid JSON on stdout, the expected contents, no secrets
"$vgpu" smi --json "$uri" > "$tmp/smi.json" 2>"$tmp/err" || fail "vgpu smi --json"
[ -s "$tmp/err" ] && fail "smi --json wrote to stderr: $(cat "$tmp/err")"
grep -q "not-for-your-eyes" "$tmp/smi.json" && fail "a token shows in the status"
python3 - "$tmp/smi.json" "$uri" <<'PY' || fail "smi --json contents: $(cat "$tmp/smi.json")"
import json, sys
d = json.load(open(sys.argv[1]))
s = d["servers"][0]
assert s["uri"] == sys.argv[2] and s["reachable"] is True, s
assert s["backend"] == "cpu" and s["max_sessions"] == 4 and s["sessions_open"] == 2, s
dev = s["devices"][0]
assert dev["index"] == 0 and dev["memory_total_bytes"] == 1 << 30, dev
assert dev["memory_used_bytes"] == 20 << 20 and dev["sessions"] == 2, dev
assert 0 <= dev["utilization"] <= 1 and dev["items"] >= 4, dev
sess = {x["tenant"]: x for x in s["sessions"]}
assert set(sess) == {"alice", "bob"}, sess
assert sess["alice"]["memory_used_bytes"] == 16 << 20 and sess["alice"]["share"] == 1, sess
assert sess["bob"]["memory_used_bytes"] == 4 << 20 and sess["bob"]["swap_bytes"] == 0, sess
assert sess["alice"]["busy_seconds"] > 0, sess
ten = {x["tenant"]: x for x in s["tenants"]}
assert ten["alice"]["sessions_total"] == 1, ten
assert s["transports"][0]["name"] == "tcp" and s["transports"][0]["received_bytes"] > 16 << 20
print("smi --json ok")
PY
# an unreachable server: reported in the JSON, error on stderr, exit 1
dead="tcp://127.0.0.1:1"
"$vgpu" smi --json "$dead" > "$tmp/dead.json" 2>"$tmp/err" && fail "dead server: exit 0"
python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['servers'][0]; assert s['reachable'] is False and s['error']" "$tmp/dead.json" ||
	fail "dead server JSON: $(cat "$tmp/dead.json")"
grep -q "127.0.0.1:1" "$tmp/err" || fail "dead server message"

# metrics: a scrape over HTTP, checked by promtool
scrape() {
	exec 3<>"/dev/tcp/${maddr%:*}/${maddr##*:}" || return 1
	printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3
	cat <&3
	exec 3<&-
}
scrape > "$tmp/http" || fail "cannot scrape $maddr"
head -1 "$tmp/http" | grep -q "^HTTP/1.1 200" || fail "HTTP status: $(head -1 "$tmp/http")"
grep -qi "^Content-Type: text/plain; version=0.0.4" "$tmp/http" || fail "content type"
sed '1,/^\r$/d' "$tmp/http" > "$tmp/metrics"
promtool check metrics < "$tmp/metrics" || fail "promtool check metrics: $(cat "$tmp/metrics")"
for m in 'vgpu_sessions 2' 'vgpu_sessions_max 4' 'vgpu_device_memory_used_bytes{device="0"} 20971520' \
	 'vgpu_device_memory_total_bytes{device="0"} 1073741824' 'vgpu_tenant_device_seconds_total{tenant="alice"}' \
	 'vgpu_transport_received_bytes_total{transport="tcp"}' 'vgpu_device_swap_out_bytes_total{device="0"} 0' \
	 'vgpu_queue_waiting_clients 0' 'vgpu_device_utilization_ratio{device="0"}'; do
	grep -qF "$m" "$tmp/metrics" || fail "metric '$m' missing"
done
grep -q "not-for-your-eyes" "$tmp/metrics" && fail "a token shows in the metrics"
exec 3<>"/dev/tcp/${maddr%:*}/${maddr##*:}"; printf 'GET /nope HTTP/1.0\r\n\r\n' >&3
head -1 <&3 | grep -q "404" || fail "404 for other paths"
exec 3<&-
# clean stop: holders, then vgpud (exit 0, no sanitizer report)
kill -TERM $h1 $h2; wait $h1 $h2
kill -TERM $vpid; wait $vpid; rc=$?
[ $rc -eq 0 ] || fail "vgpud exit status $rc after SIGTERM"
grep -q "Sanitizer\|runtime error" "$tmp/log" && fail "sanitizer report"
echo ok
