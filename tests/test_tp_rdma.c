/* SPDX-License-Identifier: MIT */
/*
 * test_tp_rdma.c - the rdma transport module through its ops table, no
 * protocol above it: the byte stream must come out as it went in whatever
 * the mix of small and bulk segments in a send and whatever the reads.
 *
 *   headers_then_bulk  [header, body, 1 MiB] sends read as the protocol
 *                      does: recv(min, 128 KiB) stops in front of the bulk,
 *                      recv(n, n) takes it whole
 *   short_reads        bulk taken by small reads (the bounce path)
 *   mixed_iovecs       16-segment sends mixing small runs (packed, iov,
 *                      riding before bulk) and bulk, read in odd sizes
 *   many_small         20000 small sends queued before the reader looks
 *   dead_peer          a client killed: the reader gets VGPU_ERR_CONNECTION
 *   deferred_chunks    send_deferred: 24 [header, body, 1 MiB] messages in
 *                      flight from one buffer (more than the transport
 *                      keeps), plain sends between them, flush, the buffer
 *                      rewritten and sent again: the stream checked byte
 *                      by byte, the bulk read as the protocol reads it
 *   deferred_dead_peer the reader (another process) dies with chunks in
 *                      flight: send_deferred or flush, and flush always,
 *                      fail with VGPU_ERR_CONNECTION, not a timeout
 *   flush_shutdown     a flush waiting for a reader that never reads is
 *                      woken by shutdown() from another thread, and so is
 *   send_shutdown      a plain bulk send in the same position
 *   idle_progress      send_deferred of [header, 1 MiB], then the sending
 *                      thread stays out of the transport until the peer
 *                      has read it all: the bytes move only if the
 *                      sender's background progress does (both ways)
 *
 * The UCX transports come from the environment (test_tp_rdma.sh runs it
 * with UCX_TLS=tcp and with shared memory).
 */
#include "config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vgpu/transport.h>
#include "test.h"

static const struct vgpu_transport_ops *T;
static __thread char errmsg[512];

static vgpu_status h_error(vgpu_status st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errmsg, sizeof(errmsg), fmt, ap);
	va_end(ap);
	return st;
}

static void h_log(int lvl, const char *fmt, ...)
{
	(void)lvl;
	(void)fmt;
}

static const char *h_error_msg(void)
{
	return errmsg;
}

static const struct vgpu_transport_host host = { sizeof(host), h_error, h_log, h_error_msg };

static const char *a_param(const struct vgpu_tp_addr *a, const char *key)
{
	(void)a;
	(void)key;
	return NULL;
}

static void addr(struct vgpu_tp_addr *a, int port)
{
	memset(a, 0, sizeof(*a));
	a->size = sizeof(*a);
	a->text = "rdma://127.0.0.1";
	a->scheme = "rdma";
	a->host = "127.0.0.1";
	a->port = port;
	a->path = "";
	a->param = a_param;
}

static int load(void)
{
	const char *p = getenv("VGPU_TRANSPORT_PATH");
	char path[4096];
	vgpu_transport_init_fn init;
	void *h;

	snprintf(path, sizeof(path), "%.*s/transport_rdma.so", p ? (int)strcspn(p, ":") : 1,
		 p ? p : ".");
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "  %s\n", dlerror());
		return -1;
	}
	init = (vgpu_transport_init_fn)dlsym(h, VGPU_TRANSPORT_INIT_SYMBOL);
	T = init ? init(&host, VGPU_TRANSPORT_ABI) : NULL;
	return T ? 0 : -1;
}

/* ---- one connection, the server side read by a thread ---- */

struct pair {
	struct vgpu_tp_listener *l;
	struct vgpu_tp_conn *s, *c;
	int port;
};

static void *acceptor(void *arg)
{
	struct pair *p = arg;

	if (T->accept(p->l, &p->s) < 0)
		p->s = NULL;
	return NULL;
}

static int pair_open(struct pair *p)
{
	struct vgpu_tp_addr a;
	char bound[256];
	pthread_t th;

	memset(p, 0, sizeof(*p));
	addr(&a, 0);
	if (T->listen(&a, &p->l, bound, sizeof(bound)) < 0) {
		fprintf(stderr, "  listen: %s\n", errmsg);
		return -1;
	}
	p->port = atoi(strrchr(bound, ':') + 1);
	pthread_create(&th, NULL, acceptor, p);
	addr(&a, p->port);
	if (T->connect(&a, 10000, &p->c) < 0)
		fprintf(stderr, "  connect: %s\n", errmsg);
	pthread_join(th, NULL);
	return p->c && p->s ? 0 : -1;
}

static void pair_close(struct pair *p)
{
	T->close(p->c);
	T->close(p->s);
	T->listen_shutdown(p->l);
	T->listen_close(p->l);
}

/* the reference stream: byte i of the stream is pat(i) */
static uint8_t pat(uint64_t i)
{
	return (uint8_t)((i * 2654435761u) >> 13);
}

static void fill(uint8_t *b, size_t n, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pat(off + i);
}

static int check(const uint8_t *b, size_t n, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != pat(off + i)) {
			fprintf(stderr, "  byte %llu of the stream differs\n",
				(unsigned long long)(off + i));
			return -1;
		}
	return 0;
}

/* Read exactly n bytes with reads of at most `step` bytes. */
static int read_all(struct vgpu_tp_conn *c, uint8_t *b, size_t n, size_t step)
{
	while (n) {
		size_t k = n < step ? n : step;
		ssize_t got = T->recv(c, b, 1, k);

		if (got <= 0) {
			fprintf(stderr, "  recv: %s\n", errmsg);
			return -1;
		}
		b += got;
		n -= (size_t)got;
	}
	return 0;
}

/* A send of segments of the given lengths, cut from the reference stream
 * at *off. */
static int send_segs(struct vgpu_tp_conn *c, const size_t *len, int n, uint64_t *off)
{
	struct iovec iov[16] = { { 0 } };
	vgpu_status st;

	for (int i = 0; i < n; i++) {
		iov[i].iov_base = malloc(len[i] ? len[i] : 1);
		iov[i].iov_len = len[i];
		if (!iov[i].iov_base)
			abort();
		fill(iov[i].iov_base, len[i], *off);
		*off += len[i];
	}
	st = T->send(c, iov, n);
	for (int i = 0; i < n; i++)
		free(iov[i].iov_base);
	if (st < 0)
		fprintf(stderr, "  send: %s\n", errmsg);
	return st < 0 ? -1 : 0;
}

/* Sends run in a thread of their own: a bulk send completes only once the
 * reader has taken it (rendezvous), like a write to a full socket. */
struct sender {
	struct vgpu_tp_conn *c;
	const size_t *seg;
	int nseg, times, failed;
	pthread_t th;
};

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	uint64_t off = 0;

	for (int i = 0; i < s->times && !s->failed; i++)
		s->failed = send_segs(s->c, s->seg, s->nseg, &off) < 0;
	return NULL;
}

static void sender_start(struct sender *s, struct vgpu_tp_conn *c, const size_t *seg, int nseg,
			 int times)
{
	s->c = c;
	s->seg = seg;
	s->nseg = nseg;
	s->times = times;
	s->failed = 0;
	pthread_create(&s->th, NULL, sender_main, s);
}

static int sender_join(struct sender *s)
{
	pthread_join(s->th, NULL);
	return s->failed ? -1 : 0;
}

static size_t seg_sum(const size_t *seg, int n)
{
	size_t t = 0;

	for (int i = 0; i < n; i++)
		t += seg[i];
	return t;
}

static int t_headers_then_bulk(void *d)
{
	static const size_t seg[3] = { 32, 20, 1u << 20 };
	struct pair p;
	struct sender sd;
	uint64_t roff = 0;
	uint8_t *buf = malloc(1u << 20), rb[128 * 1024];

	(void)d;
	CHECK(buf && pair_open(&p) == 0);
	sender_start(&sd, p.c, seg, 3, 4);
	for (int i = 0; i < 4; i++) {
		/* the header read may not take bulk into its buffer */
		ssize_t got = T->recv(p.s, rb, 32, sizeof(rb));

		CHECK(got == 52);
		CHECK(check(rb, 52, roff) == 0);
		roff += 52;
		CHECK(T->recv(p.s, buf, 1u << 20, 1u << 20) == 1 << 20);
		CHECK(check(buf, 1u << 20, roff) == 0);
		roff += 1u << 20;
	}
	CHECK(sender_join(&sd) == 0);
	pair_close(&p);
	free(buf);
	return 0;
}

static int t_short_reads(void *d)
{
	static const size_t seg[3] = { 32, 20, 300 * 1024 };
	struct pair p;
	struct sender sd;
	size_t n = 2 * seg_sum(seg, 3);
	uint8_t *buf = malloc(n);

	(void)d;
	CHECK(buf && pair_open(&p) == 0);
	sender_start(&sd, p.c, seg, 3, 2);
	CHECK(read_all(p.s, buf, n, 1000) == 0);
	CHECK(check(buf, n, 0) == 0);
	CHECK(sender_join(&sd) == 0);
	pair_close(&p);
	free(buf);
	return 0;
}

static int t_mixed_iovecs(void *d)
{
	/* small runs of every kind: packed (< 4 KiB), riding before bulk
	 * (<= 256 bytes), iov (> 4 KiB), and bulk of 64 KiB and more */
	static const size_t a[16] = { 32, 20, 65536, 7, 0, 200000, 3000, 3000,
				      1, 20000, 70000, 32, 20, 32, 100, 131072 };
	static const size_t b[6] = { 32, 1000, 65536, 40000, 30000, 5 };
	struct pair p;
	struct sender sd;
	uint8_t *buf;
	size_t n;

	(void)d;
	CHECK(pair_open(&p) == 0);
	n = 3 * seg_sum(a, 16);
	buf = malloc(n);
	CHECK(buf);
	sender_start(&sd, p.c, a, 16, 3);
	CHECK(read_all(p.s, buf, n, 7919) == 0);
	CHECK(check(buf, n, 0) == 0);
	CHECK(sender_join(&sd) == 0);
	free(buf);
	/* the same connection, another mix (its pattern starts again at 0) */
	n = 3 * seg_sum(b, 6);
	buf = malloc(n);
	CHECK(buf);
	sender_start(&sd, p.c, b, 6, 3);
	CHECK(read_all(p.s, buf, n, 7919) == 0);
	CHECK(check(buf, n, 0) == 0);
	CHECK(sender_join(&sd) == 0);
	free(buf);
	pair_close(&p);
	return 0;
}

static int t_many_small(void *d)
{
	static const size_t seg[2] = { 32, 68 };
	struct pair p;
	uint64_t soff = 0;
	size_t n = 20000 * 100;
	uint8_t *buf = malloc(n);

	(void)d;
	CHECK(buf && pair_open(&p) == 0);
	for (int i = 0; i < 20000; i++)
		CHECK(send_segs(p.c, seg, 2, &soff) == 0);
	CHECK(read_all(p.s, buf, n, 128 * 1024) == 0);
	CHECK(check(buf, n, 0) == 0);
	pair_close(&p);
	free(buf);
	return 0;
}

static int t_dead_peer(void *d)
{
	struct vgpu_tp_addr a;
	struct vgpu_tp_listener *l;
	struct vgpu_tp_conn *s;
	char bound[256];
	uint8_t b[64];
	int fd[2], go[2], st;
	pid_t pid;
	uint16_t port;
	ssize_t r;

	(void)d;
	/* the child never shares UCX state with us: it forks first */
	CHECK(pipe(fd) == 0 && pipe(go) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct vgpu_tp_conn *c;
		static const size_t seg[1] = { 64 };
		uint64_t off = 0;

		close(fd[1]);
		close(go[1]);
		if (read(fd[0], &port, 2) != 2)
			_exit(1);
		addr(&a, port);
		if (T->connect(&a, 10000, &c) < 0 || send_segs(c, seg, 1, &off) < 0)
			_exit(1);
		/* die once the server has us (a connection request from a
		 * client already gone may never reach accept) */
		if (read(go[0], &port, 1) < 0)
			_exit(1);
		raise(SIGKILL);
	}
	close(fd[0]);
	close(go[0]);
	addr(&a, 0);
	CHECK(T->listen(&a, &l, bound, sizeof(bound)) == VGPU_OK);
	port = (uint16_t)atoi(strrchr(bound, ':') + 1);
	CHECK(write(fd[1], &port, 2) == 2);
	close(fd[1]);
	CHECK(T->accept(l, &s) == VGPU_OK);
	/* bounded: a timeout would also be VGPU_ERR_CONNECTION, told apart
	 * by its message below */
	CHECK(T->set_timeout(s, 20000) == VGPU_OK);
	CHECK(T->recv(s, b, 64, 64) == 64 && check(b, 64, 0) == 0);
	close(go[1]);
	waitpid(pid, &st, 0);
	CHECK(WIFSIGNALED(st));
	r = T->recv(s, b, 1, sizeof(b));
	if (r != VGPU_ERR_CONNECTION)
		fprintf(stderr, "  recv after the peer died: %zd (%s)\n", r, errmsg);
	CHECK(r == VGPU_ERR_CONNECTION && !strstr(errmsg, "timed out"));
	T->close(s);
	T->listen_shutdown(l);
	T->listen_close(l);
	return 0;
}

/* ---- send_deferred and flush ---- */

#define MIB (1u << 20)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int have_deferred(void)
{
	return T->size >= offsetof(struct vgpu_transport_ops, flush) + sizeof(T->flush) &&
	       T->send_deferred && T->flush;
}

/* [32 + 20 bytes, chunk] as the protocol sends a copy's chunk: the header
 * and body on the stack, the chunk from the caller's buffer, which is the
 * stream at *off (filled here, just before it goes). */
static vgpu_status defer_chunk(struct vgpu_tp_conn *c, uint8_t *chunk, size_t n, uint64_t *off)
{
	uint8_t hb[52];
	struct iovec iov[3] = { { hb, 32 }, { hb + 32, 20 }, { chunk, n } };

	fill(hb, sizeof(hb), *off);
	fill(chunk, n, *off + sizeof(hb));
	*off += sizeof(hb) + n;
	return T->send_deferred(c, iov, 3);
}

struct dsender {
	struct vgpu_tp_conn *c;
	uint8_t *buf;
	int rounds, nchunks;
	vgpu_status st;
	pthread_t th;
};

static void *dsender_main(void *arg)
{
	struct dsender *s = arg;
	uint64_t off = 0;

	s->st = VGPU_OK;
	for (int r = 0; r < s->rounds && s->st == VGPU_OK; r++) {
		for (int i = 0; i < s->nchunks && s->st == VGPU_OK; i++) {
			s->st = defer_chunk(s->c, s->buf + (size_t)i * MIB, MIB, &off);
			if (s->st == VGPU_OK && i % 5 == 2) {
				/* a plain send between deferred ones, in order */
				static const size_t seg[2] = { 32, 100 };

				if (send_segs(s->c, seg, 2, &off) < 0)
					s->st = VGPU_ERR_CONNECTION;
			}
		}
		if (s->st == VGPU_OK)
			s->st = T->flush(s->c);
		/* the next round rewrites every chunk: only allowed now */
	}
	return NULL;
}

static int t_deferred_chunks(void *d)
{
	enum { NCHUNKS = 24, ROUNDS = 2 };
	struct pair p;
	struct dsender sd;
	uint8_t *buf = malloc(MIB), rb[128 * 1024];
	uint64_t roff = 0;

	(void)d;
	if (!have_deferred())
		return VT_SKIP;
	CHECK(buf && pair_open(&p) == 0);
	memset(&sd, 0, sizeof(sd));
	sd.c = p.c;
	sd.buf = malloc((size_t)NCHUNKS * MIB);
	sd.rounds = ROUNDS;
	sd.nchunks = NCHUNKS;
	CHECK(sd.buf);
	pthread_create(&sd.th, NULL, dsender_main, &sd);
	for (int r = 0; r < ROUNDS; r++)
		for (int i = 0; i < NCHUNKS; i++) {
			/* the header read stops in front of the bulk */
			CHECK(T->recv(p.s, rb, 52, sizeof(rb)) == 52);
			CHECK(check(rb, 52, roff) == 0);
			roff += 52;
			CHECK(T->recv(p.s, buf, MIB, MIB) == MIB);
			CHECK(check(buf, MIB, roff) == 0);
			roff += MIB;
			if (i % 5 == 2) {
				CHECK(read_all(p.s, rb, 132, 132) == 0);
				CHECK(check(rb, 132, roff) == 0);
				roff += 132;
			}
		}
	pthread_join(sd.th, NULL);
	CHECK(sd.st == VGPU_OK);
	/* nothing in flight: flush at once */
	CHECK(T->flush(p.c) == VGPU_OK);
	pair_close(&p);
	free(sd.buf);
	free(buf);
	return 0;
}

/* idle_progress's reader: [52-byte header, 1 MiB] at stream offset 0 */
struct idle_reader {
	struct vgpu_tp_conn *c;
	int rc;
	pthread_t th;
};

static void *idle_reader_main(void *arg)
{
	struct idle_reader *r = arg;
	uint8_t *buf = malloc(MIB), hdr[52];

	r->rc = -1;
	if (buf && T->recv(r->c, hdr, 52, 52) == 52 && check(hdr, 52, 0) == 0 &&
	    T->recv(r->c, buf, MIB, MIB) == MIB && check(buf, MIB, 52) == 0)
		r->rc = 0;
	free(buf);
	return NULL;
}

static int t_idle_progress(void *d)
{
	uint8_t hdr[52], *bulk = malloc(MIB);
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { bulk, MIB } };
	struct pair p;

	(void)d;
	if (!have_deferred()) {
		free(bulk);
		return VT_SKIP;
	}
	CHECK(bulk && pair_open(&p) == 0);
	fill(hdr, sizeof(hdr), 0);
	fill(bulk, MIB, sizeof(hdr));
	for (int dir = 0; dir < 2; dir++) {
		struct vgpu_tp_conn *tx = dir ? p.s : p.c, *rx = dir ? p.c : p.s;
		struct idle_reader r = { rx, -1, 0 };

		/* a reader left waiting times out rather than hang the test */
		CHECK(T->set_timeout(rx, 10000) == VGPU_OK);
		CHECK(T->send_deferred(tx, iov, 2) == VGPU_OK);
		CHECK(pthread_create(&r.th, NULL, idle_reader_main, &r) == 0);
		pthread_join(r.th, NULL);
		CHECK(r.rc == 0);
		CHECK(T->flush(tx) == VGPU_OK);
		CHECK(T->set_timeout(rx, 0) == VGPU_OK);
	}
	pair_close(&p);
	free(bulk);
	return 0;
}

/* The reader of deferred_dead_peer, in a process of its own (exec'd: no
 * UCX state shared with the parent): takes two chunks, then dies. */
static int peer_die_main(int wfd)
{
	struct vgpu_tp_addr a;
	struct vgpu_tp_listener *l;
	struct vgpu_tp_conn *c;
	char bound[256];
	uint8_t *buf = malloc(MIB), rb[128 * 1024];
	uint16_t port;

	addr(&a, 0);
	if (!buf || T->listen(&a, &l, bound, sizeof(bound)) < 0)
		return 1;
	port = (uint16_t)atoi(strrchr(bound, ':') + 1);
	if (write(wfd, &port, 2) != 2 || T->accept(l, &c) < 0)
		return 1;
	for (int i = 0; i < 2; i++)
		if (T->recv(c, rb, 52, sizeof(rb)) != 52 || T->recv(c, buf, MIB, MIB) != MIB)
			return 1;
	raise(SIGKILL);
	return 1;
}

static const char *self_exe;

static int t_deferred_dead_peer(void *d)
{
	struct vgpu_tp_addr a;
	struct vgpu_tp_conn *c;
	uint8_t *buf = malloc(32 * MIB);
	uint64_t off = 0;
	vgpu_status st = VGPU_OK, fl;
	int fd[2], ws, sent = 0;
	uint16_t port;
	pid_t pid;
	char arg[16];

	(void)d;
	if (!have_deferred())
		return VT_SKIP;
	CHECK(buf && pipe(fd) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(fd[0]);
		snprintf(arg, sizeof(arg), "%d", fd[1]);
		execl(self_exe, self_exe, "--peer-die", arg, (char *)NULL);
		_exit(127);
	}
	close(fd[1]);
	CHECK(read(fd[0], &port, 2) == 2);
	close(fd[0]);
	addr(&a, port);
	CHECK(T->connect(&a, 10000, &c) == VGPU_OK);
	/* bounded: a timeout would also be VGPU_ERR_CONNECTION, told apart
	 * by its message below */
	CHECK(T->set_timeout(c, 20000) == VGPU_OK);
	for (int i = 0; i < 32 && st == VGPU_OK; i++, sent++)
		st = defer_chunk(c, buf + (size_t)i * MIB, MIB, &off);
	fl = T->flush(c);
	if (fl != VGPU_ERR_CONNECTION)
		fprintf(stderr, "  flush after the peer died: %d (%s), %d chunks sent\n", fl, errmsg,
			sent);
	CHECK(st == VGPU_OK || st == VGPU_ERR_CONNECTION);
	CHECK(fl == VGPU_ERR_CONNECTION && !strstr(errmsg, "timed out"));
	/* nothing reads buf any more (valgrind and ASan would tell) */
	memset(buf, 0, 32 * MIB);
	free(buf);
	CHECK(T->send(c, (struct iovec[]){ { &port, 2 } }, 1) == VGPU_ERR_CONNECTION);
	T->close(c);
	waitpid(pid, &ws, 0);
	CHECK(WIFSIGNALED(ws));
	return 0;
}

/* A sender blocked on a reader that never takes its bulk. */
struct blocked {
	struct vgpu_tp_conn *c;
	uint8_t *buf;
	int deferred;
	vgpu_status st;
	double took;
	pthread_t th;
};

static void *blocked_main(void *arg)
{
	struct blocked *b = arg;
	uint64_t off = 0;
	double t0 = now_s();

	if (b->deferred) {
		b->st = VGPU_OK;
		for (int i = 0; i < 4 && b->st == VGPU_OK; i++)
			b->st = defer_chunk(b->c, b->buf + (size_t)i * MIB, MIB, &off);
		t0 = now_s();
		b->st = T->flush(b->c);
	} else {
		struct iovec iov[2] = { { b->buf, 52 }, { b->buf + 52, 2 * MIB } };

		fill(b->buf, 52 + 2 * MIB, 0);
		b->st = T->send(b->c, iov, 2);
	}
	b->took = now_s() - t0;
	return NULL;
}

static int blocked_shutdown(int deferred)
{
	struct pair p;
	struct blocked b;
	uint8_t rb[64];
	double t0;

	if (deferred && !have_deferred())
		return VT_SKIP;
	CHECK(pair_open(&p) == 0);
	memset(&b, 0, sizeof(b));
	b.c = p.c;
	b.deferred = deferred;
	b.buf = malloc(4 * MIB);
	CHECK(b.buf);
	pthread_create(&b.th, NULL, blocked_main, &b);
	/* the reader takes the first bytes only: the bulk stays in flight */
	CHECK(T->recv(p.s, rb, 52, 52) == 52);
	usleep(300 * 1000);
	t0 = now_s();
	T->shutdown(p.c, 0);
	pthread_join(b.th, NULL);
	if (b.st != VGPU_ERR_CONNECTION)
		fprintf(stderr, "  %s after shutdown: %d (%s)\n", deferred ? "flush" : "send", b.st,
			errmsg);
	CHECK(b.st == VGPU_ERR_CONNECTION);
	CHECK(b.took >= 0.2);        /* it did wait for the reader */
	CHECK(now_s() - t0 < 5);     /* and shutdown woke it */
	memset(b.buf, 0, 4 * MIB);   /* nothing reads it any more */
	free(b.buf);
	if (deferred)
		CHECK(T->flush(p.c) == VGPU_ERR_CONNECTION);
	pair_close(&p);
	return 0;
}

static int t_flush_shutdown(void *d)
{
	(void)d;
	return blocked_shutdown(1);
}

static int t_send_shutdown(void *d)
{
	(void)d;
	return blocked_shutdown(0);
}

int main(int argc, char **argv)
{
	if (load() < 0) {
		fprintf(stderr, "no rdma transport module: %s\n", errmsg);
		return VT_SKIP;
	}
	if (argc == 3 && !strcmp(argv[1], "--peer-die"))
		return peer_die_main(atoi(argv[2]));
	self_exe = argv[0]; /* not /proc/self/exe: valgrind's own under valgrind */
	/* before any UCX state exists in this process */
	vt_run("dead_peer", t_dead_peer, NULL);
	vt_run("headers_then_bulk", t_headers_then_bulk, NULL);
	vt_run("short_reads", t_short_reads, NULL);
	vt_run("mixed_iovecs", t_mixed_iovecs, NULL);
	vt_run("many_small", t_many_small, NULL);
	vt_run("deferred_chunks", t_deferred_chunks, NULL);
	vt_run("deferred_dead_peer", t_deferred_dead_peer, NULL);
	vt_run("flush_shutdown", t_flush_shutdown, NULL);
	vt_run("send_shutdown", t_send_shutdown, NULL);
	vt_run("idle_progress", t_idle_progress, NULL);
	return vt_finish();
}
