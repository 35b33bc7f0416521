/* SPDX-License-Identifier: MIT */
/* scale-probe - an autoscale plugin for the tests: appends one line per
 * signal to the file given by out= (tests/test_sched.c). */
#include <stdio.h>
#include <stdlib.h>
#include <vgpu/plugin.h>

static const struct vgpu_plugin_param params[] = {
	{ "out", "", "file the signals are appended to", VGPU_PARAM_STRING, 0, 0 },
	VGPU_PARAM_END
};

static vgpu_status probe_init(const struct vgpu_plugin_host *h, const struct vgpu_plugin_config *c,
			      void **state)
{
	FILE *f;

	if (!c->values[0].s[0])
		return h->fail(h, VGPU_ERR_PLUGIN, "parameter 'out' is required");
	f = fopen(c->values[0].s, "a");
	if (!f)
		return h->fail(h, VGPU_ERR_PLUGIN, "parameter 'out': cannot open %s",
			       c->values[0].s);
	*state = f;
	return VGPU_OK;
}

static void probe_fini(void *state)
{
	fclose(state);
}

static void probe_signal(void *state, const struct vgpu_autoscale_signal *s)
{
	fprintf(state, "event=%u device=%d sessions=%u waiting=%u wait_ms=%llu idle_ms=%llu\n",
		s->event, s->device, s->sessions, s->waiting,
		(unsigned long long)(s->wait_ns_max / 1000000),
		(unsigned long long)(s->idle_ns / 1000000));
	fflush(state);
}

static const struct vgpu_autoscale_ops ops = { sizeof(ops), probe_signal };

static const struct vgpu_plugin_desc desc = {
	.abi_version = VGPU_PLUGIN_ABI_VERSION,
	.kind = VGPU_PLUGIN_AUTOSCALE,
	.name = "scale-probe",
	.description = "records autoscale signals (tests)",
	.version = "1",
	.params = params,
	.init = probe_init,
	.fini = probe_fini,
	.ops = &ops,
};

VGPU_PLUGIN_DEFINE(desc)
