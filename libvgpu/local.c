/* SPDX-License-Identifier: MIT */
/*
 * local.c - the local door: an in-process handle is a session of the
 * process-wide engine of its backend.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "door.h"
#include "error.h"

#define S(v) ((struct vgpu_session *)(v)->door)

static void l_close(vgpu_t *v)
{
	struct vgpu_session *s = S(v);
	struct vgpu_engine *e = v->door_engine;

	vgpu__session_close(s);
	vgpu__engine_local_put(e);
}

static vgpu_status l_device_info(vgpu_t *v, struct vgpu_device_info *o) { return vgpu__s_device_info(S(v), o); }
static vgpu_status l_synchronize(vgpu_t *v) { return vgpu__s_synchronize(S(v)); }
static vgpu_status l_mem_alloc(vgpu_t *v, size_t n, vgpu_dptr *o) { return vgpu__s_mem_alloc(S(v), n, o); }
static vgpu_status l_mem_free(vgpu_t *v, vgpu_dptr p) { return vgpu__s_mem_free(S(v), p); }
static vgpu_status l_mem_advise(vgpu_t *v, vgpu_dptr p, unsigned a) { return vgpu__s_mem_advise(S(v), p, a); }
static vgpu_status l_htod(vgpu_t *v, uint32_t sid, vgpu_dptr d, const void *src, size_t n)
{ return vgpu__s_memcpy_htod(S(v), sid, d, src, n, NULL); }
static vgpu_status l_dtoh(vgpu_t *v, uint32_t sid, void *d, vgpu_dptr src, size_t n)
{ return vgpu__s_memcpy_dtoh(S(v), sid, d, src, n, NULL); }
static vgpu_status l_dtod(vgpu_t *v, uint32_t sid, vgpu_dptr d, vgpu_dptr src, size_t n)
{ return vgpu__s_memcpy_dtod(S(v), sid, d, src, n); }
static vgpu_status l_memset(vgpu_t *v, uint32_t sid, vgpu_dptr d, uint8_t val, size_t n)
{ return vgpu__s_memset(S(v), sid, d, val, n); }
static vgpu_status l_stream_create(vgpu_t *v, unsigned f, uint32_t *id) { return vgpu__s_stream_create(S(v), f, id); }
static vgpu_status l_stream_destroy(vgpu_t *v, uint32_t id) { return vgpu__s_stream_destroy(S(v), id); }
static vgpu_status l_stream_sync(vgpu_t *v, uint32_t id) { return vgpu__s_stream_sync(S(v), id); }
static vgpu_status l_stream_query(vgpu_t *v, uint32_t id) { return vgpu__s_stream_query(S(v), id); }
static vgpu_status l_stream_wait_event(vgpu_t *v, uint32_t sid, uint32_t eid)
{ return vgpu__s_stream_wait_event(S(v), sid, eid); }
static vgpu_status l_event_create(vgpu_t *v, unsigned f, uint32_t *id) { return vgpu__s_event_create(S(v), f, id); }
static vgpu_status l_event_destroy(vgpu_t *v, uint32_t id) { return vgpu__s_event_destroy(S(v), id); }
static vgpu_status l_event_record(vgpu_t *v, uint32_t eid, uint32_t sid) { return vgpu__s_event_record(S(v), eid, sid); }
static vgpu_status l_event_sync(vgpu_t *v, uint32_t id) { return vgpu__s_event_sync(S(v), id); }
static vgpu_status l_event_query(vgpu_t *v, uint32_t id) { return vgpu__s_event_query(S(v), id); }
static vgpu_status l_event_elapsed(vgpu_t *v, uint32_t a, uint32_t b, float *ms)
{ return vgpu__s_event_elapsed(S(v), a, b, ms); }
static vgpu_status l_module_load(vgpu_t *v, const void *img, size_t n, uint32_t *id)
{ return vgpu__s_module_load(S(v), img, n, id); }
static vgpu_status l_module_unload(vgpu_t *v, uint32_t id) { return vgpu__s_module_unload(S(v), id); }
static vgpu_status l_function(vgpu_t *v, uint32_t mid, const char *name, uint32_t *fid)
{ return vgpu__s_function(S(v), mid, name, fid); }
static vgpu_status l_launch(vgpu_t *v, uint32_t fid, vgpu_dim3 g, vgpu_dim3 b, size_t shmem,
			    uint32_t sid, const vgpu_arg *args, unsigned nargs)
{ return vgpu__s_launch(S(v), fid, g, b, shmem, sid, args, nargs); }

static const struct vgpu_door_ops local_ops = {
	.size = sizeof(struct vgpu_door_ops),
	.name = "local",
	.close = l_close,
	.device_info = l_device_info,
	.synchronize = l_synchronize,
	.mem_alloc = l_mem_alloc,
	.mem_free = l_mem_free,
	.memcpy_htod = l_htod,
	.memcpy_dtoh = l_dtoh,
	.memcpy_dtod = l_dtod,
	.memset = l_memset,
	.stream_create = l_stream_create,
	.stream_destroy = l_stream_destroy,
	.stream_sync = l_stream_sync,
	.stream_query = l_stream_query,
	.stream_wait_event = l_stream_wait_event,
	.event_create = l_event_create,
	.event_destroy = l_event_destroy,
	.event_record = l_event_record,
	.event_sync = l_event_sync,
	.event_query = l_event_query,
	.event_elapsed = l_event_elapsed,
	.module_load = l_module_load,
	.module_unload = l_module_unload,
	.function = l_function,
	.launch = l_launch,
	.mem_advise = l_mem_advise,
};

vgpu_status vgpu__door_local_open(vgpu_t *v, const struct vgpu_uri *uri,
				  const struct vgpu_open_opts *opts)
{
	struct vgpu_engine *e;
	struct vgpu_session *s;
	vgpu_status st;

	st = vgpu__engine_local_get_ex(uri->scheme, opts ? opts->plugins : NULL, &e);
	if (st)
		return st;
	st = vgpu__session_open(e, uri, vgpu__uri_get(uri, "tenant"), v->uri, &s);
	if (st) {
		vgpu__engine_local_put(e);
		return st;
	}
	v->ops = &local_ops;
	v->door = s;
	v->door_engine = e;
	return VGPU_OK;
}
