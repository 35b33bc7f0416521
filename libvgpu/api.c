/* SPDX-License-Identifier: MIT */
/*
 * api.c - the public API: argument checks, then the handle's door.
 */
#include "config.h"

#include <stddef.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "door.h"
#include "error.h"
#include "uri.h"

enum { OBJ_STREAM = 1, OBJ_EVENT, OBJ_MODULE, OBJ_FUNCTION };

static vgpu_status null_arg(const char *fn, const char *what)
{
	return vgpu__error(VGPU_ERR_INVALID, "%s: %s is NULL", fn, what);
}

#define CHECK_V(v, fn) do { if (!(v)) return null_arg(fn, "handle"); } while (0)

/* ------------------------------------------------------------------------ */
/* Object wrappers                                                          */

static void *obj_new(vgpu_t *v, size_t size, int kind, uint32_t id)
{
	struct vgpu_obj *o = calloc(1, size);

	if (!o)
		return NULL;
	o->v = v;
	o->id = id;
	o->kind = kind;
	pthread_mutex_lock(&v->objlock);
	o->next = v->objs;
	if (v->objs)
		v->objs->prev = o;
	v->objs = o;
	pthread_mutex_unlock(&v->objlock);
	return o;
}

static void obj_free(struct vgpu_obj *o)
{
	vgpu_t *v = o->v;

	pthread_mutex_lock(&v->objlock);
	if (o->prev)
		o->prev->next = o->next;
	else
		v->objs = o->next;
	if (o->next)
		o->next->prev = o->prev;
	pthread_mutex_unlock(&v->objlock);
	free(o);
}

static inline uint32_t sid_of(vgpu_t *v, vgpu_stream *s, vgpu_status *st, const char *fn)
{
	if (!s)
		return 0;
	if (s->o.v != v || s->o.kind != OBJ_STREAM) {
		*st = vgpu__error(VGPU_ERR_BAD_HANDLE, "%s: the stream belongs to another handle", fn);
		return 0;
	}
	return s->o.id;
}

/* ------------------------------------------------------------------------ */
/* Open / close                                                             */

static int is_remote_scheme(const char *s)
{
	return !strcmp(s, "tcp") || !strcmp(s, "unix") || !strcmp(s, "uring") ||
	       !strcmp(s, "rdma");
}

VGPU_API vgpu_status vgpu_open(vgpu_t **v, const char *uri)
{
	return vgpu_open_ex(v, uri, NULL);
}

VGPU_API vgpu_status vgpu_open_ex(vgpu_t **out, const char *uri,
				  const struct vgpu_open_opts *opts)
{
	struct vgpu_open_opts o = VGPU_OPEN_OPTS_INIT;
	struct vgpu_uri *u;
	vgpu_t *v;
	vgpu_status st;

	if (!out)
		return null_arg("vgpu_open", "the handle pointer");
	*out = NULL;
	if (opts) {
		if (opts->size == 0 || opts->size > 4096)
			return vgpu__error(VGPU_ERR_INVALID, "vgpu_open_ex: opts->size must be "
					   "sizeof(struct vgpu_open_opts)");
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
		o.size = sizeof(o);
	}
	if (!uri || !*uri) {
		uri = getenv("VGPU_URI");
		if (!uri || !*uri)
			uri = "cpu:0";
	}
	u = malloc(sizeof(*u));
	v = calloc(1, sizeof(*v));
	if (!u || !v) {
		free(u);
		free(v);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "vgpu_open: no host memory");
	}
	if (strchr(uri, ',') || !strncmp(uri, "pool=", 5) ||
	    (strchr(uri, '?') && (strstr(strchr(uri, '?'), "?wait=") ||
				  strstr(strchr(uri, '?'), "&wait=")))) {
		/* a pool of servers (pool.c): the handle lands on one of them */
		pthread_mutex_init(&v->objlock, NULL);
		st = vgpu__pool_open(v, uri, &o);
		if (st)
			goto fail_lock;
		free(u);
		*out = v;
		return VGPU_OK;
	}
	st = vgpu__uri_parse(uri, u);
	if (st)
		goto fail;
	vgpu__uri_format(u, v->uri, sizeof(v->uri));
	pthread_mutex_init(&v->objlock, NULL);
	if (!strcmp(u->scheme, "cpu") || !strcmp(u->scheme, "cuda")) {
		if (!vgpu__backend_find(u->scheme)) {
			st = vgpu__error(VGPU_ERR_NO_DEVICE, "%s: the %s backend is not built into this "
					 "libvgpu (configure found no CUDA headers)", v->uri, u->scheme);
			goto fail_lock;
		}
		st = vgpu__door_local_open(v, u, &o);
	} else if (is_remote_scheme(u->scheme)) {
		st = vgpu__door_remote_open(v, u, &o);
	} else {
		st = vgpu__error(VGPU_ERR_BAD_URI, "bad URI '%.200s': unknown scheme '%s' (expected "
				 "cpu, cuda, tcp, unix, uring or rdma)", uri, u->scheme);
	}
	if (st)
		goto fail_lock;
	free(u);
	*out = v;
	return VGPU_OK;

fail_lock:
	pthread_mutex_destroy(&v->objlock);
fail:
	free(u);
	free(v);
	return st;
}

VGPU_API void vgpu_close(vgpu_t *v)
{
	struct vgpu_obj *o;

	if (!v)
		return;
	v->ops->close(v);
	/* The door released every engine object; free what the user left. */
	while ((o = v->objs)) {
		v->objs = o->next;
		free(o);
	}
	pthread_mutex_destroy(&v->objlock);
	free(v);
}

VGPU_API const char *vgpu_uri(const vgpu_t *v)
{
	return v ? v->uri : "";
}

/* ------------------------------------------------------------------------ */
/* Device and memory                                                        */

VGPU_API vgpu_status vgpu_device_info(vgpu_t *v, struct vgpu_device_info *out)
{
	CHECK_V(v, "vgpu_device_info");
	if (!out)
		return null_arg("vgpu_device_info", "out");
	return v->ops->device_info(v, out);
}

VGPU_API vgpu_status vgpu_synchronize(vgpu_t *v)
{
	CHECK_V(v, "vgpu_synchronize");
	return v->ops->synchronize(v);
}

VGPU_API vgpu_status vgpu_mem_alloc(vgpu_t *v, size_t size, vgpu_dptr *out)
{
	CHECK_V(v, "vgpu_mem_alloc");
	if (!out)
		return null_arg("vgpu_mem_alloc", "out");
	*out = 0;
	return v->ops->mem_alloc(v, size, out);
}

VGPU_API vgpu_status vgpu_mem_free(vgpu_t *v, vgpu_dptr p)
{
	CHECK_V(v, "vgpu_mem_free");
	if (!p)
		return vgpu__error(VGPU_ERR_BAD_ADDRESS, "%s: vgpu_mem_free: address 0", v->uri);
	return v->ops->mem_free(v, p);
}

/* Fields are appended from the reserved tail: the size never changes. */
_Static_assert(sizeof(struct vgpu_device_info) == 456, "struct vgpu_device_info changed size");

VGPU_API vgpu_status vgpu_mem_advise(vgpu_t *v, vgpu_dptr p, unsigned int advice)
{
	CHECK_V(v, "vgpu_mem_advise");
	if (!p)
		return vgpu__error(VGPU_ERR_BAD_ADDRESS, "%s: vgpu_mem_advise: address 0", v->uri);
	if (v->ops->size < offsetof(struct vgpu_door_ops, mem_advise) + sizeof(v->ops->mem_advise) ||
	    !v->ops->mem_advise)
		return vgpu__error(VGPU_ERR_UNSUPPORTED, "%s: vgpu_mem_advise: not supported by the "
				   "%s door", v->uri, v->ops->name);
	return v->ops->mem_advise(v, p, advice);
}

VGPU_API vgpu_status vgpu_memcpy_htod(vgpu_t *v, vgpu_dptr dst, const void *src, size_t n,
				      vgpu_stream *s)
{
	vgpu_status st = VGPU_OK;
	uint32_t sid;

	CHECK_V(v, "vgpu_memcpy_htod");
	if (!src && n)
		return null_arg("vgpu_memcpy_htod", "src");
	sid = sid_of(v, s, &st, "vgpu_memcpy_htod");
	if (st)
		return st;
	return v->ops->memcpy_htod(v, sid, dst, src, n);
}

VGPU_API vgpu_status vgpu_memcpy_dtoh(vgpu_t *v, void *dst, vgpu_dptr src, size_t n,
				      vgpu_stream *s)
{
	vgpu_status st = VGPU_OK;
	uint32_t sid;

	CHECK_V(v, "vgpu_memcpy_dtoh");
	if (!dst && n)
		return null_arg("vgpu_memcpy_dtoh", "dst");
	sid = sid_of(v, s, &st, "vgpu_memcpy_dtoh");
	if (st)
		return st;
	return v->ops->memcpy_dtoh(v, sid, dst, src, n);
}

VGPU_API vgpu_status vgpu_memcpy_dtod(vgpu_t *v, vgpu_dptr dst, vgpu_dptr src, size_t n,
				      vgpu_stream *s)
{
	vgpu_status st = VGPU_OK;
	uint32_t sid;

	CHECK_V(v, "vgpu_memcpy_dtod");
	sid = sid_of(v, s, &st, "vgpu_memcpy_dtod");
	if (st)
		return st;
	return v->ops->memcpy_dtod(v, sid, dst, src, n);
}

VGPU_API vgpu_status vgpu_memset(vgpu_t *v, vgpu_dptr dst, uint8_t value, size_t n,
				 vgpu_stream *s)
{
	vgpu_status st = VGPU_OK;
	uint32_t sid;

	CHECK_V(v, "vgpu_memset");
	sid = sid_of(v, s, &st, "vgpu_memset");
	if (st)
		return st;
	return v->ops->memset(v, sid, dst, value, n);
}

/* ------------------------------------------------------------------------ */
/* Streams and events                                                       */

/* Streams and events: a door object wrapped in a handle-owned wrapper. */
static vgpu_status obj_create(vgpu_t *v, struct vgpu_obj **out, unsigned int flags, int kind,
			      const char *fn)
{
	vgpu_status (*create)(vgpu_t *, unsigned, uint32_t *);
	vgpu_status (*destroy)(vgpu_t *, uint32_t);
	uint32_t id;
	vgpu_status st;

	CHECK_V(v, fn);
	if (!out)
		return null_arg(fn, "out");
	*out = NULL;
	if (flags)
		return vgpu__error(VGPU_ERR_INVALID, "%s: flags must be 0", fn);
	create = kind == OBJ_STREAM ? v->ops->stream_create : v->ops->event_create;
	destroy = kind == OBJ_STREAM ? v->ops->stream_destroy : v->ops->event_destroy;
	st = create(v, flags, &id);
	if (st)
		return st;
	*out = obj_new(v, kind == OBJ_STREAM ? sizeof(vgpu_stream) : sizeof(vgpu_event), kind, id);
	if (!*out) {
		destroy(v, id);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	return VGPU_OK;
}

static vgpu_status obj_destroy(struct vgpu_obj *o)
{
	vgpu_status st;

	if (!o)
		return VGPU_OK;
	st = o->kind == OBJ_STREAM ? o->v->ops->stream_destroy(o->v, o->id)
				   : o->v->ops->event_destroy(o->v, o->id);
	obj_free(o);
	return st;
}

VGPU_API vgpu_status vgpu_stream_create(vgpu_t *v, vgpu_stream **out, unsigned int flags)
{
	struct vgpu_obj *o = NULL;
	vgpu_status st = obj_create(v, out ? &o : NULL, flags, OBJ_STREAM, "vgpu_stream_create");

	if (out)
		*out = (vgpu_stream *)o; /* o is its first member */
	return st;
}

VGPU_API vgpu_status vgpu_stream_destroy(vgpu_stream *s)
{
	return obj_destroy(s ? &s->o : NULL);
}

VGPU_API vgpu_status vgpu_stream_synchronize(vgpu_stream *s)
{
	if (!s)
		return null_arg("vgpu_stream_synchronize", "stream");
	return s->o.v->ops->stream_sync(s->o.v, s->o.id);
}

VGPU_API vgpu_status vgpu_stream_query(vgpu_stream *s)
{
	if (!s)
		return null_arg("vgpu_stream_query", "stream");
	return s->o.v->ops->stream_query(s->o.v, s->o.id);
}

VGPU_API vgpu_status vgpu_stream_wait_event(vgpu_stream *s, vgpu_event *e)
{
	if (!s || !e)
		return null_arg("vgpu_stream_wait_event", !s ? "stream" : "event");
	if (s->o.v != e->o.v)
		return vgpu__error(VGPU_ERR_BAD_HANDLE,
				   "vgpu_stream_wait_event: stream and event belong to different handles");
	return s->o.v->ops->stream_wait_event(s->o.v, s->o.id, e->o.id);
}

VGPU_API vgpu_status vgpu_event_create(vgpu_t *v, vgpu_event **out, unsigned int flags)
{
	struct vgpu_obj *o = NULL;
	vgpu_status st = obj_create(v, out ? &o : NULL, flags, OBJ_EVENT, "vgpu_event_create");

	if (out)
		*out = (vgpu_event *)o; /* o is its first member */
	return st;
}

VGPU_API vgpu_status vgpu_event_destroy(vgpu_event *e)
{
	return obj_destroy(e ? &e->o : NULL);
}

VGPU_API vgpu_status vgpu_event_record(vgpu_event *e, vgpu_stream *s)
{
	vgpu_status st = VGPU_OK;
	uint32_t sid;

	if (!e)
		return null_arg("vgpu_event_record", "event");
	sid = sid_of(e->o.v, s, &st, "vgpu_event_record");
	if (st)
		return st;
	return e->o.v->ops->event_record(e->o.v, e->o.id, sid);
}

VGPU_API vgpu_status vgpu_event_synchronize(vgpu_event *e)
{
	if (!e)
		return null_arg("vgpu_event_synchronize", "event");
	return e->o.v->ops->event_sync(e->o.v, e->o.id);
}

VGPU_API vgpu_status vgpu_event_query(vgpu_event *e)
{
	if (!e)
		return null_arg("vgpu_event_query", "event");
	return e->o.v->ops->event_query(e->o.v, e->o.id);
}

VGPU_API vgpu_status vgpu_event_elapsed_ms(float *ms, vgpu_event *a, vgpu_event *b)
{
	if (!ms || !a || !b)
		return null_arg("vgpu_event_elapsed_ms", !ms ? "ms" : "event");
	if (a->o.v != b->o.v)
		return vgpu__error(VGPU_ERR_BAD_HANDLE,
				   "vgpu_event_elapsed_ms: events belong to different handles");
	return a->o.v->ops->event_elapsed(a->o.v, a->o.id, b->o.id, ms);
}

/* ------------------------------------------------------------------------ */
/* Modules and launch                                                       */

VGPU_API vgpu_status vgpu_module_load(vgpu_t *v, const void *image, size_t size, vgpu_module **m)
{
	uint32_t id;
	vgpu_status st;

	CHECK_V(v, "vgpu_module_load");
	if (!m)
		return null_arg("vgpu_module_load", "out");
	*m = NULL;
	if (!image || !size)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_module_load: empty image");
	st = v->ops->module_load(v, image, size, &id);
	if (st)
		return st;
	*m = obj_new(v, sizeof(vgpu_module), OBJ_MODULE, id);
	if (!*m) {
		v->ops->module_unload(v, id);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	return VGPU_OK;
}

VGPU_API vgpu_status vgpu_module_load_file(vgpu_t *v, const char *path, vgpu_module **m)
{
	FILE *f;
	long len;
	void *buf;
	vgpu_status st;

	CHECK_V(v, "vgpu_module_load_file");
	if (!path || !m)
		return null_arg("vgpu_module_load_file", !path ? "path" : "out");
	*m = NULL;
	f = fopen(path, "rb");
	if (!f)
		return vgpu__error(VGPU_ERR_NOT_FOUND, "vgpu_module_load_file: %s: %s", path,
				   strerror(errno));
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
		fclose(f);
		return vgpu__error(VGPU_ERR_BAD_MODULE, "vgpu_module_load_file: %s: not a regular file",
				   path);
	}
	if (len == 0 || len > (1l << 30)) {
		fclose(f);
		return vgpu__error(VGPU_ERR_BAD_MODULE, "vgpu_module_load_file: %s: size %ld out of "
				   "range (1 byte to 1 GiB)", path, len);
	}
	buf = malloc((size_t)len + 1);
	if (!buf) {
		fclose(f);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
		fclose(f);
		free(buf);
		return vgpu__error(VGPU_ERR_BAD_MODULE, "vgpu_module_load_file: %s: read error", path);
	}
	fclose(f);
	((char *)buf)[len] = '\0'; /* PTX text wants its NUL; not counted in size */
	st = vgpu_module_load(v, buf, (size_t)len, m);
	if (st)
		vgpu__error_prefix(st, "%s", path);
	free(buf);
	return st;
}

VGPU_API vgpu_status vgpu_module_unload(vgpu_module *m)
{
	vgpu_t *v;
	struct vgpu_obj *o, *next;
	vgpu_status st;

	if (!m)
		return VGPU_OK;
	v = m->o.v;
	st = v->ops->module_unload(v, m->o.id);
	/* Its function wrappers die with it. */
	pthread_mutex_lock(&v->objlock);
	for (o = v->objs; o; o = next) {
		next = o->next;
		if (o->kind == OBJ_FUNCTION && ((vgpu_function *)o)->m == m) {
			if (o->prev)
				o->prev->next = o->next;
			else
				v->objs = o->next;
			if (o->next)
				o->next->prev = o->prev;
			free(o);
		}
	}
	pthread_mutex_unlock(&v->objlock);
	obj_free(&m->o);
	return st;
}

VGPU_API vgpu_status vgpu_module_function(vgpu_module *m, const char *name, vgpu_function **f)
{
	uint32_t id;
	vgpu_status st;

	if (!m || !name || !f)
		return null_arg("vgpu_module_function", !m ? "module" : !name ? "name" : "out");
	*f = NULL;
	st = m->o.v->ops->function(m->o.v, m->o.id, name, &id);
	if (st)
		return st;
	*f = obj_new(m->o.v, sizeof(vgpu_function), OBJ_FUNCTION, id);
	if (!*f)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	(*f)->m = m;
	return VGPU_OK;
}

VGPU_API vgpu_status vgpu_launch(vgpu_t *v, vgpu_function *f, vgpu_dim3 grid, vgpu_dim3 block,
				 size_t shmem, vgpu_stream *s, const vgpu_arg *args,
				 unsigned int nargs)
{
	vgpu_status st = VGPU_OK;
	uint32_t sid;

	CHECK_V(v, "vgpu_launch");
	if (!f)
		return null_arg("vgpu_launch", "function");
	if (f->o.v != v)
		return vgpu__error(VGPU_ERR_BAD_HANDLE, "vgpu_launch: the function belongs to another "
				   "handle");
	sid = sid_of(v, s, &st, "vgpu_launch");
	if (st)
		return st;
	return v->ops->launch(v, f->o.id, grid, block, shmem, sid, args, nargs);
}
