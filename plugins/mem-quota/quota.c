/* SPDX-License-Identifier: MIT */
/*
 * mem-quota - memory limits: per session (?mem= on the URI, or a default),
 * per tenant (all sessions of a tenant on the device together) and a
 * device-wide reserve no allocation may take. What counts is what a session
 * allocated, wherever it lives (on the device or, with mem-swap, evicted to
 * host memory). Device info then reports the session's limit as its total
 * memory and what is left of it as free memory, as a sliced GPU would.
 *
 *   VGPU_PLUGINS="mem-quota:tenants=alice=8G;bob=2G,reserve=512M"
 *   vgpu_open(&v, "cpu:0?mem=4G&tenant=alice");
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vgpu/plugin.h>

static const struct vgpu_plugin_param params[] = {
	{ "session", "0", "limit of a session whose URI has no mem= (0: none)",
	  VGPU_PARAM_SIZE, 0, 0 },
	{ "tenants", "", "limits per tenant over all its sessions: name=size;...",
	  VGPU_PARAM_LIST, 0, 0 },
	{ "tenant_default", "0", "limit of a tenant not listed in tenants (0: none)",
	  VGPU_PARAM_SIZE, 0, 0 },
	{ "reserve", "0", "device memory no session may allocate (kept for the system)",
	  VGPU_PARAM_SIZE, 0, 0 },
	VGPU_PARAM_END
};
enum { P_SESSION, P_TENANTS, P_TENANT_DEFAULT, P_RESERVE };

struct tenant {
	char name[64];
	uint64_t limit; /* 0: none */
	uint64_t used;
	unsigned sessions;
	struct tenant *next;
};

struct qsess {
	uint64_t limit; /* 0: none */
	uint64_t used;
	struct tenant *t;
};

struct quota {
	const struct vgpu_plugin_host *h;
	uint64_t session_default, tenant_default, reserve;
	struct tenant *tenants;
};

static const char *fmt_bytes(char *buf, size_t len, uint64_t n)
{
	static const char *u[] = { "bytes", "KiB", "MiB", "GiB", "TiB" };
	unsigned i = 0;
	double v = (double)n;

	while (v >= 1024 && i < 4 && (n % 1024 == 0 || v >= 10 * 1024)) {
		v /= 1024;
		n /= 1024;
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

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (!s || !*s)
		return -1;
	v = strtoull(s, &end, 0);
	if (end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': mul = 1ull << 10; end++; break;
	case 'm': case 'M': mul = 1ull << 20; end++; break;
	case 'g': case 'G': mul = 1ull << 30; end++; break;
	case 't': case 'T': mul = 1ull << 40; end++; break;
	default: break;
	}
	if (mul > 1 && (*end == 'i' || *end == 'I') && (end[1] == 'b' || end[1] == 'B'))
		end += 2;
	else if (mul > 1 && (*end == 'b' || *end == 'B'))
		end++;
	if (*end || (mul > 1 && v > UINT64_MAX / mul))
		return -1;
	*out = v * mul;
	return 0;
}

static vgpu_status q_init(const struct vgpu_plugin_host *h, const struct vgpu_plugin_config *cfg,
			  void **state)
{
	struct quota *q = calloc(1, sizeof(*q));

	if (!q)
		return h->fail(h, VGPU_ERR_NO_HOST_MEMORY, "mem-quota: no host memory");
	q->h = h;
	q->session_default = cfg->values[P_SESSION].u;
	q->tenant_default = cfg->values[P_TENANT_DEFAULT].u;
	q->reserve = cfg->values[P_RESERVE].u;
	for (uint32_t i = 0; i < cfg->values[P_TENANTS].list.n; i++) {
		const char *item = cfg->values[P_TENANTS].list.items[i];
		const char *eq = strchr(item, '=');
		struct tenant *t;

		if (!eq || eq == item || (size_t)(eq - item) >= sizeof(t->name)) {
			vgpu_status st = h->fail(h, VGPU_ERR_PLUGIN, "mem-quota: tenants: '%s' is not "
						 "name=size", item);
			free(q);
			return st;
		}
		t = calloc(1, sizeof(*t));
		if (!t) {
			free(q);
			return h->fail(h, VGPU_ERR_NO_HOST_MEMORY, "mem-quota: no host memory");
		}
		memcpy(t->name, item, (size_t)(eq - item));
		if (parse_size(eq + 1, &t->limit) != 0) {
			vgpu_status st = h->fail(h, VGPU_ERR_PLUGIN, "mem-quota: tenants: '%s': bad "
						 "size '%s' (4096, 256M, 4G)", item, eq + 1);

			free(t);
			while (q->tenants) {
				t = q->tenants;
				q->tenants = t->next;
				free(t);
			}
			free(q);
			return st;
		}
		t->next = q->tenants;
		q->tenants = t;
	}
	*state = q;
	return VGPU_OK;
}

static void q_fini(void *state)
{
	struct quota *q = state;

	while (q->tenants) {
		struct tenant *t = q->tenants;

		q->tenants = t->next;
		free(t);
	}
	free(q);
}

static vgpu_status q_session_open(void *state, struct vgpu_plugin_session *s)
{
	struct quota *q = state;
	struct qsess *qs = calloc(1, sizeof(*qs));
	struct tenant *t;

	if (!qs)
		return q->h->fail(q->h, VGPU_ERR_NO_HOST_MEMORY, "%s: no host memory", s->label);
	qs->limit = s->mem_limit ? s->mem_limit : q->session_default;
	for (t = q->tenants; t; t = t->next)
		if (!strcmp(t->name, s->tenant))
			break;
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t) {
			free(qs);
			return q->h->fail(q->h, VGPU_ERR_NO_HOST_MEMORY, "%s: no host memory",
					  s->label);
		}
		snprintf(t->name, sizeof(t->name), "%s", s->tenant);
		t->limit = q->tenant_default;
		t->next = q->tenants;
		q->tenants = t;
	}
	t->sessions++;
	qs->t = t;
	s->mem_limit = qs->limit;
	s->mem_priv = qs;
	return VGPU_OK;
}

static void q_session_close(void *state, struct vgpu_plugin_session *s)
{
	struct qsess *qs = s->mem_priv;

	(void)state;
	if (!qs)
		return;
	qs->t->sessions--;
	free(qs);
	s->mem_priv = NULL;
}

static int dev_stats(struct quota *q, struct vgpu_plugin_device_stats *ds)
{
	memset(ds, 0, sizeof(*ds));
	ds->size = sizeof(*ds);
	if (q->h->device_stats(q->h, q->h->device, ds) != VGPU_OK)
		return -1;
	if (!ds->mem_capacity) /* older host */
		ds->mem_capacity = ds->mem_total;
	return 0;
}

static vgpu_status q_alloc(void *state, struct vgpu_plugin_session *s, uint64_t size)
{
	struct quota *q = state;
	struct qsess *qs = s->mem_priv;
	struct vgpu_plugin_device_stats ds;
	char a[32], b[32], c[32], d[32];

	if (qs->limit && (size > qs->limit || qs->used > qs->limit - size))
		return q->h->fail(q->h, VGPU_ERR_OUT_OF_MEMORY,
				  "%s: session memory limit (mem=) %s exceeded: %s in use, %s asked",
				  s->label, fmt_bytes(a, sizeof(a), qs->limit),
				  fmt_bytes(b, sizeof(b), qs->used), fmt_bytes(c, sizeof(c), size));
	if (qs->t->limit && (size > qs->t->limit || qs->t->used > qs->t->limit - size))
		return q->h->fail(q->h, VGPU_ERR_OUT_OF_MEMORY,
				  "%s: tenant '%s' memory limit %s exceeded: %s in use by its %u "
				  "session%s, %s asked", s->label, qs->t->name,
				  fmt_bytes(a, sizeof(a), qs->t->limit),
				  fmt_bytes(b, sizeof(b), qs->t->used), qs->t->sessions,
				  qs->t->sessions == 1 ? "" : "s", fmt_bytes(c, sizeof(c), size));
	if (q->reserve && dev_stats(q, &ds) == 0) {
		uint64_t room = ds.mem_capacity > q->reserve ? ds.mem_capacity - q->reserve : 0;

		if (size > room || ds.mem_used > room - size)
			return q->h->fail(q->h, VGPU_ERR_OUT_OF_MEMORY,
					  "%s: device reserve %s reached: %s of %s allocated, %s asked",
					  s->label, fmt_bytes(a, sizeof(a), q->reserve),
					  fmt_bytes(b, sizeof(b), ds.mem_used),
					  fmt_bytes(c, sizeof(c), ds.mem_capacity),
					  fmt_bytes(d, sizeof(d), size));
	}
	return VGPU_OK;
}

static void q_allocated(void *state, struct vgpu_plugin_session *s, vgpu_dptr base,
			uint64_t size)
{
	struct qsess *qs = s->mem_priv;

	(void)state;
	(void)base;
	qs->used += size;
	qs->t->used += size;
}

static void q_freed(void *state, struct vgpu_plugin_session *s, vgpu_dptr base, uint64_t size)
{
	struct qsess *qs = s->mem_priv;

	(void)state;
	(void)base;
	qs->used -= size;
	qs->t->used -= size;
}

static void q_limits(void *state, const struct vgpu_plugin_session *s, uint64_t *total,
		     uint64_t *avail)
{
	struct quota *q = state;
	const struct qsess *qs = s->mem_priv;
	struct vgpu_plugin_device_stats ds;

	if (qs->limit) {
		if (qs->limit < *total)
			*total = qs->limit;
		if (qs->limit - qs->used < *avail)
			*avail = qs->limit - qs->used;
	}
	if (qs->t->limit) {
		uint64_t left = qs->t->limit > qs->t->used ? qs->t->limit - qs->t->used : 0;

		if (qs->t->limit < *total)
			*total = qs->t->limit;
		if (left < *avail)
			*avail = left;
	}
	if (q->reserve && dev_stats(q, &ds) == 0) {
		uint64_t room = ds.mem_capacity > q->reserve ? ds.mem_capacity - q->reserve : 0;
		uint64_t left = room > ds.mem_used ? room - ds.mem_used : 0;

		if (room < *total)
			*total = room;
		if (left < *avail)
			*avail = left;
	}
}

static const struct vgpu_mem_ops ops = {
	.size = sizeof(struct vgpu_mem_ops),
	.session_open = q_session_open,
	.session_close = q_session_close,
	.alloc = q_alloc,
	.allocated = q_allocated,
	.freed = q_freed,
	.limits = q_limits,
};

static const struct vgpu_plugin_desc desc = {
	VGPU_PLUGIN_ABI_VERSION, VGPU_PLUGIN_MEMORY, "mem-quota",
	"memory limits per session (mem=), per tenant, and a device reserve", "1.0",
	params, q_init, q_fini, &ops,
};

VGPU_PLUGIN_DEFINE(desc)
