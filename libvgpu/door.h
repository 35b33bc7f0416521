/* SPDX-License-Identifier: MIT */
/*
 * door.h - what stands behind a vgpu_t: the local door (a session of the
 * process's engine) or the remote door (protocol client). Internal.
 * The public API (api.c) checks arguments, then calls the door. Ids are the
 * engine's session-local ids (stream 0 = synchronous).
 */
#ifndef VGPU_DOOR_H
#define VGPU_DOOR_H

#include <pthread.h>
#include "vgpu.h"
#include "engine.h"

struct vgpu_door_ops {
	size_t size;
	const char *name; /* "local", "remote" */
	void (*close)(vgpu_t *v);
	vgpu_status (*device_info)(vgpu_t *v, struct vgpu_device_info *out);
	vgpu_status (*synchronize)(vgpu_t *v);
	vgpu_status (*mem_alloc)(vgpu_t *v, size_t size, vgpu_dptr *out);
	vgpu_status (*mem_free)(vgpu_t *v, vgpu_dptr p);
	vgpu_status (*memcpy_htod)(vgpu_t *v, uint32_t sid, vgpu_dptr dst, const void *src, size_t n);
	vgpu_status (*memcpy_dtoh)(vgpu_t *v, uint32_t sid, void *dst, vgpu_dptr src, size_t n);
	vgpu_status (*memcpy_dtod)(vgpu_t *v, uint32_t sid, vgpu_dptr dst, vgpu_dptr src, size_t n);
	vgpu_status (*memset)(vgpu_t *v, uint32_t sid, vgpu_dptr dst, uint8_t value, size_t n);
	vgpu_status (*stream_create)(vgpu_t *v, unsigned flags, uint32_t *sid);
	vgpu_status (*stream_destroy)(vgpu_t *v, uint32_t sid);
	vgpu_status (*stream_sync)(vgpu_t *v, uint32_t sid);
	vgpu_status (*stream_query)(vgpu_t *v, uint32_t sid);
	vgpu_status (*stream_wait_event)(vgpu_t *v, uint32_t sid, uint32_t eid);
	vgpu_status (*event_create)(vgpu_t *v, unsigned flags, uint32_t *eid);
	vgpu_status (*event_destroy)(vgpu_t *v, uint32_t eid);
	vgpu_status (*event_record)(vgpu_t *v, uint32_t eid, uint32_t sid);
	vgpu_status (*event_sync)(vgpu_t *v, uint32_t eid);
	vgpu_status (*event_query)(vgpu_t *v, uint32_t eid);
	vgpu_status (*event_elapsed)(vgpu_t *v, uint32_t e0, uint32_t e1, float *ms);
	vgpu_status (*module_load)(vgpu_t *v, const void *image, size_t size, uint32_t *mid);
	vgpu_status (*module_unload)(vgpu_t *v, uint32_t mid);
	vgpu_status (*function)(vgpu_t *v, uint32_t mid, const char *name, uint32_t *fid);
	vgpu_status (*launch)(vgpu_t *v, uint32_t fid, vgpu_dim3 grid, vgpu_dim3 block,
			      size_t shmem, uint32_t sid, const vgpu_arg *args, unsigned nargs);
	/* appended; NULL: VGPU_ERR_UNSUPPORTED */
	vgpu_status (*mem_advise)(vgpu_t *v, vgpu_dptr p, unsigned advice);
};

struct vgpu {
	const struct vgpu_door_ops *ops;
	void *door;               /* local: struct vgpu_session *; remote: client */
	struct vgpu_engine *door_engine; /* local door: the engine */
	char uri[VGPU_URI_MAX];   /* normalised, no secrets */
	pthread_mutex_t objlock;  /* the wrappers below */
	struct vgpu_obj *objs;    /* streams/events/modules/functions not yet destroyed */
};

/* Every public object wrapper starts with this, so vgpu_close can free the
 * ones the user did not destroy. */
struct vgpu_obj {
	struct vgpu_obj *next, *prev;
	vgpu_t *v;
	uint32_t id;
	int kind;
};

struct vgpu_stream { struct vgpu_obj o; };
struct vgpu_event { struct vgpu_obj o; };
struct vgpu_module { struct vgpu_obj o; };
struct vgpu_function { struct vgpu_obj o; vgpu_module *m; };

/* Door constructors: parse done, uri checked. Fill v->ops/v->door. */
vgpu_status vgpu__door_local_open(vgpu_t *v, const struct vgpu_uri *uri,
				  const struct vgpu_open_opts *opts);
/* Remote door (tcp, unix, ...): provided by the client (remote issue). */
vgpu_status vgpu__door_remote_open(vgpu_t *v, const struct vgpu_uri *uri,
				   const struct vgpu_open_opts *opts);
/* A pool "uri1,uri2" or "pool=FILE" (pool.c): places and opens a remote door. */
vgpu_status vgpu__pool_open(vgpu_t *v, const char *list, const struct vgpu_open_opts *opts);

#endif
