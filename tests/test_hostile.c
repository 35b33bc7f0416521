/* SPDX-License-Identifier: MIT */
/*
 * test_hostile.c - isolation between tenants of one server, attacked by
 * clients that choose every id and address on the wire themselves (the
 * remote door's raw ops, which encode exactly what they are given, and raw
 * frames on a socket): forged and replayed handle ids, another session's
 * ids and device addresses (whole, interior, straddling), frees of foreign
 * memory, copies between sessions, launches of the attacker's own kernel
 * with pointers into the victim's memory, and quota evasion through many
 * sessions of one tenant (max_sessions) and many small allocations (the
 * device's memory). Every attempt must be refused and the victim's data
 * checksums unchanged. The server runs in this process on 127.0.0.1 with an
 * ephemeral port.
 *
 * Not covered here: a per-tenant memory quota (the mem-quota plugin is not
 * in this tree yet), so "many small allocations" is bounded by the device's
 * memory only.
 */
#include "config.h"

#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "door.h"
#include "proto.h"
#include "remote.h"
#include "test.h"
#include "transport.h"
#include "uri.h"
#include "vgpu/server.h"

#define NBUF 4
#define BUFSZ 65536
#define MAX_SESSIONS 6

static vgpu_server *srv;
static char base[300];
static char base_uring[300]; /* "" when io_uring is not available */

struct victim {
	vgpu_t *v;
	vgpu_dptr p[NBUF];
	uint64_t sum[NBUF];
	uint32_t sid, eid, mid, fid;
};
static struct victim V;

static void uri_of(char *out, size_t n, const char *tenant, const char *extra)
{
	snprintf(out, n, "%s/0?tenant=%s%s", base, tenant, extra ? extra : "");
}

static vgpu_status open_as(vgpu_t **v, const char *tenant, const char *extra)
{
	char u[400];

	uri_of(u, sizeof(u), tenant, extra);
	return vgpu_open(v, u);
}

/* The victim's buffers still hold exactly what it wrote. */
static int victim_intact(void)
{
	static uint8_t buf[BUFSZ];

	for (int i = 0; i < NBUF; i++) {
		CHECK_OK(vgpu_memcpy_dtoh(V.v, buf, V.p[i], BUFSZ, NULL));
		if (vt_hash(buf, BUFSZ) != V.sum[i]) {
			fprintf(stderr, "  victim buffer %d changed\n", i);
			return VT_FAIL;
		}
	}
	return 0;
}

static int victim_setup(void)
{
	static uint8_t buf[BUFSZ];
	vgpu_module *m;
	vgpu_function *f;

	CHECK_OK(open_as(&V.v, "victim", NULL));
	for (int i = 0; i < NBUF; i++) {
		vt_fill(buf, BUFSZ, 1000 + (uint64_t)i);
		V.sum[i] = vt_hash(buf, BUFSZ);
		CHECK_OK(vgpu_mem_alloc(V.v, BUFSZ, &V.p[i]));
		CHECK_OK(vgpu_memcpy_htod(V.v, V.p[i], buf, BUFSZ, NULL));
	}
	CHECK_OK(V.v->ops->stream_create(V.v, 0, &V.sid));
	CHECK_OK(V.v->ops->event_create(V.v, 0, &V.eid));
	CHECK_OK(vt_module_load(V.v, "test_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "fill_u32", &f));
	/* the victim's raw module and function ids, as a spy would guess them */
	V.mid = 1;
	V.fid = 1;
	return victim_intact();
}

/* Ids of the victim, and forged ones, named by another tenant. */
static int t_foreign_ids(void *d)
{
	vgpu_t *A;
	uint32_t x;
	float ms;
	static const uint32_t forged[] = { 0, 1, 2, 3, 7, 64, 255, 256, 65535, 65536, 0x7fffffff,
					   0x80000000u, 0xfffffffeu, 0xffffffffu };

	CHECK_OK(open_as(&A, "mallory", NULL));
	for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
		uint32_t id = forged[i];

		if (id) { /* 0 is the null stream: each session's own */
			CHECK(A->ops->stream_sync(A, id) < 0);
			CHECK(A->ops->stream_query(A, id) < 0);
			CHECK(A->ops->stream_destroy(A, id) < 0);
			/* asynchronous: refused at the next synchronisation */
			if (A->ops->stream_wait_event(A, id, V.eid) == VGPU_OK)
				CHECK(A->ops->synchronize(A) < 0);
		}
		CHECK(A->ops->event_sync(A, id) < 0);
		CHECK(A->ops->event_query(A, id) < 0);
		if (A->ops->event_record(A, id, 0) == VGPU_OK)
			CHECK(A->ops->synchronize(A) < 0);
		CHECK(A->ops->event_elapsed(A, id, V.eid, &ms) < 0);
		CHECK(A->ops->event_destroy(A, id) < 0);
		CHECK(A->ops->module_unload(A, id) < 0);
		CHECK(A->ops->function(A, id, "fill_u32", &x) < 0);
		{
			vgpu_arg args[] = { vgpu_arg_dptr(V.p[0]), vgpu_arg_u32(0), vgpu_arg_u64(16) };

			CHECK(A->ops->launch(A, id, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, 0,
					     args, 3) < 0);
		}
	}
	/* the victim's stream and event still work */
	CHECK_OK(V.v->ops->event_record(V.v, V.eid, V.sid));
	CHECK_OK(V.v->ops->stream_sync(V.v, V.sid));
	vgpu_close(A);
	return victim_intact();
}

/* Replayed ids: an id the attacker held and released, and the victim's
 * released ones, are dead for everyone. */
static int t_replayed_ids(void *d)
{
	vgpu_t *A;
	uint32_t s, e, vs;
	vgpu_dptr p, vp;

	CHECK_OK(open_as(&A, "mallory", NULL));
	CHECK_OK(A->ops->stream_create(A, 0, &s));
	CHECK_OK(A->ops->event_create(A, 0, &e));
	CHECK_OK(A->ops->mem_alloc(A, 4096, &p));
	CHECK_OK(A->ops->stream_destroy(A, s));
	CHECK_OK(A->ops->event_destroy(A, e));
	CHECK_OK(A->ops->mem_free(A, p));
	CHECK(A->ops->stream_sync(A, s) < 0);
	CHECK(A->ops->stream_destroy(A, s) < 0);
	CHECK(A->ops->event_destroy(A, e) < 0);
	CHECK(A->ops->mem_free(A, p) < 0);
	CHECK(A->ops->memset(A, 0, p, 0xee, 4096) < 0);
	/* the victim allocates and frees: its old address stays foreign to A */
	CHECK_OK(V.v->ops->stream_create(V.v, 0, &vs));
	CHECK_OK(vgpu_mem_alloc(V.v, 4096, &vp));
	CHECK_OK(vgpu_mem_free(V.v, vp));
	CHECK_OK(V.v->ops->stream_destroy(V.v, vs));
	CHECK(A->ops->memset(A, 0, vp, 0xee, 4096) < 0);
	CHECK(A->ops->mem_free(A, vp) < 0);
	CHECK(A->ops->stream_sync(A, vs) < 0);
	vgpu_close(A);
	return victim_intact();
}

/* The victim's device addresses: whole, interior, straddling, copies. */
static int t_foreign_memory(void *d)
{
	vgpu_t *A;
	vgpu_dptr mine;
	static uint8_t buf[BUFSZ];

	CHECK_OK(open_as(&A, "mallory", NULL));
	CHECK_OK(vgpu_mem_alloc(A, BUFSZ, &mine));
	for (int i = 0; i < NBUF; i++) {
		/* (not V.p[i] + BUFSZ: the next allocation may start there, A's own) */
		vgpu_dptr at[] = { V.p[i], V.p[i] + 8, V.p[i] + BUFSZ - 8 };

		for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
			memset(buf, 0, 64);
			CHECK(vgpu_memcpy_dtoh(A, buf, at[k], 8, NULL) < 0);
			CHECK(!memcmp(buf, "\0\0\0\0\0\0\0\0", 8));
			CHECK(vgpu_memcpy_htod(A, at[k], buf, 8, NULL) < 0);
			CHECK(vgpu_memset(A, at[k], 0, 8, NULL) < 0);
			CHECK(vgpu_mem_free(A, at[k]) < 0);
			/* device to device, in both directions */
			CHECK(A->ops->memcpy_dtod(A, 0, mine, at[k], 8) < 0);
			CHECK(A->ops->memcpy_dtod(A, 0, at[k], mine, 8) < 0);
		}
	}
	/* its own buffer, with a length that runs past the end */
	CHECK(vgpu_memcpy_dtoh(A, buf, mine, BUFSZ + 1, NULL) < 0);
	CHECK(vgpu_memset(A, mine, 0, (size_t)-1, NULL) < 0);
	CHECK(A->ops->memcpy_dtod(A, 0, mine, mine + 16, BUFSZ) < 0);
	/* async forms: refused at the stream's next sync */
	{
		uint32_t s;

		CHECK_OK(A->ops->stream_create(A, 0, &s));
		/* refused when queued, or at the stream's sync */
		if (A->ops->memset(A, s, V.p[0], 0, 64) == VGPU_OK)
			CHECK(A->ops->stream_sync(A, s) < 0);
		if (A->ops->memcpy_dtod(A, s, mine, V.p[1], 64) == VGPU_OK)
			CHECK(A->ops->stream_sync(A, s) < 0);
		CHECK_OK(A->ops->stream_sync(A, s)); /* each error once */
	}
	/* the copy into A's buffer must not have carried the victim's bytes */
	CHECK_OK(vgpu_memcpy_dtoh(A, buf, mine, 64, NULL));
	vgpu_close(A);
	return victim_intact();
}

/* The attacker's own kernel, given pointers into the victim's memory. */
static int t_foreign_launch(void *d)
{
	vgpu_t *A;
	vgpu_module *m;
	vgpu_function *f;
	vgpu_dptr mine;
	uint32_t fid;

	CHECK_OK(open_as(&A, "mallory", NULL));
	CHECK_OK(vt_module_load(A, "test_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "fill_u32", &f));
	CHECK_OK(A->ops->function(A, 1, "fill_u32", &fid));
	CHECK_OK(vgpu_mem_alloc(A, 4096, &mine));
	for (int i = 0; i < NBUF; i++) {
		vgpu_dptr at[] = { V.p[i], V.p[i] + 4, V.p[i] + BUFSZ - 4 };

		for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
			vgpu_arg args[] = { vgpu_arg_dptr(at[k]), vgpu_arg_u32(0xdeadbeef), vgpu_arg_u64(1) };
			vgpu_status st = A->ops->launch(A, fid, vgpu_dim3_make(1, 1, 1),
							vgpu_dim3_make(1, 1, 1), 0, 0, args, 3);

			if (st >= 0)
				st = A->ops->synchronize(A);
			CHECK(st < 0);
		}
	}
	/* its own buffer works */
	{
		vgpu_arg args[] = { vgpu_arg_dptr(mine), vgpu_arg_u32(7), vgpu_arg_u64(16) };

		CHECK_OK(A->ops->launch(A, fid, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, 0,
					args, 3));
		CHECK_OK(A->ops->synchronize(A));
	}
	vgpu_close(A);
	return victim_intact();
}

/* Raw frames: a request naming the victim's address and ids, sent on a
 * socket with no client library in between. */
static int raw_req(struct vgpu_tp_conn *c, struct vgpu_rbuf *rb, uint64_t id, uint32_t op,
		   const uint64_t *args, int nargs, int64_t *status)
{
	uint8_t b[256];
	static uint8_t body[VGPU_PROTO_MAX_BODY];
	struct vgpu_wbuf w;
	struct vgpu_hdr h;
	struct vgpu_mp m;
	uint32_t n;

	vgpu__wbuf_init(&w, b, sizeof(b));
	msgpack_pack_array(&w.pk, 1 + (uint32_t)nargs);
	msgpack_pack_uint32(&w.pk, op);
	for (int i = 0; i < nargs; i++)
		msgpack_pack_uint64(&w.pk, args[i]);
	CHECK(vgpu__send_msg(&vgpu__transport_tcp, c, VGPU_MSG_REQ, 0, id, w.buf, w.len, NULL, 0) == 0);
	CHECK(vgpu__rbuf_frame(rb, &h, body, VGPU_PROTO_MAX_BULK, "server") == 0);
	CHECK(h.id == id);
	vgpu__mp_init(&m, body, h.body_len);
	CHECK(vgpu__mp_array(&m, &n) == 0 && vgpu__mp_i64(&m, status) == 0);
	if (h.bulk_len)
		CHECK(vgpu__rbuf_discard(rb, h.bulk_len) == 0);
	return 0;
}

static int t_raw_frames(void *d)
{
	struct vgpu_uri u;
	struct vgpu_tp_conn *c;
	static struct vgpu_rbuf rb;
	static uint8_t body[VGPU_PROTO_MAX_BODY];
	struct vgpu_hdr h;
	uint8_t b[256];
	struct vgpu_wbuf w;
	int64_t st;
	uint64_t id = 10;

	CHECK(vgpu__uri_parse(base, &u) == 0);
	{
		struct vgpu_tp_addr a;

		vgpu__tp_addr(&u, &a);
		CHECK(vgpu__transport_tcp.connect(&a, 2000, &c) == 0);
	}
	vgpu__transport_tcp.set_timeout(c, 10000);
	rb.tp = &vgpu__transport_tcp;
	rb.c = c;
	rb.off = rb.len = 0;
	CHECK(vgpu__rbuf_frame(&rb, &h, body, 0, "server") == 0 && h.type == VGPU_MSG_HELLO);
	/* claims to be the victim's tenant: with no secrets configured that is
	 * a name, not an identity; it still gets a session of its own */
	vgpu__wbuf_init(&w, b, sizeof(b));
	msgpack_pack_array(&w.pk, 5);
	msgpack_pack_uint32(&w.pk, VGPU_OP_HELLO);
	msgpack_pack_str_with_body(&w.pk, "victim", 6);
	msgpack_pack_nil(&w.pk);
	msgpack_pack_int(&w.pk, 0);
	msgpack_pack_array(&w.pk, 0);
	CHECK(vgpu__send_msg(&vgpu__transport_tcp, c, VGPU_MSG_REQ, 0, 1, w.buf, w.len, NULL, 0) == 0);
	CHECK(vgpu__rbuf_frame(&rb, &h, body, 0, "server") == 0 && body[1] == 0);
	for (int i = 0; i < NBUF; i++) {
		uint64_t a[][4] = { { V.p[i] }, { 0, V.p[i], 4096 }, { 0, V.p[i], 0, 4096 } };

		CHECK(raw_req(c, &rb, id++, VGPU_OP_MEM_FREE, a[0], 1, &st) == 0 && st < 0);
		CHECK(raw_req(c, &rb, id++, VGPU_OP_DTOH, a[1], 3, &st) == 0 && st < 0);
		CHECK(raw_req(c, &rb, id++, VGPU_OP_MEMSET, a[2], 4, &st) == 0 && st < 0);
	}
	{
		uint64_t a[] = { V.sid };
		uint64_t e[] = { V.eid };
		uint64_t f[] = { V.fid, 0, 1, 1, 1, 1, 1, 1, 0 };

		CHECK(raw_req(c, &rb, id++, VGPU_OP_STREAM_DESTROY, a, 1, &st) == 0 && st < 0);
		CHECK(raw_req(c, &rb, id++, VGPU_OP_EVENT_DESTROY, e, 1, &st) == 0 && st < 0);
		CHECK(raw_req(c, &rb, id++, VGPU_OP_MODULE_UNLOAD, e, 1, &st) == 0 && st < 0);
		(void)f;
	}
	vgpu__transport_tcp.close(c);
	return victim_intact();
}

/* A client that sends half a frame and stalls holds up no one else, and is
 * closed once the server's frame deadline passes. */
static int t_stalled_frame(void *d)
{
	const struct vgpu_transport_ops *tp = d ? d : &vgpu__transport_tcp;
	struct vgpu_uri u;
	struct vgpu_tp_conn *c[2];
	static struct vgpu_rbuf rb;
	static uint8_t body[VGPU_PROTO_MAX_BODY];
	struct vgpu_hdr h = { VGPU_PROTO_MAGIC, VGPU_PROTO_VERSION, VGPU_MSG_REQ, 0, 40, 1, 0 };
	uint8_t raw[VGPU_PROTO_HDR + 8], x;
	double t0;
	struct timespec ts;

	CHECK(vgpu__uri_parse(tp == &vgpu__transport_tcp ? base : base_uring, &u) == 0);
	vgpu__hdr_encode(raw, &h);
	memset(raw + VGPU_PROTO_HDR, 0x90, 8);
	for (int i = 0; i < 2; i++) {
		/* 0: 12 bytes of a header; 1: a header and 8 of its 40 body bytes */
		struct iovec iov = { raw, i ? sizeof(raw) : 12 };
		struct vgpu_tp_addr a;

		vgpu__tp_addr(&u, &a);
		CHECK(tp->connect(&a, 2000, &c[i]) == 0);
		tp->set_timeout(c[i], 10000);
		rb.tp = tp;
		rb.c = c[i];
		rb.off = rb.len = 0;
		CHECK(vgpu__rbuf_frame(&rb, &h, body, 0, "server") == 0);
		{
			uint8_t b[128];
			struct vgpu_wbuf w;

			vgpu__wbuf_init(&w, b, sizeof(b));
			msgpack_pack_array(&w.pk, 5);
			msgpack_pack_uint32(&w.pk, VGPU_OP_HELLO);
			msgpack_pack_str_with_body(&w.pk, "staller", 7);
			msgpack_pack_nil(&w.pk);
			msgpack_pack_int(&w.pk, 0);
			msgpack_pack_array(&w.pk, 0);
			CHECK(vgpu__send_msg(tp, c[i], VGPU_MSG_REQ, 0, 1, w.buf, w.len,
					     NULL, 0) == 0);
			CHECK(vgpu__rbuf_frame(&rb, &h, body, 0, "server") == 0 && body[1] == 0);
		}
		CHECK(tp->send(c[i], &iov, 1) == 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t0 = (double)ts.tv_sec + ts.tv_nsec / 1e9;
	/* meanwhile the victim is served at once */
	CHECK_OK(victim_intact());
	clock_gettime(CLOCK_MONOTONIC, &ts);
	CHECK((double)ts.tv_sec + ts.tv_nsec / 1e9 - t0 < 0.4);
	/* both stallers are cut off after the deadline (500 ms here) */
	for (int i = 0; i < 2; i++) {
		vgpu_status st = tp->recv(c[i], &x, 1, 1);

		CHECK(st == VGPU_ERR_CONNECTION);
		tp->close(c[i]);
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	CHECK((double)ts.tv_sec + ts.tv_nsec / 1e9 - t0 < 5);
	return victim_intact();
}

/*
 * A client idle far past the frame timeout (500 ms) between calls is not
 * a stalled frame: over uring, vgpud's reader waits for the next request
 * in the same transport call that sends the last reply (send_recv with the
 * frame timeout), which times out again and again meanwhile.
 */
static int t_idle_client(void *d)
{
	const char *b = d;
	static uint8_t out[4096], in[4096];
	char u[400];
	vgpu_t *v;
	vgpu_dptr p;

	snprintf(u, sizeof(u), "%s/0?tenant=idler", b);
	CHECK_OK(vgpu_open(&v, u));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(out), &p));
	for (int round = 0; round < 3; round++) {
		vt_fill(out, sizeof(out), 70 + (uint64_t)round);
		CHECK_OK(vgpu_memcpy_htod(v, p, out, 64, NULL));
		CHECK_OK(vgpu_memcpy_htod(v, p, out, sizeof(out), NULL));
		usleep(1300000); /* the reply went out; the wait times out twice */
		memset(in, 0, sizeof(in));
		CHECK_OK(vgpu_memcpy_dtoh(v, in, p, sizeof(in), NULL));
		CHECK(!memcmp(in, out, sizeof(in)));
	}
	CHECK_OK(vgpu_mem_free(v, p));
	vgpu_close(v);
	return victim_intact();
}

/* One tenant opening many sessions hits max_sessions (BUSY, no queue);
 * the device's memory bounds many small allocations; both release fully. */
static int t_quota(void *d)
{
	vgpu_t *s[MAX_SESSIONS + 2];
	int n = 0, refused = 0;
	uint64_t sessions0, mem0, sessions = 0, mem = 0, allocs;
	vgpu_dptr p;
	size_t count = 0;
	vgpu_status st;

	CHECK_OK(vgpu__remote_server_stats(V.v, &sessions0, &mem0, &allocs));
	for (int i = 0; i < MAX_SESSIONS + 2; i++) {
		st = open_as(&s[n], "greedy", NULL);
		if (st == VGPU_OK)
			n++;
		else
			refused++;
	}
	CHECK(refused >= 2);
	CHECK(n + (int)sessions0 <= MAX_SESSIONS);
	/* many small allocations: stop at the device's memory, with an error */
	if (n) {
		while ((st = vgpu_mem_alloc(s[0], 1 << 20, &p)) == VGPU_OK && count < 100000)
			count++;
		CHECK_ST(st, VGPU_ERR_OUT_OF_MEMORY);
		CHECK(count > 0 && count <= 1024); /* a 1 GiB device, minus the victim's */
	}
	CHECK_OK(victim_intact());
	for (int i = 0; i < n; i++)
		vgpu_close(s[i]);
	/* everything the greedy tenant held is released */
	for (int i = 0; i < 100; i++) {
		CHECK_OK(vgpu__remote_server_stats(V.v, &sessions, &mem, &allocs));
		if (sessions == sessions0 && mem == mem0)
			break;
		usleep(20000);
	}
	CHECK(sessions == sessions0 && mem == mem0);
	return 0;
}

int main(void)
{
	struct vgpu_server_opts o = VGPU_SERVER_OPTS_INIT;
	int rc;

	alarm(120);
	o.flags = VGPU_SERVER_ALLOW_NATIVE_MODULES;
	o.max_sessions = MAX_SESSIONS;
	o.admit_queue = -1;
	o.frame_timeout_ms = 500;
	if (vgpu_server_create(&srv, &o) < 0 ||
	    vgpu_server_listen(srv, "tcp://127.0.0.1:0", base, sizeof(base)) < 0 ||
	    vgpu_server_start(srv) < 0) {
		fprintf(stderr, "server: %s\n", vgpu_last_error());
		return 1;
	}
	/*
	 * The uring cases run in the plain and sanitizer builds, not under
	 * valgrind (make check-valgrind sets VGPU_TEST_VALGRIND): valgrind
	 * 3.19 runs io_uring_enter as a non-blocking system call, holding its
	 * one big lock, so a thread waiting in the ring stops every other
	 * thread of the process (here: the server's reader waits, the client
	 * that would answer it cannot run, and both time out).
	 */
	if (getenv("VGPU_TEST_VALGRIND") ||
	    vgpu_server_listen(srv, "uring://127.0.0.1:0", base_uring, sizeof(base_uring)) < 0)
		base_uring[0] = 0; /* no io_uring here: its cases are not run */
	if (victim_setup()) {
		fprintf(stderr, "victim setup failed: %s\n", vgpu_last_error());
		return 1;
	}
	vt_run("foreign_and_forged_ids", t_foreign_ids, NULL);
	vt_run("replayed_ids", t_replayed_ids, NULL);
	vt_run("foreign_memory", t_foreign_memory, NULL);
	vt_run("launch_with_foreign_pointers", t_foreign_launch, NULL);
	vt_run("raw_frames", t_raw_frames, NULL);
	vt_run("quota_evasion", t_quota, NULL);
	vt_run("stalled_half_frame", t_stalled_frame, NULL);
	vt_run("idle_client", t_idle_client, base);
	if (base_uring[0]) {
		vt_run("stalled_half_frame_uring", t_stalled_frame, (void *)&vgpu__transport_uring);
		vt_run("idle_client_uring", t_idle_client, base_uring);
	}
	vgpu_close(V.v);
	vgpu_server_destroy(srv);
	rc = vt_finish();
	return rc;
}
