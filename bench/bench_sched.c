/* SPDX-License-Identifier: MIT */
/*
 * bench_sched - dispatch overhead per work item of each scheduling policy,
 * with 1, 16 and 256 sessions (one tenant each) on one cpu device.
 *
 * For each case the sessions queue tiny work items (4-byte memsets) round
 * robin on their streams, then wait for all; the time per item is printed
 * beside the floor measured in the same run (the engine's built-in FIFO, no
 * plugin) and the ratio. "decision" is the time the engine spent inside the
 * plugin (pick + charge) per item, from its own accounting.
 * VGPU_BENCH_POLICY=sched-fair and VGPU_BENCH_SESSIONS=256 run one case
 * (for a profiler).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "error.h"

#define ITEMS 20000
#define ROUNDS 7

static void die(const char *what)
{
	fprintf(stderr, "bench_sched: %s: %s\n", what, vgpu_last_error());
	exit(1);
}

/* ns per item (best of ROUNDS); *decision_ns: plugin time per decision */
static double run(const char *plugins, int nsess, double *decision_ns)
{
	struct vgpu_engine_opts o;
	struct vgpu_engine *e;
	struct vgpu_session **s = calloc((size_t)nsess, sizeof(*s));
	uint32_t *sid = calloc((size_t)nsess, sizeof(*sid));
	vgpu_dptr *p = calloc((size_t)nsess, sizeof(*p));
	double best = 1e30;
	struct vgpu_engine_stats a, b;

	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.plugins = plugins;
	o.workers = 1;
	if (!s || !sid || !p || vgpu__engine_create("cpu", &o, &e))
		die("engine");
	for (int i = 0; i < nsess; i++) {
		struct vgpu_uri u;
		char uri[64], tenant[32];

		snprintf(uri, sizeof(uri), "cpu:0?tenant=t%d", i);
		snprintf(tenant, sizeof(tenant), "t%d", i);
		if (vgpu__uri_parse(uri, &u) || vgpu__session_open(e, &u, tenant, uri, &s[i]) ||
		    vgpu__s_stream_create(s[i], 0, &sid[i]) || vgpu__s_mem_alloc(s[i], 4, &p[i]))
			die("session");
	}
	vgpu__engine_stats(e, -1, &a);
	for (int r = 0; r < ROUNDS; r++) {
		uint64_t t0 = vgpu__now_ns(), t1;

		for (int k = 0; k < ITEMS; k++) {
			int i = k % nsess;

			if (vgpu__s_memset(s[i], sid[i], p[i], (uint8_t)k, 4))
				die("memset");
		}
		for (int i = 0; i < nsess; i++)
			if (vgpu__s_stream_sync(s[i], sid[i]))
				die("sync");
		t1 = vgpu__now_ns();
		if ((double)(t1 - t0) / ITEMS < best)
			best = (double)(t1 - t0) / ITEMS;
	}
	vgpu__engine_stats(e, -1, &b);
	*decision_ns = b.sched_decisions > a.sched_decisions ?
		(double)(b.sched_ns - a.sched_ns) / (double)(b.sched_decisions - a.sched_decisions) : 0;
	for (int i = 0; i < nsess; i++)
		vgpu__session_close(s[i]);
	vgpu__engine_destroy(e);
	free(s);
	free(sid);
	free(p);
	return best;
}

int main(void)
{
	static const char *policies[] = { "sched-fifo", "sched-fair", "sched-priority" };
	static const int sessions[] = { 1, 16, 256 };
	const char *only_policy = getenv("VGPU_BENCH_POLICY");     /* one policy */
	const char *only_sessions = getenv("VGPU_BENCH_SESSIONS"); /* one column */

	if (!getenv("VGPU_PLUGIN_PATH") && getenv("top_builddir")) {
		static char path[4096];

		snprintf(path, sizeof(path), "VGPU_PLUGIN_PATH=%s/plugins/.libs", getenv("top_builddir"));
		putenv(path);
	}
	printf("dispatch overhead per work item (4-byte memset, %d items, best of %d), "
	       "1 worker, 1 slot\n", ITEMS, ROUNDS);
	printf("%-16s %8s %12s %12s %8s %14s\n", "policy", "sessions", "ns/item", "floor ns",
	       "ratio", "ns/decision");
	for (size_t j = 0; j < sizeof(sessions) / sizeof(sessions[0]); j++) {
		double dn, floor_ns;

		if (only_sessions && atoi(only_sessions) != sessions[j])
			continue;
		floor_ns = run(NULL, sessions[j], &dn);

		printf("%-16s %8d %12.0f %12.0f %8.2f %14s\n", "(none: FIFO)", sessions[j], floor_ns,
		       floor_ns, 1.0, "-");
		for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
			double ns;

			if (only_policy && strcmp(only_policy, policies[i]))
				continue;
			ns = run(policies[i], sessions[j], &dn);

			printf("%-16s %8d %12.0f %12.0f %8.2f %14.0f\n", policies[i], sessions[j], ns,
			       floor_ns, ns / floor_ns, dn);
		}
	}
	return 0;
}
