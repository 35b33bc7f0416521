/* SPDX-License-Identifier: MIT */
/*
 * rdma.c - the rdma transport (rdma://host:port): UCX active messages.
 *
 * A module (transport_rdma.so, linked against libucp) loaded by the library
 * on first use of rdma://, so that libvgpu itself never needs UCX. UCX picks
 * RDMA verbs (rc, ud, dc) on InfiniBand or RoCE and tcp or shared memory
 * elsewhere (UCX_TLS, UCX_NET_DEVICES: see docs/transports.md).
 *
 *  - connection: ucp_listener_create on a sockaddr; clients connect with
 *    UCP_EP_PARAMS_FLAGS_CLIENT_SERVER. Endpoints use
 *    UCP_ERR_HANDLING_MODE_PEER: a dead or vanished peer calls err_handler,
 *    and the connection fails with VGPU_ERR_CONNECTION.
 *  - send: the byte stream of one send() becomes active messages
 *    (ucp_am_send_nbx), each carrying [client id, sequence number] as its AM
 *    header.
 *    Each bulk segment (>= BULK_MIN) goes as its own message straight from
 *    the caller's memory, which UCX sends with rendezvous above its rndv
 *    threshold; the small segments just before it (a protocol header and
 *    body) ride in its AM header after the ids. Other small segments are
 *    gathered into one eager message. send() returns when every message has
 *    completed, so the caller may reuse its buffers. send_deferred() does
 *    not wait for its last segment's bulk message (its AM header lives in a
 *    per-connection slot, at most FLIGHT_MAX in flight); flush() waits for
 *    them. A waiting sender that sees shutdown, a dead peer or its timeout
 *    closes the endpoint by force, so UCX cancels what is in flight before
 *    the caller gets its memory back.
 *  - recv: the AM handler copies small messages into a reused queue item,
 *    keeps larger eager data (UCP_AM_FLAG_PERSISTENT_DATA, no copy) or the
 *    rendezvous descriptor (UCP_AM_RECV_ATTR_FLAG_RNDV), in a
 *    per-connection queue ordered by sequence number. A read that has its
 *    minimum stops in front of bulk; a read that asks for a whole bulk
 *    message fetches it with ucp_am_recv_data_nbx straight into the
 *    caller's memory.
 *  - progress: one UCX worker per connection (the server accepts each
 *    request on a worker of its own) and one per listener for connection
 *    requests. Threads needing progress take turns: one
 *    drives ucp_worker_progress and sleeps on the worker's event fd
 *    (ucp_worker_arm), the others wait on a condition variable.
 *
 * Bad input never crashes: a message with a wrong header size, an unknown
 * sender or a length beyond RECV_MAX kills that connection only.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <ucp/api/ucp.h>

#include <vgpu/transport.h>

#define AM_ID 17
#define BULK_MIN (64u * 1024)     /* segments sent on their own, zero-copy */
#define RECV_MAX (512ull << 20)   /* largest message accepted */
#define SPIN 16                   /* progress rounds before sleeping */
#define CLOSE_MS 2000
#define BG_IDLE_MS 2              /* background progress after this idle time */
#define INLINE_MAX 256            /* messages copied at arrival, UCX's buffer freed */
#define PACK_MAX 4096             /* small runs sent from one contiguous copy */
#define ITEMS_KEPT 256            /* queue items kept for reuse per worker */
#define FLIGHT_MAX 8              /* send_deferred's bulk messages, recv_deferred's
                                   * fetches: each at most this many in flight */

#define EXPORT __attribute__((visibility("default")))

static const struct vgpu_transport_host *H;
static ucp_context_h ctx;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static ucs_status_t ctx_status = UCS_ERR_NO_RESOURCE;

struct item {
	struct item *next;
	uint64_t seq;
	void *data;     /* eager data (held: release), rndv descriptor, owned copy or inl */
	size_t len, off;
	int kind;       /* K_HELD, K_RNDV, K_OWNED, K_FIN, K_INLINE */
	uint8_t inl[INLINE_MAX];
};
enum { K_HELD, K_RNDV, K_OWNED, K_FIN, K_INLINE };
#define SEQ_ACK UINT64_MAX /* out of band: "your FIN arrived" */

struct op {
	int done;
	ucs_status_t st;
	size_t len;
};

/*
 * UCX requests on a caller's memory still in flight, oldest first (k->m
 * held): send_deferred's bulk messages (UCX reads the memory until each
 * completes) and recv_deferred's rendezvous fetches (UCX writes it).
 */
struct flight {
	struct {
		void *req;
		struct op o;
	} e[FLIGHT_MAX];
	unsigned head, count;
	int failed;          /* one failed, or was given up: the connection's error */
	int cancel;          /* giving up cancels each request (fetches) */
	const char *dir;     /* "send to", "receive from": in messages */
	const char *timeout; /* why the deadline gave up */
};

struct wk {
	ucp_worker_h w;
	pthread_mutex_t m;
	pthread_cond_t cv;
	int efd, wakefd;
	/* written under m; polling, waiters, last_active and stop are also
	 * read without it (atomics) by the background thread, which takes m
	 * only when the worker looks idle */
	int polling, bg_polling; /* a thread sleeps on efd (the background one) */
	int waiters;             /* callers inside wk_wait */
	int stop;
	uint64_t last_active;    /* ms: when the last caller left wk_wait */
	pthread_mutex_t bgm;     /* the background thread's sleep, apart from m */
	pthread_cond_t bgcv;     /* (only stop wakes it early) */
	pthread_t bg;
	int bg_started;
	struct vgpu_tp_conn *conns; /* endpoints on this worker */
	int shared;                 /* a listener's: not freed with a connection */
	struct item *spare;         /* reusable queue items: no malloc per message */
	int nspare;
	int piggyback;              /* AM headers fit ids + INLINE_MAX bytes */
};

struct vgpu_tp_conn {
	struct vgpu_tp_conn *next;
	struct wk *k;
	ucp_ep_h ep;
	uint64_t id;    /* the client's id: sent in every message's AM header */
	char peer[128];
	uint32_t timeout_ms;
	int dead, rd_shut, wr_shut;
	int ep_gone;    /* the endpoint was closed by force (conn_abort) */
	int peer_fin;   /* the peer's FIN reached the reader: end of stream */
	int acked;      /* the peer received our FIN (and all before it) */
	uint64_t ack_hdr[2], fin_hdr[2]; /* control messages in flight */
	uint64_t pack[PACK_MAX / sizeof(uint64_t)]; /* send's small run (k->m held) */
	ucp_dt_iov_t ack_iov, fin_iov;
	char why[256];
	uint64_t tx_seq, rx_seq;
	struct item *qh, *qt; /* received, by sequence number */
	size_t queued;
	struct flight held;     /* send_deferred's bulk messages */
	/* their AM headers (ids and the small bytes riding before the bulk),
	 * slot for slot with held.e */
	uint64_t held_hdr[FLIGHT_MAX][(2 * sizeof(uint64_t) + INLINE_MAX) / sizeof(uint64_t)];
	struct flight fetches;  /* recv_deferred's fetches (failed: recv_flush says so) */
};

struct creq {
	struct creq *next;
	ucp_conn_request_h r;
};

struct vgpu_tp_listener {
	struct wk k;
	ucp_listener_h l;
	struct creq *reqs;
	pthread_cond_t acv; /* accept's own (k.cv is for progress waiters) */
	int stop;
};

static void rdma_close_internal(struct vgpu_tp_conn *c);

/* ---- helpers ---- */

static vgpu_status uerr(vgpu_status st, const char *what, ucs_status_t s)
{
	return H->error(st, "%s: %s", what, ucs_status_string(s));
}

static void ctx_init(void)
{
	ucp_config_t *cfg;
	ucp_params_t p;

	ctx_status = ucp_config_read(NULL, NULL, &cfg);
	if (ctx_status != UCS_OK)
		return;
	memset(&p, 0, sizeof(p));
	p.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
	p.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
	p.mt_workers_shared = 1;
	ctx_status = ucp_init(&p, cfg, &ctx);
	ucp_config_release(cfg);
}

static vgpu_status ctx_get(void)
{
	pthread_once(&ctx_once, ctx_init);
	if (ctx_status != UCS_OK)
		return uerr(VGPU_ERR_UNSUPPORTED, "rdma: UCX cannot start (ucp_init)", ctx_status);
	return VGPU_OK;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* the background thread's view of the worker, and its writers */
#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

static void wk_wake(struct wk *k)
{
	uint64_t one = 1;

	if (k->polling && write(k->wakefd, &one, sizeof(one)) < 0) {
	}
}

/*
 * Lead: sleep on the worker's event fd and the wake fd with k->m released,
 * then make one round of progress. One round, not rounds until none is
 * made: over UCX's tcp transport each round is an epoll_wait, and the
 * caller re-checks its condition and comes back anyway; ucp_worker_arm
 * answers BUSY while events remain, so nothing is left behind.
 */
static void wk_lead(struct wk *k, int ms, int bg)
{
	struct pollfd pfd[2];
	uint64_t junk;

	ST(k->polling, 1);
	k->bg_polling = bg;
	pthread_mutex_unlock(&k->m);
	pfd[0].fd = k->efd;
	pfd[0].events = POLLIN;
	pfd[1].fd = k->wakefd;
	pfd[1].events = POLLIN;
	if (poll(pfd, 2, ms) > 0 && (pfd[1].revents & POLLIN) &&
	    read(k->wakefd, &junk, sizeof(junk)) < 0) {
	}
	pthread_mutex_lock(&k->m);
	ST(k->polling, 0);
	k->bg_polling = 0;
	ucp_worker_progress(k->w);
	pthread_cond_broadcast(&k->cv);
}

static void wk_wait_inner(struct wk *k, int ms)
{
	if (k->polling) {
		if (ms < 0) {
			pthread_cond_wait(&k->cv, &k->m);
		} else {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += (long)(ms % 1000) * 1000000;
			ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000;
			ts.tv_nsec %= 1000000000;
			pthread_cond_timedwait(&k->cv, &k->m, &ts);
		}
		return;
	}
	/* spin a little before sleeping; one round that made progress is
	 * enough (see wk_lead) */
	for (int i = 0; i < SPIN; i++)
		if (ucp_worker_progress(k->w)) {
			pthread_cond_broadcast(&k->cv);
			return;
		}
	if (ucp_worker_arm(k->w) == UCS_ERR_BUSY)
		return;
	wk_lead(k, ms, 0);
}

/*
 * Make progress or wait for it; called with k->m held, returns with it
 * held. The caller re-checks its condition after each call. ms: at most
 * this long asleep (-1: no limit). A waiting caller takes the lead from
 * the background thread (which only keeps an idle worker moving).
 */
static void wk_wait(struct wk *k, int ms)
{
	ST(k->waiters, k->waiters + 1);
	if (k->bg_polling)
		wk_wake(k);
	wk_wait_inner(k, ms);
	if (k->waiters == 1)
		ST(k->last_active, (uint64_t)now_ms());
	ST(k->waiters, k->waiters - 1);
}

/* (racy without k->m: a hint, re-checked under it) */
static int wk_busy(struct wk *k)
{
	return LD(k->waiters) || LD(k->polling) ||
	       (uint64_t)now_ms() - LD(k->last_active) < BG_IDLE_MS;
}

/*
 * Background progress: when no caller waits on the worker (an idle client
 * between calls, a server between requests), answer what arrives: control
 * messages (FIN, acknowledgements), UCX's own wire-up and keepalive, and
 * queue data for the next reader.
 */
static void *wk_bg(void *arg)
{
	struct wk *k = arg;

	pthread_mutex_lock(&k->bgm);
	while (!LD(k->stop)) {
		struct timespec ts;

		/* Only an idle worker is ours: while callers come and go (a
		 * busy connection) taking the lead would cost them a wake-up
		 * per message. Look every BG_IDLE_MS, without touching k->m,
		 * which a busy connection's callers hold while they spin:
		 * taking it then would cost them a futex call and a context
		 * switch. */
		if (wk_busy(k)) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += BG_IDLE_MS * 1000000L;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&k->bgcv, &k->bgm, &ts);
			continue;
		}
		pthread_mutex_unlock(&k->bgm);
		pthread_mutex_lock(&k->m);
		while (!k->stop && !wk_busy(k)) {
			while (ucp_worker_progress(k->w)) {
			}
			if (ucp_worker_arm(k->w) == UCS_ERR_BUSY)
				continue;
			wk_lead(k, -1, 1);
		}
		pthread_mutex_unlock(&k->m);
		pthread_mutex_lock(&k->bgm);
	}
	pthread_mutex_unlock(&k->bgm);
	return NULL;
}

static void conn_kill(struct vgpu_tp_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void conn_kill(struct vgpu_tp_conn *c, const char *fmt, ...)
{
	va_list ap;

	if (c->dead)
		return;
	c->dead = 1;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
	pthread_cond_broadcast(&c->k->cv);
}

/* The connection a message belongs to: by the client id in its header
 * (a listener's worker), or the only one (a client's worker). */
static struct vgpu_tp_conn *conn_of(struct wk *k, uint64_t id)
{
	for (struct vgpu_tp_conn *c = k->conns; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/* ---- UCX callbacks (inside ucp_worker_progress, k->m held) ---- */

static void ep_err(void *arg, ucp_ep_h ep, ucs_status_t status)
{
	struct vgpu_tp_conn *c = arg;

	conn_kill(c, "connection to %s lost: %s", c->peer, ucs_status_string(status));
}

/* A header-only eager message: [id, seq] (k->m held; no completion wait:
 * the request is released at once and finishes on its own). */
static void send_ctl(struct vgpu_tp_conn *c, uint64_t *hdr, ucp_dt_iov_t *iov)
{
	ucp_request_param_t rp;
	void *req;

	iov->buffer = hdr;
	iov->length = 2 * sizeof(uint64_t);
	memset(&rp, 0, sizeof(rp));
	rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE;
	rp.flags = UCP_AM_SEND_FLAG_EAGER;
	rp.datatype = ucp_dt_make_iov();
	req = ucp_am_send_nbx(c->ep, AM_ID, NULL, 0, iov, 1, &rp);
	if (UCS_PTR_IS_ERR(req))
		H->log(3, "rdma: control message to %s: %s", c->peer,
		       ucs_status_string(UCS_PTR_STATUS(req)));
	else if (req)
		ucp_request_free(req);
}

static void send_ack(struct vgpu_tp_conn *c)
{
	c->ack_hdr[0] = c->id;
	c->ack_hdr[1] = SEQ_ACK;
	send_ctl(c, c->ack_hdr, &c->ack_iov);
}

static struct item *item_get(struct wk *k)
{
	struct item *it = k->spare;

	if (!it)
		return malloc(sizeof(*it));
	k->spare = it->next;
	k->nspare--;
	return it;
}

/* Release what the item holds and keep it for the next message. */
static void item_put(struct wk *k, struct item *it)
{
	if (it->kind == K_OWNED)
		free(it->data);
	else if (it->kind == K_HELD || it->kind == K_RNDV)
		ucp_am_data_release(k->w, it->data);
	if (k->nspare >= ITEMS_KEPT) {
		free(it);
		return;
	}
	it->next = k->spare;
	k->spare = it;
	k->nspare++;
}

/* Take the head of c's queue (consumed, in sequence). */
static struct item *q_pop(struct vgpu_tp_conn *c)
{
	struct item *it = c->qh;

	c->qh = it->next;
	if (!c->qh)
		c->qt = NULL;
	c->rx_seq++;
	return it;
}

/* Queue a received message in sequence order: UCX delivers an endpoint's
 * messages in order, so at the tail unless a rendezvous overtook. */
static void q_add(struct vgpu_tp_conn *c, struct item *it)
{
	struct item **pp;

	if (!c->qt || c->qt->seq < it->seq) {
		it->next = NULL;
		if (c->qt)
			c->qt->next = it;
		else
			c->qh = it;
		c->qt = it;
	} else {
		for (pp = &c->qh; *pp && (*pp)->seq < it->seq; pp = &(*pp)->next) {
		}
		it->next = *pp;
		*pp = it;
	}
	c->queued += it->len;
}

static ucs_status_t am_cb(void *arg, const void *header, size_t header_length, void *data,
			  size_t length, const ucp_am_recv_param_t *param)
{
	struct wk *k = arg;
	struct vgpu_tp_conn *c = NULL;
	struct item *it;
	uint64_t h[2], seq;
	const uint8_t *pre = NULL;
	size_t skip, plen = 0;
	int rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
	int held = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA) != 0;

	/* [client id, sequence number]: the AM header of bulk messages
	 * (followed by the small bytes that precede the bulk in the stream,
	 * if any), the first 16 data bytes of small (eager) ones */
	if (header_length == sizeof(h)) {
		memcpy(h, header, sizeof(h));
		skip = 0;
	} else if (header_length > sizeof(h) && header_length - sizeof(h) <= INLINE_MAX && length) {
		memcpy(h, header, sizeof(h));
		pre = (const uint8_t *)header + sizeof(h);
		plen = header_length - sizeof(h);
		skip = 0;
	} else if (header_length == 0 && !rndv && length >= sizeof(h)) {
		memcpy(h, data, sizeof(h));
		skip = sizeof(h);
	} else {
		if (!k->shared && k->conns)
			conn_kill(k->conns, "bad message from %s: header of %zu bytes (not a libvgpu peer?)",
				  k->conns->peer, header_length);
		return UCS_OK; /* on a listener: sender unknown, dropped */
	}
	c = k->shared ? conn_of(k, h[0]) : k->conns;
	if (!c || c->dead)
		return UCS_OK; /* unknown sender or a dead connection: drop */
	seq = h[1];
	if (seq == SEQ_ACK) {
		c->acked = 1;
		pthread_cond_broadcast(&k->cv);
		return UCS_OK;
	}
	if (seq < c->rx_seq || seq >= SEQ_ACK - 1 || length > RECV_MAX ||
	    c->queued + length > RECV_MAX + BULK_MIN) {
		conn_kill(c, "bad message from %s: sequence %llu, %zu bytes", c->peer,
			  (unsigned long long)seq, length);
		return UCS_OK;
	}
	if (plen) {
		/* the bytes before the bulk: their own item, sequence seq;
		 * the bulk is seq + 1 (the sender counted both) */
		it = item_get(k);
		if (!it) {
			conn_kill(c, "out of host memory receiving from %s", c->peer);
			return UCS_OK;
		}
		it->seq = seq++;
		it->len = plen;
		it->off = 0;
		it->kind = K_INLINE;
		it->data = it->inl;
		memcpy(it->inl, pre, plen);
		q_add(c, it);
	}
	it = item_get(k);
	if (!it) {
		conn_kill(c, "out of host memory receiving from %s", c->peer);
		return UCS_OK;
	}
	it->seq = seq;
	it->len = length;
	it->off = skip;
	it->data = NULL;
	if (length == skip) {
		/* FIN: nothing follows; acknowledge at once (everything before it
		 * is already here: messages arrive in order) */
		it->kind = K_FIN;
		H->log(3, "rdma: end of stream from %s", c->peer);
		send_ack(c);
	} else if (rndv) {
		it->kind = K_RNDV;
		it->data = data;
	} else if (length <= INLINE_MAX) {
		/* small: a copy now lets UCX reuse its receive buffer at once */
		it->kind = K_INLINE;
		it->data = it->inl;
		memcpy(it->inl, data, length);
	} else if (held) {
		it->kind = K_HELD;
		it->data = data;
	} else {
		it->kind = K_OWNED;
		it->data = malloc(length);
		if (!it->data) {
			item_put(k, it);
			conn_kill(c, "out of host memory receiving from %s", c->peer);
			return UCS_OK;
		}
		memcpy(it->data, data, length);
	}
	q_add(c, it);
	pthread_cond_broadcast(&k->cv);
	return (it->kind == K_RNDV || it->kind == K_HELD) ? UCS_INPROGRESS : UCS_OK;
}

static void send_cb(void *req, ucs_status_t status, void *user)
{
	struct op *o = user;
	o->st = status;
	o->done = 1;
}

static void recv_cb(void *req, ucs_status_t status, size_t length, void *user)
{
	struct op *o = user;
	o->st = status;
	o->len = length;
	o->done = 1;
}

/* Wait for a request (k->m held). Returns its status. */
static ucs_status_t req_wait(struct vgpu_tp_conn *c, void *req, struct op *o, double deadline)
{
	struct wk *k = c->k;

	if (req == NULL)
		return UCS_OK;
	if (UCS_PTR_IS_ERR(req))
		return UCS_PTR_STATUS(req);
	wk_wake(k);
	while (!o->done) {
		if (deadline > 0 && now_ms() > deadline) {
			double give_up = now_ms() + 500;

			ucp_request_cancel(k->w, req);
			while (!o->done && now_ms() < give_up)
				wk_wait(k, 10);
			/* freed: no callback will touch *o afterwards */
			ucp_request_free(req);
			return UCS_ERR_TIMED_OUT;
		}
		wk_wait(k, deadline > 0 ? 10 : -1);
	}
	ucp_request_free(req);
	return o->st;
}

/* Flush c's endpoint: completes once it is wired up (k->m held). */
static ucs_status_t ep_ready_ms(struct vgpu_tp_conn *c, uint32_t ms)
{
	ucp_request_param_t rp;
	struct op o = { 0, UCS_OK, 0 };
	ucs_status_t s;
	void *req;

	memset(&rp, 0, sizeof(rp));
	rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
	rp.cb.send = send_cb;
	rp.user_data = &o;
	req = ucp_ep_flush_nbx(c->ep, &rp);
	s = req_wait(c, req, &o, now_ms() + ms);
	if (s == UCS_OK && c->dead)
		s = UCS_ERR_UNREACHABLE;
	return s;
}

static ucs_status_t ep_ready(struct vgpu_tp_conn *c)
{
	return ep_ready_ms(c, 10000);
}

/* ---- workers ---- */

static void wk_fini(struct wk *k);

static vgpu_status wk_init(struct wk *k, int shared, uint64_t client_id)
{
	ucp_worker_params_t wp;
	ucp_worker_attr_t wa;
	ucp_am_handler_param_t ap;
	ucs_status_t s;

	memset(k, 0, sizeof(*k));
	k->efd = k->wakefd = -1;
	memset(&wp, 0, sizeof(wp));
	wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_CLIENT_ID;
	wp.thread_mode = UCS_THREAD_MODE_SERIALIZED; /* k->m serialises every call */
	wp.client_id = client_id;
	s = ucp_worker_create(ctx, &wp, &k->w);
	if (s != UCS_OK)
		return uerr(VGPU_ERR_CONNECTION, "rdma: ucp_worker_create", s);
	wa.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
	k->piggyback = ucp_worker_query(k->w, &wa) == UCS_OK &&
		       wa.max_am_header >= 2 * sizeof(uint64_t) + INLINE_MAX;
	H->log(3, "rdma: worker: AM headers up to %zu bytes%s", k->piggyback ? wa.max_am_header : 0,
	       k->piggyback ? "" : " (small bytes before bulk go as their own message)");
	memset(&ap, 0, sizeof(ap));
	ap.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
			UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
	ap.id = AM_ID;
	ap.flags = UCP_AM_FLAG_WHOLE_MSG | UCP_AM_FLAG_PERSISTENT_DATA;
	ap.cb = am_cb;
	ap.arg = k;
	s = ucp_worker_set_am_recv_handler(k->w, &ap);
	if (s == UCS_OK)
		s = ucp_worker_get_efd(k->w, &k->efd);
	if (s != UCS_OK) {
		ucp_worker_destroy(k->w);
		return uerr(VGPU_ERR_CONNECTION, "rdma: worker setup", s);
	}
	k->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (k->wakefd < 0) {
		ucp_worker_destroy(k->w);
		return H->error(VGPU_ERR_CONNECTION, "rdma: eventfd: %s", strerror(errno));
	}
	pthread_mutex_init(&k->m, NULL);
	pthread_cond_init(&k->cv, NULL);
	pthread_mutex_init(&k->bgm, NULL);
	pthread_cond_init(&k->bgcv, NULL);
	k->shared = shared;
	if (pthread_create(&k->bg, NULL, wk_bg, k) != 0) {
		wk_fini(k);
		return H->error(VGPU_ERR_CONNECTION, "rdma: cannot start a progress thread");
	}
	k->bg_started = 1;
	return VGPU_OK;
}

static void wk_fini(struct wk *k)
{
	if (k->bg_started) {
		pthread_mutex_lock(&k->m);
		ST(k->stop, 1);
		pthread_cond_broadcast(&k->cv);
		wk_wake(k);
		pthread_mutex_unlock(&k->m);
		/* the background thread checks stop with bgm held and sleeps
		 * releasing it: it sees stop, or is asleep for this broadcast */
		pthread_mutex_lock(&k->bgm);
		pthread_cond_broadcast(&k->bgcv);
		pthread_mutex_unlock(&k->bgm);
		pthread_join(k->bg, NULL);
		k->bg_started = 0;
	}
	ucp_worker_destroy(k->w);
	while (k->spare) {
		struct item *it = k->spare;
		k->spare = it->next;
		free(it);
	}
	close(k->wakefd);
	pthread_mutex_destroy(&k->m);
	pthread_cond_destroy(&k->cv);
	pthread_cond_destroy(&k->bgcv);
	pthread_mutex_destroy(&k->bgm);
}

/* ---- addresses ---- */

static vgpu_status resolve(const struct vgpu_tp_addr *a, int passive, struct sockaddr_storage *ss,
			   socklen_t *sl)
{
	struct addrinfo hints, *ai = NULL;
	char port[16];
	int gai;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	snprintf(port, sizeof(port), "%d", a->port < 0 ? 7101 : a->port);
	gai = getaddrinfo(a->host[0] ? a->host : NULL, port, &hints, &ai);
	if (gai)
		return H->error(passive ? VGPU_ERR_BAD_URI : VGPU_ERR_CONNECTION,
				"rdma://%s:%s: cannot resolve: %s", a->host, port, gai_strerror(gai));
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sl = ai->ai_addrlen;
	freeaddrinfo(ai);
	return VGPU_OK;
}

static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char h[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, h, sizeof(h));
		snprintf(out, len, "[%s]:%u", h, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, h, sizeof(h));
		snprintf(out, len, "%s:%u", h, ntohs(s4->sin_port));
	}
}

/* ---- listener ---- */

static void conn_handler(ucp_conn_request_h r, void *arg)
{
	struct vgpu_tp_listener *l = arg;
	struct creq *q, **pp;

	if (l->stop || !(q = calloc(1, sizeof(*q)))) {
		ucp_listener_reject(l->l, r);
		return;
	}
	q->r = r;
	for (pp = &l->reqs; *pp; pp = &(*pp)->next) {
	}
	*pp = q;
	pthread_cond_signal(&l->acv);
}

static vgpu_status rdma_listen(const struct vgpu_tp_addr *a, struct vgpu_tp_listener **out,
			       char *bound, size_t boundlen)
{
	struct vgpu_tp_listener *l;
	ucp_listener_params_t lp;
	ucp_listener_attr_t la;
	struct sockaddr_storage ss;
	socklen_t sl;
	ucs_status_t s;
	vgpu_status st;
	char hp[160];

	if ((st = ctx_get()) < 0)
		return st;
	if ((st = resolve(a, 1, &ss, &sl)) < 0)
		return st;
	l = calloc(1, sizeof(*l));
	if (!l)
		return H->error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	if ((st = wk_init(&l->k, 1, 0)) < 0) {
		free(l);
		return st;
	}
	pthread_cond_init(&l->acv, NULL);
	memset(&lp, 0, sizeof(lp));
	lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
	lp.sockaddr.addr = (const struct sockaddr *)&ss;
	lp.sockaddr.addrlen = sl;
	lp.conn_handler.cb = conn_handler;
	lp.conn_handler.arg = l;
	s = ucp_listener_create(l->k.w, &lp, &l->l);
	if (s != UCS_OK) {
		wk_fini(&l->k);
		pthread_cond_destroy(&l->acv);
		free(l);
		return H->error(VGPU_ERR_CONNECTION, "rdma://%s:%d: cannot listen: %s", a->host, a->port,
				ucs_status_string(s));
	}
	la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
	if (ucp_listener_query(l->l, &la) == UCS_OK)
		memcpy(&ss, &la.sockaddr, sizeof(ss));
	fmt_addr(&ss, hp, sizeof(hp));
	snprintf(bound, boundlen, "rdma://%s", hp);
	*out = l;
	return VGPU_OK;
}

static vgpu_status conn_new(struct wk *k, const char *peer, struct vgpu_tp_conn **out)
{
	struct vgpu_tp_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return H->error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	c->k = k;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	c->held.dir = "send to";
	c->held.timeout = "send timed out";
	c->fetches.dir = "receive from";
	c->fetches.timeout = "receive timed out";
	c->fetches.cancel = 1;
	*out = c;
	return VGPU_OK;
}

static void ep_params(ucp_ep_params_t *ep, struct vgpu_tp_conn *c)
{
	memset(ep, 0, sizeof(*ep));
	ep->field_mask = UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
	ep->err_mode = UCP_ERR_HANDLING_MODE_PEER;
	ep->err_handler.cb = ep_err;
	ep->err_handler.arg = c;
}

static vgpu_status rdma_accept(struct vgpu_tp_listener *l, struct vgpu_tp_conn **out)
{
	struct wk *k = &l->k;

	pthread_mutex_lock(&k->m);
	for (;;) {
		struct creq *q;
		struct vgpu_tp_conn *c = NULL;
		struct wk *ck;
		ucp_conn_request_attr_t ra;
		ucp_ep_params_t ep;
		ucs_status_t s;
		char peer[128] = "?";

		/* Not a progress waiter: the background thread moves the
		 * listener's worker; conn_handler signals acv. */
		while (!l->reqs && !l->stop)
			pthread_cond_wait(&l->acv, &k->m);
		if (l->stop) {
			pthread_mutex_unlock(&k->m);
			return H->error(VGPU_ERR_CLOSED, "listener closed");
		}
		q = l->reqs;
		l->reqs = q->next;
		ra.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR |
				UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ID;
		if (ucp_conn_request_query(q->r, &ra) != UCS_OK || !ra.client_id) {
			/* no id: not a libvgpu client */
			ucp_listener_reject(l->l, q->r);
			free(q);
			continue;
		}
		pthread_mutex_unlock(&k->m);
		/* Each connection gets a worker of its own (UCX accepts a
		 * request on any worker of the context): readers of
		 * different connections then never share an event fd or a
		 * condition variable, so an idle client costs the others
		 * nothing (on one shared worker every message woke every
		 * waiting reader). */
		fmt_addr(&ra.client_address, peer, sizeof(peer));
		ck = calloc(1, sizeof(*ck));
		if (!ck || wk_init(ck, 0, 0) < 0) {
			H->log(1, "rdma: dropping a connection from %s: %s", peer,
			       ck ? H->error_msg() : "out of host memory");
			free(ck);
			pthread_mutex_lock(&k->m);
			ucp_listener_reject(l->l, q->r);
			free(q);
			continue;
		}
		if (conn_new(ck, peer, &c) < 0) {
			wk_fini(ck);
			free(ck);
			pthread_mutex_lock(&k->m);
			ucp_listener_reject(l->l, q->r);
			free(q);
			continue;
		}
		ep_params(&ep, c);
		ep.field_mask |= UCP_EP_PARAM_FIELD_CONN_REQUEST;
		ep.conn_request = q->r;
		free(q);
		c->id = ra.client_id;
		pthread_mutex_lock(&ck->m);
		s = ucp_ep_create(ck->w, &ep, &c->ep);
		if (s != UCS_OK) {
			pthread_mutex_unlock(&ck->m);
			H->log(1, "rdma: dropping a connection from %s: %s", peer, ucs_status_string(s));
			free(c);
			wk_fini(ck);
			free(ck);
			pthread_mutex_lock(&k->m);
			continue;
		}
		ck->conns = c;
		/* Wait for the wire-up to finish before anyone sends: UCX 1.13
		 * replays requests queued during lane reconfiguration (tcp to
		 * shared memory) through a NULL protocol and crashes. */
		if (ep_ready(c) != UCS_OK) {
			H->log(1, "rdma: dropping a connection from %s: %s", peer,
			       c->dead ? c->why : "wire-up failed");
			pthread_mutex_unlock(&ck->m);
			rdma_close_internal(c); /* frees ck too */
			pthread_mutex_lock(&k->m);
			continue;
		}
		pthread_mutex_unlock(&ck->m);
		*out = c;
		return VGPU_OK;
	}
}

static void rdma_listen_shutdown(struct vgpu_tp_listener *l)
{
	pthread_mutex_lock(&l->k.m);
	l->stop = 1;
	pthread_cond_broadcast(&l->acv);
	wk_wake(&l->k);
	pthread_mutex_unlock(&l->k.m);
}

static void rdma_listen_close(struct vgpu_tp_listener *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->k.m);
	l->stop = 1;
	while (l->reqs) {
		struct creq *q = l->reqs;
		l->reqs = q->next;
		ucp_listener_reject(l->l, q->r);
		free(q);
	}
	ucp_listener_destroy(l->l);
	/* Connections accepted from this listener live on its worker: keep
	 * the worker while any is open (the server closes them first). */
	if (l->k.conns) {
		H->log(1, "rdma: listener closed with connections open; worker kept");
		pthread_mutex_unlock(&l->k.m);
		return;
	}
	pthread_mutex_unlock(&l->k.m);
	wk_fini(&l->k);
	pthread_cond_destroy(&l->acv);
	free(l);
}

static int rdma_listen_is_remote(const struct vgpu_tp_addr *a)
{
	if (!strcmp(a->host, "localhost") || !strcmp(a->host, "::1") || !strncmp(a->host, "127.", 4))
		return 0;
	return 1;
}

/* ---- connect ---- */

static vgpu_status rdma_connect(const struct vgpu_tp_addr *a, uint32_t timeout_ms,
				struct vgpu_tp_conn **out)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	struct wk *k;
	struct vgpu_tp_conn *c = NULL;
	ucp_ep_params_t ep;
	ucs_status_t s;
	vgpu_status st;
	char peer[160];
	uint64_t id;

	if ((st = ctx_get()) < 0)
		return st;
	if ((st = resolve(a, 0, &ss, &sl)) < 0)
		return st;
	k = calloc(1, sizeof(*k));
	if (!k)
		return H->error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	/* a random id tells the server's worker which connection a message
	 * belongs to (sent with the connection request) */
	do {
		if (getrandom(&id, sizeof(id), 0) != sizeof(id)) {
			free(k);
			return H->error(VGPU_ERR_INTERNAL, "rdma: getrandom: %s", strerror(errno));
		}
	} while (!id);
	if ((st = wk_init(k, 0, id)) < 0) {
		free(k);
		return st;
	}
	fmt_addr(&ss, peer, sizeof(peer));
	if ((st = conn_new(k, peer, &c)) < 0) {
		wk_fini(k);
		free(k);
		return st;
	}
	ep_params(&ep, c);
	ep.field_mask |= UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
	ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER | UCP_EP_PARAMS_FLAGS_SEND_CLIENT_ID;
	c->id = id;
	ep.sockaddr.addr = (const struct sockaddr *)&ss;
	ep.sockaddr.addrlen = sl;
	pthread_mutex_lock(&k->m);
	s = ucp_ep_create(k->w, &ep, &c->ep);
	if (s != UCS_OK) {
		pthread_mutex_unlock(&k->m);
		free(c);
		wk_fini(k);
		free(k);
		return H->error(VGPU_ERR_CONNECTION, "cannot connect to %s: %s", peer,
				ucs_status_string(s));
	}
	k->conns = c;
	/* wait until the endpoint is wired up (or refused) */
	s = ep_ready_ms(c, timeout_ms ? timeout_ms : 10000);
	if (s != UCS_OK && c->qh) {
		/* the peer spoke and went at once (a refusal such as "server
		 * busy", then its close): connected, so that what it said is
		 * read first and the end of the connection after it */
		H->log(3, "rdma: %s closed the connection right after accepting it", peer);
		s = UCS_OK;
	}
	pthread_mutex_unlock(&k->m);
	if (s != UCS_OK) {
		st = H->error(VGPU_ERR_CONNECTION, "cannot connect to %s: %s", peer,
			      c->dead ? c->why : ucs_status_string(s));
		c->dead = 1;
		*out = c;
		rdma_close_internal(c); /* frees the worker too */
		*out = NULL;
		return st;
	}
	*out = c;
	return VGPU_OK;
}

/* ---- send ---- */

static vgpu_status send_error(struct vgpu_tp_conn *c, ucs_status_t s)
{
	if (c->dead)
		return H->error(VGPU_ERR_CONNECTION, "send to %s: %s", c->peer, c->why);
	if (s == UCS_ERR_TIMED_OUT)
		return H->error(VGPU_ERR_CONNECTION, "send to %s: timed out", c->peer);
	if (c->wr_shut)
		return H->error(VGPU_ERR_CONNECTION, "send to %s: connection shut down", c->peer);
	return H->error(VGPU_ERR_CONNECTION, "send to %s: %s", c->peer, ucs_status_string(s));
}

/*
 * Close c's endpoint at once (k->m held): UCX completes every request still
 * on it with UCS_ERR_CANCELED, so that nothing reads a sender's memory any
 * more. For a sender that cannot wait any longer: its connection was shut
 * down, it timed out, or the peer is gone with bulk in flight.
 */
static void conn_abort(struct vgpu_tp_conn *c, const char *why)
{
	ucp_request_param_t rp;
	struct op o = { 0, UCS_OK, 0 };
	void *req;

	conn_kill(c, "%s", why);
	if (c->ep_gone)
		return;
	c->ep_gone = 1;
	memset(&rp, 0, sizeof(rp));
	rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
			  UCP_OP_ATTR_FIELD_FLAGS;
	rp.cb.send = send_cb;
	rp.user_data = &o;
	rp.flags = UCP_EP_CLOSE_FLAG_FORCE;
	req = ucp_ep_close_nbx(c->ep, &rp);
	if (req_wait(c, req, &o, now_ms() + CLOSE_MS) == UCS_ERR_TIMED_OUT)
		H->log(1, "rdma: closing the connection to %s timed out", c->peer);
}

/* Why a waiter gives up its requests (k->m held): NULL while it should
 * keep waiting. force: now. A read-only shutdown (a server stopping
 * gracefully) lets them finish; the next read fails. */
static const char *stop_why(struct vgpu_tp_conn *c, double deadline, int force,
			    const char *timeout)
{
	if (force || c->wr_shut)
		return "connection shut down";
	if (c->dead)
		return c->why;
	if (deadline > 0 && now_ms() > deadline)
		return timeout;
	return NULL;
}

/*
 * Wait until *o is done (k->m held): the request's memory is then UCX's no
 * more. A shutdown, a dead peer or the deadline aborts the endpoint, which
 * completes the request (cancelled) before this returns. Frees req.
 */
static ucs_status_t send_wait(struct vgpu_tp_conn *c, void *req, struct op *o, double deadline)
{
	struct wk *k = c->k;
	const char *why;
	int aborted = 0, warned = 0;
	double give_up = 0;

	if (req == NULL)
		return UCS_OK;
	if (UCS_PTR_IS_ERR(req))
		return UCS_PTR_STATUS(req);
	wk_wake(k);
	while (!o->done) {
		if (!aborted && (why = stop_why(c, deadline, 0, "send timed out"))) {
			char msg[sizeof(c->why)];

			snprintf(msg, sizeof(msg), "%s", why);
			conn_abort(c, msg);
			aborted = 1;
			give_up = now_ms() + CLOSE_MS;
			continue;
		}
		if (aborted && !warned && now_ms() > give_up) {
			/* UCX completes every request of an endpoint closed by
			 * force: not seen. Returning now would leave a
			 * callback aimed at this stack frame: keep waiting. */
			H->log(0, "rdma: a send to %s did not complete after its endpoint was closed",
			       c->peer);
			warned = 1;
		}
		wk_wait(k, deadline > 0 || c->dead ? 10 : -1);
	}
	ucp_request_free(req);
	if (aborted && deadline > 0 && now_ms() > deadline)
		return UCS_ERR_TIMED_OUT;
	return aborted && o->st == UCS_OK ? UCS_ERR_CANCELED : o->st;
}

/* Release the completed requests of f, oldest first (k->m held). A failed
 * one kills the connection. */
static void flight_reap(struct vgpu_tp_conn *c, struct flight *f)
{
	while (f->count) {
		void *req = f->e[f->head].req;
		struct op *o = &f->e[f->head].o;

		if (!o->done)
			break;
		ucp_request_free(req);
		f->e[f->head].req = NULL;
		if (o->st != UCS_OK) {
			f->failed = 1;
			conn_kill(c, "%s %s failed: %s", f->dir, c->peer, ucs_status_string(o->st));
		}
		f->head = (f->head + 1) % FLIGHT_MAX;
		f->count--;
	}
}

/*
 * Wait until at most `keep` requests of f are in flight (k->m held). One
 * that cannot complete (stop_why) aborts the endpoint, which cancels the
 * rest (fetches are cancelled first); this then waits for UCX to complete
 * them, so that no caller's memory is read or written once it returns with
 * keep == 0. UCS_ERR_TIMED_OUT when the deadline gave up.
 */
static ucs_status_t flight_wait(struct vgpu_tp_conn *c, struct flight *f, unsigned keep,
				double deadline, int force)
{
	struct wk *k = c->k;
	const char *why;
	ucs_status_t s = UCS_OK;
	double give_up = 0;

	flight_reap(c, f);
	if (f->count > keep)
		wk_wake(k);
	while (f->count > keep) {
		if (give_up == 0 && (why = stop_why(c, deadline, force, f->timeout))) {
			char msg[sizeof(c->why)];

			if (why == f->timeout)
				s = UCS_ERR_TIMED_OUT;
			snprintf(msg, sizeof(msg), "%s", why);
			f->failed = 1;
			for (unsigned i = 0; f->cancel && i < f->count; i++) {
				unsigned j = (f->head + i) % FLIGHT_MAX;

				if (!f->e[j].o.done)
					ucp_request_cancel(k->w, f->e[j].req);
			}
			conn_abort(c, msg);
			give_up = now_ms() + CLOSE_MS;
			flight_reap(c, f);
			continue;
		}
		if (give_up > 0 && now_ms() > give_up) {
			/* not seen: see send_wait (UCX may still use the
			 * caller's memory: keep waiting) */
			H->log(0, "rdma: %u requests (%s %s) did not complete after the endpoint "
			       "was closed", f->count, f->dir, c->peer);
			give_up = -1;
		}
		wk_wait(k, deadline > 0 || give_up != 0 || c->dead ? 10 : -1);
		flight_reap(c, f);
	}
	return s;
}

#define MAX_MSGS 16

/* Bytes in the run of small segments from iov[i]; *end: the bulk segment
 * (or n) that ends it. */
static size_t small_run(const struct iovec *iov, int n, int i, int *end)
{
	size_t len = 0;

	while (i < n && iov[i].iov_len < BULK_MIN)
		len += iov[i++].iov_len;
	*end = i;
	return len;
}

/*
 * send and send_deferred. defer: the last segment, when bulk, goes as a
 * message that is not waited for (its request in c->held); every other
 * message is waited for, so that the caller may reuse those segments.
 */
static vgpu_status send_iov(struct vgpu_tp_conn *c, const struct iovec *iov, int n, int defer)
{
	struct wk *k = c->k;
	void *req[MAX_MSGS];
	struct op o[MAX_MSGS];
	uint64_t hdr[MAX_MSGS][2];
	uint64_t pre[(2 * sizeof(uint64_t) + INLINE_MAX) / sizeof(uint64_t)];
	int pre_used = 0, pack_used = 0;
	ucp_dt_iov_t dt[MAX_MSGS][MAX_MSGS + 1];
	struct op *ho = NULL;   /* send_deferred: the held message's completion */
	uint64_t *hhdr = NULL;  /* ... and its AM header */
	int nm = 0, i = 0;
	ucs_status_t s = UCS_OK;
	double deadline;

	if (n > MAX_MSGS)
		return H->error(VGPU_ERR_INTERNAL, "rdma send: %d iovecs (at most %d)", n, MAX_MSGS);
	pthread_mutex_lock(&k->m);
	deadline = c->timeout_ms ? now_ms() + c->timeout_ms : 0;
	flight_reap(c, &c->held);
	if (c->dead || c->wr_shut) {
		vgpu_status st = send_error(c, UCS_ERR_CONNECTION_RESET);

		pthread_mutex_unlock(&k->m);
		return st;
	}
	if (defer && n > 0 && iov[n - 1].iov_len >= BULK_MIN) {
		/* room for one more in flight */
		unsigned slot;

		s = flight_wait(c, &c->held, FLIGHT_MAX - 1, deadline, 0);
		if (s != UCS_OK || c->dead) {
			vgpu_status st = send_error(c, s);

			pthread_mutex_unlock(&k->m);
			return st;
		}
		slot = (c->held.head + c->held.count) % FLIGHT_MAX;
		ho = &c->held.e[slot].o;
		hhdr = c->held_hdr[slot];
		ho->done = 0;
		ho->st = UCS_OK;
	}
	while (i < n) {
		ucp_request_param_t rp;
		uint64_t *ids = hdr[nm];
		void *r;
		size_t run;
		int end, held = 0;

		if (iov[i].iov_len == 0) {
			i++;
			continue;
		}
		run = small_run(iov, n, i, &end);
		/* the message that carries the last segment goes in flight */
		if (ho && (i == n - 1 || (end == n - 1 && run <= INLINE_MAX && !pre_used &&
					  k->piggyback)))
			held = 1;
		if (held)
			ids = hhdr;
		ids[0] = c->id;
		ids[1] = c->tx_seq++;
		memset(&rp, 0, sizeof(rp));
		rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
		rp.cb.send = send_cb;
		o[nm].done = 0;
		o[nm].st = UCS_OK;
		rp.user_data = held ? ho : &o[nm];
		if (iov[i].iov_len >= BULK_MIN) {
			/* bulk: zero-copy from the caller (rendezvous above UCX's
			 * threshold), the ids in the AM header */
			r = ucp_am_send_nbx(c->ep, AM_ID, ids, 2 * sizeof(uint64_t), iov[i].iov_base,
					    iov[i].iov_len, &rp);
			i++;
		} else if (end < n && run <= INLINE_MAX && (held || !pre_used) && k->piggyback) {
			/* small bytes then bulk (a protocol header and body
			 * before a copy's data): the small bytes go in the AM
			 * header after the ids, the bulk as its data; the
			 * receiver counts them as two sequence numbers */
			uint8_t *p0 = held ? (uint8_t *)hhdr : (uint8_t *)pre, *p = p0;

			if (!held)
				memcpy(p, ids, 2 * sizeof(uint64_t));
			p += 2 * sizeof(uint64_t);
			for (; i < end; i++)
				if (iov[i].iov_len) { /* an empty one may be NULL */
					memcpy(p, iov[i].iov_base, iov[i].iov_len);
					p += iov[i].iov_len;
				}
			c->tx_seq++;
			if (!held)
				pre_used = 1;
			r = ucp_am_send_nbx(c->ep, AM_ID, p0, 2 * sizeof(uint64_t) + run,
					    iov[i].iov_base, iov[i].iov_len, &rp);
			i++;
		} else if (run + 2 * sizeof(uint64_t) <= sizeof(c->pack) && !pack_used) {
			/* a run of small segments behind the ids, copied into one
			 * contiguous eager message: UCX sends it with its short
			 * protocol, one call and no request, where an iov
			 * datatype costs a pack callback (launches/s +20%). No
			 * user AM header: UCX 1.13's shared-memory short path
			 * miscounts lengths with one */
			uint8_t *p = (uint8_t *)c->pack;

			memcpy(p, ids, 2 * sizeof(uint64_t));
			p += 2 * sizeof(uint64_t);
			for (; i < end; i++)
				if (iov[i].iov_len) { /* an empty one may be NULL */
					memcpy(p, iov[i].iov_base, iov[i].iov_len);
					p += iov[i].iov_len;
				}
			pack_used = 1;
			rp.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
			rp.flags = UCP_AM_SEND_FLAG_EAGER;
			r = ucp_am_send_nbx(c->ep, AM_ID, NULL, 0, c->pack, 2 * sizeof(uint64_t) + run,
					    &rp);
		} else {
			/* a longer run: one eager message described by an iov
			 * datatype (UCX gathers it; no user AM header) */
			size_t m = 0;

			dt[nm][m].buffer = ids;
			dt[nm][m++].length = 2 * sizeof(uint64_t);
			for (; i < end; i++)
				if (iov[i].iov_len) {
					dt[nm][m].buffer = iov[i].iov_base;
					dt[nm][m++].length = iov[i].iov_len;
				}
			rp.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE;
			rp.flags = UCP_AM_SEND_FLAG_EAGER;
			rp.datatype = ucp_dt_make_iov();
			r = ucp_am_send_nbx(c->ep, AM_ID, NULL, 0, dt[nm], m, &rp);
		}
		if (!held) {
			req[nm++] = r;
		} else if (UCS_PTR_IS_ERR(r)) {
			s = UCS_PTR_STATUS(r);
		} else if (r) {
			/* in flight: flight_reap or flight_wait releases it */
			c->held.e[(c->held.head + c->held.count) % FLIGHT_MAX].req = r;
			c->held.count++;
		}
	}
	/* wait for every other message: buffers (and headers) stay valid until then */
	for (int j = 0; j < nm; j++) {
		ucs_status_t r = send_wait(c, req[j], &o[j], deadline);
		if (r != UCS_OK && s == UCS_OK)
			s = r;
	}
	if (s != UCS_OK || c->dead) {
		vgpu_status st = send_error(c, s);
		conn_kill(c, "send failed: %s", ucs_status_string(s));
		if (c->held.count)
			flight_wait(c, &c->held, 0, deadline, 0); /* nothing in flight once we fail */
		pthread_mutex_unlock(&k->m);
		return st;
	}
	pthread_mutex_unlock(&k->m);
	return VGPU_OK;
}

static vgpu_status rdma_send(struct vgpu_tp_conn *c, const struct iovec *iov, int n)
{
	return send_iov(c, iov, n, 0);
}

static vgpu_status rdma_send_deferred(struct vgpu_tp_conn *c, const struct iovec *iov, int n)
{
	return send_iov(c, iov, n, 1);
}

static vgpu_status rdma_flush(struct vgpu_tp_conn *c)
{
	struct wk *k = c->k;
	ucs_status_t s;
	vgpu_status st = VGPU_OK;

	pthread_mutex_lock(&k->m);
	s = flight_wait(c, &c->held, 0, c->timeout_ms ? now_ms() + c->timeout_ms : 0, 0);
	if (s != UCS_OK || c->dead)
		st = send_error(c, s);
	pthread_mutex_unlock(&k->m);
	return st;
}

/* ---- receive ---- */

static ssize_t recv_error(struct vgpu_tp_conn *c, size_t got)
{
	if (c->peer_fin && !c->dead)
		return H->error(VGPU_ERR_CONNECTION, "connection closed by peer%s",
				got ? " mid-message" : "");
	if (c->rd_shut && !c->dead)
		return H->error(VGPU_ERR_CONNECTION, "connection closed%s", got ? " mid-message" : "");
	return H->error(VGPU_ERR_CONNECTION, "%s%s", c->why, got ? " (mid-message)" : "");
}

/* Fetch a rendezvous message into dst (k->m held). */
static ucs_status_t fetch(struct vgpu_tp_conn *c, struct item *it, void *dst, double deadline)
{
	ucp_request_param_t rp;
	struct op o = { 0, UCS_OK, 0 };
	void *req;
	ucs_status_t s;

	memset(&rp, 0, sizeof(rp));
	rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
	rp.cb.recv_am = recv_cb;
	rp.user_data = &o;
	req = ucp_am_recv_data_nbx(c->k->w, it->data, dst, it->len, &rp);
	s = req_wait(c, req, &o, deadline);
	it->kind = K_OWNED; /* descriptor consumed: nothing to release */
	it->data = NULL;
	return s;
}

static ssize_t rdma_recv(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max)
{
	struct wk *k = c->k;
	uint8_t *d = buf;
	size_t got = 0;
	double deadline;

	if (min == 0)
		min = 1;
	pthread_mutex_lock(&k->m);
	deadline = c->timeout_ms ? now_ms() + c->timeout_ms : 0;
	for (;;) {
		struct item *it;

		while ((it = c->qh) && it->seq == c->rx_seq && got < max && !c->rd_shut) {
			size_t n;

			if (it->kind == K_FIN) {
				item_put(k, q_pop(c));
				c->peer_fin = 1;
				break;
			}
			/* Bulk is left for a read of its own once this one has
			 * its minimum: the protocol reads headers into a
			 * read-ahead buffer, then bulk with min == max == n
			 * straight into its destination. Taking it here would
			 * copy it twice (and bounce a rendezvous). */
			if (got >= min && (it->kind == K_RNDV || it->len - it->off >= BULK_MIN))
				break;
			if (it->kind == K_RNDV) {
				void *b = NULL;
				ucs_status_t s;

				if (it->len <= max - got) {
					/* the whole message, straight into the caller's memory */
					s = fetch(c, it, d + got, deadline);
					if (s != UCS_OK) {
						conn_kill(c, "receive from %s: %s", c->peer, ucs_status_string(s));
						break;
					}
					got += it->len;
					c->queued -= it->len;
					item_put(k, q_pop(c));
					continue;
				}
				/* a part of it only (rare: a short read of bulk) */
				b = malloc(it->len);
				if (!b) {
					conn_kill(c, "out of host memory receiving from %s", c->peer);
					break;
				}
				s = fetch(c, it, b, deadline);
				it->data = b;
				if (s != UCS_OK) {
					conn_kill(c, "receive from %s: %s", c->peer, ucs_status_string(s));
					break;
				}
			}
			n = it->len - it->off;
			if (n > max - got)
				n = max - got;
			memcpy(d + got, (uint8_t *)it->data + it->off, n);
			it->off += n;
			got += n;
			if (it->off == it->len) {
				c->queued -= it->len;
				item_put(k, q_pop(c));
			}
		}
		if (got >= min) {
			pthread_mutex_unlock(&k->m);
			return (ssize_t)got;
		}
		if (c->dead || c->rd_shut || c->peer_fin) {
			ssize_t r = recv_error(c, got);
			pthread_mutex_unlock(&k->m);
			return r;
		}
		if (deadline > 0 && now_ms() > deadline) {
			conn_kill(c, "receive from %s: timed out", c->peer);
			continue;
		}
		wk_wait(k, deadline > 0 ? 10 : -1);
	}
}

/*
 * recv(c, buf, n, n) with the fetch left in flight: when the next message
 * is a rendezvous of exactly n bytes (a bulk segment of its own), ask UCX
 * for it straight into buf and return; the caller reads the next header
 * while it lands. Anything else is received as recv does.
 */
static vgpu_status rdma_recv_deferred(struct vgpu_tp_conn *c, void *buf, size_t n)
{
	struct wk *k = c->k;
	ucp_request_param_t rp;
	struct flight *f = &c->fetches;
	struct op *fo;
	struct item *it;
	ssize_t r;
	void *req;

	pthread_mutex_lock(&k->m);
	flight_reap(c, f);
	it = c->qh;
	if (!it || it->seq != c->rx_seq || it->kind != K_RNDV || it->len != n || it->off ||
	    c->dead || c->rd_shut) {
		pthread_mutex_unlock(&k->m);
		r = rdma_recv(c, buf, n, n);
		return r < 0 ? (vgpu_status)r : VGPU_OK;
	}
	if (f->count == FLIGHT_MAX) {
		flight_wait(c, f, FLIGHT_MAX - 1, c->timeout_ms ? now_ms() + c->timeout_ms : 0, 0);
		if (c->dead || c->rd_shut || c->qh != it) {
			pthread_mutex_unlock(&k->m);
			return (vgpu_status)recv_error(c, 0);
		}
	}
	fo = &f->e[(f->head + f->count) % FLIGHT_MAX].o;
	fo->done = 0;
	fo->st = UCS_OK;
	fo->len = 0;
	memset(&rp, 0, sizeof(rp));
	rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
	rp.cb.recv_am = recv_cb;
	rp.user_data = fo;
	req = ucp_am_recv_data_nbx(k->w, it->data, buf, n, &rp);
	it->kind = K_OWNED; /* descriptor consumed: nothing to release */
	it->data = NULL;
	c->queued -= it->len;
	item_put(k, q_pop(c));
	if (UCS_PTR_IS_ERR(req)) {
		f->failed = 1;
		conn_kill(c, "receive from %s: %s", c->peer, ucs_status_string(UCS_PTR_STATUS(req)));
		r = recv_error(c, 0);
		pthread_mutex_unlock(&k->m);
		return (vgpu_status)r;
	}
	if (req) { /* NULL: landed already */
		f->e[(f->head + f->count) % FLIGHT_MAX].req = req;
		f->count++;
		wk_wake(k);
	}
	pthread_mutex_unlock(&k->m);
	return VGPU_OK;
}

static vgpu_status rdma_recv_flush(struct vgpu_tp_conn *c)
{
	struct wk *k = c->k;
	vgpu_status st = VGPU_OK;

	pthread_mutex_lock(&k->m);
	flight_wait(c, &c->fetches, 0, c->timeout_ms ? now_ms() + c->timeout_ms : 0, 0);
	if (c->fetches.failed)
		st = H->error(VGPU_ERR_CONNECTION, "receive from %s: %s", c->peer,
			      c->dead ? c->why : "cancelled");
	pthread_mutex_unlock(&k->m);
	return st;
}

static vgpu_status rdma_set_timeout(struct vgpu_tp_conn *c, uint32_t ms)
{
	pthread_mutex_lock(&c->k->m);
	c->timeout_ms = ms;
	pthread_mutex_unlock(&c->k->m);
	return VGPU_OK;
}

static void rdma_shutdown(struct vgpu_tp_conn *c, int read_only)
{
	struct wk *k = c->k;

	pthread_mutex_lock(&k->m);
	c->rd_shut = 1;
	if (!read_only)
		c->wr_shut = 1;
	pthread_cond_broadcast(&k->cv);
	wk_wake(k);
	pthread_mutex_unlock(&k->m);
}

static void rdma_close_internal(struct vgpu_tp_conn *c)
{
	struct wk *k = c->k;
	struct vgpu_tp_conn **pp;
	ucp_request_param_t rp;
	struct op o = { 0, UCS_OK, 0 };
	void *req;

	pthread_mutex_lock(&k->m);
	/* send_deferred's bulk not flushed (the caller gave up after an
	 * error): nothing may read it once close returns */
	if (c->held.count)
		flight_wait(c, &c->held, 0, now_ms() + CLOSE_MS, 0);
	/* recv_deferred's fetches not flushed: nothing may write the
	 * caller's memory once close returns */
	if (c->fetches.count)
		flight_wait(c, &c->fetches, 0, 0, 1);
	/* Like a TCP FIN: tell the peer the stream ends (in sequence, after
	 * everything sent) and wait until it acknowledges, which means every
	 * earlier message reached it (a last error reply, say); then close the
	 * endpoint at once. (A graceful UCX close would wait for the peer's
	 * own close, and UCX 1.13 never completes a flush of an idle
	 * client-server endpoint.) A dead or silent peer costs CLOSE_MS. */
	if (!c->dead) {
		double until = now_ms() + CLOSE_MS;

		c->fin_hdr[0] = c->id;
		c->fin_hdr[1] = c->tx_seq++;
		{
			ucp_request_param_t frp;
			struct op fo = { 0, UCS_OK, 0 };
			void *freq;
			ucs_status_t fs;

			c->fin_iov.buffer = c->fin_hdr;
			c->fin_iov.length = sizeof(c->fin_hdr);
			memset(&frp, 0, sizeof(frp));
			frp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE |
					   UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
			frp.flags = UCP_AM_SEND_FLAG_EAGER;
			frp.datatype = ucp_dt_make_iov();
			frp.cb.send = send_cb;
			frp.user_data = &fo;
			freq = ucp_am_send_nbx(c->ep, AM_ID, NULL, 0, &c->fin_iov, 1, &frp);
			fs = req_wait(c, freq, &fo, until);
			if (fs != UCS_OK)
				H->log(3, "rdma: FIN to %s: %s", c->peer, ucs_status_string(fs));
		}
		wk_wake(k);
		while (!c->acked && !c->dead && now_ms() < until)
			wk_wait(k, 10);
		if (!c->acked && !c->dead)
			H->log(3, "rdma: %s did not acknowledge the close", c->peer);
	}
	/* no more messages for c */
	for (pp = &k->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	while (c->qh) {
		struct item *it = c->qh;
		c->qh = it->next;
		item_put(k, it);
	}
	c->qt = NULL;
	memset(&rp, 0, sizeof(rp));
	rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
			  UCP_OP_ATTR_FIELD_FLAGS;
	rp.cb.send = send_cb;
	rp.user_data = &o;
	rp.flags = UCP_EP_CLOSE_FLAG_FORCE;
	c->dead = 1;
	if (!c->ep_gone) {
		req = ucp_ep_close_nbx(c->ep, &rp);
		if (req_wait(c, req, &o, now_ms() + CLOSE_MS) == UCS_ERR_TIMED_OUT)
			H->log(1, "rdma: closing the connection to %s timed out", c->peer);
	}
	pthread_mutex_unlock(&k->m);
	if (!k->shared) {
		wk_fini(k);
		free(k);
	}
	free(c);
}

static void rdma_close(struct vgpu_tp_conn *c)
{
	if (c)
		rdma_close_internal(c);
}

static const char *rdma_peer(struct vgpu_tp_conn *c)
{
	return c->peer;
}

static const char *const rdma_schemes[] = { "rdma", NULL };

static const struct vgpu_transport_ops rdma_ops = {
	.size = sizeof(struct vgpu_transport_ops),
	.abi = VGPU_TRANSPORT_ABI,
	.name = "rdma",
	.schemes = rdma_schemes,
	.caps = VGPU_TP_CAP_ZEROCOPY_SEND | VGPU_TP_CAP_REGISTERED_MEM | VGPU_TP_CAP_MESSAGES,
	.listen = rdma_listen,
	.accept = rdma_accept,
	.listen_shutdown = rdma_listen_shutdown,
	.listen_close = rdma_listen_close,
	.listen_is_remote = rdma_listen_is_remote,
	.connect = rdma_connect,
	.send = rdma_send,
	.recv = rdma_recv,
	.set_timeout = rdma_set_timeout,
	.shutdown = rdma_shutdown,
	.close = rdma_close,
	.peer = rdma_peer,
	.send_recv = NULL,
	.send_deferred = rdma_send_deferred,
	.flush = rdma_flush,
	.recv_deferred = rdma_recv_deferred,
	.recv_flush = rdma_recv_flush,
};

EXPORT const struct vgpu_transport_ops *vgpu_transport_init(const struct vgpu_transport_host *host,
							    unsigned int abi);
EXPORT const struct vgpu_transport_ops *vgpu_transport_init(const struct vgpu_transport_host *host,
							    unsigned int abi)
{
	if (!host || host->size < sizeof(struct vgpu_transport_host))
		return NULL;
	H = host;
	if (abi != VGPU_TRANSPORT_ABI) {
		host->error(VGPU_ERR_UNSUPPORTED, "rdma transport built for ABI %u, library has %u",
			    VGPU_TRANSPORT_ABI, abi);
		return NULL;
	}
	return &rdma_ops;
}
