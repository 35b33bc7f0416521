/* SPDX-License-Identifier: MIT */
/* test_proto.c - wire protocol units: header, bounded msgpack cursor, HMAC,
 * and the tcp/unix transport with a raw echo. No engine involved. */
#include "config.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include <openssl/hmac.h>

#include "error.h"
#include "proto.h"
#include "test.h"
#include "transport.h"
#include "uri.h"

static int t_header(void *d)
{
	struct vgpu_hdr h = { VGPU_PROTO_MAGIC, VGPU_PROTO_VERSION, VGPU_MSG_REQ, 5, 100,
			      0x1122334455667788ull, 1ull << 33 };
	struct vgpu_hdr g;
	uint8_t raw[VGPU_PROTO_HDR];

	vgpu__hdr_encode(raw, &h);
	CHECK(raw[0] == 'V' && raw[1] == 'G' && raw[2] == 'P' && raw[3] == 'U');
	CHECK(raw[16] == 0x88); /* little-endian */
	vgpu__hdr_decode(raw, &g);
	CHECK(!memcmp(&g, &h, sizeof(g)));
	CHECK_ST(vgpu__hdr_check(&g, 1ull << 34, "client"), VGPU_OK);
	CHECK_ST(vgpu__hdr_check(&g, 1ull << 20, "client"), VGPU_ERR_PROTOCOL);
	CHECK(strstr(vgpu__error_msg(), "bulk length"));
	g.version = 99;
	CHECK_ST(vgpu__hdr_check(&g, 1ull << 34, "client"), VGPU_ERR_PROTOCOL);
	CHECK(strstr(vgpu__error_msg(), "client speaks version 99"));
	CHECK(strstr(vgpu__error_msg(), "server speaks version 2"));
	g.version = VGPU_PROTO_VERSION;
	g.body_len = VGPU_PROTO_MAX_BODY + 1;
	CHECK_ST(vgpu__hdr_check(&g, 1ull << 34, "client"), VGPU_ERR_PROTOCOL);
	CHECK(strstr(vgpu__error_msg(), "exceeds the limit"));
	g.body_len = 10;
	g.magic = 0x12345678;
	CHECK_ST(vgpu__hdr_check(&g, 1ull << 34, "client"), VGPU_ERR_PROTOCOL);
	return 0;
}

static int t_roundtrip(void *d)
{
	uint8_t buf[256];
	struct vgpu_wbuf w;
	struct vgpu_mp m;
	uint32_t n, u32, bl;
	uint64_t u64;
	int64_t i64;
	double f;
	const void *bin;
	char s[16];

	vgpu__wbuf_init(&w, buf, sizeof(buf));
	msgpack_pack_array(&w.pk, 7);
	msgpack_pack_uint32(&w.pk, 7);
	msgpack_pack_uint64(&w.pk, 1ull << 40);
	msgpack_pack_int(&w.pk, -5);
	msgpack_pack_str_with_body(&w.pk, "hello", 5);
	msgpack_pack_bin_with_body(&w.pk, "\0\1\2", 3);
	msgpack_pack_double(&w.pk, 2.5);
	msgpack_pack_nil(&w.pk);
	CHECK(!w.overflow);
	vgpu__mp_init(&m, buf, w.len);
	CHECK(vgpu__mp_array(&m, &n) == 0 && n == 7);
	CHECK(vgpu__mp_u32(&m, &u32) == 0 && u32 == 7);
	CHECK(vgpu__mp_u64(&m, &u64) == 0 && u64 == 1ull << 40);
	CHECK(vgpu__mp_i64(&m, &i64) == 0 && i64 == -5);
	CHECK(vgpu__mp_strcpy(&m, s, sizeof(s)) == 0 && !strcmp(s, "hello"));
	CHECK(vgpu__mp_bin(&m, &bin, &bl) == 0 && bl == 3 && !memcmp(bin, "\0\1\2", 3));
	CHECK(vgpu__mp_f64(&m, &f) == 0 && f == 2.5);
	CHECK(vgpu__mp_is_nil(&m));
	CHECK(!m.err && m.p == m.end);
	/* overflow of the fixed buffer is reported, not written past */
	vgpu__wbuf_init(&w, buf, 4);
	msgpack_pack_str_with_body(&w.pk, "too long for four", 17);
	CHECK(w.overflow);
	return 0;
}

static int t_hostile(void *d)
{
	struct vgpu_mp m;
	uint32_t n, u32;
	const char *s;
	uint8_t lie32[] = { 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01 };  /* 4G elements, 1 byte */
	uint8_t lie16[] = { 0xdc, 0x00, 0x10, 0x01, 0x02 };        /* 16 elements, 2 bytes */
	uint8_t str[] = { 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a' };     /* 2 GiB string */
	uint8_t neg[] = { 0xff };                                  /* -1 as unsigned */
	uint8_t big[] = { 0xcf, 1, 0, 0, 0, 0, 0, 0, 0 };           /* > u32 */
	uint8_t deep[16];
	uint8_t ext[] = { 0xd4, 0x01, 0x00 };

	vgpu__mp_init(&m, lie32, sizeof(lie32));
	CHECK(vgpu__mp_array(&m, &n) < 0 && m.err);
	vgpu__mp_init(&m, lie16, sizeof(lie16));
	CHECK(vgpu__mp_array(&m, &n) < 0);
	vgpu__mp_init(&m, str, sizeof(str));
	CHECK(vgpu__mp_str(&m, &s, &n) < 0);
	vgpu__mp_init(&m, neg, sizeof(neg));
	CHECK(vgpu__mp_u32(&m, &u32) < 0);
	vgpu__mp_init(&m, big, sizeof(big));
	CHECK(vgpu__mp_u32(&m, &u32) < 0);
	memset(deep, 0x91, sizeof(deep)); /* [[[[...]]]] */
	vgpu__mp_init(&m, deep, sizeof(deep));
	CHECK(vgpu__mp_skip(&m, 0) < 0);
	vgpu__mp_init(&m, ext, sizeof(ext));
	CHECK(vgpu__mp_skip(&m, 0) < 0);
	/* truncated everything */
	for (size_t i = 0; i < sizeof(big); i++) {
		uint64_t u;
		vgpu__mp_init(&m, big, i);
		CHECK(vgpu__mp_u64(&m, &u) < 0);
	}
	/* errors are sticky */
	vgpu__mp_init(&m, neg, sizeof(neg));
	vgpu__mp_u32(&m, &u32);
	CHECK(vgpu__mp_is_nil(&m) == 0 && m.err);
	return 0;
}

static int t_hmac(void *d)
{
	uint8_t nonce[VGPU_PROTO_NONCE], mac[VGPU_PROTO_MAC], want[VGPU_PROTO_MAC];
	uint8_t msg[VGPU_PROTO_NONCE + 5];
	unsigned int ml;

	CHECK_OK(vgpu__auth_nonce(nonce));
	CHECK_OK(vgpu__auth_mac("s3cret", nonce, "alice", mac));
	memcpy(msg, nonce, sizeof(nonce));
	memcpy(msg + sizeof(nonce), "alice", 5);
	HMAC(EVP_sha256(), "s3cret", 6, msg, sizeof(msg), want, &ml);
	CHECK(ml == 32 && !memcmp(mac, want, 32));
	CHECK_OK(vgpu__auth_mac("s3cret", nonce, "bob", want));
	CHECK(memcmp(mac, want, 32) != 0);
	return 0;
}

struct echo {
	const struct vgpu_transport_ops *tp;
	struct vgpu_tp_listener *l;
};

static void *echo_main(void *arg)
{
	struct echo *e = arg;
	struct vgpu_tp_conn *c;
	char buf[65536];

	if (e->tp->accept(e->l, &c) < 0)
		return NULL;
	for (;;) {
		ssize_t n = e->tp->recv(c, buf, 1, sizeof(buf));
		struct iovec iov = { buf, 0 };

		if (n <= 0)
			break;
		iov.iov_len = (size_t)n;
		if (e->tp->send(c, &iov, 1) < 0)
			break;
	}
	e->tp->close(c);
	return NULL;
}

static int echo_test(const char *listen_uri)
{
	struct vgpu_uri u, cu;
	struct vgpu_tp_addr ua, ca;
	struct echo e;
	char bound[512], full[600];
	pthread_t th;
	struct vgpu_tp_conn *c;
	static uint8_t out[3 << 20], in[3 << 20];
	struct iovec iov[3];

	CHECK_OK(vgpu__uri_parse(listen_uri, &u));
	e.tp = vgpu__transport_find(u.scheme);
	CHECK(e.tp != NULL);
	vgpu__tp_addr(&u, &ua);
	CHECK_OK(e.tp->listen(&ua, &e.l, bound, sizeof(bound)));
	if (u.port == 0)
		CHECK(!strstr(bound, ":0")); /* the real port */
	snprintf(full, sizeof(full), "%s/0", bound);
	CHECK_OK(vgpu__uri_parse(full, &cu));
	CHECK(pthread_create(&th, NULL, echo_main, &e) == 0);
	vgpu__tp_addr(&cu, &ca);
	CHECK_OK(e.tp->connect(&ca, 2000, &c));
	vt_fill(out, sizeof(out), 7);
	iov[0] = (struct iovec){ out, 32 };
	iov[1] = (struct iovec){ out + 32, 1000 };
	iov[2] = (struct iovec){ out + 1032, 30000 };
	/* send from this thread while reading back in chunks: the echo
	 * thread keeps both directions moving */
	{
		size_t got = 0, sent = 0;
		while (sent < sizeof(out)) {
			size_t k = sizeof(out) - sent < 65536 ? sizeof(out) - sent : 65536;
			struct iovec one = { out + sent, k };
			ssize_t n;

			CHECK_OK(e.tp->send(c, &one, 1));
			sent += k;
			while (got < sent) {
				n = e.tp->recv(c, in + got, 1, sent - got);
				CHECK(n > 0);
				got += (size_t)n;
			}
		}
		CHECK(!memcmp(in, out, sizeof(out)));
		/* one message from three iovecs */
		CHECK_OK(e.tp->send(c, iov, 3));
		memset(in, 0, 31032);
		CHECK(e.tp->recv(c, in, 31032, 31032) == 31032);
		CHECK(!memcmp(in, out, 31032));
		/* a receive timeout leaves the connection usable (vgpud waits
		 * for the next frame that way) */
		CHECK_OK(e.tp->set_timeout(c, 100));
		CHECK_ST((vgpu_status)e.tp->recv(c, in, 1, 100), VGPU_ERR_TIMEOUT);
		CHECK_OK(e.tp->set_timeout(c, 0));
		/* send_recv (optional): requests and their echoes */
		if (e.tp->size >= offsetof(struct vgpu_transport_ops, send_recv) + sizeof(void *) &&
		    e.tp->send_recv) {
			for (size_t r = 0; r < 200; r++) {
				size_t k = 1 + r * 37, total = 32 + k;
				struct iovec two[2] = { { out + r, 32 }, { out + r + 32, k } };
				ssize_t n = e.tp->send_recv(c, two, 2, in, 1, total);

				CHECK(n > 0);
				for (got = (size_t)n; got < total; got += (size_t)n) {
					n = e.tp->recv(c, in + got, 1, total - got);
					CHECK(n > 0);
				}
				CHECK(!memcmp(in, out + r, total));
			}
		}
	}
	e.tp->shutdown(c, 0);
	e.tp->close(c);
	pthread_join(th, NULL);
	e.tp->listen_close(e.l);
	return 0;
}

static int t_echo_tcp(void *d)
{
	return echo_test("tcp://127.0.0.1:0");
}

static int t_echo_unix(void *d)
{
	char uri[256];

	snprintf(uri, sizeof(uri), "unix:///tmp/vgpu-test-echo-%d.sock", (int)getpid());
	return echo_test(uri);
}

static int t_echo_uring(void *d)
{
	return echo_test("uring://127.0.0.1:0");
}

/*
 * send_recv with a timeout (vgpud's reader fuses a reply with its wait for
 * the next request that way), on both ends of a uring connection: a reply
 * that does not come in time is VGPU_ERR_TIMEOUT with the request delivered
 * whole and the connection usable; a reply in time is the reply. The
 * accepting end (whose receive ring only its reader thread enters) does
 * the same with the next request.
 */
struct late {
	const struct vgpu_transport_ops *tp;
	struct vgpu_tp_listener *l;
	int ok;
};

static void *late_main(void *arg)
{
	struct late *e = arg;
	struct vgpu_tp_conn *c;
	uint8_t req[100], want[100];
	struct iovec rep = { "0123456789", 10 };
	ssize_t n;

	vt_fill(want, sizeof(want), 11);
	if (e->tp->accept(e->l, &c) < 0)
		return NULL;
	/* 1: the request, its reply late (after the client's timeout) */
	if (e->tp->recv(c, req, sizeof(req), sizeof(req)) != sizeof(req) ||
	    memcmp(req, want, sizeof(req)))
		goto out;
	usleep(300000);
	if (e->tp->send(c, &rep, 1) < 0)
		goto out;
	/* 2: the request, its reply at once, fused with a wait for request 3
	 * that times out first (the client waits 300 ms) */
	if (e->tp->recv(c, req, sizeof(req), sizeof(req)) != sizeof(req))
		goto out;
	e->tp->set_timeout(c, 100);
	n = e->tp->send_recv(c, &rep, 1, req, 1, sizeof(req));
	if (n != VGPU_ERR_TIMEOUT)
		goto out;
	/* 3: arrives after the timeout, whole */
	for (size_t got = 0; got < sizeof(req); got += (size_t)n) {
		n = e->tp->recv(c, req + got, 1, sizeof(req) - got);
		if (n == VGPU_ERR_TIMEOUT) {
			n = 0;
			continue;
		}
		if (n <= 0)
			goto out;
	}
	if (memcmp(req, want, sizeof(req)))
		goto out;
	e->tp->set_timeout(c, 0);
	if (e->tp->send(c, &rep, 1) < 0)
		goto out;
	e->ok = 1;
out:
	e->tp->close(c);
	return NULL;
}

static int t_send_recv_timeout_uring(void *d)
{
	struct vgpu_uri u;
	struct vgpu_tp_addr a;
	struct late e = { 0 };
	struct vgpu_tp_conn *c;
	char bound[512], full[600], in[16];
	uint8_t req[100];
	struct iovec iov = { req, sizeof(req) };
	pthread_t th;
	ssize_t n;

	CHECK_OK(vgpu__uri_parse("uring://127.0.0.1:0", &u));
	e.tp = vgpu__transport_find("uring");
	CHECK(e.tp != NULL && e.tp->send_recv);
	vgpu__tp_addr(&u, &a);
	CHECK_OK(e.tp->listen(&a, &e.l, bound, sizeof(bound)));
	snprintf(full, sizeof(full), "%s/0", bound);
	CHECK_OK(vgpu__uri_parse(full, &u));
	CHECK(pthread_create(&th, NULL, late_main, &e) == 0);
	vgpu__tp_addr(&u, &a);
	CHECK_OK(e.tp->connect(&a, 2000, &c));
	vt_fill(req, sizeof(req), 11);
	/* 1 */
	CHECK_OK(e.tp->set_timeout(c, 100));
	CHECK_ST((vgpu_status)e.tp->send_recv(c, &iov, 1, in, 1, sizeof(in)), VGPU_ERR_TIMEOUT);
	CHECK_OK(e.tp->set_timeout(c, 2000));
	CHECK(e.tp->recv(c, in, 10, 10) == 10 && !memcmp(in, "0123456789", 10));
	/* 2: the reply in time */
	n = e.tp->send_recv(c, &iov, 1, in, 10, 10);
	CHECK(n == 10 && !memcmp(in, "0123456789", 10));
	/* 3: after the server's receive timed out */
	usleep(300000);
	n = e.tp->send_recv(c, &iov, 1, in, 10, 10);
	CHECK(n == 10 && !memcmp(in, "0123456789", 10));
	pthread_join(th, NULL);
	CHECK(e.ok);
	e.tp->close(c);
	e.tp->listen_close(e.l);
	return 0;
}

static int t_refused(void *d)
{
	struct vgpu_uri u;
	struct vgpu_tp_addr a;
	struct vgpu_tp_conn *c;

	CHECK_OK(vgpu__uri_parse("unix:///nonexistent/vgpu.sock/0", &u));
	vgpu__tp_addr(&u, &a);
	CHECK_ST(vgpu__transport_tcp.connect(&a, 1000, &c), VGPU_ERR_CONNECTION);
	CHECK(strstr(vgpu__error_msg(), "/nonexistent/vgpu.sock"));
	CHECK_OK(vgpu__uri_parse("tcp://0.0.0.0:7100/0", &u));
	vgpu__tp_addr(&u, &a);
	CHECK(vgpu__transport_tcp.listen_is_remote(&a));
	CHECK_OK(vgpu__uri_parse("tcp://127.0.0.1:7100/0", &u));
	vgpu__tp_addr(&u, &a);
	CHECK(!vgpu__transport_tcp.listen_is_remote(&a));
	return 0;
}

/* ---- send_deferred / flush: optional ops, size-checked ---- */

static int fake_sends, fake_deferred, fake_flushes;

static vgpu_status fake_send(struct vgpu_tp_conn *c, const struct iovec *iov, int n)
{
	(void)c;
	(void)iov;
	(void)n;
	fake_sends++;
	return VGPU_OK;
}

static vgpu_status fake_send_deferred(struct vgpu_tp_conn *c, const struct iovec *iov, int n)
{
	(void)c;
	/* the bulk is the last segment, whole */
	if (n < 1 || iov[n - 1].iov_len != 4096)
		return VGPU_ERR_INTERNAL;
	fake_deferred++;
	return VGPU_OK;
}

static vgpu_status fake_flush(struct vgpu_tp_conn *c)
{
	(void)c;
	fake_flushes++;
	return VGPU_OK;
}

static int t_deferred_optional(void *d)
{
	static uint8_t bulk[4096];
	struct vgpu_transport_ops tp;
	uint8_t body[8] = { 0x90 };

	(void)d;
	/* present and covered by size: used */
	memset(&tp, 0, sizeof(tp));
	tp.size = sizeof(tp);
	tp.send = fake_send;
	tp.send_deferred = fake_send_deferred;
	tp.flush = fake_flush;
	fake_sends = fake_deferred = fake_flushes = 0;
	CHECK_OK(vgpu__send_msg_deferred(&tp, NULL, VGPU_MSG_RESP, 0, 1, body, 1, bulk, sizeof(bulk)));
	CHECK_OK(vgpu__tp_flush(&tp, NULL));
	CHECK(fake_deferred == 1 && fake_flushes == 1 && fake_sends == 0);
	/* no bulk: a plain send */
	CHECK_OK(vgpu__send_msg_deferred(&tp, NULL, VGPU_MSG_RESP, 0, 1, body, 1, NULL, 0));
	CHECK(fake_sends == 1 && fake_deferred == 1);
	/* a table from before the fields existed (smaller size): whatever
	 * lies beyond its end is not read */
	tp.size = offsetof(struct vgpu_transport_ops, send_deferred);
	fake_sends = fake_deferred = fake_flushes = 0;
	CHECK_OK(vgpu__send_msg_deferred(&tp, NULL, VGPU_MSG_RESP, 0, 1, body, 1, bulk, sizeof(bulk)));
	CHECK_OK(vgpu__tp_flush(&tp, NULL));
	CHECK(fake_sends == 1 && fake_deferred == 0 && fake_flushes == 0);
	/* one of the two missing: neither is used */
	tp.size = sizeof(tp);
	tp.flush = NULL;
	CHECK_OK(vgpu__send_msg_deferred(&tp, NULL, VGPU_MSG_RESP, 0, 1, body, 1, bulk, sizeof(bulk)));
	CHECK_OK(vgpu__tp_flush(&tp, NULL));
	CHECK(fake_sends == 2 && fake_deferred == 0);
	return 0;
}

/* ---- send batches: the chunks of a copy in few send calls ---- */

static uint8_t sb_stream[64 * 4096 + 4096];
static size_t sb_len;
static int sb_calls, sb_maxiov;

static size_t sb_starts[16]; /* where each call's bytes begin in sb_stream */

static vgpu_status sb_send(struct vgpu_tp_conn *c, const struct iovec *iov, int n)
{
	(void)c;
	if (sb_calls < 16)
		sb_starts[sb_calls] = sb_len;
	sb_calls++;
	if (n > sb_maxiov)
		sb_maxiov = n;
	for (int i = 0; i < n; i++) {
		if (sb_len + iov[i].iov_len > sizeof(sb_stream))
			return VGPU_ERR_INTERNAL;
		memcpy(sb_stream + sb_len, iov[i].iov_base, iov[i].iov_len);
		sb_len += iov[i].iov_len;
	}
	return VGPU_OK;
}

/* tp: a socket-like transport (no send_deferred) writing to sb_stream,
 * empty */
static void sb_open(struct vgpu_transport_ops *tp)
{
	memset(tp, 0, sizeof(*tp));
	tp->size = sizeof(*tp);
	tp->send = sb_send;
	sb_len = 0;
	sb_calls = sb_maxiov = 0;
}

/* The stream holds pre, then msgs messages of 3-byte bodies and 4096-byte
 * bulks numbered from 0, in order. */
static int sb_check(const char *pre, int msgs)
{
	size_t off = strlen(pre);

	CHECK(sb_len >= off && !memcmp(sb_stream, pre, off));
	for (int i = 0; i < msgs; i++) {
		struct vgpu_hdr h;

		CHECK(sb_len - off >= VGPU_PROTO_HDR + 3 + 4096);
		vgpu__hdr_decode(sb_stream + off, &h);
		CHECK_OK(vgpu__hdr_check(&h, 4096, "client"));
		CHECK(h.id == (uint64_t)i && h.body_len == 3 && h.bulk_len == 4096 &&
		      h.flags == (i == msgs - 1 ? VGPU_MSGF_LAST : VGPU_MSGF_NOREPLY));
		off += VGPU_PROTO_HDR;
		CHECK(sb_stream[off] == 0x93);
		off += 3;
		for (int k = 0; k < 4096; k += 512)
			CHECK(sb_stream[off + (size_t)k] == (uint8_t)(i + k));
		off += 4096;
	}
	CHECK(off == sb_len);
	return 0;
}

static int t_send_batch(void *d)
{
	static uint8_t bulk[20][4096];
	const char *pre = "coalesced requests";
	struct iovec piov = { (void *)pre, strlen(pre) };
	struct vgpu_transport_ops tp;
	struct vgpu_sbatch b;
	const uint8_t body[3] = { 0x93, 0, 0 };

	(void)d;
	for (int i = 0; i < 20; i++)
		for (int k = 0; k < 4096; k++)
			bulk[i][k] = (uint8_t)(i + k);
	/* a socket-like transport (no send_deferred): 7 messages a call,
	 * the prefix ahead of the first, never more than VGPU_TP_MAX_IOV */
	sb_open(&tp);
	vgpu__sbatch_init(&b, &tp, NULL, &piov, 1);
	for (int i = 0; i < 20; i++)
		CHECK_OK(vgpu__sbatch_add(&b, VGPU_MSG_REQ, i == 19 ? VGPU_MSGF_LAST : VGPU_MSGF_NOREPLY,
					  (uint64_t)i, body, sizeof(body), bulk[i], 4096, VGPU_BULK_ANYWHERE));
	CHECK(sb_calls == 2); /* 7 + 7 sent; 6 held */
	CHECK_OK(vgpu__sbatch_flush(&b));
	CHECK(sb_calls == 3 && sb_maxiov <= VGPU_TP_MAX_IOV);
	CHECK_OK(vgpu__sbatch_flush(&b)); /* nothing held: no call */
	CHECK(sb_calls == 3);
	CHECK_OK(sb_check(pre, 20));
	/* no prefix, one message */
	sb_len = 0;
	sb_calls = 0;
	vgpu__sbatch_init(&b, &tp, NULL, NULL, 0);
	CHECK_OK(vgpu__sbatch_add(&b, VGPU_MSG_REQ, VGPU_MSGF_LAST, 0, body, 3, bulk[0], 4096,
				  VGPU_BULK_ANYWHERE));
	CHECK_OK(vgpu__sbatch_flush(&b));
	CHECK(sb_calls == 1);
	CHECK_OK(sb_check("", 1));
	/* a body too large for the batch is refused, not truncated */
	{
		uint8_t big[VGPU_SBATCH_BODY + 1] = { 0 };

		vgpu__sbatch_init(&b, &tp, NULL, NULL, 0);
		CHECK(vgpu__sbatch_add(&b, VGPU_MSG_REQ, 0, 0, big, sizeof(big), NULL, 0, 0) ==
		      VGPU_ERR_INTERNAL);
	}
	/* a transport that keeps bulk in flight: one send_deferred per
	 * message, none held; the prefix rides with the first, sent whole */
	memset(&tp, 0, sizeof(tp));
	tp.size = sizeof(tp);
	tp.send = fake_send;
	tp.send_deferred = fake_send_deferred;
	tp.flush = fake_flush;
	fake_sends = fake_deferred = fake_flushes = 0;
	vgpu__sbatch_init(&b, &tp, NULL, &piov, 1);
	for (int i = 0; i < 5; i++)
		CHECK_OK(vgpu__sbatch_add(&b, VGPU_MSG_REQ, 0, (uint64_t)i, body, 3, bulk[i], 4096, 0));
	CHECK_OK(vgpu__sbatch_flush(&b));
	CHECK(fake_sends == 1 && fake_deferred == 4);
	return 0;
}

/*
 * Bulk alignment: with a destination address, each message's body is
 * padded with zero bytes (fewer than VGPU_PROTO_BULK_ALIGN) so that its
 * bulk starts, counted from the start of the send that carries it,
 * congruent to that address; the bytes are unchanged. vgpu__mp_padding
 * accepts what a receiver may find after the msgpack value: nothing, or
 * up to 63 zero bytes.
 */
static int t_send_batch_align(void *d)
{
	static uint8_t bulk[20][4096];
	const char *pre = "coalesced requests"; /* 18 bytes */
	struct iovec piov = { (void *)pre, strlen(pre) };
	struct vgpu_transport_ops tp;
	struct vgpu_sbatch b;
	const uint8_t body[3] = { 0x93, 0, 0 };
	size_t off;
	struct vgpu_mp m;
	uint8_t zeros[80] = { 0 };

	(void)d;
	for (int i = 0; i < 20; i++)
		for (int k = 0; k < 4096; k++)
			bulk[i][k] = (uint8_t)(i * 31 + k);
	sb_open(&tp);
	vgpu__sbatch_init(&b, &tp, NULL, &piov, 1);
	for (int i = 0; i < 20; i++) /* 7 to a call: 3 calls */
		CHECK_OK(vgpu__sbatch_add(&b, VGPU_MSG_REQ, 0, (uint64_t)i, body, sizeof(body),
					  bulk[i], 4096 - (size_t)i, 0x7f0000001000ull + (uint64_t)(i * 13)));
	CHECK_OK(vgpu__sbatch_flush(&b));
	CHECK(sb_calls == 3);
	off = strlen(pre);
	for (int i = 0; i < 20; i++) {
		struct vgpu_hdr h;
		size_t start = sb_starts[i / 7], pad;

		vgpu__hdr_decode(sb_stream + off, &h);
		CHECK_OK(vgpu__hdr_check(&h, 4096, "client"));
		CHECK(h.id == (uint64_t)i && h.bulk_len == 4096u - (unsigned)i);
		CHECK(h.body_len >= 3 && h.body_len < 3 + VGPU_PROTO_BULK_ALIGN);
		pad = h.body_len - 3;
		off += VGPU_PROTO_HDR;
		CHECK(sb_stream[off] == 0x93);
		vgpu__mp_init(&m, sb_stream + off + 3, pad);
		CHECK(vgpu__mp_padding(&m) == 0);
		off += h.body_len;
		CHECK(((off - start) & (VGPU_PROTO_BULK_ALIGN - 1)) == ((unsigned)(i * 13) & 63));
		CHECK(!memcmp(sb_stream + off, bulk[i], h.bulk_len));
		off += h.bulk_len;
	}
	CHECK(off == sb_len);
	/* what a receiver accepts after the value */
	vgpu__mp_init(&m, zeros, 0);
	CHECK(vgpu__mp_padding(&m) == 0);
	vgpu__mp_init(&m, zeros, 63);
	CHECK(vgpu__mp_padding(&m) == 0);
	vgpu__mp_init(&m, zeros, 64);
	CHECK(vgpu__mp_padding(&m) < 0);
	zeros[5] = 1;
	vgpu__mp_init(&m, zeros, 10);
	CHECK(vgpu__mp_padding(&m) < 0);
	return 0;
}

/* ---- deferred receives: bulk left landing until the flush ---- */

static uint8_t rd_src[512 * 1024];
static size_t rd_len, rd_off;
static int rd_recvs, rd_deferred, rd_flushes, rd_npend;
static struct {
	uint8_t *dst;
	size_t n, off;
} rd_pend[4];

static ssize_t rd_recv(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max)
{
	size_t n = rd_len - rd_off;

	(void)c;
	rd_recvs++;
	if (n < min || min == 0)
		return VGPU_ERR_CONNECTION;
	if (n > max)
		n = max;
	memcpy(buf, rd_src + rd_off, n);
	rd_off += n;
	return (ssize_t)n;
}

/* takes the bytes off the stream now, writes them at the flush */
static vgpu_status rd_recv_deferred(struct vgpu_tp_conn *c, void *buf, size_t n)
{
	(void)c;
	rd_deferred++;
	if (rd_len - rd_off < n || rd_npend == 4)
		return VGPU_ERR_CONNECTION;
	rd_pend[rd_npend].dst = buf;
	rd_pend[rd_npend].n = n;
	rd_pend[rd_npend++].off = rd_off;
	rd_off += n;
	return VGPU_OK;
}

static vgpu_status rd_recv_flush(struct vgpu_tp_conn *c)
{
	(void)c;
	rd_flushes++;
	for (int i = 0; i < rd_npend; i++)
		memcpy(rd_pend[i].dst, rd_src + rd_pend[i].off, rd_pend[i].n);
	rd_npend = 0;
	return VGPU_OK;
}

static int t_recv_deferred(void *d)
{
	static struct vgpu_rbuf rb;
	static uint8_t big[256 * 1024];
	struct vgpu_transport_ops tp;
	uint8_t head[100], mid[40], small[1024];
	int deferred = 0;
	size_t at;

	(void)d;
	/* the stream: 100 bytes, 256 KiB of bulk, 40 bytes, 1 KiB of bulk */
	for (size_t i = 0; i < sizeof(rd_src); i++)
		rd_src[i] = (uint8_t)(i * 7 + i / 251);
	rd_len = 100 + sizeof(big) + 40 + sizeof(small);
	rd_off = 0;
	rd_recvs = rd_deferred = rd_flushes = rd_npend = 0;
	memset(&tp, 0, sizeof(tp));
	tp.size = sizeof(tp);
	tp.recv = rd_recv;
	tp.recv_deferred = rd_recv_deferred;
	tp.recv_flush = rd_recv_flush;
	CHECK(vgpu__tp_can_defer_recv(&tp));
	memset(&rb, 0, sizeof(rb));
	rb.tp = &tp;
	CHECK_OK(vgpu__rbuf_read(&rb, head, sizeof(head)));
	CHECK(!memcmp(head, rd_src, sizeof(head)) && rd_recvs == 1);
	/* what was read ahead is copied at once; the rest is left landing */
	at = rb.len - rb.off;
	CHECK(at > 0 && at < sizeof(big));
	memset(big, 0, sizeof(big));
	CHECK_OK(vgpu__rbuf_read_deferred(&rb, big, sizeof(big), &deferred));
	CHECK(deferred == 1 && rd_deferred == 1 && rd_npend == 1);
	CHECK(!memcmp(big, rd_src + 100, at));
	CHECK(rd_pend[0].dst == big + at && rd_pend[0].n == sizeof(big) - at);
	CHECK(big[sizeof(big) - 1] == 0); /* not yet */
	/* the next bytes of the stream come after the deferred ones */
	CHECK_OK(vgpu__rbuf_read(&rb, mid, sizeof(mid)));
	CHECK(!memcmp(mid, rd_src + 100 + sizeof(big), sizeof(mid)));
	/* small bulk is received at once */
	deferred = 0;
	CHECK_OK(vgpu__rbuf_read_deferred(&rb, small, sizeof(small), &deferred));
	CHECK(deferred == 0 && rd_deferred == 1);
	CHECK(!memcmp(small, rd_src + 140 + sizeof(big), sizeof(small)));
	CHECK_OK(vgpu__tp_recv_flush(&tp, NULL));
	CHECK(rd_flushes == 1 && !memcmp(big, rd_src + 100, sizeof(big)));
	/* a table from before the fields (smaller size): a plain read, and
	 * the flush calls nothing */
	tp.size = offsetof(struct vgpu_transport_ops, recv_deferred);
	CHECK(!vgpu__tp_can_defer_recv(&tp));
	rd_off = 0;
	rd_recvs = rd_deferred = rd_flushes = 0;
	memset(&rb, 0, sizeof(rb));
	rb.tp = &tp;
	memset(big, 0, sizeof(big));
	deferred = 0;
	CHECK_OK(vgpu__rbuf_read(&rb, head, 1)); /* reads 128 KiB ahead */
	CHECK_OK(vgpu__rbuf_read(&rb, head, 99));
	CHECK_OK(vgpu__rbuf_read_deferred(&rb, big, sizeof(big), &deferred));
	CHECK(deferred == 0 && rd_deferred == 0 && !memcmp(big, rd_src + 100, sizeof(big)));
	CHECK_OK(vgpu__tp_recv_flush(&tp, NULL));
	CHECK(rd_flushes == 0);
	/* one of the two missing: neither is used */
	tp.size = sizeof(tp);
	tp.recv_flush = NULL;
	CHECK(!vgpu__tp_can_defer_recv(&tp));
	return 0;
}

/* ---- a dtoh reply received by one scatter receive ---- */

static size_t rs_first;     /* bytes the scatter receive delivers, at most */
static uint8_t *rs_last_buf; /* rd_recv's last buffer */
static int rs_calls;

static ssize_t rs_send_recvv(struct vgpu_tp_conn *c, const struct iovec *iov, int n,
			     const struct iovec *riov, int rn, size_t min)
{
	size_t k = rd_len - rd_off, got = 0;

	(void)c, (void)iov, (void)n;
	rs_calls++;
	if (k > rs_first)
		k = rs_first;
	if (k < min || min == 0 || min > riov[0].iov_len)
		return VGPU_ERR_CONNECTION;
	for (int i = 0; i < rn && got < k; i++) {
		size_t m = k - got < riov[i].iov_len ? k - got : riov[i].iov_len;
		memcpy(riov[i].iov_base, rd_src + rd_off + got, m);
		got += m;
	}
	rd_off += got;
	return (ssize_t)got;
}

static ssize_t rs_recv(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max)
{
	rs_last_buf = buf;
	return rd_recv(c, buf, min, max);
}

/* rd_src = a frame (header, body of blen bytes, bulk of n bytes from pat),
 * then tail bytes; returns where the bulk starts */
static size_t rs_stream(int64_t status, size_t blen, size_t n, size_t tail)
{
	struct vgpu_hdr h = { VGPU_PROTO_MAGIC, VGPU_PROTO_VERSION, VGPU_MSG_RESP, 0,
			      (uint32_t)blen, 77, n };
	uint8_t *b = rd_src + VGPU_PROTO_HDR;

	vgpu__hdr_encode(rd_src, &h);
	memset(b, 0, blen);
	if (status == 0) { /* [0, "", 0] and padding */
		b[0] = 0x93, b[1] = 0x00, b[2] = 0xa0, b[3] = 0x00;
	} else { /* [-5, a str8 of blen - 4 'x' bytes] */
		b[0] = 0x92, b[1] = 0xfb, b[2] = 0xd9, b[3] = (uint8_t)(blen - 4);
		memset(b + 4, 'x', blen - 4);
	}
	for (size_t i = 0; i < n + tail; i++)
		rd_src[VGPU_PROTO_HDR + blen + i] = (uint8_t)(i * 13 + i / 253 + 1);
	rd_len = VGPU_PROTO_HDR + blen + n + tail;
	rd_off = 0;
	rd_recvs = rs_calls = 0;
	rs_last_buf = NULL;
	return VGPU_PROTO_HDR + blen;
}

static int t_scatter_reply(void *d)
{
	static struct vgpu_rbuf rb;
	static uint8_t mem[64 * 1024 + 256] __attribute__((aligned(64)));
	uint8_t *dst = mem + 16, body[VGPU_PROTO_MAX_BODY];
	struct vgpu_transport_ops tp;
	struct vgpu_hdr h;
	const size_t n = 64 * 1024;
	size_t prefix = vgpu__dtoh_reply_prefix((uintptr_t)dst), at;
	struct iovec req = { body, 1 };

	(void)d;
	memset(&tp, 0, sizeof(tp));
	tp.size = sizeof(tp);
	tp.recv = rs_recv;
	tp.send_recvv = rs_send_recvv;
	CHECK(vgpu__tp_has_send_recvv(&tp) && !vgpu__tp_has_send_recv(&tp));
	tp.size = offsetof(struct vgpu_transport_ops, send_recvv); /* an older table */
	CHECK(!vgpu__tp_has_send_recvv(&tp));
	tp.size = sizeof(tp);
	/* the prefix: header, 4 bytes of body, then padding to the address */
	CHECK(prefix == 80 && vgpu__dtoh_reply_prefix(36) == 36 &&
	      vgpu__dtoh_reply_prefix(35) == 99 && vgpu__dtoh_reply_prefix(0) == 64);
	memset(&rb, 0, sizeof(rb));
	rb.tp = &tp;

	/* 1. the predicted shape, all of it in the one call: the bulk lands
	 * in place and is read there, with no other receive */
	at = rs_stream(0, prefix - VGPU_PROTO_HDR, n, 0);
	rs_first = SIZE_MAX;
	memset(mem, 0, sizeof(mem));
	CHECK_OK(vgpu__rbuf_send_fill_to(&rb, &req, 1, prefix, dst, n));
	CHECK(rb.len == prefix && rb.land == dst && rb.land_len == n);
	CHECK_OK(vgpu__rbuf_frame(&rb, &h, body, 1 << 20, "test"));
	CHECK(h.bulk_len == n && h.body_len == prefix - VGPU_PROTO_HDR && rb.off == rb.len);
	CHECK_OK(vgpu__rbuf_read(&rb, dst, n));
	CHECK(!memcmp(dst, rd_src + at, n) && rb.land_len == 0 && rd_recvs == 0 && rs_calls == 1);
	CHECK(mem[15] == 0 && mem[16 + n] == 0); /* nothing outside dst */

	/* 2. the same, the call returning early: the rest of the bulk is
	 * received straight after what landed */
	at = rs_stream(0, prefix - VGPU_PROTO_HDR, n, 0);
	rs_first = prefix + 1000;
	memset(mem, 0, sizeof(mem));
	CHECK_OK(vgpu__rbuf_send_fill_to(&rb, &req, 1, prefix, dst, n));
	CHECK(rb.land_len == 1000);
	CHECK_OK(vgpu__rbuf_frame(&rb, &h, body, 1 << 20, "test"));
	CHECK_OK(vgpu__rbuf_read(&rb, dst, n));
	CHECK(!memcmp(dst, rd_src + at, n) && rd_recvs == 1 && rs_last_buf == dst + 1000);

	/* 3. fewer bytes than the prefix: nothing lands */
	rs_stream(0, prefix - VGPU_PROTO_HDR, n, 0);
	rs_first = 40;
	CHECK_OK(vgpu__rbuf_send_fill_to(&rb, &req, 1, prefix, dst, n));
	CHECK(rb.len == 40 && rb.land_len == 0);
	rs_first = SIZE_MAX;
	memset(&rb, 0, sizeof(rb));
	rb.tp = &tp;

	/* 4. a longer body than predicted (another server's padding): what
	 * landed goes back into the buffer, and the reply reads as usual */
	at = rs_stream(0, prefix - VGPU_PROTO_HDR + 8, n, 0);
	memset(mem, 0, sizeof(mem));
	CHECK_OK(vgpu__rbuf_send_fill_to(&rb, &req, 1, prefix, dst, n));
	CHECK(rb.land_len == n);
	CHECK_OK(vgpu__rbuf_frame(&rb, &h, body, 1 << 20, "test"));
	CHECK(h.body_len == prefix - VGPU_PROTO_HDR + 8 && rb.land_len == 0);
	CHECK_OK(vgpu__rbuf_read(&rb, dst, n));
	CHECK(!memcmp(dst, rd_src + at, n) && rd_recvs == 1); /* its last 8 bytes */

	/* 5. a shorter one (no padding), with its bulk partly in the buffer:
	 * the client moves what landed back before it reads the bulk */
	at = rs_stream(0, 4, n, 0);
	CHECK_OK(vgpu__rbuf_send_fill_to(&rb, &req, 1, prefix, dst, n));
	CHECK_OK(vgpu__rbuf_frame(&rb, &h, body, 1 << 20, "test"));
	CHECK(rb.off < rb.len && rb.land_len == n - (prefix - at));
	vgpu__rbuf_unland(&rb); /* read_one: dst is not where the stream is */
	CHECK(rb.land_len == 0 && rb.len - rb.off == n);
	CHECK_OK(vgpu__rbuf_read(&rb, dst, n));
	CHECK(!memcmp(dst, rd_src + at, n));

	/* 6. an error with a message longer than the prefix, then another
	 * frame: the message is read whole, the next frame after it */
	at = rs_stream(-5, 4 + 200, 0, 100);
	CHECK_OK(vgpu__rbuf_send_fill_to(&rb, &req, 1, prefix, dst, n));
	CHECK(rb.land_len == rd_len - prefix);
	CHECK_OK(vgpu__rbuf_frame(&rb, &h, body, 1 << 20, "test"));
	CHECK(h.body_len == 204 && h.bulk_len == 0 && body[3] == 200 && body[203] == 'x');
	{
		uint8_t tail[100];

		CHECK_OK(vgpu__rbuf_read(&rb, tail, sizeof(tail)));
		CHECK(!memcmp(tail, rd_src + at, sizeof(tail)) && rd_recvs == 0);
	}

	/* what does not fit the buffer is refused */
	CHECK(vgpu__rbuf_send_fill_to(&rb, &req, 1, prefix, dst, sizeof(rb.buf)) ==
	      VGPU_ERR_INTERNAL);
	return 0;
}

int main(void)
{
	vt_run("header", t_header, NULL);
	vt_run("msgpack_roundtrip", t_roundtrip, NULL);
	vt_run("msgpack_hostile", t_hostile, NULL);
	vt_run("hmac", t_hmac, NULL);
	vt_run("deferred_optional", t_deferred_optional, NULL);
	vt_run("send_batch", t_send_batch, NULL);
	vt_run("send_batch_align", t_send_batch_align, NULL);
	vt_run("recv_deferred", t_recv_deferred, NULL);
	vt_run("scatter_reply", t_scatter_reply, NULL);
	vt_run("echo_tcp", t_echo_tcp, NULL);
	vt_run("echo_unix", t_echo_unix, NULL);
	vt_run("echo_uring", t_echo_uring, NULL);
	vt_run("send_recv_timeout_uring", t_send_recv_timeout_uring, NULL);
	vt_run("connect_refused", t_refused, NULL);
	return vt_finish();
}
