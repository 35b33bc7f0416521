#!/bin/sh
# TLS on the tcp transport, with certificates made here (loopback only):
# the handshake works and vecadd runs over tls=1; a plaintext client to a TLS
# server and a TLS client to a plaintext server fail cleanly; a wrong CA is
# refused; required client certificates are enforced. Every server started
# here is killed on exit; every wait is bounded.
set -u
b=${top_builddir:-.}
tmp=$(mktemp -d /tmp/vgpu-test-tls-XXXXXX)
pids=
cleanup() { for p in $pids; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; cat "$f"; done; exit 1; }
command -v openssl >/dev/null || { echo "openssl(1) not found (Debian: openssl)"; exit 1; }

# a CA, a server certificate for 127.0.0.1 signed by it, a client
# certificate signed by it, and an unrelated CA
mkcert() { # name subject-alt-name|"" signer|""
	openssl req -new -newkey rsa:2048 -nodes -keyout "$tmp/$1.key" -subj "/CN=$1" \
		-out "$tmp/$1.csr" 2>/dev/null || fail "openssl req $1"
	ext="$tmp/$1.ext"
	if [ -n "$2" ]; then printf 'subjectAltName=%s\n' "$2" > "$ext"; else : > "$ext"; fi
	if [ -n "$3" ]; then
		openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/$3.crt" -CAkey "$tmp/$3.key" \
			-CAcreateserial -days 2 -extfile "$ext" -out "$tmp/$1.crt" 2>/dev/null || fail "sign $1"
	else
		openssl req -x509 -new -key "$tmp/$1.key" -subj "/CN=$1" -days 2 \
			-out "$tmp/$1.crt" 2>/dev/null || fail "openssl req -x509 $1"
	fi
}
mkcert ca "" ""
mkcert other-ca "" ""
mkcert server "IP:127.0.0.1" ca
mkcert client "" ca
mkcert rogue "" other-ca

start() { # log-name vgpud-args... (sets $uri)
	n=$1; shift
	"$b/tools/vgpud" --listen tcp://127.0.0.1:0 --allow-native-modules "$@" \
		> /dev/null 2> "$tmp/$n.log" &
	pids="$pids $!"
	i=0
	while [ $i -lt 200 ] && ! grep -q "listening on" "$tmp/$n.log"; do sleep 0.05; i=$((i+1)); done
	uri=$(sed -n 's/^vgpud: listening on \(tcp:.*\)$/\1/p' "$tmp/$n.log")
}
run() { # expect(ok|fail) uri [env...]
	want=$1; uri=$2; shift 2
	if out=$(env "$@" VGPU_URI="$uri" timeout 30 "$b/examples/vecadd" 2>&1); then got=ok; else got=fail; fi
	[ "$got" = "$want" ] || fail "vecadd on $uri: expected $want, got: $out"
	echo "$out"
}

start tls --tls-cert "$tmp/server.crt" --tls-key "$tmp/server.key"; tls=$uri
[ -n "$tls" ] || fail "TLS vgpud did not start"
start plain; plain=$uri
[ -n "$plain" ] || fail "plaintext vgpud did not start"

# the handshake works and vecadd runs over TLS (CA in the URI, then in the environment)
out=$(run ok "$tls/0?tls=1&tls_ca=$tmp/ca.crt")
echo "$out" | grep -q '^vecadd: OK' || fail "vecadd over TLS: $out"
echo "ok   vecadd over TLS (tls_ca in the URI)"
run ok "$tls/0?tls=1" VGPU_TLS_CA="$tmp/ca.crt" >/dev/null
echo "ok   vecadd over TLS (VGPU_TLS_CA)"
# vgpu smi talks TLS too
"$b/tools/vgpu" smi --json "$tls?tls=1&tls_ca=$tmp/ca.crt" > "$tmp/smi.out" 2>&1 ||
	fail "vgpu smi over TLS: $(cat "$tmp/smi.out")"
echo "ok   vgpu smi over TLS"

# a TLS client to a plaintext server: a clean error naming TLS
s=$(date +%s)
out=$(run fail "$plain/0?tls=1&tls_ca=$tmp/ca.crt")
echo "$out" | grep -qi 'TLS' || fail "TLS client to plaintext server: $out"
echo "ok   TLS client to a plaintext server fails: $(echo "$out" | head -1)"
# a plaintext client to a TLS server: a clean error, bounded in time
out=$(run fail "$tls/0")
[ $(( $(date +%s) - s )) -lt 60 ] || fail "plaintext client to TLS server took too long"
echo "ok   plaintext client to a TLS server fails: $(echo "$out" | head -1)"
# the wrong CA: refused by certificate verification
out=$(run fail "$tls/0?tls=1&tls_ca=$tmp/other-ca.crt")
echo "$out" | grep -qi 'certificate' || fail "wrong CA: $out"
echo "ok   wrong CA refused: $(echo "$out" | head -1)"
# the right CA but a server name the certificate does not carry
out=$(run fail "tcp://localhost:${tls##*:}/0?tls=1&tls_ca=$tmp/ca.crt")
echo "ok   certificate for another name refused"
# the server still serves after all that
run ok "$tls/0?tls=1&tls_ca=$tmp/ca.crt" >/dev/null

# client certificates required
start mtls --tls-cert "$tmp/server.crt" --tls-key "$tmp/server.key" --tls-client-ca "$tmp/ca.crt"; mtls=$uri
[ -n "$mtls" ] || fail "mTLS vgpud did not start"
out=$(run fail "$mtls/0?tls=1&tls_ca=$tmp/ca.crt")
echo "ok   no client certificate refused: $(echo "$out" | head -1)"
out=$(run fail "$mtls/0?tls=1&tls_ca=$tmp/ca.crt&tls_cert=$tmp/rogue.crt&tls_key=$tmp/rogue.key")
echo "ok   client certificate from another CA refused"
run ok "$mtls/0?tls=1&tls_ca=$tmp/ca.crt&tls_cert=$tmp/client.crt&tls_key=$tmp/client.key" >/dev/null
echo "ok   client certificate accepted (URI)"
run ok "$mtls/0?tls=1" VGPU_TLS_CA="$tmp/ca.crt" VGPU_TLS_CERT="$tmp/client.crt" \
	VGPU_TLS_KEY="$tmp/client.key" >/dev/null
echo "ok   client certificate accepted (environment)"

# vgpud refuses half a TLS configuration
timeout 10 "$b/tools/vgpud" --listen tcp://127.0.0.1:0 --tls-cert "$tmp/server.crt" > "$tmp/half.out" 2>&1 &&
	fail "--tls-cert without --tls-key accepted"
timeout 10 "$b/tools/vgpud" --listen tcp://127.0.0.1:0 --tls-cert "$tmp/server.crt" --tls-key "$tmp/other-ca.key" \
	> "$tmp/mismatch.out" 2>&1 && fail "mismatched key accepted"
grep -q 'TLS key' "$tmp/mismatch.out" || fail "mismatched key message: $(cat "$tmp/mismatch.out")"
echo "ok   vgpud refuses incomplete or mismatched TLS settings"
exit 0
