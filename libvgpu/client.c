/* SPDX-License-Identifier: MIT */
/*
 * client.c - the remote door: a vgpu_t behind a protocol connection.
 *
 * Synchronous calls are one round trip: the caller registers a pending
 * entry under the request id, sends, and reads the socket itself until its
 * reply arrives (leader/follower: one thread reads at a time and completes
 * whatever replies it meets; the others sleep until theirs is done or the
 * reading role is free). No thread hand-off on the fast path, so a round
 * trip costs what the raw transport does. A background reader takes the
 * role only while asynchronous dtoh copies are in flight, so their data is
 * drained even when nobody waits. Asynchronous calls (work on a stream) are sent without a
 * reply (VGPU_MSGF_NOREPLY) and coalesced in a small buffer that is flushed
 * by the next synchronous call, when it fills, or after a few tens of
 * microseconds by the flusher thread; the server keeps their errors for the
 * next synchronisation of the stream. Copies larger than VGPU_PROTO_CHUNK go
 * as pipelined chunks (htod: straight from the caller's memory with
 * sendmsg; dtoh: received straight into the caller's memory, where the
 * transport can with the chunks before the last still landing while the
 * next header is read: recv_deferred). Synchronous copies use
 * VGPU_PROTO_SYNC_CHUNK (8 MiB) chunks.
 *
 * When the connection is lost, the reading thread completes every pending entry
 * with VGPU_ERR_CONNECTION ("<uri>: connection lost: ...") and every later
 * call fails the same way at once. vgpu_close stays safe.
 */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "addrmap.h"
#include "door.h"
#include "error.h"
#include "proto.h"
#include "remote.h"
#include "transport.h"
#include "uri.h"

#define OBUF_CAP (256u * 1024)
#define COALESCE_MAX_BULK 4096
/* a synchronous call with this much bulk or less may use send_recv (the
 * transport decides what it can fuse; uring: up to its FUSE_MAX) */
#define FUSE_MAX_BULK VGPU_PROTO_INLINE
/* a synchronous dtoh of this many bytes or more is received by a scatter
 * receive where the transport can (send_recvv), its bulk straight into the
 * caller's memory: below it, the copy out of the read-ahead buffer costs
 * less than the scatter receive's extra work (uring, bench_transports:
 * 4 KiB 1 % slower with it, 64 KiB 4 % faster) */
#define SCATTER_MIN (16u * 1024)
#define FLUSH_DELAY_NS 50000
#define RES_MAX 1024

struct pending {
	struct pending *next;
	uint64_t id;
	int done;
	int async;         /* heap entry of an async dtoh: freed when completed */
	vgpu_status st;
	size_t res_len;
	uint8_t *dst;      /* dtoh destination */
	uint64_t n, got;
	/* last: pend_init does not clear them (written before they are read) */
	char msg[VGPU_ERRMSG_MAX];
	uint8_t res[RES_MAX];  /* final response body (results) */
};

/* A cleared entry; the 1.5 KiB of message and results are left as they are. */
static void pend_init(struct pending *p)
{
	memset(p, 0, offsetof(struct pending, msg));
	p->msg[0] = '\0';
}

struct client {
	char uri[VGPU_URI_MAX];
	const struct vgpu_transport_ops *tp;
	struct vgpu_tp_conn *tc;

	pthread_mutex_t lock; /* pending list, dead state */
	pthread_cond_t cond;
	struct pending *pend;
	int dead;
	char dead_msg[VGPU_ERRMSG_MAX];

	pthread_mutex_t slock; /* sending, obuf */
	pthread_cond_t fcond;
	uint8_t *obuf;
	size_t olen;
	int fstop;
	pthread_t flusher, reader;
	int threads;
	int reading;          /* a thread holds the reading role */
	int nwaiters;         /* threads in pend_wait */
	unsigned nasync;      /* async dtoh entries in flight */
	int rdeferred;        /* dtoh bulk may still be landing (the reader's) */
	int bgstop;
	pthread_cond_t bgcond;

	/* this handle's allocations (base, asked size), so that bad ranges of
	 * asynchronous calls are refused at once, as on a local handle, instead
	 * of at the next synchronization */
	pthread_mutex_t amlock;
	struct vgpu_addrmap allocs;

	atomic_uint_fast64_t next_id;
	uint64_t session_id;
	struct vgpu_rbuf rb;
	uint8_t body[VGPU_PROTO_MAX_BODY];
};

static struct client *CL(vgpu_t *v)
{
	return v->door;
}

static vgpu_status dead_error(struct client *cl)
{
	return vgpu__error(VGPU_ERR_CONNECTION, "%s", cl->dead_msg);
}

/* Wait until the dtoh bulk left landing by vgpu__rbuf_read_deferred has
 * landed (the reading role's): done before any entry completes, so that
 * nothing writes a caller's memory after its call returned. */
static vgpu_status recv_flush(struct client *cl)
{
	if (!cl->rdeferred)
		return VGPU_OK;
	cl->rdeferred = 0;
	return vgpu__tp_recv_flush(cl->tp, cl->tc);
}

/* Mark the connection lost (first reason wins) and wake every waiter.
 * The caller holds the reading role. */
static void fail_all(struct client *cl, const char *why)
{
	struct pending *p, *next;
	char msg[VGPU_ERRMSG_MAX];

	if (cl->rdeferred) {
		/* what still lands is cancelled before the entries complete
		 * (why may be the thread's message, which the flush sets) */
		snprintf(msg, sizeof(msg), "%s", why);
		why = msg;
		cl->tp->shutdown(cl->tc, 0);
		recv_flush(cl);
	}

	pthread_mutex_lock(&cl->lock);
	if (!cl->dead) {
		snprintf(cl->dead_msg, sizeof(cl->dead_msg), "%s: connection lost: %s", cl->uri, why);
		__atomic_store_n(&cl->dead, 1, __ATOMIC_RELEASE);
	}
	for (p = cl->pend; p; p = next) {
		next = p->next;
		if (p->async) {
			free(p);
			cl->nasync--;
			continue;
		}
		p->st = VGPU_ERR_CONNECTION;
		snprintf(p->msg, sizeof(p->msg), "%s", cl->dead_msg);
		p->done = 1;
	}
	cl->pend = NULL;
	pthread_cond_broadcast(&cl->cond);
	pthread_mutex_unlock(&cl->lock);
	/* a peer that sent garbage gets a closed connection, not silence */
	cl->tp->shutdown(cl->tc, 0);
}

static void conn_broken(struct client *cl, const char *why)
{
	pthread_mutex_lock(&cl->lock);
	if (!cl->dead) {
		snprintf(cl->dead_msg, sizeof(cl->dead_msg), "%s: connection lost: %s", cl->uri, why);
		__atomic_store_n(&cl->dead, 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&cl->lock);
	/* whoever reads next fails and completes every pending entry */
	cl->tp->shutdown(cl->tc, 0);
}

/* ---- sending ---- */

/* send_locked's how */
#define SEND_NOW 0
#define SEND_COALESCE 1 /* may wait in obuf (async requests) */
#define SEND_DEFERRED 2 /* bulk stays in flight until end_deferred (slock held throughout) */

/* Send obuf, then extra. deferred: the last of extra is bulk the caller
 * keeps valid until end_deferred. */
static vgpu_status flush_locked(struct client *cl, const struct iovec *extra, int nextra,
				int deferred)
{
	struct iovec iov[8];
	int n = 0;
	vgpu_status st;

	if (cl->olen) {
		iov[n].iov_base = cl->obuf;
		iov[n].iov_len = cl->olen;
		n++;
	}
	for (int i = 0; i < nextra; i++)
		iov[n++] = extra[i];
	if (!n)
		return VGPU_OK;
	st = deferred ? vgpu__tp_send_deferred(cl->tp, cl->tc, iov, n) : cl->tp->send(cl->tc, iov, n);
	cl->olen = 0;
	if (st < 0) {
		conn_broken(cl, vgpu__error_msg());
		return dead_error(cl);
	}
	return VGPU_OK;
}

/* After SEND_DEFERRED sends (slock held): returns once the transport
 * reads the caller's bulk no more, whatever happened. */
static vgpu_status end_deferred(struct client *cl)
{
	vgpu_status st = vgpu__tp_flush(cl->tp, cl->tc);

	if (st < 0) {
		conn_broken(cl, vgpu__error_msg());
		return dead_error(cl);
	}
	return VGPU_OK;
}

/*
 * Send one request. how: SEND_NOW, SEND_COALESCE or SEND_DEFERRED.
 * Caller holds slock.
 */
static vgpu_status send_locked(struct client *cl, uint32_t flags, uint64_t id,
			       const struct vgpu_wbuf *w, const void *bulk, size_t bulk_len,
			       int how)
{
	uint8_t raw[VGPU_PROTO_HDR + 256];
	struct vgpu_hdr h = { VGPU_PROTO_MAGIC, VGPU_PROTO_VERSION, VGPU_MSG_REQ, flags,
			      (uint32_t)w->len, id, bulk_len };
	struct iovec iov[3];
	int coalesce = how == SEND_COALESCE, deferred = how == SEND_DEFERRED && bulk_len;

	if (w->overflow)
		return vgpu__error(VGPU_ERR_INVALID, "%s: request too large for one message", cl->uri);
	if (__atomic_load_n(&cl->dead, __ATOMIC_ACQUIRE))
		return dead_error(cl);
	vgpu__hdr_encode(raw, &h);
	if (coalesce && bulk_len <= COALESCE_MAX_BULK &&
	    VGPU_PROTO_HDR + w->len + bulk_len <= OBUF_CAP - cl->olen) {
		int was_empty = cl->olen == 0;

		memcpy(cl->obuf + cl->olen, raw, VGPU_PROTO_HDR);
		memcpy(cl->obuf + cl->olen + VGPU_PROTO_HDR, w->buf, w->len);
		if (bulk_len)
			memcpy(cl->obuf + cl->olen + VGPU_PROTO_HDR + w->len, bulk, bulk_len);
		cl->olen += VGPU_PROTO_HDR + w->len + bulk_len;
		if (was_empty)
			pthread_cond_signal(&cl->fcond);
		return VGPU_OK;
	}
	iov[0].iov_base = raw;
	iov[0].iov_len = VGPU_PROTO_HDR;
	if (w->len <= sizeof(raw) - VGPU_PROTO_HDR) {
		/* header and body in one piece */
		memcpy(raw + VGPU_PROTO_HDR, w->buf, w->len);
		iov[0].iov_len += w->len;
		iov[1].iov_base = (void *)bulk;
		iov[1].iov_len = bulk_len;
		return flush_locked(cl, iov, bulk_len ? 2 : 1, deferred);
	}
	iov[1].iov_base = w->buf;
	iov[1].iov_len = w->len;
	iov[2].iov_base = (void *)bulk;
	iov[2].iov_len = bulk_len;
	return flush_locked(cl, iov, bulk_len ? 3 : 2, deferred);
}

static void *flusher_main(void *arg)
{
	struct client *cl = arg;

	pthread_mutex_lock(&cl->slock);
	while (!cl->fstop) {
		struct timespec ts;

		if (!cl->olen) {
			pthread_cond_wait(&cl->fcond, &cl->slock);
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += FLUSH_DELAY_NS;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&cl->fcond, &cl->slock, &ts);
		if (cl->olen && !cl->fstop)
			flush_locked(cl, NULL, 0, 0);
	}
	pthread_mutex_unlock(&cl->slock);
	return NULL;
}

static uint64_t new_id(struct client *cl)
{
	return atomic_fetch_add(&cl->next_id, 1);
}

/* Register p for its reply (cl->lock held). */
static vgpu_status pend_add_locked(struct client *cl, struct pending *p)
{
	if (cl->dead)
		return dead_error(cl);
	p->next = cl->pend;
	cl->pend = p;
	if (p->async) {
		cl->nasync++;
		pthread_cond_signal(&cl->bgcond);
	}
	return VGPU_OK;
}

static vgpu_status pend_add(struct client *cl, struct pending *p)
{
	vgpu_status st;

	pthread_mutex_lock(&cl->lock);
	st = pend_add_locked(cl, p);
	pthread_mutex_unlock(&cl->lock);
	return st;
}

static vgpu_status read_one(struct client *cl, int *held);

/*
 * Wait for p (registered and counted in nwaiters), reading the socket
 * ourselves when nobody else does. reading: this thread already holds the
 * reading role (cl->lock not held); else cl->lock is held.
 */
static void pend_wait_role(struct client *cl, struct pending *p, int reading)
{
	for (;;) {
		vgpu_status st;
		int held = 0;

		if (!reading) {
			if (p->done)
				break;
			if (cl->reading) {
				pthread_cond_wait(&cl->cond, &cl->lock);
				continue;
			}
			cl->reading = 1;
			pthread_mutex_unlock(&cl->lock);
		}
		reading = 0;
		st = read_one(cl, &held);
		if (st < 0)
			fail_all(cl, vgpu__error_msg());
		if (!held)
			pthread_mutex_lock(&cl->lock);
		cl->reading = 0;
		if (cl->nwaiters > 1)
			pthread_cond_broadcast(&cl->cond);
		if (cl->nasync)
			pthread_cond_signal(&cl->bgcond);
	}
	cl->nwaiters--;
	if (cl->nwaiters && !cl->reading)
		pthread_cond_broadcast(&cl->cond); /* hand the role on */
	pthread_mutex_unlock(&cl->lock);
}

static void pend_wait(struct client *cl, struct pending *p)
{
	pthread_mutex_lock(&cl->lock);
	cl->nwaiters++;
	pend_wait_role(cl, p, 0);
}

/* The prefix of p's reply (vgpu__dtoh_reply_prefix) when it is a dtoh that
 * send_fused receives with one scatter receive, else 0. */
static size_t scatter_prefix(const struct client *cl, const struct pending *p)
{
	size_t prefix;

	if (!p->dst || p->n < SCATTER_MIN || !vgpu__tp_has_send_recvv(cl->tp))
		return 0;
	prefix = vgpu__dtoh_reply_prefix((uintptr_t)p->dst);
	return p->n <= sizeof(cl->rb.buf) - prefix ? prefix : 0;
}

/* Can call() send p's request and receive the reply's first bytes in one
 * transport call (send_recv, or send_recvv for a dtoh received in place:
 * tcp and unix have only that, the same system calls as a send and a
 * receive, without the copy)? Only on an otherwise idle connection: this
 * thread took the reading role, nobody else waits, no async dtoh data is in
 * flight and nothing is read ahead (cl->lock held). */
static int can_fuse(struct client *cl, const struct pending *p, const struct vgpu_wbuf *w,
		    size_t bulk_len)
{
	return (vgpu__tp_has_send_recv(cl->tp) || scatter_prefix(cl, p)) && !w->overflow &&
	       bulk_len <= FUSE_MAX_BULK && cl->nwaiters == 1 && !cl->nasync && !cl->dead &&
	       cl->rb.off == cl->rb.len && !cl->rb.land_len;
}

/*
 * The request (after whatever async requests wait in obuf) and the first
 * bytes of the reply, into the empty read-ahead buffer, in one transport
 * call (one system call for uring). The caller holds the reading role;
 * pend_wait_role then parses the reply as usual. A dtoh's reply is
 * received where the transport can with one scatter receive (send_recvv),
 * its header and body into rb.buf and its bulk straight into the caller's
 * memory, where the server puts them (vgpu__dtoh_reply_prefix): one call
 * and no copy. Elsewhere it is read ahead only as far as
 * vgpu__rbuf_ahead_for says, so that its bulk does not pass through rb.buf
 * and a memcpy (at 64 KiB, reading it whole in this one call was faster
 * than a second call: uring, bench_transports).
 */
static void send_fused(struct client *cl, const struct pending *p, const struct vgpu_wbuf *w,
		       const void *bulk, size_t bulk_len)
{
	uint8_t raw[VGPU_PROTO_HDR];
	struct vgpu_hdr h = { VGPU_PROTO_MAGIC, VGPU_PROTO_VERSION, VGPU_MSG_REQ, 0,
			      (uint32_t)w->len, p->id, bulk_len };
	struct iovec iov[4];
	int n = 0;
	size_t prefix;
	vgpu_status st;

	vgpu__hdr_encode(raw, &h);
	pthread_mutex_lock(&cl->slock);
	if (cl->olen) {
		iov[n].iov_base = cl->obuf;
		iov[n++].iov_len = cl->olen;
	}
	iov[n].iov_base = raw;
	iov[n++].iov_len = sizeof(raw);
	iov[n].iov_base = w->buf;
	iov[n++].iov_len = w->len;
	iov[n].iov_base = (void *)bulk;
	iov[n++].iov_len = bulk_len;
	if ((prefix = scatter_prefix(cl, p))) {
		st = vgpu__rbuf_send_fill_to(&cl->rb, iov, n, prefix, p->dst, p->n);
	} else {
		cl->rb.ahead = p->dst ? vgpu__rbuf_ahead_for(&cl->rb, p->n) : 0;
		st = vgpu__rbuf_send_fill(&cl->rb, iov, n);
	}
	cl->olen = 0;
	pthread_mutex_unlock(&cl->slock);
	if (st < 0)
		fail_all(cl, vgpu__error_msg()); /* completes p */
}

/*
 * Synchronous call: send, wait, set the thread's error. Results in p->res.
 * One critical section registers p and, when the line is free, takes the
 * reading role for the reply.
 */
static vgpu_status call(struct client *cl, struct pending *p, const struct vgpu_wbuf *w,
			const void *bulk, size_t bulk_len)
{
	int reading, fused;

	p->id = new_id(cl);
	p->done = 0;
	pthread_mutex_lock(&cl->lock);
	if (pend_add_locked(cl, p) < 0) {
		pthread_mutex_unlock(&cl->lock);
		return VGPU_ERR_CONNECTION;
	}
	cl->nwaiters++;
	reading = !cl->reading;
	cl->reading = 1;
	fused = reading && can_fuse(cl, p, w, bulk_len);
	pthread_mutex_unlock(&cl->lock);
	if (fused) {
		send_fused(cl, p, w, bulk, bulk_len);
	} else {
		pthread_mutex_lock(&cl->slock);
		send_locked(cl, 0, p->id, w, bulk, bulk_len, SEND_NOW);
		pthread_mutex_unlock(&cl->slock);
	}
	/* a failed send breaks the connection: the next read completes p */
	if (!reading)
		pthread_mutex_lock(&cl->lock);
	pend_wait_role(cl, p, reading);
	if (p->st < 0)
		return vgpu__error(p->st, "%s", p->msg);
	return VGPU_OK;
}

/* Asynchronous request: no reply; errors at the stream's next sync. */
static vgpu_status post(struct client *cl, const struct vgpu_wbuf *w, const void *bulk,
			size_t bulk_len)
{
	vgpu_status st;

	pthread_mutex_lock(&cl->slock);
	st = send_locked(cl, VGPU_MSGF_NOREPLY, new_id(cl), w, bulk, bulk_len, SEND_COALESCE);
	pthread_mutex_unlock(&cl->slock);
	return st;
}

#define REQ(w, buf, op, nargs) do { \
	vgpu__wbuf_init((w), (buf), sizeof(buf)); \
	msgpack_pack_array(&(w)->pk, 1 + (nargs)); \
	msgpack_pack_uint32(&(w)->pk, (op)); } while (0)

/* Results cursor after [status, message]. */
static int results(struct pending *p, struct vgpu_mp *m)
{
	uint32_t n;

	vgpu__mp_init(m, p->res, p->res_len);
	if (vgpu__mp_array(m, &n) || n < 2 || vgpu__mp_skip(m, 0) || vgpu__mp_skip(m, 0))
		return -1;
	return 0;
}

static vgpu_status bad_reply(struct client *cl, unsigned op)
{
	return vgpu__error(VGPU_ERR_PROTOCOL, "%s: malformed %s reply from the server", cl->uri,
			   vgpu__op_name(op));
}

/* ---- reading (one thread at a time) ---- */

static struct pending *pend_find(struct client *cl, uint64_t id, int unlink)
{
	struct pending **pp, *p;

	for (pp = &cl->pend; (p = *pp); pp = &p->next) {
		if (p->id == id) {
			if (unlink)
				*pp = p->next;
			return p;
		}
	}
	return NULL;
}

/* Final reply for p (unlinked, lock held): status, results, wake the waiter. */
static void complete_locked(struct client *cl, struct pending *p, const struct vgpu_hdr *h,
			    int64_t status, const char *emsg, uint32_t emsg_len)
{
	if (status < 0 && p->st == VGPU_OK) {
		p->st = (vgpu_status)status;
		snprintf(p->msg, sizeof(p->msg), "%.*s", (int)emsg_len, emsg);
	}
	if (p->dst && p->st == VGPU_OK && p->got != p->n) {
		p->st = VGPU_ERR_PROTOCOL;
		snprintf(p->msg, sizeof(p->msg), "%s: server sent %llu of %llu bytes", cl->uri,
			 (unsigned long long)p->got, (unsigned long long)p->n);
	}
	if (h->body_len <= sizeof(p->res)) {
		memcpy(p->res, cl->body, h->body_len);
		p->res_len = h->body_len;
	} else if (p->st == VGPU_OK) {
		p->st = VGPU_ERR_PROTOCOL;
		snprintf(p->msg, sizeof(p->msg), "%s: reply too large", cl->uri);
	}
	if (p->async) {
		free(p);
		cl->nasync--;
	} else {
		p->done = 1;
		pthread_cond_broadcast(&cl->cond);
	}
}

/* Read one frame and complete what it answers. Caller holds the reading
 * role. *held: returned with cl->lock held (a reply was completed). */
static vgpu_status read_one(struct client *cl, int *held)
{
	struct vgpu_hdr h;
	struct pending *p;
	struct vgpu_mp m;
	uint32_t n;
	int64_t status;
	int last;
	const char *emsg;
	uint32_t emsg_len;
	vgpu_status st;

	st = vgpu__rbuf_frame(&cl->rb, &h, cl->body, VGPU_PROTO_SYNC_CHUNK, "server");
	if (st < 0)
		return st;
	if (h.type != VGPU_MSG_RESP)
		return vgpu__error(VGPU_ERR_PROTOCOL, "unexpected message type %u from the server", h.type);
	vgpu__mp_init(&m, cl->body, h.body_len);
	if (vgpu__mp_array(&m, &n) || n < 2 || vgpu__mp_i64(&m, &status) || status > 0 ||
	    status < INT32_MIN || vgpu__mp_str(&m, &emsg, &emsg_len))
		return vgpu__error(VGPU_ERR_PROTOCOL, "malformed response from the server");
	last = !(h.flags & VGPU_MSGF_MORE);
	if (last && (st = recv_flush(cl)) < 0)
		return st;
	pthread_mutex_lock(&cl->lock);
	p = pend_find(cl, h.id, 0);
	if (p && last && !h.bulk_len) {
		/* the common case, one lock: a final reply without bytes */
		pend_find(cl, h.id, 1);
		complete_locked(cl, p, &h, status, emsg, emsg_len);
		*held = 1; /* the caller goes on under the same lock */
		return VGPU_OK;
	}
	pthread_mutex_unlock(&cl->lock);
	if (!p) /* nobody waits (e.g. a chunk after an early error): skip */
		return vgpu__rbuf_discard(&cl->rb, h.bulk_len);
	if (h.bulk_len) {
		uint64_t off;

		if (!p->dst || status < 0 || n < 3 || vgpu__mp_u64(&m, &off) || off > p->n ||
		    h.bulk_len > p->n - off)
			return vgpu__error(VGPU_ERR_PROTOCOL,
					   "server sent %llu bulk bytes the request did not ask for",
					   (unsigned long long)h.bulk_len);
		/* straight into the caller's buffer (where a scatter receive
		 * may have put it already); a chunk before the last may go on
		 * landing while the next header is read */
		if (cl->rb.land_len && (p->dst + off != cl->rb.land || cl->rb.off != cl->rb.len))
			vgpu__rbuf_unland(&cl->rb); /* not this reply's shape */
		if (last)
			st = vgpu__rbuf_read(&cl->rb, p->dst + off, h.bulk_len);
		else
			st = vgpu__rbuf_read_deferred(&cl->rb, p->dst + off, h.bulk_len,
						      &cl->rdeferred);
		if (st < 0)
			return st;
		p->got += h.bulk_len;
	}
	if (!last) {
		if (status < 0 && p->st == VGPU_OK) {
			p->st = (vgpu_status)status;
			snprintf(p->msg, sizeof(p->msg), "%.*s", (int)emsg_len, emsg);
		}
		return VGPU_OK;
	}
	pthread_mutex_lock(&cl->lock);
	pend_find(cl, h.id, 1);
	complete_locked(cl, p, &h, status, emsg, emsg_len);
	pthread_mutex_unlock(&cl->lock);
	return VGPU_OK;
}

/* Background reader: holds the role while async dtoh data is in flight. */
static void *reader_main(void *arg)
{
	struct client *cl = arg;

	pthread_mutex_lock(&cl->lock);
	for (;;) {
		vgpu_status st;

		while (!cl->bgstop && (!cl->nasync || cl->reading || cl->dead))
			pthread_cond_wait(&cl->bgcond, &cl->lock);
		if (cl->bgstop)
			break;
		int held = 0;

		cl->reading = 1;
		pthread_mutex_unlock(&cl->lock);
		st = read_one(cl, &held);
		if (st < 0)
			fail_all(cl, vgpu__error_msg());
		if (!held)
			pthread_mutex_lock(&cl->lock);
		cl->reading = 0;
		if (cl->nwaiters)
			pthread_cond_broadcast(&cl->cond);
	}
	pthread_mutex_unlock(&cl->lock);
	return NULL;
}

/* ---- local checks of asynchronous calls (the server checks again) ---- */

static vgpu_status check_range(struct client *cl, const char *what, vgpu_dptr p, size_t n)
{
	struct vgpu_range *r;
	vgpu_status st = VGPU_OK;

	pthread_mutex_lock(&cl->amlock);
	r = vgpu__am_find(&cl->allocs, p);
	if (!r)
		st = vgpu__error(VGPU_ERR_BAD_ADDRESS,
				 "%s: %s: device address 0x%llx is not allocated by this handle",
				 cl->uri, what, (unsigned long long)p);
	else if (n > r->size - (p - r->base))
		st = vgpu__error(VGPU_ERR_BAD_ADDRESS,
				 "%s: %s: %zu bytes at 0x%llx run past the end of the %llu-byte "
				 "allocation at 0x%llx", cl->uri, what, n, (unsigned long long)p,
				 (unsigned long long)r->size, (unsigned long long)r->base);
	pthread_mutex_unlock(&cl->amlock);
	return st;
}

static vgpu_status check_args(struct client *cl, const vgpu_arg *args, unsigned nargs)
{
	static const uint32_t size_of[] = { 0, 8, 4, 4, 8, 8, 4, 8 };
	vgpu_status st = VGPU_OK;

	for (unsigned i = 0; i < nargs && st == VGPU_OK; i++) {
		uint32_t t = args[i].type;

		if (t == VGPU_ARG_BYTES) {
			if (!args[i].size || !args[i].v.ptr)
				st = vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: launch: argument %u: empty bytes",
						 cl->uri, i);
		} else if (t < VGPU_ARG_DPTR || t > VGPU_ARG_BYTES || args[i].size != size_of[t]) {
			st = vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: launch: argument %u: bad type %u or size %u",
					 cl->uri, i, t, args[i].size);
		} else if (t == VGPU_ARG_DPTR && args[i].v.dptr) {
			pthread_mutex_lock(&cl->amlock);
			if (!vgpu__am_find(&cl->allocs, args[i].v.dptr))
				st = vgpu__error(VGPU_ERR_BAD_ADDRESS,
						 "%s: launch: argument %u (0x%llx) is not inside an allocation "
						 "of this handle", cl->uri, i, (unsigned long long)args[i].v.dptr);
			pthread_mutex_unlock(&cl->amlock);
		}
	}
	return st;
}

/* ---- door operations ---- */

static vgpu_status r_simple(vgpu_t *v, unsigned op, int nargs, uint64_t a, uint64_t b)
{
	struct client *cl = CL(v);
	uint8_t buf[64];
	struct vgpu_wbuf w;
	struct pending p;

	pend_init(&p);
	REQ(&w, buf, op, nargs);
	if (nargs > 0)
		msgpack_pack_uint64(&w.pk, a);
	if (nargs > 1)
		msgpack_pack_uint64(&w.pk, b);
	return call(cl, &p, &w, NULL, 0);
}

/* Call returning one unsigned result. */
static vgpu_status r_get_u64(vgpu_t *v, unsigned op, int nargs, uint64_t a, uint64_t b,
			     uint64_t *out)
{
	struct client *cl = CL(v);
	uint8_t buf[64];
	struct vgpu_wbuf w;
	struct pending p;
	struct vgpu_mp m;
	vgpu_status st;

	pend_init(&p);
	REQ(&w, buf, op, nargs);
	if (nargs > 0)
		msgpack_pack_uint64(&w.pk, a);
	if (nargs > 1)
		msgpack_pack_uint64(&w.pk, b);
	st = call(cl, &p, &w, NULL, 0);
	if (st < 0)
		return st;
	if (results(&p, &m) || vgpu__mp_u64(&m, out))
		return bad_reply(cl, op);
	return VGPU_OK;
}

static void r_close(vgpu_t *v)
{
	struct client *cl = CL(v);
	struct pending *p;
	int dead;

	if (!cl)
		return;
	pthread_mutex_lock(&cl->lock);
	dead = cl->dead;
	pthread_mutex_unlock(&cl->lock);
	if (!dead && cl->threads) {
		vgpu_status st = r_simple(v, VGPU_OP_SYNCHRONIZE, 0, 0, 0);
		if (st < 0)
			vgpu_debug("%s: close: %s", cl->uri, vgpu__error_msg());
	}
	if (cl->threads) {
		pthread_mutex_lock(&cl->slock);
		cl->fstop = 1;
		pthread_cond_broadcast(&cl->fcond);
		pthread_mutex_unlock(&cl->slock);
		pthread_join(cl->flusher, NULL);
		cl->tp->shutdown(cl->tc, 0); /* wakes a background read */
		pthread_mutex_lock(&cl->lock);
		cl->bgstop = 1;
		pthread_cond_broadcast(&cl->bgcond);
		pthread_mutex_unlock(&cl->lock);
		pthread_join(cl->reader, NULL);
	}
	while ((p = cl->pend)) {
		cl->pend = p->next;
		if (p->async)
			free(p);
	}
	cl->tp->close(cl->tc);
	pthread_mutex_destroy(&cl->lock);
	pthread_cond_destroy(&cl->cond);
	pthread_mutex_destroy(&cl->slock);
	pthread_cond_destroy(&cl->fcond);
	pthread_cond_destroy(&cl->bgcond);
	vgpu__am_fini(&cl->allocs);
	pthread_mutex_destroy(&cl->amlock);
	free(cl->obuf);
	free(cl);
	v->door = NULL;
}

static vgpu_status r_device_info(vgpu_t *v, struct vgpu_device_info *out)
{
	struct client *cl = CL(v);
	uint8_t buf[16];
	struct vgpu_wbuf w;
	struct pending p;
	struct vgpu_mp m;
	vgpu_status st;

	pend_init(&p);
	REQ(&w, buf, VGPU_OP_DEVICE_INFO, 0);
	st = call(cl, &p, &w, NULL, 0);
	if (st < 0)
		return st;
	if (results(&p, &m) || vgpu__unpack_device_info(&m, out))
		return bad_reply(cl, VGPU_OP_DEVICE_INFO);
	out->flags |= VGPU_DEVICE_REMOTE;
	return VGPU_OK;
}

static vgpu_status r_synchronize(vgpu_t *v)
{
	return r_simple(v, VGPU_OP_SYNCHRONIZE, 0, 0, 0);
}

static vgpu_status r_mem_alloc(vgpu_t *v, size_t size, vgpu_dptr *out)
{
	uint64_t p = 0;
	struct client *cl = CL(v);
	vgpu_status st = r_get_u64(v, VGPU_OP_MEM_ALLOC, 1, size, 0, &p);

	if (st >= 0) {
		pthread_mutex_lock(&cl->amlock);
		if (size && vgpu__am_insert(&cl->allocs, p, size, NULL) < 0)
			vgpu_warn("%s: allocation 0x%llx not tracked", cl->uri, (unsigned long long)p);
		pthread_mutex_unlock(&cl->amlock);
		*out = p;
	}
	return st;
}

static vgpu_status r_mem_advise(vgpu_t *v, vgpu_dptr p, unsigned advice)
{
	return r_simple(v, VGPU_OP_MEM_ADVISE, 2, p, advice);
}

static vgpu_status r_mem_free(vgpu_t *v, vgpu_dptr p)
{
	struct client *cl = CL(v);
	struct vgpu_range *r;
	uint64_t size = 0;
	vgpu_status st;

	/* forget it before the server frees it: another thread may be handed
	 * the same address the moment it is free */
	pthread_mutex_lock(&cl->amlock);
	if ((r = vgpu__am_find_base(&cl->allocs, p))) {
		size = r->size;
		vgpu__am_remove(&cl->allocs, p);
	}
	pthread_mutex_unlock(&cl->amlock);
	st = r_simple(v, VGPU_OP_MEM_FREE, 1, p, 0);
	if (st < 0 && size && st != VGPU_ERR_CONNECTION) {
		pthread_mutex_lock(&cl->amlock);
		vgpu__am_insert(&cl->allocs, p, size, NULL);
		pthread_mutex_unlock(&cl->amlock);
	}
	return st;
}

/*
 * [op, sid, a, n] of a copy, the request every copy sends, written as
 * fixed-width msgpack (fixarray, fixint, uint32, uint64, uint64) rather
 * than token by token through msgpack-c's callback: 25 bytes that any
 * msgpack reader decodes, for a fraction of the instructions. A dtoh
 * (host_dst set) adds a fifth element, a fixint: the low bits of the host
 * address the bytes go to, which vgpud aligns its bulk with (26 bytes).
 */
static void pack_copy(struct vgpu_wbuf *w, uint8_t *buf, size_t cap, unsigned op, uint32_t sid,
		      uint64_t a, uint64_t n, const void *host_dst)
{
	uint32_t s32 = htobe32(sid);
	uint64_t a64 = htobe64(a), n64 = htobe64(n);

	vgpu__wbuf_init(w, buf, cap);
	if (cap < 26 || op > 0x7f) {
		w->overflow = 1;
		return;
	}
	buf[0] = host_dst ? 0x95 : 0x94;
	buf[1] = (uint8_t)op;
	buf[2] = 0xce;
	memcpy(buf + 3, &s32, 4);
	buf[7] = 0xcf;
	memcpy(buf + 8, &a64, 8);
	buf[16] = 0xcf;
	memcpy(buf + 17, &n64, 8);
	w->len = 25;
	if (host_dst) /* a positive fixint */
		buf[w->len++] = (uint8_t)((uintptr_t)host_dst & (VGPU_PROTO_BULK_ALIGN - 1));
}

static vgpu_status r_memcpy_htod(vgpu_t *v, uint32_t sid, vgpu_dptr dst, const void *src, size_t n)
{
	struct client *cl = CL(v);
	uint8_t buf[64];
	struct vgpu_wbuf w;
	struct pending p;
	const uint8_t *s = src;
	size_t off;
	vgpu_status st = VGPU_OK;

	if (sid) {
		/* async: chunks without replies; errors at the stream's sync */
		if (n && (st = check_range(cl, "memcpy_htod", dst, n)) < 0)
			return st;
		off = 0;
		do {
			size_t k = n - off < VGPU_PROTO_CHUNK ? n - off : VGPU_PROTO_CHUNK;

			pack_copy(&w, buf, sizeof(buf), VGPU_OP_HTOD, sid, dst + off, k, NULL);
			st = post(cl, &w, s + off, k);
			off += k;
		} while (st >= 0 && off < n);
		return st;
	}
	pend_init(&p);
	if (n <= VGPU_PROTO_INLINE) {
		pack_copy(&w, buf, sizeof(buf), VGPU_OP_HTOD, 0, dst, n, NULL);
		return call(cl, &p, &w, src, n);
	}
	/* large synchronous copy: pipelined chunks, one reply at the end. The
	 * server checks each chunk; the whole range is checked here so that a
	 * copy spanning two allocations is refused as it is locally. */
	if ((st = check_range(cl, "memcpy_htod", dst, n)) < 0)
		return st;
	p.id = new_id(cl);
	st = pend_add(cl, &p);
	if (st < 0)
		return st;
	pthread_mutex_lock(&cl->slock);
	if (__atomic_load_n(&cl->dead, __ATOMIC_ACQUIRE)) {
		st = dead_error(cl);
	} else {
		/* the chunks stay in flight together where the transport can
		 * (rdma: a rendezvous each), or leave 7 to a system call
		 * (sockets), behind whatever requests were coalesced: src is
		 * ours until the flush */
		struct iovec pre = { cl->obuf, cl->olen };
		struct vgpu_sbatch sb, *b = &sb;

		vgpu__sbatch_init(b, cl->tp, cl->tc, &pre, cl->olen ? 1 : 0);
		cl->olen = 0;
		for (off = 0; off < n && st >= 0;) {
			size_t k = n - off < VGPU_PROTO_SYNC_CHUNK ? n - off : VGPU_PROTO_SYNC_CHUNK;
			int last = off + k == n;

			pack_copy(&w, buf, sizeof(buf), VGPU_OP_HTOD, 0, dst + off, k, NULL);
			st = vgpu__sbatch_add(b, VGPU_MSG_REQ, last ? VGPU_MSGF_LAST : VGPU_MSGF_NOREPLY,
					      p.id, w.buf, w.len, s + off, k, dst + off);
			off += k;
		}
		if (st >= 0)
			st = vgpu__sbatch_flush(b);
		if (st < 0)
			conn_broken(cl, vgpu__error_msg());
	}
	end_deferred(cl); /* a failure breaks the connection: the read fails p */
	pthread_mutex_unlock(&cl->slock);
	pend_wait(cl, &p);
	if (p.st < 0)
		return vgpu__error(p.st, "%s", p.msg);
	return VGPU_OK;
}

static vgpu_status r_memcpy_dtoh(vgpu_t *v, uint32_t sid, void *dst, vgpu_dptr src, size_t n)
{
	struct client *cl = CL(v);
	uint8_t buf[64];
	struct vgpu_wbuf w;
	struct pending p, *ap;
	vgpu_status st;

	pack_copy(&w, buf, sizeof(buf), VGPU_OP_DTOH, sid, src, n, dst);
	if (!sid) {
		pend_init(&p);
		p.dst = dst;
		p.n = n;
		return call(cl, &p, &w, NULL, 0);
	}
	/* async: whoever reads fills dst as the chunks arrive (before the stream's
	 * sync reply, which the server sends after them) */
	if (n && (st = check_range(cl, "memcpy_dtoh", src, n)) < 0)
		return st;
	ap = calloc(1, sizeof(*ap));
	if (!ap)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	ap->async = 1;
	ap->dst = dst;
	ap->n = n;
	ap->id = new_id(cl);
	st = pend_add(cl, ap);
	if (st < 0) {
		free(ap);
		return st;
	}
	pthread_mutex_lock(&cl->slock);
	st = send_locked(cl, 0, ap->id, &w, NULL, 0, SEND_COALESCE);
	pthread_mutex_unlock(&cl->slock);
	return st; /* on failure the next read frees ap */
}

static vgpu_status r_copy3(vgpu_t *v, unsigned op, uint32_t sid, uint64_t a, uint64_t b, uint64_t n)
{
	struct client *cl = CL(v);
	uint8_t buf[64];
	struct vgpu_wbuf w;
	struct pending p;

	vgpu__wbuf_init(&w, buf, sizeof(buf));
	msgpack_pack_array(&w.pk, 5);
	msgpack_pack_uint32(&w.pk, op);
	msgpack_pack_uint32(&w.pk, sid);
	msgpack_pack_uint64(&w.pk, a);
	msgpack_pack_uint64(&w.pk, b);
	msgpack_pack_uint64(&w.pk, n);
	if (sid) {
		vgpu_status st = VGPU_OK;

		if (n) {
			st = check_range(cl, op == VGPU_OP_DTOD ? "memcpy_dtod" : "memset", a, n);
			if (st == VGPU_OK && op == VGPU_OP_DTOD)
				st = check_range(cl, "memcpy_dtod", b, n);
		}
		return st < 0 ? st : post(cl, &w, NULL, 0);
	}
	pend_init(&p);
	return call(cl, &p, &w, NULL, 0);
}

static vgpu_status r_memcpy_dtod(vgpu_t *v, uint32_t sid, vgpu_dptr dst, vgpu_dptr src, size_t n)
{
	return r_copy3(v, VGPU_OP_DTOD, sid, dst, src, n);
}

static vgpu_status r_memset(vgpu_t *v, uint32_t sid, vgpu_dptr dst, uint8_t value, size_t n)
{
	return r_copy3(v, VGPU_OP_MEMSET, sid, dst, value, n);
}

/* A create that answers a new id (never 0, at most 32 bits). */
static vgpu_status r_create_id(vgpu_t *v, unsigned op, unsigned flags, uint32_t *id)
{
	uint64_t x = 0;
	vgpu_status st = r_get_u64(v, op, 1, flags, 0, &x);

	if (st >= 0) {
		if (x == 0 || x > UINT32_MAX)
			return bad_reply(CL(v), op);
		*id = (uint32_t)x;
	}
	return st;
}

static vgpu_status r_stream_create(vgpu_t *v, unsigned flags, uint32_t *sid)
{
	return r_create_id(v, VGPU_OP_STREAM_CREATE, flags, sid);
}

static vgpu_status r_stream_destroy(vgpu_t *v, uint32_t sid)
{
	return r_simple(v, VGPU_OP_STREAM_DESTROY, 1, sid, 0);
}

static vgpu_status r_stream_sync(vgpu_t *v, uint32_t sid)
{
	return r_simple(v, VGPU_OP_STREAM_SYNC, 1, sid, 0);
}

static vgpu_status r_stream_query(vgpu_t *v, uint32_t sid)
{
	return r_simple(v, VGPU_OP_STREAM_QUERY, 1, sid, 0);
}

static vgpu_status r_pair(vgpu_t *v, unsigned op, uint32_t a, uint32_t b, uint32_t sid)
{
	struct client *cl = CL(v);
	uint8_t buf[64];
	struct vgpu_wbuf w;
	struct pending p;

	REQ(&w, buf, op, 2);
	msgpack_pack_uint32(&w.pk, a);
	msgpack_pack_uint32(&w.pk, b);
	if (sid)
		return post(cl, &w, NULL, 0);
	pend_init(&p);
	return call(cl, &p, &w, NULL, 0);
}

static vgpu_status r_stream_wait_event(vgpu_t *v, uint32_t sid, uint32_t eid)
{
	return r_pair(v, VGPU_OP_STREAM_WAIT_EVENT, sid, eid, sid);
}

static vgpu_status r_event_create(vgpu_t *v, unsigned flags, uint32_t *eid)
{
	return r_create_id(v, VGPU_OP_EVENT_CREATE, flags, eid);
}

static vgpu_status r_event_destroy(vgpu_t *v, uint32_t eid)
{
	return r_simple(v, VGPU_OP_EVENT_DESTROY, 1, eid, 0);
}

static vgpu_status r_event_record(vgpu_t *v, uint32_t eid, uint32_t sid)
{
	return r_pair(v, VGPU_OP_EVENT_RECORD, eid, sid, sid);
}

static vgpu_status r_event_sync(vgpu_t *v, uint32_t eid)
{
	return r_simple(v, VGPU_OP_EVENT_SYNC, 1, eid, 0);
}

static vgpu_status r_event_query(vgpu_t *v, uint32_t eid)
{
	return r_simple(v, VGPU_OP_EVENT_QUERY, 1, eid, 0);
}

static vgpu_status r_event_elapsed(vgpu_t *v, uint32_t e0, uint32_t e1, float *ms)
{
	struct client *cl = CL(v);
	uint8_t buf[64];
	struct vgpu_wbuf w;
	struct pending p;
	struct vgpu_mp m;
	double d;
	vgpu_status st;

	pend_init(&p);
	REQ(&w, buf, VGPU_OP_EVENT_ELAPSED, 2);
	msgpack_pack_uint32(&w.pk, e0);
	msgpack_pack_uint32(&w.pk, e1);
	st = call(cl, &p, &w, NULL, 0);
	if (st < 0)
		return st;
	if (results(&p, &m) || vgpu__mp_f64(&m, &d))
		return bad_reply(cl, VGPU_OP_EVENT_ELAPSED);
	*ms = (float)d;
	return VGPU_OK;
}

static vgpu_status r_module_load(vgpu_t *v, const void *image, size_t size, uint32_t *mid)
{
	struct client *cl = CL(v);
	uint8_t buf[64];
	struct vgpu_wbuf w;
	struct pending p;
	struct vgpu_mp m;
	uint32_t x;
	vgpu_status st;

	if (size > VGPU_PROTO_MAX_BULK)
		return vgpu__error(VGPU_ERR_BAD_MODULE, "%s: module image of %zu bytes exceeds the limit of %llu",
				   cl->uri, size, (unsigned long long)VGPU_PROTO_MAX_BULK);
	pend_init(&p);
	REQ(&w, buf, VGPU_OP_MODULE_LOAD, 1);
	msgpack_pack_uint64(&w.pk, size);
	st = call(cl, &p, &w, image, size);
	if (st < 0)
		return st;
	if (results(&p, &m) || vgpu__mp_u32(&m, &x))
		return bad_reply(cl, VGPU_OP_MODULE_LOAD);
	*mid = x;
	return VGPU_OK;
}

static vgpu_status r_module_unload(vgpu_t *v, uint32_t mid)
{
	return r_simple(v, VGPU_OP_MODULE_UNLOAD, 1, mid, 0);
}

static vgpu_status r_function(vgpu_t *v, uint32_t mid, const char *name, uint32_t *fid)
{
	struct client *cl = CL(v);
	uint8_t buf[512];
	struct vgpu_wbuf w;
	struct pending p;
	struct vgpu_mp m;
	size_t nl = strlen(name);
	vgpu_status st;

	if (nl > 255)
		return vgpu__error(VGPU_ERR_NOT_FOUND, "%s: function name too long (%zu bytes)", cl->uri, nl);
	pend_init(&p);
	REQ(&w, buf, VGPU_OP_FUNCTION, 2);
	msgpack_pack_uint32(&w.pk, mid);
	msgpack_pack_str_with_body(&w.pk, name, nl);
	st = call(cl, &p, &w, NULL, 0);
	if (st < 0)
		return st;
	if (results(&p, &m) || vgpu__mp_u32(&m, fid))
		return bad_reply(cl, VGPU_OP_FUNCTION);
	return VGPU_OK;
}

static vgpu_status r_launch(vgpu_t *v, uint32_t fid, vgpu_dim3 grid, vgpu_dim3 block,
			    size_t shmem, uint32_t sid, const vgpu_arg *args, unsigned nargs)
{
	struct client *cl = CL(v);
	uint8_t buf[VGPU_MAX_ARG_BYTES + 16 * VGPU_MAX_KERNEL_ARGS + 128];
	struct vgpu_wbuf w;
	struct pending p;
	size_t bytes = 0;

	if (nargs && !args)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_launch: %u arguments but args is NULL", nargs);
	if (nargs > VGPU_MAX_KERNEL_ARGS)
		return vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: %u arguments (at most %d)", cl->uri, nargs,
				   VGPU_MAX_KERNEL_ARGS);
	if (sid) {
		vgpu_status st = check_args(cl, args, nargs);
		if (st < 0)
			return st;
	}
	REQ(&w, buf, VGPU_OP_LAUNCH, 10);
	msgpack_pack_uint32(&w.pk, fid);
	msgpack_pack_uint32(&w.pk, sid);
	msgpack_pack_uint32(&w.pk, grid.x);
	msgpack_pack_uint32(&w.pk, grid.y);
	msgpack_pack_uint32(&w.pk, grid.z);
	msgpack_pack_uint32(&w.pk, block.x);
	msgpack_pack_uint32(&w.pk, block.y);
	msgpack_pack_uint32(&w.pk, block.z);
	msgpack_pack_uint64(&w.pk, shmem);
	/* [type, size, value]: value is a bin for BYTES, else the raw bits */
	msgpack_pack_array(&w.pk, 3 * nargs);
	for (unsigned i = 0; i < nargs; i++) {
		msgpack_pack_uint32(&w.pk, args[i].type);
		msgpack_pack_uint32(&w.pk, args[i].size);
		if (args[i].type == VGPU_ARG_BYTES) {
			bytes += args[i].size;
			if (bytes > VGPU_MAX_ARG_BYTES || (args[i].size && !args[i].v.ptr))
				return vgpu__error(VGPU_ERR_KERNEL_ARGS,
						   "%s: by-value arguments exceed %d bytes (or NULL)", cl->uri,
						   VGPU_MAX_ARG_BYTES);
			msgpack_pack_bin_with_body(&w.pk, args[i].v.ptr, args[i].size);
		} else {
			uint64_t x = 0;

			memcpy(&x, &args[i].v, args[i].size < 8 ? args[i].size : 8);
			msgpack_pack_uint64(&w.pk, x);
		}
	}
	if (sid)
		return post(cl, &w, NULL, 0);
	pend_init(&p);
	return call(cl, &p, &w, NULL, 0);
}

static const struct vgpu_door_ops remote_ops = {
	.size = sizeof(struct vgpu_door_ops),
	.name = "remote",
	.close = r_close,
	.device_info = r_device_info,
	.synchronize = r_synchronize,
	.mem_alloc = r_mem_alloc,
	.mem_free = r_mem_free,
	.memcpy_htod = r_memcpy_htod,
	.memcpy_dtoh = r_memcpy_dtoh,
	.memcpy_dtod = r_memcpy_dtod,
	.memset = r_memset,
	.stream_create = r_stream_create,
	.stream_destroy = r_stream_destroy,
	.stream_sync = r_stream_sync,
	.stream_query = r_stream_query,
	.stream_wait_event = r_stream_wait_event,
	.event_create = r_event_create,
	.event_destroy = r_event_destroy,
	.event_record = r_event_record,
	.event_sync = r_event_sync,
	.event_query = r_event_query,
	.event_elapsed = r_event_elapsed,
	.module_load = r_module_load,
	.module_unload = r_module_unload,
	.function = r_function,
	.launch = r_launch,
	.mem_advise = r_mem_advise,
};

vgpu_status vgpu__remote_server_stats(vgpu_t *v, uint64_t *sessions, uint64_t *mem_used,
				      uint64_t *allocations)
{
	struct client *cl;
	uint8_t buf[16];
	struct vgpu_wbuf w;
	struct pending p;
	struct vgpu_mp m;
	vgpu_status st;

	if (!v || v->ops != &remote_ops)
		return vgpu__error(VGPU_ERR_INVALID, "not a remote handle");
	cl = CL(v);
	pend_init(&p);
	REQ(&w, buf, VGPU_OP_SERVER_STATS, 0);
	st = call(cl, &p, &w, NULL, 0);
	if (st < 0)
		return st;
	if (results(&p, &m) || vgpu__mp_u64(&m, sessions) || vgpu__mp_u64(&m, mem_used) ||
	    vgpu__mp_u64(&m, allocations))
		return bad_reply(cl, VGPU_OP_SERVER_STATS);
	return VGPU_OK;
}

vgpu_status vgpu__remote_scatter_stats(vgpu_t *v, uint64_t *in_place, uint64_t *moved)
{
	struct client *cl;

	if (!v || v->ops != &remote_ops)
		return vgpu__error(VGPU_ERR_INVALID, "not a remote handle");
	cl = CL(v);
	/* the reading role's: a test reads it between calls */
	pthread_mutex_lock(&cl->lock);
	*in_place = cl->rb.n_in_place;
	*moved = cl->rb.n_moved;
	pthread_mutex_unlock(&cl->lock);
	return VGPU_OK;
}

/* ---- opening ---- */

static vgpu_status handshake(struct client *cl, const struct vgpu_uri *u,
			     const struct vgpu_open_opts *opts)
{
	struct vgpu_hdr h;
	struct vgpu_mp m;
	uint32_t n, ver, nl;
	const void *nonce;
	char sname[128];
	int auth_required = 0;
	const char *tenant = NULL, *token = NULL, *e;
	uint8_t mac[VGPU_PROTO_MAC], buf[4096];
	struct vgpu_wbuf w;
	struct pending p;
	vgpu_status st;
	int np = 0, i;
	int64_t status;

	memset(&h, 0, sizeof(h));
	st = vgpu__rbuf_frame(&cl->rb, &h, cl->body, 0, "server");
	if (st < 0)
		return vgpu__error_prefix(st == VGPU_ERR_PROTOCOL ? st : VGPU_ERR_CONNECTION, "%s", cl->uri);
	vgpu__mp_init(&m, cl->body, h.body_len);
	if (h.type == VGPU_MSG_RESP) {
		/* refused before the greeting (busy) */
		const char *s = "";
		uint32_t sl = 0;

		if (vgpu__mp_array(&m, &n) || n < 2 || vgpu__mp_i64(&m, &status) || status >= 0 ||
		    status < INT32_MIN || vgpu__mp_str(&m, &s, &sl))
			return vgpu__error(VGPU_ERR_PROTOCOL, "%s: not a libvgpu server (bad greeting)",
					   cl->uri);
		return vgpu__error((vgpu_status)status, "%.*s", (int)sl, s);
	}
	if (h.type != VGPU_MSG_HELLO || vgpu__mp_array(&m, &n) || n < 4 || vgpu__mp_u32(&m, &ver) ||
	    vgpu__mp_bin(&m, &nonce, &nl) || nl != VGPU_PROTO_NONCE ||
	    vgpu__mp_strcpy(&m, sname, sizeof(sname)) || vgpu__mp_bool(&m, &auth_required))
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: not a libvgpu server (bad greeting)", cl->uri);
	if (ver != VGPU_PROTO_VERSION)
		return vgpu__error(VGPU_ERR_PROTOCOL,
				   "%s: protocol version mismatch: server speaks version %u, client speaks version %u",
				   cl->uri, ver, VGPU_PROTO_VERSION);

	if (opts && opts->size > offsetof(struct vgpu_open_opts, tenant))
		tenant = opts->tenant;
	if (!tenant)
		tenant = vgpu__uri_get(u, "tenant");
	if (!tenant || !*tenant)
		tenant = "default";
	if (opts && opts->size > offsetof(struct vgpu_open_opts, token))
		token = opts->token;
	if (!token)
		token = vgpu__uri_get(u, "token");
	if (!token && (e = getenv("VGPU_TOKEN")) && *e)
		token = e;
	if (token) {
		st = vgpu__auth_mac(token, nonce, tenant, mac);
		if (st < 0)
			return vgpu__error_prefix(st, "%s", cl->uri);
	} else if (auth_required) {
		vgpu_debug("%s: the server requires a token and none is set (VGPU_TOKEN or ?token=)", cl->uri);
	}
	if (strlen(tenant) > 63)
		return vgpu__error(VGPU_ERR_INVALID, "%s: tenant name too long (at most 63 bytes)", cl->uri);

	vgpu__wbuf_init(&w, buf, sizeof(buf));
	msgpack_pack_array(&w.pk, 5);
	msgpack_pack_uint32(&w.pk, VGPU_OP_HELLO);
	msgpack_pack_str_with_body(&w.pk, tenant, strlen(tenant));
	if (token)
		msgpack_pack_bin_with_body(&w.pk, mac, sizeof(mac));
	else
		msgpack_pack_nil(&w.pk);
	msgpack_pack_int(&w.pk, u->device);
	for (i = 0; i < u->nparams; i++)
		if (strcmp(u->params[i].key, "token") && strcmp(u->params[i].key, "tenant") &&
		    strncmp(u->params[i].key, "tls", 3))
			np++;
	msgpack_pack_array(&w.pk, 2 * np);
	for (i = 0; i < u->nparams; i++) {
		if (!strcmp(u->params[i].key, "token") || !strcmp(u->params[i].key, "tenant") ||
		    !strncmp(u->params[i].key, "tls", 3)) /* transport settings stay here */
			continue;
		msgpack_pack_str_with_body(&w.pk, u->params[i].key, strlen(u->params[i].key));
		msgpack_pack_str_with_body(&w.pk, u->params[i].value, strlen(u->params[i].value));
	}
	pend_init(&p);
	p.id = new_id(cl);
	st = send_locked(cl, 0, p.id, &w, NULL, 0, SEND_NOW);
	if (st < 0)
		return st;
	st = vgpu__rbuf_frame(&cl->rb, &h, cl->body, 0, "server");
	if (st < 0)
		return vgpu__error_prefix(st == VGPU_ERR_PROTOCOL ? st : VGPU_ERR_CONNECTION,
					  "%s: handshake", cl->uri);
	vgpu__mp_init(&m, cl->body, h.body_len);
	if (h.type != VGPU_MSG_RESP || vgpu__mp_array(&m, &n) || n < 2 || vgpu__mp_i64(&m, &status) ||
	    status > 0 || status < INT32_MIN)
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: malformed handshake reply", cl->uri);
	if (status < 0) {
		const char *s = "";
		uint32_t sl = 0;

		vgpu__mp_str(&m, &s, &sl);
		return vgpu__error((vgpu_status)status, "%.*s", (int)sl, s);
	}
	if (vgpu__mp_skip(&m, 0) || vgpu__mp_u64(&m, &cl->session_id))
		return vgpu__error(VGPU_ERR_PROTOCOL, "%s: malformed handshake reply", cl->uri);
	vgpu_debug("%s: connected to %s, session %llu, tenant '%s'", cl->uri, sname,
		   (unsigned long long)cl->session_id, tenant);
	return VGPU_OK;
}

vgpu_status vgpu__door_remote_open(vgpu_t *v, const struct vgpu_uri *u,
				   const struct vgpu_open_opts *opts)
{
	struct client *cl;
	vgpu_status st;
	uint32_t timeout = 0;

	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	vgpu__uri_format(u, cl->uri, sizeof(cl->uri));
	cl->tp = vgpu__transport_find(u->scheme);
	if (!cl->tp) {
		free(cl);
		return vgpu__error_prefix(VGPU_ERR_BAD_URI, "%s", u->scheme);
	}
	cl->obuf = malloc(OBUF_CAP);
	if (!cl->obuf) {
		free(cl);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	}
	atomic_init(&cl->next_id, 1);
	pthread_mutex_init(&cl->lock, NULL);
	pthread_cond_init(&cl->cond, NULL);
	pthread_mutex_init(&cl->slock, NULL);
	pthread_cond_init(&cl->fcond, NULL);
	pthread_cond_init(&cl->bgcond, NULL);
	pthread_mutex_init(&cl->amlock, NULL);
	vgpu__am_init(&cl->allocs);
	if (opts && opts->size > offsetof(struct vgpu_open_opts, timeout_ms))
		timeout = opts->timeout_ms;
	if (!timeout)
		timeout = 10000;
	{
		struct vgpu_tp_addr a;

		vgpu__tp_addr(u, &a);
		st = cl->tp->connect(&a, timeout, &cl->tc);
	}
	if (st < 0) {
		vgpu__error_prefix(st, "%s", cl->uri);
		goto fail;
	}
	cl->rb.tp = cl->tp;
	cl->rb.c = cl->tc;
	cl->tp->set_timeout(cl->tc, timeout);
	v->door = cl;
	v->ops = &remote_ops;
	st = handshake(cl, u, opts);
	if (st < 0)
		goto fail_conn;
	cl->tp->set_timeout(cl->tc, 0);
	if (pthread_create(&cl->reader, NULL, reader_main, cl) != 0) {
		st = vgpu__error(VGPU_ERR_INTERNAL, "%s: cannot start the reader thread", cl->uri);
		goto fail_conn;
	}
	if (pthread_create(&cl->flusher, NULL, flusher_main, cl) != 0) {
		pthread_mutex_lock(&cl->lock);
		cl->bgstop = 1;
		pthread_cond_broadcast(&cl->bgcond);
		pthread_mutex_unlock(&cl->lock);
		pthread_join(cl->reader, NULL);
		st = vgpu__error(VGPU_ERR_INTERNAL, "%s: cannot start the flusher thread", cl->uri);
		goto fail_conn;
	}
	cl->threads = 1;
	return VGPU_OK;
fail_conn:
	cl->tp->close(cl->tc);
fail:
	v->door = NULL;
	v->ops = NULL;
	pthread_mutex_destroy(&cl->lock);
	pthread_cond_destroy(&cl->cond);
	pthread_mutex_destroy(&cl->slock);
	pthread_cond_destroy(&cl->fcond);
	pthread_cond_destroy(&cl->bgcond);
	vgpu__am_fini(&cl->allocs);
	pthread_mutex_destroy(&cl->amlock);
	free(cl->obuf);
	free(cl);
	return st;
}
