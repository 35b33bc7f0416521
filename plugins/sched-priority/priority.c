/* SPDX-License-Identifier: MIT */
/*
 * sched-priority - strict priority with aging.
 *
 * A session's priority comes from ?priority=N on its URI (higher is more
 * urgent; default default_priority). The next item goes to the runnable
 * session of highest effective priority: its priority plus one level for
 * every `aging` it has waited since it last ran, so low priority work is
 * never starved forever. Ties go to the session that waited longest.
 * aging=0 disables aging (strict priority; low priority may starve).
 *
 * Comparing prio_a + (now - since_a)/aging with the same for b does not
 * depend on now, so runnable sessions sit in a binary heap keyed by
 * prio - since/aging, which changes only when a session is picked: a
 * decision costs O(log sessions).
 */
#include <stdlib.h>
#include <vgpu/plugin.h>

enum { P_AGING, P_DEFAULT_PRIORITY };

static const struct vgpu_plugin_param prio_params[] = {
	{ "aging", "100ms", "waiting this long raises a session one priority level (0: never)",
	  VGPU_PARAM_TIME, 0, 3.6e12 },
	{ "default_priority", "0", "priority of a session without ?priority=",
	  VGPU_PARAM_INT, -1000, 1000 },
	VGPU_PARAM_END
};

struct node {
	int queued;
	unsigned hidx;
	int prio;
	uint64_t since; /* became runnable or last picked */
	struct vgpu_plugin_session *s;
};

struct prio {
	const struct vgpu_plugin_host *h;
	uint64_t aging;
	int64_t def;
	struct node **heap; /* runnable sessions, best first */
	unsigned n, cap;
};

/* Does a go before b? */
static int better(const struct prio *p, const struct node *a, const struct node *b)
{
	if (p->aging) {
		double ka = a->prio - (double)a->since / (double)p->aging;
		double kb = b->prio - (double)b->since / (double)p->aging;

		if (ka != kb)
			return ka > kb;
	} else if (a->prio != b->prio) {
		return a->prio > b->prio;
	}
	return a->since < b->since;
}

static void heap_set(struct prio *p, unsigned i, struct node *n)
{
	p->heap[i] = n;
	n->hidx = i;
}

static void sift_up(struct prio *p, unsigned i)
{
	struct node *n = p->heap[i];

	while (i > 0 && better(p, n, p->heap[(i - 1) / 2])) {
		heap_set(p, i, p->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(p, i, n);
}

static void sift_down(struct prio *p, unsigned i)
{
	struct node *n = p->heap[i];

	for (;;) {
		unsigned c = 2 * i + 1;

		if (c >= p->n)
			break;
		if (c + 1 < p->n && better(p, p->heap[c + 1], p->heap[c]))
			c++;
		if (!better(p, p->heap[c], n))
			break;
		heap_set(p, i, p->heap[c]);
		i = c;
	}
	heap_set(p, i, n);
}

static vgpu_status prio_init(const struct vgpu_plugin_host *h, const struct vgpu_plugin_config *c,
			     void **state)
{
	struct prio *p = calloc(1, sizeof(*p));

	if (!p)
		return h->fail(h, VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	p->h = h;
	p->aging = c->values[P_AGING].u;
	p->def = c->values[P_DEFAULT_PRIORITY].i;
	*state = p;
	return VGPU_OK;
}

static void prio_fini(void *state)
{
	struct prio *p = state;

	free(p->heap);
	free(p);
}

static vgpu_status prio_open(void *state, struct vgpu_plugin_session *s)
{
	struct prio *p = state;
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return VGPU_ERR_NO_HOST_MEMORY;
	n->s = s;
	n->prio = p->h->session_param(p->h, s, "priority") ? s->priority : (int)p->def;
	s->sched_priv = n;
	return VGPU_OK;
}

static void unlink_node(struct prio *p, struct node *n)
{
	unsigned i = n->hidx;
	struct node *last;

	if (!n->queued)
		return;
	n->queued = 0;
	last = p->heap[--p->n];
	if (i == p->n)
		return;
	heap_set(p, i, last);
	sift_up(p, i);
	sift_down(p, last->hidx);
}

static void prio_close(void *state, struct vgpu_plugin_session *s)
{
	struct node *n = s->sched_priv;

	if (n) {
		unlink_node(state, n);
		free(n);
		s->sched_priv = NULL;
	}
}

static void prio_runnable(void *state, struct vgpu_plugin_session *s, uint64_t now)
{
	struct prio *p = state;
	struct node *n = s->sched_priv;

	if (!n || n->queued)
		return;
	if (p->n == p->cap) {
		unsigned nc = p->cap ? 2 * p->cap : 16;
		struct node **h = realloc(p->heap, nc * sizeof(*h));

		if (!h) {
			p->h->log(p->h, VGPU_PLUGIN_LOG_ERROR, "out of memory: session %llu not "
				  "scheduled", (unsigned long long)s->id);
			return;
		}
		p->heap = h;
		p->cap = nc;
	}
	n->since = now;
	n->queued = 1;
	heap_set(p, p->n++, n);
	sift_up(p, p->n - 1);
}

static void prio_idle(void *state, struct vgpu_plugin_session *s, uint64_t now)
{
	struct node *n = s->sched_priv;

	if (n)
		unlink_node(state, n);
}

static struct vgpu_plugin_session *prio_pick(void *state, uint64_t now, uint64_t *wake)
{
	struct prio *p = state;
	struct node *best;

	if (!p->n)
		return NULL;
	best = p->heap[0];
	best->since = now; /* served: it ages again from now */
	sift_down(p, 0);
	return best->s;
}

static const struct vgpu_sched_ops prio_ops = {
	.size = sizeof(struct vgpu_sched_ops),
	.session_open = prio_open,
	.session_close = prio_close,
	.runnable = prio_runnable,
	.idle = prio_idle,
	.pick = prio_pick,
	.charge = NULL,
};

static const struct vgpu_plugin_desc prio_desc = {
	.abi_version = VGPU_PLUGIN_ABI_VERSION,
	.kind = VGPU_PLUGIN_SCHEDULER,
	.name = "sched-priority",
	.description = "strict priority (?priority=N, higher first) with aging against starvation",
	.version = "1.0",
	.params = prio_params,
	.init = prio_init,
	.fini = prio_fini,
	.ops = &prio_ops,
};

VGPU_PLUGIN_DEFINE(prio_desc)
