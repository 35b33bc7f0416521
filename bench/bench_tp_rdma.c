/* SPDX-License-Identifier: MIT */
/*
 * bench_tp_rdma.c - the rdma transport alone against raw UCX, same run.
 *
 * bench_transports measures rdma through vgpud (protocol, engine, device
 * copies); this measures only what transports/rdma/rdma.c adds. The module
 * is dlopen'd and driven through its ops table, moving the byte stream the
 * protocol would move:
 *   - every call is [32-byte header | 20-byte body | bulk] in one send()
 *     (three iovecs, as vgpu__send_msg);
 *   - the receiver reads through a 128 KiB read-ahead buffer like
 *     vgpu__rbuf_read: headers with recv(min, 128 KiB), bulk of 64 KiB or
 *     more with recv(min == max == n) straight into its destination;
 *   - rtt: 64 bytes inline each way; launch: 96-byte messages without reply,
 *     then one round trip; htod n: n bytes of bulk answered by a header;
 *     dtoh n: a header answered by n bytes of bulk. Copies above 1 MiB go as
 *     1 MiB messages (htod: the last one answered), as the protocol chunks,
 *     in flight together with send_deferred and one flush where the module
 *     has them (as the client's htod and vgpud's direct dtoh).
 * The server is a child process, one thread: recv, then send the reply.
 * The floor is the raw UCX active-message ping-pong and stream of
 * bench_transports (same code, same UCX_TLS): one message per request,
 * rendezvous straight into the receive buffer, spin 16 progress rounds then
 * sleep on the worker's event fd. Each figure and its floor are measured
 * alternately, three times, best kept.
 *
 * Environment: VGPU_BENCH_QUICK=1, VGPU_BENCH_CPUS=0 (pin), UCX_TLS,
 * VGPU_BENCH_ONLY=rtt,launch,htod,dtoh (rows to run), VGPU_BENCH_IDLE=N (N
 * idle connections beside the measured one, a server thread blocked in
 * recv on each), VGPU_BENCH_FLOOR_PEER=1
 * (the floor's endpoints with peer error handling, like the transport's),
 * VGPU_TRANSPORT_PATH (default: the build tree's transports/rdma/.libs).
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <ucp/api/ucp.h>

#include <vgpu/transport.h>

#include "ucx_floor.h"

#define MAXSZ (64u << 20)
#define CHUNK (1u << 20)
#define HDR 32
#define BODY 20
#define RBUF (128u * 1024)

static const size_t sizes[4] = { 4096, 65536, 1u << 20, 64u << 20 };
static int quick;
static pid_t kids[2];
static int nkids;
static uint8_t *hbuf;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "bench_tp_rdma: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	for (int i = 0; i < nkids; i++)
		kill(kids[i], SIGKILL);
	exit(1);
}

static unsigned iters(size_t n)
{
	unsigned k = n <= 4096 ? 3000 : n <= 65536 ? 1500 : n <= (1u << 20) ? 200 : 8;
	return quick ? (k / 8 ? k / 8 : 2) : k;
}

static unsigned rtt_n(void)
{
	return quick ? 1000 : 5000;
}

static unsigned launch_n(void)
{
	return quick ? 20000 : 100000;
}

enum { M_RTT, M_LAUNCH, M_HTOD, M_DTOH };

/* ------------------------------------------------------------------------ */
/* The module, as the library would load it                                 */

static const struct vgpu_transport_ops *T;
static char errmsg[512];

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
	va_list ap;

	if (lvl > 1)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static const char *h_error_msg(void)
{
	return errmsg;
}

static const struct vgpu_transport_host host = {
	sizeof(host), h_error, h_log, h_error_msg
};

static const char *a_param(const struct vgpu_tp_addr *a, const char *key)
{
	return NULL;
}

static void tp_load(void)
{
	const char *p = getenv("VGPU_TRANSPORT_PATH");
	char path[4096];
	vgpu_transport_init_fn init;
	void *h;

	snprintf(path, sizeof(path), "%.*s/transport_rdma.so", p ? (int)strcspn(p, ":") : 23,
		 p ? p : "transports/rdma/.libs");
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		die("%s", dlerror());
	init = (vgpu_transport_init_fn)dlsym(h, VGPU_TRANSPORT_INIT_SYMBOL);
	if (!init || !(T = init(&host, VGPU_TRANSPORT_ABI)))
		die("%s: no usable transport: %s", path, errmsg);
}

static void tp_addr(struct vgpu_tp_addr *a, int port)
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

/* The protocol's read-ahead buffer (vgpu__rbuf_read). */
struct rb {
	struct vgpu_tp_conn *c;
	size_t off, len;
	uint8_t buf[RBUF];
};

static int rb_read(struct rb *r, void *dst, size_t n)
{
	uint8_t *d = dst;

	while (n) {
		size_t have = r->len - r->off;
		ssize_t got;

		if (have) {
			size_t k = have < n ? have : n;
			memcpy(d, r->buf + r->off, k);
			r->off += k;
			d += k;
			n -= k;
			continue;
		}
		r->off = r->len = 0;
		if (n >= RBUF / 2) {
			got = T->recv(r->c, d, n, n);
			if (got < 0)
				return -1;
			d += got;
			n -= (size_t)got;
			continue;
		}
		got = T->recv(r->c, r->buf, n, sizeof(r->buf));
		if (got < 0)
			return -1;
		r->len = (size_t)got;
	}
	return 0;
}

static int can_defer(void)
{
	return T->size >= offsetof(struct vgpu_transport_ops, flush) + sizeof(T->flush) &&
	       T->send_deferred && T->flush;
}

/* header: [bulk length, reply bulk length (0: no reply; ~0: header only)].
 * deferred: the bulk stays in flight until tp_flush, as the protocol
 * sends the chunks of a large copy. */
static int tp_msg_how(struct vgpu_tp_conn *c, uint64_t bulk, uint64_t resp, const void *data,
		      int deferred)
{
	uint64_t h[HDR / 8] = { bulk, resp };
	uint8_t body[BODY] = { 0x94 };
	struct iovec iov[3] = { { h, HDR }, { body, BODY }, { (void *)data, bulk } };

	if (deferred && bulk && can_defer())
		return T->send_deferred(c, iov, 3) < 0 ? -1 : 0;
	return T->send(c, iov, bulk ? 3 : 2) < 0 ? -1 : 0;
}

static int tp_msg(struct vgpu_tp_conn *c, uint64_t bulk, uint64_t resp, const void *data)
{
	return tp_msg_how(c, bulk, resp, data, 0);
}

static int tp_flush(struct vgpu_tp_conn *c)
{
	return can_defer() && T->flush(c) < 0 ? -1 : 0;
}

static int tp_frame(struct rb *r, uint64_t *bulk, uint64_t *resp, void *dst)
{
	uint64_t h[HDR / 8];
	uint8_t body[BODY];

	if (rb_read(r, h, HDR) < 0 || rb_read(r, body, BODY) < 0 || h[0] > MAXSZ)
		return -1;
	*bulk = h[0];
	*resp = h[1];
	return rb_read(r, dst, h[0]);
}

#define NO_REPLY 0
#define HDR_ONLY UINT64_MAX

/* VGPU_BENCH_IDLE=N: N more connections on the listener, each with a
 * server thread blocked in recv, as in a vgpud serving idle clients. */
static int n_idle(void)
{
	const char *e = getenv("VGPU_BENCH_IDLE");

	return e ? atoi(e) : 0;
}

static void *idle_reader(void *arg)
{
	uint8_t b[64];

	while (T->recv(arg, b, 1, sizeof(b)) > 0) {
	}
	return NULL;
}

static void *idle_acceptor(void *arg)
{
	for (int i = 0; i < n_idle(); i++) {
		struct vgpu_tp_conn *c;
		pthread_t th;

		if (T->accept(arg, &c) < 0)
			break;
		pthread_create(&th, NULL, idle_reader, c);
	}
	return NULL;
}

static void tp_server(int wfd)
{
	pthread_t th;
	struct vgpu_tp_addr a;
	struct vgpu_tp_listener *l;
	struct vgpu_tp_conn *c;
	char bound[256];
	uint8_t *buf = malloc(MAXSZ);
	struct rb *r = calloc(1, sizeof(*r));
	uint64_t bulk, resp;
	uint16_t port;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	tp_load();
	tp_addr(&a, 0);
	if (!buf || !r || T->listen(&a, &l, bound, sizeof(bound)) < 0)
		die("listen: %s", errmsg);
	memset(buf, 0xa5, MAXSZ);
	port = (uint16_t)atoi(strrchr(bound, ':') + 1);
	if (write(wfd, &port, 2) != 2)
		_exit(1);
	close(wfd);
	if (T->accept(l, &c) < 0)
		die("accept: %s", errmsg);
	if (n_idle())
		pthread_create(&th, NULL, idle_acceptor, l);
	r->c = c;
	while (tp_frame(r, &bulk, &resp, buf) == 0) {
		uint64_t off = 0;

		if (resp == NO_REPLY)
			continue;
		if (resp == HDR_ONLY)
			resp = 0;
		/* a reply of more than 1 MiB goes as 1 MiB messages, in
		 * flight together (send_deferred), as vgpud's direct dtoh */
		do {
			uint64_t k = resp - off < CHUNK ? resp - off : CHUNK;

			if (tp_msg_how(c, k, NO_REPLY, buf + off, resp > CHUNK) < 0)
				_exit(1);
			off += k;
		} while (off < resp);
		if (tp_flush(c) < 0)
			_exit(1);
	}
	_exit(0);
}

static struct vgpu_tp_conn *tc;
static struct rb *trb;

static uint16_t tp_port;

/* Fork before any UCX state exists in this process: a child must not
 * inherit a UCX context (its async thread does not survive fork). */
static void tp_start(void)
{
	int p[2];
	pid_t pid;

	if (pipe(p))
		die("pipe");
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		tp_server(p[1]);
	}
	kids[nkids++] = pid;
	close(p[1]);
	if (read(p[0], &tp_port, 2) != 2)
		die("the transport's server did not start");
	close(p[0]);
}

static void tp_connect(void)
{
	struct vgpu_tp_addr a;

	tp_load();
	tp_addr(&a, tp_port);
	if (T->connect(&a, 10000, &tc) < 0)
		die("connect: %s", errmsg);
	for (int i = 0; i < n_idle(); i++) {
		struct vgpu_tp_conn *idle;

		if (T->connect(&a, 10000, &idle) < 0)
			die("connect: %s", errmsg);
	}
	trb = calloc(1, sizeof(*trb));
	if (!trb)
		die("out of memory");
	trb->c = tc;
}

/* One request, its reply read into hbuf. */
static void tp_call(size_t req, uint64_t resp)
{
	uint64_t b, r;

	if (tp_msg(tc, req, resp, hbuf) < 0 || tp_frame(trb, &b, &r, hbuf) < 0)
		die("call: %s", errmsg);
}

/* A copy the protocol way: 1 MiB messages, the last one answered. */
static void tp_copy(int htod, size_t n)
{
	size_t off = 0;

	if (!htod) {
		uint64_t b, r;

		if (tp_msg(tc, 0, n, NULL) < 0)
			die("send: %s", errmsg);
		for (off = 0; off < n; off += b)
			if (tp_frame(trb, &b, &r, hbuf + off) < 0 || !b)
				die("dtoh: %s", errmsg);
		return;
	}
	if (n <= CHUNK) {
		tp_call(n, HDR_ONLY);
		return;
	}
	/* the chunks in flight together (send_deferred), flushed before the
	 * reply is read, as the client sends a large synchronous htod */
	while (off < n) {
		size_t k = n - off < CHUNK ? n - off : CHUNK;
		uint64_t b, r;

		if (tp_msg_how(tc, k, off + k == n ? HDR_ONLY : NO_REPLY, hbuf + off, 1) < 0)
			die("send: %s", errmsg);
		off += k;
		if (off == n && (tp_flush(tc) < 0 || tp_frame(trb, &b, &r, hbuf) < 0))
			die("htod: %s", errmsg);
	}
}

static double tp_metric(int m, size_t n)
{
	unsigned k;
	double t0;

	switch (m) {
	case M_RTT:
		for (unsigned i = 0; i < 100; i++)
			tp_call(64, 64);
		t0 = now();
		for (unsigned i = 0; i < rtt_n(); i++)
			tp_call(64, 64);
		return (now() - t0) / rtt_n() * 1e6;
	case M_LAUNCH:
		t0 = now();
		for (unsigned i = 0; i < launch_n(); i++)
			if (tp_msg(tc, 96 - HDR - BODY, NO_REPLY, hbuf) < 0)
				die("send: %s", errmsg);
		tp_call(0, HDR_ONLY);
		return launch_n() / (now() - t0);
	default:
		k = iters(n);
		tp_copy(m == M_HTOD, n);
		t0 = now();
		for (unsigned i = 0; i < k; i++)
			tp_copy(m == M_HTOD, n);
		return (double)n * k / (now() - t0) / 1e9;
	}
}

/* ------------------------------------------------------------------------ */
/* Raw UCX floor: the same as bench_transports'                             */

/* The raw UCX floor (ucx_floor.c), with this benchmark's counts. */
static double ux_metric(int m, size_t n)
{
	return ux_floor_metric(m, n, m == M_RTT ? rtt_n() : m == M_LAUNCH ? launch_n() : iters(n));
}

/* ------------------------------------------------------------------------ */

int main(void)
{
	static const char *const label[4] = { "rtt 64B us", "launches/s", "htod", "dtoh" };
	const char *cpus = getenv("VGPU_BENCH_CPUS");
	const char *only = getenv("VGPU_BENCH_ONLY");
	static const char *const keys[4] = { "rtt", "launch", "htod", "dtoh" };
	int rounds;

	quick = getenv("VGPU_BENCH_QUICK") && atoi(getenv("VGPU_BENCH_QUICK"));
	rounds = quick ? 1 : 3;
	if (!getenv("VGPU_TRANSPORT_PATH")) {
		char cwd[2048], tp[2200];
		if (getcwd(cwd, sizeof(cwd))) {
			snprintf(tp, sizeof(tp), "%s/transports/rdma/.libs", cwd);
			setenv("VGPU_TRANSPORT_PATH", tp, 1);
		}
	}
	if (cpus && *cpus) {
		cpu_set_t set;

		CPU_ZERO(&set);
		while (*cpus) {
			CPU_SET(atoi(cpus), &set);
			cpus += strcspn(cpus, ",");
			if (*cpus == ',')
				cpus++;
		}
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			die("sched_setaffinity: %s", strerror(errno));
	}
	signal(SIGPIPE, SIG_IGN);
	hbuf = malloc(MAXSZ);
	if (!hbuf)
		die("out of memory");
	memset(hbuf, 0x5a, MAXSZ);
	tp_start();
	kids[nkids++] = ux_floor_start(hbuf, MAXSZ);
	tp_connect();

	printf("rdma transport alone vs raw UCX active messages, loopback, UCX_TLS=%s, %s\n",
	       getenv("UCX_TLS") ? getenv("UCX_TLS") : "default", quick ? "quick run" : "full run");
	printf("%-16s %12s %12s %8s\n", "", "transport", "floor", "ratio");
	for (int m = M_RTT; m <= M_DTOH; m++)
		for (int sz = 0; sz < (m >= M_HTOD ? 4 : 1); sz++) {
			double bt = m == M_RTT ? 1e30 : 0, bf = bt;
			char name[32];

			if (only && *only && !strstr(only, keys[m]))
				continue;

			for (int r = 0; r < rounds; r++) {
				double f = ux_metric(m, sizes[sz]), v = tp_metric(m, sizes[sz]);

				if (m == M_RTT) {
					bf = f < bf ? f : bf;
					bt = v < bt ? v : bt;
				} else {
					bf = f > bf ? f : bf;
					bt = v > bt ? v : bt;
				}
			}
			if (m >= M_HTOD)
				snprintf(name, sizeof(name), "%s %zuK GB/s", label[m], sizes[sz] >> 10);
			else
				snprintf(name, sizeof(name), "%s", label[m]);
			printf(m == M_LAUNCH ? "%-16s %12.0f %12.0f %8.2f\n" : "%-16s %12.3f %12.3f %8.2f\n",
			       name, bt, bf, bt / bf);
			fflush(stdout);
		}
	T->close(tc);
	for (int i = 0; i < nkids; i++) {
		kill(kids[i], SIGTERM);
		waitpid(kids[i], NULL, 0);
	}
	return 0;
}
