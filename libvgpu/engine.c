/* SPDX-License-Identifier: MIT */
/*
 * engine.c - sessions, handle tables, streams and the dispatcher.
 *
 * Locking, outermost first:
 *   session->lock   handle tables and the allocation map of one session
 *   engine->qlock   stream queues, events, the ready list, counters
 *   backend locks   inside the backend
 * A thread holding qlock never takes a session lock.
 *
 * Streams: work items queue on their stream; a stream with work and no item
 * running sits on the engine's ready list. Worker threads take a stream from
 * the ready list (the scheduling decision), run its head item on the
 * backend, and put the stream back if it has more. So each stream runs in
 * order and different streams run concurrently. Work on stream 0 (the NULL
 * stream) runs synchronously on the caller's thread.
 *
 * Allocations carry a reference count: queued or running work and
 * synchronous copies hold a reference on each allocation they touch, and a
 * free waits until the count drops to zero after unlinking the allocation.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "addrmap.h"
#include "engine.h"
#include "error.h"
#include "idtable.h"

#define ENGINE_MAX_DEVICES 64
#define DEFAULT_WORKERS 4
#define INLINE_HTOD_MAX (64u * 1024)

/* Short names inside this file. */
#define engine vgpu_engine
#define session vgpu_session

struct alloc {
	vgpu_dptr base;
	size_t size;      /* rounded to granularity */
	size_t asked;     /* what the user asked */
	uint32_t refs;    /* work holding it (session->lock) */
	int freeing;
};

struct edev {
	int index;
	struct vgpu_backend_dev *bdev;
	unsigned nsessions;
	size_t gran;
	uint32_t max_threads_per_block;
	/* stats (engine qlock) */
	uint64_t mem_used, allocations;
};

struct event {
	uint32_t id;
	uint64_t record_seq;   /* records issued */
	uint64_t done_seq;     /* records completed */
	struct timespec when;  /* time of the last completed record */
	vgpu_status err;       /* error pending on its stream when it completed */
	char errmsg[VGPU_ERRMSG_MAX];
	struct stream *parked; /* streams waiting for this event */
};

enum work_op {
	W_HTOD, W_DTOH, W_DTOD, W_MEMSET, W_LAUNCH, W_RECORD, W_WAIT, W_NOTIFY,
};

struct work {
	struct work *next;
	enum work_op op;
	struct vgpu_completion done;
	struct alloc *refs[2]; /* copies */
	struct alloc **arefs;  /* launch: one per DPTR arg (may repeat) */
	unsigned nrefs;
	union {
		struct { vgpu_dptr dst; const void *src; size_t n; } htod;
		struct { void *dst; vgpu_dptr src; size_t n; } dtoh;
		struct { vgpu_dptr dst, src; size_t n; } dtod;
		struct { vgpu_dptr dst; size_t n; uint8_t value; } set;
		struct {
			struct func *f;
			vgpu_dim3 grid, block;
			size_t shmem;
			vgpu_arg *args;
			unsigned nargs;
		} launch;
		struct { struct event *ev; uint64_t seq; } rec;
		struct { struct event *ev; uint64_t seq; } wait;
	} u;
	/* inline storage (htod data, launch args) follows */
	unsigned char data[];
};

struct stream {
	uint32_t id;
	struct session *s;
	void *bs;
	struct work *head, *tail;
	uint64_t submitted, completed; /* qlock */
	int running;   /* a worker holds it */
	unsigned waiters; /* threads synchronizing on it (qlock) */
	int on_ready;  /* on the ready list */
	struct event *parked_on;
	struct stream *park_next;
	struct stream *ready_next;
	vgpu_status err;
	char errmsg[VGPU_ERRMSG_MAX];
};

struct module {
	uint32_t id;
	void *bmod;
	unsigned nfuncs;
};

struct func {
	uint32_t id;
	struct module *m;
	void *bfn;
	char name[128];
	struct vgpu_func_sig sig;
	uint32_t refs;  /* launches queued or running (session->lock) */
};

struct vgpu_session {
	struct vgpu_engine *e;
	struct edev *dev;
	uint64_t id;
	char tenant[64];
	char label[256];
	pthread_mutex_t lock;
	pthread_cond_t cv;          /* allocation refs dropped */
	struct vgpu_idtable streams, events, modules, funcs;
	struct vgpu_addrmap allocs;
	uint64_t mem_used;
	struct stream *null_stream; /* error record for stream 0 (unused) */
	struct vgpu_session *next, *prev; /* engine->sessions (qlock) */
};

struct vgpu_engine {
	const struct vgpu_backend_ops *be;
	pthread_mutex_t qlock;
	pthread_cond_t work_cv;  /* ready list became non-empty / stop */
	pthread_cond_t done_cv;  /* some work completed */
	struct stream *ready_head, *ready_tail;
	int stop;
	int nworkers;
	pthread_t *workers;
	struct edev *devs[ENGINE_MAX_DEVICES];
	pthread_mutex_t devlock; /* device open/close */
	struct vgpu_session sessions; /* list head */
	uint64_t next_session_id;
	unsigned refs;           /* local engines */
};

static double ts_ms(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

/* ------------------------------------------------------------------------ */
/* Work execution                                                           */

static void ready_push(struct engine *e, struct stream *st)
{
	if (st->on_ready || st->running || !st->head || st->parked_on)
		return;
	st->on_ready = 1;
	st->ready_next = NULL;
	if (e->ready_tail)
		e->ready_tail->ready_next = st;
	else
		e->ready_head = st;
	e->ready_tail = st;
	pthread_cond_signal(&e->work_cv);
}

/* The scheduling decision: FIFO among ready streams (policy plugins come
 * here). */
static struct stream *ready_pop(struct engine *e)
{
	struct stream *st = e->ready_head;

	if (!st)
		return NULL;
	e->ready_head = st->ready_next;
	if (!e->ready_head)
		e->ready_tail = NULL;
	st->on_ready = 0;
	return st;
}

static void unref_allocs(struct session *s, struct work *w)
{
	if (!w->nrefs && w->op != W_LAUNCH)
		return;
	pthread_mutex_lock(&s->lock);
	if (w->op == W_LAUNCH && --w->u.launch.f->refs == 0)
		pthread_cond_broadcast(&s->cv);
	for (unsigned i = 0; i < w->nrefs; i++) {
		struct alloc *a = w->arefs ? w->arefs[i] : w->refs[i];

		if (--a->refs == 0 && a->freeing)
			pthread_cond_broadcast(&s->cv);
	}
	pthread_mutex_unlock(&s->lock);
}

/* Run one item on the backend (no engine lock held). */
static vgpu_status run_item(struct session *s, struct stream *st, struct work *w)
{
	const struct vgpu_backend_ops *be = s->e->be;
	struct vgpu_backend_dev *d = s->dev->bdev;
	vgpu_status rc = VGPU_OK;

	switch (w->op) {
	case W_HTOD:
		rc = be->memcpy_htod(d, st->bs, w->u.htod.dst, w->u.htod.src, w->u.htod.n);
		break;
	case W_DTOH:
		rc = be->memcpy_dtoh(d, st->bs, w->u.dtoh.dst, w->u.dtoh.src, w->u.dtoh.n);
		break;
	case W_DTOD:
		rc = be->memcpy_dtod(d, st->bs, w->u.dtod.dst, w->u.dtod.src, w->u.dtod.n);
		break;
	case W_MEMSET:
		rc = be->memset(d, st->bs, w->u.set.dst, w->u.set.value, w->u.set.n);
		break;
	case W_LAUNCH:
		rc = be->launch(d, st->bs, w->u.launch.f->bfn, w->u.launch.grid, w->u.launch.block,
				w->u.launch.shmem, w->u.launch.args, w->u.launch.nargs);
		break;
	case W_RECORD:
	case W_WAIT:
	case W_NOTIFY:
		break;
	}
	if (rc == VGPU_OK && be->stream_sync && w->op <= W_LAUNCH)
		rc = be->stream_sync(d, st->bs);
	return rc;
}

static void complete_event(struct engine *e, struct event *ev, uint64_t seq)
{
	struct stream *p, **pp;

	if (seq > ev->done_seq) {
		ev->done_seq = seq;
		clock_gettime(CLOCK_MONOTONIC, &ev->when);
	}
	/* Wake streams parked on it whose wait is satisfied. */
	pp = &ev->parked;
	while ((p = *pp)) {
		if (p->head && p->head->op == W_WAIT && p->head->u.wait.seq <= ev->done_seq) {
			*pp = p->park_next;
			p->parked_on = NULL;
			/* consume the wait item */
			struct work *w = p->head;

			p->head = w->next;
			if (!p->head)
				p->tail = NULL;
			p->completed++;
			free(w);
			ready_push(e, p);
		} else {
			pp = &p->park_next;
		}
	}
}

static void *worker_main(void *arg)
{
	struct engine *e = arg;

	pthread_mutex_lock(&e->qlock);
	for (;;) {
		struct stream *st;
		struct work *w;
		struct session *s;
		vgpu_status rc;
		char msg[VGPU_ERRMSG_MAX];

		while (!e->stop && !e->ready_head)
			pthread_cond_wait(&e->work_cv, &e->qlock);
		if (e->stop && !e->ready_head)
			break;
		st = ready_pop(e);
		w = st->head;
		if (w->op == W_WAIT) {
			struct event *ev = w->u.wait.ev;

			if (ev->done_seq < w->u.wait.seq) {
				st->parked_on = ev;
				st->park_next = ev->parked;
				ev->parked = st;
				continue;
			}
			st->head = w->next;
			if (!st->head)
				st->tail = NULL;
			st->completed++;
			free(w);
			ready_push(e, st);
			pthread_cond_broadcast(&e->done_cv);
			continue;
		}
		st->running = 1;
		s = st->s;
		pthread_mutex_unlock(&e->qlock);

		rc = run_item(s, st, w);
		msg[0] = '\0';
		if (rc != VGPU_OK)
			snprintf(msg, sizeof(msg), "%s: %s", s->label, vgpu__error_msg());
		unref_allocs(s, w);

		pthread_mutex_lock(&e->qlock);
		st->head = w->next;
		if (!st->head)
			st->tail = NULL;
		if (w->op == W_RECORD) {
			/* an event synchronize reports the stream's pending
			 * error, as cuEventSynchronize does */
			w->u.rec.ev->err = st->err;
			snprintf(w->u.rec.ev->errmsg, sizeof(w->u.rec.ev->errmsg), "%s", st->errmsg);
			complete_event(e, w->u.rec.ev, w->u.rec.seq);
		}
		if (w->op == W_NOTIFY) {
			rc = st->err;
			snprintf(msg, sizeof(msg), "%s", st->errmsg);
			st->err = VGPU_OK;
			st->errmsg[0] = '\0';
		} else if (rc != VGPU_OK && !w->done.fn && st->err == VGPU_OK) {
			st->err = rc;
			snprintf(st->errmsg, sizeof(st->errmsg), "%s", msg);
		}
		st->running = 0;
		st->completed++;
		ready_push(e, st);
		pthread_cond_broadcast(&e->done_cv);
		if (w->done.fn) {
			pthread_mutex_unlock(&e->qlock);
			w->done.fn(w->done.arg, rc, rc ? msg : NULL);
			free(w);
			pthread_mutex_lock(&e->qlock);
		} else {
			free(w);
		}
	}
	pthread_mutex_unlock(&e->qlock);
	return NULL;
}

/* Queue w on st. */
static void enqueue(struct engine *e, struct stream *st, struct work *w)
{
	w->next = NULL;
	pthread_mutex_lock(&e->qlock);
	if (st->tail)
		st->tail->next = w;
	else
		st->head = w;
	st->tail = w;
	st->submitted++;
	ready_push(e, st);
	pthread_mutex_unlock(&e->qlock);
}

/* Wait until st has completed everything submitted so far (qlock held). */
static void stream_drain_locked(struct engine *e, struct stream *st)
{
	uint64_t target = st->submitted;

	while (st->completed < target)
		pthread_cond_wait(&e->done_cv, &e->qlock);
}

/* ------------------------------------------------------------------------ */
/* Engine                                                                   */

vgpu_status vgpu__engine_create(const char *backend, const struct vgpu_engine_opts *opts,
				struct engine **out)
{
	const struct vgpu_backend_ops *be = vgpu__backend_find(backend ? backend : "cpu");
	struct engine *e;
	int n = DEFAULT_WORKERS;

	*out = NULL;
	if (!be)
		return vgpu__error(VGPU_ERR_NO_DEVICE, "backend '%s' is not built into this libvgpu",
				   backend);
	if (opts && opts->size >= offsetof(struct vgpu_engine_opts, workers) + sizeof(int) &&
	    opts->workers > 0)
		n = opts->workers;
	if (n > 256)
		n = 256;
	e = calloc(1, sizeof(*e));
	if (!e)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory for the engine");
	e->be = be;
	pthread_mutex_init(&e->qlock, NULL);
	pthread_mutex_init(&e->devlock, NULL);
	pthread_cond_init(&e->work_cv, NULL);
	pthread_cond_init(&e->done_cv, NULL);
	e->sessions.next = e->sessions.prev = &e->sessions;
	e->workers = calloc((size_t)n, sizeof(pthread_t));
	if (!e->workers) {
		free(e);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory for the engine");
	}
	for (int i = 0; i < n; i++) {
		int rc = pthread_create(&e->workers[i], NULL, worker_main, e);

		if (rc) {
			e->nworkers = i;
			vgpu__engine_destroy(e);
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "cannot start engine threads: %s",
					   strerror(rc));
		}
	}
	e->nworkers = n;
	*out = e;
	return VGPU_OK;
}

void vgpu__engine_destroy(struct engine *e)
{
	if (!e)
		return;
	for (;;) {
		struct session *s;

		pthread_mutex_lock(&e->qlock);
		s = e->sessions.next != &e->sessions ? e->sessions.next : NULL;
		pthread_mutex_unlock(&e->qlock);
		if (!s)
			break;
		vgpu__session_close(s);
	}
	pthread_mutex_lock(&e->qlock);
	e->stop = 1;
	pthread_cond_broadcast(&e->work_cv);
	pthread_mutex_unlock(&e->qlock);
	for (int i = 0; i < e->nworkers; i++)
		pthread_join(e->workers[i], NULL);
	for (int i = 0; i < ENGINE_MAX_DEVICES; i++)
		if (e->devs[i]) {
			e->be->device_close(e->devs[i]->bdev);
			free(e->devs[i]);
		}
	free(e->workers);
	pthread_mutex_destroy(&e->qlock);
	pthread_mutex_destroy(&e->devlock);
	pthread_cond_destroy(&e->work_cv);
	pthread_cond_destroy(&e->done_cv);
	free(e);
}

const struct vgpu_backend_ops *vgpu__engine_backend(struct engine *e)
{
	return e->be;
}

int vgpu__engine_device_count(struct engine *e)
{
	return e->be->device_count();
}

void vgpu__engine_stats(struct engine *e, int device, struct vgpu_engine_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&e->qlock);
	for (struct session *s = e->sessions.next; s != &e->sessions; s = s->next)
		if (device < 0 || s->dev->index == device)
			out->sessions++;
	for (int i = 0; i < ENGINE_MAX_DEVICES; i++) {
		struct edev *d = e->devs[i];

		if (!d || (device >= 0 && i != device))
			continue;
		out->mem_used += d->mem_used;
		out->allocations += d->allocations;
	}
	pthread_mutex_unlock(&e->qlock);
}

/* Process-wide engines for in-process handles. */
static pthread_mutex_t local_lock = PTHREAD_MUTEX_INITIALIZER;
static struct engine *local_engines[4];
static const char *local_names[4];

vgpu_status vgpu__engine_local_get(const char *backend, struct engine **out)
{
	vgpu_status st = VGPU_OK;
	int slot = -1;

	pthread_mutex_lock(&local_lock);
	for (int i = 0; i < 4; i++) {
		if (local_names[i] && !strcmp(local_names[i], backend)) {
			slot = i;
			break;
		}
		if (!local_names[i] && slot < 0)
			slot = i;
	}
	if (slot < 0) {
		pthread_mutex_unlock(&local_lock);
		return vgpu__error(VGPU_ERR_INTERNAL, "too many local backends");
	}
	if (!local_engines[slot]) {
		st = vgpu__engine_create(backend, NULL, &local_engines[slot]);
		if (st == VGPU_OK)
			local_names[slot] = local_engines[slot]->be->name;
	}
	if (st == VGPU_OK) {
		local_engines[slot]->refs++;
		*out = local_engines[slot];
	}
	pthread_mutex_unlock(&local_lock);
	return st;
}

void vgpu__engine_local_put(struct engine *e)
{
	int destroy = 0;

	pthread_mutex_lock(&local_lock);
	if (--e->refs == 0) {
		for (int i = 0; i < 4; i++)
			if (local_engines[i] == e) {
				local_engines[i] = NULL;
				local_names[i] = NULL;
			}
		destroy = 1;
	}
	pthread_mutex_unlock(&local_lock);
	if (destroy)
		vgpu__engine_destroy(e);
}

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */

vgpu_status vgpu__session_open(struct engine *e, const struct vgpu_uri *uri, const char *tenant,
			       const char *label, struct session **out)
{
	struct session *s;
	struct edev *d;
	struct vgpu_device_info info;
	int idx = uri->device;
	int count;
	vgpu_status st;

	*out = NULL;
	count = e->be->device_count();
	if (count < 0)
		return (vgpu_status)count;
	if (idx < 0 || idx >= count || idx >= ENGINE_MAX_DEVICES)
		return vgpu__error(VGPU_ERR_NO_DEVICE, "%s: no device %d (%s backend has %d)",
				   label, idx, e->be->name, count);
	s = calloc(1, sizeof(*s));
	if (!s)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	pthread_mutex_lock(&e->devlock);
	d = e->devs[idx];
	if (!d) {
		d = calloc(1, sizeof(*d));
		if (!d) {
			pthread_mutex_unlock(&e->devlock);
			free(s);
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
		}
		d->index = idx;
		st = e->be->device_open(idx, uri, &d->bdev);
		if (st == VGPU_OK) {
			memset(&info, 0, sizeof(info));
			st = e->be->device_info(d->bdev, &info);
			if (st != VGPU_OK)
				e->be->device_close(d->bdev);
		}
		if (st != VGPU_OK) {
			pthread_mutex_unlock(&e->devlock);
			free(d);
			free(s);
			return st;
		}
		d->gran = e->be->granularity(d->bdev);
		d->max_threads_per_block = info.max_threads_per_block;
		e->devs[idx] = d;
	}
	d->nsessions++;
	pthread_mutex_unlock(&e->devlock);

	s->e = e;
	s->dev = d;
	snprintf(s->tenant, sizeof(s->tenant), "%s", tenant && *tenant ? tenant : "default");
	snprintf(s->label, sizeof(s->label), "%s", label ? label : e->be->name);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cv, NULL);
	vgpu__idt_init(&s->streams);
	vgpu__idt_init(&s->events);
	vgpu__idt_init(&s->modules);
	vgpu__idt_init(&s->funcs);
	vgpu__am_init(&s->allocs);
	pthread_mutex_lock(&e->qlock);
	s->id = ++e->next_session_id;
	s->next = &e->sessions;
	s->prev = e->sessions.prev;
	e->sessions.prev->next = s;
	e->sessions.prev = s;
	pthread_mutex_unlock(&e->qlock);
	vgpu_debug("%s: session %llu opened (tenant %s)", s->label, (unsigned long long)s->id,
		   s->tenant);
	*out = s;
	return VGPU_OK;
}

uint64_t vgpu__session_id(const struct session *s)
{
	return s->id;
}

const char *vgpu__session_label(const struct session *s)
{
	return s->label;
}

/* Snapshot the session's streams (s->lock held). Caller frees. */
static struct stream **collect_streams(struct session *s, unsigned *n)
{
	struct stream **v = malloc((s->streams.count + 1) * sizeof(*v));
	unsigned k = 0;

	if (!v) {
		*n = 0;
		return NULL;
	}
	for (uint32_t id = vgpu__idt_next(&s->streams, 0); id; id = vgpu__idt_next(&s->streams, id))
		v[k++] = vgpu__idt_get(&s->streams, id);
	*n = k;
	return v;
}

/* Wait for everything queued so far on every stream of the session, without
 * holding s->lock (workers take it to drop allocation references). Errors
 * stay recorded on their streams. If take_errors, return (and clear) the
 * first one instead. */
static vgpu_status session_drain(struct session *s, int take_errors)
{
	struct stream **v;
	unsigned n;
	vgpu_status first = VGPU_OK;
	char msg[VGPU_ERRMSG_MAX] = "";

	pthread_mutex_lock(&s->lock);
	v = collect_streams(s, &n);
	pthread_mutex_unlock(&s->lock);
	if (!v)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	pthread_mutex_lock(&s->e->qlock);
	for (unsigned i = 0; i < n; i++) {
		stream_drain_locked(s->e, v[i]);
		if (take_errors && v[i]->err != VGPU_OK) {
			if (first == VGPU_OK) {
				first = v[i]->err;
				snprintf(msg, sizeof(msg), "%s", v[i]->errmsg);
			}
			v[i]->err = VGPU_OK;
			v[i]->errmsg[0] = '\0';
		}
	}
	pthread_mutex_unlock(&s->e->qlock);
	free(v);
	if (first)
		vgpu__error_set_raw(first, msg);
	return first;
}

static void stream_free(struct session *s, struct stream *st)
{
	if (st->bs && s->e->be->stream_destroy)
		s->e->be->stream_destroy(s->dev->bdev, st->bs);
	free(st);
}

void vgpu__session_close(struct session *s)
{
	struct engine *e = s->e;
	uint32_t id;

	if (!s)
		return;
	/* Let every stream finish what it has. */
	session_drain(s, 0);
	pthread_mutex_lock(&s->lock);
	while ((id = vgpu__idt_next(&s->streams, 0))) {
		struct stream *st = vgpu__idt_remove(&s->streams, id);

		stream_free(s, st);
	}
	while ((id = vgpu__idt_next(&s->events, 0)))
		free(vgpu__idt_remove(&s->events, id));
	while ((id = vgpu__idt_next(&s->funcs, 0))) {
		struct func *f = vgpu__idt_remove(&s->funcs, id);

		if (e->be->function_free)
			e->be->function_free(s->dev->bdev, f->bfn);
		free(f);
	}
	while ((id = vgpu__idt_next(&s->modules, 0))) {
		struct module *m = vgpu__idt_remove(&s->modules, id);

		e->be->module_unload(s->dev->bdev, m->bmod);
		free(m);
	}
	while (s->allocs.n) {
		struct vgpu_range r = s->allocs.r[s->allocs.n - 1];
		struct alloc *a = r.obj;

		vgpu__am_remove(&s->allocs, r.base);
		while (a->refs)
			pthread_cond_wait(&s->cv, &s->lock);
		e->be->mem_free(s->dev->bdev, a->base, a->size);
		pthread_mutex_lock(&e->qlock);
		s->dev->mem_used -= a->size;
		s->dev->allocations--;
		pthread_mutex_unlock(&e->qlock);
		free(a);
	}
	pthread_mutex_unlock(&s->lock);

	pthread_mutex_lock(&e->qlock);
	s->prev->next = s->next;
	s->next->prev = s->prev;
	pthread_mutex_unlock(&e->qlock);

	pthread_mutex_lock(&e->devlock);
	if (--s->dev->nsessions == 0 && e->refs) {
		/* local engine: the device goes with its last session, so a
		 * later open may choose another size */
		e->be->device_close(s->dev->bdev);
		e->devs[s->dev->index] = NULL;
		free(s->dev);
	}
	pthread_mutex_unlock(&e->devlock);
	vgpu__idt_fini(&s->streams);
	vgpu__idt_fini(&s->events);
	vgpu__idt_fini(&s->modules);
	vgpu__idt_fini(&s->funcs);
	vgpu__am_fini(&s->allocs);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cv);
	vgpu_debug("%s: session %llu closed", s->label, (unsigned long long)s->id);
	free(s);
}

/* ------------------------------------------------------------------------ */
/* Device and memory                                                        */

vgpu_status vgpu__s_device_info(struct session *s, struct vgpu_device_info *out)
{
	vgpu_status st;

	memset(out, 0, sizeof(*out));
	st = s->e->be->device_info(s->dev->bdev, out);
	if (st)
		return vgpu__error_prefix(st, "%s", s->label);
	return VGPU_OK;
}

vgpu_status vgpu__s_mem_alloc(struct session *s, size_t size, vgpu_dptr *out)
{
	struct engine *e = s->e;
	struct alloc *a;
	size_t gran = s->dev->gran, rsize;
	vgpu_status st;

	if (size == 0)
		return vgpu__error(VGPU_ERR_INVALID, "%s: mem_alloc: size is 0", s->label);
	if (size > SIZE_MAX - gran)
		return vgpu__error(VGPU_ERR_OUT_OF_MEMORY, "%s: mem_alloc: %zu bytes is too large",
				   s->label, size);
	rsize = (size + gran - 1) / gran * gran;
	a = calloc(1, sizeof(*a));
	if (!a)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	st = e->be->mem_alloc(s->dev->bdev, rsize, &a->base);
	if (st) {
		free(a);
		return st;
	}
	a->size = rsize;
	a->asked = size;
	pthread_mutex_lock(&s->lock);
	if (vgpu__am_insert(&s->allocs, a->base, rsize, a) != 0) {
		pthread_mutex_unlock(&s->lock);
		e->be->mem_free(s->dev->bdev, a->base, rsize);
		free(a);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	s->mem_used += rsize;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&e->qlock);
	s->dev->mem_used += rsize;
	s->dev->allocations++;
	pthread_mutex_unlock(&e->qlock);
	*out = a->base;
	return VGPU_OK;
}

vgpu_status vgpu__s_mem_free(struct session *s, vgpu_dptr p)
{
	struct engine *e = s->e;
	struct alloc *a;

	pthread_mutex_lock(&s->lock);
	a = vgpu__am_remove(&s->allocs, p);
	if (!a) {
		struct vgpu_range *r = vgpu__am_find(&s->allocs, p);

		pthread_mutex_unlock(&s->lock);
		if (r)
			return vgpu__error(VGPU_ERR_BAD_ADDRESS,
					   "%s: mem_free: 0x%llx is inside the allocation at 0x%llx, "
					   "not its start", s->label, (unsigned long long)p,
					   (unsigned long long)r->base);
		return vgpu__error(VGPU_ERR_BAD_ADDRESS,
				   "%s: mem_free: 0x%llx is not an allocation of this handle "
				   "(never allocated, or already freed)", s->label,
				   (unsigned long long)p);
	}
	a->freeing = 1;
	while (a->refs)
		pthread_cond_wait(&s->cv, &s->lock);
	s->mem_used -= a->size;
	pthread_mutex_unlock(&s->lock);
	e->be->mem_free(s->dev->bdev, a->base, a->size);
	pthread_mutex_lock(&e->qlock);
	s->dev->mem_used -= a->size;
	s->dev->allocations--;
	pthread_mutex_unlock(&e->qlock);
	free(a);
	return VGPU_OK;
}

/* Find the allocation holding [p, p+n) and take a reference (s->lock held). */
static vgpu_status range_ref(struct session *s, const char *what, vgpu_dptr p, size_t n,
			     struct alloc **out)
{
	struct vgpu_range *r = vgpu__am_find(&s->allocs, p);
	struct alloc *a;

	if (!r)
		return vgpu__error(VGPU_ERR_BAD_ADDRESS,
				   "%s: %s: device address 0x%llx is not allocated by this handle",
				   s->label, what, (unsigned long long)p);
	a = r->obj;
	if (n > a->asked - (p - a->base) || p - a->base >= a->asked)
		return vgpu__error(VGPU_ERR_BAD_ADDRESS,
				   "%s: %s: %zu bytes at 0x%llx run past the end of the "
				   "%zu-byte allocation at 0x%llx", s->label, what, n,
				   (unsigned long long)p, a->asked, (unsigned long long)a->base);
	a->refs++;
	*out = a;
	return VGPU_OK;
}

static void unref(struct session *s, struct alloc *a)
{
	if (--a->refs == 0 && a->freeing)
		pthread_cond_broadcast(&s->cv);
}

static struct stream *stream_get(struct session *s, uint32_t sid, const char *what)
{
	struct stream *st = vgpu__idt_get(&s->streams, sid);

	if (!st)
		vgpu__error(VGPU_ERR_BAD_HANDLE, "%s: %s: stream %#x is not a stream of this handle",
			    s->label, what, sid);
	return st;
}

static struct work *work_new(enum work_op op, size_t extra)
{
	struct work *w = calloc(1, sizeof(*w) + extra);

	if (w)
		w->op = op;
	else
		vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory for queued work");
	return w;
}

/* Queue w on stream sid if the stream still exists (it may have been
 * destroyed since it was checked); else drop w's references. */
static vgpu_status enqueue_checked(struct session *s, uint32_t sid, struct work *w,
				   const char *what)
{
	struct stream *st;

	pthread_mutex_lock(&s->lock);
	st = stream_get(s, sid, what);
	if (st) {
		enqueue(s->e, st, w);
		pthread_mutex_unlock(&s->lock);
		return VGPU_OK;
	}
	for (unsigned i = 0; i < w->nrefs; i++)
		unref(s, w->arefs ? w->arefs[i] : w->refs[i]);
	if (w->op == W_LAUNCH && --w->u.launch.f->refs == 0)
		pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->lock);
	free(w);
	return VGPU_ERR_BAD_HANDLE;
}

static vgpu_status sync_result(struct session *s, vgpu_status st)
{
	if (st != VGPU_OK && !strstr(vgpu__error_msg(), s->label))
		return vgpu__error_prefix(st, "%s", s->label);
	return st;
}

/*
 * Common path of the four copy kinds: validate ranges, then run at once
 * (stream 0) or queue.
 */
static vgpu_status copy_op(struct session *s, uint32_t sid, enum work_op op, vgpu_dptr dst,
			   vgpu_dptr src, void *hdst, const void *hsrc, size_t n, uint8_t value,
			   const struct vgpu_completion *done)
{
	static const char *names[] = { "memcpy_htod", "memcpy_dtoh", "memcpy_dtod", "memset" };
	const struct vgpu_backend_ops *be = s->e->be;
	struct alloc *ra = NULL, *rb = NULL;
	struct stream *st = NULL;
	struct work *w;
	vgpu_status rc;
	size_t extra = 0;

	if (n == 0) {
		if (done && sid)
			done->fn(done->arg, VGPU_OK, NULL);
		return VGPU_OK;
	}
	pthread_mutex_lock(&s->lock);
	if (sid && !(st = stream_get(s, sid, names[op]))) {
		pthread_mutex_unlock(&s->lock);
		return VGPU_ERR_BAD_HANDLE;
	}
	rc = range_ref(s, names[op], op == W_DTOH ? src : dst, n, &ra);
	if (rc == VGPU_OK && op == W_DTOD) {
		rc = range_ref(s, names[op], src, n, &rb);
		if (rc)
			unref(s, ra);
	}
	pthread_mutex_unlock(&s->lock);
	if (rc)
		return rc;

	if (!sid) {
		struct vgpu_backend_dev *d = s->dev->bdev;

		switch (op) {
		case W_HTOD: rc = be->memcpy_htod(d, NULL, dst, hsrc, n); break;
		case W_DTOH: rc = be->memcpy_dtoh(d, NULL, hdst, src, n); break;
		case W_DTOD: rc = be->memcpy_dtod(d, NULL, dst, src, n); break;
		default: rc = be->memset(d, NULL, dst, value, n); break;
		}
		if (rc == VGPU_OK && be->stream_sync)
			rc = be->stream_sync(d, NULL);
		pthread_mutex_lock(&s->lock);
		unref(s, ra);
		if (rb)
			unref(s, rb);
		pthread_mutex_unlock(&s->lock);
		return sync_result(s, rc);
	}

	if (op == W_HTOD && !done && n <= INLINE_HTOD_MAX)
		extra = n;
	w = work_new(op, extra);
	if (!w) {
		pthread_mutex_lock(&s->lock);
		unref(s, ra);
		if (rb)
			unref(s, rb);
		pthread_mutex_unlock(&s->lock);
		return VGPU_ERR_NO_HOST_MEMORY;
	}
	w->refs[0] = ra;
	w->refs[1] = rb;
	w->nrefs = rb ? 2 : 1;
	if (done)
		w->done = *done;
	switch (op) {
	case W_HTOD:
		if (extra) {
			memcpy(w->data, hsrc, n);
			hsrc = w->data;
		}
		w->u.htod.dst = dst;
		w->u.htod.src = hsrc;
		w->u.htod.n = n;
		break;
	case W_DTOH:
		w->u.dtoh.dst = hdst;
		w->u.dtoh.src = src;
		w->u.dtoh.n = n;
		break;
	case W_DTOD:
		w->u.dtod.dst = dst;
		w->u.dtod.src = src;
		w->u.dtod.n = n;
		break;
	default:
		w->u.set.dst = dst;
		w->u.set.n = n;
		w->u.set.value = value;
		break;
	}
	return enqueue_checked(s, sid, w, names[op]);
}

vgpu_status vgpu__s_memcpy_htod(struct session *s, uint32_t sid, vgpu_dptr dst, const void *src,
				size_t n, const struct vgpu_completion *done)
{
	return copy_op(s, sid, W_HTOD, dst, 0, NULL, src, n, 0, done);
}

vgpu_status vgpu__s_memcpy_dtoh(struct session *s, uint32_t sid, void *dst, vgpu_dptr src,
				size_t n, const struct vgpu_completion *done)
{
	return copy_op(s, sid, W_DTOH, 0, src, dst, NULL, n, 0, done);
}

vgpu_status vgpu__s_memcpy_dtod(struct session *s, uint32_t sid, vgpu_dptr dst, vgpu_dptr src,
				size_t n)
{
	return copy_op(s, sid, W_DTOD, dst, src, NULL, NULL, n, 0, NULL);
}

vgpu_status vgpu__s_memset(struct session *s, uint32_t sid, vgpu_dptr dst, uint8_t value,
			   size_t n)
{
	return copy_op(s, sid, W_MEMSET, dst, 0, NULL, NULL, n, value, NULL);
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                  */

vgpu_status vgpu__s_stream_create(struct session *s, unsigned flags, uint32_t *sid)
{
	struct stream *st = calloc(1, sizeof(*st));
	vgpu_status rc;

	if (!st)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	st->s = s;
	if (s->e->be->stream_create) {
		rc = s->e->be->stream_create(s->dev->bdev, &st->bs);
		if (rc) {
			free(st);
			return sync_result(s, rc);
		}
	}
	pthread_mutex_lock(&s->lock);
	st->id = vgpu__idt_insert(&s->streams, st);
	pthread_mutex_unlock(&s->lock);
	if (!st->id) {
		stream_free(s, st);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: too many streams", s->label);
	}
	*sid = st->id;
	return VGPU_OK;
}

vgpu_status vgpu__s_stream_destroy(struct session *s, uint32_t sid)
{
	struct stream *st;

	pthread_mutex_lock(&s->lock);
	st = vgpu__idt_remove(&s->streams, sid);
	pthread_mutex_unlock(&s->lock);
	if (!st)
		return vgpu__error(VGPU_ERR_BAD_HANDLE,
				   "%s: stream_destroy: stream %#x is not a stream of this handle",
				   s->label, sid);
	pthread_mutex_lock(&s->e->qlock);
	stream_drain_locked(s->e, st);
	while (st->waiters)
		pthread_cond_wait(&s->e->done_cv, &s->e->qlock);
	pthread_mutex_unlock(&s->e->qlock);
	stream_free(s, st);
	return VGPU_OK;
}

/*
 * Stream lifetime: work is queued with s->lock held, and stream_destroy
 * unlinks the id under s->lock, so nothing is queued on a stream after its
 * destroy began. Threads that wait on a stream register as waiters; the
 * destroy frees the stream only when none is left.
 */
static struct stream *stream_wait_begin(struct session *s, uint32_t sid, const char *what)
{
	struct stream *st;

	pthread_mutex_lock(&s->lock);
	st = stream_get(s, sid, what);
	if (st) {
		pthread_mutex_lock(&s->e->qlock);
		st->waiters++;
	}
	pthread_mutex_unlock(&s->lock);
	return st; /* qlock held when st != NULL */
}

static void stream_wait_end(struct engine *e, struct stream *st)
{
	if (--st->waiters == 0)
		pthread_cond_broadcast(&e->done_cv);
	pthread_mutex_unlock(&e->qlock);
}

static vgpu_status take_stream_error(struct session *s, struct stream *st)
{
	vgpu_status rc = st->err;

	if (rc != VGPU_OK) {
		vgpu__error_set_raw(rc, st->errmsg);
		st->err = VGPU_OK;
		st->errmsg[0] = '\0';
	}
	return rc;
}

vgpu_status vgpu__s_stream_sync(struct session *s, uint32_t sid)
{
	struct stream *st;
	vgpu_status rc;

	if (sid == 0)
		return VGPU_OK;
	if (!(st = stream_wait_begin(s, sid, "stream_synchronize")))
		return VGPU_ERR_BAD_HANDLE;
	stream_drain_locked(s->e, st);
	rc = take_stream_error(s, st);
	stream_wait_end(s->e, st);
	return rc;
}

vgpu_status vgpu__s_stream_query(struct session *s, uint32_t sid)
{
	struct stream *st;
	vgpu_status rc;

	if (sid == 0)
		return VGPU_OK;
	if (!(st = stream_wait_begin(s, sid, "stream_query")))
		return VGPU_ERR_BAD_HANDLE;
	if (st->completed < st->submitted)
		rc = VGPU_ERR_NOT_READY;
	else
		rc = take_stream_error(s, st);
	stream_wait_end(s->e, st);
	return rc;
}

vgpu_status vgpu__s_stream_notify(struct session *s, uint32_t sid,
				  const struct vgpu_completion *done)
{
	struct stream *st;
	struct work *w;

	if (!done || !done->fn)
		return vgpu__error(VGPU_ERR_INVALID, "stream_notify: no completion");
	if (!(w = work_new(W_NOTIFY, 0)))
		return VGPU_ERR_NO_HOST_MEMORY;
	w->done = *done;
	pthread_mutex_lock(&s->lock);
	if (!(st = stream_get(s, sid, "stream_synchronize"))) {
		pthread_mutex_unlock(&s->lock);
		free(w);
		return VGPU_ERR_BAD_HANDLE;
	}
	enqueue(s->e, st, w);
	pthread_mutex_unlock(&s->lock);
	return VGPU_OK;
}

vgpu_status vgpu__s_synchronize(struct session *s)
{
	return session_drain(s, 1);
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */

vgpu_status vgpu__s_event_create(struct session *s, unsigned flags, uint32_t *eid)
{
	struct event *ev = calloc(1, sizeof(*ev));

	if (!ev)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	pthread_mutex_lock(&s->lock);
	ev->id = vgpu__idt_insert(&s->events, ev);
	pthread_mutex_unlock(&s->lock);
	if (!ev->id) {
		free(ev);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: too many events", s->label);
	}
	*eid = ev->id;
	return VGPU_OK;
}

static struct event *event_lookup(struct session *s, uint32_t eid, const char *what)
{
	struct event *ev;

	pthread_mutex_lock(&s->lock);
	ev = vgpu__idt_get(&s->events, eid);
	pthread_mutex_unlock(&s->lock);
	if (!ev)
		vgpu__error(VGPU_ERR_BAD_HANDLE, "%s: %s: event %#x is not an event of this handle",
			    s->label, what, eid);
	return ev;
}

vgpu_status vgpu__s_event_destroy(struct session *s, uint32_t eid)
{
	struct event *ev;
	struct engine *e = s->e;

	pthread_mutex_lock(&s->lock);
	ev = vgpu__idt_remove(&s->events, eid);
	pthread_mutex_unlock(&s->lock);
	if (!ev)
		return vgpu__error(VGPU_ERR_BAD_HANDLE,
				   "%s: event_destroy: event %#x is not an event of this handle",
				   s->label, eid);
	/* Work still referring to it (records, waits) must pass first. */
	pthread_mutex_lock(&e->qlock);
	while (ev->done_seq < ev->record_seq || ev->parked)
		pthread_cond_wait(&e->done_cv, &e->qlock);
	pthread_mutex_unlock(&e->qlock);
	free(ev);
	return VGPU_OK;
}

vgpu_status vgpu__s_event_record(struct session *s, uint32_t eid, uint32_t sid)
{
	struct event *ev = event_lookup(s, eid, "event_record");
	struct stream *st;
	struct work *w;

	if (!ev)
		return VGPU_ERR_BAD_HANDLE;
	if (sid == 0) {
		pthread_mutex_lock(&s->e->qlock);
		ev->err = VGPU_OK;
		complete_event(s->e, ev, ++ev->record_seq);
		pthread_cond_broadcast(&s->e->done_cv);
		pthread_mutex_unlock(&s->e->qlock);
		return VGPU_OK;
	}
	if (!(w = work_new(W_RECORD, 0)))
		return VGPU_ERR_NO_HOST_MEMORY;
	pthread_mutex_lock(&s->lock);
	if (!(st = stream_get(s, sid, "event_record")) ||
	    !(ev = vgpu__idt_get(&s->events, eid))) {
		pthread_mutex_unlock(&s->lock);
		free(w);
		return st ? vgpu__error(VGPU_ERR_BAD_HANDLE, "%s: event_record: event destroyed",
					s->label) : VGPU_ERR_BAD_HANDLE;
	}
	w->u.rec.ev = ev;
	pthread_mutex_lock(&s->e->qlock);
	w->u.rec.seq = ++ev->record_seq;
	pthread_mutex_unlock(&s->e->qlock);
	enqueue(s->e, st, w);
	pthread_mutex_unlock(&s->lock);
	return VGPU_OK;
}

vgpu_status vgpu__s_event_sync(struct session *s, uint32_t eid)
{
	struct event *ev = event_lookup(s, eid, "event_synchronize");
	uint64_t target;
	vgpu_status rc;

	if (!ev)
		return VGPU_ERR_BAD_HANDLE;
	pthread_mutex_lock(&s->e->qlock);
	target = ev->record_seq;
	while (ev->done_seq < target)
		pthread_cond_wait(&s->e->done_cv, &s->e->qlock);
	rc = ev->err;
	if (rc)
		vgpu__error_set_raw(rc, ev->errmsg);
	pthread_mutex_unlock(&s->e->qlock);
	return rc;
}

vgpu_status vgpu__s_event_query(struct session *s, uint32_t eid)
{
	struct event *ev = event_lookup(s, eid, "event_query");
	vgpu_status rc;

	if (!ev)
		return VGPU_ERR_BAD_HANDLE;
	pthread_mutex_lock(&s->e->qlock);
	rc = ev->done_seq < ev->record_seq ? VGPU_ERR_NOT_READY : VGPU_OK;
	pthread_mutex_unlock(&s->e->qlock);
	return rc;
}

vgpu_status vgpu__s_event_elapsed(struct session *s, uint32_t e0, uint32_t e1, float *ms)
{
	struct event *a = event_lookup(s, e0, "event_elapsed_ms");
	struct event *b = a ? event_lookup(s, e1, "event_elapsed_ms") : NULL;
	vgpu_status rc = VGPU_OK;

	if (!a || !b)
		return VGPU_ERR_BAD_HANDLE;
	pthread_mutex_lock(&s->e->qlock);
	if (a->record_seq == 0 || b->record_seq == 0)
		rc = vgpu__error(VGPU_ERR_INVALID, "%s: event_elapsed_ms: the %s event was never "
				 "recorded", s->label, a->record_seq == 0 ? "start" : "end");
	else if (a->done_seq < a->record_seq || b->done_seq < b->record_seq)
		rc = vgpu__error(VGPU_ERR_NOT_READY, "%s: event_elapsed_ms: an event has not "
				 "completed yet", s->label);
	else
		*ms = (float)ts_ms(&a->when, &b->when);
	pthread_mutex_unlock(&s->e->qlock);
	return rc;
}

vgpu_status vgpu__s_stream_wait_event(struct session *s, uint32_t sid, uint32_t eid)
{
	struct event *ev = event_lookup(s, eid, "stream_wait_event");
	struct stream *st;
	struct work *w;

	if (!ev)
		return VGPU_ERR_BAD_HANDLE;
	if (sid == 0) /* the NULL stream is synchronous: wait now */
		return vgpu__s_event_sync(s, eid);
	if (!(w = work_new(W_WAIT, 0)))
		return VGPU_ERR_NO_HOST_MEMORY;
	pthread_mutex_lock(&s->lock);
	if (!(st = stream_get(s, sid, "stream_wait_event")) ||
	    !(ev = vgpu__idt_get(&s->events, eid))) {
		pthread_mutex_unlock(&s->lock);
		free(w);
		return st ? vgpu__error(VGPU_ERR_BAD_HANDLE, "%s: stream_wait_event: event "
					"destroyed", s->label) : VGPU_ERR_BAD_HANDLE;
	}
	w->u.wait.ev = ev;
	pthread_mutex_lock(&s->e->qlock);
	w->u.wait.seq = ev->record_seq;
	pthread_mutex_unlock(&s->e->qlock);
	enqueue(s->e, st, w);
	pthread_mutex_unlock(&s->lock);
	return VGPU_OK;
}

/* ------------------------------------------------------------------------ */
/* Modules and launch                                                       */

vgpu_status vgpu__s_module_load(struct session *s, const void *image, size_t size, uint32_t *mid)
{
	struct module *m = calloc(1, sizeof(*m));
	vgpu_status rc;

	if (!m)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	rc = s->e->be->module_load(s->dev->bdev, image, size, &m->bmod);
	if (rc) {
		free(m);
		return sync_result(s, rc);
	}
	pthread_mutex_lock(&s->lock);
	m->id = vgpu__idt_insert(&s->modules, m);
	pthread_mutex_unlock(&s->lock);
	if (!m->id) {
		s->e->be->module_unload(s->dev->bdev, m->bmod);
		free(m);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: too many modules", s->label);
	}
	*mid = m->id;
	return VGPU_OK;
}

vgpu_status vgpu__s_module_unload(struct session *s, uint32_t mid)
{
	struct module *m;
	uint32_t id;

	/* Work of this session that may run the module's code must pass; its
	 * errors stay on the streams for their next synchronization. */
	session_drain(s, 0);
	pthread_mutex_lock(&s->lock);
	m = vgpu__idt_remove(&s->modules, mid);
	if (!m) {
		pthread_mutex_unlock(&s->lock);
		return vgpu__error(VGPU_ERR_BAD_HANDLE,
				   "%s: module_unload: module %#x is not a module of this handle",
				   s->label, mid);
	}
	for (id = vgpu__idt_next(&s->funcs, 0); id; id = vgpu__idt_next(&s->funcs, id)) {
		struct func *f = vgpu__idt_get(&s->funcs, id);

		if (f->m == m) {
			vgpu__idt_remove(&s->funcs, id);
			/* launches queued before the unlink still run */
			while (f->refs)
				pthread_cond_wait(&s->cv, &s->lock);
			if (s->e->be->function_free)
				s->e->be->function_free(s->dev->bdev, f->bfn);
			free(f);
		}
	}
	pthread_mutex_unlock(&s->lock);
	s->e->be->module_unload(s->dev->bdev, m->bmod);
	free(m);
	return VGPU_OK;
}

vgpu_status vgpu__s_function(struct session *s, uint32_t mid, const char *name, uint32_t *fid)
{
	struct module *m;
	struct func *f;
	vgpu_status rc;

	if (!name || !*name || strlen(name) >= sizeof(f->name))
		return vgpu__error(VGPU_ERR_INVALID, "%s: module_function: bad kernel name", s->label);
	f = calloc(1, sizeof(*f));
	if (!f)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	pthread_mutex_lock(&s->lock);
	m = vgpu__idt_get(&s->modules, mid);
	if (!m) {
		pthread_mutex_unlock(&s->lock);
		free(f);
		return vgpu__error(VGPU_ERR_BAD_HANDLE,
				   "%s: module_function: module %#x is not a module of this handle",
				   s->label, mid);
	}
	rc = s->e->be->function_get(s->dev->bdev, m->bmod, name, &f->bfn, &f->sig);
	if (rc) {
		pthread_mutex_unlock(&s->lock);
		free(f);
		return sync_result(s, rc);
	}
	f->m = m;
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->id = vgpu__idt_insert(&s->funcs, f);
	pthread_mutex_unlock(&s->lock);
	if (!f->id) {
		if (s->e->be->function_free)
			s->e->be->function_free(s->dev->bdev, f->bfn);
		free(f);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: too many functions", s->label);
	}
	*fid = f->id;
	return VGPU_OK;
}

static const char *arg_type_name(uint32_t t)
{
	static const char *n[] = { "none", "dptr", "i32", "u32", "i64", "u64", "f32", "f64", "bytes" };

	return t < sizeof(n) / sizeof(n[0]) ? n[t] : "unknown";
}

static uint32_t arg_type_size(uint32_t t)
{
	switch (t) {
	case VGPU_ARG_I32: case VGPU_ARG_U32: case VGPU_ARG_F32: return 4;
	case VGPU_ARG_DPTR: case VGPU_ARG_I64: case VGPU_ARG_U64: case VGPU_ARG_F64: return 8;
	default: return 0;
	}
}

/* Check args against the kernel's signature; count bytes to copy. */
static vgpu_status check_args(struct session *s, struct func *f, const vgpu_arg *args,
			      unsigned nargs, size_t *bytes, unsigned *ndptr)
{
	size_t total = 0;
	unsigned nd = 0;

	if (nargs > VGPU_MAX_KERNEL_ARGS)
		return vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: launch of '%s': %u arguments, at most %d",
				   s->label, f->name, nargs, VGPU_MAX_KERNEL_ARGS);
	if (f->sig.known && nargs != f->sig.nparams)
		return vgpu__error(VGPU_ERR_KERNEL_ARGS,
				   "%s: launch of '%s': the kernel takes %u argument%s, %u given",
				   s->label, f->name, f->sig.nparams, f->sig.nparams == 1 ? "" : "s",
				   nargs);
	for (unsigned i = 0; i < nargs; i++) {
		uint32_t t = args[i].type, sz = args[i].size;

		if (t == VGPU_ARG_BYTES) {
			if (sz == 0 || !args[i].v.ptr)
				return vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: launch of '%s': argument "
						   "%u: empty bytes", s->label, f->name, i);
			total += sz;
		} else if (t < VGPU_ARG_DPTR || t > VGPU_ARG_BYTES || sz != arg_type_size(t)) {
			return vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: launch of '%s': argument %u: "
					   "bad type %u or size %u", s->label, f->name, i, t, sz);
		}
		if (t == VGPU_ARG_DPTR)
			nd++;
		if (f->sig.known) {
			uint32_t want = f->sig.type[i];

			if (want && want != t)
				return vgpu__error(VGPU_ERR_KERNEL_ARGS,
						   "%s: launch of '%s': argument %u is %s, the kernel "
						   "declares %s", s->label, f->name, i,
						   arg_type_name(t), arg_type_name(want));
			if (f->sig.size[i] != sz)
				return vgpu__error(VGPU_ERR_KERNEL_ARGS,
						   "%s: launch of '%s': argument %u is %u bytes, the "
						   "kernel declares %u", s->label, f->name, i, sz,
						   f->sig.size[i]);
		}
	}
	if (total > VGPU_MAX_ARG_BYTES)
		return vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: launch of '%s': %zu bytes of by-value "
				   "arguments, at most %d", s->label, f->name, total,
				   VGPU_MAX_ARG_BYTES);
	*bytes = total;
	*ndptr = nd;
	return VGPU_OK;
}

static vgpu_status check_dims(struct session *s, struct func *f, vgpu_dim3 g, vgpu_dim3 b)
{
	uint64_t threads = (uint64_t)b.x * b.y * b.z;

	if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z)
		return vgpu__error(VGPU_ERR_INVALID, "%s: launch of '%s': grid and block dimensions "
				   "must be at least 1", s->label, f->name);
	if (g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
		return vgpu__error(VGPU_ERR_INVALID, "%s: launch of '%s': grid %ux%ux%u exceeds "
				   "2147483647x65535x65535", s->label, f->name, g.x, g.y, g.z);
	if (threads > s->dev->max_threads_per_block || b.z > 64)
		return vgpu__error(VGPU_ERR_INVALID, "%s: launch of '%s': block %ux%ux%u has %llu "
				   "threads, the device allows %u (z at most 64)", s->label,
				   f->name, b.x, b.y, b.z, (unsigned long long)threads,
				   s->dev->max_threads_per_block);
	return VGPU_OK;
}

vgpu_status vgpu__s_launch(struct session *s, uint32_t fid, vgpu_dim3 grid, vgpu_dim3 block,
			   size_t shmem, uint32_t sid, const vgpu_arg *args, unsigned nargs)
{
	struct alloc *stack_refs[16], **refs = stack_refs;
	struct stream *st = NULL;
	struct work *w = NULL;
	struct func *f;
	size_t bytes = 0;
	unsigned nd = 0, nref = 0;
	vgpu_status rc;

	if (nargs && !args)
		return vgpu__error(VGPU_ERR_INVALID, "%s: launch: args is NULL", s->label);
	pthread_mutex_lock(&s->lock);
	f = vgpu__idt_get(&s->funcs, fid);
	if (!f) {
		pthread_mutex_unlock(&s->lock);
		return vgpu__error(VGPU_ERR_BAD_HANDLE,
				   "%s: launch: function %#x is not a function of this handle",
				   s->label, fid);
	}
	if ((rc = check_dims(s, f, grid, block)) || (rc = check_args(s, f, args, nargs, &bytes, &nd)))
		goto out_unlock;
	if (sid && !(st = stream_get(s, sid, "launch"))) {
		rc = VGPU_ERR_BAD_HANDLE;
		goto out_unlock;
	}
	if (sid) {
		w = work_new(W_LAUNCH, nargs * sizeof(vgpu_arg) + bytes + nd * sizeof(struct alloc *));
		if (!w) {
			rc = VGPU_ERR_NO_HOST_MEMORY;
			goto out_unlock;
		}
		refs = (struct alloc **)(w->data + nargs * sizeof(vgpu_arg) + bytes);
	} else if (nd > 16) {
		refs = malloc(nd * sizeof(*refs));
		if (!refs) {
			rc = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
			goto out_unlock;
		}
	}
	/* Every pointer argument must lie in one of this session's allocations. */
	for (unsigned i = 0; i < nargs; i++) {
		struct vgpu_range *r;

		if (args[i].type != VGPU_ARG_DPTR || args[i].v.dptr == 0)
			continue;
		r = vgpu__am_find(&s->allocs, args[i].v.dptr);
		if (!r) {
			rc = vgpu__error(VGPU_ERR_BAD_ADDRESS, "%s: launch of '%s': argument %u "
					 "(0x%llx) is not inside an allocation of this handle",
					 s->label, f->name, i, (unsigned long long)args[i].v.dptr);
			goto out_unref;
		}
		refs[nref] = r->obj;
		refs[nref]->refs++;
		nref++;
	}
	f->refs++; /* module_unload waits for it */
	pthread_mutex_unlock(&s->lock);

	if (!sid) {
		vgpu_status r2;

		rc = s->e->be->launch(s->dev->bdev, NULL, f->bfn, grid, block, shmem, args, nargs);
		if (rc == VGPU_OK && s->e->be->stream_sync)
			rc = s->e->be->stream_sync(s->dev->bdev, NULL);
		r2 = sync_result(s, rc);
		pthread_mutex_lock(&s->lock);
		for (unsigned i = 0; i < nref; i++)
			unref(s, refs[i]);
		if (--f->refs == 0)
			pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->lock);
		if (refs != stack_refs)
			free(refs);
		return r2;
	}

	/* Queue: copy args (and by-value bytes) into the item. */
	{
		vgpu_arg *a = (vgpu_arg *)w->data;
		unsigned char *b = w->data + nargs * sizeof(vgpu_arg);

		memcpy(a, args, nargs * sizeof(vgpu_arg));
		for (unsigned i = 0; i < nargs; i++)
			if (a[i].type == VGPU_ARG_BYTES) {
				memcpy(b, a[i].v.ptr, a[i].size);
				a[i].v.ptr = b;
				b += a[i].size;
			}
		w->u.launch.f = f;
		w->u.launch.grid = grid;
		w->u.launch.block = block;
		w->u.launch.shmem = shmem;
		w->u.launch.args = a;
		w->u.launch.nargs = nargs;
		w->arefs = refs;
		w->nrefs = nref;
	}
	return enqueue_checked(s, sid, w, "launch");

out_unref:
	for (unsigned i = 0; i < nref; i++)
		unref(s, refs[i]);
out_unlock:
	pthread_mutex_unlock(&s->lock);
	free(w);
	if (refs != stack_refs && !sid)
		free(refs);
	return rc;
}
