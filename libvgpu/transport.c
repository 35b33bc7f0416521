/* SPDX-License-Identifier: MIT */
/*
 * transport.c - transport registry: built-in tables first, then modules
 * (transport_<scheme>.so) loaded with dlopen on first use and kept forever.
 */
#include "config.h"

#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "transport.h"

#ifndef VGPU_TRANSPORTDIR
#define VGPU_TRANSPORTDIR "/usr/local/lib/vgpu/transports"
#endif
#define MAX_MODULES 8

static void host_log(int lvl, const char *fmt, ...) VGPU_PRINTF(2, 3);
static void host_log(int lvl, const char *fmt, ...)
{
	char buf[VGPU_ERRMSG_MAX];
	va_list ap;

	if (lvl < 0)
		lvl = 0;
	if (lvl > VGPU_LOG_DEBUG)
		lvl = VGPU_LOG_DEBUG;
	if (!vgpu__log_enabled((enum vgpu_log_level)lvl))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	vgpu__log((enum vgpu_log_level)lvl, "%s", buf);
}

static vgpu_status host_error(vgpu_status st, const char *fmt, ...) VGPU_PRINTF(2, 3);
static vgpu_status host_error(vgpu_status st, const char *fmt, ...)
{
	char buf[VGPU_ERRMSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return vgpu__error(st < 0 ? st : VGPU_ERR_INTERNAL, "%s", buf);
}

const struct vgpu_transport_host vgpu__transport_host = {
	.size = sizeof(struct vgpu_transport_host),
	.error = host_error,
	.log = host_log,
	.error_msg = vgpu__error_msg,
};

static const struct vgpu_transport_ops *const builtin[] = {
	&vgpu__transport_tcp,
	&vgpu__transport_uring,
};

static pthread_mutex_t mod_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct vgpu_transport_ops *modules[MAX_MODULES];
static unsigned nmodules;

static const struct vgpu_transport_ops *match(const struct vgpu_transport_ops *t, const char *scheme)
{
	for (const char *const *s = t->schemes; s && *s; s++)
		if (!strcmp(*s, scheme))
			return t;
	return NULL;
}

/* Minimal size of a table we can use: up to and including peer. */
#define OPS_MIN_SIZE (offsetof(struct vgpu_transport_ops, peer) + sizeof(void *))

static const struct vgpu_transport_ops *try_load(const char *path, const char *scheme, char *why,
						 size_t whylen)
{
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	vgpu_transport_init_fn init;
	const struct vgpu_transport_ops *t;

	if (!h) {
		snprintf(why, whylen, "%s", dlerror());
		return NULL;
	}
	*(void **)&init = dlsym(h, VGPU_TRANSPORT_INIT_SYMBOL);
	if (!init) {
		snprintf(why, whylen, "%s: no %s symbol", path, VGPU_TRANSPORT_INIT_SYMBOL);
		return NULL; /* never dlclose: see vgpu/transport.h */
	}
	vgpu__error_clear();
	t = init(&vgpu__transport_host, VGPU_TRANSPORT_ABI);
	if (!t) {
		snprintf(why, whylen, "%s: %s", path,
			 vgpu__error_msg()[0] ? vgpu__error_msg() : "module refused to start");
		return NULL;
	}
	if (t->abi != VGPU_TRANSPORT_ABI || t->size < OPS_MIN_SIZE) {
		snprintf(why, whylen, "%s: built for transport ABI %u (size %zu), this library speaks ABI %u",
			 path, t->abi, t->size, VGPU_TRANSPORT_ABI);
		return NULL;
	}
	if (!match(t, scheme)) {
		snprintf(why, whylen, "%s: does not serve scheme '%s'", path, scheme);
		return NULL;
	}
	return t;
}

const struct vgpu_transport_ops *vgpu__transport_find(const char *scheme)
{
	const struct vgpu_transport_ops *t = NULL;
	char why[VGPU_ERRMSG_MAX] = "";
	char file[96], path[4096];
	const char *env;

	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if (match(builtin[i], scheme))
			return builtin[i];
	for (const char *p = scheme; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-') {
			vgpu__error(VGPU_ERR_BAD_URI, "no transport for scheme '%s'", scheme);
			return NULL;
		}
	if (!*scheme || strlen(scheme) > 32) {
		vgpu__error(VGPU_ERR_BAD_URI, "no transport for scheme '%s'", scheme);
		return NULL;
	}
	pthread_mutex_lock(&mod_lock);
	for (unsigned i = 0; i < nmodules; i++)
		if (match(modules[i], scheme)) {
			t = modules[i];
			goto out;
		}
	snprintf(file, sizeof(file), "transport_%s.so", scheme);
	env = getenv("VGPU_TRANSPORT_PATH");
	if (env && *env) {
		const char *p = env;

		while (*p && !t) {
			size_t n = strcspn(p, ":");
			if (n && n < sizeof(path) - sizeof(file) - 2) {
				snprintf(path, sizeof(path), "%.*s/%s", (int)n, p, file);
				t = try_load(path, scheme, why, sizeof(why));
			}
			p += n;
			if (*p == ':')
				p++;
		}
	}
	if (!t) {
		char w2[VGPU_ERRMSG_MAX];

		snprintf(path, sizeof(path), "%s/%s", VGPU_TRANSPORTDIR, file);
		t = try_load(path, scheme, w2, sizeof(w2));
		if (!t && !why[0])
			snprintf(why, sizeof(why), "%s", w2);
	}
	if (t && nmodules < MAX_MODULES)
		modules[nmodules++] = t;
out:
	pthread_mutex_unlock(&mod_lock);
	if (!t)
		vgpu__error(VGPU_ERR_BAD_URI, "no transport for scheme '%s' (module %s: %s)", scheme, file,
			    why);
	return t;
}

static const char *addr_param(const struct vgpu_tp_addr *a, const char *key)
{
	return vgpu__uri_get(a->priv, key);
}

void vgpu__tp_addr(const struct vgpu_uri *u, struct vgpu_tp_addr *a)
{
	memset(a, 0, sizeof(*a));
	a->size = sizeof(*a);
	a->text = "";
	a->scheme = u->scheme;
	a->host = u->host;
	a->port = u->port;
	a->path = u->path;
	a->param = addr_param;
	a->priv = u;
}
