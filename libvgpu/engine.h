/* SPDX-License-Identifier: MIT */
/*
 * engine.h - the engine: sessions, per-session handle tables, streams, plugin
 * hooks, and a backend. Internal. The local door (in-process handles) and the
 * server (remote clients) both drive an engine through these calls.
 *
 * Every call takes the session and session-local ids; ids are validated on
 * every use, so one session can never name another's objects. Stream id 0 is
 * the NULL stream: the call is synchronous and runs on the caller's thread.
 * Calls return VGPU_OK or a negative status with the thread's message set.
 */
#ifndef VGPU_ENGINE_H
#define VGPU_ENGINE_H

#include "vgpu.h"
#include "backend.h"
#include "uri.h"
#include "vgpu/plugin.h"

struct vgpu_engine;
struct vgpu_session;

/*
 * Execution model. Without a scheduler plugin a device runs work as it comes
 * (FIFO over streams, up to `workers` items at once over all devices). With
 * a scheduler plugin the engine queues work per session and a dispatcher
 * asks the plugin which session's next item goes to the device whenever one
 * of the device's `slots` is free (default 1: the device is time-sliced at
 * work-item granularity, like a GPU shared without MPS); each item's
 * measured device time is charged to its session and reported to the
 * plugin. NULL-stream (synchronous) work is then queued too (on a
 * per-session internal stream) so that no policy can be bypassed.
 */
struct vgpu_engine_opts {
	size_t size;
	int workers;        /* stream worker threads; 0 = default (4) */
	/* Plugin spec list: "sched-fair:weights=alice=3;bob=1 mem-quota:limit=1G"
	 * (see vgpu-plugin(7)). NULL: none. */
	const char *plugins;
	unsigned slots;            /* scheduled devices: items run at once; 0 = 1 */
	unsigned max_sessions;     /* admitted sessions per device; 0 = unlimited */
	int admit_queue;           /* sessions that may wait for admission;
				    * 0 = 16, negative = none (refuse at once) */
	uint32_t admit_timeout_ms; /* how long one may wait; 0 = 10000 */
	uint64_t share_window_ns;  /* share= cap window; 0 = 100 ms */
	/* Bytes of queued work (items, launch arguments, inline htod data) a
	 * session may hold before its asynchronous calls wait for the device
	 * to catch up; 0 = 16 MiB, SIZE_MAX = no limit. With uri_device_params
	 * a session's URI may set its own (queue_limit=SIZE, 0: no limit). */
	size_t queue_limit;
	/* Live streams, events, modules and functions a session may hold, of
	 * each; 0 (or more than the tables hold): VGPU_ID_MAX_OBJECTS - 1. */
	unsigned max_handles;
	const char *tenant_shares; /* default share per tenant: "alice=0.25;bob=0.5" */
	/* Honour device parameters (slots=, max_sessions=, admit_queue=,
	 * admit_timeout=) and queue_limit= in the URI of the session that opens a device
	 * (in-process engines do; a server's clients must not). */
	int uri_device_params;
	uint32_t autoscale_period_ms; /* autoscale plugins: TICK/IDLE period; 0 = 1000 */
	/* Without uri_device_params: the backend parameters every device is
	 * opened with ("devmem=8G"); a session's URI never sizes a device. */
	const char *device_params;
};

/* Completion of asynchronous work: called once, from an engine thread (or
 * the caller's thread when the call fails before queueing: then the call
 * returns the error and fn is NOT called). */
struct vgpu_completion {
	void (*fn)(void *arg, vgpu_status st, const char *msg);
	void *arg;
};

vgpu_status vgpu__engine_create(const char *backend, const struct vgpu_engine_opts *opts,
				struct vgpu_engine **out);
/* Closes every session still open, then the devices. */
void vgpu__engine_destroy(struct vgpu_engine *e);
const struct vgpu_backend_ops *vgpu__engine_backend(struct vgpu_engine *e);
/* Number of devices of the backend (negative status on error). */
int vgpu__engine_device_count(struct vgpu_engine *e);

/* Process-wide engine for in-process handles (one per backend, created on
 * first use, refcounted). */
vgpu_status vgpu__engine_local_get(const char *backend, struct vgpu_engine **out);
/* Same; plugins is the spec list it must run (NULL: $VGPU_PLUGINS). An
 * engine already running with other plugins gives VGPU_ERR_PLUGIN. */
vgpu_status vgpu__engine_local_get_ex(const char *backend, const char *plugins,
				      struct vgpu_engine **out);
void vgpu__engine_local_put(struct vgpu_engine *e);

/* Sessions. uri carries the device index and resource parameters (mem=,
 * share=, priority=...). tenant may be NULL ("default"). label names the
 * session in messages ("cpu:0", "tcp://host:7100/0"). */
vgpu_status vgpu__session_open(struct vgpu_engine *e, const struct vgpu_uri *uri,
			       const char *tenant, const char *label,
			       struct vgpu_session **out);
/* Waits for queued work, releases every object of the session. */
void vgpu__session_close(struct vgpu_session *s);
uint64_t vgpu__session_id(const struct vgpu_session *s);
const char *vgpu__session_label(const struct vgpu_session *s);

vgpu_status vgpu__s_device_info(struct vgpu_session *s, struct vgpu_device_info *out);
vgpu_status vgpu__s_synchronize(struct vgpu_session *s);

vgpu_status vgpu__s_mem_alloc(struct vgpu_session *s, size_t size, vgpu_dptr *out);
vgpu_status vgpu__s_mem_free(struct vgpu_session *s, vgpu_dptr p);
/* vgpu_mem_advise (mem.c does the work). */
vgpu_status vgpu__s_mem_advise(struct vgpu_session *s, vgpu_dptr p, unsigned advice);

/*
 * Copies/sets. sid == 0: synchronous, `done` must be NULL.
 * sid != 0: queued; returns at once. With done == NULL the engine owns
 * nothing: htod copies up to 64 KiB of src at once (the caller may reuse
 * src), larger sources must stay valid until the stream passes the copy;
 * dtoh writes dst when it runs. With done != NULL, done is called after the
 * copy ran (src no longer needed / dst filled) with its status; the error is
 * then NOT also recorded on the stream.
 */
vgpu_status vgpu__s_memcpy_htod(struct vgpu_session *s, uint32_t sid, vgpu_dptr dst,
				const void *src, size_t n, const struct vgpu_completion *done);
vgpu_status vgpu__s_memcpy_dtoh(struct vgpu_session *s, uint32_t sid, void *dst,
				vgpu_dptr src, size_t n, const struct vgpu_completion *done);
vgpu_status vgpu__s_memcpy_dtod(struct vgpu_session *s, uint32_t sid, vgpu_dptr dst,
				vgpu_dptr src, size_t n);

/*
 * A synchronous copy that moves device memory itself: the server receives
 * an htod straight into device memory and sends a dtoh straight from it,
 * with no staging copy. Validates [p, p+n) as the session's (write: a
 * destination), makes it resident and in use, then calls fn(arg, host, n)
 * with the host address of those bytes, and returns fn's status. Returns
 * VGPU__DIRECT_NONE (> 0, no error set) without calling fn when the device
 * has no host-addressable memory (cuda) or schedules synchronous copies:
 * the caller then takes the staged path. Other failures are < 0 with the
 * message set, and fn was not called.
 */
#define VGPU__DIRECT_NONE 1
typedef vgpu_status (*vgpu__direct_fn)(void *arg, void *host, size_t n);
vgpu_status vgpu__s_mem_direct(struct vgpu_session *s, vgpu_dptr p, size_t n, int write,
			       vgpu__direct_fn fn, void *arg);
/*
 * The same in two halves, for a transport that goes on moving the bytes
 * after fn would have returned (the server's deferred receives): begin
 * validates [p, p+n), makes it resident and in use, and sets d->host; it
 * returns VGPU_OK, VGPU__DIRECT_NONE or a failure as vgpu__s_mem_direct
 * does. After VGPU_OK, the range stays in use (no eviction, no free) until
 * vgpu__s_mem_direct_end(s, d, rc), which the caller must call with the
 * status of the transfer once it has finished.
 */
struct vgpu__direct {
	void *host;                /* the bytes: valid until _end */
	void *alloc;               /* internal */
	uint64_t t0;
	struct vgpu_mem_ref mr;
};
vgpu_status vgpu__s_mem_direct_begin(struct vgpu_session *s, vgpu_dptr p, size_t n, int write,
				     struct vgpu__direct *d);
void vgpu__s_mem_direct_end(struct vgpu_session *s, struct vgpu__direct *d, vgpu_status rc);
vgpu_status vgpu__s_memset(struct vgpu_session *s, uint32_t sid, vgpu_dptr dst,
			   uint8_t value, size_t n);

vgpu_status vgpu__s_stream_create(struct vgpu_session *s, unsigned flags, uint32_t *sid);
vgpu_status vgpu__s_stream_destroy(struct vgpu_session *s, uint32_t sid);
vgpu_status vgpu__s_stream_sync(struct vgpu_session *s, uint32_t sid);
vgpu_status vgpu__s_stream_query(struct vgpu_session *s, uint32_t sid);
/* Non-blocking sync for servers: done(st) is called when the stream reaches
 * this point, with the stream's first error since the last sync (cleared). */
vgpu_status vgpu__s_stream_notify(struct vgpu_session *s, uint32_t sid,
				  const struct vgpu_completion *done);
vgpu_status vgpu__s_stream_wait_event(struct vgpu_session *s, uint32_t sid, uint32_t eid);

vgpu_status vgpu__s_event_create(struct vgpu_session *s, unsigned flags, uint32_t *eid);
vgpu_status vgpu__s_event_destroy(struct vgpu_session *s, uint32_t eid);
vgpu_status vgpu__s_event_record(struct vgpu_session *s, uint32_t eid, uint32_t sid);
vgpu_status vgpu__s_event_sync(struct vgpu_session *s, uint32_t eid);
vgpu_status vgpu__s_event_query(struct vgpu_session *s, uint32_t eid);
vgpu_status vgpu__s_event_elapsed(struct vgpu_session *s, uint32_t e0, uint32_t e1, float *ms);

vgpu_status vgpu__s_module_load(struct vgpu_session *s, const void *image, size_t size,
				uint32_t *mid);
vgpu_status vgpu__s_module_unload(struct vgpu_session *s, uint32_t mid);
vgpu_status vgpu__s_function(struct vgpu_session *s, uint32_t mid, const char *name,
			     uint32_t *fid);
/* Args are copied before return (BYTES included). */
vgpu_status vgpu__s_launch(struct vgpu_session *s, uint32_t fid, vgpu_dim3 grid,
			   vgpu_dim3 block, size_t shmem, uint32_t sid,
			   const vgpu_arg *args, unsigned int nargs);

/* Engine-wide stats (for servers, smi, tests, autoscaling). */
struct vgpu_engine_stats {
	uint64_t sessions;
	uint64_t mem_used;      /* bytes allocated by all sessions */
	uint64_t allocations;
	/* scheduling (devices with a scheduler plugin) */
	uint64_t now_ns;        /* engine clock (CLOCK_MONOTONIC) at the snapshot */
	uint64_t device_ns;     /* measured device time of all items run */
	uint64_t items;         /* items run */
	uint64_t sched_decisions; /* calls of the plugin's pick */
	uint64_t sched_ns;      /* time spent in the plugin (pick + charge) */
	/* admission (max_sessions) */
	uint64_t admit_waiting; /* sessions waiting now (the queue's length) */
	uint64_t admit_waits;   /* sessions that waited (admitted or not) */
	uint64_t admit_wait_ns; /* their total wait */
	uint64_t admit_wait_max_ns;
	uint64_t admit_rejected;/* refused with VGPU_ERR_BUSY */
	/* every device (scheduled or not) */
	uint64_t queued;        /* work items queued or running now */
	uint64_t queue_wait_ns; /* total time items waited between queueing and running */
	uint64_t idle_ns;       /* since a device last finished an item (0: busy/never) */
	uint64_t max_sessions;  /* admission limit (0: unlimited) */
};
void vgpu__engine_stats(struct vgpu_engine *e, int device, struct vgpu_engine_stats *out);
/* Residency statistics of an open device (memory plugins; mem.h). */
struct vgpu__mem_stats;
vgpu_status vgpu__engine_mem_stats(struct vgpu_engine *e, int device,
				   struct vgpu__mem_stats *out);

/* Per-session accounting (exact: sums of measured item times). */
struct vgpu_session_stats {
	uint64_t now_ns;        /* engine clock at the snapshot */
	uint64_t device_ns;     /* measured device time of its items */
	uint64_t items;
	uint64_t queued;        /* items queued, not yet run */
	uint64_t admit_wait_ns; /* how long it waited to be admitted */
	uint64_t last_seq;      /* scheduled devices: dispatch number (1, 2, ...
				 * on its device) of its last item */
};
void vgpu__session_stats(struct vgpu_session *s, struct vgpu_session_stats *out);

/* Sessions as an operator sees them (status, smi, metrics): no secrets. */
struct vgpu_engine_session_info {
	uint64_t id;
	char tenant[64];
	int device;
	uint64_t mem_used, mem_limit;
	double share;
	uint64_t device_ns, items, queued;
	uint64_t age_ns, idle_ns;
	uint64_t mem_on_host;   /* allocated bytes evicted to host (mem-swap) */
};
/* Fills up to max entries; returns the number of sessions (may exceed max). */
int vgpu__engine_sessions(struct vgpu_engine *e, struct vgpu_engine_session_info *out, int max);

/* Per-tenant totals since the engine started (monotonic counters). */
struct vgpu_engine_tenant_info {
	char tenant[64];
	uint64_t device_ns, items, sessions;
};
int vgpu__engine_tenants(struct vgpu_engine *e, struct vgpu_engine_tenant_info *out, int max);

/* Demand the engine cannot see: clients waiting for capacity elsewhere (a
 * server's pool clients that found every server full), for an open device.
 * Added to the device's autoscale signals (waiting, wait_ns_max) until
 * refreshed, or for 1 s. */
void vgpu__engine_scale_demand(struct vgpu_engine *e, int device, uint32_t waiting,
			       uint64_t wait_ns_max);

/* Device info without a session (a server's engine opens the device). */
vgpu_status vgpu__engine_device_info(struct vgpu_engine *e, int idx, struct vgpu_device_info *out);
uint64_t vgpu__now_ns(void);

#endif
