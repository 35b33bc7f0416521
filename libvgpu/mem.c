/* SPDX-License-Identifier: MIT */
/*
 * mem.c - the host side of memory plugins: placement, residency, pinning
 * and statistics of one device's allocations (see mem.h).
 *
 * Every allocation of the device has a record here (when memory plugins
 * run): resident or not, its host copy while evicted, how many running work
 * items use it, whether it is pinned. The plugins decide; this file does
 * what they ask through the host API (mem_evict, mem_restore) and enforces
 * the invariants they cannot break:
 *   - an allocation in use by running work, or pinned, is never evicted;
 *   - an evicted allocation keeps its device address and every byte
 *     (copied to host memory; one never written has none and reads back
 *     as zeros);
 *   - work runs only when every allocation it references is resident.
 * One mutex per device (m->lock) covers the records, the statistics and
 * every call into the plugins (the plugin ABI promises serialised calls).
 */
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "addrmap.h"
#include "error.h"
#include "mem.h"

struct mrec {
	vgpu_dptr base;
	uint64_t size;
	struct vgpu__mem_session *ms;
	int resident;
	int touched;       /* work referenced it: it has contents */
	int pinned;
	unsigned in_use;   /* running items referencing it */
	void *host;        /* contents while evicted (touched only) */
};

struct minst {
	struct vgpu__mem *m;
	const struct vgpu_plugin_desc *desc;
	const struct vgpu_mem_ops *ops;
	void *state;
	int inited;
	struct vgpu_plugin_host host;
};

/* Is hook f present in ops (a plugin built against an older, shorter
 * table has not got it)? */
#define HAS(in, f) ((in)->ops->size >= offsetof(struct vgpu_mem_ops, f) + \
		    sizeof((in)->ops->f) && (in)->ops->f)

struct vgpu__mem_session {
	struct vgpu_plugin_session ps;
	struct vgpu__mem *m;
	struct vgpu_uri uri;
	char tenant[64];
	char label[256];
	uint64_t opened_ns;
	uint64_t used, resident, swapped_in, swapped_out, evictions;
	struct vgpu__mem_session *next;
};

struct vgpu__mem {
	const struct vgpu_backend_ops *be;
	struct vgpu_backend_dev *bdev;
	int device;
	pthread_mutex_t lock;
	pthread_cond_t cv;          /* in-use bytes dropped / memory freed */
	struct minst *inst;
	unsigned ninst;
	int oversub;
	int lookahead;              /* some plugin has queued() */
	struct vgpu_addrmap recs;
	struct vgpu__mem_session *sessions;
	unsigned nsessions;
	uint64_t total, capacity;
	uint64_t used, resident, pinned, in_use;
	uint64_t swapped_in, swapped_out, evictions;
	/* prefetch thread */
	int pf_started, pf_stop, pf_kick;
	pthread_t pf_thread;
	pthread_cond_t pf_cv;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct mrec *rec_of(struct vgpu__mem *m, vgpu_dptr base)
{
	struct vgpu_range *r = vgpu__am_find_base(&m->recs, base);

	return r ? r->obj : NULL;
}

/* ------------------------------------------------------------------------ */
/* Moving bytes (m->lock held)                                              */

static vgpu_status do_evict(struct vgpu__mem *m, struct mrec *r)
{
	void *host;
	vgpu_status st;

	if (!r->resident)
		return VGPU_OK;
	if (r->in_use || r->pinned) {
		char b[32];

		return vgpu__error(VGPU_ERR_BUSY, "%s: the %s allocation at 0x%llx is %s; it "
				   "cannot be evicted", r->ms->label,
				   vgpu__fmt_bytes(b, sizeof(b), r->size),
				   (unsigned long long)r->base,
				   r->pinned ? "pinned" : "in use by running work");
	}
	host = malloc(r->size ? r->size : 1);
	if (!host)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: no host memory to evict %llu "
				   "bytes", r->ms->label, (unsigned long long)r->size);
	st = m->be->mem_evict(m->bdev, r->base, r->size, host);
	if (st) {
		free(host);
		return st;
	}
	if (r->touched) {
		r->host = host;
		r->ms->swapped_out += r->size;
		m->swapped_out += r->size;
	} else {
		free(host); /* zeros: nothing to keep */
	}
	r->resident = 0;
	r->ms->resident -= r->size;
	m->resident -= r->size;
	r->ms->evictions++;
	m->evictions++;
	return VGPU_OK;
}

static vgpu_status do_restore(struct vgpu__mem *m, struct mrec *r)
{
	vgpu_status st;
	void *zero = NULL;

	if (r->resident)
		return VGPU_OK;
	if (!r->host && !(zero = calloc(1, r->size ? r->size : 1)))
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: no host memory", r->ms->label);
	st = m->be->mem_restore(m->bdev, r->base, r->size, r->host ? r->host : zero);
	free(zero);
	if (st)
		return st;
	if (r->host) {
		free(r->host);
		r->host = NULL;
		r->ms->swapped_in += r->size;
		m->swapped_in += r->size;
	}
	r->resident = 1;
	r->ms->resident += r->size;
	m->resident += r->size;
	return VGPU_OK;
}

/* ------------------------------------------------------------------------ */
/* The host API handed to memory plugins                                    */

static struct minst *inst_of(const struct vgpu_plugin_host *h)
{
	return h->host_priv;
}

static void h_log(const struct vgpu_plugin_host *h, int level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (level < VGPU_PLUGIN_LOG_ERROR)
		level = VGPU_PLUGIN_LOG_ERROR;
	if (level > VGPU_PLUGIN_LOG_DEBUG)
		level = VGPU_PLUGIN_LOG_DEBUG;
	if (!vgpu__log_enabled((enum vgpu_log_level)level))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	vgpu__log((enum vgpu_log_level)level, "%s: %s", inst_of(h)->desc->name, buf);
}

static vgpu_status h_fail(const struct vgpu_plugin_host *h, vgpu_status st, const char *fmt, ...)
{
	char buf[VGPU_ERRMSG_MAX];
	va_list ap;

	(void)h;
	if (st >= 0)
		st = VGPU_ERR_PLUGIN;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return vgpu__error(st, "%s", buf);
}

static uint64_t h_now(const struct vgpu_plugin_host *h)
{
	(void)h;
	return now_ns();
}

static const char *h_session_param(const struct vgpu_plugin_host *h,
				   const struct vgpu_plugin_session *s, const char *key)
{
	const struct vgpu__mem_session *ms = (const struct vgpu__mem_session *)s;

	(void)h;
	if (!s || !key)
		return NULL;
	if (!strcmp(key, "tenant"))
		return ms->tenant;
	return vgpu__uri_get(&ms->uri, key);
}

static vgpu_status h_session_stats(const struct vgpu_plugin_host *h,
				   const struct vgpu_plugin_session *s,
				   struct vgpu_plugin_session_stats *out)
{
	const struct vgpu__mem_session *ms = (const struct vgpu__mem_session *)s;
	struct vgpu_plugin_session_stats st;
	size_t n = out->size < sizeof(st) ? out->size : sizeof(st);

	(void)h;
	memset(&st, 0, sizeof(st));
	st.size = n;
	st.mem_used = ms->used;
	st.mem_on_host = ms->used - ms->resident;
	st.opened_ns = ms->opened_ns;
	memcpy(out, &st, n);
	return VGPU_OK;
}

static void fill_dev_stats(struct vgpu__mem *m, struct vgpu_plugin_device_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->size = sizeof(*st);
	st->sessions = m->nsessions;
	st->mem_total = m->total;
	st->mem_used = m->used;
	st->mem_on_host = m->used - m->resident;
	st->mem_resident = m->resident;
	st->mem_pinned = m->pinned;
	st->mem_in_use = m->in_use;
	st->mem_capacity = m->capacity;
}

static vgpu_status h_device_stats(const struct vgpu_plugin_host *h, int device,
				  struct vgpu_plugin_device_stats *out)
{
	struct vgpu_plugin_device_stats st;
	size_t n = out->size < sizeof(st) ? out->size : sizeof(st);

	if (device != inst_of(h)->m->device)
		return vgpu__error(VGPU_ERR_NO_DEVICE, "device_stats: a memory plugin sees only "
				   "its own device (%d)", inst_of(h)->m->device);
	fill_dev_stats(inst_of(h)->m, &st);
	st.size = n;
	memcpy(out, &st, n);
	return VGPU_OK;
}

/* Plugins call these from inside their ops: m->lock is held. */
static struct mrec *plugin_rec(const struct vgpu_plugin_host *h,
			       const struct vgpu_plugin_session *s, vgpu_dptr base)
{
	struct mrec *r = rec_of(inst_of(h)->m, base);

	if (!r || (s && &r->ms->ps != s)) {
		vgpu__error(VGPU_ERR_BAD_ADDRESS, "%s: 0x%llx is not an allocation of session %llu",
			    inst_of(h)->desc->name, (unsigned long long)base,
			    (unsigned long long)(s ? s->id : 0));
		return NULL;
	}
	return r;
}

static vgpu_status h_mem_evict(const struct vgpu_plugin_host *h,
			       const struct vgpu_plugin_session *s, vgpu_dptr base)
{
	struct mrec *r = plugin_rec(h, s, base);

	return r ? do_evict(inst_of(h)->m, r) : VGPU_ERR_BAD_ADDRESS;
}

static vgpu_status h_mem_restore(const struct vgpu_plugin_host *h,
				 const struct vgpu_plugin_session *s, vgpu_dptr base)
{
	struct mrec *r = plugin_rec(h, s, base);

	return r ? do_restore(inst_of(h)->m, r) : VGPU_ERR_BAD_ADDRESS;
}

static uint32_t h_mem_state(const struct vgpu_plugin_host *h,
			    const struct vgpu_plugin_session *s, vgpu_dptr base)
{
	struct mrec *r = rec_of(inst_of(h)->m, base);
	uint32_t f;

	if (!r || (s && &r->ms->ps != s))
		return 0;
	f = VGPU_MEM_STATE_EXISTS;
	if (r->resident)
		f |= VGPU_MEM_STATE_RESIDENT;
	if (r->in_use)
		f |= VGPU_MEM_STATE_IN_USE;
	if (r->pinned)
		f |= VGPU_MEM_STATE_PINNED;
	if (r->touched)
		f |= VGPU_MEM_STATE_TOUCHED;
	return f;
}

static void h_kick(const struct vgpu_plugin_host *h)
{
	(void)h;
}

/* ------------------------------------------------------------------------ */
/* Prefetch thread                                                          */

static void pf_kick(struct vgpu__mem *m)
{
	if (m->pf_started) {
		m->pf_kick = 1;
		pthread_cond_signal(&m->pf_cv);
	}
}

static void *pf_main(void *arg)
{
	struct vgpu__mem *m = arg;

	pthread_mutex_lock(&m->lock);
	while (!m->pf_stop) {
		while (!m->pf_stop && !m->pf_kick)
			pthread_cond_wait(&m->pf_cv, &m->lock);
		m->pf_kick = 0;
		for (unsigned i = 0; i < m->ninst && !m->pf_stop; i++) {
			struct minst *in = &m->inst[i];

			if (!HAS(in, prefetch))
				continue;
			/* one move at a time; let the workers in between */
			for (int k = 0; k < 256 && !m->pf_stop; k++) {
				if (in->ops->prefetch(in->state) != VGPU_OK)
					break;
				pthread_mutex_unlock(&m->lock);
				pthread_mutex_lock(&m->lock);
			}
		}
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Device                                                                   */

void vgpu__mem_device_uri(unsigned nplugins, const struct vgpu_uri *in, struct vgpu_uri *out)
{
	*out = *in;
	if (!nplugins)
		return;
	out->nparams = 0;
	for (int i = 0; i < in->nparams; i++)
		if (strcmp(in->params[i].key, "mem") != 0)
			out->params[out->nparams++] = in->params[i];
}

vgpu_status vgpu__mem_create(const struct vgpu_backend_ops *be, struct vgpu_backend_dev *bdev,
			     int device, const struct vgpu__mem_plugin *plugins, unsigned n,
			     struct vgpu__mem **out)
{
	struct vgpu__mem *m = calloc(1, sizeof(*m));
	struct vgpu_device_info info;
	vgpu_status st;
	int want_pf = 0;

	*out = NULL;
	if (!m)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	m->be = be;
	m->bdev = bdev;
	m->device = device;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cv, NULL);
	pthread_cond_init(&m->pf_cv, NULL);
	vgpu__am_init(&m->recs);
	memset(&info, 0, sizeof(info));
	if ((st = be->device_info(bdev, &info)) != VGPU_OK) {
		vgpu__mem_destroy(m);
		return st;
	}
	m->total = m->capacity = info.total_mem;
	if (n && !(m->inst = calloc(n, sizeof(*m->inst)))) {
		vgpu__mem_destroy(m);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	for (unsigned i = 0; i < n; i++) {
		struct minst *in = &m->inst[m->ninst];
		const struct vgpu_plugin_desc *d = plugins[i].desc;

		in->m = m;
		in->desc = d;
		in->ops = d->ops;
		if (!in->ops || in->ops->size < offsetof(struct vgpu_mem_ops, complete) +
		    sizeof(in->ops->complete)) {
			vgpu__mem_destroy(m);
			return vgpu__error(VGPU_ERR_PLUGIN, "plugin %s: memory ops table too short",
					   d->name);
		}
		in->host.size = sizeof(in->host);
		in->host.abi_version = VGPU_PLUGIN_ABI_VERSION;
		in->host.device = device;
		in->host.host_priv = in;
		in->host.log = h_log;
		in->host.fail = h_fail;
		in->host.now_ns = h_now;
		in->host.session_param = h_session_param;
		in->host.session_stats = h_session_stats;
		in->host.device_stats = h_device_stats;
		in->host.mem_evict = h_mem_evict;
		in->host.mem_restore = h_mem_restore;
		in->host.kick = h_kick;
		in->host.mem_state = h_mem_state;
		m->ninst++;
		if (d->init && (st = d->init(&in->host, plugins[i].cfg, &in->state)) != VGPU_OK) {
			m->ninst--;
			vgpu__mem_destroy(m);
			return vgpu__error_prefix(st, "plugin %s", d->name);
		}
		in->inited = 1;
		if (HAS(in, flags) && (in->ops->flags & VGPU_MEM_OPS_OVERSUBSCRIBE)) {
			if (!be->mem_evict || !be->mem_restore || !be->mem_reserve ||
			    !be->mem_release) {
				vgpu__mem_destroy(m);
				return vgpu__error(VGPU_ERR_UNSUPPORTED, "plugin %s: the %s backend "
						   "cannot evict device memory", d->name, be->name);
			}
			m->oversub = 1;
		}
		if (HAS(in, queued))
			m->lookahead = 1;
		if (HAS(in, prefetch))
			want_pf = 1;
		if (HAS(in, capacity)) {
			uint64_t c = in->ops->capacity(in->state);

			if (c > m->capacity)
				m->capacity = c;
		}
	}
	if (want_pf) {
		if (pthread_create(&m->pf_thread, NULL, pf_main, m) == 0)
			m->pf_started = 1;
		else
			vgpu_warn("cpu:%d: no prefetch thread", device);
	}
	*out = m;
	return VGPU_OK;
}

void vgpu__mem_destroy(struct vgpu__mem *m)
{
	if (!m)
		return;
	if (m->pf_started) {
		pthread_mutex_lock(&m->lock);
		m->pf_stop = 1;
		pthread_cond_signal(&m->pf_cv);
		pthread_mutex_unlock(&m->lock);
		pthread_join(m->pf_thread, NULL);
	}
	for (unsigned i = 0; i < m->ninst; i++)
		if (m->inst[i].inited && m->inst[i].desc->fini)
			m->inst[i].desc->fini(m->inst[i].state);
	free(m->inst);
	vgpu__am_fini(&m->recs);
	pthread_cond_destroy(&m->pf_cv);
	pthread_cond_destroy(&m->cv);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void vgpu__mem_stats(struct vgpu__mem *m, struct vgpu__mem_stats *out)
{
	pthread_mutex_lock(&m->lock);
	out->total = m->total;
	out->capacity = m->capacity;
	out->used = m->used;
	out->resident = m->ninst ? m->resident : m->used;
	out->on_host = m->ninst ? m->used - m->resident : 0;
	out->pinned = m->pinned;
	out->swapped_in = m->swapped_in;
	out->swapped_out = m->swapped_out;
	out->evictions = m->evictions;
	pthread_mutex_unlock(&m->lock);
}

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */

uint64_t vgpu__mem_session_limit(const struct vgpu__mem_session *ms)
{
	return ms ? ms->ps.mem_limit : 0;
}

uint64_t vgpu__mem_session_on_host(struct vgpu__mem_session *ms)
{
	uint64_t n;

	if (!ms || !ms->m->ninst)
		return 0;
	pthread_mutex_lock(&ms->m->lock);
	n = ms->used - ms->resident;
	pthread_mutex_unlock(&ms->m->lock);
	return n;
}

vgpu_status vgpu__mem_session_open(struct vgpu__mem *m, uint64_t id, const char *tenant,
				   const char *label, const struct vgpu_uri *uri,
				   const struct vgpu_plugin_session *base,
				   struct vgpu__mem_session **out)
{
	struct vgpu__mem_session *ms;
	vgpu_status st = VGPU_OK;
	unsigned i;

	*out = NULL;
	ms = calloc(1, sizeof(*ms));
	if (!ms)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	ms->m = m;
	ms->uri = *uri;
	snprintf(ms->tenant, sizeof(ms->tenant), "%s", tenant && *tenant ? tenant : "default");
	snprintf(ms->label, sizeof(ms->label), "%s", label ? label : "vgpu");
	ms->opened_ns = now_ns();
	ms->ps.size = sizeof(ms->ps);
	ms->ps.id = id;
	ms->ps.tenant = ms->tenant;
	ms->ps.label = ms->label;
	ms->ps.device = m->device;
	ms->ps.share = 1.0;
	if (base) {
		ms->ps.priority = base->priority;
		ms->ps.share = base->share;
		ms->ps.weight = base->weight;
	}
	if (m->ninst && vgpu__uri_get(uri, "mem")) {
		st = vgpu__uri_get_size(uri, "mem", 0, &ms->ps.mem_limit);
		if (st) {
			vgpu__error_prefix(st, "%s", ms->label);
			free(ms);
			return st;
		}
	}
	pthread_mutex_lock(&m->lock);
	for (i = 0; i < m->ninst; i++) {
		struct minst *in = &m->inst[i];

		if (in->ops->session_open && (st = in->ops->session_open(in->state, &ms->ps)))
			break;
	}
	if (st) {
		while (i-- > 0)
			if (m->inst[i].ops->session_close)
				m->inst[i].ops->session_close(m->inst[i].state, &ms->ps);
		pthread_mutex_unlock(&m->lock);
		free(ms);
		return st;
	}
	ms->next = m->sessions;
	m->sessions = ms;
	m->nsessions++;
	pthread_mutex_unlock(&m->lock);
	*out = ms;
	return VGPU_OK;
}

void vgpu__mem_session_close(struct vgpu__mem_session *ms)
{
	struct vgpu__mem *m;

	if (!ms)
		return;
	m = ms->m;
	pthread_mutex_lock(&m->lock);
	for (unsigned i = m->ninst; i-- > 0;)
		if (m->inst[i].ops->session_close)
			m->inst[i].ops->session_close(m->inst[i].state, &ms->ps);
	for (struct vgpu__mem_session **pp = &m->sessions; *pp; pp = &(*pp)->next)
		if (*pp == ms) {
			*pp = ms->next;
			break;
		}
	m->nsessions--;
	pthread_mutex_unlock(&m->lock);
	free(ms);
}

/* ------------------------------------------------------------------------ */
/* Allocation                                                               */

vgpu_status vgpu__mem_alloc(struct vgpu__mem_session *ms, size_t size, vgpu_dptr *out)
{
	struct vgpu__mem *m = ms->m;
	struct mrec *r;
	vgpu_status st = VGPU_OK;
	int resident = 1;

	if (!m->ninst)
		return m->be->mem_alloc(m->bdev, size, out);
	r = calloc(1, sizeof(*r));
	if (!r)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < m->ninst && st == VGPU_OK; i++) {
		struct minst *in = &m->inst[i];

		if (in->ops->alloc)
			st = in->ops->alloc(in->state, &ms->ps, size);
	}
	if (st == VGPU_OK) {
		st = m->be->mem_alloc(m->bdev, size, out);
		if (st == VGPU_ERR_OUT_OF_MEMORY && m->oversub) {
			/* the device is full: place it evicted, back it on first use */
			st = m->be->mem_reserve(m->bdev, size, out);
			resident = 0;
		}
	}
	if (st == VGPU_OK && vgpu__am_insert(&m->recs, *out, size, r) != 0) {
		if (resident)
			m->be->mem_free(m->bdev, *out, size);
		else
			m->be->mem_release(m->bdev, *out, size);
		st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	if (st) {
		pthread_mutex_unlock(&m->lock);
		free(r);
		if (!strstr(vgpu__error_msg(), ms->label))
			vgpu__error_prefix(st, "%s", ms->label);
		return st;
	}
	r->base = *out;
	r->size = size;
	r->ms = ms;
	r->resident = resident;
	ms->used += size;
	m->used += size;
	if (resident) {
		ms->resident += size;
		m->resident += size;
	}
	for (unsigned i = 0; i < m->ninst; i++)
		if (m->inst[i].ops->allocated)
			m->inst[i].ops->allocated(m->inst[i].state, &ms->ps, *out, size);
	pthread_mutex_unlock(&m->lock);
	return VGPU_OK;
}

void vgpu__mem_free(struct vgpu__mem_session *ms, vgpu_dptr base, size_t size)
{
	struct vgpu__mem *m = ms->m;
	struct mrec *r;

	if (!m->ninst) {
		m->be->mem_free(m->bdev, base, size);
		return;
	}
	pthread_mutex_lock(&m->lock);
	r = vgpu__am_remove(&m->recs, base);
	if (!r) { /* cannot happen: the engine frees what it allocated */
		pthread_mutex_unlock(&m->lock);
		vgpu_err("%s: mem: free of unknown allocation 0x%llx", ms->label,
			 (unsigned long long)base);
		return;
	}
	for (unsigned i = 0; i < m->ninst; i++)
		if (m->inst[i].ops->freed)
			m->inst[i].ops->freed(m->inst[i].state, &ms->ps, base, r->size);
	if (r->resident) {
		m->be->mem_free(m->bdev, base, r->size);
		ms->resident -= r->size;
		m->resident -= r->size;
	} else {
		m->be->mem_release(m->bdev, base, r->size);
	}
	if (r->pinned)
		m->pinned -= r->size;
	if (r->in_use) /* cannot happen: the engine waits for work first */
		m->in_use -= r->size;
	ms->used -= r->size;
	m->used -= r->size;
	free(r->host);
	free(r);
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->lock);
}

/* ------------------------------------------------------------------------ */
/* Residency around work                                                    */

/* Merge duplicate refs (same base) into out; fill resident. */
static unsigned dedupe(struct vgpu__mem *m, const struct vgpu_mem_ref *in, unsigned n,
		       struct vgpu_mem_ref *out, struct mrec **recs)
{
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++) {
		unsigned j;
		struct mrec *r;

		for (j = 0; j < k; j++)
			if (out[j].base == in[i].base)
				break;
		if (j < k) {
			out[j].flags |= in[i].flags;
			continue;
		}
		r = rec_of(m, in[i].base);
		if (!r)
			continue; /* not ours (cannot happen) */
		out[k] = in[i];
		out[k].size = r->size;
		recs[k] = r;
		k++;
	}
	return k;
}

/* Make refs resident (m->lock held), waiting while running work holds the
 * room needed. */
static vgpu_status make_resident(struct vgpu__mem_session *ms, struct vgpu_mem_ref *refs,
				 struct mrec **recs, unsigned k)
{
	struct vgpu__mem *m = ms->m;
	vgpu_status st;

	for (;;) {
		uint64_t need = 0;
		int by_plugin;

		for (unsigned i = 0; i < k; i++) {
			refs[i].resident = (uint32_t)recs[i]->resident;
			need += recs[i]->size;
		}
		/* the plugins see every use (recency), not only misses */
		st = VGPU_OK;
		for (unsigned i = 0; i < m->ninst && st == VGPU_OK; i++) {
			struct minst *in = &m->inst[i];

			if (in->ops->prepare)
				st = in->ops->prepare(in->state, &ms->ps, refs, k);
		}
		by_plugin = st != VGPU_OK;
		/* what the plugins left (or no plugin restores): restore here */
		for (unsigned i = 0; i < k && st == VGPU_OK; i++)
			if (!recs[i]->resident)
				st = do_restore(m, recs[i]);
		if (st == VGPU_OK)
			return VGPU_OK;
		/* BUSY: the room is held by running work; a plugin's
		 * OUT_OF_MEMORY is final, the backend's may pass with it */
		if ((st == VGPU_ERR_BUSY || (st == VGPU_ERR_OUT_OF_MEMORY && !by_plugin)) &&
		    m->in_use) {
			/* room is held by running work: wait for some to end */
			pthread_cond_wait(&m->cv, &m->lock);
			continue;
		}
		if (st == VGPU_ERR_BUSY) {
			char a[32], b[32], c[32];

			st = vgpu__error(VGPU_ERR_OUT_OF_MEMORY, "%s: the %u buffer%s of this work "
					 "(%s) do not fit in device memory at once (%s device, "
					 "%s pinned)", ms->label, k, k == 1 ? "" : "s",
					 vgpu__fmt_bytes(a, sizeof(a), need),
					 vgpu__fmt_bytes(b, sizeof(b), m->total),
					 vgpu__fmt_bytes(c, sizeof(c), m->pinned));
		}
		if (!strstr(vgpu__error_msg(), ms->label))
			vgpu__error_prefix(st, "%s", ms->label);
		return st;
	}
}

#define REFS_STACK 16

vgpu_status vgpu__mem_prepare(struct vgpu__mem_session *ms, uint64_t work,
			      const struct vgpu_mem_ref *in, unsigned n)
{
	struct vgpu__mem *m = ms->m;
	struct vgpu_mem_ref sref[REFS_STACK], *refs = sref;
	struct mrec *srec[REFS_STACK], **recs = srec;
	vgpu_status st;
	unsigned k;

	if (!m->ninst || !n)
		return VGPU_OK;
	if (n > REFS_STACK) {
		refs = malloc(n * sizeof(*refs));
		recs = malloc(n * sizeof(*recs));
		if (!refs || !recs) {
			free(refs != sref ? refs : NULL);
			free(recs != srec ? recs : NULL);
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
		}
	}
	pthread_mutex_lock(&m->lock);
	if (work && m->lookahead) /* no longer queued: running now */
		for (unsigned i = 0; i < m->ninst; i++)
			if (HAS(&m->inst[i], dequeued))
				m->inst[i].ops->dequeued(m->inst[i].state, &ms->ps, work);
	k = dedupe(m, in, n, refs, recs);
	st = make_resident(ms, refs, recs, k);
	if (st == VGPU_OK)
		for (unsigned i = 0; i < k; i++) {
			if (recs[i]->in_use++ == 0)
				m->in_use += recs[i]->size;
			recs[i]->touched = 1;
		}
	pthread_mutex_unlock(&m->lock);
	if (refs != sref) {
		free(refs);
		free(recs);
	}
	return st;
}

void vgpu__mem_complete(struct vgpu__mem_session *ms, const struct vgpu_mem_ref *in, unsigned n)
{
	struct vgpu__mem *m = ms->m;
	struct vgpu_mem_ref sref[REFS_STACK], *refs = sref;
	struct mrec *srec[REFS_STACK], **recs = srec;
	unsigned k;

	if (!m->ninst || !n)
		return;
	if (n > REFS_STACK) {
		refs = malloc(n * sizeof(*refs));
		recs = malloc(n * sizeof(*recs));
	}
	pthread_mutex_lock(&m->lock);
	if (!refs || !recs) {
		/* no memory to dedupe: release per ref, duplicates counted once */
		for (unsigned i = 0; i < n; i++) {
			struct mrec *r = rec_of(m, in[i].base);
			int dup = 0;

			for (unsigned j = 0; j < i && !dup; j++)
				dup = in[j].base == in[i].base;
			if (r && !dup && r->in_use && --r->in_use == 0)
				m->in_use -= r->size;
		}
	} else {
		k = dedupe(m, in, n, refs, recs);
		for (unsigned i = 0; i < k; i++) {
			refs[i].resident = 1;
			if (recs[i]->in_use && --recs[i]->in_use == 0)
				m->in_use -= recs[i]->size;
		}
		for (unsigned i = 0; i < m->ninst; i++)
			if (m->inst[i].ops->complete)
				m->inst[i].ops->complete(m->inst[i].state, &ms->ps, refs, k);
	}
	pthread_cond_broadcast(&m->cv);
	pf_kick(m);
	pthread_mutex_unlock(&m->lock);
	if (refs != sref) {
		free(refs);
		free(recs);
	}
}

int vgpu__mem_wants_queue(const struct vgpu__mem_session *ms)
{
	return ms->m->lookahead;
}

void vgpu__mem_queued(struct vgpu__mem_session *ms, uint64_t work,
		      const struct vgpu_mem_ref *refs, unsigned n)
{
	struct vgpu__mem *m = ms->m;

	if (!m->lookahead || !n)
		return;
	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < m->ninst; i++)
		if (HAS(&m->inst[i], queued))
			m->inst[i].ops->queued(m->inst[i].state, &ms->ps, work, refs, n);
	pf_kick(m);
	pthread_mutex_unlock(&m->lock);
}

void vgpu__mem_dequeued(struct vgpu__mem_session *ms, uint64_t work)
{
	struct vgpu__mem *m = ms->m;

	if (!m->lookahead)
		return;
	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < m->ninst; i++)
		if (HAS(&m->inst[i], dequeued))
			m->inst[i].ops->dequeued(m->inst[i].state, &ms->ps, work);
	pthread_mutex_unlock(&m->lock);
}

vgpu_status vgpu__mem_advise(struct vgpu__mem_session *ms, vgpu_dptr base, unsigned advice)
{
	struct vgpu__mem *m = ms->m;
	struct vgpu_mem_ref ref;
	struct mrec *r;
	vgpu_status st = VGPU_OK;

	if (advice != VGPU_ADVISE_PIN && advice != VGPU_ADVISE_UNPIN)
		return vgpu__error(VGPU_ERR_INVALID, "%s: mem_advise: unknown advice %u",
				   ms->label, advice);
	if (!m->ninst)
		return VGPU_OK; /* everything is resident, always */
	pthread_mutex_lock(&m->lock);
	r = rec_of(m, base);
	if (!r || r->ms != ms) {
		pthread_mutex_unlock(&m->lock);
		return vgpu__error(VGPU_ERR_BAD_ADDRESS, "%s: mem_advise: 0x%llx is not the start "
				   "of an allocation of this handle", ms->label,
				   (unsigned long long)base);
	}
	if (advice == VGPU_ADVISE_UNPIN) {
		if (r->pinned) {
			r->pinned = 0;
			m->pinned -= r->size;
			pthread_cond_broadcast(&m->cv);
		}
	} else if (!r->pinned) {
		memset(&ref, 0, sizeof(ref));
		ref.base = base;
		ref.size = r->size;
		ref.flags = VGPU_MEM_READ | VGPU_MEM_WRITE;
		st = make_resident(ms, &ref, &r, 1);
		if (st == VGPU_OK) {
			r->pinned = 1;
			r->touched = 1; /* kernels may write it through stored pointers */
			m->pinned += r->size;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return st;
}

void vgpu__mem_info(struct vgpu__mem_session *ms, struct vgpu_device_info *out)
{
	struct vgpu__mem *m = ms->m;
	uint64_t total, avail;

	if (!m->ninst)
		return;
	pthread_mutex_lock(&m->lock);
	total = m->capacity;
	avail = m->capacity > m->used ? m->capacity - m->used : 0;
	for (unsigned i = 0; i < m->ninst; i++) {
		struct minst *in = &m->inst[i];
		uint64_t t = UINT64_MAX, a = UINT64_MAX;

		if (!HAS(in, limits))
			continue;
		in->ops->limits(in->state, &ms->ps, &t, &a);
		if (t < total)
			total = t;
		if (a < avail)
			avail = a;
	}
	out->total_mem = total;
	out->free_mem = avail < total ? avail : total;
	if (m->oversub)
		out->flags |= VGPU_DEVICE_SWAP;
	out->mem_resident = ms->resident;
	out->mem_on_host = ms->used - ms->resident;
	out->swapped_in = ms->swapped_in;
	out->swapped_out = ms->swapped_out;
	out->evictions = ms->evictions;
	out->dev_mem_resident = m->resident;
	out->dev_mem_on_host = m->used - m->resident;
	out->dev_swapped_in = m->swapped_in;
	out->dev_swapped_out = m->swapped_out;
	out->dev_evictions = m->evictions;
	pthread_mutex_unlock(&m->lock);
}
