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
 *
 * Scheduled devices (a scheduler plugin is loaded): a stream with work goes
 * on its session's run queue instead of the ready list; the session is
 * "runnable" for the plugin while that queue is not empty and the session
 * is not throttled by its share= cap. When a slot of the device is free a
 * worker asks the plugin's pick() for a session, runs the head item of that
 * session's first queued stream (streams of a session take turns), measures
 * it and charges the time (charge()). Plugin ops run under qlock, which
 * serialises them; host functions they call know qlock is held (tls).
 *
 * Admission: devlock guards the admitted count and the wait queue
 * (admit_cv). Lock order: devlock before qlock.
 *
 * Backpressure: every queued item counts its bytes (the item, its
 * arguments, inline htod data) against its session (qbytes, qlock). An
 * asynchronous call that finds the session holding its queue_limit bytes
 * or more (the engine's, or in-process the URI's queue_limit=) waits
 * (wait_room, before it takes the session lock, which workers need to
 * finish items) until the session is down to three quarters of that, as
 * cuLaunchKernel blocks on a full queue. A server's reader waits there too
 * and stops reading that connection, so a client that queues faster than
 * the device runs is held back by its own socket instead of filling the
 * server's memory. No queued item waits for a later call (a stream's wait
 * names the event's last record at the time of the call), so the wait
 * always ends.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
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
#include "mem.h"
#include "pluginhost.h"

#define ENGINE_MAX_DEVICES 64
#define DEFAULT_WORKERS 4
#define INLINE_HTOD_MAX (64u * 1024)
#define DEFAULT_ADMIT_QUEUE 16
#define DEFAULT_ADMIT_TIMEOUT_MS 10000
#define DEFAULT_SHARE_WINDOW_NS 100000000ull
#define DEFAULT_QUEUE_LIMIT (16u * 1024 * 1024)

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

/* A plugin instance (one per device for scheduler plugins). */
struct pinst {
	const struct vgpu__plugin_conf *conf;
	const struct vgpu_plugin_desc *d;
	const struct vgpu_sched_ops *sched; /* kind scheduler */
	void *state;
	struct vgpu_plugin_host host;
	struct vgpu_engine *e;
};

struct edev {
	int index;
	struct vgpu_backend_dev *bdev;
	unsigned nsessions;   /* devlock: sessions holding the device (admitted or waiting) */
	struct vgpu__mem *mem;  /* memory plugins and residency (mem.c) */
	size_t gran;
	uint32_t max_threads_per_block;
	uint64_t mem_total;
	/* stats (engine qlock) */
	uint64_t mem_used, allocations;
	/* scheduling (qlock) */
	struct pinst *sched;  /* NULL: FIFO fast path */
	unsigned slots, running;
	unsigned nrunnable;   /* sessions between runnable() and idle() */
	struct vgpu_session *throttled; /* over their share, by thr_next */
	uint64_t device_ns, items, sched_decisions, sched_ns;
	uint64_t last_done_ns, dispatch_seq;
	uint64_t queued, queue_wait_ns; /* items queued or running; their waits */
	uint64_t last_active_ns;  /* devlock: opened, or last session closed */
	/* demand seen by the server, not the engine (qlock): pool clients */
	uint32_t ext_waiting;
	uint64_t ext_wait_ns_max, ext_at;
	struct edev *snext;   /* engine->sdevs */
	/* admission (devlock) */
	unsigned admitted, waiting, max_sessions;
	int admit_queue;
	uint32_t admit_timeout_ms;
	uint64_t admit_waits, admit_wait_ns, admit_wait_max_ns, admit_rejected;
	struct admit_waiter *waiters; /* devlock: sessions waiting now */
};

struct admit_waiter {
	uint64_t t0;
	struct admit_waiter *next;
};

struct event {
	uint32_t id;
	uint64_t record_seq;   /* records issued */
	uint64_t done_seq;     /* records completed */
	struct timespec when;  /* time of the last completed record */
	vgpu_status err;       /* error pending on its stream when it completed */
	char errmsg[VGPU_ERRMSG_MAX];
	struct stream *parked; /* streams waiting for this event */
	uint32_t qrefs;        /* queued records and waits naming it (qlock) */
};

enum work_op {
	W_HTOD, W_DTOH, W_DTOD, W_MEMSET, W_LAUNCH, W_RECORD, W_WAIT, W_NOTIFY,
};

struct work {
	struct work *next;
	enum work_op op;
	uint64_t queued_ns;    /* when it was queued (queue wait metric) */
	size_t qsize;          /* bytes counted against the session's qbytes */
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
	unsigned char data[] __attribute__((aligned(16)));
};

struct stream {
	uint32_t id;
	struct session *s;
	void *bs;
	struct work *head, *tail;
	uint64_t submitted, completed; /* qlock */
	uint64_t notifies;             /* W_NOTIFY queued or running: not work (qlock) */
	int running;   /* a worker holds it */
	unsigned waiters; /* threads synchronizing on it (qlock) */
	int on_ready;  /* on the ready list */
	struct event *parked_on;
	struct stream *park_next;
	struct stream *ready_next;  /* engine ready list, or session run queue */
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
	struct vgpu__mem_session *ms; /* its memory plugins' view (mem.c) */
	struct stream *null_stream; /* error record for stream 0 (unused) */
	struct vgpu_session *next, *prev; /* engine->sessions (qlock) */
	/* plugins' view and URI parameters */
	struct vgpu_plugin_session ps;
	struct vgpu_uri_param *params;
	int nparams;
	uint64_t admit_wait_ns;
	/* scheduling (qlock) */
	struct stream *sync_st;      /* NULL-stream work on scheduled devices */
	struct stream *rq_head, *rq_tail; /* streams with dispatchable work */
	int in_sched;                /* runnable() given, idle() not yet */
	int throttled;               /* over its share until eligible_at */
	uint64_t eligible_at;
	struct vgpu_session *thr_next;
	int64_t tokens;              /* share bucket, ns of device time */
	uint64_t tokens_at;
	uint64_t device_ns, items, queued, last_done_ns, opened_ns;
	size_t qbytes;               /* bytes of its queued items (written under
				      * qlock, read without by wait_room) */
	size_t queue_limit;          /* qbytes at which async calls wait */
	unsigned room_waiters;       /* threads in wait_room */
	uint64_t last_seq;           /* dispatch number of its last item */
	struct tenant_acct *acct;    /* (qlock) */
};

/* Per-tenant totals since the engine started (counters for metrics). */
struct tenant_acct {
	struct tenant_acct *next;
	char name[64];
	uint64_t device_ns, items, sessions;
};

struct vgpu_engine {
	const struct vgpu_backend_ops *be;
	pthread_mutex_t qlock;
	pthread_cond_t work_cv;  /* ready list became non-empty / stop / slot free */
	pthread_cond_t done_cv;  /* some work completed */
	pthread_cond_t admit_cv; /* (devlock) a session closed */
	pthread_cond_t room_cv;  /* (qlock) a session's queue fell below 3/4 */
	struct vgpu__plugin_set plugins;
	const struct vgpu__plugin_conf *sched_conf;
	struct edev *sdevs;      /* (qlock) devices with a scheduler */
	unsigned slots, max_sessions;
	int admit_queue;
	uint32_t admit_timeout_ms;
	uint64_t share_window_ns;
	size_t queue_limit;
	unsigned max_handles; /* live streams, events, modules, functions, each */
	char *tenant_shares;
	struct vgpu_uri *devparams; /* device_params, parsed (NULL: none) */
	int uri_device_params;
	/* autoscale plugins: engine-wide instances, signalled under scale_lock
	 * (a leaf but for qlock, which host functions take) */
	struct pinst **scalers;
	unsigned nscalers;
	pthread_mutex_t scale_lock;
	pthread_cond_t scale_cv;
	pthread_t scale_thread;
	int scale_running;
	uint64_t scale_period_ns;
	struct stream *ready_head, *ready_tail;
	int stop;
	int nworkers;
	pthread_t *workers;
	struct edev *devs[ENGINE_MAX_DEVICES];
	pthread_mutex_t devlock; /* device open/close */
	struct vgpu_session sessions; /* list head */
	uint64_t next_session_id;
	/* memory plugins of e->plugins, run on every device (mem.c) */
	struct vgpu__mem_plugin mem_plugins[8];
	unsigned nmem_plugins;
	unsigned refs;           /* local engines */
	struct tenant_acct *tenants; /* (qlock) */
};

static vgpu_status sync_result(struct vgpu_session *s, vgpu_status st);
static void stream_free(struct vgpu_session *s, struct stream *st);

static double ts_ms(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

uint64_t vgpu__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* Plugin host                                                              */

/* Set while this thread calls into a plugin with qlock held, so host
 * functions called back do not take it again. */
static __thread int tls_in_plugin;

#define PLUGIN_CALL(expr) do { tls_in_plugin++; expr; tls_in_plugin--; } while (0)

static void host_qlock(struct engine *e)
{
	if (!tls_in_plugin)
		pthread_mutex_lock(&e->qlock);
}

static void host_qunlock(struct engine *e)
{
	if (!tls_in_plugin)
		pthread_mutex_unlock(&e->qlock);
}

#define PI(h) ((struct pinst *)(h)->host_priv)
#define PS_SESSION(p) ((struct session *)((char *)(p) - offsetof(struct session, ps)))

static void host_log(const struct vgpu_plugin_host *h, int level, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	if (level < VGPU_PLUGIN_LOG_ERROR)
		level = VGPU_PLUGIN_LOG_ERROR;
	if (level > VGPU_PLUGIN_LOG_DEBUG)
		level = VGPU_PLUGIN_LOG_DEBUG;
	if (!vgpu__log_enabled((enum vgpu_log_level)level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	vgpu__log((enum vgpu_log_level)level, "plugin %s: %s", PI(h)->conf->plugin->name, msg);
}

static vgpu_status host_fail(const struct vgpu_plugin_host *h, vgpu_status st, const char *fmt, ...)
{
	char msg[VGPU_ERRMSG_MAX - 80];
	va_list ap;

	if (st >= 0)
		st = VGPU_ERR_PLUGIN;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return vgpu__error(st, "plugin %s: %s", PI(h)->conf->plugin->name, msg);
}

static uint64_t host_now(const struct vgpu_plugin_host *h)
{
	return vgpu__now_ns();
}

static const char *host_session_param(const struct vgpu_plugin_host *h,
				      const struct vgpu_plugin_session *ps, const char *key)
{
	const struct session *s = PS_SESSION(ps);

	if (!key)
		return NULL;
	if (!strcmp(key, "tenant"))
		return s->tenant;
	for (int i = 0; i < s->nparams; i++)
		if (!strcmp(s->params[i].key, key))
			return s->params[i].value;
	return NULL;
}

static vgpu_status host_session_stats(const struct vgpu_plugin_host *h,
				      const struct vgpu_plugin_session *ps,
				      struct vgpu_plugin_session_stats *out)
{
	struct session *s = PS_SESSION(ps);
	struct vgpu_plugin_session_stats o;
	uint64_t now = vgpu__now_ns();
	size_t n;

	if (!out || out->size < sizeof(size_t))
		return VGPU_ERR_INVALID;
	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	host_qlock(s->e);
	o.device_ns = s->device_ns;
	o.items = s->items;
	o.queued = s->queued;
	o.opened_ns = s->opened_ns;
	o.idle_ns = s->queued ? 0 : now - (s->last_done_ns ? s->last_done_ns : s->opened_ns);
	host_qunlock(s->e);
	o.mem_used = __atomic_load_n(&s->mem_used, __ATOMIC_RELAXED);
	o.mem_on_host = vgpu__mem_session_on_host(s->ms);
	n = out->size < sizeof(o) ? out->size : sizeof(o);
	memcpy((char *)out + sizeof(size_t), (char *)&o + sizeof(size_t), n - sizeof(size_t));
	return VGPU_OK;
}

static void dev_stats_locked(struct engine *e, struct edev *d, struct vgpu_plugin_device_stats *o,
			     uint64_t now);

static vgpu_status host_device_stats(const struct vgpu_plugin_host *h, int device,
				     struct vgpu_plugin_device_stats *out)
{
	struct engine *e = PI(h)->e;
	struct vgpu_plugin_device_stats o;
	size_t n;

	if (!out || out->size < sizeof(size_t) || device < 0 || device >= ENGINE_MAX_DEVICES)
		return VGPU_ERR_INVALID;
	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	host_qlock(e);
	if (!e->devs[device]) {
		host_qunlock(e);
		return VGPU_ERR_NO_DEVICE;
	}
	dev_stats_locked(e, e->devs[device], &o, vgpu__now_ns());
	host_qunlock(e);
	n = out->size < sizeof(o) ? out->size : sizeof(o);
	memcpy((char *)out + sizeof(size_t), (char *)&o + sizeof(size_t), n - sizeof(size_t));
	return VGPU_OK;
}

static vgpu_status host_mem_unsupported(const struct vgpu_plugin_host *h,
					const struct vgpu_plugin_session *s, vgpu_dptr base)
{
	return host_fail(h, VGPU_ERR_UNSUPPORTED, "mem_evict/mem_restore: not supported by this "
			 "engine yet");
}

static void host_kick(const struct vgpu_plugin_host *h)
{
	struct engine *e = PI(h)->e;

	host_qlock(e);
	pthread_cond_broadcast(&e->work_cv);
	host_qunlock(e);
}

/* Make an instance of conf for device (-1: engine-wide). Message set on error. */
static vgpu_status pinst_new(struct engine *e, const struct vgpu__plugin_conf *conf, int device,
			     struct pinst **out)
{
	struct pinst *pi = calloc(1, sizeof(*pi));
	vgpu_status st = VGPU_OK;

	*out = NULL;
	if (!pi)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	pi->conf = conf;
	pi->d = conf->plugin->desc;
	pi->e = e;
	if (pi->d->kind == VGPU_PLUGIN_SCHEDULER)
		pi->sched = pi->d->ops;
	pi->host.size = sizeof(pi->host);
	pi->host.abi_version = VGPU_PLUGIN_ABI_VERSION;
	pi->host.device = device;
	pi->host.host_priv = pi;
	pi->host.log = host_log;
	pi->host.fail = host_fail;
	pi->host.now_ns = host_now;
	pi->host.session_param = host_session_param;
	pi->host.session_stats = host_session_stats;
	pi->host.device_stats = host_device_stats;
	pi->host.mem_evict = host_mem_unsupported;
	pi->host.mem_restore = host_mem_unsupported;
	pi->host.kick = host_kick;
	vgpu__error_clear();
	if (pi->d->init)
		st = pi->d->init(&pi->host, &conf->cfg, &pi->state);
	if (st) {
		if (vgpu__error_status() == VGPU_OK)
			vgpu__error(st, "plugin %s: init failed (%s)", conf->plugin->name,
				    vgpu_strerror(st));
		st = vgpu__error_status();
		free(pi);
		return st;
	}
	*out = pi;
	return VGPU_OK;
}

static void pinst_free(struct pinst *pi)
{
	if (!pi)
		return;
	if (pi->d->fini)
		pi->d->fini(pi->state);
	free(pi);
}

/* Does the (size-prefixed) sched ops table have field f? */
#define SOPS_HAS(o, f) ((o)->size >= offsetof(struct vgpu_sched_ops, f) + sizeof((o)->f) && (o)->f)

/* ------------------------------------------------------------------------ */
/* Work execution                                                           */

/* Scheduled devices: put st on its session's run queue (qlock held). */
static void sched_push(struct engine *e, struct stream *st)
{
	struct session *s = st->s;
	struct edev *d = s->dev;

	st->ready_next = NULL;
	if (s->rq_tail)
		s->rq_tail->ready_next = st;
	else
		s->rq_head = st;
	s->rq_tail = st;
	if (!s->in_sched && !s->throttled) {
		s->in_sched = 1;
		d->nrunnable++;
		PLUGIN_CALL(d->sched->sched->runnable(d->sched->state, &s->ps, vgpu__now_ns()));
	}
	/* a worker for it, also when its session was runnable already (its
	 * other streams may be running while a slot is free) */
	if (!s->throttled)
		pthread_cond_signal(&e->work_cv);
}

static void sched_idle(struct edev *d, struct session *s, uint64_t now)
{
	if (!s->in_sched)
		return;
	s->in_sched = 0;
	d->nrunnable--;
	PLUGIN_CALL(d->sched->sched->idle(d->sched->state, &s->ps, now));
}

static void ready_push(struct engine *e, struct stream *st)
{
	if (st->on_ready || st->running || !st->head || st->parked_on)
		return;
	st->on_ready = 1;
	if (st->s->dev->sched) {
		sched_push(e, st);
		return;
	}
	st->ready_next = NULL;
	if (e->ready_tail)
		e->ready_tail->ready_next = st;
	else
		e->ready_head = st;
	e->ready_tail = st;
	pthread_cond_signal(&e->work_cv);
}

/* The built-in scheduling decision: FIFO among ready streams. */
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

static void unref(struct session *s, struct alloc *a);

/*
 * The plugin's decision (qlock held): for a device with a free slot, let
 * throttled sessions whose time has come back in, ask pick() and take the
 * first queued stream of the session picked. *wake: earliest time a
 * throttled session becomes eligible or the plugin asked to be asked again.
 */
static struct stream *sched_pop(struct engine *e, uint64_t *wake)
{
	for (struct edev *d = e->sdevs; d; d = d->snext) {
		const struct vgpu_sched_ops *ops = d->sched->sched;
		struct vgpu_plugin_session *ps = NULL;
		struct session *s, **pp;
		struct stream *st;
		uint64_t now, t1, w = 0;

		if (d->running >= d->slots)
			continue;
		if (!d->nrunnable && !d->throttled)
			continue;
		now = vgpu__now_ns();
		for (pp = &d->throttled; (s = *pp);) {
			if (s->eligible_at <= now) {
				*pp = s->thr_next;
				s->throttled = 0;
				if (s->rq_head) {
					s->in_sched = 1;
					d->nrunnable++;
					PLUGIN_CALL(ops->runnable(d->sched->state, &s->ps, now));
				}
			} else {
				if (!*wake || s->eligible_at < *wake)
					*wake = s->eligible_at;
				pp = &s->thr_next;
			}
		}
		if (!d->nrunnable)
			continue;
		PLUGIN_CALL(ps = ops->pick(d->sched->state, now, &w));
		t1 = vgpu__now_ns();
		d->sched_decisions++;
		d->sched_ns += t1 - now;
		if (!ps) {
			if (w && (!*wake || w < *wake))
				*wake = w;
			continue;
		}
		s = PS_SESSION(ps);
		if (s->dev != d || !s->in_sched || !s->rq_head) {
			vgpu_warn("plugin %s: pick returned a session that is not runnable (ignored)",
				  d->sched->conf->plugin->name);
			continue;
		}
		st = s->rq_head;
		s->rq_head = st->ready_next;
		if (!s->rq_head) {
			s->rq_tail = NULL;
			sched_idle(d, s, t1);
		}
		st->on_ready = 0;
		s->last_seq = ++d->dispatch_seq;
		/* more runnable work and another free slot: wake a worker for it */
		if (d->nrunnable && d->running + 1 < d->slots)
			pthread_cond_signal(&e->work_cv);
		return st;
	}
	return NULL;
}

/* Account an item of s that ran for ns (qlock held): device, session, tenant. */
static void account_locked(struct session *s, uint64_t ns, uint64_t now)
{
	struct edev *d = s->dev;

	d->device_ns += ns;
	d->items++;
	d->last_done_ns = now;
	s->device_ns += ns;
	s->items++;
	s->last_done_ns = now;
	if (s->acct) {
		s->acct->device_ns += ns;
		s->acct->items++;
	}
}

/*
 * Same for work run on the caller's thread (unscheduled NULL stream).
 * t0 == 0: a small copy, counted without device time (reading the clock
 * twice would cost more than the copy; the coarse clock dates it).
 */
static void account(struct session *s, uint64_t t0)
{
	uint64_t t1;

	if (t0) {
		t1 = vgpu__now_ns();
	} else {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
		t0 = t1 = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	}

	pthread_mutex_lock(&s->e->qlock);
	account_locked(s, t1 - t0, t1);
	pthread_mutex_unlock(&s->e->qlock);
}

/* An item of a scheduled session ran for ns (qlock held). */
static void sched_done(struct engine *e, struct session *s, uint64_t ns, uint64_t now)
{
	struct edev *d = s->dev;
	double share = s->ps.share;

	d->running--;
	account_locked(s, ns, now);
	if (SOPS_HAS(d->sched->sched, charge)) {
		/* now was read just before: one clock read times the charge */
		PLUGIN_CALL(d->sched->sched->charge(d->sched->state, &s->ps, ns, now));
		d->sched_ns += vgpu__now_ns() - now;
	}
	if (share > 0 && share < 1) {
		/* token bucket: refills at share of wall time, holds at most
		 * share x window; an item may start while it is positive */
		int64_t cap = (int64_t)(share * (double)e->share_window_ns);

		s->tokens += (int64_t)(share * (double)(now - s->tokens_at));
		if (s->tokens > cap)
			s->tokens = cap;
		s->tokens_at = now;
		s->tokens -= (int64_t)ns;
		if (s->tokens < 0 && !s->throttled) {
			s->throttled = 1;
			s->eligible_at = now + (uint64_t)((double)-s->tokens / share);
			s->thr_next = d->throttled;
			d->throttled = s;
			sched_idle(d, s, now);
		}
	}
	pthread_cond_broadcast(&e->work_cv);
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

/* The allocations of a copy/set (ra: the one addressed by dst, or src for
 * dtoh; rb: dtod's source) or a launch, as memory plugins see them. */
static unsigned mem_refs_of(enum work_op op, struct alloc *const *a, unsigned n,
			    struct vgpu_mem_ref *mr)
{
	for (unsigned i = 0; i < n; i++) {
		uint32_t fl = VGPU_MEM_READ | VGPU_MEM_WRITE;

		if (op == W_DTOH || (op == W_DTOD && i == 1))
			fl = VGPU_MEM_READ;
		else if (op != W_LAUNCH)
			fl = VGPU_MEM_WRITE;
		mr[i].base = a[i]->base;
		mr[i].size = a[i]->size;
		mr[i].flags = fl;
		mr[i].resident = 0;
	}
	return n;
}

static unsigned work_mem_refs(struct work *w, struct vgpu_mem_ref *mr)
{
	return mem_refs_of(w->op, w->arefs ? w->arefs : w->refs, w->nrefs, mr);
}

/* Tell the memory plugins what queued work will touch (before it can run). */
static void mem_queued(struct session *s, struct work *w)
{
	struct vgpu_mem_ref mr[VGPU_MAX_KERNEL_ARGS];

	if (w->nrefs && vgpu__mem_wants_queue(s->ms))
		vgpu__mem_queued(s->ms, (uint64_t)(uintptr_t)w, mr, work_mem_refs(w, mr));
}

/* Work that ran (status rc, message set) no longer uses its buffers. */
static void mem_complete_keep_error(struct session *s, const struct vgpu_mem_ref *mr,
				    unsigned nmr, vgpu_status rc)
{
	char msg[VGPU_ERRMSG_MAX];

	if (!nmr)
		return;
	if (rc)
		snprintf(msg, sizeof(msg), "%s", vgpu__error_msg());
	vgpu__mem_complete(s->ms, mr, nmr);
	if (rc)
		vgpu__error_set_raw(rc, msg);
}

/* Run one item on the backend (no engine lock held). */
static vgpu_status run_item(struct session *s, struct stream *st, struct work *w)
{
	const struct vgpu_backend_ops *be = s->e->be;
	struct vgpu_backend_dev *d = s->dev->bdev;
	struct vgpu_mem_ref mr[VGPU_MAX_KERNEL_ARGS];
	unsigned nmr = 0;
	vgpu_status rc = VGPU_OK;

	if (w->nrefs && w->op <= W_LAUNCH) {
		/* its buffers resident and kept so until it completes */
		nmr = work_mem_refs(w, mr);
		rc = vgpu__mem_prepare(s->ms, (uint64_t)(uintptr_t)w, mr, nmr);
		if (rc)
			return rc;
	}

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
	mem_complete_keep_error(s, mr, nmr, rc);
	return rc;
}

/* w has left its session's queue (qlock held): the counts, and room for
 * calls waiting in wait_room once the session is down to 3/4 of its limit. */
static void item_gone(struct engine *e, struct session *s, struct work *w)
{
	size_t lim = s->queue_limit;

	s->queued--;
	s->dev->queued--;
	__atomic_store_n(&s->qbytes, s->qbytes - w->qsize, __ATOMIC_RELAXED);
	if (s->room_waiters && s->qbytes <= lim - lim / 4)
		pthread_cond_broadcast(&e->room_cv);
}

/*
 * Backpressure (top of file): an asynchronous call waits here before it
 * queues while s holds its queue_limit bytes of queued work or more, until
 * s is down to 3/4 of that. Called without s->lock: the workers that make
 * room take it.
 */
static void wait_room(struct session *s)
{
	struct engine *e = s->e;
	size_t lim = s->queue_limit;

	if (__atomic_load_n(&s->qbytes, __ATOMIC_RELAXED) < lim)
		return;
	pthread_mutex_lock(&e->qlock);
	if (s->qbytes >= lim) {
		s->room_waiters++;
		while (s->qbytes > lim - lim / 4 && !e->stop)
			pthread_cond_wait(&e->room_cv, &e->qlock);
		s->room_waiters--;
	}
	pthread_mutex_unlock(&e->qlock);
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
			item_gone(e, p->s, w);
			ev->qrefs--;
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
		uint64_t wake = 0, t0 = 0, t1 = 0;
		int scheduled;

		st = ready_pop(e);
		if (!st && e->sdevs)
			st = sched_pop(e, &wake);
		if (!st) {
			if (e->stop)
				break;
			if (wake) {
				struct timespec ts = { (time_t)(wake / 1000000000ull),
						       (long)(wake % 1000000000ull) };

				pthread_cond_timedwait(&e->work_cv, &e->qlock, &ts);
			} else {
				pthread_cond_wait(&e->work_cv, &e->qlock);
			}
			continue;
		}
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
			item_gone(e, st->s, w);
			ev->qrefs--;
			free(w);
			ready_push(e, st);
			pthread_cond_broadcast(&e->done_cv);
			continue;
		}
		st->running = 1;
		s = st->s;
		scheduled = s->dev->sched != NULL;
		if (scheduled)
			s->dev->running++;
		t0 = vgpu__now_ns();
		if (w->queued_ns && t0 > w->queued_ns)
			s->dev->queue_wait_ns += t0 - w->queued_ns;
		pthread_mutex_unlock(&e->qlock);

		rc = run_item(s, st, w);
		t1 = vgpu__now_ns();
		msg[0] = '\0';
		if (rc != VGPU_OK)
			snprintf(msg, sizeof(msg), "%s: %s", s->label, vgpu__error_msg());
		unref_allocs(s, w);
		/* The completion runs before the item counts as done: a
		 * synchronization that returns has seen every completion of
		 * the stream, and they run in stream order. */
		if (w->op == W_NOTIFY) {
			pthread_mutex_lock(&e->qlock);
			rc = st->err;
			snprintf(msg, sizeof(msg), "%s", st->errmsg);
			st->err = VGPU_OK;
			st->errmsg[0] = '\0';
			pthread_mutex_unlock(&e->qlock);
		}
		if (w->done.fn)
			w->done.fn(w->done.arg, rc, rc ? msg : NULL);

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
			w->u.rec.ev->qrefs--;
		}
		if (w->op != W_NOTIFY && rc != VGPU_OK && !w->done.fn && st->err == VGPU_OK) {
			st->err = rc;
			snprintf(st->errmsg, sizeof(st->errmsg), "%s", msg);
		}
		st->running = 0;
		st->completed++;
		st->notifies -= w->op == W_NOTIFY;
		item_gone(e, s, w);
		if (scheduled)
			sched_done(e, s, t1 - t0, t1);
		else if (w->op <= W_LAUNCH)
			account_locked(s, t1 - t0, t1);
		ready_push(e, st);
		pthread_cond_broadcast(&e->done_cv);
		free(w);
	}
	pthread_mutex_unlock(&e->qlock);
	return NULL;
}

/* Queue w on st; returns its position (st->completed reaches it when w
 * has completed). */
static uint64_t enqueue(struct engine *e, struct stream *st, struct work *w)
{
	uint64_t seq;

	w->next = NULL;
	pthread_mutex_lock(&e->qlock);
	if (st->tail)
		st->tail->next = w;
	else
		st->head = w;
	st->tail = w;
	st->submitted++;
	st->notifies += w->op == W_NOTIFY;
	st->s->queued++;
	st->s->dev->queued++;
	__atomic_store_n(&st->s->qbytes, st->s->qbytes + w->qsize, __ATOMIC_RELAXED);
	w->queued_ns = vgpu__now_ns();
	seq = st->submitted;
	ready_push(e, st);
	pthread_mutex_unlock(&e->qlock);
	return seq;
}

/* Wait until st has completed everything submitted so far (qlock held). */
static void stream_drain_locked(struct engine *e, struct stream *st)
{
	uint64_t target = st->submitted;

	while (st->completed < target)
		pthread_cond_wait(&e->done_cv, &e->qlock);
}

/* ------------------------------------------------------------------------ */
/* Autoscale signals                                                        */

/* External demand (vgpu__engine_scale_demand) counts this long after its
 * last refresh (pool clients poll every 250 ms while they wait). */
#define SCALE_EXT_TTL_NS 1000000000ull

/* Fill sig for d (devlock held; takes qlock). */
static void scale_fill(struct engine *e, struct edev *d, uint32_t event, uint64_t now,
		       struct vgpu_autoscale_signal *sig)
{
	memset(sig, 0, sizeof(*sig));
	sig->size = sizeof(*sig);
	sig->event = event;
	sig->device = d->index;
	sig->now_ns = now;
	sig->sessions = d->admitted;
	sig->waiting = d->waiting;
	for (struct admit_waiter *w = d->waiters; w; w = w->next)
		if (now - w->t0 > sig->wait_ns_max)
			sig->wait_ns_max = now - w->t0;
	pthread_mutex_lock(&e->qlock);
	if (d->ext_at && now - d->ext_at < SCALE_EXT_TTL_NS) {
		sig->waiting += d->ext_waiting;
		if (d->ext_wait_ns_max > sig->wait_ns_max)
			sig->wait_ns_max = d->ext_wait_ns_max;
	}
	sig->mem_total = d->mem_total;
	sig->mem_used = d->mem_used;
	if (d->admitted == 0)
		sig->idle_ns = now - d->last_active_ns;
	else if (d->sched && !d->running && !d->nrunnable)
		sig->idle_ns = now - (d->last_done_ns ? d->last_done_ns : d->last_active_ns);
	pthread_mutex_unlock(&e->qlock);
}

static void scale_send(struct engine *e, const struct vgpu_autoscale_signal *sig)
{
	pthread_mutex_lock(&e->scale_lock);
	for (unsigned i = 0; i < e->nscalers; i++) {
		const struct vgpu_autoscale_ops *o = e->scalers[i]->d->ops;

		o->signal(e->scalers[i]->state, sig);
	}
	pthread_mutex_unlock(&e->scale_lock);
}

/* Sessions wait for admission or one was refused with st (devlock held;
 * the thread's error message is kept). */
static void scale_pressure(struct engine *e, struct edev *d, vgpu_status st)
{
	struct vgpu_autoscale_signal sig;
	char msg[VGPU_ERRMSG_MAX];

	if (!e->nscalers)
		return;
	snprintf(msg, sizeof(msg), "%s", vgpu__error_msg());
	scale_fill(e, d, VGPU_SCALE_PRESSURE, vgpu__now_ns(), &sig);
	scale_send(e, &sig);
	if (st)
		vgpu__error_set_raw(st, msg);
}

void vgpu__engine_scale_demand(struct engine *e, int device, uint32_t waiting,
			       uint64_t wait_ns_max)
{
	pthread_mutex_lock(&e->qlock);
	if (device >= 0 && device < ENGINE_MAX_DEVICES && e->devs[device]) {
		struct edev *d = e->devs[device];

		d->ext_waiting = waiting;
		d->ext_wait_ns_max = wait_ns_max;
		d->ext_at = vgpu__now_ns();
	}
	pthread_mutex_unlock(&e->qlock);
}

/* Every period: a TICK per open device, IDLE when it was idle a period. */
static void *scale_main(void *arg)
{
	struct engine *e = arg;

	pthread_mutex_lock(&e->scale_lock);
	while (e->scale_running) {
		uint64_t next = vgpu__now_ns() + e->scale_period_ns;
		struct timespec ts = { (time_t)(next / 1000000000ull), (long)(next % 1000000000ull) };
		struct vgpu_autoscale_signal sigs[ENGINE_MAX_DEVICES];
		unsigned n = 0;

		pthread_cond_timedwait(&e->scale_cv, &e->scale_lock, &ts);
		if (!e->scale_running)
			break;
		pthread_mutex_unlock(&e->scale_lock);
		pthread_mutex_lock(&e->devlock);
		for (int i = 0; i < ENGINE_MAX_DEVICES; i++) {
			uint64_t now = vgpu__now_ns();

			if (!e->devs[i])
				continue;
			scale_fill(e, e->devs[i], VGPU_SCALE_TICK, now, &sigs[n]);
			if (sigs[n].idle_ns >= e->scale_period_ns && !sigs[n].waiting)
				sigs[n].event = VGPU_SCALE_IDLE;
			n++;
		}
		pthread_mutex_unlock(&e->devlock);
		for (unsigned i = 0; i < n; i++)
			scale_send(e, &sigs[i]);
		pthread_mutex_lock(&e->scale_lock);
	}
	pthread_mutex_unlock(&e->scale_lock);
	return NULL;
}

/* Instantiate the autoscale plugins and start their thread. */
static vgpu_status scale_start(struct engine *e)
{
	unsigned k = 0;
	vgpu_status st;
	int rc;

	pthread_mutex_init(&e->scale_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&e->scale_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (!e->nscalers)
		return VGPU_OK;
	e->scalers = calloc(e->nscalers, sizeof(*e->scalers));
	if (!e->scalers) {
		e->nscalers = 0;
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	for (unsigned i = 0; i < e->plugins.n; i++) {
		const struct vgpu__plugin_conf *c = e->plugins.v[i];

		if (c->plugin->desc->kind != VGPU_PLUGIN_AUTOSCALE)
			continue;
		st = pinst_new(e, c, -1, &e->scalers[k]);
		if (st) {
			e->nscalers = k;
			return st;
		}
		k++;
	}
	e->scale_running = 1;
	rc = pthread_create(&e->scale_thread, NULL, scale_main, e);
	if (rc) {
		e->scale_running = 0;
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "cannot start the autoscale thread: %s",
				   strerror(rc));
	}
	return VGPU_OK;
}

static void scale_stop(struct engine *e)
{
	pthread_mutex_lock(&e->scale_lock);
	if (e->scale_running) {
		e->scale_running = 0;
		pthread_cond_broadcast(&e->scale_cv);
		pthread_mutex_unlock(&e->scale_lock);
		pthread_join(e->scale_thread, NULL);
	} else {
		pthread_mutex_unlock(&e->scale_lock);
	}
	for (unsigned i = 0; i < e->nscalers; i++)
		pinst_free(e->scalers[i]);
	free(e->scalers);
	e->scalers = NULL;
	e->nscalers = 0;
}

/* ------------------------------------------------------------------------ */
/* Engine                                                                   */

/* Keep memory plugin c for the devices (mem.c instantiates memory plugins
 * per device, in spec order). */
static vgpu_status engine_mem_plugin(struct engine *e, const struct vgpu__plugin_conf *c)
{
	if (e->nmem_plugins == sizeof(e->mem_plugins) / sizeof(e->mem_plugins[0]))
		return vgpu__error(VGPU_ERR_PLUGIN, "plugin %s: too many memory plugins",
				   c->plugin->name);
	e->mem_plugins[e->nmem_plugins].desc = c->plugin->desc;
	e->mem_plugins[e->nmem_plugins].cfg = &c->cfg;
	e->nmem_plugins++;
	return VGPU_OK;
}


/* "devmem=8G&x=y": parsed now, so that a bad setting fails at start. */
static vgpu_status parse_device_params(struct engine *e, const char *q)
{
	char buf[VGPU_URI_MAX];
	int n = snprintf(buf, sizeof(buf), "%s:0?%s", e->be->name, q);

	if (n < 0 || (size_t)n >= sizeof(buf))
		return vgpu__error(VGPU_ERR_INVALID, "device parameters '%s': too long", q);
	if (!(e->devparams = calloc(1, sizeof(*e->devparams))))
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory for the engine");
	if (vgpu__uri_parse(buf, e->devparams) < 0)
		return vgpu__error_prefix(VGPU_ERR_INVALID, "device parameters '%s'", q);
	return VGPU_OK;
}

vgpu_status vgpu__engine_create(const char *backend, const struct vgpu_engine_opts *opts,
				struct engine **out)
{
	const struct vgpu_backend_ops *be = vgpu__backend_find(backend ? backend : "cpu");
	struct engine *e;
	int n = DEFAULT_WORKERS;

	struct vgpu_engine_opts o;
	pthread_condattr_t ca;
	vgpu_status st;
	unsigned nsched = 0;

	*out = NULL;
	if (!be)
		return vgpu__error(VGPU_ERR_NO_DEVICE, "backend '%s' is not built into this libvgpu",
				   backend);
	memset(&o, 0, sizeof(o));
	if (opts)
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
	if (o.workers > 0)
		n = o.workers;
	if (n > 256)
		n = 256;
	e = calloc(1, sizeof(*e));
	if (!e)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory for the engine");
	e->be = be;
	st = vgpu__plugin_set_parse(o.plugins, &e->plugins);
	if (st) {
		free(e);
		return st;
	}
	for (unsigned i = 0; i < e->plugins.n; i++) {
		const struct vgpu__plugin_conf *c = e->plugins.v[i];

		if (c->plugin->desc->kind == VGPU_PLUGIN_SCHEDULER && nsched++)
			st = vgpu__error(VGPU_ERR_PLUGIN, "plugins %s and %s are both schedulers: a "
					 "device has one scheduler", e->sched_conf->plugin->name,
					 c->plugin->name);
		else if (c->plugin->desc->kind == VGPU_PLUGIN_SCHEDULER)
			e->sched_conf = c;
		else if (c->plugin->desc->kind == VGPU_PLUGIN_MEMORY && !st)
			st = engine_mem_plugin(e, c);
		else if (!st && c->plugin->desc->kind == VGPU_PLUGIN_AUTOSCALE)
			e->nscalers++;
		else if (!st)
			vgpu_warn("plugin %s: %s plugins are not run by this engine yet (ignored)",
				  c->plugin->name, vgpu_plugin_kind_name(c->plugin->desc->kind));
	}
	if (!st && e->sched_conf) {
		/* instantiate once to check the parameters now, not at first use */
		struct pinst *pi;

		st = pinst_new(e, e->sched_conf, -1, &pi);
		if (!st)
			pinst_free(pi);
	}
	if (!st && o.tenant_shares && *o.tenant_shares && !e->sched_conf)
		st = vgpu__error(VGPU_ERR_PLUGIN, "tenant shares need a scheduler plugin (e.g. "
				 "sched-fifo or sched-fair)");
	if (!st && o.tenant_shares && !(e->tenant_shares = strdup(o.tenant_shares)))
		st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory for the engine");
	if (!st && o.device_params && *o.device_params)
		st = parse_device_params(e, o.device_params);
	if (st) {
		vgpu__plugin_set_free(&e->plugins);
		free(e->tenant_shares);
		free(e->devparams);
		free(e);
		return st;
	}
	e->slots = o.slots ? o.slots : 1;
	e->max_sessions = o.max_sessions;
	e->admit_queue = o.admit_queue ? o.admit_queue : DEFAULT_ADMIT_QUEUE;
	e->admit_timeout_ms = o.admit_timeout_ms ? o.admit_timeout_ms : DEFAULT_ADMIT_TIMEOUT_MS;
	e->share_window_ns = o.share_window_ns ? o.share_window_ns : DEFAULT_SHARE_WINDOW_NS;
	e->queue_limit = o.queue_limit ? o.queue_limit : DEFAULT_QUEUE_LIMIT;
	e->max_handles = o.max_handles && o.max_handles < VGPU_ID_MAX_OBJECTS - 1
				 ? o.max_handles : VGPU_ID_MAX_OBJECTS - 1;
	e->uri_device_params = o.uri_device_params;
	e->scale_period_ns = (uint64_t)(o.autoscale_period_ms ? o.autoscale_period_ms : 1000) *
			     1000000ull;
	pthread_mutex_init(&e->qlock, NULL);
	pthread_mutex_init(&e->devlock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->work_cv, &ca);
	pthread_cond_init(&e->admit_cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&e->done_cv, NULL);
	pthread_cond_init(&e->room_cv, NULL);
	e->sessions.next = e->sessions.prev = &e->sessions;
	e->workers = calloc((size_t)n, sizeof(pthread_t));
	if (!e->workers) {
		vgpu__plugin_set_free(&e->plugins);
		free(e->tenant_shares);
		free(e->devparams);
		free(e);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory for the engine");
	}
	for (int i = 0; i < n; i++) {
		int rc = pthread_create(&e->workers[i], NULL, worker_main, e);

		if (rc) {
			e->nworkers = i;
			pthread_mutex_init(&e->scale_lock, NULL);
			pthread_cond_init(&e->scale_cv, NULL);
			vgpu__engine_destroy(e);
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "cannot start engine threads: %s",
					   strerror(rc));
		}
	}
	e->nworkers = n;
	st = scale_start(e);
	if (st) {
		char msg[VGPU_ERRMSG_MAX];

		snprintf(msg, sizeof(msg), "%s", vgpu__error_msg());
		vgpu__engine_destroy(e);
		vgpu__error_set_raw(st, msg);
		return st;
	}
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
	scale_stop(e);
	pthread_mutex_lock(&e->qlock);
	e->stop = 1;
	pthread_cond_broadcast(&e->work_cv);
	pthread_cond_broadcast(&e->room_cv);
	pthread_mutex_unlock(&e->qlock);
	for (int i = 0; i < e->nworkers; i++)
		pthread_join(e->workers[i], NULL);
	for (int i = 0; i < ENGINE_MAX_DEVICES; i++)
		if (e->devs[i]) {
			pinst_free(e->devs[i]->sched);
			vgpu__mem_destroy(e->devs[i]->mem);
			e->be->device_close(e->devs[i]->bdev);
			free(e->devs[i]);
		}
	free(e->workers);
	while (e->tenants) {
		struct tenant_acct *t = e->tenants;

		e->tenants = t->next;
		free(t);
	}
	vgpu__plugin_set_free(&e->plugins);
	free(e->tenant_shares);
	free(e->devparams);
	pthread_mutex_destroy(&e->qlock);
	pthread_mutex_destroy(&e->devlock);
	pthread_cond_destroy(&e->work_cv);
	pthread_cond_destroy(&e->done_cv);
	pthread_cond_destroy(&e->room_cv);
	pthread_cond_destroy(&e->admit_cv);
	pthread_mutex_destroy(&e->scale_lock);
	pthread_cond_destroy(&e->scale_cv);
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

static void dev_stats_locked(struct engine *e, struct edev *d, struct vgpu_plugin_device_stats *o,
			     uint64_t now)
{
	for (struct session *s = e->sessions.next; s != &e->sessions; s = s->next)
		if (s->dev == d)
			o->sessions++;
	o->waiting = d->waiting;
	o->slots = d->slots;
	o->running = d->running;
	o->device_ns = d->device_ns;
	o->mem_total = d->mem_total;
	o->mem_used = d->mem_used;
	if (d->mem) { /* residency (mem.c; its lock nests inside qlock) */
		struct vgpu__mem_stats ms;

		vgpu__mem_stats(d->mem, &ms);
		o->mem_on_host = ms.on_host;
		o->mem_resident = ms.resident;
		o->mem_pinned = ms.pinned;
		o->mem_capacity = ms.capacity;
	}
	o->admit_waits = d->admit_waits;
	o->admit_wait_ns = d->admit_wait_ns;
	o->admit_rejected = d->admit_rejected;
	o->idle_ns = d->running || !d->last_done_ns ? 0 : now - d->last_done_ns;
}

vgpu_status vgpu__engine_mem_stats(struct engine *e, int device, struct vgpu__mem_stats *out)
{
	vgpu_status st = VGPU_OK;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&e->devlock);
	if (device < 0 || device >= ENGINE_MAX_DEVICES || !e->devs[device] ||
	    !e->devs[device]->mem)
		st = vgpu__error(VGPU_ERR_NO_DEVICE, "device %d is not open", device);
	else
		vgpu__mem_stats(e->devs[device]->mem, out);
	pthread_mutex_unlock(&e->devlock);
	return st;
}

void vgpu__engine_stats(struct engine *e, int device, struct vgpu_engine_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&e->devlock);
	pthread_mutex_lock(&e->qlock);
	out->now_ns = vgpu__now_ns();
	for (struct session *s = e->sessions.next; s != &e->sessions; s = s->next)
		if (device < 0 || s->dev->index == device)
			out->sessions++;
	for (int i = 0; i < ENGINE_MAX_DEVICES; i++) {
		struct edev *d = e->devs[i];

		if (!d || (device >= 0 && i != device))
			continue;
		out->mem_used += d->mem_used;
		out->allocations += d->allocations;
		out->device_ns += d->device_ns;
		out->items += d->items;
		out->sched_decisions += d->sched_decisions;
		out->sched_ns += d->sched_ns;
		out->admit_waiting += d->waiting;
		out->admit_waits += d->admit_waits;
		out->admit_wait_ns += d->admit_wait_ns;
		if (d->admit_wait_max_ns > out->admit_wait_max_ns)
			out->admit_wait_max_ns = d->admit_wait_max_ns;
		out->admit_rejected += d->admit_rejected;
		out->queued += d->queued;
		out->queue_wait_ns += d->queue_wait_ns;
		if (d->max_sessions && (!out->max_sessions || d->max_sessions < out->max_sessions))
			out->max_sessions = d->max_sessions;
		if (d->last_done_ns && !d->running && !d->queued) {
			uint64_t idle = out->now_ns - d->last_done_ns;

			if (!out->idle_ns || idle < out->idle_ns)
				out->idle_ns = idle;
		}
	}
	out->max_sessions = out->max_sessions ? out->max_sessions : e->max_sessions;
	pthread_mutex_unlock(&e->qlock);
	pthread_mutex_unlock(&e->devlock);
}

int vgpu__engine_sessions(struct engine *e, struct vgpu_engine_session_info *out, int max)
{
	uint64_t now;
	int n = 0;

	pthread_mutex_lock(&e->qlock);
	now = vgpu__now_ns();
	for (struct session *s = e->sessions.next; s != &e->sessions; s = s->next) {
		struct vgpu_engine_session_info *i;
		uint64_t last = s->last_done_ns ? s->last_done_ns : s->opened_ns;

		if (n >= max) {
			n++;
			continue;
		}
		i = &out[n++];
		memset(i, 0, sizeof(*i));
		i->id = s->id;
		snprintf(i->tenant, sizeof(i->tenant), "%s", s->tenant);
		i->device = s->dev->index;
		i->mem_used = __atomic_load_n(&s->mem_used, __ATOMIC_RELAXED);
		i->mem_limit = s->ps.mem_limit;
		i->mem_on_host = vgpu__mem_session_on_host(s->ms); /* mem lock inside qlock */
		i->share = s->ps.share;
		i->device_ns = s->device_ns;
		i->items = s->items;
		i->queued = s->queued;
		i->age_ns = now > s->opened_ns ? now - s->opened_ns : 0;
		i->idle_ns = s->queued || now < last ? 0 : now - last;
	}
	pthread_mutex_unlock(&e->qlock);
	return n;
}

int vgpu__engine_tenants(struct engine *e, struct vgpu_engine_tenant_info *out, int max)
{
	int n = 0;

	pthread_mutex_lock(&e->qlock);
	for (struct tenant_acct *t = e->tenants; t; t = t->next) {
		if (n < max) {
			snprintf(out[n].tenant, sizeof(out[n].tenant), "%s", t->name);
			out[n].device_ns = t->device_ns;
			out[n].items = t->items;
			out[n].sessions = t->sessions;
		}
		n++;
	}
	pthread_mutex_unlock(&e->qlock);
	return n;
}

static vgpu_status dev_open(struct engine *e, int idx, const struct vgpu_uri *uri,
			    const char *label, struct edev **out);

vgpu_status vgpu__engine_device_info(struct engine *e, int idx, struct vgpu_device_info *out)
{
	struct edev *d;
	vgpu_status st = VGPU_OK;
	int count = e->be->device_count();

	memset(out, 0, sizeof(*out));
	if (count < 0)
		return (vgpu_status)count;
	if (idx < 0 || idx >= count || idx >= ENGINE_MAX_DEVICES)
		return vgpu__error(VGPU_ERR_NO_DEVICE, "no device %d (%s backend has %d)", idx,
				   e->be->name, count);
	pthread_mutex_lock(&e->devlock);
	d = e->devs[idx];
	if (!d && !e->refs) {
		/* a server's engine: open the device; it stays open */
		struct vgpu_uri *u = calloc(1, sizeof(*u));
		char label[64];

		if (!u) {
			pthread_mutex_unlock(&e->devlock);
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
		}
		snprintf(u->scheme, sizeof(u->scheme), "%s", e->be->name);
		u->port = -1;
		u->device = idx;
		snprintf(label, sizeof(label), "%s:%d", e->be->name, idx);
		st = dev_open(e, idx, u, label, &d);
		free(u);
		if (st == VGPU_OK)
			e->devs[idx] = d;
	}
	if (!d && st == VGPU_OK)
		st = vgpu__error(VGPU_ERR_NO_DEVICE, "device %d is not open", idx);
	if (st == VGPU_OK)
		st = e->be->device_info(d->bdev, out);
	if (st == VGPU_OK && d->mem) {
		/* the device's residency, in both the handle and dev_ fields */
		struct vgpu__mem_stats ms;

		vgpu__mem_stats(d->mem, &ms);
		out->mem_resident = out->dev_mem_resident = ms.resident;
		out->mem_on_host = out->dev_mem_on_host = ms.on_host;
		out->swapped_in = out->dev_swapped_in = ms.swapped_in;
		out->swapped_out = out->dev_swapped_out = ms.swapped_out;
		out->evictions = out->dev_evictions = ms.evictions;
	}
	pthread_mutex_unlock(&e->devlock);
	return st;
}

void vgpu__session_stats(struct session *s, struct vgpu_session_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&s->e->qlock);
	out->now_ns = vgpu__now_ns();
	out->device_ns = s->device_ns;
	out->items = s->items;
	out->queued = s->queued;
	out->admit_wait_ns = s->admit_wait_ns;
	out->last_seq = s->last_seq;
	pthread_mutex_unlock(&s->e->qlock);
}

/* Process-wide engines for in-process handles. */
static pthread_mutex_t local_lock = PTHREAD_MUTEX_INITIALIZER;
static struct engine *local_engines[4];
static const char *local_names[4];

static int same_plugins(const char *a, const char *b)
{
	return !strcmp(a ? a : "", b ? b : "");
}

vgpu_status vgpu__engine_local_get(const char *backend, struct engine **out)
{
	return vgpu__engine_local_get_ex(backend, NULL, out);
}

vgpu_status vgpu__engine_local_get_ex(const char *backend, const char *plugins,
				      struct engine **out)
{
	vgpu_status st = VGPU_OK;
	int slot = -1;
	int given = plugins != NULL;

	if (!plugins)
		plugins = getenv("VGPU_PLUGINS");

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
		struct vgpu_engine_opts o;

		memset(&o, 0, sizeof(o));
		o.size = sizeof(o);
		o.plugins = plugins;
		o.uri_device_params = 1;
		st = vgpu__engine_create(backend, &o, &local_engines[slot]);
		if (st == VGPU_OK)
			local_names[slot] = local_engines[slot]->be->name;
	} else if (given && !same_plugins(plugins, local_engines[slot]->plugins.text)) {
		st = vgpu__error(VGPU_ERR_PLUGIN, "the in-process %s engine already runs with "
				 "plugins '%s'; it cannot also run '%s' (close every %s handle "
				 "first)", backend, local_engines[slot]->plugins.text ?
				 local_engines[slot]->plugins.text : "", plugins, backend);
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

/* Close a device no session holds any more (devlock held). Local engines
 * close it with its last session, so a later open may choose another size. */
static void dev_release(struct engine *e, struct edev *d)
{
	if (--d->nsessions || !e->refs)
		return;
	/* e->devs and e->sdevs change under both devlock and qlock */
	pthread_mutex_lock(&e->qlock);
	for (struct edev **pp = &e->sdevs; *pp; pp = &(*pp)->snext)
		if (*pp == d) {
			*pp = d->snext;
			break;
		}
	e->devs[d->index] = NULL;
	pthread_mutex_unlock(&e->qlock);
	pinst_free(d->sched);
	vgpu__mem_destroy(d->mem);
	e->be->device_close(d->bdev);
	free(d);
}

/* Unsigned URI parameter; message set on error. */
static vgpu_status uri_uint(const struct vgpu_uri *uri, const char *label, const char *key,
			    unsigned *out)
{
	const char *v = vgpu__uri_get(uri, key);
	char *end;
	unsigned long x;

	if (!v)
		return VGPU_OK;
	errno = 0;
	x = strtoul(v, &end, 10);
	if (errno || !*v || *end || *v == '-' || x > 1000000)
		return vgpu__error(VGPU_ERR_BAD_URI, "%s: bad URI parameter %s=%s: expected a "
				   "count", label, key, v);
	*out = (unsigned)x;
	return VGPU_OK;
}

/* Share of a tenant from "alice=0.25;bob=0.5", or 0. */
static double tenant_share(const char *list, const char *tenant)
{
	size_t tl = strlen(tenant);

	for (const char *p = list; p && *p;) {
		const char *e = strchr(p, ';');
		size_t len = e ? (size_t)(e - p) : strlen(p);

		if (len > tl && !strncmp(p, tenant, tl) && p[tl] == '=')
			return strtod(p + tl + 1, NULL);
		p = e ? e + 1 : NULL;
	}
	return 0;
}

/* The session's scheduling parameters from its URI (message set on error). */
static vgpu_status session_params(struct engine *e, struct session *s, const struct vgpu_uri *uri)
{
	const char *v;
	char *end;
	uint64_t mem = 0;

	s->ps.size = sizeof(s->ps);
	s->ps.tenant = s->tenant;
	s->ps.label = s->label;
	s->ps.share = 1.0;
	s->queue_limit = e->queue_limit;
	if (e->uri_device_params && vgpu__uri_get(uri, "queue_limit")) {
		uint64_t q;

		/* in-process only: a server's clients cannot raise it */
		if (vgpu__uri_get_size(uri, "queue_limit", 0, &q))
			return vgpu__error_prefix(VGPU_ERR_BAD_URI, "%s", s->label);
		s->queue_limit = q && q < SIZE_MAX ? (size_t)q : SIZE_MAX;
	}
	if ((v = vgpu__uri_get(uri, "priority"))) {
		long p;

		errno = 0;
		p = strtol(v, &end, 10);
		if (errno || !*v || *end || p < -1000 || p > 1000)
			return vgpu__error(VGPU_ERR_BAD_URI, "%s: bad URI parameter priority=%s: "
					   "expected an integer in [-1000, 1000]", s->label, v);
		s->ps.priority = (int)p;
	}
	if ((v = vgpu__uri_get(uri, "weight"))) {
		s->ps.weight = strtod(v, &end);
		if (!*v || *end || !(s->ps.weight > 0) || s->ps.weight > 1e6)
			return vgpu__error(VGPU_ERR_BAD_URI, "%s: bad URI parameter weight=%s: "
					   "expected a number > 0", s->label, v);
	}
	v = vgpu__uri_get(uri, "share");
	if (v) {
		s->ps.share = strtod(v, &end);
		if (!*v || *end || !(s->ps.share > 0) || s->ps.share > 1)
			return vgpu__error(VGPU_ERR_BAD_URI, "%s: bad URI parameter share=%s: "
					   "expected a fraction in (0, 1]", s->label, v);
	} else if (e->tenant_shares) {
		double t = tenant_share(e->tenant_shares, s->tenant);

		if (t > 0 && t <= 1)
			s->ps.share = t;
	}
	if (s->ps.share < 1 && !e->sched_conf)
		return vgpu__error(VGPU_ERR_PLUGIN, "%s: share=%g needs a scheduler plugin to "
				   "enforce it (VGPU_PLUGINS=sched-fifo, or vgpud --plugin "
				   "sched-fair)", s->label, s->ps.share);
	if (vgpu__uri_get_size(uri, "mem", 0, &mem))
		return vgpu__error_prefix(VGPU_ERR_BAD_URI, "%s", s->label);
	s->ps.mem_limit = mem;
	if (uri->nparams) {
		s->params = calloc((size_t)uri->nparams, sizeof(*s->params));
		if (!s->params)
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
		memcpy(s->params, uri->params, (size_t)uri->nparams * sizeof(*s->params));
		s->nparams = uri->nparams;
	}
	return VGPU_OK;
}

/* Open device idx for the first time (devlock held). */
static vgpu_status dev_open(struct engine *e, int idx, const struct vgpu_uri *uri,
			    const char *label, struct edev **out)
{
	struct vgpu_device_info info;
	struct edev *d = calloc(1, sizeof(*d));
	struct vgpu_uri *devuri;
	vgpu_status st;
	uint64_t tmo;

	if (!d)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	d->index = idx;
	d->slots = e->slots;
	d->max_sessions = e->max_sessions;
	d->admit_queue = e->admit_queue;
	d->admit_timeout_ms = e->admit_timeout_ms;
	if (e->uri_device_params) {
		unsigned q = 0;
		const char *v;

		if ((st = uri_uint(uri, label, "slots", &d->slots)) ||
		    (st = uri_uint(uri, label, "max_sessions", &d->max_sessions))) {
			free(d);
			return st;
		}
		if ((v = vgpu__uri_get(uri, "admit_queue"))) {
			if ((st = uri_uint(uri, label, "admit_queue", &q))) {
				free(d);
				return st;
			}
			d->admit_queue = q ? (int)q : -1;
		}
		if ((v = vgpu__uri_get(uri, "admit_timeout"))) {
			if (vgpu__parse_time_ns(v, &tmo) || tmo / 1000000 > 86400000ull) {
				free(d);
				return vgpu__error(VGPU_ERR_BAD_URI, "%s: bad URI parameter "
						   "admit_timeout=%s: expected a duration like "
						   "500ms or 2s", label, v);
			}
			d->admit_timeout_ms = (uint32_t)(tmo / 1000000);
		}
		if (!d->slots)
			d->slots = 1;
	}
	/* with memory plugins, mem= is the session's quota, not the device
	 * size (mem.h) */
	devuri = malloc(sizeof(*devuri));
	if (!devuri) {
		free(d);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	if (e->uri_device_params) {
		vgpu__mem_device_uri(e->nmem_plugins, uri, devuri);
	} else {
		/* a server's device: its own settings, never a client's */
		*devuri = *uri;
		devuri->nparams = 0;
		if (e->devparams) {
			devuri->nparams = e->devparams->nparams;
			memcpy(devuri->params, e->devparams->params,
			       sizeof(devuri->params[0]) * (size_t)e->devparams->nparams);
		}
	}
	st = e->be->device_open(idx, devuri, &d->bdev);
	free(devuri);
	if (st == VGPU_OK) {
		memset(&info, 0, sizeof(info));
		st = e->be->device_info(d->bdev, &info);
		if (st == VGPU_OK)
			st = vgpu__mem_create(e->be, d->bdev, idx, e->mem_plugins,
					      e->nmem_plugins, &d->mem);
		if (st != VGPU_OK)
			e->be->device_close(d->bdev);
	}
	if (st == VGPU_OK && e->sched_conf) {
		st = pinst_new(e, e->sched_conf, idx, &d->sched);
		if (st != VGPU_OK) {
			vgpu__mem_destroy(d->mem);
			e->be->device_close(d->bdev);
		}
	}
	if (st != VGPU_OK) {
		free(d);
		return st;
	}
	d->gran = e->be->granularity(d->bdev);
	d->max_threads_per_block = info.max_threads_per_block;
	d->mem_total = info.total_mem;
	d->last_active_ns = vgpu__now_ns();
	pthread_mutex_lock(&e->qlock);
	e->devs[idx] = d;
	if (d->sched) {
		d->snext = e->sdevs;
		e->sdevs = d;
	}
	pthread_mutex_unlock(&e->qlock);
	*out = d;
	return VGPU_OK;
}

/* Admission (devlock held): wait for a place among d's max_sessions and the
 * scheduler's consent, in the bounded queue, until the deadline. */
static vgpu_status admit(struct engine *e, struct edev *d, struct session *s)
{
	uint64_t t0 = vgpu__now_ns(), deadline = t0 + (uint64_t)d->admit_timeout_ms * 1000000ull;
	int waited = 0;
	vgpu_status st = VGPU_OK;
	struct admit_waiter me = { t0, NULL };

	for (;;) {
		int full = d->max_sessions && d->admitted >= d->max_sessions;
		const char *why = "";

		if (!full && d->sched && SOPS_HAS(d->sched->sched, session_open)) {
			pthread_mutex_lock(&e->qlock);
			vgpu__error_clear();
			PLUGIN_CALL(st = d->sched->sched->session_open(d->sched->state, &s->ps));
			pthread_mutex_unlock(&e->qlock);
			if (st == VGPU_ERR_BUSY) {
				full = 1;
				why = " (the scheduler plugin asks to wait)";
			} else if (st) {
				if (vgpu__error_status() == VGPU_OK)
					vgpu__error(st, "plugin %s refused the session",
						    d->sched->conf->plugin->name);
				st = vgpu__error_prefix(vgpu__error_status(), "%s", s->label);
				break;
			}
		}
		if (!full) {
			d->admitted++;
			st = VGPU_OK;
			break;
		}
		if (!waited) {
			if (d->admit_queue < 0 || d->waiting >= (unsigned)d->admit_queue) {
				d->admit_rejected++;
				st = vgpu__error(VGPU_ERR_BUSY, "%s: device %d is full: %u session%s "
						 "admitted (max_sessions=%u)%s and the admission "
						 "queue is full (%u waiting, at most %d)", s->label,
						 d->index, d->admitted, d->admitted == 1 ? "" : "s",
						 d->max_sessions, why, d->waiting,
						 d->admit_queue < 0 ? 0 : d->admit_queue);
				scale_pressure(e, d, st);
				return st;
			}
			waited = 1;
			d->waiting++;
			d->admit_waits++;
			me.next = d->waiters;
			d->waiters = &me;
			scale_pressure(e, d, VGPU_OK);
		}
		{
			struct timespec ts = { (time_t)(deadline / 1000000000ull),
					       (long)(deadline % 1000000000ull) };

			if (pthread_cond_timedwait(&e->admit_cv, &e->devlock, &ts) == ETIMEDOUT &&
			    vgpu__now_ns() >= deadline) {
				d->admit_rejected++;
				st = vgpu__error(VGPU_ERR_BUSY, "%s: device %d is full: not admitted "
						 "within %u ms (%u session%s admitted, "
						 "max_sessions=%u%s%s)", s->label, d->index,
						 d->admit_timeout_ms, d->admitted,
						 d->admitted == 1 ? "" : "s", d->max_sessions,
						 *why ? ";" : "", why);
				scale_pressure(e, d, st);
				break;
			}
		}
	}
	if (waited) {
		uint64_t w = vgpu__now_ns() - t0;

		for (struct admit_waiter **pp = &d->waiters; *pp; pp = &(*pp)->next)
			if (*pp == &me) {
				*pp = me.next;
				break;
			}
		d->waiting--;
		d->admit_wait_ns += w;
		if (w > d->admit_wait_max_ns)
			d->admit_wait_max_ns = w;
		s->admit_wait_ns = w;
	}
	return st;
}

vgpu_status vgpu__session_open(struct engine *e, const struct vgpu_uri *uri, const char *tenant,
			       const char *label, struct session **out)
{
	struct session *s;
	struct edev *d;
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
	s->e = e;
	snprintf(s->tenant, sizeof(s->tenant), "%s", tenant && *tenant ? tenant : "default");
	snprintf(s->label, sizeof(s->label), "%s", label ? label : e->be->name);
	st = session_params(e, s, uri);
	if (st) {
		free(s->params);
		free(s);
		return st;
	}
	pthread_mutex_lock(&e->qlock);
	s->id = ++e->next_session_id;
	pthread_mutex_unlock(&e->qlock);
	s->ps.id = s->id;
	s->ps.device = idx;
	pthread_mutex_lock(&e->devlock);
	d = e->devs[idx];
	if (!d && (st = dev_open(e, idx, uri, s->label, &d))) {
		pthread_mutex_unlock(&e->devlock);
		free(s->params);
		free(s);
		return st;
	}
	d->nsessions++;
	s->dev = d;
	st = vgpu__mem_session_open(d->mem, s->id, s->tenant, s->label, uri, &s->ps, &s->ms);
	if (st == VGPU_OK && d->mem && vgpu__mem_session_limit(s->ms))
		s->ps.mem_limit = vgpu__mem_session_limit(s->ms); /* mem-quota's, if any */
	if (st == VGPU_OK)
		st = admit(e, d, s);
	if (st == VGPU_OK && d->sched) {
		s->sync_st = calloc(1, sizeof(*s->sync_st));
		if (!s->sync_st)
			st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
		else if (e->be->stream_create &&
			 (st = e->be->stream_create(d->bdev, &s->sync_st->bs)))
			st = sync_result(s, st);
		if (st) {
			free(s->sync_st);
			d->admitted--;
			pthread_cond_broadcast(&e->admit_cv);
			if (SOPS_HAS(d->sched->sched, session_close)) {
				pthread_mutex_lock(&e->qlock);
				PLUGIN_CALL(d->sched->sched->session_close(d->sched->state, &s->ps));
				pthread_mutex_unlock(&e->qlock);
			}
		} else {
			s->sync_st->s = s;
		}
	}
	if (st) {
		vgpu__mem_session_close(s->ms);
		dev_release(e, d);
		pthread_mutex_unlock(&e->devlock);
		free(s->params);
		free(s);
		return st;
	}
	pthread_mutex_unlock(&e->devlock);

	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cv, NULL);
	vgpu__idt_init(&s->streams);
	vgpu__idt_init(&s->events);
	vgpu__idt_init(&s->modules);
	vgpu__idt_init(&s->funcs);
	vgpu__am_init(&s->allocs);
	pthread_mutex_lock(&e->qlock);
	for (s->acct = e->tenants; s->acct; s->acct = s->acct->next)
		if (!strcmp(s->acct->name, s->tenant))
			break;
	if (!s->acct && (s->acct = calloc(1, sizeof(*s->acct)))) {
		snprintf(s->acct->name, sizeof(s->acct->name), "%s", s->tenant);
		s->acct->next = e->tenants;
		e->tenants = s->acct;
	}
	if (s->acct)
		s->acct->sessions++;
	s->opened_ns = s->tokens_at = vgpu__now_ns();
	s->tokens = (int64_t)(s->ps.share * (double)e->share_window_ns);
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
		vgpu__mem_free(s->ms, a->base, a->size);
		pthread_mutex_lock(&e->qlock);
		s->dev->mem_used -= a->size;
		s->dev->allocations--;
		pthread_mutex_unlock(&e->qlock);
		free(a);
	}
	pthread_mutex_unlock(&s->lock);
	vgpu__mem_session_close(s->ms);

	pthread_mutex_lock(&e->qlock);
	s->prev->next = s->next;
	s->next->prev = s->prev;
	if (s->dev->sched) {
		struct edev *d = s->dev;

		if (s->throttled)
			for (struct session **pp = &d->throttled; *pp; pp = &(*pp)->thr_next)
				if (*pp == s) {
					*pp = s->thr_next;
					break;
				}
		s->throttled = 0;
		sched_idle(d, s, vgpu__now_ns());
		if (SOPS_HAS(d->sched->sched, session_close))
			PLUGIN_CALL(d->sched->sched->session_close(d->sched->state, &s->ps));
	}
	pthread_mutex_unlock(&e->qlock);
	if (s->sync_st)
		stream_free(s, s->sync_st);

	pthread_mutex_lock(&e->devlock);
	if (--s->dev->admitted == 0)
		s->dev->last_active_ns = vgpu__now_ns();
	pthread_cond_broadcast(&e->admit_cv);
	dev_release(e, s->dev);
	pthread_mutex_unlock(&e->devlock);
	free(s->params);
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
	vgpu__mem_info(s->ms, out); /* as the session sees it (quota, residency) */
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
	st = vgpu__mem_alloc(s->ms, rsize, &a->base);
	if (st) {
		free(a);
		return st;
	}
	a->size = rsize;
	a->asked = size;
	pthread_mutex_lock(&s->lock);
	if (vgpu__am_insert(&s->allocs, a->base, rsize, a) != 0) {
		pthread_mutex_unlock(&s->lock);
		vgpu__mem_free(s->ms, a->base, rsize);
		free(a);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	__atomic_add_fetch(&s->mem_used, rsize, __ATOMIC_RELAXED); /* read by engine_sessions */
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&e->qlock);
	s->dev->mem_used += rsize;
	s->dev->allocations++;
	pthread_mutex_unlock(&e->qlock);
	*out = a->base;
	return VGPU_OK;
}

vgpu_status vgpu__s_mem_advise(struct session *s, vgpu_dptr p, unsigned advice)
{
	struct vgpu_range *r;
	struct alloc *a;
	vgpu_status st;

	pthread_mutex_lock(&s->lock);
	r = vgpu__am_find(&s->allocs, p);
	if (!r || r->base != p) {
		pthread_mutex_unlock(&s->lock);
		return vgpu__error(VGPU_ERR_BAD_ADDRESS, "%s: mem_advise: 0x%llx is not the start "
				   "of an allocation of this handle", s->label,
				   (unsigned long long)p);
	}
	a = r->obj;
	a->refs++; /* a free waits */
	pthread_mutex_unlock(&s->lock);
	st = vgpu__mem_advise(s->ms, p, advice);
	pthread_mutex_lock(&s->lock);
	unref(s, a);
	pthread_mutex_unlock(&s->lock);
	return st;
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
	__atomic_sub_fetch(&s->mem_used, a->size, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&s->lock);
	vgpu__mem_free(s->ms, a->base, a->size);
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

	if (w) {
		w->op = op;
		w->qsize = sizeof(*w) + extra;
	}
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
		mem_queued(s, w);
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

/* Synchronous work on a scheduled device: queue it on the session's
 * internal stream and wait, so the scheduler decides when it runs. */
struct sync_wait {
	struct engine *e;
	int done;
	vgpu_status st;
	char msg[VGPU_ERRMSG_MAX];
};

static void sync_wait_done(void *arg, vgpu_status st, const char *msg)
{
	struct sync_wait *sw = arg;

	pthread_mutex_lock(&sw->e->qlock);
	sw->st = st;
	if (msg)
		snprintf(sw->msg, sizeof(sw->msg), "%s", msg);
	sw->done = 1;
	pthread_cond_broadcast(&sw->e->done_cv);
	pthread_mutex_unlock(&sw->e->qlock);
}

static vgpu_status sync_wait(struct session *s, struct work *w)
{
	struct sync_wait sw;

	sw.e = s->e;
	sw.done = 0;
	sw.st = VGPU_OK;
	sw.msg[0] = '\0';
	w->done.fn = sync_wait_done;
	w->done.arg = &sw;
	uint64_t seq;

	mem_queued(s, w);
	seq = enqueue(s->e, s->sync_st, w);
	/* wait for the item to complete, not only for its completion: the
	 * worker still touches the session after calling it */
	pthread_mutex_lock(&s->e->qlock);
	while (!sw.done || s->sync_st->completed < seq)
		pthread_cond_wait(&s->e->done_cv, &s->e->qlock);
	pthread_mutex_unlock(&s->e->qlock);
	if (sw.st)
		vgpu__error_set_raw(sw.st, sw.msg);
	return sw.st;
}

/*
 * Common path of the four copy kinds: validate ranges, then run at once
 * (stream 0) or queue (on a scheduled device stream 0 queues and waits).
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
	if (sid)
		wait_room(s);
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

	if (!sid && !s->dev->sched) {
		struct vgpu_backend_dev *d = s->dev->bdev;
		struct alloc *ab[2] = { ra, rb };
		struct vgpu_mem_ref mr[2];
		unsigned nmr = mem_refs_of(op, ab, rb ? 2 : 1, mr);
		uint64_t t0 = vgpu__now_ns();

		rc = vgpu__mem_prepare(s->ms, 0, mr, nmr);
		if (rc == VGPU_OK) {
			switch (op) {
			case W_HTOD: rc = be->memcpy_htod(d, NULL, dst, hsrc, n); break;
			case W_DTOH: rc = be->memcpy_dtoh(d, NULL, hdst, src, n); break;
			case W_DTOD: rc = be->memcpy_dtod(d, NULL, dst, src, n); break;
			default: rc = be->memset(d, NULL, dst, value, n); break;
			}
			if (rc == VGPU_OK && be->stream_sync)
				rc = be->stream_sync(d, NULL);
			mem_complete_keep_error(s, mr, nmr, rc);
		}
		account(s, t0);
		pthread_mutex_lock(&s->lock);
		unref(s, ra);
		if (rb)
			unref(s, rb);
		pthread_mutex_unlock(&s->lock);
		return sync_result(s, rc);
	}

	if (!sid)
		st = s->sync_st;
	else if (op == W_HTOD && !done && n <= INLINE_HTOD_MAX)
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
	if (!sid)
		return sync_wait(s, w);
	return enqueue_checked(s, sid, w, names[op]);
}

/* Synchronous copies below this are counted without device time. */
#define ACCOUNT_MIN_BYTES 4096

vgpu_status vgpu__s_mem_direct_begin(struct session *s, vgpu_dptr p, size_t n, int write,
				     struct vgpu__direct *d)
{
	const struct vgpu_backend_ops *be = s->e->be;
	const char *what = write ? "memcpy_htod" : "memcpy_dtoh";
	struct alloc *ra;
	vgpu_status rc;

	memset(d, 0, sizeof(*d));
	if (!be->host_ptr || s->dev->sched || n == 0)
		return VGPU__DIRECT_NONE;
	pthread_mutex_lock(&s->lock);
	rc = range_ref(s, what, p, n, &ra);
	pthread_mutex_unlock(&s->lock);
	if (rc)
		return rc;
	mem_refs_of(write ? W_HTOD : W_DTOH, &ra, 1, &d->mr);
	d->t0 = n >= ACCOUNT_MIN_BYTES ? vgpu__now_ns() : 0;
	rc = vgpu__mem_prepare(s->ms, 0, &d->mr, 1);
	if (rc == VGPU_OK) {
		d->host = be->host_ptr(s->dev->bdev, p, n);
		if (d->host) {
			d->alloc = ra;
			return VGPU_OK;
		}
		vgpu__mem_complete(s->ms, &d->mr, 1);
		rc = VGPU__DIRECT_NONE;
	} else {
		rc = sync_result(s, rc);
	}
	pthread_mutex_lock(&s->lock);
	unref(s, ra);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void vgpu__s_mem_direct_end(struct session *s, struct vgpu__direct *d, vgpu_status rc)
{
	if (!d->alloc)
		return;
	mem_complete_keep_error(s, &d->mr, 1, rc < 0 ? rc : VGPU_OK);
	account(s, d->t0);
	pthread_mutex_lock(&s->lock);
	unref(s, d->alloc);
	pthread_mutex_unlock(&s->lock);
	d->alloc = NULL;
}

vgpu_status vgpu__s_mem_direct(struct session *s, vgpu_dptr p, size_t n, int write,
			       vgpu__direct_fn fn, void *arg)
{
	struct vgpu__direct d;
	vgpu_status rc;

	rc = vgpu__s_mem_direct_begin(s, p, n, write, &d);
	if (rc != VGPU_OK)
		return rc;
	/* fn's failure is the connection's, not the session's: no prefix */
	rc = fn(arg, d.host, n);
	vgpu__s_mem_direct_end(s, &d, rc);
	return rc;
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

/*
 * A session holds at most max_handles live objects of each kind (streams,
 * events, modules, functions): each costs host memory (a stream or an
 * event about 650 bytes in vgpud), so a server bounds what one client can
 * take (vgpud --max-handles). Checked before the object is made; the
 * message says how many are live. (s->lock held.)
 */
static vgpu_status handle_room_locked(struct session *s, const struct vgpu_idtable *t,
				      const char *what)
{
	if (t->count < s->e->max_handles)
		return VGPU_OK;
	return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: too many %s: %u live, at most %u%s", s->label,
			   what, t->count, s->e->max_handles,
			   s->e->uri_device_params ? "" : " per session (the server's --max-handles)");
}

/* The same, taking s->lock: for objects made before they are inserted. */
static vgpu_status handle_room(struct session *s, const struct vgpu_idtable *t, const char *what)
{
	vgpu_status rc;

	pthread_mutex_lock(&s->lock);
	rc = handle_room_locked(s, t, what);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

vgpu_status vgpu__s_stream_create(struct session *s, unsigned flags, uint32_t *sid)
{
	struct stream *st;
	vgpu_status rc;

	if ((rc = handle_room(s, &s->streams, "streams")))
		return rc;
	if (!(st = calloc(1, sizeof(*st))))
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
	/* a notification is no work: a server's stream sync replies from
	 * one, and a query right after must find the stream idle */
	if (st->completed + st->notifies < st->submitted)
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
	wait_room(s);
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
	vgpu_status rc;

	if (!ev)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	pthread_mutex_lock(&s->lock);
	if ((rc = handle_room_locked(s, &s->events, "events"))) {
		pthread_mutex_unlock(&s->lock);
		free(ev);
		return rc;
	}
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
	while (ev->done_seq < ev->record_seq || ev->parked || ev->qrefs)
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
	wait_room(s);
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
	ev->qrefs++;
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
	wait_room(s);
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
	ev->qrefs++;
	pthread_mutex_unlock(&s->e->qlock);
	enqueue(s->e, st, w);
	pthread_mutex_unlock(&s->lock);
	return VGPU_OK;
}

/* ------------------------------------------------------------------------ */
/* Modules and launch                                                       */

vgpu_status vgpu__s_module_load(struct session *s, const void *image, size_t size, uint32_t *mid)
{
	struct module *m;
	vgpu_status rc;

	if ((rc = handle_room(s, &s->modules, "modules")))
		return rc;
	if (!(m = calloc(1, sizeof(*m))))
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
	if ((rc = handle_room_locked(s, &s->funcs, "functions"))) {
		pthread_mutex_unlock(&s->lock);
		free(f);
		return rc;
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
	size_t total = 0, raw = 0;
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
			raw += sz;
			if (raw > VGPU_MAX_ARG_BYTES)
				return vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: launch of '%s': more "
						   "than %d bytes of by-value arguments", s->label,
						   f->name, VGPU_MAX_ARG_BYTES);
			total += ((size_t)sz + 15u) & ~(size_t)15u; /* each copy 16-byte aligned */
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
	*bytes = total;
	*ndptr = nd;
	return VGPU_OK;
}

/* Launch arguments in a work item: the vgpu_arg array, then each by-value
 * argument's bytes at a 16-byte boundary (check_args counts them so). */
#define ARGS_SPACE(n) (((n) * sizeof(vgpu_arg) + 15u) & ~(size_t)15u)

static void copy_args(vgpu_arg *a, unsigned char *b, const vgpu_arg *args, unsigned nargs)
{
	if (nargs)
		memcpy(a, args, nargs * sizeof(vgpu_arg));
	for (unsigned i = 0; i < nargs; i++)
		if (a[i].type == VGPU_ARG_BYTES) {
			memcpy(b, a[i].v.ptr, a[i].size);
			a[i].v.ptr = b;
			b += (a[i].size + 15u) & ~15u;
		}
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
	int queued = sid || s->dev->sched;

	if (nargs && !args)
		return vgpu__error(VGPU_ERR_INVALID, "%s: launch: args is NULL", s->label);
	if (sid)
		wait_room(s);
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
	if (!sid)
		st = s->sync_st;
	if (queued) {
		w = work_new(W_LAUNCH, ARGS_SPACE(nargs) + bytes + nd * sizeof(struct alloc *));
		if (!w) {
			rc = VGPU_ERR_NO_HOST_MEMORY;
			goto out_unlock;
		}
		refs = (struct alloc **)(w->data + ARGS_SPACE(nargs) + bytes);
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

	if (!queued) {
		vgpu_status r2;
		uint64_t t0 = vgpu__now_ns();

		struct vgpu_mem_ref mr[VGPU_MAX_KERNEL_ARGS];
		unsigned nmr = mem_refs_of(W_LAUNCH, refs, nref, mr);

		/* by-value arguments reach kernels 16-byte aligned */
		vgpu_arg acopy[VGPU_MAX_KERNEL_ARGS];
		_Alignas(16) unsigned char vbytes[bytes ? bytes : 1];
		const vgpu_arg *la = args;

		if (bytes) {
			copy_args(acopy, vbytes, args, nargs);
			la = acopy;
		}
		rc = vgpu__mem_prepare(s->ms, 0, mr, nmr);
		if (rc == VGPU_OK) {
			rc = s->e->be->launch(s->dev->bdev, NULL, f->bfn, grid, block, shmem, la,
					      nargs);
			if (rc == VGPU_OK && s->e->be->stream_sync)
				rc = s->e->be->stream_sync(s->dev->bdev, NULL);
			mem_complete_keep_error(s, mr, nmr, rc);
		}
		account(s, t0);
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

		copy_args(a, w->data + ARGS_SPACE(nargs), args, nargs);
		w->u.launch.f = f;
		w->u.launch.grid = grid;
		w->u.launch.block = block;
		w->u.launch.shmem = shmem;
		w->u.launch.args = a;
		w->u.launch.nargs = nargs;
		w->arefs = refs;
		w->nrefs = nref;
	}
	if (!sid)
		return sync_wait(s, w);
	return enqueue_checked(s, sid, w, "launch");

out_unref:
	for (unsigned i = 0; i < nref; i++)
		unref(s, refs[i]);
out_unlock:
	pthread_mutex_unlock(&s->lock);
	free(w);
	if (refs != stack_refs && !queued)
		free(refs);
	return rc;
}
