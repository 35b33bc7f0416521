/* SPDX-License-Identifier: MIT */
/*
 * mem-swap - oversubscription: allocations may exceed device memory by up
 * to `swap` bytes of host memory. Buffers keep their device addresses; the
 * host moves their bytes (mem_evict / mem_restore). Before a work item runs
 * the host asks this plugin to make the buffers it references resident
 * (prepare); the plugin chooses what to evict, and while work runs it
 * prefetches the buffers of the work queued next.
 *
 * Policy "future" (default): evict the buffer whose next use is farthest.
 *   - A buffer referenced by queued work has a known next use: the queue
 *     position of the first item referencing it (Belady's rule on the
 *     lookahead window the queues give).
 *   - Otherwise its next use is predicted from its last reuse interval
 *     (next = last use + interval; an overdue prediction falls back to
 *     recency), and placed beyond the lookahead window. On a cyclic scan
 *     larger than memory this evicts the most recently used buffer, which
 *     is optimal there, where LRU evicts exactly the buffer needed next.
 *   - A buffer never written holds no bytes: evicting it is free, so it
 *     goes first.
 * Policy "lru" evicts the least recently used buffer (for comparison).
 *
 * Time is counted in work items prepared ("ticks").
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vgpu/plugin.h>

static const struct vgpu_plugin_param params[] = {
	{ "swap", "4G", "host memory that may hold evicted buffers: allocations may exceed "
	  "device memory by this much", VGPU_PARAM_SIZE, 0, 0 },
	{ "policy", "future", "eviction policy: future (next use from queued work and reuse "
	  "intervals) or lru", VGPU_PARAM_STRING, 0, 0 },
	{ "prefetch", "4", "queued work items whose buffers are prefetched while work runs "
	  "(0: off)", VGPU_PARAM_UINT, 0, 1024 },
	{ "lookahead", "65536", "queued work items remembered for next-use decisions",
	  VGPU_PARAM_UINT, 0, 16777216 },
	VGPU_PARAM_END
};
enum { P_SWAP, P_POLICY, P_PREFETCH, P_LOOKAHEAD };

#define NBUCKETS 4096

struct buf {
	vgpu_dptr base;
	uint64_t size;
	struct vgpu_plugin_session *s;
	uint64_t last;      /* tick of the last use; 0: never used */
	uint64_t interval;  /* ticks between its last two uses; 0: unknown */
	uint64_t *fut;      /* queue positions of queued items using it (ascending) */
	uint32_t nfut, capfut;
	uint32_t idx;       /* in sw->bufs */
	struct buf *hnext;
};

struct qitem {
	uint64_t work;
	uint64_t pos;
	uint32_t n;
	struct buf **b;
	struct qitem *hnext;
	struct qitem *prev, *next; /* queue order */
};

struct swap {
	const struct vgpu_plugin_host *h;
	uint64_t swap;
	int lru;
	unsigned prefetch;
	uint64_t lookahead;
	uint64_t tick;
	uint64_t next_pos;
	uint64_t nqueued;
	struct buf *bh[NBUCKETS];
	struct buf **bufs;
	uint32_t nbufs, capbufs;
	struct qitem *qh[NBUCKETS];
	struct qitem *qhead, *qtail;
};

static unsigned hb(vgpu_dptr base)
{
	uint64_t x = base >> 12;

	x ^= x >> 17;
	x *= 0x9e3779b97f4a7c15ull;
	return (unsigned)(x >> 52) & (NBUCKETS - 1);
}

static unsigned hq(uint64_t w)
{
	w ^= w >> 29;
	w *= 0xbf58476d1ce4e5b9ull;
	return (unsigned)(w >> 52) & (NBUCKETS - 1);
}

static struct buf *buf_find(struct swap *sw, vgpu_dptr base)
{
	struct buf *b;

	for (b = sw->bh[hb(base)]; b; b = b->hnext)
		if (b->base == base)
			return b;
	return NULL;
}

static const char *fmt_bytes(char *buf, size_t len, uint64_t n)
{
	static const char *u[] = { "bytes", "KiB", "MiB", "GiB", "TiB" };
	unsigned i = 0;
	double v = (double)n;

	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%" PRIu64 " bytes", n);
	else if (v == (double)(uint64_t)v)
		snprintf(buf, len, "%" PRIu64 " %s", (uint64_t)v, u[i]);
	else
		snprintf(buf, len, "%.1f %s", v, u[i]);
	return buf;
}

/* ------------------------------------------------------------------------ */

static vgpu_status sw_init(const struct vgpu_plugin_host *h, const struct vgpu_plugin_config *cfg,
			   void **state)
{
	struct swap *sw;
	const char *pol = cfg->values[P_POLICY].s;

	if (h->size < offsetof(struct vgpu_plugin_host, mem_state) + sizeof(h->mem_state) ||
	    !h->mem_state)
		return h->fail(h, VGPU_ERR_PLUGIN, "mem-swap: this libvgpu is too old (no mem_state)");
	if (pol && *pol && strcmp(pol, "future") && strcmp(pol, "lru"))
		return h->fail(h, VGPU_ERR_PLUGIN, "mem-swap: policy '%s': expected future or lru",
			       pol);
	sw = calloc(1, sizeof(*sw));
	if (!sw)
		return h->fail(h, VGPU_ERR_NO_HOST_MEMORY, "mem-swap: no host memory");
	sw->h = h;
	sw->swap = cfg->values[P_SWAP].u;
	sw->lru = pol && !strcmp(pol, "lru");
	sw->prefetch = (unsigned)cfg->values[P_PREFETCH].u;
	sw->lookahead = cfg->values[P_LOOKAHEAD].u;
	sw->next_pos = 1;
	*state = sw;
	return VGPU_OK;
}

static void qitem_free(struct swap *sw, struct qitem *q);

static void sw_fini(void *state)
{
	struct swap *sw = state;

	while (sw->qhead)
		qitem_free(sw, sw->qhead);
	for (uint32_t i = 0; i < sw->nbufs; i++) {
		free(sw->bufs[i]->fut);
		free(sw->bufs[i]);
	}
	free(sw->bufs);
	free(sw);
}

static int dev_stats(struct swap *sw, struct vgpu_plugin_device_stats *ds)
{
	memset(ds, 0, sizeof(*ds));
	ds->size = sizeof(*ds);
	return sw->h->device_stats(sw->h, sw->h->device, ds) == VGPU_OK ? 0 : -1;
}

static uint64_t sw_capacity(void *state)
{
	struct swap *sw = state;
	struct vgpu_plugin_device_stats ds;

	if (dev_stats(sw, &ds) != 0)
		return 0;
	return ds.mem_total + sw->swap;
}

static vgpu_status sw_alloc(void *state, struct vgpu_plugin_session *s, uint64_t size)
{
	struct swap *sw = state;
	struct vgpu_plugin_device_stats ds;
	uint64_t cap;
	char a[32], b[32], c[32], d[32];

	if (dev_stats(sw, &ds) != 0)
		return VGPU_OK;
	cap = ds.mem_total + sw->swap;
	if (size > cap || ds.mem_used > cap - size)
		return sw->h->fail(sw->h, VGPU_ERR_OUT_OF_MEMORY,
				   "%s: out of device memory with swap: %s device + %s swap "
				   "(mem-swap:swap=), %s in use, %s asked", s->label,
				   fmt_bytes(a, sizeof(a), ds.mem_total),
				   fmt_bytes(b, sizeof(b), sw->swap),
				   fmt_bytes(c, sizeof(c), ds.mem_used), fmt_bytes(d, sizeof(d), size));
	return VGPU_OK;
}

static void sw_allocated(void *state, struct vgpu_plugin_session *s, vgpu_dptr base,
			 uint64_t size)
{
	struct swap *sw = state;
	struct buf *b;
	unsigned k = hb(base);

	if (sw->nbufs == sw->capbufs) {
		uint32_t ncap = sw->capbufs ? sw->capbufs * 2 : 256;
		struct buf **nb = realloc(sw->bufs, ncap * sizeof(*nb));

		if (!nb)
			return; /* untracked: never evicted by choice (host restores) */
		sw->bufs = nb;
		sw->capbufs = ncap;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return;
	b->base = base;
	b->size = size;
	b->s = s;
	b->idx = sw->nbufs;
	sw->bufs[sw->nbufs++] = b;
	b->hnext = sw->bh[k];
	sw->bh[k] = b;
}

static void sw_freed(void *state, struct vgpu_plugin_session *s, vgpu_dptr base, uint64_t size)
{
	struct swap *sw = state;
	struct buf **pp, *b;

	(void)s;
	(void)size;
	for (pp = &sw->bh[hb(base)]; (b = *pp); pp = &b->hnext)
		if (b->base == base)
			break;
	if (!b)
		return;
	*pp = b->hnext;
	/* queued items no longer name it (the engine waits for work before a
	 * free, so none should) */
	for (struct qitem *q = sw->qhead; q && b->nfut; q = q->next)
		for (uint32_t i = 0; i < q->n; i++)
			if (q->b[i] == b)
				q->b[i] = NULL;
	sw->bufs[b->idx] = sw->bufs[--sw->nbufs];
	sw->bufs[b->idx]->idx = b->idx;
	free(b->fut);
	free(b);
}

/* ------------------------------------------------------------------------ */
/* Lookahead                                                                */

static void fut_remove(struct buf *b, uint64_t pos)
{
	for (uint32_t i = 0; i < b->nfut; i++)
		if (b->fut[i] == pos) {
			memmove(&b->fut[i], &b->fut[i + 1], (b->nfut - i - 1) * sizeof(*b->fut));
			b->nfut--;
			return;
		}
}

static void qitem_free(struct swap *sw, struct qitem *q)
{
	struct qitem **pp;

	for (pp = &sw->qh[hq(q->work)]; *pp; pp = &(*pp)->hnext)
		if (*pp == q) {
			*pp = q->hnext;
			break;
		}
	if (q->prev)
		q->prev->next = q->next;
	else
		sw->qhead = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else
		sw->qtail = q->prev;
	for (uint32_t i = 0; i < q->n; i++)
		if (q->b[i])
			fut_remove(q->b[i], q->pos);
	sw->nqueued--;
	free(q);
}

static void sw_queued(void *state, struct vgpu_plugin_session *s, uint64_t work,
		      const struct vgpu_mem_ref *refs, uint32_t nrefs)
{
	struct swap *sw = state;
	struct qitem *q;
	unsigned k = hq(work);

	(void)s;
	if (sw->lru || sw->nqueued >= sw->lookahead)
		return;
	q = calloc(1, sizeof(*q) + nrefs * sizeof(struct buf *));
	if (!q)
		return;
	q->work = work;
	q->pos = sw->next_pos++;
	q->b = (struct buf **)(q + 1);
	for (uint32_t i = 0; i < nrefs; i++) {
		struct buf *b = buf_find(sw, refs[i].base);

		if (!b)
			continue;
		if (b->nfut && b->fut[b->nfut - 1] == q->pos)
			continue; /* the same buffer twice in one item */
		if (b->nfut == b->capfut) {
			uint32_t ncap = b->capfut ? b->capfut * 2 : 4;
			uint64_t *nf = realloc(b->fut, ncap * sizeof(*nf));

			if (!nf)
				continue;
			b->fut = nf;
			b->capfut = ncap;
		}
		b->fut[b->nfut++] = q->pos;
		q->b[q->n++] = b;
	}
	q->hnext = sw->qh[k];
	sw->qh[k] = q;
	q->prev = sw->qtail;
	if (sw->qtail)
		sw->qtail->next = q;
	else
		sw->qhead = q;
	sw->qtail = q;
	sw->nqueued++;
}

static void sw_dequeued(void *state, struct vgpu_plugin_session *s, uint64_t work)
{
	struct swap *sw = state;
	struct qitem *q;

	(void)s;
	for (q = sw->qh[hq(work)]; q; q = q->hnext)
		if (q->work == work) {
			qitem_free(sw, q);
			return;
		}
}

/* ------------------------------------------------------------------------ */
/* Choosing                                                                 */

/* How far away b's next use is, in ticks (larger: evict first). */
static uint64_t distance(struct swap *sw, const struct buf *b, uint32_t st)
{
	uint64_t now = sw->tick, head, pred;

	if (!(st & VGPU_MEM_STATE_TOUCHED))
		return UINT64_MAX; /* no bytes: free to drop */
	if (sw->lru)
		return now - b->last + 1;
	if (b->nfut) {
		head = sw->qhead ? sw->qhead->pos : b->fut[0];
		return b->fut[0] >= head ? b->fut[0] - head + 1 : 1;
	}
	/* not in the lookahead window: beyond it */
	if (b->interval && b->last + b->interval > now)
		pred = b->last + b->interval - now;
	else
		pred = now - b->last + (b->interval ? b->interval : 1);
	return sw->nqueued + 1 + pred;
}

/* The resident buffer to evict (none of skip[]), or NULL. */
static struct buf *victim(struct swap *sw, const struct vgpu_mem_ref *skip, uint32_t nskip,
			  uint64_t *dist)
{
	struct buf *best = NULL;
	uint64_t bd = 0;

	for (uint32_t i = 0; i < sw->nbufs; i++) {
		struct buf *b = sw->bufs[i];
		uint32_t st = sw->h->mem_state(sw->h, b->s, b->base);
		uint64_t d;
		int skipped = 0;

		if (!(st & VGPU_MEM_STATE_RESIDENT) ||
		    (st & (VGPU_MEM_STATE_IN_USE | VGPU_MEM_STATE_PINNED)))
			continue;
		for (uint32_t j = 0; j < nskip && !skipped; j++)
			skipped = skip[j].base == b->base;
		if (skipped)
			continue;
		d = distance(sw, b, st);
		if (!best || d > bd || (d == bd && b->size > best->size)) {
			best = b;
			bd = d;
		}
	}
	if (dist)
		*dist = bd;
	return best;
}

static uint64_t room(struct swap *sw, struct vgpu_plugin_device_stats *ds)
{
	if (dev_stats(sw, ds) != 0)
		return 0;
	return ds->mem_total > ds->mem_resident ? ds->mem_total - ds->mem_resident : 0;
}

static vgpu_status sw_prepare(void *state, struct vgpu_plugin_session *s,
			      const struct vgpu_mem_ref *refs, uint32_t nrefs)
{
	struct swap *sw = state;
	struct vgpu_plugin_device_stats ds;
	uint64_t all = 0;
	char a[32], b[32], c[32];

	sw->tick++;
	for (uint32_t i = 0; i < nrefs; i++) {
		struct buf *bf = buf_find(sw, refs[i].base);

		/* pinned ones are already counted in mem_pinned */
		if (!(sw->h->mem_state(sw->h, s, refs[i].base) & VGPU_MEM_STATE_PINNED))
			all += refs[i].size;
		if (bf && bf->last != sw->tick) {
			bf->interval = bf->last ? sw->tick - bf->last : 0;
			bf->last = sw->tick;
		}
	}
	dev_stats(sw, &ds);
	if (all > ds.mem_total - (ds.mem_pinned < ds.mem_total ? ds.mem_pinned : ds.mem_total))
		return sw->h->fail(sw->h, VGPU_ERR_OUT_OF_MEMORY,
				   "%s: this work references %s of buffers that must be resident "
				   "at once; the device has %s (%s pinned)", s->label,
				   fmt_bytes(a, sizeof(a), all), fmt_bytes(b, sizeof(b), ds.mem_total),
				   fmt_bytes(c, sizeof(c), ds.mem_pinned));
	for (uint32_t i = 0; i < nrefs; i++) {
		uint32_t st;
		vgpu_status rc;

		if (refs[i].resident)
			continue;
		for (;;) {
			st = sw->h->mem_state(sw->h, s, refs[i].base);
			if (st & VGPU_MEM_STATE_RESIDENT)
				break;
			if (room(sw, &ds) >= refs[i].size) {
				rc = sw->h->mem_restore(sw->h, s, refs[i].base);
				if (rc == VGPU_OK)
					break;
				if (rc != VGPU_ERR_OUT_OF_MEMORY)
					return rc;
			}
			struct buf *v = victim(sw, refs, nrefs, NULL);

			if (!v)
				/* the room is held by running work or pins */
				return ds.mem_in_use ? VGPU_ERR_BUSY :
					sw->h->fail(sw->h, VGPU_ERR_OUT_OF_MEMORY,
						    "%s: no room for %s: %s device, %s pinned",
						    s->label, fmt_bytes(a, sizeof(a), refs[i].size),
						    fmt_bytes(b, sizeof(b), ds.mem_total),
						    fmt_bytes(c, sizeof(c), ds.mem_pinned));
			rc = sw->h->mem_evict(sw->h, v->s, v->base);
			if (rc != VGPU_OK)
				return rc;
		}
	}
	return VGPU_OK;
}

/* Prefetch: one move towards the buffers of the next queued items. */
static vgpu_status sw_prefetch(void *state)
{
	struct swap *sw = state;
	struct vgpu_plugin_device_stats ds;
	unsigned items = 0;

	if (!sw->prefetch || sw->lru)
		return VGPU_ERR_NOT_FOUND;
	for (struct qitem *q = sw->qhead; q && items < sw->prefetch; q = q->next, items++) {
		for (uint32_t i = 0; i < q->n; i++) {
			struct buf *b = q->b[i], *v;
			uint32_t st;
			uint64_t vd, bd;

			if (!b)
				continue;
			st = sw->h->mem_state(sw->h, b->s, b->base);
			if (!(st & VGPU_MEM_STATE_EXISTS) || (st & VGPU_MEM_STATE_RESIDENT))
				continue;
			if (room(sw, &ds) >= b->size)
				return sw->h->mem_restore(sw->h, b->s, b->base) == VGPU_OK ?
					VGPU_OK : VGPU_ERR_NOT_FOUND;
			/* evict only what is needed later than b */
			bd = distance(sw, b, st | VGPU_MEM_STATE_TOUCHED);
			v = victim(sw, NULL, 0, &vd);
			if (!v || vd <= bd)
				return VGPU_ERR_NOT_FOUND;
			return sw->h->mem_evict(sw->h, v->s, v->base) == VGPU_OK ?
				VGPU_OK : VGPU_ERR_NOT_FOUND;
		}
	}
	return VGPU_ERR_NOT_FOUND;
}

static const struct vgpu_mem_ops ops = {
	.size = sizeof(struct vgpu_mem_ops),
	.alloc = sw_alloc,
	.allocated = sw_allocated,
	.freed = sw_freed,
	.prepare = sw_prepare,
	.flags = VGPU_MEM_OPS_OVERSUBSCRIBE,
	.queued = sw_queued,
	.dequeued = sw_dequeued,
	.prefetch = sw_prefetch,
	.capacity = sw_capacity,
};

static const struct vgpu_plugin_desc desc = {
	VGPU_PLUGIN_ABI_VERSION, VGPU_PLUGIN_MEMORY, "mem-swap",
	"oversubscription: evict cold buffers to host memory, restore before use, prefetch",
	"1.0", params, sw_init, sw_fini, &ops,
};

VGPU_PLUGIN_DEFINE(desc)
