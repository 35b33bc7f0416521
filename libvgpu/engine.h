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

struct vgpu_engine;
struct vgpu_session;

struct vgpu_engine_opts {
	size_t size;
	int workers;        /* stream worker threads; 0 = default (2) */
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

/* Engine-wide stats (for servers, smi, tests). */
struct vgpu_engine_stats {
	uint64_t sessions;
	uint64_t mem_used;      /* bytes allocated by all sessions */
	uint64_t allocations;
};
void vgpu__engine_stats(struct vgpu_engine *e, int device, struct vgpu_engine_stats *out);

#endif
