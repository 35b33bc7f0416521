/* SPDX-License-Identifier: MIT */
/*
 * sched-fair - weighted fair share of measured device time between tenants.
 *
 * Each tenant has a weight (weights=alice=3;bob=1, else the first session's
 * ?weight=, else default_weight) and a virtual time: the device time its
 * sessions used divided by its weight. The next item goes to the runnable
 * tenant with the smallest virtual time (its sessions take turns), so busy
 * tenants receive device time in the ratio of their weights. A tenant that
 * becomes runnable again starts at the current virtual clock: idle time is
 * not banked as credit. Runnable tenants sit in a binary heap ordered by
 * virtual time: a decision costs O(log tenants).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vgpu/plugin.h>

enum { P_WEIGHTS, P_DEFAULT_WEIGHT };

static const struct vgpu_plugin_param fair_params[] = {
	{ "weights", "", "tenant weights: TENANT=W;TENANT=W (e.g. alice=3;bob=1)",
	  VGPU_PARAM_LIST, 0, 0 },
	{ "default_weight", "1", "weight of a tenant not in weights (and without ?weight=)",
	  VGPU_PARAM_DOUBLE, 0.001, 1e6 },
	VGPU_PARAM_END
};

struct node {
	struct node *prev, *next; /* tenant's runnable sessions */
	int queued;
	struct tenant *t;
	struct vgpu_plugin_session *s;
};

struct tenant {
	struct tenant *next;      /* all tenants */
	char name[64];
	double weight;
	double vtime;             /* ns of device time / weight */
	unsigned nsessions, nrunnable;
	unsigned hidx;            /* position in the heap while nrunnable > 0 */
	struct node head;
};

struct hent {
	double vtime;             /* the tenant's, while it is in the heap */
	struct tenant *t;
};

struct fair {
	const struct vgpu_plugin_host *h;
	const struct vgpu_plugin_config *cfg;
	struct tenant *tenants;
	double vclock;            /* virtual time of the last tenant picked */
	struct hent *heap;        /* runnable tenants, min vtime first */
	unsigned nheap, cap;
};

/* ---- min-heap of runnable tenants by vtime ----
 * An entry carries its tenant's vtime, so that a sift compares entries of
 * one array instead of following a pointer per comparison: with hundreds
 * of tenants those were cache misses, and cost more than the rest of a
 * decision. */
static void heap_set(struct fair *f, unsigned i, struct hent e)
{
	f->heap[i] = e;
	e.t->hidx = i;
}

static void sift_up(struct fair *f, unsigned i)
{
	struct hent e = f->heap[i];

	while (i > 0 && f->heap[(i - 1) / 2].vtime > e.vtime) {
		heap_set(f, i, f->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(f, i, e);
}

static void sift_down(struct fair *f, unsigned i)
{
	struct hent e = f->heap[i];

	for (;;) {
		unsigned c = 2 * i + 1;

		if (c >= f->nheap)
			break;
		if (c + 1 < f->nheap && f->heap[c + 1].vtime < f->heap[c].vtime)
			c++;
		if (f->heap[c].vtime >= e.vtime)
			break;
		heap_set(f, i, f->heap[c]);
		i = c;
	}
	heap_set(f, i, e);
}

static int heap_push(struct fair *f, struct tenant *t)
{
	if (f->nheap == f->cap) {
		unsigned nc = f->cap ? 2 * f->cap : 16;
		struct hent *h = realloc(f->heap, nc * sizeof(*h));

		if (!h)
			return -1;
		f->heap = h;
		f->cap = nc;
	}
	heap_set(f, f->nheap++, (struct hent){ t->vtime, t });
	sift_up(f, f->nheap - 1);
	return 0;
}

static void heap_remove(struct fair *f, struct tenant *t)
{
	unsigned i = t->hidx;
	struct hent last = f->heap[--f->nheap];

	if (i == f->nheap)
		return;
	heap_set(f, i, last);
	sift_up(f, i);
	sift_down(f, last.t->hidx);
}

static int conf_weight(const struct vgpu_plugin_config *c, const char *tenant, double *w)
{
	size_t tl = strlen(tenant);

	for (uint32_t i = 0; i < c->values[P_WEIGHTS].list.n; i++) {
		const char *it = c->values[P_WEIGHTS].list.items[i];

		if (!strncmp(it, tenant, tl) && it[tl] == '=') {
			*w = strtod(it + tl + 1, NULL);
			return 1;
		}
	}
	return 0;
}

static vgpu_status fair_init(const struct vgpu_plugin_host *h, const struct vgpu_plugin_config *c,
			     void **state)
{
	struct fair *f;

	for (uint32_t i = 0; i < c->values[P_WEIGHTS].list.n; i++) {
		const char *it = c->values[P_WEIGHTS].list.items[i];
		const char *eq = strchr(it, '=');
		char *end;
		double w;

		if (!eq || eq == it || (size_t)(eq - it) >= sizeof(((struct tenant *)0)->name))
			return h->fail(h, VGPU_ERR_PLUGIN, "parameter 'weights': '%s' is not "
				       "TENANT=WEIGHT", it);
		w = strtod(eq + 1, &end);
		if (!eq[1] || *end || !(w >= 0.001) || w > 1e6)
			return h->fail(h, VGPU_ERR_PLUGIN, "parameter 'weights': weight of '%.*s' "
				       "is '%s', expected a number in [0.001, 1e6]",
				       (int)(eq - it), it, eq + 1);
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return h->fail(h, VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	f->h = h;
	f->cfg = c;
	*state = f;
	return VGPU_OK;
}

static void fair_fini(void *state)
{
	struct fair *f = state;

	while (f->tenants) {
		struct tenant *t = f->tenants;

		f->tenants = t->next;
		free(t);
	}
	free(f->heap);
	free(f);
}

static vgpu_status fair_open(void *state, struct vgpu_plugin_session *s)
{
	struct fair *f = state;
	struct tenant *t;
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return VGPU_ERR_NO_HOST_MEMORY;
	for (t = f->tenants; t && strcmp(t->name, s->tenant); t = t->next)
		;
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t) {
			free(n);
			return VGPU_ERR_NO_HOST_MEMORY;
		}
		snprintf(t->name, sizeof(t->name), "%s", s->tenant);
		if (!conf_weight(f->cfg, t->name, &t->weight))
			t->weight = s->weight > 0 ? s->weight : f->cfg->values[P_DEFAULT_WEIGHT].d;
		t->vtime = f->vclock;
		t->head.prev = t->head.next = &t->head;
		t->next = f->tenants;
		f->tenants = t;
		f->h->log(f->h, VGPU_PLUGIN_LOG_DEBUG, "tenant %s: weight %g", t->name, t->weight);
	}
	t->nsessions++;
	n->t = t;
	n->s = s;
	s->sched_priv = n;
	return VGPU_OK;
}

static void unlink_node(struct fair *f, struct node *n)
{
	if (!n->queued)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->queued = 0;
	if (--n->t->nrunnable == 0)
		heap_remove(f, n->t);
}

static int append(struct fair *f, struct node *n)
{
	struct tenant *t = n->t;

	if (t->nrunnable == 0 && heap_push(f, t))
		return -1;
	n->prev = t->head.prev;
	n->next = &t->head;
	t->head.prev->next = n;
	t->head.prev = n;
	n->queued = 1;
	t->nrunnable++;
	return 0;
}

static void fair_close(void *state, struct vgpu_plugin_session *s)
{
	struct fair *f = state;
	struct node *n = s->sched_priv;

	if (!n)
		return;
	unlink_node(f, n);
	if (--n->t->nsessions == 0) {
		/* forget the tenant */
		for (struct tenant **pp = &f->tenants; *pp; pp = &(*pp)->next)
			if (*pp == n->t) {
				*pp = n->t->next;
				free(n->t);
				break;
			}
	}
	free(n);
	s->sched_priv = NULL;
}

static void fair_runnable(void *state, struct vgpu_plugin_session *s, uint64_t now)
{
	struct fair *f = state;
	struct node *n = s->sched_priv;

	if (!n || n->queued)
		return;
	if (n->t->nrunnable == 0 && n->t->vtime < f->vclock)
		n->t->vtime = f->vclock; /* no credit for idle time */
	if (append(f, n))
		f->h->log(f->h, VGPU_PLUGIN_LOG_ERROR, "out of memory: session %llu not scheduled",
			  (unsigned long long)s->id);
}

static void fair_idle(void *state, struct vgpu_plugin_session *s, uint64_t now)
{
	struct node *n = s->sched_priv;

	if (n)
		unlink_node(state, n);
}

static struct vgpu_plugin_session *fair_pick(void *state, uint64_t now, uint64_t *wake)
{
	struct fair *f = state;
	struct tenant *best;
	struct node *n;

	if (!f->nheap)
		return NULL;
	best = f->heap[0].t;
	f->vclock = best->vtime;
	n = best->head.next;
	/* sessions of a tenant take turns (the tenant stays runnable) */
	if (n->next != &best->head) {
		n->prev->next = n->next;
		n->next->prev = n->prev;
		n->prev = best->head.prev;
		n->next = &best->head;
		best->head.prev->next = n;
		best->head.prev = n;
	}
	return n->s;
}

static void fair_charge(void *state, struct vgpu_plugin_session *s, uint64_t ns, uint64_t now)
{
	struct fair *f = state;
	struct node *n = s->sched_priv;

	if (!n)
		return;
	n->t->vtime += (double)ns / n->t->weight;
	if (n->t->nrunnable) {
		f->heap[n->t->hidx].vtime = n->t->vtime;
		sift_down(f, n->t->hidx);
	}
}

static const struct vgpu_sched_ops fair_ops = {
	.size = sizeof(struct vgpu_sched_ops),
	.session_open = fair_open,
	.session_close = fair_close,
	.runnable = fair_runnable,
	.idle = fair_idle,
	.pick = fair_pick,
	.charge = fair_charge,
};

static const struct vgpu_plugin_desc fair_desc = {
	.abi_version = VGPU_PLUGIN_ABI_VERSION,
	.kind = VGPU_PLUGIN_SCHEDULER,
	.name = "sched-fair",
	.description = "weighted fair share of measured device time between tenants",
	.version = "1.0",
	.params = fair_params,
	.init = fair_init,
	.fini = fair_fini,
	.ops = &fair_ops,
};

VGPU_PLUGIN_DEFINE(fair_desc)
