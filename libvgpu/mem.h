/* SPDX-License-Identifier: MIT */
/*
 * mem.h - device memory as the memory plugins see it: placement at
 * allocation, residency before work runs, pinning, statistics. Internal.
 *
 * One struct vgpu__mem per engine device, one struct vgpu__mem_session per
 * session. engine.c calls:
 *   vgpu__mem_alloc / vgpu__mem_free     instead of backend mem_alloc/free
 *   vgpu__mem_queued / vgpu__mem_dequeued when work referencing buffers is
 *                                        queued / taken to run (lookahead)
 *   vgpu__mem_prepare / vgpu__mem_complete around every copy, set and launch
 *   vgpu__mem_info                        to finish device info
 * With no memory plugin all of these are thin: allocations go to the
 * backend, prepare and complete return at once.
 *
 * Lock order: session->lock, then mem->lock; nothing takes an engine lock
 * while holding mem->lock.
 */
#ifndef VGPU_MEM_H
#define VGPU_MEM_H

#include "backend.h"
#include "uri.h"
#include "vgpu/plugin.h"

struct vgpu__mem;
struct vgpu__mem_session;

/* A memory plugin to instantiate: descriptor and parsed configuration
 * (valid until vgpu__mem_destroy). */
struct vgpu__mem_plugin {
	const struct vgpu_plugin_desc *desc;
	const struct vgpu_plugin_config *cfg;
};

vgpu_status vgpu__mem_create(const struct vgpu_backend_ops *be, struct vgpu_backend_dev *bdev,
			     int device, const struct vgpu__mem_plugin *plugins, unsigned n,
			     struct vgpu__mem **out);
void vgpu__mem_destroy(struct vgpu__mem *m);

/* The URI to open a device with when memory plugins run: mem= is then the
 * session's quota, not the device size (devmem= is). */
void vgpu__mem_device_uri(unsigned nplugins, const struct vgpu_uri *in, struct vgpu_uri *out);

/* base: the session as the engine's other plugins see it (priority, share,
 * weight are copied; may be NULL). */
vgpu_status vgpu__mem_session_open(struct vgpu__mem *m, uint64_t id, const char *tenant,
				   const char *label, const struct vgpu_uri *uri,
				   const struct vgpu_plugin_session *base,
				   struct vgpu__mem_session **out);
/* Bytes of the session's allocations not on the device now. */
uint64_t vgpu__mem_session_on_host(struct vgpu__mem_session *ms);
/* The session's memory limit as its plugins set it (mem=, or mem-quota's
 * default; 0: none). */
uint64_t vgpu__mem_session_limit(const struct vgpu__mem_session *ms);
/* After every allocation of the session was freed. */
void vgpu__mem_session_close(struct vgpu__mem_session *ms);

/* size is rounded to the granularity. */
vgpu_status vgpu__mem_alloc(struct vgpu__mem_session *ms, size_t size, vgpu_dptr *out);
/* No work references it any more. */
void vgpu__mem_free(struct vgpu__mem_session *ms, vgpu_dptr base, size_t size);

/* refs: allocations (base, size, flags); duplicates allowed. prepare blocks
 * until all are resident and marks them in use (never evicted until
 * complete); an error means the work must fail (message set). work: the id
 * given to vgpu__mem_queued (it is dequeued now), or 0. */
vgpu_status vgpu__mem_prepare(struct vgpu__mem_session *ms, uint64_t work,
			      const struct vgpu_mem_ref *refs, unsigned n);
void vgpu__mem_complete(struct vgpu__mem_session *ms, const struct vgpu_mem_ref *refs,
			unsigned n);
/* Lookahead for the plugins (no-ops without one that wants it). */
int vgpu__mem_wants_queue(const struct vgpu__mem_session *ms);
void vgpu__mem_queued(struct vgpu__mem_session *ms, uint64_t work,
		      const struct vgpu_mem_ref *refs, unsigned n);
void vgpu__mem_dequeued(struct vgpu__mem_session *ms, uint64_t work);

/* vgpu_mem_advise. */
vgpu_status vgpu__mem_advise(struct vgpu__mem_session *ms, vgpu_dptr base, unsigned advice);

/* Replace total/free memory by what the session sees and fill the
 * residency statistics. */
void vgpu__mem_info(struct vgpu__mem_session *ms, struct vgpu_device_info *out);

/* Device-wide residency statistics (smi, metrics). */
struct vgpu__mem_stats {
	uint64_t total, capacity, used, resident, on_host, pinned;
	uint64_t swapped_in, swapped_out, evictions;
};
void vgpu__mem_stats(struct vgpu__mem *m, struct vgpu__mem_stats *out);

#endif
