/* SPDX-License-Identifier: MIT */
/*
 * sched-lottery - an example scheduler plugin for libvgpu, built outside
 * the libvgpu tree with nothing but `pkg-config --cflags --libs vgpu-plugin`.
 *
 * Lottery scheduling: every runnable session holds tickets (`tickets`, times
 * its ?weight= when given); each time the device has a free slot, a ticket
 * is drawn and its session's next work item runs. Over time each session
 * gets device time in proportion to its tickets.
 *
 * Select it with VGPU_PLUGINS=sched-lottery (in-process handles) or
 * `vgpud --plugin sched-lottery:tickets=10,seed=42`, with the directory of
 * sched-lottery.so in VGPU_PLUGIN_PATH (or installed in the plugin
 * directory: pkg-config --variable=plugindir vgpu-plugin).
 */
#include <stdlib.h>
#include <vgpu/plugin.h>

/* The parameter table: documentation, parser and validation in one. The
 * host refuses unknown names and malformed or out-of-range values. */
enum { P_TICKETS, P_SEED };
static const struct vgpu_plugin_param params[] = {
	{ "tickets", "100", "tickets of a session (multiplied by its ?weight=)",
	  VGPU_PARAM_UINT, 1, 1000000 },
	{ "seed", "1", "seed of the draw (same seed, same draws)", VGPU_PARAM_UINT, 0, 0 },
	VGPU_PARAM_END
};

struct entry {
	struct entry *prev, *next;
	int runnable;
	uint64_t tickets;
	struct vgpu_plugin_session *s;
};

struct lottery {
	const struct vgpu_plugin_host *host;
	uint64_t tickets, rng, total;
	struct entry head; /* runnable sessions */
};

static vgpu_status lt_init(const struct vgpu_plugin_host *h, const struct vgpu_plugin_config *cfg,
			   void **state)
{
	struct lottery *l = calloc(1, sizeof(*l));

	if (!l)
		return h->fail(h, VGPU_ERR_NO_HOST_MEMORY, "out of memory");
	l->host = h;
	l->tickets = cfg->values[P_TICKETS].u;
	l->rng = cfg->values[P_SEED].u * 2654435761u + 1;
	l->head.prev = l->head.next = &l->head;
	h->log(h, VGPU_PLUGIN_LOG_INFO, "%llu tickets per session",
	       (unsigned long long)l->tickets);
	*state = l;
	return VGPU_OK;
}

static void lt_fini(void *state)
{
	free(state);
}

static vgpu_status lt_open(void *state, struct vgpu_plugin_session *s)
{
	struct lottery *l = state;
	struct entry *e = calloc(1, sizeof(*e));

	if (!e)
		return VGPU_ERR_NO_HOST_MEMORY;
	e->s = s;
	e->tickets = s->weight > 0 ? (uint64_t)(s->weight * (double)l->tickets) : l->tickets;
	if (!e->tickets)
		e->tickets = 1;
	s->sched_priv = e;
	return VGPU_OK;
}

static void lt_idle(void *state, struct vgpu_plugin_session *s, uint64_t now)
{
	struct lottery *l = state;
	struct entry *e = s->sched_priv;

	(void)now;
	if (!e || !e->runnable)
		return;
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->runnable = 0;
	l->total -= e->tickets;
}

static void lt_close(void *state, struct vgpu_plugin_session *s)
{
	lt_idle(state, s, 0);
	free(s->sched_priv);
	s->sched_priv = NULL;
}

static void lt_runnable(void *state, struct vgpu_plugin_session *s, uint64_t now)
{
	struct lottery *l = state;
	struct entry *e = s->sched_priv;

	(void)now;
	if (!e || e->runnable)
		return;
	e->prev = l->head.prev;
	e->next = &l->head;
	l->head.prev->next = e;
	l->head.prev = e;
	e->runnable = 1;
	l->total += e->tickets;
}

static struct vgpu_plugin_session *lt_pick(void *state, uint64_t now, uint64_t *wake)
{
	struct lottery *l = state;
	uint64_t draw;

	(void)now;
	(void)wake; /* could ask to be called again at a given time */
	if (!l->total)
		return NULL;
	/* xorshift64 */
	l->rng ^= l->rng << 13;
	l->rng ^= l->rng >> 7;
	l->rng ^= l->rng << 17;
	draw = l->rng % l->total;
	for (struct entry *e = l->head.next; e != &l->head; e = e->next) {
		if (draw < e->tickets)
			return e->s;
		draw -= e->tickets;
	}
	return NULL; /* not reached */
}

/* Every ops table starts with its size: fields added by later versions of
 * the ABI are then known to be absent from this plugin. */
static const struct vgpu_sched_ops ops = {
	.size = sizeof(struct vgpu_sched_ops),
	.session_open = lt_open,
	.session_close = lt_close,
	.runnable = lt_runnable,
	.idle = lt_idle,
	.pick = lt_pick,
	.charge = NULL, /* lottery needs no accounting */
};

static const struct vgpu_plugin_desc desc = {
	.abi_version = VGPU_PLUGIN_ABI_VERSION, /* first, always */
	.kind = VGPU_PLUGIN_SCHEDULER,
	.name = "sched-lottery",
	.description = "lottery scheduling: device time in proportion to tickets",
	.version = "1.0",
	.params = params,
	.init = lt_init,
	.fini = lt_fini,
	.ops = &ops,
};

/* The one exported symbol: vgpu_plugin_entry(). */
VGPU_PLUGIN_DEFINE(desc)
