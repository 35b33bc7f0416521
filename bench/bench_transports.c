/* SPDX-License-Identifier: MIT */
/*
 * bench_transports.c - every transport against its floor (make bench).
 *
 * One vgpud listens on tcp, unix, uring and rdma at once (rdma when the
 * module is found). For each transport, through the public API:
 *   rtt     synchronous 64-byte call (vgpu_memcpy_htod, NULL stream), us
 *   launch  pipelined empty-kernel launches on a stream, then one sync, /s
 *   htod/dtoh bandwidth of synchronous copies of 4 KiB, 64 KiB, 1 MiB, 64 MiB
 * and beside each figure the floor measured in the same run on the same
 * machine, without libvgpu:
 *   tcp, uring: raw TCP sockets (blocking send/recv) to a raw echo server;
 *   unix: raw unix sockets;
 *   rdma: raw UCX active messages to a raw UCX server, with the same
 *         UCX_TLS (both sides spin briefly, then sleep on the worker's
 *         event fd, as the rdma transport does).
 *   uring, also: a raw io_uring floor (uring_floor.c): the same exchanges
 *         with every byte moved by io_uring on both sides, printed as its
 *         own row against the raw TCP floor, and the uring row against it;
 *   rtt floor: 64-byte request, 64-byte reply. launch floor: 96-byte
 *   messages, one send call each, then one round trip. copy floors: a
 *   request of n bytes answered by 16 (htod) or a 16-byte request answered
 *   by n bytes (dtoh), i.e. the same round trips as a synchronous copy.
 * and the ratio figure/floor (time ratio for rtt: lower is better). Each
 * figure and its floor are measured alternately, three times (or
 * VGPU_BENCH_ROUNDS), best kept; the floor goes first in odd rounds, the
 * API in even ones.
 *
 * Environment: VGPU_BENCH_QUICK=1 (fewer iterations), VGPU_BENCH_CPUS=0
 * (pin every process to these CPUs: on a small VM, waking a halted vCPU
 * costs tens of microseconds and makes unpinned runs bimodal), VGPU_BENCH_TRANSPORTS
 * (comma list, default tcp,unix,uring,rdma), VGPU_BENCH_ONLY=rtt,launch,htod,dtoh
 * (rows to run, default all), VGPU_BENCH_SIZES=4K,64K,1M,64M (copy sizes to
 * run, default all; skipped cells print as 0), VGPU_BENCH_SCALE=N (N times as
 * many copies per measurement: steadier figures, longer runs),
 * VGPU_BENCH_ROUNDS=N (N alternate measurements of each figure and its
 * floor instead of 3), VGPU_BENCH_DEVOFF=0..63 (the copies' device address
 * modulo 64; by default that of the row's host buffer, see dd_off),
 * VGPU_BENCH_EACH=1 (every round to stderr), VGPU_TRANSPORT_PATH, UCX_*.
 */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vgpu.h>
#ifdef VGPU_HAVE_UCX
#include "ucx_floor.h"
#endif
#include "uring_floor.h"

#define MAXSZ (64u << 20)
static const size_t sizes[4] = { 4096, 65536, 1u << 20, 64u << 20 };
static int quick;
static unsigned scale = 1; /* VGPU_BENCH_SCALE: copies per measurement x N */
static int nrounds = 3;    /* VGPU_BENCH_ROUNDS: measurements of each figure */
static char tmpdir[128];
static pid_t kids[4];
static int nkids;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, const char *a)
{
	fprintf(stderr, "bench_transports: ");
	fprintf(stderr, fmt, a);
	fprintf(stderr, "\n");
	for (int i = 0; i < nkids; i++)
		kill(kids[i], SIGKILL);
	exit(1);
}

static void cleanup(void)
{
	char p[300];

	for (int i = 0; i < nkids; i++) {
		kill(kids[i], SIGTERM);
		waitpid(kids[i], NULL, 0);
	}
	nkids = 0;
	snprintf(p, sizeof(p), "%s/vgpud.log", tmpdir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/raw.sock", tmpdir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/vgpud.sock", tmpdir);
	unlink(p);
	rmdir(tmpdir);
}

static unsigned iters(size_t n)
{
	/* the large sizes at 0.2-0.7 s per measurement: 8 copies of 64 MiB
	 * (0.1 s) spread 0.84-0.98 of the floor from run to run on a 2-vCPU VM */
	unsigned k = n <= 4096 ? 3000 : n <= 65536 ? 1500 : n <= (1u << 20) ? 600 : 32;
	return quick ? (k / 8 ? k / 8 : 2) : k * scale;
}

/* ------------------------------------------------------------------------ */
/* Raw socket floor: server and client                                      */

struct rawhdr {
	uint64_t req, resp;
};

static int rd_all(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	while (n) {
		ssize_t r = recv(fd, b, n, 0);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static int wr_all(int fd, struct iovec *iov, int n)
{
	while (n) {
		struct msghdr mh = { 0 };
		ssize_t w;

		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)n;
		w = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (n && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* The floor's sockets get the transports' buffers: 4 MiB, or
 * VGPU_TCP_SNDBUF / VGPU_TCP_RCVBUF when set (0: the kernel's sizing).
 * The same sizes the tcp transport takes (its parser is not exported);
 * anything else ends the run. */
static int sockbuf_env(const char *env)
{
	const char *v = getenv(env);
	char *end;
	unsigned long long n;

	if (!v || !*v)
		return 4 << 20;
	n = strtoull(v, &end, 10);
	if (*end == 'K' || *end == 'k')
		n <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		n <<= 20, end++;
	else if (*end == 'G' || *end == 'g')
		n <<= 30, end++;
	if (end == v || *end || *v == '-' || n > (1u << 30))
		die("%s: expected a socket buffer size of at most 1G, such as 256K", env);
	return (int)n;
}

static void tune(int fd, int tcp)
{
	int one = 1, snd = sockbuf_env("VGPU_TCP_SNDBUF"), rcv = sockbuf_env("VGPU_TCP_RCVBUF");

	if (tcp)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (snd)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
	if (rcv)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
}

/*
 * The raw socket server reads ahead: each receive takes what has arrived,
 * up to 8 KiB, so a request of a few KiB comes with its header in one
 * system call, and the rest of a larger one goes straight to its buffer
 * after a copy of at most 8 KiB. (Until 2026-12-07 it read the header,
 * then the body: two system calls per small request, which vgpud never
 * makes, so the socket floors' round trip and small copies were slower
 * than they need be. A 64 KiB read-ahead, as vgpud's own 128 KiB, would
 * copy a 64 KiB request whole: slower than the floor can be.)
 */
#define RAW_AHEAD (8u * 1024)

static void *raw_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	uint8_t *buf = uf_bulk_alloc(MAXSZ), *ra = malloc(RAW_AHEAD);
	size_t have = 0; /* bytes at the start of ra */
	struct rawhdr h;

	while (buf && ra) {
		size_t body;

		while (have < sizeof(h)) {
			ssize_t r = recv(fd, ra + have, RAW_AHEAD - have, 0);

			if (r <= 0 && !(r < 0 && errno == EINTR))
				goto out;
			if (r > 0)
				have += (size_t)r;
		}
		memcpy(&h, ra, sizeof(h));
		if (h.req > MAXSZ || h.resp > MAXSZ)
			break;
		body = have - sizeof(h) < h.req ? have - sizeof(h) : h.req;
		memcpy(buf, ra + sizeof(h), body);
		if (body < h.req && rd_all(fd, buf + body, h.req - body) < 0)
			break;
		have -= sizeof(h) + body;
		memmove(ra, ra + sizeof(h) + body, have);
		if (h.resp) {
			/* a header (the UF_HDR bytes in front) and the answer */
			struct iovec iov = { buf - UF_HDR, UF_HDR + h.resp };
			if (wr_all(fd, &iov, 1) < 0)
				break;
		}
	}
out:
	uf_bulk_free(buf);
	free(ra);
	close(fd);
	return NULL;
}

/* Child: accept on the three sockets (TCP, unix: blocking system calls;
 * TCP served by io_uring: uring_floor.c), one thread per connection. */
static void raw_server(int tfd, int ufd, int ifd)
{
	struct pollfd p[3] = { { tfd, POLLIN, 0 }, { ufd, POLLIN, 0 }, { ifd, POLLIN, 0 } };

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	uf_serve_max = MAXSZ;
	for (;;) {
		if (poll(p, 3, -1) < 0)
			continue;
		for (int i = 0; i < 3; i++)
			if (p[i].revents & POLLIN) {
				int c = accept(p[i].fd, NULL, NULL);
				pthread_t th;
				if (c < 0)
					continue;
				tune(c, i != 1);
				pthread_create(&th, NULL, i == 2 ? uf_serve : raw_conn,
					       (void *)(intptr_t)c);
				pthread_detach(th);
			}
	}
}

static struct sockaddr_in raw_tcp_sa, raw_iou_sa;
static struct sockaddr_un raw_unix_sa;

static void raw_start(void)
{
	int tfd = socket(AF_INET, SOCK_STREAM, 0), ufd = socket(AF_UNIX, SOCK_STREAM, 0);
	int ifd = socket(AF_INET, SOCK_STREAM, 0);
	socklen_t sl = sizeof(raw_tcp_sa), il = sizeof(raw_iou_sa);
	pid_t pid;

	memset(&raw_tcp_sa, 0, sizeof(raw_tcp_sa));
	raw_tcp_sa.sin_family = AF_INET;
	raw_tcp_sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	raw_iou_sa = raw_tcp_sa;
	memset(&raw_unix_sa, 0, sizeof(raw_unix_sa));
	raw_unix_sa.sun_family = AF_UNIX;
	snprintf(raw_unix_sa.sun_path, sizeof(raw_unix_sa.sun_path), "%s/raw.sock", tmpdir);
	if (tfd < 0 || ufd < 0 || ifd < 0 ||
	    bind(tfd, (struct sockaddr *)&raw_tcp_sa, sizeof(raw_tcp_sa)) || listen(tfd, 16) ||
	    getsockname(tfd, (struct sockaddr *)&raw_tcp_sa, &sl) ||
	    bind(ifd, (struct sockaddr *)&raw_iou_sa, sizeof(raw_iou_sa)) || listen(ifd, 16) ||
	    getsockname(ifd, (struct sockaddr *)&raw_iou_sa, &il) ||
	    bind(ufd, (struct sockaddr *)&raw_unix_sa, sizeof(raw_unix_sa)) || listen(ufd, 16))
		die("raw server: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		raw_server(tfd, ufd, ifd);
	kids[nkids++] = pid;
	close(tfd);
	close(ufd);
	close(ifd);
}

enum { RAW_TCP, RAW_UNIX, RAW_IOU };

/* A connection to the raw server: plain system calls, or io_uring (uf). */
struct raw {
	int fd;
	struct uf_conn *uf;
};

static void raw_connect(int kind, struct raw *r)
{
	int fd = socket(kind == RAW_UNIX ? AF_UNIX : AF_INET, SOCK_STREAM, 0);
	int rc = kind == RAW_UNIX ? connect(fd, (struct sockaddr *)&raw_unix_sa, sizeof(raw_unix_sa))
		 : kind == RAW_IOU ? connect(fd, (struct sockaddr *)&raw_iou_sa, sizeof(raw_iou_sa))
				   : connect(fd, (struct sockaddr *)&raw_tcp_sa, sizeof(raw_tcp_sa));
	if (fd < 0 || rc < 0)
		die("raw connect: %s", strerror(errno));
	tune(fd, kind != RAW_UNIX);
	r->fd = fd;
	r->uf = NULL;
	/* not owned: the uring transport's client ring is not either */
	if (kind == RAW_IOU && !(r->uf = uf_open(fd, 0)))
		die("io_uring floor: %s", strerror(errno));
}

static void raw_close(struct raw *r)
{
	uf_close(r->uf);
	if (r->fd >= 0)
		close(r->fd);
}

static uint8_t *hbuf; /* host buffer, MAXSZ */

static int raw_call(struct raw *r, size_t req, size_t resp)
{
	struct rawhdr h = { req, resp };
	struct iovec iov[2] = { { &h, sizeof(h) }, { hbuf, req } };

	/* an answer: a header, into the UF_HDR bytes in front of hbuf, and
	 * its bytes */
	if (resp)
		resp += UF_HDR;
	if (r->uf)
		return uf_xfer(r->uf, iov, req ? 2 : 1, hbuf - UF_HDR, resp, resp) < 0 ? -1 : 0;
	if (wr_all(r->fd, iov, req ? 2 : 1) < 0)
		return -1;
	return resp ? rd_all(r->fd, hbuf - UF_HDR, resp) : 0;
}

struct figs {
	double rtt_us, launch_s, htod[4], dtoh[4]; /* bandwidth in GB/s */
	int ok;
};

enum { M_RTT, M_LAUNCH, M_HTOD, M_DTOH };

static unsigned rtt_n(void)
{
	return quick ? 1000 : 5000;
}

static unsigned launch_n(void)
{
	return quick ? 20000 : 100000;
}

/* One measurement over a raw connection (socket or io_uring): us (rtt),
 * messages/s, or GB/s. */
static double raw_metric(struct raw *r, int m, size_t n)
{
	unsigned k;
	double t0;

	switch (m) {
	case M_RTT:
		for (unsigned i = 0; i < 100; i++)
			raw_call(r, 64, 64);
		t0 = now();
		for (unsigned i = 0; i < rtt_n(); i++)
			if (raw_call(r, 64, 64) < 0)
				die("raw rtt: %s", strerror(errno));
		return (now() - t0) / rtt_n() * 1e6;
	case M_LAUNCH:
		t0 = now();
		for (unsigned i = 0; i < launch_n(); i++)
			if (raw_call(r, 96, 0) < 0)
				die("raw launch: %s", strerror(errno));
		if (raw_call(r, 16, 16) < 0)
			die("raw launch: %s", strerror(errno));
		return launch_n() / (now() - t0);
	default:
		k = iters(n);
		t0 = 0;
		/* one copy first, untimed; a failed exchange ends the run
		 * rather than print a figure for it */
		for (unsigned i = 0; i <= k; i++) {
			if (i == 1)
				t0 = now();
			if (m == M_HTOD ? raw_call(r, n, 16) < 0 : raw_call(r, 16, n) < 0)
				die("raw copy: %s", strerror(errno));
		}
		return (double)n * k / (now() - t0) / 1e9;
	}
}

/* ------------------------------------------------------------------------ */
/* Raw UCX floor                                                            */

#ifdef VGPU_HAVE_UCX
/* The raw UCX floor (ucx_floor.c), with this benchmark's counts. */
static double ux_metric(int m, size_t n)
{
	return ux_floor_metric(m, n, m == M_RTT ? rtt_n() : m == M_LAUNCH ? launch_n() : iters(n));
}
#endif

/* ------------------------------------------------------------------------ */
/* vgpud and the API                                                        */

static char uris[4][256]; /* tcp, unix, uring, rdma */
static const char *const names[4] = { "tcp", "unix", "uring", "rdma" };

static int have_rdma_module(void)
{
	const char *p = getenv("VGPU_TRANSPORT_PATH");
	char path[4096];

	if (!p)
		return 0;
	snprintf(path, sizeof(path), "%.*s/transport_rdma.so", (int)strcspn(p, ":"), p);
	return access(path, R_OK) == 0;
}

static void vgpud_start(int rdma)
{
	char log[300], sock[300], u[300], buf[8192];
	const char *vgpud = getenv("VGPU_BENCH_VGPUD");
	const char *argv[16];
	int argc = 0, fd;
	pid_t pid;
	double t0;

	snprintf(log, sizeof(log), "%s/vgpud.log", tmpdir);
	snprintf(sock, sizeof(sock), "%s/vgpud.sock", tmpdir);
	snprintf(u, sizeof(u), "unix://%s", sock);
	argv[argc++] = vgpud ? vgpud : "tools/vgpud";
	argv[argc++] = "--allow-native-modules";
	argv[argc++] = "--listen";
	argv[argc++] = "tcp://127.0.0.1:0";
	argv[argc++] = "--listen";
	argv[argc++] = u;
	argv[argc++] = "--listen";
	argv[argc++] = "uring://127.0.0.1:0";
	if (rdma) {
		argv[argc++] = "--listen";
		argv[argc++] = "rdma://127.0.0.1:0";
	}
	argv[argc] = NULL;
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fd);
	kids[nkids++] = pid;
	t0 = now();
	while (now() - t0 < 20) {
		FILE *f = fopen(log, "r");
		size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		int found = 0;

		if (f)
			fclose(f);
		buf[n] = 0;
		for (int i = 0; i < 4; i++) {
			char pre[64], *p;
			snprintf(pre, sizeof(pre), "listening on %s://", names[i]);
			if ((p = strstr(buf, pre)) && strchr(p, '\n')) {
				p += strlen("listening on ");
				snprintf(uris[i], sizeof(uris[i]), "%.*s/0", (int)strcspn(p, "\n"), p);
				found++;
			}
		}
		if (found == 3 + rdma)
			return;
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			nkids--;
			die("vgpud exited: %s", buf);
		}
		usleep(20000);
	}
	die("vgpud did not start: %s", buf);
}

struct api {
	vgpu_t *v;
	vgpu_function *fn;
	vgpu_stream *s;
	vgpu_dptr d;  /* MAXSZ + 64 bytes of device memory */
	vgpu_dptr dd; /* where the copies go: d + dd_off */
	uint8_t *h;   /* the host side of the copies */
};

/*
 * Every row's copies use the buffers its floor is fastest with, figure and
 * floor alike (docs/transports.md, Benchmark):
 *  - sockets (tcp, unix, uring): hbuf, UF_HDR past a 64-byte boundary, and
 *    the device address at the same offset modulo 64 (dd_off). The raw
 *    floors' bytes sit at the same offset modulo 64 in the sender's buffer,
 *    in the stream and in the receiver's buffer, where the kernel copies
 *    them fastest on both ends; at the page-aligned start of vgpud's device
 *    memory a copy's source and destination would disagree and the sender's
 *    copy would pay for it (io_uring floor, 1 MiB: 3-4 %);
 *  - rdma: pbuf, page-aligned, the device allocation's start, and the raw
 *    UCX server's buffer page-aligned too: UCX's tcp transport moves
 *    page-aligned buffers faster (raw UCX, 1 MiB dtoh: 3.5 GB/s against
 *    1.8 with glibc's malloc, 16 bytes past a page).
 * VGPU_BENCH_DEVOFF sets dd_off for every row.
 */
static uint8_t *pbuf;
static size_t dd_off = UF_HDR, dd_off_rdma = 0;

static void api_open(const char *uri, struct api *a, int rdma)
{
	vgpu_module *m;
	char path[4096];
	const char *dir = getenv("VGPU_BENCH_MODDIR");

	if (vgpu_open(&a->v, uri) != VGPU_OK)
		die("open: %s", vgpu_last_error());
	snprintf(path, sizeof(path), "%s/bench_transport_kernels.so", dir ? dir : "bench/.libs");
	if (vgpu_module_load_file(a->v, path, &m) || vgpu_module_function(m, "empty", &a->fn) ||
	    vgpu_stream_create(a->v, &a->s, 0) || vgpu_mem_alloc(a->v, MAXSZ + 64, &a->d))
		die("setup: %s", vgpu_last_error());
	a->dd = a->d + (rdma ? dd_off_rdma : dd_off);
	a->h = rdma ? pbuf : hbuf;
}

static double api_metric(struct api *a, int m, size_t n)
{
	unsigned k;
	double t0;

	switch (m) {
	case M_RTT:
		for (unsigned i = 0; i < 100; i++)
			vgpu_memcpy_htod(a->v, a->d, hbuf, 64, NULL);
		t0 = now();
		for (unsigned i = 0; i < rtt_n(); i++)
			if (vgpu_memcpy_htod(a->v, a->d, hbuf, 64, NULL))
				die("htod: %s", vgpu_last_error());
		return (now() - t0) / rtt_n() * 1e6;
	case M_LAUNCH:
		t0 = now();
		for (unsigned i = 0; i < launch_n(); i++)
			if (vgpu_launch(a->v, a->fn, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
					a->s, NULL, 0))
				die("launch: %s", vgpu_last_error());
		if (vgpu_stream_synchronize(a->s))
			die("sync: %s", vgpu_last_error());
		return launch_n() / (now() - t0);
	default:
		k = iters(n);
		if (m == M_HTOD) {
			vgpu_memcpy_htod(a->v, a->dd, a->h, n, NULL);
			t0 = now();
			for (unsigned i = 0; i < k; i++)
				if (vgpu_memcpy_htod(a->v, a->dd, a->h, n, NULL))
					die("htod: %s", vgpu_last_error());
		} else {
			vgpu_memcpy_dtoh(a->v, a->h, a->dd, n, NULL);
			t0 = now();
			for (unsigned i = 0; i < k; i++)
				if (vgpu_memcpy_dtoh(a->v, a->h, a->dd, n, NULL))
					die("dtoh: %s", vgpu_last_error());
		}
		return (double)n * k / (now() - t0) / 1e9;
	}
}

/*
 * Row i: every figure and its floor, measured alternately ROUNDS times
 * (floor, API, floor, API, ...) and the best of each kept, so that a busy
 * neighbour on the machine does not land on one side only.
 */
/* VGPU_BENCH_ONLY, VGPU_BENCH_SIZES: is this cell wanted? */
static int wanted(int m, int sz)
{
	static const char *const keys[4] = { "rtt", "launch", "htod", "dtoh" };
	static const char *const szk[4] = { "4K", "64K", "1M", "64M" };
	const char *only = getenv("VGPU_BENCH_ONLY"), *want = getenv("VGPU_BENCH_SIZES");

	if (only && *only && !strstr(only, keys[m]))
		return 0;
	if (m >= M_HTOD && want && *want) {
		char list[128], tok[8];

		snprintf(list, sizeof(list), ",%s,", want);
		snprintf(tok, sizeof(tok), ",%s,", szk[sz]);
		return strstr(list, tok) != NULL;
	}
	return 1;
}

/* the better of two figures of metric m (lower for rtt) */
static double better(int m, double a, double b)
{
	return m == M_RTT ? (a < b ? a : b) : (a > b ? a : b);
}

static void keep_fig(struct figs *f, int m, int sz, double v)
{
	if (m == M_RTT)
		f->rtt_us = v;
	else if (m == M_LAUNCH)
		f->launch_s = v;
	else if (m == M_HTOD)
		f->htod[sz] = v;
	else
		f->dtoh[sz] = v;
}

/*
 * Row i: the API's figures and the floor's, measured alternately. iou (the
 * uring row only, else NULL): the raw io_uring floor too, into iuf, measured
 * in the same rounds, after the raw socket floor.
 */
static void measure_row(int i, struct api *a, struct raw *raw, struct raw *iou, struct figs *api,
			struct figs *flo, struct figs *iuf)
{
	int rounds = quick ? 1 : nrounds;

	for (int m = M_RTT; m <= M_DTOH; m++)
		for (int sz = 0; sz < (m >= M_HTOD ? 4 : 1); sz++) {
			double best_a = m == M_RTT ? 1e30 : 0, best_f = best_a, best_i = best_a;

			if (!wanted(m, sz)) {
				best_a = best_f = best_i = 0;
				goto keep;
			}

			for (int r = 0; r < rounds; r++) {
				double f, v = 0;
				/* the API first every other round: whichever
				 * runs second may find the machine in another
				 * state (caches, pages the first one freed) */
				if (r & 1)
					v = api_metric(a, m, sizes[sz]);
#ifdef VGPU_HAVE_UCX
				if (i == 3)
					f = ux_metric(m, sizes[sz]);
				else
#endif
					f = raw_metric(raw, m, sizes[sz]);
				if (iou)
					best_i = better(m, best_i, raw_metric(iou, m, sizes[sz]));
				if (!(r & 1))
					v = api_metric(a, m, sizes[sz]);
				if (getenv("VGPU_BENCH_EACH"))
					fprintf(stderr, "  each %s %d %zu round %d: %.3f / floor %.3f\n",
						names[i], m, m >= M_HTOD ? sizes[sz] : 0, r, v, f);
				best_f = better(m, best_f, f);
				best_a = better(m, best_a, v);
			}
		keep:
			keep_fig(api, m, sz, best_a);
			keep_fig(flo, m, sz, best_f);
			if (iou)
				keep_fig(iuf, m, sz, best_i);
			if (best_f > 0)
				fprintf(stderr, "  %s %d %zu: %.3f / floor %.3f\n", names[i], m,
					m >= M_HTOD ? sizes[sz] : 0, best_a, best_f);
		}
	api->ok = flo->ok = 1;
	if (iou)
		iuf->ok = 1;
}

/* ------------------------------------------------------------------------ */

static void cell(char *out, size_t len, double v, double floor, int lower_better, const char *fmt)
{
	char a[32], b[32];

	if (floor == 0) { /* not measured (VGPU_BENCH_ONLY, VGPU_BENCH_SIZES) */
		snprintf(out, len, "-");
		return;
	}
	snprintf(a, sizeof(a), fmt, v);
	snprintf(b, sizeof(b), fmt, floor);
	snprintf(out, len, "%s / %s (%.2f)", a, b, lower_better ? v / floor : v / floor);
}

/* One cell of the uring/tcp lines: u/t, or (u/fu)/(t/ft); "-" if not run. */
static void ut_cell(int norm, double u, double t, double fu, double ft)
{
	if (u <= 0 || t <= 0 || fu <= 0 || ft <= 0)
		printf(" -");
	else
		printf(" %.2f", norm ? (u / fu) / (t / ft) : u / t);
}

/* "label: rtt r (time), launches r, htod r r r r, dtoh r r r r": u against
 * t, figure by figure, or (norm) each divided by its floor fu, ft first. */
static void ratio_line(const char *label, int norm, const struct figs *u, const struct figs *t,
		       const struct figs *fu, const struct figs *ft)
{
	printf("%s: rtt", label);
	ut_cell(norm, u->rtt_us, t->rtt_us, fu->rtt_us, ft->rtt_us);
	printf(" (time), launches");
	ut_cell(norm, u->launch_s, t->launch_s, fu->launch_s, ft->launch_s);
	printf(", htod");
	for (int s = 0; s < 4; s++)
		ut_cell(norm, u->htod[s], t->htod[s], fu->htod[s], ft->htod[s]);
	printf(", dtoh");
	for (int s = 0; s < 4; s++)
		ut_cell(norm, u->dtoh[s], t->dtoh[s], fu->dtoh[s], ft->dtoh[s]);
	printf("\n");
}

/* One row of the table: f against its floor fl. */
static void table_row(const char *name, const struct figs *f, const struct figs *fl)
{
	char c[64];

	printf("%-8s", name);
	cell(c, sizeof(c), f->rtt_us, fl->rtt_us, 1, "%.1f");
	printf(" %-28s", c);
	cell(c, sizeof(c), f->launch_s, fl->launch_s, 0, "%.0f");
	printf(" %-30s", c);
	for (int s = 0; s < 4; s++) {
		cell(c, sizeof(c), f->htod[s], fl->htod[s], 0, "%.3f");
		printf(" %-26s", c);
	}
	for (int s = 0; s < 4; s++) {
		cell(c, sizeof(c), f->dtoh[s], fl->dtoh[s], 0, "%.3f");
		printf(" %-26s", c);
	}
	printf("\n");
}

int main(void)
{
	const char *want = getenv("VGPU_BENCH_TRANSPORTS");
	struct figs api[4], flo[4], iuf;
	int rdma;

	if (!want || !*want)
		want = "tcp,unix,uring,rdma";
	if (!getenv("VGPU_TRANSPORT_PATH")) {
		/* the build tree's module (make bench runs in the build dir) */
		char cwd[2048], tp[2200];
		if (getcwd(cwd, sizeof(cwd))) {
			snprintf(tp, sizeof(tp), "%s/transports/rdma/.libs", cwd);
			setenv("VGPU_TRANSPORT_PATH", tp, 1);
		}
	}
	rdma = have_rdma_module();
	quick = getenv("VGPU_BENCH_QUICK") && atoi(getenv("VGPU_BENCH_QUICK"));
	if (getenv("VGPU_BENCH_SCALE") && atoi(getenv("VGPU_BENCH_SCALE")) > 0)
		scale = (unsigned)atoi(getenv("VGPU_BENCH_SCALE"));
	if (getenv("VGPU_BENCH_ROUNDS") && atoi(getenv("VGPU_BENCH_ROUNDS")) > 0)
		nrounds = atoi(getenv("VGPU_BENCH_ROUNDS"));
	if (getenv("VGPU_BENCH_DEVOFF") && *getenv("VGPU_BENCH_DEVOFF")) {
		char *end;
		unsigned long v = strtoul(getenv("VGPU_BENCH_DEVOFF"), &end, 10);

		if (*end || v > 63)
			die("VGPU_BENCH_DEVOFF=%s: expected 0 to 63", getenv("VGPU_BENCH_DEVOFF"));
		dd_off = dd_off_rdma = v;
	}
	if (getenv("VGPU_BENCH_CPUS") && *getenv("VGPU_BENCH_CPUS")) {
		/* "0" or "0,1": pin everything (children inherit it) */
		cpu_set_t set;
		const char *p = getenv("VGPU_BENCH_CPUS");

		CPU_ZERO(&set);
		while (*p) {
			CPU_SET(atoi(p), &set);
			p += strcspn(p, ",");
			if (*p == ',')
				p++;
		}
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			die("sched_setaffinity: %s", strerror(errno));
	}
	signal(SIGPIPE, SIG_IGN);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/vgpu-bench-tp-XXXXXX");
	if (!mkdtemp(tmpdir))
		die("mkdtemp: %s", strerror(errno));
	atexit(cleanup);
	hbuf = uf_bulk_alloc(MAXSZ);
	if (!hbuf || posix_memalign((void **)&pbuf, 4096, MAXSZ))
		die("%s", "out of memory");
	memset(hbuf, 0x5a, MAXSZ);
	memset(pbuf, 0x5a, MAXSZ);
	memset(api, 0, sizeof(api));
	memset(flo, 0, sizeof(flo));
	memset(&iuf, 0, sizeof(iuf));
	if (!strstr(want, "rdma"))
		rdma = 0;
	vgpud_start(rdma);
	raw_start();
#ifdef VGPU_HAVE_UCX
	if (rdma) {
		kids[nkids++] = ux_floor_start(pbuf, MAXSZ);
	}
#endif
	for (int i = 0; i < 4; i++) {
		struct api a;
		struct raw raw = { -1, NULL }, iou = { -1, NULL };

		if (!strstr(want, names[i]) || !uris[i][0])
			continue;
		fprintf(stderr, "bench_transports: %s\n", uris[i]);
		if (i != 3)
			raw_connect(i == 1 ? RAW_UNIX : RAW_TCP, &raw);
		if (i == 2)
			raw_connect(RAW_IOU, &iou);
		api_open(uris[i], &a, i == 3);
		measure_row(i, &a, &raw, i == 2 ? &iou : NULL, &api[i], &flo[i], &iuf);
		vgpu_close(a.v);
		raw_close(&raw);
		raw_close(&iou);
	}

	printf("libvgpu transports vs floor, loopback, %s (figure / floor (ratio))\n",
	       quick ? "quick run" : "full run");
	printf("floors: tcp, uring: raw TCP sockets; unix: raw unix sockets; rdma: raw UCX active "
	       "messages (UCX_TLS=%s)\n", getenv("UCX_TLS") ? getenv("UCX_TLS") : "default");
	if (iuf.ok)
		printf("io_uring row: the raw io_uring floor (the raw socket floor's exchanges, every "
		       "byte moved by io_uring on both sides) / the raw TCP floor\n");
	printf("%-8s %-28s %-30s", "", "rtt 64B us (lower better)", "launches/s");
	for (int s = 0; s < 4; s++)
		printf(" htod %-5s GB/s             ", s == 0 ? "4K" : s == 1 ? "64K" : s == 2 ? "1M" : "64M");
	for (int s = 0; s < 4; s++)
		printf(" dtoh %-5s GB/s             ", s == 0 ? "4K" : s == 1 ? "64K" : s == 2 ? "1M" : "64M");
	printf("\n");
	for (int i = 0; i < 4; i++) {
		if (!api[i].ok) {
			if (strstr(want, names[i]))
				printf("%-8s (not available: %s)\n", names[i],
				       i == 3 ? "no rdma module (UCX) in VGPU_TRANSPORT_PATH" : "?");
			continue;
		}
		table_row(names[i], &api[i], &flo[i]);
	}
	/* the raw io_uring floor (measured in the uring row's rounds) against
	 * the raw TCP floor: what io_uring itself costs on this machine */
	if (iuf.ok)
		table_row("io_uring", &iuf, &flo[2]);
	/* uring against tcp, row by row: the figures as measured, then each
	 * transport's ratio to the raw TCP floor measured beside it, which
	 * takes out a machine that got slower or faster between the two rows
	 * (both floors are the same raw socket) */
	if (api[0].ok && api[2].ok) {
		ratio_line("uring/tcp", 0, &api[2], &api[0], &flo[2], &flo[0]);
		ratio_line("uring/tcp (each / its floor)", 1, &api[2], &api[0], &flo[2], &flo[0]);
	}
	/* the uring transport against the mechanism it is built on */
	if (iuf.ok && api[2].ok)
		ratio_line("uring/io_uring floor", 0, &api[2], &iuf, &iuf, &iuf);
	/* the raw io_uring floor against the tcp transport, each over the raw
	 * TCP floor: what "uring/tcp (each / its floor)" would read with the
	 * uring transport exactly at its floor. A cell below 1 (above 1 for
	 * the rtt, a time) is one that uring cannot win on this machine
	 * without beating io_uring's own floor. No launch cell: the raw
	 * launch floor is a stream of messages, not a figure of the engine. */
	if (iuf.ok && api[0].ok) {
		struct figs at = iuf;

		at.launch_s = 0;
		ratio_line("io_uring floor/tcp (each / its floor)", 1, &at, &api[0], &flo[2], &flo[0]);
	}
	return 0;
}
