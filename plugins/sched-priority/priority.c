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
	struct node *prev, *next;
	int queued;
	int prio;
	uint64_t since; /* became runnable or last picked */
	struct vgpu_plugin_session *s;
};

struct prio {
	const struct vgpu_plugin_host *h;
	uint64_t aging;
	int64_t def;
	struct node head;
};

static vgpu_status prio_init(const struct vgpu_plugin_host *h, const struct vgpu_plugin_config *c,
			     void **state)
{
	struct prio *p = calloc(1, sizeof(*p));

	if (!p)
		return h->fail(h, VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	p->h = h;
	p->aging = c->values[P_AGING].u;
	p->def = c->values[P_DEFAULT_PRIORITY].i;
	p->head.prev = p->head.next = &p->head;
	*state = p;
	return VGPU_OK;
}

static void prio_fini(void *state)
{
	free(state);
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

static void unlink_node(struct node *n)
{
	if (!n->queued)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->queued = 0;
}

static void prio_close(void *state, struct vgpu_plugin_session *s)
{
	struct node *n = s->sched_priv;

	if (n) {
		unlink_node(n);
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
	n->since = now;
	n->prev = p->head.prev;
	n->next = &p->head;
	p->head.prev->next = n;
	p->head.prev = n;
	n->queued = 1;
}

static void prio_idle(void *state, struct vgpu_plugin_session *s, uint64_t now)
{
	struct node *n = s->sched_priv;

	if (n)
		unlink_node(n);
}

static struct vgpu_plugin_session *prio_pick(void *state, uint64_t now, uint64_t *wake)
{
	struct prio *p = state;
	struct node *best = NULL;
	double best_eff = 0;

	for (struct node *n = p->head.next; n != &p->head; n = n->next) {
		double eff = n->prio;

		if (p->aging && now > n->since)
			eff += (double)(now - n->since) / (double)p->aging;
		if (!best || eff > best_eff || (eff == best_eff && n->since < best->since)) {
			best = n;
			best_eff = eff;
		}
	}
	if (!best)
		return NULL;
	best->since = now; /* served: it ages again from now */
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
