/* SPDX-License-Identifier: MIT */
/*
 * server.c - protocol decoding in front of the engine (vgpud and
 * vgpu_server_*).
 *
 * Per connection: one reader thread (decodes requests in order, runs
 * synchronous calls inline, queues asynchronous ones on the engine) and one
 * writer thread (sends what engine completions produce, so an engine worker
 * never blocks on a slow client). Replies are sent in order: the reader sends
 * directly only when nothing is queued or being sent.
 *
 * Bulk bytes of a copy live in at most VGPU_PROTO_CHUNK-sized buffers (a
 * synchronous htod's chunk: VGPU_PROTO_SYNC_CHUNK, 8 MiB), each
 * freed by the completion of its engine copy (htod) or after it was sent
 * (dtoh); the bytes in flight per connection are bounded (credits), so a
 * multi-GiB copy never sits in server memory.
 *
 * Asynchronous requests (VGPU_MSGF_NOREPLY) get no reply: their errors,
 * immediate or from the engine, are kept per stream and returned by the next
 * synchronisation of that stream (or of the device).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <openssl/crypto.h>

#include "vgpu/server.h"
#include "engine.h"
#include "error.h"
#include "proto.h"
#include "remote.h"
#include "scale.h"
#include "status.h"
#include "transport.h"
#include "uri.h"

#define MAX_LISTENERS 16
#define CONN_CREDIT (32u * 1024 * 1024) /* bulk bytes in flight per connection */
#define HANDSHAKE_MS 10000
#define QUEUE_MAX 4096 /* replies waiting for a client that does not read */
#define MAX_WAITERS 64
#define WAITER_TTL_NS (3ull * 1000000000ull) /* a waiting pool client polls every 250 ms */

struct secret {
	char tenant[64];
	char secret[256];
};

struct listener {
	struct vgpu_server *srv;
	const struct vgpu_transport_ops *tp;
	struct vgpu_tp_listener *l;
	struct vgpu_uri u;
	char uri[300];
	pthread_t th;
	int running;
	/* protocol bytes and connections (server lock not needed: atomics) */
	uint64_t rx, tx, conns;
};

/* A pool client waiting for capacity (status requests with a wait id). */
struct waiter {
	uint64_t id;
	uint64_t first_ns, last_ns;
	uint64_t mem;
	int device;
};

struct outmsg {
	struct outmsg *next;
	uint16_t type;
	uint32_t flags;
	uint64_t id;
	void *bulk;        /* owned: freed after sending (credit returned) */
	size_t bulk_len;
	int bulk_owned;
	size_t body_len;
	uint8_t body[];
};

struct sid_err {
	struct sid_err *next;
	uint32_t sid;
	vgpu_status st;
	char msg[VGPU_ERRMSG_MAX];
};

/* One request served by several engine completions (chunked copies). */
struct xfer {
	struct srv_conn *c;
	uint64_t id;
	uint32_t sid;     /* client's stream (0: synchronous) */
	uint32_t esid;    /* engine stream used */
	vgpu_status st;
	char msg[VGPU_ERRMSG_MAX];
	uint64_t n;
};

struct ord_stream;

/* srv_conn's sending and qh: changed under lock, but read (qh) and released
 * (sending) without it on the reader's fast reply path */
#define ATOM_LD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define ATOM_ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)

/* A held-back reply, bulk included, in the connection's own buffer: at
 * most what the uring transport gathers into one SEND (a synchronous dtoh
 * of up to 8 KiB less the header and body leaves with the wait for the
 * next request). */
#define STASH_MAX 8192
/* ... and in a buffer allocated on first use, up to what uring still sends
 * with that wait (its FUSE_MAX): the bytes of a synchronous dtoh up to
 * this size are copied out of device memory (0.8 us per 64 KiB here)
 * rather than sent from it, which could not wait for the next request. */
#define STASH_BIG (128u * 1024)
/* direct htod chunks still landing (VGPU_PROTO_SYNC_CHUNK each): twice the
 * fetches rdma keeps in flight, which is all the overlap there is to gain */
#define DEFER_MAX 16

struct srv_conn {
	struct vgpu_server *srv;
	struct listener *lis;
	const struct vgpu_transport_ops *tp;
	struct vgpu_tp_conn *tc;
	struct vgpu_session *sess;
	int status_only;       /* served a sessionless status request */
	int direct;            /* served on the caller's thread (vgpu__server_serve_conn) */
	char tenant[64];
	char label[320];
	char peer[128];
	struct srv_conn *next, *prev;

	pthread_mutex_t lock;
	pthread_cond_t cond;   /* credits, outstanding completions, queue drained */
	pthread_cond_t wcond;  /* the writer: something to send */
	struct outmsg *qh, *qt;
	unsigned qlen;
	int sending, wdead, wstop;
	pthread_t writer;
	int writer_started;
	size_t inflight;       /* bulk bytes held */
	unsigned outstanding;  /* engine completions not yet called */
	struct sid_err *errs;

	uint32_t xfer_sid;     /* engine stream for chunked synchronous copies */
	pthread_mutex_t olock; /* ostreams */
	struct ord_stream *ostreams;
	struct xfer *htod_x;   /* chunked synchronous htod in progress */

	pthread_mutex_t plock; /* pool */
	void *pool[2];         /* free chunk buffers (no page faults per chunk): pool_of */
	unsigned npool[2];

	/* A reply held back by the reader (which keeps the sending role for
	 * it) to leave with its next receive in one transport call
	 * (send_recv): see conn_send and stash_flush. Reader thread only. */
	int fuse;              /* the transport has send_recv */
	int stash_ok;          /* serve() may hold back its first reply */
	struct vgpu__direct defer[DEFER_MAX]; /* direct htod chunks still landing */
	unsigned ndefer;
	pthread_t reader;
	size_t stash_len;
	uint8_t *stash_at;        /* stash or stash_big, while stash_len */
	uint8_t *stash_big;       /* STASH_BIG bytes, allocated on first use */
	uint8_t stash[STASH_MAX]; /* header, body, and the bulk of a small dtoh */

	struct vgpu_rbuf rb;
	uint8_t body[VGPU_PROTO_MAX_BODY];
	uint8_t scratch[VGPU_PROTO_INLINE];
};

struct vgpu_server {
	struct vgpu_server_opts opts;
	char backend[16];
	struct vgpu_engine *eng;
	struct secret *secrets;
	int nsecrets;
	struct listener ls[MAX_LISTENERS];
	unsigned nls;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct srv_conn *conns;
	unsigned nconns;
	/* reader threads that finished: joined by the accept loop and at stop,
	 * so that every thread (and its thread-local state) is gone when
	 * vgpu_server_stop returns */
	pthread_t *zombies;
	unsigned nzombies, capzombies;
	int started, stopping;

	/* capacity and pressure (lock) */
	uint64_t waits_total;
	uint64_t demand;           /* devices given pool demand last time (bits) */
	struct waiter waiters[MAX_WAITERS];
	uint64_t start_ns;
	/* utilisation samples per device (lock) */
	struct { uint64_t at_ns, device_ns; double util; } util[VGPU_STATUS_MAX_DEVICES];
	struct vgpu__metrics *metrics;
	struct listener direct;    /* vgpu__server_serve_conn's connections */
};

static uint64_t mono_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* Chunk buffers                                                            */

#define POOL_MAX (CONN_CREDIT / VGPU_PROTO_CHUNK + 2)

/* The pool for buffers of n bytes, if any: 1 MiB chunks, and the larger
 * chunks of synchronous copies (VGPU_PROTO_SYNC_CHUNK); and how many each
 * keeps. */
static const unsigned pool_max[2] = { POOL_MAX, CONN_CREDIT / VGPU_PROTO_SYNC_CHUNK + 1 };

static int pool_of(size_t n)
{
	if (n == VGPU_PROTO_CHUNK)
		return 0;
	if (n == VGPU_PROTO_SYNC_CHUNK)
		return 1;
	return -1;
}

static void *chunk_get(struct srv_conn *c, size_t n)
{
	int i = pool_of(n);
	void *p = NULL;

	if (i >= 0) {
		pthread_mutex_lock(&c->plock);
		if ((p = c->pool[i])) {
			c->pool[i] = *(void **)p;
			c->npool[i]--;
		}
		pthread_mutex_unlock(&c->plock);
	}
	return p ? p : malloc(n ? n : 1);
}

static void chunk_put(struct srv_conn *c, void *p, size_t n)
{
	int i = p ? pool_of(n) : -1;

	if (i >= 0) {
		pthread_mutex_lock(&c->plock);
		if (c->npool[i] < pool_max[i]) {
			*(void **)p = c->pool[i];
			c->pool[i] = p;
			c->npool[i]++;
			p = NULL;
		}
		pthread_mutex_unlock(&c->plock);
	}
	free(p);
}

/* ------------------------------------------------------------------------ */
/* Sending                                                                  */

static void credit_put_locked(struct srv_conn *c, size_t n)
{
	c->inflight -= n;
	pthread_cond_broadcast(&c->cond);
}

static void stash_flush(struct srv_conn *c, int fuse);

static void credit_take(struct srv_conn *c, size_t n)
{
	stash_flush(c, 0); /* the writer frees credit: it must not wait for us */
	pthread_mutex_lock(&c->lock);
	while (c->inflight && c->inflight + n > CONN_CREDIT && !c->wdead)
		pthread_cond_wait(&c->cond, &c->lock);
	c->inflight += n;
	pthread_mutex_unlock(&c->lock);
}

static void credit_put(struct srv_conn *c, size_t n)
{
	pthread_mutex_lock(&c->lock);
	credit_put_locked(c, n);
	pthread_mutex_unlock(&c->lock);
}

static void conn_dead_locked(struct srv_conn *c)
{
	if (!c->wdead) {
		c->wdead = 1;
		c->tp->shutdown(c->tc, 0); /* wake the reader too */
	}
	pthread_cond_broadcast(&c->cond);
	pthread_cond_signal(&c->wcond);
}

/*
 * Send a message in order with everything queued before it. bulk (with
 * credit held for bulk_len) is freed after sending. may_block: the caller
 * is the reader thread and may send directly when the line is idle.
 */
static void conn_send(struct srv_conn *c, int may_block, uint16_t type, uint32_t flags,
		      uint64_t id, const void *body, size_t body_len, void *bulk,
		      size_t bulk_len, int bulk_owned)
{
	struct outmsg *m;

	if (may_block)
		stash_flush(c, 0); /* in order: a held-back reply first */
	pthread_mutex_lock(&c->lock);
	if (c->wdead)
		goto drop;
	if (may_block && !ATOM_LD(c->sending) && !c->qh) {
		vgpu_status st;

		size_t total = VGPU_PROTO_HDR + body_len + bulk_len;
		uint8_t *at = NULL;

		if (c->stash_ok && (!bulk_len || !bulk_owned) &&
		    pthread_equal(c->reader, pthread_self())) {
			if (total <= sizeof(c->stash))
				at = c->stash;
			else if (total <= STASH_BIG &&
				 (c->stash_big || (c->stash_big = malloc(STASH_BIG))))
				at = c->stash_big;
		}
		if (at) {
			/* the reply of a request: hold it back, keeping the
			 * sending role, for the reader loop's next receive */
			struct vgpu_hdr h = { VGPU_PROTO_MAGIC, VGPU_PROTO_VERSION, type, flags,
					      (uint32_t)body_len, id, bulk_len };

			ATOM_ST(c->sending, 1);
			pthread_mutex_unlock(&c->lock);
			vgpu__hdr_encode(at, &h);
			memcpy(at + VGPU_PROTO_HDR, body, body_len);
			if (bulk_len)
				memcpy(at + VGPU_PROTO_HDR + body_len, bulk, bulk_len);
			c->stash_at = at;
			c->stash_len = total;
			c->stash_ok = 0;
			return;
		}

		ATOM_ST(c->sending, 1);
		pthread_mutex_unlock(&c->lock);
		st = vgpu__send_msg(c->tp, c->tc, type, flags, id, body, body_len, bulk, bulk_len);
		__atomic_add_fetch(&c->lis->tx, VGPU_PROTO_HDR + body_len + bulk_len, __ATOMIC_RELAXED);
		if (st >= 0 && !bulk_owned) {
			/* the line is free again: only a reply queued meanwhile
			 * needs the writer woken, under the lock (sending and qh
			 * are sequentially consistent, so one of us sees the other) */
			ATOM_ST(c->sending, 0);
			if (!ATOM_LD(c->qh))
				return;
		}
		pthread_mutex_lock(&c->lock);
		ATOM_ST(c->sending, 0);
		if (st < 0) {
			vgpu_debug("%s: send failed: %s", c->label, vgpu__error_msg());
			conn_dead_locked(c);
		}
		if (c->qh) /* queued by a completion meanwhile */
			pthread_cond_signal(&c->wcond);
		goto drop;
	}
	m = malloc(sizeof(*m) + body_len + (bulk_owned ? 0 : bulk_len));
	if (!m) {
		vgpu_err("%s: out of host memory queueing a reply: closing", c->label);
		conn_dead_locked(c);
		goto drop;
	}
	m->next = NULL;
	m->type = type;
	m->flags = flags;
	m->id = id;
	m->body_len = body_len;
	memcpy(m->body, body, body_len);
	m->bulk_owned = bulk_owned;
	m->bulk_len = bulk_len;
	if (bulk_owned) {
		m->bulk = bulk;
	} else {
		m->bulk = m->body + body_len;
		if (bulk_len)
			memcpy(m->bulk, bulk, bulk_len);
	}
	if (c->qt)
		c->qt->next = m;
	else
		ATOM_ST(c->qh, m);
	c->qt = m;
	__atomic_add_fetch(&c->qlen, 1, __ATOMIC_RELAXED);
	pthread_cond_signal(&c->wcond);
	pthread_mutex_unlock(&c->lock);
	return;
drop:
	if (bulk_owned && bulk) {
		chunk_put(c, bulk, bulk_len);
		credit_put_locked(c, bulk_len);
	}
	pthread_mutex_unlock(&c->lock);
}

/*
 * Send the reply the reader held back, and give up the sending role; fuse:
 * with the next receive in one transport call (send_recv) when nothing is
 * read ahead and no other message can be queued meanwhile (no engine
 * completion outstanding, none queued: the writer would wait for the
 * sending role while send_recv waits for the peer). VGPU_OK,
 * VGPU_ERR_TIMEOUT (sent, nothing received yet) or the connection's error.
 * No-op in any thread but the reader.
 */
static void stash_flush_st(struct srv_conn *c, int fuse, vgpu_status *out)
{
	struct iovec iov;
	vgpu_status st;

	*out = VGPU_OK;
	if (!c->stash_len || !pthread_equal(c->reader, pthread_self()))
		return;
	iov.iov_base = c->stash_at;
	iov.iov_len = c->stash_len;
	c->stash_len = 0;
	if (fuse && c->rb.off == c->rb.len) {
		pthread_mutex_lock(&c->lock);
		fuse = !c->outstanding && !c->qh && !c->wdead;
		pthread_mutex_unlock(&c->lock);
	} else {
		fuse = 0;
	}
	if (fuse)
		st = vgpu__rbuf_send_fill(&c->rb, &iov, 1);
	else
		st = c->tp->send(c->tc, &iov, 1);
	__atomic_add_fetch(&c->lis->tx, iov.iov_len, __ATOMIC_RELAXED);
	pthread_mutex_lock(&c->lock);
	ATOM_ST(c->sending, 0);
	if (st < 0 && st != VGPU_ERR_TIMEOUT) {
		vgpu_debug("%s: send failed: %s", c->label, vgpu__error_msg());
		conn_dead_locked(c);
	}
	if (c->qh) /* queued meanwhile */
		pthread_cond_signal(&c->wcond);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	*out = st;
}

static void stash_flush(struct srv_conn *c, int fuse)
{
	vgpu_status st;

	stash_flush_st(c, fuse, &st);
}

static void *writer_main(void *arg)
{
	struct srv_conn *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct outmsg *m;
		vgpu_status st = VGPU_OK;

		while ((!c->qh || ATOM_LD(c->sending)) && !c->wstop)
			pthread_cond_wait(&c->wcond, &c->lock);
		if (!c->qh && c->wstop)
			break;
		if (ATOM_LD(c->sending))
			continue;
		m = c->qh;
		ATOM_ST(c->qh, m->next);
		if (!c->qh)
			c->qt = NULL;
		__atomic_sub_fetch(&c->qlen, 1, __ATOMIC_RELAXED);
		if (!c->wdead) {
			ATOM_ST(c->sending, 1);
			pthread_mutex_unlock(&c->lock);
			st = vgpu__send_msg(c->tp, c->tc, m->type, m->flags, m->id, m->body,
					    m->body_len, m->bulk, m->bulk_len);
			__atomic_add_fetch(&c->lis->tx, VGPU_PROTO_HDR + m->body_len + m->bulk_len,
					   __ATOMIC_RELAXED);
			pthread_mutex_lock(&c->lock);
			ATOM_ST(c->sending, 0);
			if (st < 0)
				conn_dead_locked(c);
		}
		if (m->bulk_owned && m->bulk) {
			chunk_put(c, m->bulk, m->bulk_len);
			credit_put_locked(c, m->bulk_len);
		}
		free(m);
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Response body: [status, message, results...]; the caller packs results. */
static void resp_begin(struct vgpu_wbuf *w, void *buf, size_t cap, vgpu_status st,
		       const char *msg, unsigned nres)
{
	size_t ml;

	vgpu__wbuf_init(w, buf, cap);
	if (st < 0) {
		nres = 0;
		if (!msg)
			msg = vgpu__error_msg();
	} else {
		msg = "";
	}
	ml = strlen(msg);
	if (ml > VGPU_ERRMSG_MAX)
		ml = VGPU_ERRMSG_MAX;
	msgpack_pack_array(&w->pk, 2 + nres);
	msgpack_pack_int(&w->pk, st);
	msgpack_pack_str_with_body(&w->pk, msg, ml);
}

static void reply_status(struct srv_conn *c, int may_block, uint64_t id, uint32_t flags,
			 vgpu_status st, const char *msg)
{
	/* [0, ""]: what most replies are, encoded once */
	static const uint8_t ok[3] = { 0x92, 0x00, 0xa0 };
	uint8_t b[VGPU_ERRMSG_MAX + 64];
	struct vgpu_wbuf w;

	if (st == VGPU_OK) {
		conn_send(c, may_block, VGPU_MSG_RESP, flags, id, ok, sizeof(ok), NULL, 0, 0);
		return;
	}
	resp_begin(&w, b, sizeof(b), st, msg, 0);
	conn_send(c, may_block, VGPU_MSG_RESP, flags, id, w.buf, w.len, NULL, 0, 0);
}

/* ------------------------------------------------------------------------ */
/* Stream errors of asynchronous requests                                   */

static void record_err_locked(struct srv_conn *c, uint32_t sid, vgpu_status st, const char *msg)
{
	struct sid_err *e;

	for (e = c->errs; e; e = e->next)
		if (e->sid == sid)
			return; /* the first error wins */
	e = calloc(1, sizeof(*e));
	if (!e)
		return;
	e->sid = sid;
	e->st = st;
	snprintf(e->msg, sizeof(e->msg), "%s", msg ? msg : "");
	e->next = c->errs;
	c->errs = e;
}

static void record_err(struct srv_conn *c, uint32_t sid, vgpu_status st, const char *msg)
{
	pthread_mutex_lock(&c->lock);
	record_err_locked(c, sid, st, msg);
	pthread_mutex_unlock(&c->lock);
}

/* Take (and clear) the error of sid; any sid when all != 0 (clears all). */
static vgpu_status take_err(struct srv_conn *c, uint32_t sid, int all, char *msg, size_t len)
{
	struct sid_err **pp, *e;
	vgpu_status st = VGPU_OK;

	pthread_mutex_lock(&c->lock);
	for (pp = &c->errs; (e = *pp);) {
		if (all || e->sid == sid) {
			/* the list is newest first: keep overwriting to report the oldest */
			st = e->st;
			snprintf(msg, len, "%s", e->msg);
			*pp = e->next;
			free(e);
			continue;
		}
		pp = &e->next;
	}
	pthread_mutex_unlock(&c->lock);
	return st;
}

/* ------------------------------------------------------------------------ */
/* Engine completions                                                       */


/*
 * The engine may call the completions of one stream from different workers
 * and so out of order (it releases the stream before calling done.fn).
 * Replies must leave in stream order (data chunks before the end of a copy,
 * an async error recorded before the sync that reports it), so completions
 * get a sequence number per engine stream and run strictly in that order:
 * one that arrives early is parked and run by the one before it.
 */
struct ord_stream {
	struct ord_stream *next;
	uint32_t sid;
	uint64_t issued, next_run;
	struct ord_item *parked;
};

struct ord_item {
	struct ord_item *next;
	struct srv_conn *c;
	struct ord_stream *os;
	uint64_t seq;
	void (*fn)(void *arg, vgpu_status st, const char *msg);
	void *arg;
	vgpu_status st;
	char msg[VGPU_ERRMSG_MAX];
};

static void ord_fire(void *arg, vgpu_status st, const char *msg)
{
	struct ord_item *it = arg, **pp;
	struct srv_conn *c = it->c;
	struct ord_stream *os = it->os;
	unsigned ran = 0;

	it->st = st;
	if (st < 0)
		snprintf(it->msg, sizeof(it->msg), "%s", msg ? msg : "");
	pthread_mutex_lock(&c->olock);
	if (it->seq != os->next_run) {
		it->next = os->parked;
		os->parked = it;
		pthread_mutex_unlock(&c->olock);
		return;
	}
	while (it) {
		pthread_mutex_unlock(&c->olock);
		if (it->fn)
			it->fn(it->arg, it->st, it->st < 0 ? it->msg : NULL);
		free(it);
		ran++;
		pthread_mutex_lock(&c->olock);
		os->next_run++;
		for (pp = &os->parked; (it = *pp); pp = &it->next) {
			if (it->seq == os->next_run) {
				*pp = it->next;
				break;
			}
		}
	}
	pthread_mutex_unlock(&c->olock);
	/* last: once outstanding is 0 the connection may be freed */
	pthread_mutex_lock(&c->lock);
	c->outstanding -= ran;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* A completion for engine stream sid, run in order; NULL: out of memory. */
static struct ord_item *ord_prepare(struct srv_conn *c, uint32_t sid,
				    void (*fn)(void *, vgpu_status, const char *), void *arg,
				    struct vgpu_completion *done)
{
	struct ord_item *it = calloc(1, sizeof(*it));
	struct ord_stream *os;

	if (!it)
		return NULL;
	pthread_mutex_lock(&c->olock);
	for (os = c->ostreams; os && os->sid != sid; os = os->next)
		;
	if (!os) {
		os = calloc(1, sizeof(*os));
		if (!os) {
			pthread_mutex_unlock(&c->olock);
			free(it);
			return NULL;
		}
		os->sid = sid;
		os->next = c->ostreams;
		c->ostreams = os;
	}
	it->c = c;
	it->os = os;
	it->seq = os->issued++;
	it->fn = fn;
	it->arg = arg;
	pthread_mutex_unlock(&c->olock);
	pthread_mutex_lock(&c->lock);
	c->outstanding++;
	pthread_mutex_unlock(&c->lock);
	done->fn = ord_fire;
	done->arg = it;
	return it;
}

/* The engine refused the call: its completion will never come. */
static void ord_cancel(struct ord_item *it)
{
	it->fn = NULL;
	ord_fire(it, VGPU_OK, NULL);
}

struct htod_done {
	struct srv_conn *c;
	struct xfer *x;   /* chunk of a synchronous copy, or NULL */
	uint32_t sid;
	void *buf;
	size_t n;
};

static void htod_done_fn(void *arg, vgpu_status st, const char *msg)
{
	struct htod_done *d = arg;
	struct srv_conn *c = d->c;

	chunk_put(c, d->buf, d->n);
	pthread_mutex_lock(&c->lock);
	credit_put_locked(c, d->n);
	if (st < 0) {
		if (d->x) {
			if (d->x->st == VGPU_OK) {
				d->x->st = st;
				snprintf(d->x->msg, sizeof(d->x->msg), "%s", msg ? msg : "");
			}
		} else {
			record_err_locked(c, d->sid, st, msg);
		}
	}
	pthread_mutex_unlock(&c->lock);
	free(d);
}

struct dtoh_done {
	struct xfer *x;
	void *buf;
	size_t n;
	uint64_t off;
};

static void dtoh_done_fn(void *arg, vgpu_status st, const char *msg)
{
	struct dtoh_done *d = arg;
	struct xfer *x = d->x;
	struct srv_conn *c = x->c;
	uint8_t b[VGPU_ERRMSG_MAX + 64];
	struct vgpu_wbuf w;

	if (st < 0) {
		pthread_mutex_lock(&c->lock);
		if (x->st == VGPU_OK) {
			x->st = st;
			snprintf(x->msg, sizeof(x->msg), "%s", msg ? msg : "");
		}
		if (x->sid)
			record_err_locked(c, x->sid, st, msg);
		pthread_mutex_unlock(&c->lock);
	}
	/* a chunk: [status, message, offset] + bytes (none on error) */
	resp_begin(&w, b, sizeof(b), st, msg, 1);
	if (st >= 0)
		msgpack_pack_uint64(&w.pk, d->off);
	if (st < 0) {
		chunk_put(c, d->buf, d->n);
		credit_put(c, d->n);
		conn_send(c, 0, VGPU_MSG_RESP, VGPU_MSGF_MORE, x->id, w.buf, w.len, NULL, 0, 0);
	} else {
		conn_send(c, 0, VGPU_MSG_RESP, VGPU_MSGF_MORE, x->id, w.buf, w.len, d->buf, d->n, 1);
	}
	free(d);
}

enum notify_kind { N_STREAM_SYNC, N_XFER_END };

struct notify_done {
	struct srv_conn *c;
	enum notify_kind kind;
	uint64_t id;
	uint32_t sid;
	struct xfer *x;
};

static void notify_done_fn(void *arg, vgpu_status st, const char *msg)
{
	struct notify_done *d = arg;
	struct srv_conn *c = d->c;
	char m2[VGPU_ERRMSG_MAX];
	vgpu_status st2;

	if (d->kind == N_STREAM_SYNC) {
		st2 = take_err(c, d->sid, 0, m2, sizeof(m2));
		if (st < 0)
			reply_status(c, 0, d->id, 0, st, msg ? msg : "");
		else
			reply_status(c, 0, d->id, 0, st2, m2);
	} else {
		struct xfer *x = d->x;

		/* errors of earlier async work on a client stream stay for its sync */
		if (st < 0 && x->sid)
			record_err(c, x->sid, st, msg);
		reply_status(c, 0, x->id, 0, x->st, x->msg);
		free(x);
	}
	free(d);
}

/* Wait until every engine completion of this connection ran (the engine
 * may report a stream idle just before it calls the last completion). */
static void drain_completions(struct srv_conn *c)
{
	stash_flush(c, 0);
	pthread_mutex_lock(&c->lock);
	while (c->outstanding)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

/* Queue an end-of-transfer notification; replies at once when it cannot. */
static void xfer_finish(struct srv_conn *c, struct xfer *x)
{
	struct notify_done *d = calloc(1, sizeof(*d));
	struct vgpu_completion done;
	struct ord_item *it = NULL;
	vgpu_status st;

	if (d && !(it = ord_prepare(c, x->esid, notify_done_fn, d, &done))) {
		free(d);
		d = NULL;
	}
	if (!d) {
		reply_status(c, 1, x->id, 0, vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory"), NULL);
		free(x);
		return;
	}
	d->c = c;
	d->kind = N_XFER_END;
	d->x = x;
	st = vgpu__s_stream_notify(c->sess, x->esid, &done);
	if (st < 0) {
		char msg[VGPU_ERRMSG_MAX];

		snprintf(msg, sizeof(msg), "%s", vgpu__error_msg());
		ord_cancel(it);
		free(d);
		/* chunks still queued point at x: let every completion run first */
		drain_completions(c);
		reply_status(c, 1, x->id, 0, x->st < 0 ? x->st : st, x->st < 0 ? x->msg : msg);
		free(x);
	}
}

static vgpu_status xfer_stream(struct srv_conn *c, uint32_t *sid)
{
	if (!c->xfer_sid) {
		vgpu_status st = vgpu__s_stream_create(c->sess, 0, &c->xfer_sid);
		if (st < 0)
			return st;
	}
	*sid = c->xfer_sid;
	return VGPU_OK;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */

#define BAD_BODY(op) vgpu__error(VGPU_ERR_PROTOCOL, "%s: malformed %s request", c->label, \
				 vgpu__op_name(op))

/* Result of serving one request: OK, or a protocol error (reply sent, close). */

/*
 * Synchronous copies straight between the connection and device memory
 * (vgpu__s_mem_direct): no staging buffer, no engine stream, no credit.
 */
struct direct_io {
	struct srv_conn *c;
	uint64_t id;
	int single;  /* dtoh: one final frame (one chunk at most), not chunks and a reply */
	int touched; /* the bulk bytes were (partly) moved: a failure is the connection's */
	uint64_t align; /* dtoh: the client's destination address (low bits), or VGPU_BULK_ANYWHERE */
};

/* Send [host, host+n) as dtoh chunks, in order with every queued reply:
 * the reader takes the sending role from the writer for the whole copy. */
static vgpu_status direct_send(void *arg, void *host, size_t n)
{
	struct direct_io *io = arg;
	struct srv_conn *c = io->c;
	uint8_t b[VGPU_SBATCH_BODY + VGPU_PROTO_BULK_ALIGN];
	struct vgpu_wbuf w;
	struct vgpu_sbatch sb;
	vgpu_status st = VGPU_OK, st2;
	size_t off, k;

	io->touched = 1;
	if (io->single && c->stash_ok &&
	    VGPU_PROTO_HDR + VGPU_DTOH_REPLY_BODY + VGPU_PROTO_BULK_ALIGN + n <= STASH_BIG) {
		/* small enough to copy: held back like any reply, to leave
		 * with the reader's wait for the next request (conn_send),
		 * alone in its send and in the shape the client may receive
		 * straight into its buffer (vgpu__dtoh_reply_prefix), as
		 * vgpu__sbatch_add lays out the reply below */
		size_t pad;

		resp_begin(&w, b, sizeof(b), VGPU_OK, NULL, 1);
		msgpack_pack_uint64(&w.pk, 0);
		pad = vgpu__bulk_pad(VGPU_PROTO_HDR + w.len, io->align);
		memset(b + w.len, 0, pad);
		conn_send(c, 1, VGPU_MSG_RESP, 0, io->id, b, w.len + pad, host, n, 0);
		return VGPU_OK;
	}
	stash_flush(c, 0);
	pthread_mutex_lock(&c->lock);
	while ((ATOM_LD(c->sending) || c->qh) && !c->wdead)
		pthread_cond_wait(&c->cond, &c->lock);
	if (c->wdead) {
		pthread_mutex_unlock(&c->lock);
		return vgpu__error(VGPU_ERR_CONNECTION, "%s: connection lost", c->label);
	}
	ATOM_ST(c->sending, 1);
	pthread_mutex_unlock(&c->lock);
	/* the chunks stay in flight together where the transport can (rdma:
	 * a rendezvous each), or leave 7 to a system call (sockets): host
	 * is ours until the flush */
	vgpu__sbatch_init(&sb, c->tp, c->tc, NULL, 0);
	for (off = 0; off < n && st >= 0; off += k) {
		k = n - off < VGPU_PROTO_SYNC_CHUNK ? n - off : VGPU_PROTO_SYNC_CHUNK;
		resp_begin(&w, b, sizeof(b), VGPU_OK, NULL, 1);
		msgpack_pack_uint64(&w.pk, off);
		st = vgpu__sbatch_add(&sb, VGPU_MSG_RESP, io->single ? 0 : VGPU_MSGF_MORE, io->id,
				      w.buf, w.len, (uint8_t *)host + off, k,
				      io->align == VGPU_BULK_ANYWHERE ? io->align : io->align + off);
		__atomic_add_fetch(&c->lis->tx, VGPU_PROTO_HDR + w.len + k, __ATOMIC_RELAXED);
	}
	if (st >= 0)
		st = vgpu__sbatch_flush(&sb);
	/* whatever happened, nothing reads host once this returns */
	st2 = vgpu__tp_flush(c->tp, c->tc);
	if (st >= 0)
		st = st2;
	pthread_mutex_lock(&c->lock);
	ATOM_ST(c->sending, 0);
	if (st < 0)
		conn_dead_locked(c);
	if (c->qh)
		pthread_cond_signal(&c->wcond);
	pthread_mutex_unlock(&c->lock);
	return st;
}

/*
 * The direct htod chunks whose bytes may still be landing (recv_deferred):
 * their device memory stays in use until defer_flush, which the reader
 * calls before it serves anything but the next chunk of the same copy, and
 * before the connection goes. A failure there is the connection's.
 */
static vgpu_status defer_flush(struct srv_conn *c)
{
	vgpu_status st;
	unsigned i;

	if (!c->ndefer)
		return VGPU_OK;
	st = vgpu__tp_recv_flush(c->tp, c->tc);
	for (i = 0; i < c->ndefer; i++)
		vgpu__s_mem_direct_end(c->sess, &c->defer[i], st);
	c->ndefer = 0;
	return st;
}

/*
 * A synchronous htod's bulk straight into device memory. Returns
 * VGPU__DIRECT_NONE (nothing read: stage it), the copy's status with all n
 * bulk bytes consumed, or *fatal and the connection's failure. defer: a
 * chunk before the last of a large copy, which may go on landing while the
 * next header is read (c->defer, up to DEFER_MAX).
 */
static vgpu_status htod_direct(struct srv_conn *c, uint64_t dst, uint64_t n, int defer,
			       int *fatal)
{
	struct vgpu__direct *d = &c->defer[c->ndefer];
	char msg[VGPU_ERRMSG_MAX];
	vgpu_status st, st2;
	int deferred = 0;

	st = vgpu__s_mem_direct_begin(c->sess, dst, n, 1, d);
	if (st == VGPU_OK) {
		if (defer)
			st = vgpu__rbuf_read_deferred(&c->rb, d->host, n, &deferred);
		else
			st = vgpu__rbuf_read(&c->rb, d->host, n);
		if (deferred)
			c->ndefer++; /* ended by defer_flush, whatever st is */
		else
			vgpu__s_mem_direct_end(c->sess, d, st);
		if (st < 0)
			*fatal = 1; /* the connection failed mid-bulk */
		return st;
	}
	if (st == VGPU__DIRECT_NONE)
		return st;
	/* refused before a byte was read: skip the bytes, keep the error */
	snprintf(msg, sizeof(msg), "%s", vgpu__error_msg());
	if ((st2 = vgpu__rbuf_discard(&c->rb, n)) < 0) {
		*fatal = 1;
		return st2;
	}
	vgpu__error_set_raw(st, msg);
	return st;
}

static vgpu_status do_htod(struct srv_conn *c, const struct vgpu_hdr *h, struct vgpu_mp *m)
{
	uint32_t sid;
	uint64_t dst, n;
	void *buf;
	vgpu_status st;
	int noreply = h->flags & VGPU_MSGF_NOREPLY;
	int defer;

	if (vgpu__mp_u32(m, &sid) || vgpu__mp_u64(m, &dst) || vgpu__mp_u64(m, &n) ||
	    vgpu__mp_padding(m) || n != h->bulk_len ||
	    n > (sid == 0 ? VGPU_PROTO_SYNC_CHUNK : VGPU_PROTO_CHUNK))
		return BAD_BODY(VGPU_OP_HTOD);
	/* a chunk before the last of a large synchronous copy may go on
	 * landing (recv_deferred); anything else first waits for those */
	defer = sid == 0 && (h->flags & VGPU_MSGF_NOREPLY) && !(h->flags & VGPU_MSGF_LAST) &&
		c->ndefer < DEFER_MAX && vgpu__tp_can_defer_recv(c->tp);
	if (!defer && (st = defer_flush(c)) < 0)
		return st;
	if (sid == 0) {
		/* synchronous, small or a chunk: straight into device memory
		 * where the device allows; the reply (or the chunk's error)
		 * as for a staged one */
		int fatal = 0;

		st = htod_direct(c, dst, n, defer, &fatal);
		if (fatal)
			return st;
		if (st != VGPU__DIRECT_NONE)
			goto failed;
	}
	if (sid == 0 && !(h->flags & (VGPU_MSGF_NOREPLY | VGPU_MSGF_LAST)) && n <= VGPU_PROTO_INLINE) {
		/* small synchronous copy: one round trip, no allocation */
		st = vgpu__rbuf_read(&c->rb, c->scratch, n);
		if (st < 0)
			return st;
		st = vgpu__s_memcpy_htod(c->sess, 0, dst, c->scratch, n, NULL);
		reply_status(c, 1, h->id, 0, st, NULL);
		return VGPU_OK;
	}
	credit_take(c, n);
	buf = chunk_get(c, n);
	if (!buf) {
		credit_put(c, n);
		vgpu__rbuf_discard(&c->rb, n);
		st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory for a %llu-byte chunk",
				 c->label, (unsigned long long)n);
		goto failed;
	}
	st = vgpu__rbuf_read(&c->rb, buf, n);
	if (st < 0) {
		chunk_put(c, buf, n);
		credit_put(c, n);
		return st;
	}
	{
		struct htod_done *d = calloc(1, sizeof(*d));
		struct vgpu_completion done;
		struct ord_item *it;
		uint32_t esid = sid;

		if (!d) {
			chunk_put(c, buf, n);
			credit_put(c, n);
			st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
			goto failed;
		}
		if (sid == 0) {
			/* chunk of a large synchronous copy */
			if (!c->htod_x) {
				c->htod_x = calloc(1, sizeof(*c->htod_x));
				if (!c->htod_x) {
					chunk_put(c, buf, n);
					free(d);
					credit_put(c, n);
					st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
					goto failed;
				}
				c->htod_x->c = c;
				c->htod_x->id = h->id;
			}
			st = xfer_stream(c, &esid);
			if (st < 0) {
				chunk_put(c, buf, n);
				free(d);
				credit_put(c, n);
				goto failed;
			}
			c->htod_x->esid = esid;
			d->x = c->htod_x;
		}
		d->c = c;
		d->sid = sid;
		d->buf = buf;
		d->n = n;
		it = ord_prepare(c, esid, htod_done_fn, d, &done);
		if (!it) {
			chunk_put(c, buf, n);
			free(d);
			credit_put(c, n);
			st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
			goto failed;
		}
		st = vgpu__s_memcpy_htod(c->sess, esid, dst, buf, n, &done);
		if (st < 0) {
			ord_cancel(it);
			chunk_put(c, buf, n);
			free(d);
			credit_put(c, n);
			goto failed;
		}
	}
	st = VGPU_OK;
failed:
	if (sid == 0 && (h->flags & (VGPU_MSGF_NOREPLY | VGPU_MSGF_LAST))) {
		struct xfer *x = c->htod_x;

		if (st < 0 && !x && !(h->flags & VGPU_MSGF_LAST)) {
			/* a chunk before the last failed: its error is the reply's */
			if (!(x = c->htod_x = calloc(1, sizeof(*x))))
				return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory",
						   c->label);
			x->c = c;
			x->id = h->id;
		}
		if (st < 0 && x) {
			pthread_mutex_lock(&c->lock); /* completions write x too */
			if (x->st == VGPU_OK) {
				x->st = st;
				snprintf(x->msg, sizeof(x->msg), "%s", vgpu__error_msg());
			}
			pthread_mutex_unlock(&c->lock);
		}
		if (h->flags & VGPU_MSGF_LAST) {
			c->htod_x = NULL;
			if (!x)
				reply_status(c, 1, h->id, 0, st, NULL);
			else if (!x->esid) {
				reply_status(c, 1, h->id, 0, x->st, x->msg);
				free(x);
			} else {
				x->id = h->id;
				xfer_finish(c, x);
			}
		}
	} else if (noreply) {
		if (st < 0)
			record_err(c, sid, st, vgpu__error_msg());
	} else {
		reply_status(c, 1, h->id, 0, st, NULL);
	}
	return VGPU_OK;
}

static vgpu_status do_dtoh(struct srv_conn *c, const struct vgpu_hdr *h, struct vgpu_mp *m)
{
	uint32_t sid, esid;
	uint64_t src, n, off, align = VGPU_BULK_ANYWHERE;
	vgpu_status st;
	struct xfer *x;

	if (vgpu__mp_u32(m, &sid) || vgpu__mp_u64(m, &src) || vgpu__mp_u64(m, &n))
		return BAD_BODY(VGPU_OP_DTOH);
	/* optional: the low bits of the client's destination address */
	if ((m->p < m->end && (vgpu__mp_u64(m, &align) || align >= VGPU_PROTO_BULK_ALIGN)) ||
	    vgpu__mp_padding(m))
		return BAD_BODY(VGPU_OP_DTOH);
	if (sid == 0) {
		/* synchronous: sent straight from device memory where the
		 * device allows; a copy of one chunk or less as its one
		 * reply frame (no separate final reply: one message less) */
		struct direct_io io = { c, h->id, n <= VGPU_PROTO_SYNC_CHUNK, 0, align };

		st = vgpu__s_mem_direct(c->sess, src, n, 0, direct_send, &io);
		if (st != VGPU__DIRECT_NONE) {
			if (io.touched && st < 0)
				return st; /* the connection failed mid-copy */
			if (st < 0 || !io.single)
				reply_status(c, 1, h->id, 0, st, NULL);
			return VGPU_OK;
		}
	}
	if (sid == 0 && n <= VGPU_PROTO_INLINE) {
		uint8_t b[VGPU_ERRMSG_MAX + 64 + VGPU_PROTO_BULK_ALIGN];
		struct vgpu_wbuf w;
		size_t pad = 0;

		st = vgpu__s_memcpy_dtoh(c->sess, 0, c->scratch, src, n, NULL);
		resp_begin(&w, b, sizeof(b), st, NULL, 1);
		if (st >= 0) {
			msgpack_pack_uint64(&w.pk, 0);
			/* the shape of the direct reply (direct_send) */
			if (n)
				pad = vgpu__bulk_pad(VGPU_PROTO_HDR + w.len, align);
			memset(b + w.len, 0, pad);
		}
		conn_send(c, 1, VGPU_MSG_RESP, 0, h->id, b, w.len + pad, c->scratch,
			  st < 0 ? 0 : n, 0);
		return VGPU_OK;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		reply_status(c, 1, h->id, 0, vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory"), NULL);
		return VGPU_OK;
	}
	x->c = c;
	x->id = h->id;
	x->sid = sid;
	x->n = n;
	esid = sid;
	if (sid == 0 && (st = xfer_stream(c, &esid)) < 0) {
		reply_status(c, 1, h->id, 0, st, NULL);
		free(x);
		return VGPU_OK;
	}
	x->esid = esid;
	for (off = 0; off < n; off += VGPU_PROTO_CHUNK) {
		size_t k = n - off < VGPU_PROTO_CHUNK ? (size_t)(n - off) : VGPU_PROTO_CHUNK;
		struct dtoh_done *d = calloc(1, sizeof(*d));
		struct vgpu_completion done;
		struct ord_item *it = NULL;
		void *buf = NULL;

		if (d) {
			credit_take(c, k);
			buf = chunk_get(c, k);
			if (!buf)
				credit_put(c, k);
		}
		if (d && buf && !(it = ord_prepare(c, esid, dtoh_done_fn, d, &done))) {
			chunk_put(c, buf, k);
			credit_put(c, k);
			buf = NULL;
		}
		if (!d || !buf) {
			free(d);
			st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
		} else {
			d->x = x;
			d->buf = buf;
			d->n = k;
			d->off = off;
			st = vgpu__s_memcpy_dtoh(c->sess, esid, buf, src + off, k, &done);
			if (st < 0) {
				ord_cancel(it);
				chunk_put(c, buf, k);
				free(d);
				credit_put(c, k);
			}
		}
		if (st < 0) {
			pthread_mutex_lock(&c->lock);
			if (x->st == VGPU_OK) {
				x->st = st;
				snprintf(x->msg, sizeof(x->msg), "%s", vgpu__error_msg());
			}
			if (sid)
				record_err_locked(c, sid, st, vgpu__error_msg());
			pthread_mutex_unlock(&c->lock);
			break;
		}
	}
	xfer_finish(c, x);
	return VGPU_OK;
}

static vgpu_status do_launch(struct srv_conn *c, const struct vgpu_hdr *h, struct vgpu_mp *m)
{
	uint32_t fid, sid, g[3], b[3], na, i;
	uint64_t shmem;
	vgpu_arg args[VGPU_MAX_KERNEL_ARGS];
	_Alignas(16) uint8_t argbytes[VGPU_MAX_ARG_BYTES + 16 * VGPU_MAX_KERNEL_ARGS];
	size_t boff = 0;
	vgpu_status st;

	if (vgpu__mp_u32(m, &fid) || vgpu__mp_u32(m, &sid) || vgpu__mp_u32(m, &g[0]) ||
	    vgpu__mp_u32(m, &g[1]) || vgpu__mp_u32(m, &g[2]) || vgpu__mp_u32(m, &b[0]) ||
	    vgpu__mp_u32(m, &b[1]) || vgpu__mp_u32(m, &b[2]) || vgpu__mp_u64(m, &shmem) ||
	    vgpu__mp_array(m, &na) || na % 3 || na / 3 > VGPU_MAX_KERNEL_ARGS)
		return BAD_BODY(VGPU_OP_LAUNCH);
	na /= 3;
	memset(args, 0, sizeof(args));
	for (i = 0; i < na; i++) {
		if (vgpu__mp_u32(m, &args[i].type) || vgpu__mp_u32(m, &args[i].size))
			return BAD_BODY(VGPU_OP_LAUNCH);
		if (args[i].type == VGPU_ARG_BYTES) {
			const void *p;
			uint32_t len;

			if (vgpu__mp_bin(m, &p, &len) || len != args[i].size ||
			    len > sizeof(argbytes) - boff)
				return BAD_BODY(VGPU_OP_LAUNCH);
			/* aligned copy: the kernel sees a struct, the body is packed */
			memcpy(argbytes + boff, p, len);
			args[i].v.ptr = argbytes + boff;
			boff += (len + 15) & ~(size_t)15;
		} else {
			uint64_t v;

			if (vgpu__mp_u64(m, &v))
				return BAD_BODY(VGPU_OP_LAUNCH);
			/* the raw bits, as the client's union held them */
			memcpy(&args[i].v, &v, args[i].size < 8 ? args[i].size : 8);
		}
	}
	st = vgpu__s_launch(c->sess, fid, vgpu_dim3_make(g[0], g[1], g[2]),
			    vgpu_dim3_make(b[0], b[1], b[2]), (size_t)shmem, sid, args, na);
	if (h->flags & VGPU_MSGF_NOREPLY) {
		if (st < 0)
			record_err(c, sid, st, vgpu__error_msg());
	} else {
		reply_status(c, 1, h->id, 0, st, NULL);
	}
	return VGPU_OK;
}

static vgpu_status do_module_load(struct srv_conn *c, const struct vgpu_hdr *h, struct vgpu_mp *m)
{
	uint64_t n;
	uint32_t mid = 0;
	void *img;
	vgpu_status st;
	uint8_t b[VGPU_ERRMSG_MAX + 64];
	struct vgpu_wbuf w;

	if (vgpu__mp_u64(m, &n) || n != h->bulk_len)
		return BAD_BODY(VGPU_OP_MODULE_LOAD);
	if (!strcmp(c->srv->backend, "cpu") &&
	    !(c->srv->opts.flags & VGPU_SERVER_ALLOW_NATIVE_MODULES)) {
		st = vgpu__rbuf_discard(&c->rb, n);
		if (st < 0)
			return st;
		st = vgpu__error(VGPU_ERR_UNSUPPORTED,
				 "%s: this server refuses client modules: on the cpu backend a module is "
				 "native code that would run inside the server (start vgpud with "
				 "--allow-native-modules to permit it)", c->label);
		reply_status(c, 1, h->id, 0, st, NULL);
		return VGPU_OK;
	}
	credit_take(c, n);
	img = malloc(n ? n : 1);
	if (!img) {
		credit_put(c, n);
		st = vgpu__rbuf_discard(&c->rb, n);
		if (st < 0)
			return st;
		reply_status(c, 1, h->id, 0,
			     vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory for a module image"), NULL);
		return VGPU_OK;
	}
	st = vgpu__rbuf_read(&c->rb, img, n);
	if (st < 0) {
		free(img);
		credit_put(c, n);
		return st;
	}
	st = vgpu__s_module_load(c->sess, img, n, &mid);
	free(img);
	credit_put(c, n);
	resp_begin(&w, b, sizeof(b), st, NULL, 1);
	if (st >= 0)
		msgpack_pack_uint32(&w.pk, mid);
	conn_send(c, 1, VGPU_MSG_RESP, 0, h->id, w.buf, w.len, NULL, 0, 0);
	return VGPU_OK;
}

/* ------------------------------------------------------------------------ */
/* Status (operator view: tenants and usage, never secrets)                 */

/* Hand the waiting pool clients to the engine's autoscale signals, per
 * device (lock held). */
static void demand_publish_locked(struct vgpu_server *s, uint64_t now)
{
	uint32_t n[VGPU_STATUS_MAX_DEVICES] = { 0 };
	uint64_t longest[VGPU_STATUS_MAX_DEVICES] = { 0 };
	int any = 0;

	for (int i = 0; i < MAX_WAITERS; i++) {
		const struct waiter *w = &s->waiters[i];

		if (!w->id || w->device < 0 || w->device >= VGPU_STATUS_MAX_DEVICES)
			continue;
		n[w->device]++;
		if (now - w->first_ns > longest[w->device])
			longest[w->device] = now - w->first_ns;
		any = 1;
	}
	for (int d = 0; d < VGPU_STATUS_MAX_DEVICES && (any || s->demand); d++)
		if (n[d] || (s->demand & (1ull << d)))
			vgpu__engine_scale_demand(s->eng, d, n[d], longest[d]);
	s->demand = 0;
	for (int d = 0; d < VGPU_STATUS_MAX_DEVICES; d++)
		if (n[d])
			s->demand |= 1ull << d;
}

/* Record or refresh a waiting pool client; drop expired ones (lock held). */
static void waiter_touch_locked(struct vgpu_server *s, uint64_t id, uint64_t mem, int device,
				uint64_t now)
{
	struct waiter *free_slot = NULL;

	for (int i = 0; i < MAX_WAITERS; i++) {
		struct waiter *w = &s->waiters[i];

		if (w->id && now - w->last_ns > WAITER_TTL_NS)
			w->id = 0;
		if (id && w->id == id) {
			w->last_ns = now;
			w->mem = mem;
			w->device = device;
			id = 0;
		}
		if (!w->id && !free_slot)
			free_slot = w;
	}
	if (id && free_slot) {
		free_slot->id = id;
		free_slot->first_ns = free_slot->last_ns = now;
		free_slot->mem = mem;
		free_slot->device = device;
		s->waits_total++;
	}
	demand_publish_locked(s, now);
}

static void waiter_remove_locked(struct vgpu_server *s, uint64_t id)
{
	for (int i = 0; id && i < MAX_WAITERS; i++)
		if (s->waiters[i].id == id)
			s->waiters[i].id = 0;
	demand_publish_locked(s, mono_ns());
}

vgpu_status vgpu__server_node_status(struct vgpu_server *s, struct vgpu_node_status **out)
{
	struct vgpu_node_status *st;
	struct vgpu_engine_session_info *si = NULL;
	struct vgpu_engine_tenant_info *ti = NULL;
	int ndev, nses, nten;
	uint64_t now = mono_ns();

	*out = NULL;
	st = calloc(1, sizeof(*st));
	if (!st)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	st->size = sizeof(*st);
	snprintf(st->server, sizeof(st->server), "libvgpu %d.%d.%d %s", VGPU_VERSION_MAJOR,
		 VGPU_VERSION_MINOR, VGPU_VERSION_PATCH, s->backend);
	snprintf(st->backend, sizeof(st->backend), "%s", s->backend);
	if (s->nls)
		snprintf(st->uri, sizeof(st->uri), "%s", s->ls[0].uri);

	ndev = vgpu__engine_device_count(s->eng);
	if (ndev > VGPU_STATUS_MAX_DEVICES)
		ndev = VGPU_STATUS_MAX_DEVICES;
	si = calloc(VGPU_STATUS_MAX_SESSIONS, sizeof(*si));
	ti = calloc(VGPU_STATUS_MAX_TENANTS, sizeof(*ti));
	st->devices = calloc(ndev > 0 ? (size_t)ndev : 1, sizeof(*st->devices));
	st->transports = calloc(MAX_LISTENERS, sizeof(*st->transports));
	if (!si || !ti || !st->devices || !st->transports) {
		free(si);
		free(ti);
		vgpu_node_status_free(st);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	}
	nses = vgpu__engine_sessions(s->eng, si, VGPU_STATUS_MAX_SESSIONS);
	if (nses > VGPU_STATUS_MAX_SESSIONS)
		nses = VGPU_STATUS_MAX_SESSIONS;
	nten = vgpu__engine_tenants(s->eng, ti, VGPU_STATUS_MAX_TENANTS);
	if (nten > VGPU_STATUS_MAX_TENANTS)
		nten = VGPU_STATUS_MAX_TENANTS;

	/* devices: 0 always, others once a session opened them */
	for (int i = 0; i < ndev; i++) {
		struct vgpu_node_device *d = &st->devices[st->ndevices];
		struct vgpu_device_info di;
		struct vgpu_engine_stats es;
		int used = i == 0;

		for (int k = 0; k < nses && !used; k++)
			used = si[k].device == i;
		if (!used || vgpu__engine_device_info(s->eng, i, &di) < 0)
			continue;
		vgpu__engine_stats(s->eng, i, &es);
		d->index = i;
		snprintf(d->name, sizeof(d->name), "%s", di.name);
		snprintf(d->backend, sizeof(d->backend), "%s", di.backend);
		d->mem_total = di.total_mem;
		d->mem_used = es.mem_used;
		d->mem_on_host = di.mem_on_host;
		d->swapped_in = di.swapped_in;
		d->swapped_out = di.swapped_out;
		d->sessions = (uint32_t)es.sessions;
		d->queued = es.queued;
		d->device_ns = es.device_ns;
		d->items = es.items;
		d->queue_wait_ns = es.queue_wait_ns;
		pthread_mutex_lock(&s->lock);
		if (now - s->util[i].at_ns >= 500000000ull) {
			if (s->util[i].at_ns) {
				double u = (double)(es.device_ns - s->util[i].device_ns) /
					   (double)(now - s->util[i].at_ns);
				s->util[i].util = u > 1.0 ? 1.0 : u < 0.0 ? 0.0 : u;
			}
			s->util[i].at_ns = now;
			s->util[i].device_ns = es.device_ns;
		}
		d->util = s->util[i].util;
		pthread_mutex_unlock(&s->lock);
		st->ndevices++;
	}
	st->session = calloc(nses > 0 ? (size_t)nses : 1, sizeof(*st->session));
	st->tenants = calloc(nten > 0 ? (size_t)nten : 1, sizeof(*st->tenants));
	if (!st->session || !st->tenants) {
		free(si);
		free(ti);
		vgpu_node_status_free(st);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	}
	for (int k = 0; k < nses; k++) {
		struct vgpu_node_session *x = &st->session[k];

		x->id = si[k].id;
		snprintf(x->tenant, sizeof(x->tenant), "%s", si[k].tenant);
		x->device = si[k].device;
		x->mem_used = si[k].mem_used;
		x->mem_limit = si[k].mem_limit;
		x->mem_on_host = si[k].mem_on_host;
		x->share = si[k].share;
		x->device_ns = si[k].device_ns;
		x->items = si[k].items;
		x->queued = si[k].queued;
		x->age_ns = si[k].age_ns;
		x->idle_ns = si[k].idle_ns;
	}
	st->nsessions = (uint32_t)nses;
	for (int k = 0; k < nten; k++) {
		snprintf(st->tenants[k].tenant, sizeof(st->tenants[k].tenant), "%s", ti[k].tenant);
		st->tenants[k].device_ns = ti[k].device_ns;
		st->tenants[k].items = ti[k].items;
		st->tenants[k].sessions = ti[k].sessions;
	}
	st->ntenants = (uint32_t)nten;
	free(si);
	free(ti);

	/* transports: one entry per transport name, summed over listeners */
	for (unsigned i = 0; i < s->nls; i++) {
		const char *name = s->ls[i].u.scheme;
		struct vgpu_node_transport *t = NULL;

		for (uint32_t k = 0; k < st->ntransports; k++)
			if (!strcmp(st->transports[k].name, name))
				t = &st->transports[k];
		if (!t) {
			t = &st->transports[st->ntransports++];
			snprintf(t->name, sizeof(t->name), "%s", name);
		}
		t->rx_bytes += __atomic_load_n(&s->ls[i].rx, __ATOMIC_RELAXED);
		t->tx_bytes += __atomic_load_n(&s->ls[i].tx, __ATOMIC_RELAXED);
		t->connections += __atomic_load_n(&s->ls[i].conns, __ATOMIC_RELAXED);
	}

	{
		struct vgpu_engine_stats es;

		vgpu__engine_stats(s->eng, -1, &es);
		st->sessions = (uint32_t)es.sessions;
		st->refused = es.admit_rejected;
		st->max_sessions = (uint32_t)es.max_sessions;
		st->waiting = (uint32_t)es.admit_waiting;   /* in the engine's admission queue */
		st->waits_total = es.admit_waits;
	}
	pthread_mutex_lock(&s->lock);
	waiter_touch_locked(s, 0, 0, 0, now);
	for (int i = 0; i < MAX_WAITERS; i++) {
		if (!s->waiters[i].id)
			continue;
		st->waiting++;
		if (now - s->waiters[i].first_ns > st->wait_ns_max)
			st->wait_ns_max = now - s->waiters[i].first_ns;
	}
	st->waits_total += s->waits_total;
	st->uptime_ns = now - s->start_ns;
	pthread_mutex_unlock(&s->lock);
	*out = st;
	return VGPU_OK;
}

VGPU_API vgpu_status vgpu_server_status(vgpu_server *s, struct vgpu_node_status **out)
{
	if (!s || !out)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_server_status: NULL argument");
	return vgpu__server_node_status(s, out);
}

VGPU_API vgpu_status vgpu_server_metrics_listen(vgpu_server *s, const char *hostport,
						char *bound, size_t boundlen)
{
	if (!s)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_server_metrics_listen: NULL server");
	if (s->metrics)
		return vgpu__error(VGPU_ERR_INVALID, "metrics are already served");
	return vgpu__metrics_start(s, hostport, bound, boundlen, &s->metrics);
}

/* Reply to a status request (big: VGPU_PROTO_MAX_BODY bytes of scratch). */
static void status_reply(struct srv_conn *c, uint64_t id, uint8_t *big)
{
	struct vgpu_node_status *st = NULL;
	struct vgpu_wbuf w;
	vgpu_status rc;

	rc = vgpu__server_node_status(c->srv, &st);
	resp_begin(&w, big, VGPU_PROTO_MAX_BODY, rc, NULL, 1);
	if (rc >= 0) {
		/* keep the reply in one body: trim the session list if needed */
		for (;;) {
			vgpu__pack_node_status(&w.pk, st);
			if (!w.overflow || !st->nsessions)
				break;
			st->nsessions /= 2;
			resp_begin(&w, big, VGPU_PROTO_MAX_BODY, rc, NULL, 1);
		}
	}
	vgpu_node_status_free(st);
	if (w.overflow) {
		reply_status(c, 1, id, 0, vgpu__error(VGPU_ERR_INTERNAL, "status too large"), NULL);
		return;
	}
	conn_send(c, 1, VGPU_MSG_RESP, 0, id, w.buf, w.len, NULL, 0, 0);
}

/* Serve one request whose header and body were read. */
static vgpu_status serve(struct srv_conn *c, const struct vgpu_hdr *h)
{
	struct vgpu_mp mp, *m = &mp;
	uint32_t n, op = 0, a32, b32, sid;
	uint64_t a64, b64, c64;
	vgpu_status st;
	int noreply = h->flags & VGPU_MSGF_NOREPLY;
	uint8_t rb[VGPU_ERRMSG_MAX + 512];
	struct vgpu_wbuf w;
	char msg[VGPU_ERRMSG_MAX];

	vgpu__mp_init(m, c->body, h->body_len);
	if (h->type != VGPU_MSG_REQ)
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: unexpected message type %u from the client",
				   c->label, h->type);
	if (vgpu__mp_array(m, &n) || n < 1 || vgpu__mp_u32(m, &op))
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: bad request body: not a msgpack [op, args...] array",
				   c->label);
	if (op <= VGPU_OP_HELLO || op >= VGPU_OP_MAX)
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: unknown request op %u", c->label, op);
	if (h->bulk_len && op != VGPU_OP_HTOD && op != VGPU_OP_MODULE_LOAD)
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: %s request carries %llu unexpected bulk bytes",
				   c->label, vgpu__op_name(op), (unsigned long long)h->bulk_len);
	vgpu__error_clear();
	/* the chunks of a large htod still landing are done before anything
	 * else is served (do_htod decides for the next chunk) */
	if (op != VGPU_OP_HTOD && (st = defer_flush(c)) < 0)
		return st;

	switch (op) {
	case VGPU_OP_HTOD:
		return do_htod(c, h, m);
	case VGPU_OP_DTOH:
		return do_dtoh(c, h, m);
	case VGPU_OP_LAUNCH:
		return do_launch(c, h, m);
	case VGPU_OP_MODULE_LOAD:
		return do_module_load(c, h, m);
	case VGPU_OP_DEVICE_INFO: {
		struct vgpu_device_info di;

		st = vgpu__s_device_info(c->sess, &di);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 1);
		if (st >= 0)
			vgpu__pack_device_info(&w.pk, &di);
		break;
	}
	case VGPU_OP_SYNCHRONIZE:
		st = vgpu__s_synchronize(c->sess);
		drain_completions(c); /* their errors are recorded */
		if (st < 0) {
			char m2[VGPU_ERRMSG_MAX];

			snprintf(msg, sizeof(msg), "%s", vgpu__error_msg());
			take_err(c, 0, 1, m2, sizeof(m2));
		} else {
			st = take_err(c, 0, 1, msg, sizeof(msg));
		}
		resp_begin(&w, rb, sizeof(rb), st, msg, 0);
		break;
	case VGPU_OP_MEM_ALLOC:
		if (vgpu__mp_u64(m, &a64))
			return BAD_BODY(op);
		b64 = 0;
		st = a64 > SIZE_MAX ? vgpu__error(VGPU_ERR_OUT_OF_MEMORY, "%s: %llu bytes asked",
						  c->label, (unsigned long long)a64)
				    : vgpu__s_mem_alloc(c->sess, (size_t)a64, &b64);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 1);
		if (st >= 0)
			msgpack_pack_uint64(&w.pk, b64);
		break;
	case VGPU_OP_MEM_FREE:
		if (vgpu__mp_u64(m, &a64))
			return BAD_BODY(op);
		st = vgpu__s_mem_free(c->sess, a64);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 0);
		break;
	case VGPU_OP_MEM_ADVISE:
		if (vgpu__mp_u64(m, &a64) || vgpu__mp_u64(m, &b64) || b64 > UINT32_MAX)
			return BAD_BODY(op);
		st = vgpu__s_mem_advise(c->sess, a64, (unsigned)b64);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 0);
		break;
	case VGPU_OP_DTOD:
	case VGPU_OP_MEMSET:
		if (vgpu__mp_u32(m, &sid) || vgpu__mp_u64(m, &a64) || vgpu__mp_u64(m, &b64) ||
		    vgpu__mp_u64(m, &c64) || (op == VGPU_OP_MEMSET && b64 > 255))
			return BAD_BODY(op);
		if (op == VGPU_OP_DTOD)
			st = vgpu__s_memcpy_dtod(c->sess, sid, a64, b64, (size_t)c64);
		else
			st = vgpu__s_memset(c->sess, sid, a64, (uint8_t)b64, (size_t)c64);
		if (noreply) {
			if (st < 0)
				record_err(c, sid, st, vgpu__error_msg());
			return VGPU_OK;
		}
		resp_begin(&w, rb, sizeof(rb), st, NULL, 0);
		break;
	case VGPU_OP_STREAM_CREATE:
	case VGPU_OP_EVENT_CREATE:
		if (vgpu__mp_u32(m, &a32))
			return BAD_BODY(op);
		b32 = 0;
		st = op == VGPU_OP_STREAM_CREATE ? vgpu__s_stream_create(c->sess, a32, &b32)
						 : vgpu__s_event_create(c->sess, a32, &b32);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 1);
		if (st >= 0)
			msgpack_pack_uint32(&w.pk, b32);
		break;
	case VGPU_OP_STREAM_DESTROY:
		if (vgpu__mp_u32(m, &sid))
			return BAD_BODY(op);
		if (sid && sid == c->xfer_sid)
			st = vgpu__error(VGPU_ERR_BAD_HANDLE, "%s: stream_destroy: stream %u is not the "
					 "client's (the server's copy stream)", c->label, sid);
		else
			st = vgpu__s_stream_destroy(c->sess, sid);
		if (st >= 0) {
			drain_completions(c);
			take_err(c, sid, 0, msg, sizeof(msg));
		}
		resp_begin(&w, rb, sizeof(rb), st, NULL, 0);
		break;
	case VGPU_OP_STREAM_SYNC: {
		struct notify_done *d;
		struct vgpu_completion done;
		struct ord_item *it = NULL;

		if (vgpu__mp_u32(m, &sid))
			return BAD_BODY(op);
		d = calloc(1, sizeof(*d));
		if (d && !(it = ord_prepare(c, sid, notify_done_fn, d, &done))) {
			free(d);
			d = NULL;
		}
		if (!d) {
			st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
			resp_begin(&w, rb, sizeof(rb), st, NULL, 0);
			break;
		}
		d->c = c;
		d->kind = N_STREAM_SYNC;
		d->id = h->id;
		d->sid = sid;
		st = vgpu__s_stream_notify(c->sess, sid, &done);
		if (st >= 0)
			return VGPU_OK; /* the completion replies */
		ord_cancel(it);
		free(d);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 0);
		break;
	}
	case VGPU_OP_STREAM_QUERY:
		if (vgpu__mp_u32(m, &sid))
			return BAD_BODY(op);
		st = vgpu__s_stream_query(c->sess, sid);
		if (st == VGPU_OK)
			st = take_err(c, sid, 0, msg, sizeof(msg));
		else
			snprintf(msg, sizeof(msg), "%s", vgpu__error_msg());
		resp_begin(&w, rb, sizeof(rb), st, msg, 0);
		break;
	case VGPU_OP_STREAM_WAIT_EVENT:
	case VGPU_OP_EVENT_RECORD:
		/* [op, sid, eid] / [op, eid, sid] */
		if (vgpu__mp_u32(m, &a32) || vgpu__mp_u32(m, &b32))
			return BAD_BODY(op);
		if (op == VGPU_OP_STREAM_WAIT_EVENT) {
			sid = a32;
			st = vgpu__s_stream_wait_event(c->sess, a32, b32);
		} else {
			sid = b32;
			st = vgpu__s_event_record(c->sess, a32, b32);
		}
		if (noreply) {
			if (st < 0)
				record_err(c, sid, st, vgpu__error_msg());
			return VGPU_OK;
		}
		resp_begin(&w, rb, sizeof(rb), st, NULL, 0);
		break;
	case VGPU_OP_EVENT_DESTROY:
	case VGPU_OP_EVENT_SYNC:
	case VGPU_OP_EVENT_QUERY:
	case VGPU_OP_MODULE_UNLOAD:
		if (vgpu__mp_u32(m, &a32))
			return BAD_BODY(op);
		st = op == VGPU_OP_EVENT_DESTROY ? vgpu__s_event_destroy(c->sess, a32)
		   : op == VGPU_OP_EVENT_SYNC ? vgpu__s_event_sync(c->sess, a32)
		   : op == VGPU_OP_EVENT_QUERY ? vgpu__s_event_query(c->sess, a32)
		   : vgpu__s_module_unload(c->sess, a32);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 0);
		break;
	case VGPU_OP_EVENT_ELAPSED: {
		float ms = 0;

		if (vgpu__mp_u32(m, &a32) || vgpu__mp_u32(m, &b32))
			return BAD_BODY(op);
		st = vgpu__s_event_elapsed(c->sess, a32, b32, &ms);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 1);
		if (st >= 0)
			msgpack_pack_double(&w.pk, ms);
		break;
	}
	case VGPU_OP_FUNCTION: {
		char name[256];

		if (vgpu__mp_u32(m, &a32) || vgpu__mp_strcpy(m, name, sizeof(name)))
			return BAD_BODY(op);
		b32 = 0;
		st = vgpu__s_function(c->sess, a32, name, &b32);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 1);
		if (st >= 0)
			msgpack_pack_uint32(&w.pk, b32);
		break;
	}
	case VGPU_OP_SERVER_STATS: {
		struct vgpu_engine_stats es;
		struct vgpu_device_info di;

		memset(&es, 0, sizeof(es));
		st = vgpu__s_device_info(c->sess, &di);
		if (st >= 0)
			vgpu__engine_stats(c->srv->eng, di.device_index, &es);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 3);
		if (st >= 0) {
			msgpack_pack_uint64(&w.pk, es.sessions);
			msgpack_pack_uint64(&w.pk, es.mem_used);
			msgpack_pack_uint64(&w.pk, es.allocations);
		}
		break;
	}
	case VGPU_OP_STATUS: {
		uint8_t *big = malloc(VGPU_PROTO_MAX_BODY);

		if (!big)
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
		status_reply(c, h->id, big);
		free(big);
		return VGPU_OK;
	}
	default:
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: unknown request op %u", c->label, op);
	}
	if (noreply) {
		if (st < 0)
			record_err(c, 0, st, vgpu__error_msg());
		return VGPU_OK;
	}
	conn_send(c, 1, VGPU_MSG_RESP, 0, h->id, w.buf, w.len, NULL, 0, 0);
	return VGPU_OK;
}

/* ------------------------------------------------------------------------ */
/* Handshake                                                                */

static const char *find_secret(struct vgpu_server *s, const char *tenant)
{
	const char *any = NULL;

	for (int i = 0; i < s->nsecrets; i++) {
		if (!strcmp(s->secrets[i].tenant, tenant))
			return s->secrets[i].secret;
		if (!strcmp(s->secrets[i].tenant, "*"))
			any = s->secrets[i].secret;
	}
	return any;
}

/* Too many clients: say so in place of the greeting, then close. */
static void refuse_busy(struct listener *l, struct vgpu_tp_conn *tc, unsigned n)
{
	uint8_t b[VGPU_ERRMSG_MAX + 64];
	struct vgpu_wbuf w;
	char msg[256];

	snprintf(msg, sizeof(msg), "%s: server busy: %u connections (the limit)", l->uri, n);
	vgpu_warn("%s", msg);
	vgpu__wbuf_init(&w, b, sizeof(b));
	msgpack_pack_array(&w.pk, 2);
	msgpack_pack_int(&w.pk, VGPU_ERR_BUSY);
	msgpack_pack_str_with_body(&w.pk, msg, strlen(msg));
	l->tp->set_timeout(tc, 1000);
	vgpu__send_msg(l->tp, tc, VGPU_MSG_RESP, 0, 0, w.buf, w.len, NULL, 0);
	l->tp->close(tc);
}

static vgpu_status handshake(struct srv_conn *c)
{
	struct vgpu_server *s = c->srv;
	uint8_t nonce[VGPU_PROTO_NONCE], b[512];
	struct vgpu_wbuf w;
	struct vgpu_hdr h;
	struct vgpu_mp m;
	struct vgpu_uri u;
	uint32_t n, op, np = 0, i, maclen = 0;
	uint64_t wait_id = 0, wait_mem = 0;
	int wait_dev = 0;
	const void *mac = NULL;
	int dev = 0;
	vgpu_status st;
	char srvname[64];

	st = vgpu__auth_nonce(nonce);
	if (st < 0)
		return st;
	vgpu__wbuf_init(&w, b, sizeof(b));
	snprintf(srvname, sizeof(srvname), "libvgpu %d.%d.%d %s", VGPU_VERSION_MAJOR,
		 VGPU_VERSION_MINOR, VGPU_VERSION_PATCH, s->backend);
	msgpack_pack_array(&w.pk, 4);
	msgpack_pack_uint32(&w.pk, VGPU_PROTO_VERSION);
	msgpack_pack_bin_with_body(&w.pk, nonce, sizeof(nonce));
	msgpack_pack_str_with_body(&w.pk, srvname, strlen(srvname));
	if (s->nsecrets)
		msgpack_pack_true(&w.pk);
	else
		msgpack_pack_false(&w.pk);
	st = vgpu__send_msg(c->tp, c->tc, VGPU_MSG_HELLO, 0, 0, w.buf, w.len, NULL, 0);
	if (st < 0)
		return st;
	c->tp->set_timeout(c->tc, HANDSHAKE_MS);
	memset(&h, 0, sizeof(h));
	st = vgpu__rbuf_frame(&c->rb, &h, c->body, 0, "client");
	if (st < 0) {
		if (st == VGPU_ERR_PROTOCOL && h.magic == VGPU_PROTO_MAGIC) {
			vgpu__error_prefix(st, "%s", c->label);
			reply_status(c, 1, h.id, 0, st, NULL);
		}
		return st;
	}
	c->tp->set_timeout(c->tc, 0);
	__atomic_add_fetch(&c->lis->rx, VGPU_PROTO_HDR + h.body_len, __ATOMIC_RELAXED);
	vgpu__mp_init(&m, c->body, h.body_len);
	memset(&u, 0, sizeof(u));
	if (h.type != VGPU_MSG_REQ || vgpu__mp_array(&m, &n) || n < 5 || vgpu__mp_u32(&m, &op) ||
	    (op != VGPU_OP_HELLO && op != VGPU_OP_STATUS) ||
	    vgpu__mp_strcpy(&m, c->tenant, sizeof(c->tenant)) ||
	    (!vgpu__mp_is_nil(&m) && vgpu__mp_bin(&m, &mac, &maclen)))
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: bad handshake from %s", c->label, c->peer);
	if (op == VGPU_OP_STATUS) {
		/* [op, tenant, mac, wait_id, mem, (device)]: no session; closed after the reply */
		if (vgpu__mp_u64(&m, &wait_id) || vgpu__mp_u64(&m, &wait_mem) ||
		    (n > 5 && vgpu__mp_int(&m, &wait_dev)) || wait_dev < 0 ||
		    wait_dev >= VGPU_STATUS_MAX_DEVICES)
			return vgpu__error(VGPU_ERR_PROTOCOL, "%s: bad status request from %s",
					   c->label, c->peer);
		c->status_only = 1;
	} else if (vgpu__mp_int(&m, &dev) || vgpu__mp_array(&m, &np) ||
		   np > 2 * VGPU_URI_MAX_PARAMS || np % 2) {
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: bad handshake from %s", c->label, c->peer);
	}
	for (i = 0; i < np / 2; i++) {
		struct vgpu_uri_param *p = &u.params[u.nparams];

		if (vgpu__mp_strcpy(&m, p->key, sizeof(p->key)) ||
		    vgpu__mp_strcpy(&m, p->value, sizeof(p->value)))
			return vgpu__error(VGPU_ERR_PROTOCOL, "%s: bad handshake parameters from %s",
					   c->label, c->peer);
		if (!strcmp(p->key, "wait_id")) {
			/* a waiting pool client landed: its pressure is gone */
			pthread_mutex_lock(&s->lock);
			waiter_remove_locked(s, strtoull(p->value, NULL, 16));
			pthread_mutex_unlock(&s->lock);
			continue;
		}
		if (strcmp(p->key, "token") && strcmp(p->key, "tenant"))
			u.nparams++;
	}
	if (!c->tenant[0])
		snprintf(c->tenant, sizeof(c->tenant), "default");
	snprintf(c->label, sizeof(c->label), "%s/%d", c->lis->uri, dev);
	if (s->nsecrets) {
		const char *secret = find_secret(s, c->tenant);
		uint8_t want[VGPU_PROTO_MAC];

		if (!secret || !mac || maclen != VGPU_PROTO_MAC ||
		    vgpu__auth_mac(secret, nonce, c->tenant, want) < 0 ||
		    CRYPTO_memcmp(want, mac, VGPU_PROTO_MAC) != 0) {
			st = vgpu__error(VGPU_ERR_AUTH, "%s: authentication failed for tenant '%s'%s",
					 c->label, c->tenant,
					 mac ? "" : " (no token given: set VGPU_TOKEN or ?token=)");
			vgpu_warn("%s: %s: authentication failed for tenant '%s'", c->label, c->peer, c->tenant);
			reply_status(c, 1, h.id, 0, st, NULL);
			return st;
		}
	}
	if (c->status_only) {
		uint8_t *big = malloc(VGPU_PROTO_MAX_BODY);

		if (wait_id) {
			/* the device it waits for must be open to carry the demand */
			struct vgpu_device_info di;

			vgpu__engine_device_info(s->eng, wait_dev, &di);
		}
		pthread_mutex_lock(&s->lock);
		waiter_touch_locked(s, wait_id, wait_mem, wait_dev, mono_ns());
		pthread_mutex_unlock(&s->lock);
		if (!big)
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
		status_reply(c, h.id, big);
		free(big);
		return VGPU_OK;
	}
	snprintf(u.scheme, sizeof(u.scheme), "%s", c->lis->u.scheme);
	snprintf(u.host, sizeof(u.host), "%s", c->lis->u.host);
	u.port = c->lis->u.port;
	snprintf(u.path, sizeof(u.path), "%s", c->lis->u.path);
	u.device = dev;
	st = vgpu__session_open(s->eng, &u, c->tenant, c->label, &c->sess);
	if (st < 0) {
		reply_status(c, 1, h.id, 0, st, NULL);
		return st;
	}
	{
		struct vgpu_device_info di;
		uint8_t rb[1024];

		st = vgpu__s_device_info(c->sess, &di);
		resp_begin(&w, rb, sizeof(rb), st, NULL, 2);
		if (st >= 0) {
			msgpack_pack_uint64(&w.pk, vgpu__session_id(c->sess));
			vgpu__pack_device_info(&w.pk, &di);
		}
		conn_send(c, 1, VGPU_MSG_RESP, 0, h.id, w.buf, w.len, NULL, 0, 0);
	}
	if (st >= 0)
		vgpu_info("%s: tenant '%s' connected from %s (session %llu)", c->label, c->tenant,
			  c->peer, (unsigned long long)vgpu__session_id(c->sess));
	return st;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */

static void conn_free(struct srv_conn *c, int from_reader)
{
	struct vgpu_server *s = c->srv;
	struct sid_err *e;

	/* the session first: waits for queued work, so every completion ran */
	if (c->sess) {
		vgpu__session_close(c->sess);
		c->sess = NULL;
	}

	pthread_mutex_lock(&c->lock);
	while (c->outstanding)
		pthread_cond_wait(&c->cond, &c->lock);
	c->wstop = 1;
	pthread_cond_signal(&c->wcond);
	pthread_mutex_unlock(&c->lock);
	if (c->writer_started)
		pthread_join(c->writer, NULL);
	free(c->htod_x);
	free(c->stash_big);
	while ((e = c->errs)) {
		c->errs = e->next;
		free(e);
	}
	while (c->ostreams) {
		struct ord_stream *os = c->ostreams;
		c->ostreams = os->next;
		free(os);
	}
	/* out of the server's list before the transport goes: vgpu_server_stop
	 * shuts down the connections of that list (under s->lock) */
	pthread_mutex_lock(&s->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
	pthread_mutex_unlock(&s->lock);
	c->tp->close(c->tc);
	for (int i = 0; i < 2; i++)
		while (c->pool[i]) {
			void *p = c->pool[i];
			c->pool[i] = *(void **)p;
			free(p);
		}
	pthread_mutex_destroy(&c->plock);
	pthread_mutex_destroy(&c->olock);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	pthread_cond_destroy(&c->wcond);

	pthread_mutex_lock(&s->lock);
	if (from_reader) {
		if (s->nzombies == s->capzombies) {
			unsigned cap = s->capzombies ? 2 * s->capzombies : 16;
			pthread_t *z = realloc(s->zombies, cap * sizeof(*z));

			if (z) {
				s->zombies = z;
				s->capzombies = cap;
			}
		}
		if (s->nzombies < s->capzombies)
			s->zombies[s->nzombies++] = pthread_self();
		else
			pthread_detach(pthread_self());
	}
	s->nconns--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	free(c);
}

/* Join finished reader threads (all: wait for each; else only those gone). */
static void reap_zombies(struct vgpu_server *s, int all)
{
	unsigned i = 0;

	pthread_mutex_lock(&s->lock);
	while (i < s->nzombies) {
		if (all ? pthread_join(s->zombies[i], NULL) == 0
			: pthread_tryjoin_np(s->zombies[i], NULL) == 0)
			s->zombies[i] = s->zombies[--s->nzombies];
		else
			i++;
	}
	pthread_mutex_unlock(&s->lock);
}

static void *reader_main(void *arg)
{
	struct srv_conn *c = arg;
	struct vgpu_hdr h;
	vgpu_status st;

	c->reader = pthread_self();
	c->fuse = c->tp->size >= offsetof(struct vgpu_transport_ops, send_recv) + sizeof(void *) &&
		  c->tp->send_recv;
	st = handshake(c);
	if (st < 0) {
		vgpu_info("%s: %s: handshake failed: %s", c->label, c->peer, vgpu__error_msg());
		goto out;
	}
	if (c->status_only)
		goto out;
	/* a frame started must go on arriving (and replies must leave) within
	 * the deadline; waiting for the next frame has none */
	if (c->srv->opts.frame_timeout_ms != UINT32_MAX)
		c->tp->set_timeout(c->tc, c->srv->opts.frame_timeout_ms);
	for (;;) {
		uint8_t raw[VGPU_PROTO_HDR];

		if (c->stash_len) {
			/* the last reply, and the wait for the next request */
			stash_flush_st(c, 1, &st);
			if (st < 0 && st != VGPU_ERR_TIMEOUT)
				break;
		}
		while ((st = vgpu__rbuf_read(&c->rb, raw, 1)) == VGPU_ERR_TIMEOUT)
			; /* idle between frames */
		if (st == VGPU_OK)
			st = vgpu__rbuf_read(&c->rb, raw + 1, sizeof(raw) - 1);
		if (st == VGPU_ERR_TIMEOUT)
			vgpu_warn("%s: %s: %s (a frame stalled for %u ms): closing the connection", c->label,
				  c->peer, vgpu__error_msg(), c->srv->opts.frame_timeout_ms);
		if (st < 0)
			break;
		vgpu__hdr_decode(raw, &h);
		st = vgpu__hdr_check(&h, VGPU_PROTO_MAX_BULK, "client");
		if (st < 0) {
			vgpu__error_prefix(st, "%s", c->label);
			if (h.magic == VGPU_PROTO_MAGIC)
				reply_status(c, 1, h.id, 0, st, NULL);
			vgpu_warn("%s: %s: %s: closing the connection", c->label, c->peer, vgpu__error_msg());
			break;
		}
		st = vgpu__rbuf_read(&c->rb, c->body, h.body_len);
		if (st == VGPU_ERR_TIMEOUT)
			vgpu_warn("%s: %s: %s (a frame stalled for %u ms): closing the connection", c->label,
				  c->peer, vgpu__error_msg(), c->srv->opts.frame_timeout_ms);
		if (st < 0)
			break;
		/* a client that sends but does not read: stop reading it too */
		if (__atomic_load_n(&c->qlen, __ATOMIC_RELAXED) > QUEUE_MAX) {
			stash_flush(c, 0);
			pthread_mutex_lock(&c->lock);
			while (c->qlen > QUEUE_MAX && !c->wdead)
				pthread_cond_wait(&c->cond, &c->lock);
			pthread_mutex_unlock(&c->lock);
		}
		__atomic_add_fetch(&c->lis->rx, VGPU_PROTO_HDR + h.body_len + h.bulk_len, __ATOMIC_RELAXED);
		c->stash_ok = c->fuse;
		st = serve(c, &h);
		c->stash_ok = 0;
		if (st == VGPU_ERR_PROTOCOL) {
			reply_status(c, 1, h.id, 0, st, NULL);
			vgpu_warn("%s: %s: %s: closing the connection", c->label, c->peer, vgpu__error_msg());
			break;
		}
		if (st < 0)
			break; /* connection lost mid-request */
	}
	if (st < 0 && st != VGPU_ERR_PROTOCOL)
		vgpu_info("%s: tenant '%s' (%s) disconnected: %s", c->label, c->tenant, c->peer,
			  vgpu__error_msg());
out:
	/* no bytes land in device memory once the session goes */
	if (defer_flush(c) < 0)
		vgpu_info("%s: %s: %s", c->label, c->peer, vgpu__error_msg());
	/* flush queued replies (error replies included) before closing */
	stash_flush(c, 0);
	pthread_mutex_lock(&c->lock);
	while ((c->qh || ATOM_LD(c->sending)) && !c->wdead && c->writer_started)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	conn_free(c, !c->direct);
	return NULL;
}

/* A connection with its writer thread running, or NULL (tc closed). */
static struct srv_conn *conn_new(struct listener *l, struct vgpu_tp_conn *tc)
{
	struct vgpu_server *s = l->srv;
	struct srv_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		vgpu_err("%s: out of host memory for a connection", l->uri);
		l->tp->close(tc);
		return NULL;
	}
	c->srv = s;
	c->lis = l;
	__atomic_add_fetch(&l->conns, 1, __ATOMIC_RELAXED);
	c->tp = l->tp;
	c->tc = tc;
	c->rb.tp = l->tp;
	c->rb.c = tc;
	snprintf(c->peer, sizeof(c->peer), "%s", l->tp->peer(tc));
	snprintf(c->label, sizeof(c->label), "%s", l->uri);
	snprintf(c->tenant, sizeof(c->tenant), "?");
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->olock, NULL);
	pthread_mutex_init(&c->plock, NULL);
	pthread_cond_init(&c->cond, NULL);
	pthread_cond_init(&c->wcond, NULL);
	if (pthread_create(&c->writer, NULL, writer_main, c) == 0)
		c->writer_started = 1;

	pthread_mutex_lock(&s->lock);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	pthread_mutex_unlock(&s->lock);
	if (!c->writer_started) {
		vgpu_err("%s: cannot start a connection thread", l->uri);
		c->wdead = 1;
		conn_free(c, 0);
		return NULL;
	}
	return c;
}

static void conn_start(struct listener *l, struct vgpu_tp_conn *tc)
{
	struct srv_conn *c = conn_new(l, tc);
	pthread_t th;

	if (c && pthread_create(&th, NULL, reader_main, c) != 0) {
		vgpu_err("%s: cannot start a connection thread", l->uri);
		pthread_mutex_lock(&c->lock);
		conn_dead_locked(c);
		pthread_mutex_unlock(&c->lock);
		conn_free(c, 0);
	}
}

vgpu_status vgpu__server_serve_conn(struct vgpu_server *s, const struct vgpu_transport_ops *tp,
				    struct vgpu_tp_conn *tc, const char *label)
{
	struct listener *l = &s->direct;
	struct srv_conn *c;

	if (!l->srv) {
		l->srv = s;
		l->tp = tp;
		snprintf(l->uri, sizeof(l->uri), "%s", label ? label : "direct");
	}
	c = conn_new(l, tc);
	if (!c)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "cannot start a connection");
	c->direct = 1;
	reader_main(c);
	return VGPU_OK;
}

static void *accept_main(void *arg)
{
	struct listener *l = arg;

	for (;;) {
		struct vgpu_tp_conn *tc;
		vgpu_status st = l->tp->accept(l->l, &tc);

		if (st < 0)
			break;
		pthread_mutex_lock(&l->srv->lock);
		if (l->srv->stopping) {
			pthread_mutex_unlock(&l->srv->lock);
			l->tp->close(tc);
			break;
		}
		if (l->srv->nconns >= l->srv->opts.max_connections) {
			unsigned n = l->srv->nconns;

			pthread_mutex_unlock(&l->srv->lock);
			refuse_busy(l, tc, n);
			continue;
		}
		pthread_mutex_unlock(&l->srv->lock);
		reap_zombies(l->srv, 0);
		conn_start(l, tc);
	}
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

static vgpu_status load_secrets(struct vgpu_server *s, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[512];
	int lineno = 0;
	struct stat stt;

	if (!f)
		return vgpu__error(VGPU_ERR_INVALID, "cannot read the secrets file %s: %s", path,
				   strerror(errno));
	if (fstat(fileno(f), &stt) == 0 && (stt.st_mode & 0077))
		vgpu_warn("secrets file %s is readable by group or others (chmod 600 it)", path);
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *colon, *e;
		struct secret *ns;

		lineno++;
		while (*p == ' ' || *p == '\t')
			p++;
		e = p + strlen(p);
		while (e > p && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
			*--e = 0;
		if (!*p || *p == '#')
			continue;
		ns = realloc(s->secrets, (size_t)(s->nsecrets + 1) * sizeof(*ns));
		if (!ns) {
			fclose(f);
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
		}
		s->secrets = ns;
		ns = &s->secrets[s->nsecrets];
		memset(ns, 0, sizeof(*ns));
		colon = strchr(p, ':');
		if (colon) {
			*colon = 0;
			if (strlen(p) >= sizeof(ns->tenant) || strlen(colon + 1) >= sizeof(ns->secret) ||
			    !colon[1] || !*p) {
				fclose(f);
				return vgpu__error(VGPU_ERR_INVALID, "%s:%d: bad line (want tenant:secret)",
						   path, lineno);
			}
			snprintf(ns->tenant, sizeof(ns->tenant), "%s", p);
			snprintf(ns->secret, sizeof(ns->secret), "%s", colon + 1);
		} else {
			if (strlen(p) >= sizeof(ns->secret)) {
				fclose(f);
				return vgpu__error(VGPU_ERR_INVALID, "%s:%d: secret too long", path, lineno);
			}
			snprintf(ns->tenant, sizeof(ns->tenant), "*");
			snprintf(ns->secret, sizeof(ns->secret), "%s", p);
		}
		s->nsecrets++;
	}
	fclose(f);
	if (!s->nsecrets)
		return vgpu__error(VGPU_ERR_INVALID, "secrets file %s holds no secret", path);
	return VGPU_OK;
}

VGPU_API vgpu_status vgpu_server_create(vgpu_server **out, const struct vgpu_server_opts *opts)
{
	struct vgpu_server *s;
	struct vgpu_engine_opts eo;
	vgpu_status st;
	int has_devparams;

	if (!out)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_server_create: NULL out");
	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	if (opts) {
		size_t n = opts->size < sizeof(s->opts) ? opts->size : sizeof(s->opts);
		memcpy(&s->opts, opts, n);
	}
	s->opts.size = sizeof(s->opts);
	snprintf(s->backend, sizeof(s->backend), "%s", s->opts.backend ? s->opts.backend : "cpu");
	s->opts.backend = NULL;
	if (!s->opts.stop_timeout_ms)
		s->opts.stop_timeout_ms = 10000;
	if (!s->opts.max_connections)
		s->opts.max_connections = 1024;
	if (s->opts.size < offsetof(struct vgpu_server_opts, frame_timeout_ms) + sizeof(uint32_t) ||
	    !s->opts.frame_timeout_ms)
		s->opts.frame_timeout_ms = 30000;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->start_ns = mono_ns();
	if (s->opts.secrets_file) {
		st = load_secrets(s, s->opts.secrets_file);
		if (st < 0)
			goto fail;
	}
	s->opts.secrets_file = NULL;
	memset(&eo, 0, sizeof(eo));
	eo.size = sizeof(eo);
	eo.workers = s->opts.workers;
	/* every plugin goes to the engine; autoscale ones get the pool
	 * clients' demand from here (vgpu__engine_scale_demand) */
	eo.plugins = s->opts.plugins;
	eo.slots = s->opts.slots;
	eo.max_sessions = s->opts.max_sessions;
	eo.admit_queue = s->opts.admit_queue;
	eo.admit_timeout_ms = s->opts.admit_timeout_ms;
	eo.tenant_shares = s->opts.tenant_shares;
	eo.device_params = s->opts.device_params;
	eo.queue_limit = s->opts.queue_limit;
	eo.max_handles = s->opts.max_handles ? s->opts.max_handles : 65536;
	has_devparams = s->opts.device_params && *s->opts.device_params;
	st = vgpu__engine_create(s->backend, &eo, &s->eng);
	/* the engine keeps its own copies */
	s->opts.plugins = NULL;
	s->opts.tenant_shares = NULL;
	s->opts.device_params = NULL;
	if (st < 0)
		goto fail;
	if ((s->opts.plugins && *s->opts.plugins) || has_devparams) {
		/* device 0 open from the start: its autoscale signals (idle
		 * included) flow even before the first client, and bad device
		 * parameters stop the server now */
		struct vgpu_device_info di;

		st = vgpu__engine_device_info(s->eng, 0, &di);
		if (st < 0 && has_devparams) {
			vgpu__error_prefix(st, "device parameters '%s'", eo.device_params);
			vgpu__engine_destroy(s->eng);
			s->eng = NULL;
			goto fail;
		}
	}
	s->opts.plugins = NULL;
	*out = s;
	return VGPU_OK;
fail:
	free(s->secrets);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
	return st;
}

VGPU_API vgpu_status vgpu_server_listen(vgpu_server *s, const char *uri, char *bound,
					size_t boundlen)
{
	struct listener *l;
	struct vgpu_tp_addr a;
	vgpu_status st;

	if (!s || !uri)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_server_listen: NULL argument");
	if (s->nls >= MAX_LISTENERS)
		return vgpu__error(VGPU_ERR_INVALID, "too many listeners (at most %d)", MAX_LISTENERS);
	l = &s->ls[s->nls];
	memset(l, 0, sizeof(*l));
	st = vgpu__uri_parse(uri, &l->u);
	if (st < 0)
		return st;
	l->tp = vgpu__transport_find(l->u.scheme);
	if (!l->tp)
		return vgpu__error_prefix(VGPU_ERR_BAD_URI, "%s", uri);
	vgpu__tp_addr(&l->u, &a);
	if (l->tp->listen_is_remote(&a) && !s->nsecrets)
		return vgpu__error(VGPU_ERR_AUTH,
				   "refusing to listen on %s without secrets: anyone who can reach it could "
				   "use the device (configure a secrets file, --secrets FILE, or listen on "
				   "127.0.0.1 or a unix socket)", uri);
	st = l->tp->listen(&a, &l->l, l->uri, sizeof(l->uri));
	if (st < 0)
		return st;
	if (l->u.port == 0) {
		/* record the real port for session labels */
		struct vgpu_uri b;
		if (vgpu__uri_parse(l->uri, &b) == VGPU_OK)
			l->u.port = b.port;
	}
	l->srv = s;
	s->nls++;
	if (bound)
		snprintf(bound, boundlen, "%s", l->uri);
	if (s->started) {
		if (pthread_create(&l->th, NULL, accept_main, l) != 0)
			return vgpu__error(VGPU_ERR_INTERNAL, "cannot start the accept thread");
		l->running = 1;
	}
	return VGPU_OK;
}

VGPU_API unsigned int vgpu_server_listener_count(const vgpu_server *s)
{
	return s ? s->nls : 0;
}

VGPU_API const char *vgpu_server_listener_uri(const vgpu_server *s, unsigned int i)
{
	return s && i < s->nls ? s->ls[i].uri : NULL;
}

VGPU_API vgpu_status vgpu_server_start(vgpu_server *s)
{
	if (!s)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_server_start: NULL server");
	if (s->started)
		return VGPU_OK;
	s->started = 1;
	for (unsigned i = 0; i < s->nls; i++) {
		if (pthread_create(&s->ls[i].th, NULL, accept_main, &s->ls[i]) != 0)
			return vgpu__error(VGPU_ERR_INTERNAL, "cannot start the accept thread");
		s->ls[i].running = 1;
	}
	return VGPU_OK;
}

static int wait_conns(struct vgpu_server *s, uint32_t ms)
{
	struct timespec ts;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->lock);
	while (s->nconns && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&s->cond, &s->lock, &ts);
	rc = s->nconns ? -1 : 0;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

VGPU_API vgpu_status vgpu_server_stop(vgpu_server *s)
{
	struct srv_conn *c;

	if (!s)
		return VGPU_OK;
	pthread_mutex_lock(&s->lock);
	s->stopping = 1;
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->nls; i++) {
		s->ls[i].tp->listen_shutdown(s->ls[i].l);
		if (s->ls[i].running) {
			pthread_join(s->ls[i].th, NULL);
			s->ls[i].running = 0;
		}
	}
	/* stop reading: the request being served finishes, its reply goes out */
	pthread_mutex_lock(&s->lock);
	for (c = s->conns; c; c = c->next)
		c->tp->shutdown(c->tc, 1);
	pthread_mutex_unlock(&s->lock);
	if (wait_conns(s, s->opts.stop_timeout_ms) == 0) {
		reap_zombies(s, 1);
		return VGPU_OK;
	}
	vgpu_warn("%u connection(s) still busy after %u ms: cutting them off", s->nconns,
		  s->opts.stop_timeout_ms);
	pthread_mutex_lock(&s->lock);
	for (c = s->conns; c; c = c->next)
		c->tp->shutdown(c->tc, 0);
	pthread_mutex_unlock(&s->lock);
	if (wait_conns(s, 2000) == 0) {
		reap_zombies(s, 1);
		return VGPU_OK;
	}
	return vgpu__error(VGPU_ERR_TIMEOUT, "%u connection(s) could not be drained", s->nconns);
}

VGPU_API void vgpu_server_destroy(vgpu_server *s)
{
	if (!s)
		return;
	if (vgpu_server_stop(s) < 0) {
		/* sessions still running on the engine: leak rather than crash */
		vgpu_err("vgpu_server_destroy: %s", vgpu__error_msg());
		return;
	}
	for (unsigned i = 0; i < s->nls; i++)
		s->ls[i].tp->listen_close(s->ls[i].l);
	vgpu__metrics_stop(s->metrics);
	vgpu__engine_destroy(s->eng);
	if (s->secrets)
		OPENSSL_cleanse(s->secrets, (size_t)s->nsecrets * sizeof(*s->secrets));
	free(s->secrets);
	free(s->zombies);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}
