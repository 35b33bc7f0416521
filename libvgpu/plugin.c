/* SPDX-License-Identifier: MIT */
/*
 * plugin.c - finding and loading plugins, parameter tables, spec lists.
 *
 * Search order for NAME.so (the first found wins; see vgpu-plugin(7)):
 *   1. each directory of $VGPU_PLUGIN_PATH (':'-separated)
 *   2. beside the libvgpu shared object: <dir>/vgpu/plugins, and in a build
 *      tree (<builddir>/.libs/libvgpu.so) <builddir>/plugins/.libs
 *   3. the installed plugin directory, VGPU_PLUGINDIR ($libdir/vgpu/plugins)
 * Plugins are loaded once and never unloaded (unloading is not safe in a
 * multithreaded program).
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "pluginhost.h"
#include "uri.h"

#ifndef VGPU_PLUGINDIR
#define VGPU_PLUGINDIR "/usr/local/lib/vgpu/plugins"
#endif

#define MAX_DIRS 32

static pthread_mutex_t plugins_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vgpu__plugin *plugins; /* loaded, never freed */

VGPU_API const char *vgpu_plugin_kind_name(uint32_t kind)
{
	switch (kind) {
	case VGPU_PLUGIN_SCHEDULER: return "scheduler";
	case VGPU_PLUGIN_MEMORY: return "memory";
	case VGPU_PLUGIN_AUTOSCALE: return "autoscale";
	default: return "unknown";
	}
}

VGPU_API const char *vgpu_param_type_name(uint32_t type)
{
	static const char *n[] = { "?", "int", "uint", "double", "size", "string", "bool",
				   "list", "time" };

	return type < sizeof(n) / sizeof(n[0]) ? n[type] : "?";
}

/* ------------------------------------------------------------------------ */
/* Search path                                                              */

struct dirlist {
	char *d[MAX_DIRS];
	unsigned n;
};

static void dirs_add(struct dirlist *l, const char *d, size_t len)
{
	char *s;

	if (!len || l->n == MAX_DIRS)
		return;
	s = strndup(d, len);
	if (!s)
		return;
	for (unsigned i = 0; i < l->n; i++)
		if (!strcmp(l->d[i], s)) {
			free(s);
			return;
		}
	l->d[l->n++] = s;
}

static void dirs_free(struct dirlist *l)
{
	for (unsigned i = 0; i < l->n; i++)
		free(l->d[i]);
	l->n = 0;
}

static void dirs_build(struct dirlist *l)
{
	const char *env = getenv("VGPU_PLUGIN_PATH");
	Dl_info info;

	l->n = 0;
	while (env && *env) {
		const char *c = strchr(env, ':');
		size_t len = c ? (size_t)(c - env) : strlen(env);

		dirs_add(l, env, len);
		env = c ? c + 1 : NULL;
	}
	if (dladdr((void *)&dirs_build, &info) && info.dli_fname && strchr(info.dli_fname, '/')) {
		char buf[2048];
		const char *slash = strrchr(info.dli_fname, '/');
		size_t dlen = (size_t)(slash - info.dli_fname);
		int n;

		n = snprintf(buf, sizeof(buf), "%.*s/vgpu/plugins", (int)dlen, info.dli_fname);
		if (n > 0 && (size_t)n < sizeof(buf))
			dirs_add(l, buf, (size_t)n);
		if (dlen >= 6 && !strncmp(slash - 6, "/.libs", 6)) {
			n = snprintf(buf, sizeof(buf), "%.*s/plugins/.libs", (int)dlen - 6,
				     info.dli_fname);
			if (n > 0 && (size_t)n < sizeof(buf))
				dirs_add(l, buf, (size_t)n);
		}
	}
	dirs_add(l, VGPU_PLUGINDIR, strlen(VGPU_PLUGINDIR));
}

static int valid_name(const char *name)
{
	if (!*name || strlen(name) >= 64)
		return 0;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
			return 0;
	return name[0] != '.';
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */

static size_t min_ops_size(uint32_t kind)
{
	switch (kind) {
	case VGPU_PLUGIN_SCHEDULER:
		return offsetof(struct vgpu_sched_ops, charge) + sizeof(void *);
	case VGPU_PLUGIN_MEMORY:
		return sizeof(size_t);
	case VGPU_PLUGIN_AUTOSCALE:
		return offsetof(struct vgpu_autoscale_ops, signal) + sizeof(void *);
	default:
		return 0;
	}
}

/* Check a descriptor; message set on refusal. */
static vgpu_status check_desc(const char *name, const char *path,
			      const struct vgpu_plugin_desc *d)
{
	size_t need;

	if (!d)
		return vgpu__error(VGPU_ERR_PLUGIN, "plugin '%s' (%s): its entry returned no "
				   "descriptor", name, path);
	if (d->abi_version != VGPU_PLUGIN_ABI_VERSION)
		return vgpu__error(VGPU_ERR_PLUGIN, "plugin '%s' (%s) was built for plugin ABI %u; "
				   "this libvgpu %s speaks plugin ABI %u only: rebuild the "
				   "plugin against this version's <vgpu/plugin.h>", name, path,
				   d->abi_version, PACKAGE_VERSION, VGPU_PLUGIN_ABI_VERSION);
	if (d->kind < VGPU_PLUGIN_SCHEDULER || d->kind > VGPU_PLUGIN_AUTOSCALE)
		return vgpu__error(VGPU_ERR_PLUGIN, "plugin '%s' (%s): unknown kind %u (expected "
				   "scheduler, memory or autoscale)", name, path, d->kind);
	if (!d->name || !d->ops)
		return vgpu__error(VGPU_ERR_PLUGIN, "plugin '%s' (%s): descriptor without %s",
				   name, path, d->name ? "ops" : "name");
	need = min_ops_size(d->kind);
	if (*(const size_t *)d->ops < need)
		return vgpu__error(VGPU_ERR_PLUGIN, "plugin '%s' (%s): %s ops table of %zu bytes, at "
				   "least %zu expected", name, path, vgpu_plugin_kind_name(d->kind),
				   *(const size_t *)d->ops, need);
	if (d->kind == VGPU_PLUGIN_SCHEDULER) {
		const struct vgpu_sched_ops *o = d->ops;

		if (!o->pick || !o->runnable || !o->idle)
			return vgpu__error(VGPU_ERR_PLUGIN, "plugin '%s' (%s): scheduler without "
					   "pick, runnable or idle", name, path);
	}
	for (const struct vgpu_plugin_param *p = d->params; p && p->name; p++)
		if (p->type < VGPU_PARAM_INT || p->type > VGPU_PARAM_TIME)
			return vgpu__error(VGPU_ERR_PLUGIN, "plugin '%s' (%s): parameter '%s' has "
					   "unknown type %u", name, path, p->name, p->type);
	if (strcmp(d->name, name))
		vgpu_warn("plugin file %s names itself '%s'; it is known as '%s'", path, d->name,
			  name);
	return VGPU_OK;
}

/* Load path as plugin `name` (plugins_lock held). */
static vgpu_status load_path(const char *name, const char *path, const struct vgpu__plugin **out)
{
	struct vgpu__plugin *p;
	vgpu_plugin_entry_fn entry;
	const struct vgpu_plugin_desc *d;
	void *h;
	vgpu_status st;

	for (p = plugins; p; p = p->next)
		if (!strcmp(p->name, name)) {
			*out = p;
			return VGPU_OK;
		}
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return vgpu__error(VGPU_ERR_PLUGIN, "plugin '%s': cannot load %s: %s", name, path,
				   dlerror());
	*(void **)&entry = dlsym(h, VGPU_PLUGIN_ENTRY_SYMBOL);
	if (!entry)
		return vgpu__error(VGPU_ERR_PLUGIN, "plugin '%s' (%s) has no %s symbol: not a "
				   "libvgpu plugin", name, path, VGPU_PLUGIN_ENTRY_SYMBOL);
	/* Never dlclose: a refused plugin stays mapped, harmlessly. */
	d = entry();
	st = check_desc(name, path, d);
	if (st)
		return st;
	p = calloc(1, sizeof(*p));
	if (!p)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	p->desc = d;
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->path, sizeof(p->path), "%s", path);
	p->next = plugins;
	plugins = p;
	vgpu_debug("plugin %s loaded from %s", name, path);
	*out = p;
	return VGPU_OK;
}

static int file_exists(const char *path)
{
	FILE *f = fopen(path, "rb");

	if (!f)
		return 0;
	fclose(f);
	return 1;
}

vgpu_status vgpu__plugin_load(const char *name, const struct vgpu__plugin **out)
{
	struct dirlist dl;
	char path[1100], searched[1024] = "";
	size_t used = 0;
	vgpu_status st = VGPU_ERR_NOT_FOUND;

	*out = NULL;
	if (!name || !valid_name(name))
		return vgpu__error(VGPU_ERR_PLUGIN, "bad plugin name '%s' (letters, digits, '-', "
				   "'_' and '.')", name ? name : "");
	pthread_mutex_lock(&plugins_lock);
	for (struct vgpu__plugin *p = plugins; p; p = p->next)
		if (!strcmp(p->name, name)) {
			*out = p;
			pthread_mutex_unlock(&plugins_lock);
			return VGPU_OK;
		}
	dirs_build(&dl);
	for (unsigned i = 0; i < dl.n; i++) {
		snprintf(path, sizeof(path), "%s/%s.so", dl.d[i], name);
		if (file_exists(path)) {
			st = load_path(name, path, out);
			break;
		}
		if (used < sizeof(searched) - 1) {
			int n = snprintf(searched + used, sizeof(searched) - used, "%s%s",
					 used ? ":" : "", dl.d[i]);

			if (n > 0)
				used += (size_t)n;
		}
	}
	pthread_mutex_unlock(&plugins_lock);
	dirs_free(&dl);
	if (st == VGPU_ERR_NOT_FOUND)
		return vgpu__error(VGPU_ERR_NOT_FOUND, "plugin '%s' not found (looked for %s.so in "
				   "%s; set VGPU_PLUGIN_PATH)", name, name, searched);
	return st;
}

VGPU_API vgpu_status vgpu_plugin_list(void (*fn)(void *arg, const struct vgpu_plugin_info *info),
				      void *arg, unsigned int flags)
{
	struct dirlist dl;
	char **seen = NULL;
	unsigned nseen = 0, cap = 0;

	if (!fn)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_plugin_list: fn is NULL");
	if (flags)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_plugin_list: flags must be 0");
	dirs_build(&dl);
	for (unsigned i = 0; i < dl.n; i++) {
		DIR *dir = opendir(dl.d[i]);
		struct dirent *de;
		char **names = NULL;
		unsigned nn = 0, ncap = 0;

		if (!dir)
			continue;
		while ((de = readdir(dir))) {
			size_t len = strlen(de->d_name);

			if (len < 4 || strcmp(de->d_name + len - 3, ".so"))
				continue;
			if (nn == ncap) {
				char **t = realloc(names, (ncap = ncap ? 2 * ncap : 16) * sizeof(*t));

				if (!t)
					break;
				names = t;
			}
			if (!(names[nn] = strndup(de->d_name, len - 3)))
				break;
			nn++;
		}
		closedir(dir);
		/* stable order: by name */
		for (unsigned a = 1; a < nn; a++)
			for (unsigned b = a; b > 0 && strcmp(names[b - 1], names[b]) > 0; b--) {
				char *t = names[b];

				names[b] = names[b - 1];
				names[b - 1] = t;
			}
		for (unsigned k = 0; k < nn; k++) {
			struct vgpu_plugin_info pi;
			const struct vgpu__plugin *p = NULL;
			char path[1100];
			int dup = 0;

			for (unsigned s = 0; s < nseen; s++)
				dup |= !strcmp(seen[s], names[k]);
			if (dup || !valid_name(names[k])) {
				free(names[k]);
				continue;
			}
			if (nseen == cap) {
				char **t = realloc(seen, (cap = cap ? 2 * cap : 16) * sizeof(*t));

				if (!t) {
					free(names[k]);
					continue;
				}
				seen = t;
			}
			seen[nseen++] = names[k];
			snprintf(path, sizeof(path), "%s/%s.so", dl.d[i], names[k]);
			memset(&pi, 0, sizeof(pi));
			pi.size = sizeof(pi);
			pi.name = names[k];
			pi.path = path;
			pthread_mutex_lock(&plugins_lock);
			pi.status = load_path(names[k], path, &p);
			pthread_mutex_unlock(&plugins_lock);
			if (pi.status == VGPU_OK) {
				pi.desc = p->desc;
				pi.path = p->path;
			} else {
				pi.error = vgpu__error_msg();
			}
			fn(arg, &pi);
		}
		free(names);
	}
	for (unsigned s = 0; s < nseen; s++)
		free(seen[s]);
	free(seen);
	dirs_free(&dl);
	vgpu__error_clear();
	return VGPU_OK;
}

/* ------------------------------------------------------------------------ */
/* Parameters                                                               */

vgpu_status vgpu__parse_time_ns(const char *s, uint64_t *out)
{
	char *end;
	double v, mul = 1e6;

	if (!s || !*s || isspace((unsigned char)*s) || *s == '-')
		return VGPU_ERR_INVALID;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		return VGPU_ERR_INVALID;
	if (!strcmp(end, "ns"))
		mul = 1;
	else if (!strcmp(end, "us"))
		mul = 1e3;
	else if (!strcmp(end, "ms") || !*end)
		mul = 1e6;
	else if (!strcmp(end, "s"))
		mul = 1e9;
	else if (!strcmp(end, "m") || !strcmp(end, "min"))
		mul = 60e9;
	else
		return VGPU_ERR_INVALID;
	if (v * mul >= 1.8e19)
		return VGPU_ERR_INVALID;
	*out = (uint64_t)llround(v * mul);
	return VGPU_OK;
}

static int parse_bool(const char *s, int *b)
{
	static const char *yes[] = { "1", "yes", "true", "on" }, *no[] = { "0", "no", "false", "off" };

	for (int i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i])) {
			*b = 1;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*b = 0;
			return 0;
		}
	}
	return -1;
}

static const char *type_hint(uint32_t t)
{
	switch (t) {
	case VGPU_PARAM_INT: return "an integer";
	case VGPU_PARAM_UINT: return "a non-negative integer";
	case VGPU_PARAM_DOUBLE: return "a number";
	case VGPU_PARAM_SIZE: return "a size like 4096, 256M or 4G";
	case VGPU_PARAM_BOOL: return "yes/no, true/false, on/off or 1/0";
	case VGPU_PARAM_TIME: return "a duration like 500us, 100ms or 2s";
	default: return "text";
	}
}

static int conf_own(struct vgpu__plugin_conf *c, void *ptr)
{
	char **t = realloc(c->strings, (c->nstrings + 1) * sizeof(*t));

	if (!t)
		return -1;
	c->strings = t;
	c->strings[c->nstrings++] = ptr;
	return 0;
}

static char *conf_keep(struct vgpu__plugin_conf *c, const char *s, size_t len)
{
	char **t = realloc(c->strings, (c->nstrings + 1) * sizeof(*t));
	char *d;

	if (!t)
		return NULL;
	c->strings = t;
	if (!(d = strndup(s, len)))
		return NULL;
	c->strings[c->nstrings++] = d;
	return d;
}

/* Parse text for parameter p into v; message set on error. */
static vgpu_status parse_value(struct vgpu__plugin_conf *c, const struct vgpu_plugin_param *p,
			       const char *text, union vgpu_param_value *v, int is_default)
{
	const char *pname = c->plugin->name;
	char *end;
	double num = 0;
	int bounded = p->min != p->max;

	errno = 0;
	switch (p->type) {
	case VGPU_PARAM_INT:
		v->i = strtoll(text, &end, 0);
		if (errno || !*text || *end)
			goto bad;
		num = (double)v->i;
		break;
	case VGPU_PARAM_UINT:
		if (*text == '-')
			goto bad;
		v->u = strtoull(text, &end, 0);
		if (errno || !*text || *end)
			goto bad;
		num = (double)v->u;
		break;
	case VGPU_PARAM_DOUBLE:
		v->d = strtod(text, &end);
		if (errno || !*text || *end || !isfinite(v->d))
			goto bad;
		num = v->d;
		break;
	case VGPU_PARAM_SIZE:
		if (vgpu__parse_size(text, &v->u) != VGPU_OK)
			goto bad;
		num = (double)v->u;
		break;
	case VGPU_PARAM_TIME:
		if (vgpu__parse_time_ns(text, &v->u) != VGPU_OK)
			goto bad;
		num = (double)v->u;
		break;
	case VGPU_PARAM_BOOL:
		if (parse_bool(text, &v->b))
			goto bad;
		return VGPU_OK;
	case VGPU_PARAM_STRING:
		if (!(v->s = conf_keep(c, text, strlen(text))))
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
		return VGPU_OK;
	case VGPU_PARAM_LIST: {
		const char **items = NULL;
		uint32_t n = 0;
		const char *q = text;

		while (*q) {
			const char *e = strchr(q, ';');
			size_t len = e ? (size_t)(e - q) : strlen(q);

			if (len) {
				const char **t = realloc(items, (n + 1) * sizeof(*t));

				if (!t || !(t[n] = conf_keep(c, q, len))) {
					free(t ? t : items);
					return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
				}
				items = t;
				n++;
			}
			q = e ? e + 1 : q + len;
		}
		/* the array itself is owned too */
		if (conf_own(c, (void *)items)) {
			free(items);
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
		}
		v->list.items = items;
		v->list.n = n;
		return VGPU_OK;
	}
	default:
		goto bad;
	}
	if (bounded && (num < p->min || num > p->max)) {
		if (p->type == VGPU_PARAM_TIME)
			return vgpu__error(VGPU_ERR_PLUGIN, "plugin %s: parameter '%s': %s is out of "
					   "range [%gms, %gms]", pname, p->name, text,
					   p->min / 1e6, p->max / 1e6);
		return vgpu__error(VGPU_ERR_PLUGIN, "plugin %s: parameter '%s': %s is out of range "
				   "[%g, %g]", pname, p->name, text, p->min, p->max);
	}
	return VGPU_OK;
bad:
	return vgpu__error(VGPU_ERR_PLUGIN, "plugin %s: %sparameter '%s' (%s): '%s' is not %s",
			   pname, is_default ? "default of " : "", p->name,
			   vgpu_param_type_name(p->type), text, type_hint(p->type));
}

void vgpu__plugin_conf_free(struct vgpu__plugin_conf *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->nstrings; i++)
		free(c->strings[i]);
	free(c->strings);
	free(c->values);
	free(c->spec);
	free(c);
}

vgpu_status vgpu__plugin_conf_new(const char *spec, struct vgpu__plugin_conf **out)
{
	struct vgpu__plugin_conf *c;
	const struct vgpu_plugin_param *params;
	const char *colon;
	char name[64];
	unsigned np = 0;
	unsigned char *given = NULL;
	vgpu_status st;
	char *args, *tok, *save = NULL;

	*out = NULL;
	colon = strchr(spec, ':');
	if (!colon)
		colon = spec + strlen(spec);
	if ((size_t)(colon - spec) >= sizeof(name) || colon == spec)
		return vgpu__error(VGPU_ERR_PLUGIN, "bad plugin spec '%.200s': expected "
				   "NAME[:key=value,...]", spec);
	memcpy(name, spec, (size_t)(colon - spec));
	name[colon - spec] = '\0';
	if (!(c = calloc(1, sizeof(*c))) || !(c->spec = strdup(spec))) {
		free(c);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	}
	st = vgpu__plugin_load(name, &c->plugin);
	if (st)
		goto fail;
	params = c->plugin->desc->params;
	while (params && params[np].name)
		np++;
	c->values = calloc(np + 1, sizeof(*c->values));
	given = calloc(np + 1, 1);
	if (!c->values || !given) {
		st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
		goto fail;
	}
	for (unsigned i = 0; i < np; i++) {
		st = parse_value(c, &params[i], params[i].default_value ? params[i].default_value : "",
				 &c->values[i], 1);
		if (st && params[i].default_value) /* "" for a numeric type: 0 */
			goto fail;
		vgpu__error_clear();
	}
	args = c->spec + (colon - spec);
	if (*args == ':')
		args++;
	for (tok = strtok_r(args, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		unsigned i;

		if (!eq) {
			st = vgpu__error(VGPU_ERR_PLUGIN, "plugin %s: '%s' is not key=value", name, tok);
			goto fail;
		}
		*eq = '\0';
		for (i = 0; i < np && strcmp(params[i].name, tok); i++)
			;
		if (i == np) {
			char known[512] = "";
			size_t u = 0;

			for (unsigned k = 0; k < np && u < sizeof(known) - 1; k++) {
				int n = snprintf(known + u, sizeof(known) - u, "%s%s", k ? ", " : "",
						 params[k].name);

				if (n > 0)
					u += (size_t)n;
			}
			st = vgpu__error(VGPU_ERR_PLUGIN, "plugin %s: unknown parameter '%s' (%s%s)",
					 name, tok, np ? "known: " : "it takes no parameters",
					 known);
			goto fail;
		}
		if (given[i]) {
			st = vgpu__error(VGPU_ERR_PLUGIN, "plugin %s: parameter '%s' given twice",
					 name, tok);
			goto fail;
		}
		given[i] = 1;
		st = parse_value(c, &params[i], eq + 1, &c->values[i], 0);
		*eq = '=';
		if (st)
			goto fail;
	}
	/* strtok_r cut the spec copy: restore it */
	free(c->spec);
	c->spec = strdup(spec);
	free(given);
	c->cfg.size = sizeof(c->cfg);
	c->cfg.nvalues = np;
	c->cfg.values = c->values;
	c->cfg.spec = c->spec ? c->spec : "";
	*out = c;
	return VGPU_OK;
fail:
	free(given);
	vgpu__plugin_conf_free(c);
	return st;
}

/* Does this comma-separated token start a new spec? */
static int starts_spec(const char *tok, size_t len)
{
	const char *eq = memchr(tok, '=', len);
	const char *colon = memchr(tok, ':', len);

	return !eq || (colon && colon < eq);
}

vgpu_status vgpu__plugin_set_parse(const char *text, struct vgpu__plugin_set *out)
{
	char **specs = NULL;
	unsigned n = 0;
	const char *p = text;
	vgpu_status st = VGPU_OK;

	memset(out, 0, sizeof(*out));
	if (!text)
		return VGPU_OK;
	out->text = strdup(text);
	if (!out->text)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
	/* Split into specs. */
	while (*p) {
		const char *chunk_end;

		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		chunk_end = p;
		while (*chunk_end && !isspace((unsigned char)*chunk_end))
			chunk_end++;
		/* tokens of the chunk; its first starts a spec */
		int first = 1;

		while (p < chunk_end) {
			const char *comma = memchr(p, ',', (size_t)(chunk_end - p));
			size_t len = comma ? (size_t)(comma - p) : (size_t)(chunk_end - p);

			if (len && (first || starts_spec(p, len))) {
				first = 0;
				char **t = realloc(specs, (n + 1) * sizeof(*t));

				if (!t || !(t[n] = strndup(p, len))) {
					free(t ? t : specs);
					specs = NULL;
					st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
					goto out;
				}
				specs = t;
				n++;
			} else if (len) {
				size_t old = strlen(specs[n - 1]);
				char *t = realloc(specs[n - 1], old + len + 2);

				if (!t) {
					st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
					goto out;
				}
				t[old] = strchr(t, ':') ? ',' : ':';
				memcpy(t + old + 1, p, len);
				t[old + 1 + len] = '\0';
				specs[n - 1] = t;
			}
			p += len;
			if (p < chunk_end)
				p++; /* the comma */
		}
		p = chunk_end;
	}
	out->v = calloc(n ? n : 1, sizeof(*out->v));
	if (!out->v) {
		st = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "no host memory");
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		st = vgpu__plugin_conf_new(specs[i], &out->v[i]);
		if (st)
			goto out;
		out->n++;
		for (unsigned k = 0; k < i; k++)
			if (out->v[k]->plugin == out->v[i]->plugin) {
				st = vgpu__error(VGPU_ERR_PLUGIN, "plugin %s is given twice",
						 out->v[i]->plugin->name);
				goto out;
			}
	}
out:
	for (unsigned i = 0; i < n; i++)
		free(specs[i]);
	free(specs);
	if (st)
		vgpu__plugin_set_free(out);
	return st;
}

void vgpu__plugin_set_free(struct vgpu__plugin_set *set)
{
	for (unsigned i = 0; i < set->n; i++)
		vgpu__plugin_conf_free(set->v[i]);
	free(set->v);
	free(set->text);
	memset(set, 0, sizeof(*set));
}

const struct vgpu__plugin_conf *vgpu__plugin_set_find(const struct vgpu__plugin_set *set,
						      uint32_t kind)
{
	for (unsigned i = 0; i < set->n; i++)
		if (set->v[i]->plugin->desc->kind == kind)
			return set->v[i];
	return NULL;
}
