/* SPDX-License-Identifier: MIT */
/*
 * sched-fifo - first come, first served between sessions.
 *
 * Sessions are served in the order they became runnable, one work item per
 * turn: a session that still has work after its turn goes to the back of
 * the line. This is the engine's built-in behaviour made explicit, and with
 * it share= caps and admission apply (they need a scheduler plugin).
 */
#include <stdlib.h>
#include <vgpu/plugin.h>

struct node {
	struct node *prev, *next;
	int queued;
	struct vgpu_plugin_session *s;
};

struct fifo {
	struct node head; /* circular list of runnable sessions */
};

static vgpu_status fifo_init(const struct vgpu_plugin_host *h, const struct vgpu_plugin_config *c,
			     void **state)
{
	struct fifo *f = calloc(1, sizeof(*f));

	if (!f)
		return h->fail(h, VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	f->head.prev = f->head.next = &f->head;
	*state = f;
	return VGPU_OK;
}

static void fifo_fini(void *state)
{
	free(state);
}

static vgpu_status fifo_open(void *state, struct vgpu_plugin_session *s)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return VGPU_ERR_NO_HOST_MEMORY;
	n->s = s;
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

static void append(struct fifo *f, struct node *n)
{
	n->prev = f->head.prev;
	n->next = &f->head;
	f->head.prev->next = n;
	f->head.prev = n;
	n->queued = 1;
}

static void fifo_close(void *state, struct vgpu_plugin_session *s)
{
	struct node *n = s->sched_priv;

	if (n) {
		unlink_node(n);
		free(n);
		s->sched_priv = NULL;
	}
}

static void fifo_runnable(void *state, struct vgpu_plugin_session *s, uint64_t now)
{
	struct node *n = s->sched_priv;

	if (n && !n->queued)
		append(state, n);
}

static void fifo_idle(void *state, struct vgpu_plugin_session *s, uint64_t now)
{
	struct node *n = s->sched_priv;

	if (n)
		unlink_node(n);
}

static struct vgpu_plugin_session *fifo_pick(void *state, uint64_t now, uint64_t *wake)
{
	struct fifo *f = state;
	struct node *n = f->head.next;

	if (n == &f->head)
		return NULL;
	/* its turn is taken: to the back of the line */
	unlink_node(n);
	append(f, n);
	return n->s;
}

static const struct vgpu_sched_ops fifo_ops = {
	.size = sizeof(struct vgpu_sched_ops),
	.session_open = fifo_open,
	.session_close = fifo_close,
	.runnable = fifo_runnable,
	.idle = fifo_idle,
	.pick = fifo_pick,
	.charge = NULL,
};

static const struct vgpu_plugin_desc fifo_desc = {
	.abi_version = VGPU_PLUGIN_ABI_VERSION,
	.kind = VGPU_PLUGIN_SCHEDULER,
	.name = "sched-fifo",
	.description = "sessions take turns in the order they became runnable, one item each",
	.version = "1.0",
	.params = NULL,
	.init = fifo_init,
	.fini = fifo_fini,
	.ops = &fifo_ops,
};

VGPU_PLUGIN_DEFINE(fifo_desc)
