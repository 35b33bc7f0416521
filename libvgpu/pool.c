/* SPDX-License-Identifier: MIT */
/*
 * pool.c - opening a handle from a pool of servers (see vgpu/pool.h).
 *
 * Each placement round reads the pool (pool=FILE again), asks every server
 * for its status, keeps those that fit the request and tries them from the
 * least loaded. A round that finds nothing either fails with every server's
 * reason or, with ?wait=, sleeps and tries again (telling the first
 * reachable server that a client waits, so its autoscale plugins see the
 * demand).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>

#include "door.h"
#include "error.h"
#include "pluginhost.h"
#include "status.h"
#include "uri.h"
#include "vgpu/pool.h"

#define POOL_MAX 64
#define POLL_MS 250
#define WHY_MAX 160

struct cand {
	char text[VGPU_URI_MAX];   /* the URI to open */
	struct vgpu_uri u;
	struct vgpu_node_status *st;
	char why[WHY_MAX];         /* why it does not fit ("" = fits) */
	double load;
	uint64_t free_mem;
};

struct pool {
	struct cand c[POOL_MAX];
	int n;
	char defaults[VGPU_URI_MAX]; /* "?mem=1G&share=0.5" applied to items without params */
	uint64_t wait_ns;
	uint64_t mem;
	double share;
};

static uint64_t mono_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void trim(char *s)
{
	char *e, *b = s;

	while (*b == ' ' || *b == '\t')
		b++;
	memmove(s, b, strlen(b) + 1);
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
}

/* Drop the pool-level parameter key (wait=) from a query string in place. */
static void drop_param(char *q, const char *key)
{
	size_t kl = strlen(key);
	char *p = q;

	while (p && *p) {
		char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);

		if (len > kl && !strncmp(p, key, kl) && p[kl] == '=') {
			if (amp) {
				memmove(p, amp + 1, strlen(amp + 1) + 1);
				continue;
			}
			if (p > q)
				p[-1] = '\0';
			else
				*p = '\0';
			break;
		}
		p = amp ? amp + 1 : NULL;
	}
}

static vgpu_status add_item(struct pool *pl, const char *item, const char *where)
{
	struct cand *c;

	if (!*item)
		return VGPU_OK;
	if (pl->n == POOL_MAX)
		return vgpu__error(VGPU_ERR_BAD_URI, "pool: too many servers (at most %d)", POOL_MAX);
	c = &pl->c[pl->n];
	memset(c, 0, sizeof(*c));
	if (!strchr(item, '?') && pl->defaults[0])
		snprintf(c->text, sizeof(c->text), "%s%s", item, pl->defaults);
	else
		snprintf(c->text, sizeof(c->text), "%s", item);
	{
		char *q = strchr(c->text, '?');

		if (q) {
			drop_param(q + 1, "wait");
			if (!q[1])
				*q = '\0';
		}
	}
	if (vgpu__uri_parse(c->text, &c->u) < 0)
		return vgpu__error_prefix(VGPU_ERR_BAD_URI, "pool%s%s", where ? " " : "",
					  where ? where : "");
	if (!strcmp(c->u.scheme, "cpu") || !strcmp(c->u.scheme, "cuda"))
		return vgpu__error(VGPU_ERR_BAD_URI, "pool: '%s' is an in-process device; a pool "
				   "holds servers (tcp://, unix://)", item);
	pl->n++;
	return VGPU_OK;
}

static vgpu_status read_file(struct pool *pl, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[VGPU_URI_MAX];
	int lineno = 0;
	vgpu_status st = VGPU_OK;

	if (!f)
		return vgpu__error(VGPU_ERR_BAD_URI, "pool file %s: %s", path, strerror(errno));
	while (st == VGPU_OK && fgets(line, sizeof(line), f)) {
		char *hash = strchr(line, '#'), where[VGPU_URI_MAX + 32];

		lineno++;
		if (hash)
			*hash = '\0';
		trim(line);
		snprintf(where, sizeof(where), "%s:%d", path, lineno);
		st = add_item(pl, line, where);
	}
	fclose(f);
	return st;
}

/* Parse the list (and read pool files) into pl->c. */
static vgpu_status pool_read(struct pool *pl, const char *list)
{
	char *copy = strdup(list), *save = NULL, *tok, *q;
	const char *last;
	vgpu_status st = VGPU_OK;

	if (!copy)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	pl->n = 0;
	pl->defaults[0] = '\0';
	/* defaults: the query of the last item */
	last = strrchr(list, ',');
	last = last ? last + 1 : list;
	q = strchr(last, '?');
	if (q)
		snprintf(pl->defaults, sizeof(pl->defaults), "%s", q);
	for (tok = strtok_r(copy, ",", &save); tok && st == VGPU_OK; tok = strtok_r(NULL, ",", &save)) {
		trim(tok);
		if (!strncmp(tok, "pool=", 5)) {
			char *fq = strchr(tok, '?');

			if (fq)
				*fq = '\0';
			st = read_file(pl, tok + 5);
		} else {
			st = add_item(pl, tok, NULL);
		}
	}
	free(copy);
	if (st == VGPU_OK && !pl->n)
		st = vgpu__error(VGPU_ERR_BAD_URI, "pool '%.200s' names no server", list);
	return st;
}

/* Does the request fit c's status? Sets c->why, c->load, c->free_mem. */
static void judge(struct pool *pl, struct cand *c)
{
	const struct vgpu_node_status *st = c->st;
	const struct vgpu_node_device *d = NULL;
	double used_share = 0;
	uint32_t on_dev = 0;

	for (uint32_t i = 0; i < st->ndevices; i++)
		if (st->devices[i].index == c->u.device)
			d = &st->devices[i];
	if (!d && c->u.device != 0) {
		snprintf(c->why, sizeof(c->why), "no device %d", c->u.device);
		return;
	}
	for (uint32_t i = 0; i < st->nsessions; i++)
		if (st->session[i].device == c->u.device) {
			used_share += st->session[i].share > 0 ? st->session[i].share : 1.0;
			on_dev++;
		}
	if (st->max_sessions && on_dev >= st->max_sessions) {
		snprintf(c->why, sizeof(c->why), "full (%u of %u sessions)", on_dev, st->max_sessions);
		return;
	}
	c->free_mem = d && d->mem_total > d->mem_used ? d->mem_total - d->mem_used : 0;
	if (d && pl->mem && pl->mem > c->free_mem) {
		snprintf(c->why, sizeof(c->why), "not enough free memory (%llu MiB free, mem=%llu MiB asked)",
			 (unsigned long long)(c->free_mem >> 20), (unsigned long long)(pl->mem >> 20));
		return;
	}
	if (pl->share > 0 && pl->share < 1 && used_share + pl->share > 1.0 + 1e-9) {
		snprintf(c->why, sizeof(c->why), "share=%g does not fit (%.2f of the device taken)",
			 pl->share, used_share);
		return;
	}
	c->load = used_share + (d ? (double)d->queued / 16.0 : 0) + (double)st->waiting;
}

/* One status request (a thread of round_once). */
struct ask {
	struct cand *c;
	const struct vgpu_open_opts *o;
	uint64_t mem, wait_id;
};

static void *ask_main(void *arg)
{
	struct ask *a = arg;
	struct cand *c = a->c;

	c->why[0] = '\0';
	if (vgpu__status_query(&c->u, a->o, a->wait_id, a->mem, &c->st) < 0)
		snprintf(c->why, sizeof(c->why), "unreachable: %s", vgpu__error_msg());
	return NULL;
}

static int by_load(const void *a, const void *b)
{
	const struct cand *x = *(const struct cand *const *)a, *y = *(const struct cand *const *)b;

	if (x->load != y->load)
		return x->load < y->load ? -1 : 1;
	if (x->free_mem != y->free_mem)
		return x->free_mem > y->free_mem ? -1 : 1;
	return 0;
}

static void pool_clear(struct pool *pl)
{
	for (int i = 0; i < pl->n; i++) {
		vgpu_node_status_free(pl->c[i].st);
		pl->c[i].st = NULL;
	}
}

/* One round. VGPU_OK: opened; VGPU_ERR_BUSY: nothing fits (message lists why). */
static vgpu_status round_once(struct pool *pl, vgpu_t *v, const struct vgpu_open_opts *o,
			      uint64_t wait_id, char *why, size_t whylen)
{
	struct cand *fit[POOL_MAX];
	int nfit = 0, told = 0;
	size_t off = 0;
	vgpu_status st;

	/* every server at once: a silent one costs one timeout, not one each */
	{
		struct ask asks[POOL_MAX];
		pthread_t th[POOL_MAX];
		int started[POOL_MAX];

		for (int i = 0; i < pl->n; i++) {
			asks[i].c = &pl->c[i];
			asks[i].o = o;
			asks[i].mem = pl->mem;
			asks[i].wait_id = 0;
			started[i] = pl->n > 1 && pthread_create(&th[i], NULL, ask_main, &asks[i]) == 0;
			if (!started[i])
				ask_main(&asks[i]);
		}
		for (int i = 0; i < pl->n; i++)
			if (started[i])
				pthread_join(th[i], NULL);
	}
	for (int i = 0; i < pl->n; i++) {
		struct cand *c = &pl->c[i];

		if (!c->st)
			continue;
		judge(pl, c);
		if (!c->why[0])
			fit[nfit++] = c;
	}
	if (wait_id && !nfit) {
		/* the first reachable server hears that a client waits */
		for (int i = 0; i < pl->n && !told; i++) {
			struct vgpu_node_status *st2 = NULL;

			if (!pl->c[i].st)
				continue;
			told = 1;
			if (vgpu__status_query(&pl->c[i].u, o, wait_id, pl->mem, &st2) == VGPU_OK)
				vgpu_node_status_free(st2);
		}
	}
	qsort(fit, (size_t)nfit, sizeof(fit[0]), by_load);
	for (int i = 0; i < nfit; i++) {
		struct cand *c = fit[i];
		struct vgpu_uri *u = &c->u;

		/* tell the server we landed (it drops our wait) */
		if (wait_id && u->nparams < VGPU_URI_MAX_PARAMS) {
			struct vgpu_uri_param *p = &u->params[u->nparams++];

			snprintf(p->key, sizeof(p->key), "wait_id");
			snprintf(p->value, sizeof(p->value), "%llx", (unsigned long long)wait_id);
		}
		st = vgpu__door_remote_open(v, u, o);
		if (wait_id)
			u->nparams--;
		if (st == VGPU_OK) {
			vgpu__uri_format(u, v->uri, sizeof(v->uri));
			vgpu_debug("pool: placed on %s (load %.2f)", v->uri, c->load);
			return VGPU_OK;
		}
		snprintf(c->why, sizeof(c->why), "open failed: %s", vgpu__error_msg());
	}
	for (int i = 0; i < pl->n && off + 1 < whylen; i++) {
		int k = snprintf(why + off, whylen - off, "%s%s: %s", i ? "; " : "", pl->c[i].text,
				 pl->c[i].why[0] ? pl->c[i].why : "?");
		if (k < 0)
			break;
		off += (size_t)k;
	}
	return VGPU_ERR_BUSY;
}

vgpu_status vgpu__pool_open(vgpu_t *v, const char *list, const struct vgpu_open_opts *o)
{
	struct pool *pl = calloc(1, sizeof(*pl));
	char why[VGPU_ERRMSG_MAX], req[128] = "";
	uint64_t deadline = 0, wait_id = 0;
	vgpu_status st;

	if (!pl)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	for (;;) {
		pool_clear(pl);
		st = pool_read(pl, list);
		if (st < 0)
			break;
		if (!deadline) {
			/* request parameters: from the first server's URI (defaults apply) */
			struct vgpu_uri *u = &pl->c[0].u;
			const char *w = NULL, *sh;
			const char *last = strrchr(list, ',');
			struct vgpu_uri tmp;

			pl->mem = 0;
			pl->share = 0;
			if (vgpu__uri_get_size(u, "mem", 0, &pl->mem) < 0) {
				st = VGPU_ERR_BAD_URI;
				break;
			}
			sh = vgpu__uri_get(u, "share");
			if (sh)
				pl->share = strtod(sh, NULL);
			/* wait= is a pool parameter (stripped from the servers' URIs) */
			last = last ? last + 1 : list;
			if (strchr(last, '?')) {
				char text[VGPU_URI_MAX];

				snprintf(text, sizeof(text), "tcp://x%s", strchr(last, '?'));
				if (vgpu__uri_parse(text, &tmp) == VGPU_OK)
					w = vgpu__uri_get(&tmp, "wait");
			}
			if (w) {
				uint64_t ns;

				if (vgpu__parse_time_ns(w, &ns) < 0) {
					st = vgpu__error(VGPU_ERR_BAD_URI, "pool: bad wait=%s (e.g. 30s, 500ms)", w);
					break;
				}
				pl->wait_ns = ns;
				if (RAND_bytes((unsigned char *)&wait_id, sizeof(wait_id)) != 1 || !wait_id)
					wait_id = (uint64_t)mono_ns() | 1;
			}
			deadline = mono_ns() + pl->wait_ns;
			if (pl->mem && pl->share > 0)
				snprintf(req, sizeof(req), " (mem=%llu MiB, share=%g)",
					 (unsigned long long)(pl->mem >> 20), pl->share);
			else if (pl->mem)
				snprintf(req, sizeof(req), " (mem=%llu MiB)",
					 (unsigned long long)(pl->mem >> 20));
			else if (pl->share > 0)
				snprintf(req, sizeof(req), " (share=%g)", pl->share);
		}
		why[0] = '\0';
		st = round_once(pl, v, o, wait_id, why, sizeof(why));
		if (st == VGPU_OK)
			break;
		if (mono_ns() >= deadline) {
			st = vgpu__error(pl->wait_ns ? VGPU_ERR_TIMEOUT : VGPU_ERR_BUSY,
					 "pool: no server fits%s%s: %s", req,
					 pl->wait_ns ? " (waited for capacity)" : "", why);
			break;
		}
		vgpu_debug("pool: nothing fits yet, waiting: %s", why);
		{
			struct timespec ts = { 0, POLL_MS * 1000000L };

			nanosleep(&ts, NULL);
		}
	}
	pool_clear(pl);
	free(pl);
	return st;
}

VGPU_API vgpu_status vgpu_pool_open(vgpu_t **v, const char *pool,
				    const struct vgpu_open_opts *opts)
{
	return vgpu_open_ex(v, pool, opts);
}
