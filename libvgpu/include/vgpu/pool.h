/* SPDX-License-Identifier: MIT */
/*
 * vgpu/pool.h - pools of servers, and what a server says about itself.
 *
 * A pool is a list of URIs; vgpu_open() takes one wherever it takes a URI:
 *
 *   vgpu_open(&v, "tcp://a:7100/0,tcp://b:7100/0?mem=1G");
 *   VGPU_URI='pool=/etc/vgpu/pool?mem=1G&share=0.5&wait=60s' ./app
 *
 * Items are separated by ','; a single server with ?wait= is a pool of one. "pool=FILE" reads URIs from FILE, one per line
 * ('#' starts a comment); the file is read again at every placement attempt,
 * so servers that join (an autoscaler appends a line) are seen at once.
 * Query parameters of the LAST item (or of the pool=FILE item) apply to
 * every server that has none of its own: "a,b?mem=1G" asks for 1 GiB on a or b.
 *
 * Placement asks every server for its status (vgpu_node_status_get): a
 * server is skipped when it is unreachable, its device does not exist, it
 * has max_sessions sessions, the request's mem= exceeds its free memory or
 * its share= does not fit beside the shares of the sessions already there
 * (a session without share= counts as 1.0). Among those that fit, the
 * least loaded wins (sum of shares, then queued work, then free memory);
 * if its open fails, the next is tried. When none fits and the pool has
 * ?wait=DURATION ("60s", "500ms"), the client waits, polling every 250 ms,
 * and tells the first reachable server that it waits (its autoscale
 * plugins see it as pressure); else the error lists every server and why
 * ("tcp://a:7100/0: full (1 of 1 sessions); tcp://b:7100/0: unreachable: ...").
 *
 * The handle is then an ordinary remote handle on the chosen server
 * (vgpu_uri() names it). A lost server is not replaced mid-session.
 *
 * The status is an operator's view: tenant names and their usage, never
 * tokens or secrets. A server with a secrets file requires the same
 * authentication for a status request as for a session.
 */
#ifndef VGPU_POOL_H
#define VGPU_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <vgpu.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vgpu_node_device {
	int index;
	char name[128];
	char backend[16];
	uint64_t mem_total, mem_used;
	uint64_t mem_on_host;          /* evicted to host memory (swap) */
	uint64_t swapped_in, swapped_out; /* bytes moved by swapping */
	uint32_t sessions;
	uint64_t queued;               /* work items queued or running */
	double util;                   /* busy fraction over the last ~1 s */
	uint64_t device_ns;            /* measured device time, total */
	uint64_t items;                /* work items run, total */
	uint64_t queue_wait_ns;        /* time items waited to run, total */
	uint64_t reserved[8];
};

struct vgpu_node_session {
	uint64_t id;
	char tenant[64];
	int device;
	uint64_t mem_used, mem_limit;  /* limit: ?mem= (0: none) */
	uint64_t mem_on_host;          /* swapped out */
	double share;                  /* ?share= (1.0: uncapped) */
	uint64_t device_ns, items, queued;
	uint64_t age_ns, idle_ns;
	uint64_t reserved[8];
};

struct vgpu_node_tenant {
	char tenant[64];
	uint64_t device_ns, items, sessions; /* totals since the server started */
	uint64_t reserved[4];
};

struct vgpu_node_transport {
	char name[16];                 /* "tcp", "unix" */
	uint64_t rx_bytes, tx_bytes;   /* protocol bytes (headers, bodies, bulk) */
	uint64_t connections;          /* accepted, total */
	uint64_t reserved[4];
};

struct vgpu_node_status {
	size_t size;                   /* sizeof(struct vgpu_node_status) */
	char uri[256];                 /* what was asked */
	char server[64];               /* "libvgpu 0.1.0 cpu" */
	char backend[16];
	uint32_t max_sessions;         /* 0: unlimited */
	uint32_t sessions;             /* open sessions (all devices) */
	uint32_t waiting;              /* pool clients waiting for capacity */
	uint64_t wait_ns_max;          /* the longest of their waits */
	uint64_t waits_total;          /* clients that ever waited */
	uint64_t refused;              /* sessions refused: server full */
	uint64_t uptime_ns;
	uint32_t ndevices, nsessions, ntenants, ntransports;
	struct vgpu_node_device *devices;
	struct vgpu_node_session *session;
	struct vgpu_node_tenant *tenants;
	struct vgpu_node_transport *transports;
	uint64_t reserved[8];
};

/*
 * Ask the server at uri ("tcp://h:7100", device part ignored) for its
 * status, without opening a session. opts: tenant and token for servers
 * that authenticate, timeout_ms (default 2 s). *out is freed with
 * vgpu_node_status_free().
 */
VGPU_API vgpu_status vgpu_node_status_get(const char *uri, const struct vgpu_open_opts *opts,
					  struct vgpu_node_status **out);
VGPU_API void vgpu_node_status_free(struct vgpu_node_status *st);

/* vgpu_open_ex() of a pool (a single URI works too). flags: 0. */
VGPU_API vgpu_status vgpu_pool_open(vgpu_t **v, const char *pool,
				    const struct vgpu_open_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
