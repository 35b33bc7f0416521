/* SPDX-License-Identifier: MIT */
/*
 * mem-evil - a memory plugin for the tests: before every work item it tries
 * to evict every other resident buffer of the device, in use or pinned
 * ones included, and restores the item's own. The host must refuse to
 * evict a buffer in use by running work or pinned; at fini the plugin
 * appends "tried N refused N violations N" to the file given by out=
 * (tests/test_mem_swap.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <vgpu/plugin.h>

static const struct vgpu_plugin_param params[] = {
	{ "out", "", "file the counts are appended to", VGPU_PARAM_STRING, 0, 0 },
	VGPU_PARAM_END
};

struct ebuf {
	vgpu_dptr base;
	struct vgpu_plugin_session *s;
};

struct evil {
	const struct vgpu_plugin_host *h;
	FILE *out;
	struct ebuf *b;
	unsigned n, cap;
	unsigned long tried, refused, violations;
};

static vgpu_status e_init(const struct vgpu_plugin_host *h, const struct vgpu_plugin_config *c,
			  void **state)
{
	struct evil *e;

	if (!c->values[0].s[0])
		return h->fail(h, VGPU_ERR_PLUGIN, "parameter 'out' is required");
	e = calloc(1, sizeof(*e));
	if (!e)
		return VGPU_ERR_NO_HOST_MEMORY;
	e->out = fopen(c->values[0].s, "a");
	if (!e->out) {
		free(e);
		return h->fail(h, VGPU_ERR_PLUGIN, "cannot open %s", c->values[0].s);
	}
	e->h = h;
	*state = e;
	return VGPU_OK;
}

static void e_fini(void *state)
{
	struct evil *e = state;

	fprintf(e->out, "tried %lu refused %lu violations %lu\n", e->tried, e->refused,
		e->violations);
	fclose(e->out);
	free(e->b);
	free(e);
}

static void e_allocated(void *state, struct vgpu_plugin_session *s, vgpu_dptr base, uint64_t size)
{
	struct evil *e = state;

	(void)size;
	if (e->n == e->cap) {
		unsigned nc = e->cap ? e->cap * 2 : 64;
		struct ebuf *nb = realloc(e->b, nc * sizeof(*nb));

		if (!nb)
			return;
		e->b = nb;
		e->cap = nc;
	}
	e->b[e->n].base = base;
	e->b[e->n].s = s;
	e->n++;
}

static void e_freed(void *state, struct vgpu_plugin_session *s, vgpu_dptr base, uint64_t size)
{
	struct evil *e = state;

	(void)s;
	(void)size;
	for (unsigned i = 0; i < e->n; i++)
		if (e->b[i].base == base) {
			e->b[i] = e->b[--e->n];
			return;
		}
}

static vgpu_status e_prepare(void *state, struct vgpu_plugin_session *s,
			     const struct vgpu_mem_ref *refs, uint32_t nrefs)
{
	struct evil *e = state;
	const struct vgpu_plugin_host *h = e->h;

	for (unsigned i = 0; i < e->n; i++) {
		uint32_t st = h->mem_state(h, e->b[i].s, e->b[i].base);
		int mine = 0;
		vgpu_status rc;

		for (uint32_t k = 0; k < nrefs; k++)
			mine |= refs[k].base == e->b[i].base;
		if (mine || !(st & VGPU_MEM_STATE_RESIDENT))
			continue;
		rc = h->mem_evict(h, e->b[i].s, e->b[i].base);
		e->tried++;
		if (st & (VGPU_MEM_STATE_IN_USE | VGPU_MEM_STATE_PINNED)) {
			if (rc == VGPU_OK)
				e->violations++;
			else if (rc == VGPU_ERR_BUSY)
				e->refused++;
		}
	}
	for (uint32_t k = 0; k < nrefs; k++) {
		vgpu_status rc = h->mem_restore(h, s, refs[k].base);

		if (rc == VGPU_ERR_OUT_OF_MEMORY)
			return VGPU_ERR_BUSY; /* what is left is in use */
		if (rc)
			return rc;
	}
	return VGPU_OK;
}

static const struct vgpu_mem_ops ops = {
	.size = sizeof(struct vgpu_mem_ops),
	.allocated = e_allocated,
	.freed = e_freed,
	.prepare = e_prepare,
	.flags = VGPU_MEM_OPS_OVERSUBSCRIBE,
};

static const struct vgpu_plugin_desc desc = {
	VGPU_PLUGIN_ABI_VERSION, VGPU_PLUGIN_MEMORY, "mem-evil",
	"test plugin: tries to evict everything, in-use buffers included", "1.0",
	params, e_init, e_fini, &ops,
};

VGPU_PLUGIN_DEFINE(desc)
