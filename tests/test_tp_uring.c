/* SPDX-License-Identifier: MIT */
/*
 * test_tp_uring.c - the uring transport through its ops table, no protocol
 * above it, on sockets with small buffers (sndbuf=32K&rcvbuf=32K: the kernel makes
 * each 64 KiB) so that a send of 100 KiB or more must wait for the peer to
 * read. (With buffers much smaller than loopback's 64 KiB segments, TCP
 * itself stalls for 200 ms at a time.)
 *
 *   fused_reply_blocked    vgpud's reader: send_recv of a 120 KiB reply
 *                          (and of a 6000-byte one, and of a two-segment
 *                          one) and the receive of the next request, on
 *                          its owned ring, while the client reads the
 *                          reply 4 KiB at a time and only then sends the
 *                          next request. The send is retried by task work
 *                          each time the client makes room; the call must
 *                          see it through, not wait for the next request
 *                          first (which never comes: the client waits for
 *                          the rest of the reply).
 *   fused_request_blocked  the client: send_recv of a 120 KiB request to a
 *                          server that reads it 4 KiB at a time, then
 *                          answers
 *   reply_timeout          send_recv with a timeout and no answer:
 *                          VGPU_ERR_TIMEOUT, the request delivered whole,
 *                          and a later recv gets the late answer
 *   scatter_reply          send_recvv: a 100 KiB answer received into three
 *                          segments in order, arriving in pieces; a short
 *                          answer; bad arguments refused
 *   bad_sockbuf            sndbuf=lots, rcvbuf=2G, VGPU_TCP_SNDBUF=-1:
 *                          listen and connect refuse them, naming them
 *
 * test_tp_uring.sh runs it with owned (DEFER_TASKRUN) receive rings, the
 * default; with VGPU_URING_DEFER=0; with multishot receives; and with
 * zero-copy sends from 4 KiB. Every blocking step has a timeout
 * (set_timeout), so a stall fails the test rather than hanging it.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "transport.h"
#include "uri.h"

#define STEP_MS 10000 /* a step that takes this long is stuck */
#define SERVER_MS 60000 /* longer: the client, stuck, gives up first */

static const struct vgpu_transport_ops *T;

static vgpu_status tp_addr(const char *uri, struct vgpu_uri *u, struct vgpu_tp_addr *a)
{
	vgpu_status st = vgpu__uri_parse(uri, u);

	if (st == VGPU_OK)
		vgpu__tp_addr(u, a);
	return st;
}

struct pair {
	struct vgpu_tp_listener *l;
	struct vgpu_tp_conn *s, *c;
};

static void *acceptor(void *arg)
{
	struct pair *p = arg;

	if (T->accept(p->l, &p->s) < 0)
		p->s = NULL;
	return NULL;
}

static int pair_open(struct pair *p, const char *params)
{
	struct vgpu_uri u;
	struct vgpu_tp_addr a;
	char uri[512], bound[256];
	pthread_t th;

	memset(p, 0, sizeof(*p));
	snprintf(uri, sizeof(uri), "uring://127.0.0.1:0/0%s", params);
	if (tp_addr(uri, &u, &a) < 0 || T->listen(&a, &p->l, bound, sizeof(bound)) < 0) {
		fprintf(stderr, "  listen: %s\n", vgpu_last_error());
		return -1;
	}
	pthread_create(&th, NULL, acceptor, p);
	snprintf(uri, sizeof(uri), "%s/0%s", bound, params);
	if (tp_addr(uri, &u, &a) < 0 || T->connect(&a, STEP_MS, &p->c) < 0)
		fprintf(stderr, "  connect: %s\n", vgpu_last_error());
	pthread_join(th, NULL);
	if (!p->c || !p->s)
		return -1;
	T->set_timeout(p->c, STEP_MS);
	T->set_timeout(p->s, SERVER_MS);
	return 0;
}

static void pair_close(struct pair *p)
{
	if (p->c)
		T->close(p->c);
	if (p->s)
		T->close(p->s);
	T->listen_shutdown(p->l);
	T->listen_close(p->l);
}

static uint8_t pat(uint64_t i, unsigned seed)
{
	return (uint8_t)(((i + seed) * 2654435761u) >> 13);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pat(i, seed);
}

static int check(const uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != pat(i, seed)) {
			fprintf(stderr, "  byte %zu of %zu differs\n", i, n);
			return -1;
		}
	return 0;
}

/* Read exactly n bytes, at most step at a time. */
static int read_all(struct vgpu_tp_conn *c, uint8_t *b, size_t n, size_t step)
{
	while (n) {
		ssize_t got = T->recv(c, b, 1, n < step ? n : step);

		if (got <= 0) {
			fprintf(stderr, "  recv: %s\n", vgpu_last_error());
			return -1;
		}
		b += got;
		n -= (size_t)got;
	}
	return 0;
}

static int send_all(struct vgpu_tp_conn *c, const void *b, size_t n)
{
	struct iovec iov = { (void *)b, n };

	if (T->send(c, &iov, 1) < 0) {
		fprintf(stderr, "  send: %s\n", vgpu_last_error());
		return -1;
	}
	return 0;
}

#define REQ 64

/* ---- fused_reply_blocked ---- */

struct reply_case {
	size_t len; /* reply bytes */
	int segs;   /* iovecs it is sent as */
};

static const struct reply_case replies[] = {
	{ 120 * 1024, 1 }, /* one SEND, larger than both socket buffers */
	{ 6000, 2 },       /* gathered into one buffer (FLAT_MAX) */
	{ 100 * 1024, 2 }, /* SENDMSG of two segments */
	{ 120 * 1024, 1 },
};
#define NREPLY (sizeof(replies) / sizeof(replies[0]))

struct server {
	struct pair *p;
	uint8_t *reply;
	int fails;
	char why[256];
};

/* vgpud's reader: receive a request, then answer each with send_recv,
 * whose receive is that of the next request. */
static void *reply_server(void *arg)
{
	struct server *s = arg;
	uint8_t req[REQ];
	ssize_t got;

	if (read_all(s->p->s, req, REQ, REQ) < 0 || check(req, REQ, 0) < 0) {
		snprintf(s->why, sizeof(s->why), "first request: %s", vgpu_last_error());
		s->fails++;
		return NULL;
	}
	for (unsigned k = 0; k < NREPLY; k++) {
		struct iovec iov[2];
		size_t len = replies[k].len, half = replies[k].segs == 2 ? 100 : len;

		fill(s->reply, len, 100 + k);
		iov[0].iov_base = s->reply;
		iov[0].iov_len = half;
		iov[1].iov_base = s->reply + half;
		iov[1].iov_len = len - half;
		got = T->send_recv(s->p->s, iov, replies[k].segs, req, REQ, REQ);
		if (got != REQ || check(req, REQ, k + 1) < 0) {
			snprintf(s->why, sizeof(s->why), "reply %u: send_recv returned %zd: %s", k, got,
				 got < 0 ? vgpu_last_error() : "wrong request");
			s->fails++;
			return NULL;
		}
	}
	return NULL;
}

static int t_fused_reply_blocked(void *d)
{
	struct pair p;
	struct server s;
	pthread_t th;
	uint8_t req[REQ];
	uint8_t *got = malloc(128 * 1024);
	int rc = 0;

	(void)d;
	CHECK(got);
	CHECK(pair_open(&p, "?sndbuf=32K&rcvbuf=32K") == 0);
	memset(&s, 0, sizeof(s));
	s.p = &p;
	s.reply = malloc(128 * 1024);
	CHECK(s.reply);
	pthread_create(&th, NULL, reply_server, &s);
	fill(req, REQ, 0);
	if (send_all(p.c, req, REQ) < 0)
		rc = VT_FAIL;
	for (unsigned k = 0; k < NREPLY && !rc; k++) {
		/* the whole reply, read as it comes, before the next request */
		if (read_all(p.c, got, replies[k].len, 4096) < 0 ||
		    check(got, replies[k].len, 100 + k) < 0) {
			fprintf(stderr, "  reply %u (%zu bytes) did not arrive whole\n", k, replies[k].len);
			rc = VT_FAIL;
			break;
		}
		fill(req, REQ, k + 1);
		if (send_all(p.c, req, REQ) < 0)
			rc = VT_FAIL;
	}
	if (rc)
		T->shutdown(p.c, 0); /* wake the server thread */
	pthread_join(th, NULL);
	if (s.fails)
		fprintf(stderr, "  server: %s\n", s.why);
	pair_close(&p);
	free(s.reply);
	free(got);
	CHECK(rc == 0);
	CHECK(s.fails == 0);
	return 0;
}

/* ---- fused_request_blocked ---- */

#define BIGREQ (120 * 1024)

static void *request_server(void *arg)
{
	struct server *s = arg;
	uint8_t *req = malloc(BIGREQ);
	uint8_t ans[REQ];

	if (!req || read_all(s->p->s, req, BIGREQ, 4096) < 0 || check(req, BIGREQ, 7) < 0) {
		snprintf(s->why, sizeof(s->why), "request did not arrive whole");
		s->fails++;
	} else {
		fill(ans, REQ, 8);
		if (send_all(s->p->s, ans, REQ) < 0) {
			snprintf(s->why, sizeof(s->why), "answer: %s", vgpu_last_error());
			s->fails++;
		}
	}
	free(req);
	return NULL;
}

static int t_fused_request_blocked(void *d)
{
	struct pair p;
	struct server s;
	pthread_t th;
	struct iovec iov;
	uint8_t ans[REQ];
	uint8_t *req = malloc(BIGREQ);
	ssize_t got;

	(void)d;
	CHECK(req);
	CHECK(pair_open(&p, "?sndbuf=32K&rcvbuf=32K") == 0);
	memset(&s, 0, sizeof(s));
	s.p = &p;
	pthread_create(&th, NULL, request_server, &s);
	fill(req, BIGREQ, 7);
	iov.iov_base = req;
	iov.iov_len = BIGREQ;
	got = T->send_recv(p.c, &iov, 1, ans, REQ, REQ);
	if (got < 0) {
		fprintf(stderr, "  send_recv: %s\n", vgpu_last_error());
		T->shutdown(p.c, 0);
	}
	pthread_join(th, NULL);
	if (s.fails)
		fprintf(stderr, "  server: %s\n", s.why);
	pair_close(&p);
	free(req);
	CHECK(got == REQ);
	CHECK(check(ans, REQ, 8) == 0);
	CHECK(s.fails == 0);
	return 0;
}

/* ---- reply_timeout ---- */

static int t_reply_timeout(void *d)
{
	struct pair p;
	struct iovec iov;
	uint8_t req[REQ], ans[REQ];
	ssize_t got;

	(void)d;
	CHECK(pair_open(&p, "") == 0);
	T->set_timeout(p.c, 200);
	fill(req, REQ, 3);
	iov.iov_base = req;
	iov.iov_len = REQ;
	got = T->send_recv(p.c, &iov, 1, ans, REQ, REQ);
	CHECK(got == VGPU_ERR_TIMEOUT);
	/* the request left whole; the answer may come late */
	CHECK(read_all(p.s, req, REQ, REQ) == 0 && check(req, REQ, 3) == 0);
	fill(ans, REQ, 4);
	CHECK(send_all(p.s, ans, REQ) == 0);
	memset(ans, 0, sizeof(ans));
	T->set_timeout(p.c, STEP_MS);
	CHECK(read_all(p.c, ans, REQ, REQ) == 0 && check(ans, REQ, 4) == 0);
	pair_close(&p);
	return 0;
}

/* ---- scatter_reply ---- */

#define SCAT (100 * 1024)

static void *scatter_server(void *arg)
{
	struct server *s = arg;
	uint8_t req[REQ], *ans = malloc(SCAT);

	for (int round = 0; round < 2; round++) {
		if (!ans || read_all(s->p->s, req, REQ, REQ) < 0 || check(req, REQ, 5) < 0) {
			snprintf(s->why, sizeof(s->why), "request %d did not arrive whole", round);
			s->fails++;
			break;
		}
		fill(ans, SCAT, 6);
		if (send_all(s->p->s, ans, round ? 40 : SCAT) < 0) {
			snprintf(s->why, sizeof(s->why), "answer: %s", vgpu_last_error());
			s->fails++;
			break;
		}
	}
	free(ans);
	return NULL;
}

/*
 * send_recvv: a request, and a 100 KiB answer received in order into three
 * segments (40 bytes, 1000 bytes, the rest) on 64 KiB sockets, so that it
 * arrives in pieces: the call returns at least min bytes, filling the
 * segments in order; the rest is received as usual. Then an answer shorter
 * than the first segment; then arguments the call refuses.
 */
static int t_scatter_reply(void *d)
{
	struct pair p;
	struct server s;
	pthread_t th;
	struct iovec iov, riov[3];
	uint8_t req[REQ], *ans = calloc(1, SCAT + 1);
	size_t got = 0;
	ssize_t r;

	(void)d;
	CHECK(ans);
	CHECK(T->send_recvv != NULL);
	CHECK(pair_open(&p, "?sndbuf=32K&rcvbuf=32K") == 0);
	memset(&s, 0, sizeof(s));
	s.p = &p;
	pthread_create(&th, NULL, scatter_server, &s);
	fill(req, REQ, 5);
	iov.iov_base = req;
	iov.iov_len = REQ;
	riov[0].iov_base = ans;
	riov[0].iov_len = 40;
	riov[1].iov_base = ans + 40;
	riov[1].iov_len = 1000;
	riov[2].iov_base = ans + 1040;
	riov[2].iov_len = SCAT - 1040;
	r = T->send_recvv(p.c, &iov, 1, riov, 3, 40);
	if (r < 0)
		fprintf(stderr, "  send_recvv: %s\n", vgpu_last_error());
	if (r >= 40)
		got = (size_t)r;
	if (got && got < SCAT && read_all(p.c, ans + got, SCAT - got, SCAT) < 0)
		got = 0;
	/* a short answer: min bytes from the first segment */
	memset(riov[0].iov_base, 0, 40);
	r = got ? T->send_recvv(p.c, &iov, 1, riov, 3, 40) : -1;
	pthread_join(th, NULL);
	if (s.fails)
		fprintf(stderr, "  server: %s\n", s.why);
	CHECK(s.fails == 0 && got >= 40 && got <= SCAT);
	CHECK(r == 40 && check(ans, 40, 6) == 0 && check(ans + 40, SCAT - 40, 6 + 40) == 0);
	CHECK(ans[SCAT] == 0);
	/* refused: min beyond the first segment, no segments, too many */
	CHECK_ST(T->send_recvv(p.c, &iov, 1, riov, 3, 41), VGPU_ERR_INTERNAL);
	CHECK_ST(T->send_recvv(p.c, &iov, 1, riov, 0, 1), VGPU_ERR_INTERNAL);
	CHECK_ST(T->send_recvv(p.c, &iov, 1, riov, VGPU_TP_MAX_IOV + 1, 1), VGPU_ERR_INTERNAL);
	pair_close(&p);
	free(ans);
	return 0;
}

/* ---- bad_sockbuf ---- */

static int t_bad_sockbuf(void *d)
{
	struct vgpu_uri u;
	struct vgpu_tp_addr a;
	struct vgpu_tp_listener *l = NULL;
	struct vgpu_tp_conn *c = NULL;
	char bound[256];

	(void)d;
	CHECK_OK(tp_addr("uring://127.0.0.1:0/0?sndbuf=lots", &u, &a));
	CHECK_ST(T->listen(&a, &l, bound, sizeof(bound)), VGPU_ERR_BAD_URI);
	CHECK_MSG("sndbuf=lots");
	CHECK_OK(tp_addr("uring://127.0.0.1:9/0?rcvbuf=2G", &u, &a));
	CHECK_ST(T->connect(&a, STEP_MS, &c), VGPU_ERR_BAD_URI);
	CHECK_MSG("rcvbuf=2G");
	CHECK_MSG("at most 1G");
	setenv("VGPU_TCP_SNDBUF", "-1", 1);
	CHECK_ST(T->connect(&a, STEP_MS, &c), VGPU_ERR_BAD_URI); /* rcvbuf=2G first */
	CHECK_OK(tp_addr("uring://127.0.0.1:9/0", &u, &a));
	CHECK_ST(T->connect(&a, STEP_MS, &c), VGPU_ERR_BAD_URI);
	CHECK_MSG("VGPU_TCP_SNDBUF=-1");
	unsetenv("VGPU_TCP_SNDBUF");
	return 0;
}

int main(void)
{
	T = vgpu__transport_find("uring");
	if (!T) {
		fprintf(stderr, "no uring transport: %s\n", vgpu_last_error());
		return VT_FAIL;
	}
	vt_run("fused_reply_blocked", t_fused_reply_blocked, NULL);
	vt_run("fused_request_blocked", t_fused_request_blocked, NULL);
	vt_run("reply_timeout", t_reply_timeout, NULL);
	vt_run("scatter_reply", t_scatter_reply, NULL);
	vt_run("bad_sockbuf", t_bad_sockbuf, NULL);
	return vt_finish();
}
