/* SPDX-License-Identifier: MIT */
/*
 * scale.c - the autoscale host of a server.
 *
 * Autoscale plugins (kind VGPU_PLUGIN_AUTOSCALE, see vgpu/plugin.h) are
 * given to the server with the other plugins (vgpud --plugin); the server
 * keeps them, the engine gets the scheduler and memory ones. Once a second
 * a ticker thread reads the server's status and hands every autoscale
 * plugin one struct vgpu_autoscale_signal, whose event says what dominates:
 *
 *   VGPU_SCALE_PRESSURE      clients wait for capacity: pool clients that
 *                            found every server full and said so in their
 *                            status requests, plus sessions in the
 *                            engine's admission queue (waiting, wait_ns_max)
 *   VGPU_SCALE_MEM_PRESSURE  device memory oversubscribed (bytes evicted to
 *                            host memory, or more allocated than the device has)
 *   VGPU_SCALE_IDLE          no session and nobody waiting for idle_ns
 *   VGPU_SCALE_TICK          none of these
 *
 * The plugins keep their own hysteresis, cooldown and minimum/maximum (see
 * plugins/autoscale-common/policy.h): the host reports, the plugin decides
 * and acts. Calls into one plugin are serialised; they must not block (the
 * shipped plugins run their commands from a thread of their own).
 */
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "pluginhost.h"
#include "scale.h"
#include "vgpu/plugin.h"

#define MAX_SCALERS 8
#define TICK_NS 1000000000ull

struct scaler {
	struct vgpu__scale *sc;
	struct vgpu__plugin_conf *conf;
	struct vgpu_plugin_host host;
	const struct vgpu_autoscale_ops *ops;
	void *state;
	int inited;
};

struct vgpu__scale {
	struct vgpu_server *srv;
	struct scaler sv[MAX_SCALERS];
	unsigned n;
	pthread_t th;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int running, stop;
	uint64_t last_busy_ns;
};

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* ---- the host API handed to autoscale plugins ---- */

static void h_log(const struct vgpu_plugin_host *h, int level, const char *fmt, ...)
{
	const struct scaler *s = h->host_priv;
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	switch (level) {
	case VGPU_PLUGIN_LOG_ERROR: vgpu_err("%s: %s", s->conf->plugin->name, msg); break;
	case VGPU_PLUGIN_LOG_WARN: vgpu_warn("%s: %s", s->conf->plugin->name, msg); break;
	case VGPU_PLUGIN_LOG_INFO: vgpu_info("%s: %s", s->conf->plugin->name, msg); break;
	default: vgpu_debug("%s: %s", s->conf->plugin->name, msg); break;
	}
}

static vgpu_status h_fail(const struct vgpu_plugin_host *h, vgpu_status st, const char *fmt, ...)
{
	const struct scaler *s = h->host_priv;
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return vgpu__error(st, "plugin %s: %s", s->conf->plugin->name, msg);
}

static uint64_t h_now(const struct vgpu_plugin_host *h)
{
	(void)h;
	return now_ns();
}

static const char *h_param(const struct vgpu_plugin_host *h, const struct vgpu_plugin_session *s,
			   const char *key)
{
	(void)h;
	(void)s;
	(void)key;
	return NULL;
}

static vgpu_status h_sstats(const struct vgpu_plugin_host *h, const struct vgpu_plugin_session *s,
			    struct vgpu_plugin_session_stats *out)
{
	(void)h;
	(void)s;
	(void)out;
	return vgpu__error(VGPU_ERR_UNSUPPORTED, "autoscale plugins see no sessions");
}

static vgpu_status h_dstats(const struct vgpu_plugin_host *h, int device,
			    struct vgpu_plugin_device_stats *out)
{
	const struct scaler *s = h->host_priv;
	struct vgpu_node_status *st;
	size_t size = out->size;
	vgpu_status rc;

	rc = vgpu__server_node_status(s->sc->srv, &st);
	if (rc < 0)
		return rc;
	memset(out, 0, size);
	out->size = size;
	for (uint32_t i = 0; i < st->ndevices; i++) {
		const struct vgpu_node_device *d = &st->devices[i];

		if (device >= 0 && d->index != device)
			continue;
		out->sessions += d->sessions;
		out->device_ns += d->device_ns;
		out->mem_total += d->mem_total;
		out->mem_used += d->mem_used;
		out->mem_on_host += d->mem_on_host;
	}
	out->waiting = st->waiting;
	out->admit_rejected = st->refused;
	vgpu_node_status_free(st);
	return VGPU_OK;
}

static vgpu_status h_mem(const struct vgpu_plugin_host *h, const struct vgpu_plugin_session *s,
			 vgpu_dptr base)
{
	(void)h;
	(void)s;
	(void)base;
	return VGPU_ERR_UNSUPPORTED;
}

static void h_kick(const struct vgpu_plugin_host *h)
{
	(void)h;
}

/* ---- specs ---- */

static vgpu_status append(char **dst, const char *spec)
{
	size_t a = *dst ? strlen(*dst) : 0, b = strlen(spec);
	char *n = realloc(*dst, a + b + 2);

	if (!n)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	if (a)
		n[a++] = ' ';
	memcpy(n + a, spec, b + 1);
	*dst = n;
	return VGPU_OK;
}

vgpu_status vgpu__scale_split(const char *plugins, char **engine_specs, char **scale_specs)
{
	struct vgpu__plugin_set set;
	vgpu_status st = VGPU_OK;

	*engine_specs = *scale_specs = NULL;
	if (!plugins || !*plugins)
		return VGPU_OK;
	st = vgpu__plugin_set_parse(plugins, &set);
	if (st < 0)
		return st;
	for (unsigned i = 0; i < set.n && st >= 0; i++) {
		const struct vgpu__plugin_conf *c = set.v[i];

		st = append(c->plugin->desc->kind == VGPU_PLUGIN_AUTOSCALE ? scale_specs : engine_specs,
			    c->spec);
	}
	vgpu__plugin_set_free(&set);
	if (st < 0) {
		free(*engine_specs);
		free(*scale_specs);
		*engine_specs = *scale_specs = NULL;
	}
	return st;
}

/* ---- the ticker ---- */

static void fill_signal(struct vgpu__scale *sc, const struct vgpu_node_status *st,
			struct vgpu_autoscale_signal *sig)
{
	uint64_t now = now_ns();

	memset(sig, 0, sizeof(*sig));
	sig->size = sizeof(*sig);
	sig->device = -1; /* the whole server */
	sig->now_ns = now;
	sig->sessions = st->sessions;
	sig->waiting = st->waiting;
	sig->wait_ns_max = st->wait_ns_max;
	for (uint32_t i = 0; i < st->ndevices; i++) {
		sig->mem_total += st->devices[i].mem_total;
		sig->mem_used += st->devices[i].mem_used;
		sig->mem_on_host += st->devices[i].mem_on_host;
	}
	if (st->sessions || st->waiting || !sc->last_busy_ns)
		sc->last_busy_ns = now;
	sig->idle_ns = now - sc->last_busy_ns;
	if (sig->waiting)
		sig->event = VGPU_SCALE_PRESSURE;
	else if (sig->mem_on_host || (sig->mem_total && sig->mem_used > sig->mem_total))
		sig->event = VGPU_SCALE_MEM_PRESSURE;
	else if (!st->sessions && sig->idle_ns)
		sig->event = VGPU_SCALE_IDLE;
	else
		sig->event = VGPU_SCALE_TICK;
}

static void *ticker_main(void *arg)
{
	struct vgpu__scale *sc = arg;

	pthread_mutex_lock(&sc->lock);
	while (!sc->stop) {
		struct vgpu_node_status *st = NULL;
		struct vgpu_autoscale_signal sig;
		struct timespec ts;

		pthread_mutex_unlock(&sc->lock);
		if (vgpu__server_node_status(sc->srv, &st) == VGPU_OK) {
			fill_signal(sc, st, &sig);
			vgpu_debug("autoscale: event %u sessions %u waiting %u (max %.1f s) idle %.1f s",
				   sig.event, sig.sessions, sig.waiting, (double)sig.wait_ns_max / 1e9,
				   (double)sig.idle_ns / 1e9);
			for (unsigned i = 0; i < sc->n; i++)
				sc->sv[i].ops->signal(sc->sv[i].state, &sig);
			vgpu_node_status_free(st);
		}
		pthread_mutex_lock(&sc->lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (!sc->stop)
			pthread_cond_timedwait(&sc->cond, &sc->lock, &ts);
	}
	pthread_mutex_unlock(&sc->lock);
	return NULL;
}

vgpu_status vgpu__scale_create(struct vgpu_server *srv, const char *plugins,
			       struct vgpu__scale **out)
{
	struct vgpu__plugin_set set;
	struct vgpu__scale *sc;
	vgpu_status st;

	*out = NULL;
	sc = calloc(1, sizeof(*sc));
	if (!sc)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	sc->srv = srv;
	pthread_mutex_init(&sc->lock, NULL);
	pthread_cond_init(&sc->cond, NULL);
	st = vgpu__plugin_set_parse(plugins, &set);
	if (st < 0) {
		vgpu__scale_destroy(sc);
		return st;
	}
	for (unsigned i = 0; i < set.n; i++) {
		struct scaler *s;

		if (sc->n == MAX_SCALERS) {
			st = vgpu__error(VGPU_ERR_PLUGIN, "too many autoscale plugins (at most %d)",
					 MAX_SCALERS);
			break;
		}
		if (set.v[i]->plugin->desc->kind != VGPU_PLUGIN_AUTOSCALE) {
			st = vgpu__error(VGPU_ERR_PLUGIN, "plugin %s is not an autoscale plugin",
					 set.v[i]->plugin->name);
			break;
		}
		s = &sc->sv[sc->n++];
		s->sc = sc;
		s->conf = set.v[i];
		set.v[i] = NULL; /* owned by the scaler now */
		s->ops = s->conf->plugin->desc->ops;
		s->host.size = sizeof(s->host);
		s->host.abi_version = VGPU_PLUGIN_ABI_VERSION;
		s->host.device = -1;
		s->host.host_priv = s;
		s->host.log = h_log;
		s->host.fail = h_fail;
		s->host.now_ns = h_now;
		s->host.session_param = h_param;
		s->host.session_stats = h_sstats;
		s->host.device_stats = h_dstats;
		s->host.mem_evict = h_mem;
		s->host.mem_restore = h_mem;
		s->host.kick = h_kick;
		st = s->conf->plugin->desc->init(&s->host, &s->conf->cfg, &s->state);
		if (st < 0) {
			vgpu__error_prefix(st, "plugin %s", s->conf->plugin->name);
			break;
		}
		s->inited = 1;
		vgpu_info("autoscale plugin %s loaded (%s)", s->conf->plugin->name, s->conf->spec);
	}
	vgpu__plugin_set_free(&set);
	if (st < 0) {
		vgpu__scale_destroy(sc);
		return st;
	}
	*out = sc;
	return VGPU_OK;
}

vgpu_status vgpu__scale_start(struct vgpu__scale *sc)
{
	if (!sc || sc->running)
		return VGPU_OK;
	if (pthread_create(&sc->th, NULL, ticker_main, sc) != 0)
		return vgpu__error(VGPU_ERR_INTERNAL, "cannot start the autoscale thread");
	sc->running = 1;
	return VGPU_OK;
}

void vgpu__scale_stop(struct vgpu__scale *sc)
{
	if (!sc || !sc->running)
		return;
	pthread_mutex_lock(&sc->lock);
	sc->stop = 1;
	pthread_cond_broadcast(&sc->cond);
	pthread_mutex_unlock(&sc->lock);
	pthread_join(sc->th, NULL);
	sc->running = 0;
}

void vgpu__scale_destroy(struct vgpu__scale *sc)
{
	if (!sc)
		return;
	vgpu__scale_stop(sc);
	for (unsigned i = 0; i < sc->n; i++) {
		if (sc->sv[i].inited && sc->sv[i].conf->plugin->desc->fini)
			sc->sv[i].conf->plugin->desc->fini(sc->sv[i].state);
		vgpu__plugin_conf_free(sc->sv[i].conf);
	}
	pthread_mutex_destroy(&sc->lock);
	pthread_cond_destroy(&sc->cond);
	free(sc);
}
