/* SPDX-License-Identifier: MIT */
/*
 * uring.c - the io_uring transport (uring://host:port): the same TCP
 * sockets as the tcp transport (listen, accept and connect are shared),
 * with every byte of a message moved by io_uring.
 *
 * Per connection, two rings: one for the reader thread, one for senders
 * (serialised by a mutex), so that neither side reaps the other's
 * completions; vgpud's reader thread sends its small replies on the
 * receive ring (see uring_send).
 *
 *  - send: a small message (at most FLAT_MAX bytes) is gathered into one
 *    buffer and sent with one SEND; otherwise the iovecs of one call become
 *    a chain of linked SQEs (SENDMSG for runs of small segments, SEND_ZC for
 *    bulk segments of at least zc_min bytes when the kernel has it and the
 *    peer is not local). Submitted and waited for with one io_uring_enter.
 *    A zero-copy send completes twice: the result, then a notification
 *    (IORING_CQE_F_NOTIF) once the kernel no longer reads the buffer; send()
 *    returns only after every notification, so the caller may reuse its
 *    buffer at once.
 *  - recv: one plain RECV straight into the caller's memory (the protocol
 *    layer's 128 KiB read-ahead buffer, or the destination of bulk bytes),
 *    submitted and waited for with one io_uring_enter; after a receive that
 *    emptied the socket the next one arms its poll first
 *    (IORING_RECVSEND_POLL_FIRST). Opt-in (VGPU_URING_MULTISHOT=1): small
 *    reads served from a multishot receive into a ring of provided buffers,
 *    which a bulk read (direct_min bytes) cancels. Not the default: with one
 *    reader thread per connection it saves no system call, copies what it
 *    receives twice and costs a cancel and a re-arm around each bulk read
 *    (measured: bulk bandwidth about 15% lower, the same round trip).
 *  - send_recv: a request and the start of its reply in one io_uring_enter
 *    (SEND and RECV on the receive ring): the client's synchronous call,
 *    and vgpud's reader sending a reply while it waits for the next
 *    request. With a timeout (vgpud's frame timeout), a SEND that does not
 *    complete breaks the connection; a RECV that does not is cancelled and
 *    the call returns VGPU_ERR_TIMEOUT, the request delivered.
 *
 * Owned receive rings (the accepting side): vgpud's per-connection reader
 * thread is the only one that enters the receive ring (its receives, its
 * fused replies, its small replies), so that ring is created with
 * IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
 * IORING_SETUP_R_DISABLED by the accepting thread and enabled by the reader
 * on its first receive, which makes it the ring's submitter task. Its
 * completion work then runs inside that thread's io_uring_enter rather
 * than as task work that interrupts it. Probed once (an ordinary ring
 * when the kernel refuses; VGPU_URING_DEFER=0 forces that). Not on the
 * connecting side: the client hands its reading role from thread to
 * thread, and with multishot receives the ring stays ordinary too. The
 * send ring is entered by whatever thread sends (vgpud's writer), so it
 * stays ordinary as well.
 *
 * Kernel features are probed at run time (io_uring_get_probe_ring,
 * IORING_FEAT_*, buffer ring and file registration, the first multishot
 * CQE, EINVAL for POLL_FIRST); each missing one has a fallback (SENDMSG,
 * plain RECV, the socket's own fd, a receive tried first). When io_uring
 * itself is unavailable (io_uring_setup fails with EPERM or ENOSYS: the
 * kernel.io_uring_disabled sysctl, a seccomp profile, an old kernel),
 * listen and connect fail with a message that says so.
 *
 * Environment: VGPU_URING_ZC_MIN=BYTES (zero-copy threshold, default 64K;
 * 0 disables zero-copy; when set, it applies to loopback peers too, which
 * otherwise never use zero-copy), VGPU_URING_MULTISHOT=1 (multishot
 * receive), VGPU_URING_BUFS=N (its provided buffers, power of two 4..64,
 * default 32), VGPU_URING_DIRECT_MIN=BYTES (reads of this size bypass them,
 * default 64K), VGPU_URING_DEFER=0 (no owned receive rings).
 */
#include "config.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "error.h"
#include "transport.h"

#define RING_ENTRIES 64
#define MAX_BUFS 64         /* provided buffers: at most */
static unsigned nbufs = 32; /* power of two; VGPU_URING_BUFS */
#define BUFSZ (16u * 1024)  /* bytes each */
#define BGID 7
/* reads of this size bypass the provided buffers: the protocol layer reads
 * bulk of 64 KiB and more with min == max (vgpu__rbuf_read) */
static size_t direct_min = 64u * 1024; /* VGPU_URING_DIRECT_MIN */
#define MAX_SQE 16          /* per send batch */
#define FLAT_MAX 8192       /* smaller messages are gathered into one SEND */
#define FUSE_MAX (128u * 1024) /* larger requests are sent apart from send_recv */

#define UD_MS 1ull          /* multishot receive */
#define UD_DIRECT 2ull      /* plain receive */
#define UD_CANCEL 3ull
#define UD_SEND 4ull        /* the request of send_recv */
#define UD_CHAIN 0x100ull   /* + index: the SQEs of one send */

struct feats {
	int ok;          /* io_uring usable */
	int err;         /* errno of io_uring_queue_init when not */
	int send_zc;
	int multishot;   /* may be cleared at run time (EINVAL on first use) */
	int bufring;
	int poll_first;  /* IORING_RECVSEND_POLL_FIRST (5.19); cleared on EINVAL */
	int defer;       /* SINGLE_ISSUER | DEFER_TASKRUN | R_DISABLED rings (6.1) */
	unsigned setup_flags;
	unsigned features;
};

static struct feats F;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static size_t zc_min = 64u * 1024;
static int zc_loopback; /* zero-copy to a loopback peer too (VGPU_URING_ZC_MIN set) */

struct vgpu_tp_conn {
	int fd;
	char peer[128];
	uint32_t timeout_ms;

	/* receive side: the reader thread only */
	struct io_uring rr;
	int rr_ok;
	int rr_owned;    /* rr is SINGLE_ISSUER | DEFER_TASKRUN, created disabled */
	int rr_enabled;  /* ... and enabled by its one thread (the first receive) */
	int drained;     /* the last receive emptied the socket */
	pthread_mutex_t rlock; /* held for each receive: a sender that takes it may use rr */
	pthread_t rthread;     /* the thread of the last receive */
	int accepted;          /* server side: one thread receives, and answers */
	int rfix;        /* the socket is registered file 0 of rr */
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	int use_ms;
	int ms_armed;
	pthread_t ms_owner; /* thread that armed it: its task runs the completions */
	int eof;
	int rerr;        /* errno of a failed receive */
	struct { uint16_t bid; uint32_t off, len; } q[MAX_BUFS];
	unsigned qh, qn;

	/* send side */
	pthread_mutex_t slock;
	struct io_uring sr;
	int sr_ok;
	int sfix;        /* ... of sr */
	int zc;          /* SEND_ZC for bulk segments on this connection */
};

static void probe(void)
{
	struct io_uring r;
	struct io_uring_params p;
	struct io_uring_probe *pr;
	const char *e;
	int rc;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL;
	rc = io_uring_queue_init_params(4, &r, &p);
	if (rc == -EINVAL) {
		memset(&p, 0, sizeof(p));
		rc = io_uring_queue_init_params(4, &r, &p);
	}
	if (rc < 0) {
		F.err = -rc;
		return;
	}
	F.ok = 1;
	F.setup_flags = p.flags;
	F.features = p.features;
	pr = io_uring_get_probe_ring(&r);
	if (pr) {
		F.send_zc = io_uring_opcode_supported(pr, IORING_OP_SEND_ZC);
		/* multishot recv arrived with buffer rings (5.19/6.0); both
		 * are confirmed at first use */
		F.multishot = io_uring_opcode_supported(pr, IORING_OP_RECV) &&
			      (p.features & IORING_FEAT_FAST_POLL);
		io_uring_free_probe(pr);
	}
	F.bufring = 1;
	F.poll_first = 1;
	io_uring_queue_exit(&r);
	/* a ring only its reader thread enters (the server's) can defer its
	 * completion work to that thread's next io_uring_enter */
	memset(&p, 0, sizeof(p));
	p.flags = F.setup_flags | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_R_DISABLED;
	if (io_uring_queue_init_params(4, &r, &p) == 0) {
		F.defer = 1;
		io_uring_queue_exit(&r);
	}
	e = getenv("VGPU_URING_DEFER");
	if (e && !strcmp(e, "0"))
		F.defer = 0;
	e = getenv("VGPU_URING_ZC_MIN");
	if (e && *e) {
		uint64_t v;
		if (vgpu__parse_size(e, &v) == VGPU_OK)
			zc_min = v ? (size_t)v : 0;
		zc_loopback = 1;
	}
	if (!zc_min)
		F.send_zc = 0;
	e = getenv("VGPU_URING_BUFS");
	if (e && *e) {
		unsigned v = (unsigned)atoi(e);
		if (v >= 4 && v <= MAX_BUFS && !(v & (v - 1)))
			nbufs = v;
	}
	e = getenv("VGPU_URING_DIRECT_MIN");
	if (e && *e) {
		uint64_t v;
		if (vgpu__parse_size(e, &v) == VGPU_OK)
			direct_min = (size_t)v;
	}
	/* opt-in: see the top of the file */
	e = getenv("VGPU_URING_MULTISHOT");
	if (!e || strcmp(e, "1"))
		F.multishot = 0;
	vgpu_debug("uring: features 0x%x, send_zc %d (threshold %zu), multishot %d, defer %d",
		   F.features, F.send_zc, zc_min, F.multishot, F.defer);
}

/* what: "uring://host:port: " (listen) or "" (connect: the client prefixes its URI). */
static vgpu_status unavailable(int err, const char *what)
{
	if (err == EPERM || err == ENOSYS || err == EACCES)
		return vgpu__error(VGPU_ERR_UNSUPPORTED,
				   "%sio_uring is not available on this system: io_uring_setup: %s "
				   "(disabled by the sysctl kernel.io_uring_disabled, a seccomp profile "
				   "such as a container runtime's, or a kernel without io_uring); use "
				   "tcp:// instead", what, strerror(err));
	return vgpu__error(VGPU_ERR_UNSUPPORTED, "%scannot create an io_uring: %s", what,
			   strerror(err));
}

static int ring_init(struct io_uring *r, unsigned extra)
{
	struct io_uring_params p;

	memset(&p, 0, sizeof(p));
	p.flags = F.setup_flags | extra;
	return io_uring_queue_init_params(RING_ENTRIES, r, &p);
}

#define OWNED_FLAGS \
	(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED)

/*
 * The first receive on a connection whose receive ring is owned (created
 * disabled, SINGLE_ISSUER): enable it from this thread, which becomes the
 * one task allowed to enter it. Should the kernel refuse, an ordinary
 * ring replaces it. 0 or -errno.
 */
static int rr_enable(struct vgpu_tp_conn *c)
{
	/* io_uring_enable_rings is declared but not exported by liburing 2.3:
	 * the register call it makes */
	int rc = (int)syscall(__NR_io_uring_register, c->rr.ring_fd, IORING_REGISTER_ENABLE_RINGS,
			      NULL, 0);

	if (rc < 0)
		rc = -errno;
	if (rc == 0) {
		c->rr_enabled = 1;
		/* only this thread enters the ring: a registered ring fd spares
		 * each io_uring_enter the fdget of the ring (released by
		 * io_uring_queue_exit, or when this thread exits) */
		io_uring_register_ring_fd(&c->rr);
		return 0;
	}
	vgpu_debug("uring: enabling an owned ring: %s; an ordinary one instead", strerror(-rc));
	io_uring_queue_exit(&c->rr);
	c->rr_ok = c->rr_owned = 0;
	rc = ring_init(&c->rr, 0);
	if (rc < 0)
		return rc;
	c->rr_ok = 1;
	c->rfix = io_uring_register_files(&c->rr, &c->fd, 1) == 0;
	return 0;
}

/* Register the provided-buffer ring of c's receive ring; 0 or -errno. */
static int bufring_setup(struct vgpu_tp_conn *c)
{
	struct io_uring_buf_reg reg;
	size_t rsz = nbufs * sizeof(struct io_uring_buf);
	int rc;

	c->br = mmap(NULL, rsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (c->br == MAP_FAILED) {
		c->br = NULL;
		return -ENOMEM;
	}
	c->bufs = malloc((size_t)nbufs * BUFSZ);
	if (!c->bufs) {
		munmap(c->br, rsz);
		c->br = NULL;
		return -ENOMEM;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)c->br;
	reg.ring_entries = nbufs;
	reg.bgid = BGID;
	rc = io_uring_register_buf_ring(&c->rr, &reg, 0);
	if (rc < 0) {
		munmap(c->br, rsz);
		free(c->bufs);
		c->br = NULL;
		c->bufs = NULL;
		return rc;
	}
	io_uring_buf_ring_init(c->br);
	for (unsigned i = 0; i < nbufs; i++)
		io_uring_buf_ring_add(c->br, c->bufs + (size_t)i * BUFSZ, BUFSZ, (unsigned short)i,
				      io_uring_buf_ring_mask(nbufs), (int)i);
	io_uring_buf_ring_advance(c->br, nbufs);
	return 0;
}

static void buf_return(struct vgpu_tp_conn *c, uint16_t bid)
{
	io_uring_buf_ring_add(c->br, c->bufs + (size_t)bid * BUFSZ, BUFSZ, bid,
			      io_uring_buf_ring_mask(nbufs), 0);
	io_uring_buf_ring_advance(c->br, 1);
}

/*
 * A loopback peer gains nothing from SEND_ZC: the kernel copies into the
 * receiver's socket anyway (IORING_NOTIF_USAGE_ZC_COPIED), and waiting for
 * the notification ties every send to the receiver's reading.
 */
static int is_loopback(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss.ss_family == AF_INET6) {
		const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return 0;
}

/* Wrap a connected socket. */
static vgpu_status conn_make(int fd, const char *peer, int accepted, struct vgpu_tp_conn **out)
{
	struct vgpu_tp_conn *c = calloc(1, sizeof(*c));
	int rc;

	if (!c) {
		close(fd);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	}
	c->fd = fd;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	pthread_mutex_init(&c->slock, NULL);
	pthread_mutex_init(&c->rlock, NULL);
	c->accepted = accepted;
	/* server side: one reader thread enters the receive ring, and only
	 * it (send uses it from that thread alone): an owned ring */
	rc = -EINVAL;
	if (accepted && F.defer && !F.multishot) {
		rc = ring_init(&c->rr, OWNED_FLAGS);
		c->rr_owned = rc == 0;
	}
	if (rc < 0)
		rc = ring_init(&c->rr, 0);
	if (rc < 0)
		goto fail;
	c->rr_ok = 1;
	rc = ring_init(&c->sr, 0);
	if (rc < 0)
		goto fail;
	c->sr_ok = 1;
	/* a registered socket spares every request an fget/fput */
	c->rfix = io_uring_register_files(&c->rr, &fd, 1) == 0;
	c->sfix = io_uring_register_files(&c->sr, &fd, 1) == 0;
	if (F.multishot && F.bufring && bufring_setup(c) == 0)
		c->use_ms = 1;
	c->zc = F.send_zc && (zc_loopback || !is_loopback(fd));
	*out = c;
	return VGPU_OK;
fail:
	if (c->rr_ok)
		io_uring_queue_exit(&c->rr);
	pthread_mutex_destroy(&c->slock);
	pthread_mutex_destroy(&c->rlock);
	close(fd);
	free(c);
	return unavailable(-rc, "");
}

/* ---- listen / accept / connect: the tcp transport's sockets ---- */

static vgpu_status check_available(const struct vgpu_tp_addr *u, int listening)
{
	pthread_once(&probe_once, probe);
	if (!F.ok) {
		char what[300] = "";
		if (listening)
			snprintf(what, sizeof(what), "uring://%s:%d: ", u->host, u->port);
		return unavailable(F.err, what);
	}
	return VGPU_OK;
}

static void as_tcp(const struct vgpu_tp_addr *u, struct vgpu_tp_addr *t)
{
	*t = *u;
	t->scheme = "tcp";
}

static vgpu_status uring_listen(const struct vgpu_tp_addr *u, struct vgpu_tp_listener **l,
				char *bound, size_t boundlen)
{
	struct vgpu_tp_addr t;
	char b[320];
	vgpu_status st = check_available(u, 1);

	if (st < 0)
		return st;
	as_tcp(u, &t);
	st = vgpu__transport_tcp.listen(&t, l, b, sizeof(b));
	if (st < 0)
		return st;
	snprintf(bound, boundlen, "uring://%s", strncmp(b, "tcp://", 6) ? b : b + 6);
	return VGPU_OK;
}

static vgpu_status uring_accept(struct vgpu_tp_listener *l, struct vgpu_tp_conn **out)
{
	struct vgpu_tp_conn *tc;
	char peer[128];
	int fd;

	for (;;) {
		vgpu_status st = vgpu__transport_tcp.accept(l, &tc);

		if (st < 0)
			return st;
		fd = vgpu__tcp_conn_release(tc, peer, sizeof(peer));
		st = conn_make(fd, peer, 1, out);
		if (st == VGPU_OK)
			return st;
		vgpu_warn("uring: dropping a connection from %s: %s", peer, vgpu__error_msg());
	}
}

static int uring_listen_is_remote(const struct vgpu_tp_addr *u)
{
	struct vgpu_tp_addr t;

	as_tcp(u, &t);
	return vgpu__transport_tcp.listen_is_remote(&t);
}

static vgpu_status uring_connect(const struct vgpu_tp_addr *u, uint32_t timeout_ms,
				 struct vgpu_tp_conn **out)
{
	struct vgpu_tp_addr t;
	struct vgpu_tp_conn *tc;
	char peer[128];
	vgpu_status st = check_available(u, 0);

	if (st < 0)
		return st;
	as_tcp(u, &t);
	st = vgpu__transport_tcp.connect(&t, timeout_ms, &tc);
	if (st < 0)
		return st;
	int fd = vgpu__tcp_conn_release(tc, peer, sizeof(peer));
	return conn_make(fd, peer, 0, out);
}

/* ---- completions ---- */

/* Point sqe (prepared on c->fd) at the registered socket when there is one. */
static void sqe_fix(struct io_uring_sqe *sqe, int fix)
{
	if (fix) {
		sqe->fd = 0;
		sqe->flags |= IOSQE_FIXED_FILE;
	}
}

/*
 * Submit what is queued on r and wait for a completion, in one
 * io_uring_enter (none when a completion is already there and nothing is
 * queued). ms: timeout (0 = none); -ETIME when it expires.
 */
static int wait_cqe(struct io_uring *r, struct io_uring_cqe **cqe, uint32_t ms)
{
	struct __kernel_timespec ts = { (long long)(ms / 1000), (long long)(ms % 1000) * 1000000 };
	int rc;

	for (;;) {
		*cqe = NULL;
		rc = io_uring_submit_and_wait_timeout(r, cqe, 1, ms ? &ts : NULL, NULL);
		if (rc == -EINTR)
			continue;
		if (rc < 0)
			return rc;
		if (*cqe)
			return 0;
		/* liburing 2.3 returns the count submitted and no CQE when the
		 * wait that followed in the same io_uring_enter timed out: wait
		 * again, with nothing left to submit, to get -ETIME */
	}
}

/* ---- send ---- */

static vgpu_status send_fail(struct vgpu_tp_conn *c, int err)
{
	if (err == ETIME || err == EAGAIN)
		return vgpu__error(VGPU_ERR_CONNECTION, "send to %s: timed out", c->peer);
	return vgpu__error(VGPU_ERR_CONNECTION, "send to %s: %s", c->peer, strerror(err));
}

static void rr_complete(struct vgpu_tp_conn *c, struct io_uring_cqe *cqe);

/*
 * Copy iov_in to iov; a small message (a request, a reply: header and body)
 * is gathered into flat, since one SEND of one buffer costs the kernel less
 * than a SENDMSG of several. Returns the new count.
 */
static int send_iov(struct iovec *iov, const struct iovec *iov_in, int n, uint8_t *flat)
{
	size_t total = 0, off = 0;

	for (int k = 0; k < n; k++)
		total += iov_in[k].iov_len;
	if (n < 2 || total > FLAT_MAX) {
		memcpy(iov, iov_in, (size_t)n * sizeof(*iov));
		return n;
	}
	for (int k = 0; k < n; k++) {
		if (iov_in[k].iov_len)
			memcpy(flat + off, iov_in[k].iov_base, iov_in[k].iov_len);
		off += iov_in[k].iov_len;
	}
	iov[0].iov_base = flat;
	iov[0].iov_len = total;
	return 1;
}

/*
 * Submit the whole iovec array as one linked chain, wait for every result
 * and every zero-copy notification; resubmit what a short send left.
 */
static vgpu_status uring_send(struct vgpu_tp_conn *c, const struct iovec *iov_in, int n)
{
	struct iovec iov[MAX_SQE];
	struct msghdr mh[MAX_SQE];
	size_t want[MAX_SQE];
	int res[MAX_SQE];
	uint8_t flat[FLAT_MAX];
	struct io_uring *ring = &c->sr;
	int fix = c->sfix;
	int i = 0, err = 0;
	vgpu_status st = VGPU_OK;

	if (n > MAX_SQE)
		return vgpu__error(VGPU_ERR_INTERNAL, "uring send: %d iovecs (at most %d)", n, MAX_SQE);
	n = send_iov(iov, iov_in, n, flat);
	pthread_mutex_lock(&c->slock);
	/*
	 * vgpud's reader answering a request sends on the receive ring: a
	 * thread that alternates between two rings pays io_uring a lookup of
	 * its per-task context (it caches one ring) on every io_uring_enter
	 * (measured: 1.8 us of vgpud's CPU per 64 KiB dtoh went to 1.3 with
	 * this and the registered ring fd, against tcp). Any message, only
	 * while no receive runs (rlock), only on the server side where no
	 * other thread ever waits to receive.
	 */
	if (c->accepted && !c->use_ms && pthread_mutex_trylock(&c->rlock) == 0) {
		if (pthread_equal(c->rthread, pthread_self())) {
			ring = &c->rr;
			fix = c->rfix;
		} else {
			pthread_mutex_unlock(&c->rlock);
		}
	}
	while (i < n) {
		int nsqe = 0, done = 0, notifs = 0, rc;
		struct io_uring_sqe *sqe = NULL;

		while (i < n && iov[i].iov_len == 0)
			i++;
		if (i == n)
			break;
		/* build the chain */
		for (int j = i; j < n;) {
			if (iov[j].iov_len == 0) {
				j++;
				continue;
			}
			sqe = io_uring_get_sqe(ring);
			if (!sqe)
				break;
			if (c->zc && iov[j].iov_len >= zc_min) {
				io_uring_prep_send_zc(sqe, c->fd, iov[j].iov_base, iov[j].iov_len,
						      MSG_NOSIGNAL | MSG_WAITALL, 0);
				want[nsqe] = iov[j].iov_len;
				j++;
			} else {
				int k = j;
				size_t len = 0;

				while (k < n && !(c->zc && iov[k].iov_len >= zc_min)) {
					len += iov[k].iov_len;
					k++;
				}
				if (k - j == 1) {
					/* SEND: no msghdr to copy in, no iovec to import */
					io_uring_prep_send(sqe, c->fd, iov[j].iov_base, len,
							   MSG_NOSIGNAL | MSG_WAITALL);
				} else {
					memset(&mh[nsqe], 0, sizeof(mh[nsqe]));
					mh[nsqe].msg_iov = iov + j;
					mh[nsqe].msg_iovlen = (size_t)(k - j);
					io_uring_prep_sendmsg(sqe, c->fd, &mh[nsqe],
							      MSG_NOSIGNAL | MSG_WAITALL);
				}
				want[nsqe] = len;
				j = k;
			}
			sqe_fix(sqe, fix);
			sqe->flags |= IOSQE_IO_LINK;
			io_uring_sqe_set_data64(sqe, UD_CHAIN + (uint64_t)nsqe);
			res[nsqe] = -ECANCELED;
			nsqe++;
		}
		if (sqe)
			sqe->flags &= (unsigned char)~IOSQE_IO_LINK;
		rc = io_uring_submit_and_wait(ring, (unsigned)nsqe);
		if (rc < 0 && rc != -EINTR) {
			err = -rc;
			break;
		}
		/* reap: results and notifications */
		while (done < nsqe || notifs > 0) {
			struct io_uring_cqe *cqe;

			rc = wait_cqe(ring, &cqe, c->timeout_ms);
			if (rc < 0) {
				/* timed out: break the socket, then drain */
				shutdown(c->fd, SHUT_RDWR);
				if (!err)
					err = -rc;
				continue;
			}
			uint64_t k = io_uring_cqe_get_data64(cqe) - UD_CHAIN;

			if (k >= (uint64_t)nsqe) {
				rr_complete(c, cqe); /* on rr: a cancel's late result */
			} else if (cqe->flags & IORING_CQE_F_NOTIF) {
				notifs--;
			} else {
				res[k] = cqe->res;
				if (cqe->flags & IORING_CQE_F_MORE)
					notifs++;
				done++;
			}
			io_uring_cqe_seen(ring, cqe);
		}
		if (err)
			break;
		/* advance over what was sent */
		for (int k = 0; k < nsqe; k++) {
			size_t w;

			if (res[k] < 0) {
				if (res[k] == -ECANCELED && k > 0)
					break; /* after a short send: resubmit */
				if (res[k] == -EINVAL && c->zc && want[k] >= zc_min) {
					c->zc = 0; /* no zero-copy for this socket type */
					break;
				}
				err = -res[k];
				break;
			}
			w = (size_t)res[k];
			while (w > 0 && i < n) {
				if (w >= iov[i].iov_len) {
					w -= iov[i].iov_len;
					iov[i].iov_len = 0;
					i++;
				} else {
					iov[i].iov_base = (char *)iov[i].iov_base + w;
					iov[i].iov_len -= w;
					w = 0;
				}
			}
			while (i < n && iov[i].iov_len == 0)
				i++;
			if ((size_t)res[k] < want[k])
				break;
		}
		if (err)
			break;
	}
	if (ring == &c->rr)
		pthread_mutex_unlock(&c->rlock);
	pthread_mutex_unlock(&c->slock);
	if (err)
		st = send_fail(c, err);
	return st;
}

/* ---- receive ---- */

static ssize_t recv_fail(struct vgpu_tp_conn *c, size_t got)
{
	if (c->eof)
		return vgpu__error(VGPU_ERR_CONNECTION, "connection closed by peer%s",
				   got ? " mid-message" : "");
	if (c->rerr == ETIME || c->rerr == EAGAIN)
		return vgpu__error(VGPU_ERR_CONNECTION, "receive from %s: timed out", c->peer);
	return vgpu__error(VGPU_ERR_CONNECTION, "receive from %s: %s", c->peer, strerror(c->rerr));
}

/* Handle one receive-ring completion. */
static void rr_complete(struct vgpu_tp_conn *c, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);

	if (ud != UD_MS)
		return; /* cancel results; direct receives are handled by the caller */
	if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
		unsigned slot = (c->qh + c->qn) % nbufs;
		c->q[slot].bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		c->q[slot].off = 0;
		c->q[slot].len = (uint32_t)cqe->res;
		c->qn++;
	} else if (cqe->res == 0) {
		c->eof = 1;
	} else if (cqe->res == -EINVAL && !c->rerr && c->qn == 0) {
		/* kernel without multishot receive: plain receives from now on */
		F.multishot = 0;
		c->use_ms = 0;
	} else if (cqe->res < 0 && cqe->res != -ENOBUFS && cqe->res != -ECANCELED) {
		c->rerr = -cqe->res;
	}
	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->ms_armed = 0;
}

/* Reap every ready completion; wait for one first if block. 0 or -errno. */
static int rr_reap(struct vgpu_tp_conn *c, int block)
{
	struct io_uring_cqe *cqe;
	int rc;

	if (block) {
		rc = wait_cqe(&c->rr, &cqe, c->timeout_ms);
		if (rc < 0)
			return rc;
		rr_complete(c, cqe);
		io_uring_cqe_seen(&c->rr, cqe);
	}
	while (io_uring_peek_cqe(&c->rr, &cqe) == 0 && cqe) {
		rr_complete(c, cqe);
		io_uring_cqe_seen(&c->rr, cqe);
	}
	return 0;
}

static void ms_cancel(struct vgpu_tp_conn *c)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->rr);

	if (sqe) {
		io_uring_prep_cancel64(sqe, UD_MS, 0);
		io_uring_sqe_set_data64(sqe, UD_CANCEL);
	}
	while (c->ms_armed) {
		int rc = rr_reap(c, 1); /* submits the cancel */
		if (rc < 0 && rc != -ETIME)
			break;
	}
}

static ssize_t timed_out(struct vgpu_tp_conn *c)
{
	return vgpu__error(VGPU_ERR_TIMEOUT, "receive from %s: timed out", c->peer);
}

/*
 * One plain RECV straight into buf (bulk, or no multishot receive). A
 * timeout cancels it: nothing lost, the caller may read again, as with
 * SO_RCVTIMEO; a receive that cannot be cancelled breaks the connection.
 * Returns bytes, 0 after an error was recorded in c, or -1 on a timeout.
 */
static ssize_t recv_direct(struct vgpu_tp_conn *c, uint8_t *buf, size_t min, size_t max)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->rr);
	struct io_uring_cqe *cqe;
	int rc, r = 0, timedout = 0, pf;

	if (!sqe) {
		c->rerr = EBUSY;
		return 0;
	}
	io_uring_prep_recv(sqe, c->fd, buf, max, max == min ? MSG_WAITALL : 0);
	sqe_fix(sqe, c->rfix);
	/* after a receive that emptied the socket the next one most likely
	 * waits (the peer answers what we sent): arm the poll at once rather
	 * than try a receive that fails first */
	pf = c->drained && F.poll_first;
	if (pf)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data64(sqe, UD_DIRECT);
	for (;;) {
		rc = wait_cqe(&c->rr, &cqe, timedout ? 1000 : c->timeout_ms);
		if (rc == -ETIME) {
			sqe = timedout++ ? NULL : io_uring_get_sqe(&c->rr);
			if (sqe) {
				io_uring_prep_cancel64(sqe, UD_DIRECT, 0);
				io_uring_sqe_set_data64(sqe, UD_CANCEL);
			} else {
				shutdown(c->fd, SHUT_RD); /* the receive returns now */
				c->rerr = ETIME;
			}
			continue;
		}
		if (rc < 0) {
			/* the ring itself failed: the receive may still run; stop it */
			shutdown(c->fd, SHUT_RD);
			c->rerr = -rc;
			return 0;
		}
		if (io_uring_cqe_get_data64(cqe) == UD_DIRECT) {
			r = cqe->res;
			io_uring_cqe_seen(&c->rr, cqe);
			break;
		}
		rr_complete(c, cqe);
		io_uring_cqe_seen(&c->rr, cqe);
	}
	c->drained = r > 0 && (size_t)r < max;
	if (r == -EINVAL && pf) {
		F.poll_first = 0; /* a kernel before 5.19: try again without */
		return 0;
	}
	if (r > 0)
		return c->rerr == ETIME ? 0 : r; /* bytes after a shutdown: lost with it */
	if (timedout && r == -ECANCELED && !c->rerr)
		return -1;
	if (r == 0 && !c->rerr)
		c->eof = 1;
	else if (r < 0 && !c->rerr)
		c->rerr = -r;
	return 0;
}

static ssize_t recv_locked(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max)
{
	uint8_t *d = buf;
	size_t got = 0;

	if (min == 0)
		min = 1;
	for (;;) {
		/* 1. what the multishot receive already delivered */
		while (c->qn && got < max) {
			unsigned h = c->qh;
			size_t k = c->q[h].len - c->q[h].off;

			if (k > max - got)
				k = max - got;
			memcpy(d + got, c->bufs + (size_t)c->q[h].bid * BUFSZ + c->q[h].off, k);
			got += k;
			c->q[h].off += (uint32_t)k;
			if (c->q[h].off == c->q[h].len) {
				buf_return(c, c->q[h].bid);
				c->qh = (c->qh + 1) % nbufs;
				c->qn--;
			}
		}
		if (got >= min)
			return (ssize_t)got;
		if (c->eof || c->rerr)
			return recv_fail(c, got);

		if (c->use_ms && min - got < direct_min) {
			/* 2a. small read: arm the multishot receive once, wait. The
			 * kernel completes a request in the task that submitted it:
			 * when another thread reads now, re-arm from this one rather
			 * than wake the old one for every arrival. */
			if (c->ms_armed && !pthread_equal(c->ms_owner, pthread_self())) {
				ms_cancel(c);
				continue;
			}
			if (!c->ms_armed) {
				struct io_uring_sqe *sqe = io_uring_get_sqe(&c->rr);

				if (!sqe) {
					c->rerr = EBUSY;
					continue;
				}
				io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
				sqe_fix(sqe, c->rfix);
				sqe->flags |= IOSQE_BUFFER_SELECT;
				sqe->buf_group = BGID;
				io_uring_sqe_set_data64(sqe, UD_MS);
				c->ms_armed = 1;
				c->ms_owner = pthread_self();
			}
			/* armed and waited for in one io_uring_enter */
			int rc = rr_reap(c, 1);
			if (rc == -ETIME) /* still armed: nothing is lost */
				return timed_out(c);
			if (rc < 0)
				c->rerr = -rc;
			continue;
		}
		/* 2b. bulk (or no multishot): straight into the caller's memory */
		if (c->ms_armed) {
			ms_cancel(c);
			continue; /* deliver what it had first */
		}
		ssize_t r = recv_direct(c, d + got, min - got, max - got);
		if (r < 0)
			return timed_out(c);
		got += (size_t)r;
	}
}

static vgpu_status rr_ready(struct vgpu_tp_conn *c);

static ssize_t uring_recv(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max)
{
	ssize_t r;

	pthread_mutex_lock(&c->rlock);
	r = rr_ready(c);
	if (r < 0) {
		pthread_mutex_unlock(&c->rlock);
		return r;
	}
	c->rthread = pthread_self();
	r = recv_locked(c, buf, min, max);
	pthread_mutex_unlock(&c->rlock);
	return r;
}

/* The receive ring is usable by this thread: enable an owned ring on its
 * first use (rlock held). 0, or a negative status after an error. */
static vgpu_status rr_ready(struct vgpu_tp_conn *c)
{
	int rc;

	if (c->rr_ok && (!c->rr_owned || c->rr_enabled))
		return VGPU_OK;
	rc = c->rr_ok ? rr_enable(c) : -EBADF;
	if (rc < 0)
		return vgpu__error(VGPU_ERR_CONNECTION, "receive from %s: io_uring: %s", c->peer,
				   strerror(-rc));
	return VGPU_OK;
}

/*
 * A request and the start of its reply in one io_uring_enter: SEND and RECV
 * are submitted together and the call waits for both completions. The send
 * lock is held until the SEND has completed (other senders wait that long,
 * no longer), so no other message can enter the stream in the middle of
 * this one. Requests over FUSE_MAX or with a zero-copy segment, or a
 * multishot receive, take the two-call path.
 *
 * On an owned (DEFER_TASKRUN) ring the SEND is linked to the RECV. A SEND
 * that finds the socket full completes later, by task work run when the
 * peer makes room; on such a ring, unlinked, that task work is "lazy": it
 * wakes the waiter only once as many items are queued as completions are
 * awaited, here two. The peer, reading the reply, sends nothing before it
 * has all of it, so the RECV brings no second item, and the call would
 * wait for its timeout (or for ever) with the reply half sent. The kernel
 * never defers the task work of a linked request (io_req_local_work_add),
 * and a RECV after its SEND costs nothing here: the reply cannot come
 * before the request has left. When the SEND completes at once, as it
 * almost always does, the RECV is issued in the same io_uring_enter.
 * (tests/test_tp_uring: fused_reply_blocked.)
 *
 * With a timeout (vgpud's frame timeout): a SEND that does not complete in
 * time breaks the connection, as in send; a RECV that does not is
 * cancelled and the call returns VGPU_ERR_TIMEOUT: the request left whole,
 * nothing was received, the caller may receive again (vgpud's reader,
 * idle between frames, does).
 */
static ssize_t send_recv_v(struct vgpu_tp_conn *c, const struct iovec *iov_in, int n,
			   const struct iovec *riov, int rn, size_t min)
{
	struct iovec iov[MAX_SQE];
	uint8_t flat[FLAT_MAX];
	struct msghdr mh, rmh;
	void *buf = riov[0].iov_base;
	size_t max = 0;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	uint32_t ms = c->timeout_ms;
	struct __kernel_timespec ts = { (long long)(ms / 1000), (long long)(ms % 1000) * 1000000 };
	int sres = 0, rres = 0, sdone = 0, rdone = 0, rc, err = 0, zc = 0, nf = 0, cancelled = 0;
	int slocked = 1;
	size_t total = 0;
	vgpu_status st;

	for (int k = 0; k < rn; k++)
		max += riov[k].iov_len;
	if (n <= MAX_SQE) {
		nf = send_iov(iov, iov_in, n, flat);
		for (int k = 0; k < nf; k++) {
			total += iov[k].iov_len;
			zc |= c->zc && iov[k].iov_len >= zc_min;
		}
	}
	if (n > MAX_SQE || c->use_ms || c->eof || c->rerr || zc || total > FUSE_MAX ||
	    (c->rr_ok && io_uring_sq_space_left(&c->rr) < 2)) {
		st = uring_send(c, iov_in, n);
		return st < 0 ? st : uring_recv(c, buf, min, riov[0].iov_len);
	}
	if (min == 0)
		min = 1;
	pthread_mutex_lock(&c->rlock);
	st = rr_ready(c);
	if (st < 0) {
		pthread_mutex_unlock(&c->rlock);
		return st;
	}
	c->rthread = pthread_self();
	pthread_mutex_lock(&c->slock);
	sqe = io_uring_get_sqe(&c->rr);
	if (nf == 1) {
		io_uring_prep_send(sqe, c->fd, iov[0].iov_base, total, MSG_NOSIGNAL | MSG_WAITALL);
	} else {
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)nf;
		io_uring_prep_sendmsg(sqe, c->fd, &mh, MSG_NOSIGNAL | MSG_WAITALL);
	}
	sqe_fix(sqe, c->rfix);
	io_uring_sqe_set_data64(sqe, UD_SEND);
	if (c->rr_owned)
		sqe->flags |= IOSQE_IO_LINK; /* see the comment above the function */
	sqe = io_uring_get_sqe(&c->rr);
	if (rn == 1) {
		io_uring_prep_recv(sqe, c->fd, buf, max, max == min ? MSG_WAITALL : 0);
	} else {
		/* a scatter receive (send_recvv) */
		memset(&rmh, 0, sizeof(rmh));
		rmh.msg_iov = (struct iovec *)riov;
		rmh.msg_iovlen = (size_t)rn;
		io_uring_prep_recvmsg(sqe, c->fd, &rmh, max == min ? MSG_WAITALL : 0);
	}
	sqe_fix(sqe, c->rfix);
	if (F.poll_first)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST; /* the reply cannot be there yet */
	io_uring_sqe_set_data64(sqe, UD_DIRECT);
	/* submit both, wait for both: one io_uring_enter when all goes well */
	rc = io_uring_submit_and_wait_timeout(&c->rr, &cqe, 2, ms ? &ts : NULL, NULL);
	for (;;) {
		/* reap first: the wake-up that ended a wait may have completed the
		 * send (its task work runs then) */
		while (io_uring_peek_cqe(&c->rr, &cqe) == 0 && cqe) {
			uint64_t ud = io_uring_cqe_get_data64(cqe);

			if (ud == UD_SEND) {
				sres = cqe->res;
				sdone = 1;
			} else if (ud == UD_DIRECT) {
				rres = cqe->res;
				rdone = 1;
			}
			io_uring_cqe_seen(&c->rr, cqe);
		}
		if (sdone && (sres < 0 || (size_t)sres != total) && !err) {
			/* the request did not leave whole: the reply will not come */
			err = sres < 0 ? -sres : EPIPE;
			shutdown(c->fd, SHUT_RDWR);
		}
		if (sdone && slocked) {
			/* the request has left: other senders may go on */
			pthread_mutex_unlock(&c->slock);
			slocked = 0;
		}
		if (sdone && rdone)
			break;
		if (rc == -ETIME) {
			if (!sdone) {
				/* the request is stuck: the connection is lost */
				if (!err)
					err = ETIME;
				shutdown(c->fd, SHUT_RDWR);
			} else if (!cancelled++ && (sqe = io_uring_get_sqe(&c->rr))) {
				/* no reply in time: take the receive back */
				io_uring_prep_cancel64(sqe, UD_DIRECT, 0);
				io_uring_sqe_set_data64(sqe, UD_CANCEL);
			} else {
				shutdown(c->fd, SHUT_RD); /* it could not be cancelled */
				if (!err)
					err = ETIME;
			}
		} else if (rc < 0 && rc != -EINTR) {
			if (err)
				break; /* the ring keeps failing: give up on it */
			/* the ring failed: stop whatever still runs */
			err = -rc;
			shutdown(c->fd, SHUT_RDWR);
		}
		rc = wait_cqe(&c->rr, &cqe, cancelled || err ? 1000 : ms);
	}
	if (slocked)
		pthread_mutex_unlock(&c->slock);
	pthread_mutex_unlock(&c->rlock);
	if (err)
		return send_fail(c, err);
	if (rres == -EINVAL && F.poll_first) {
		F.poll_first = 0; /* a kernel before 5.19 */
		return uring_recv(c, buf, min, riov[0].iov_len);
	}
	if (rres == -ECANCELED && cancelled)
		return timed_out(c); /* the request left; nothing received yet */
	if (rres == 0)
		c->eof = 1;
	else if (rres < 0)
		c->rerr = -rres;
	if (rres <= 0)
		return recv_fail(c, 0);
	c->drained = (size_t)rres < max;
	if ((size_t)rres >= min)
		return rres;
	/* a short first read (within riov[0]: min is): the rest as usual */
	ssize_t r = uring_recv(c, (uint8_t *)buf + rres, min - (size_t)rres,
			       riov[0].iov_len - (size_t)rres);
	return r < 0 ? r : rres + r;
}

static ssize_t uring_send_recv(struct vgpu_tp_conn *c, const struct iovec *iov, int n, void *buf,
			       size_t min, size_t max)
{
	struct iovec riov = { buf, max };

	return send_recv_v(c, iov, n, &riov, 1, min);
}

static ssize_t uring_send_recvv(struct vgpu_tp_conn *c, const struct iovec *iov, int n,
				const struct iovec *riov, int rn, size_t min)
{
	if (rn < 1 || rn > VGPU_TP_MAX_IOV || min > riov[0].iov_len)
		return vgpu__error(VGPU_ERR_INTERNAL, "uring send_recvv: %d segments, min %zu", rn,
				   min);
	return send_recv_v(c, iov, n, riov, rn, min);
}

static vgpu_status uring_set_timeout(struct vgpu_tp_conn *c, uint32_t ms)
{
	c->timeout_ms = ms;
	return VGPU_OK;
}

static void uring_shutdown(struct vgpu_tp_conn *c, int read_only)
{
	shutdown(c->fd, read_only ? SHUT_RD : SHUT_RDWR);
}

static void uring_close(struct vgpu_tp_conn *c)
{
	if (!c)
		return;
	if (c->rr_ok) {
		if (c->br)
			io_uring_unregister_buf_ring(&c->rr, BGID);
		io_uring_queue_exit(&c->rr);
	}
	if (c->br)
		munmap(c->br, nbufs * sizeof(struct io_uring_buf));
	free(c->bufs);
	if (c->sr_ok)
		io_uring_queue_exit(&c->sr);
	close(c->fd);
	pthread_mutex_destroy(&c->slock);
	pthread_mutex_destroy(&c->rlock);
	free(c);
}

static const char *uring_peer(struct vgpu_tp_conn *c)
{
	return c->peer;
}

static void uring_listen_shutdown(struct vgpu_tp_listener *l)
{
	vgpu__transport_tcp.listen_shutdown(l);
}

static void uring_listen_close(struct vgpu_tp_listener *l)
{
	vgpu__transport_tcp.listen_close(l);
}

static const char *const uring_schemes[] = { "uring", NULL };

const struct vgpu_transport_ops vgpu__transport_uring = {
	.size = sizeof(struct vgpu_transport_ops),
	.abi = VGPU_TRANSPORT_ABI,
	.name = "uring",
	.schemes = uring_schemes,
	.caps = VGPU_TP_CAP_ZEROCOPY_SEND,
	.listen = uring_listen,
	.accept = uring_accept,
	.listen_shutdown = uring_listen_shutdown,
	.listen_close = uring_listen_close,
	.listen_is_remote = uring_listen_is_remote,
	.connect = uring_connect,
	.send = uring_send,
	.recv = uring_recv,
	.set_timeout = uring_set_timeout,
	.shutdown = uring_shutdown,
	.close = uring_close,
	.peer = uring_peer,
	.send_recv = uring_send_recv,
	.send_recvv = uring_send_recvv,
};
