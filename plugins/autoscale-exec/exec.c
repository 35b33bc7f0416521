/* SPDX-License-Identifier: MIT */
/*
 * autoscale-exec - run a command to scale up or down.
 *
 *   vgpud --plugin autoscale-exec:up=/usr/local/sbin/vgpu-up,down=/usr/local/sbin/vgpu-down,max=4
 *
 * The way Slurm hands its ResumeProgram the nodes to start, the command
 * gets the demand in its environment:
 *
 *   VGPU_SCALE_ACTION       up | down
 *   VGPU_SCALE_REASON       pressure | memory | idle | minimum
 *   VGPU_SCALE_INSTANCES    instances before the action (ups minus downs so far)
 *   VGPU_SCALE_TARGET       instances wanted after it
 *   VGPU_SCALE_WAITING      clients waiting for capacity now
 *   VGPU_SCALE_WAIT_SECONDS the longest of their waits
 *   VGPU_SCALE_SESSIONS     sessions open on this server
 *   VGPU_SCALE_IDLE_SECONDS how long the server has had no session
 *   VGPU_SCALE_MEM_TOTAL, VGPU_SCALE_MEM_USED, VGPU_SCALE_MEM_ON_HOST (bytes)
 *
 * and the action as its only argument. Commands are paths or names found in
 * PATH (no shell, no arguments: plugin parameters hold no blanks or commas);
 * a non-zero exit is logged and the action is not counted. Commands run one
 * at a time from the plugin's own thread; signals never wait for them.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vgpu/plugin.h>
#include "../autoscale-common/policy.h"
#include "../autoscale-common/run.h"

enum { P_UP, P_DOWN, P_POLICY };

static const struct vgpu_plugin_param params[] = {
	{ "up", "", "command run to add an instance", VGPU_PARAM_STRING, 0, 0 },
	{ "down", "", "command run to remove an instance", VGPU_PARAM_STRING, 0, 0 },
	SCALE_POLICY_PARAMS,
	VGPU_PARAM_END
};

struct ex {
	const struct vgpu_plugin_host *host;
	char *up, *down;
	struct scale_policy pol;
	struct scale_state ss;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t th;
	int stop;
	uint64_t instances;
	int pending;                        /* SCALE_UP / SCALE_DOWN queued */
	struct vgpu_autoscale_signal sig;   /* the signal that decided it */
};

static const char *reason(const struct vgpu_autoscale_signal *s, int action, uint64_t inst,
			  uint64_t min)
{
	if (action == SCALE_UP && inst < min)
		return "minimum";
	if (s->waiting)
		return "pressure";
	switch (s->event) {
	case VGPU_SCALE_PRESSURE: return "pressure";
	case VGPU_SCALE_MEM_PRESSURE: return "memory";
	case VGPU_SCALE_IDLE: return "idle";
	default: return "tick";
	}
}

static void act(struct ex *x, int action, const struct vgpu_autoscale_signal *s, uint64_t inst)
{
	const char *cmd = action == SCALE_UP ? x->up : x->down;
	const char *name = action == SCALE_UP ? "up" : "down";
	char *argv[3];
	struct run_env env;
	int rc;

	if (!cmd || !*cmd) {
		x->host->log(x->host, VGPU_PLUGIN_LOG_INFO, "scale %s wanted but no %s= command", name,
			     name);
		return;
	}
	memset(&env, 0, sizeof(env));
	run_env_set(&env, "VGPU_SCALE_ACTION", "%s", name);
	run_env_set(&env, "VGPU_SCALE_REASON", "%s", reason(s, action, inst, x->pol.min));
	run_env_set(&env, "VGPU_SCALE_INSTANCES", "%llu", (unsigned long long)inst);
	run_env_set(&env, "VGPU_SCALE_TARGET", "%llu",
		    (unsigned long long)(action == SCALE_UP ? inst + 1 : inst - 1));
	run_env_set(&env, "VGPU_SCALE_WAITING", "%u", s->waiting);
	run_env_set(&env, "VGPU_SCALE_WAIT_SECONDS", "%.3f", (double)s->wait_ns_max / 1e9);
	run_env_set(&env, "VGPU_SCALE_SESSIONS", "%u", s->sessions);
	run_env_set(&env, "VGPU_SCALE_IDLE_SECONDS", "%.3f", (double)s->idle_ns / 1e9);
	run_env_set(&env, "VGPU_SCALE_MEM_TOTAL", "%llu", (unsigned long long)s->mem_total);
	run_env_set(&env, "VGPU_SCALE_MEM_USED", "%llu", (unsigned long long)s->mem_used);
	run_env_set(&env, "VGPU_SCALE_MEM_ON_HOST", "%llu", (unsigned long long)s->mem_on_host);
	argv[0] = (char *)cmd;
	argv[1] = (char *)name;
	argv[2] = NULL;
	x->host->log(x->host, VGPU_PLUGIN_LOG_INFO, "scale %s (%s, %u waiting): running %s", name,
		     reason(s, action, inst, x->pol.min), s->waiting, cmd);
	rc = run_cmd(argv, &env, NULL, 0);
	pthread_mutex_lock(&x->lock);
	if (rc == 0) {
		if (action == SCALE_UP)
			x->instances++;
		else if (x->instances)
			x->instances--;
	}
	pthread_mutex_unlock(&x->lock);
	if (rc < 0)
		x->host->log(x->host, VGPU_PLUGIN_LOG_WARN, "%s: cannot run: %s", cmd, strerror(errno));
	else if (rc > 0)
		x->host->log(x->host, VGPU_PLUGIN_LOG_WARN, "%s exited with status %d", cmd, rc);
}

static void *worker(void *arg)
{
	struct ex *x = arg;

	pthread_mutex_lock(&x->lock);
	while (!x->stop) {
		if (x->pending) {
			int a = x->pending;
			struct vgpu_autoscale_signal s = x->sig;
			uint64_t inst = x->instances;

			x->pending = 0;
			pthread_mutex_unlock(&x->lock);
			act(x, a, &s, inst);
			pthread_mutex_lock(&x->lock);
			continue;
		}
		pthread_cond_wait(&x->cond, &x->lock);
	}
	pthread_mutex_unlock(&x->lock);
	return NULL;
}

static void ex_signal(void *state, const struct vgpu_autoscale_signal *sig)
{
	struct ex *x = state;
	enum scale_action a;

	pthread_mutex_lock(&x->lock);
	a = x->pending ? SCALE_NONE : scale_decide(&x->pol, &x->ss, sig, x->instances);
	if (a != SCALE_NONE) {
		x->pending = a;
		x->sig = *sig;
		scale_done(&x->ss, sig->now_ns);
		pthread_cond_signal(&x->cond);
	}
	pthread_mutex_unlock(&x->lock);
}

static vgpu_status ex_init(const struct vgpu_plugin_host *host, const struct vgpu_plugin_config *cfg,
			   void **state)
{
	struct ex *x = calloc(1, sizeof(*x));

	if (!x)
		return host->fail(host, VGPU_ERR_NO_HOST_MEMORY, "out of memory");
	x->host = host;
	x->up = strdup(cfg->values[P_UP].s ? cfg->values[P_UP].s : "");
	x->down = strdup(cfg->values[P_DOWN].s ? cfg->values[P_DOWN].s : "");
	scale_policy_read(&x->pol, cfg->values, P_POLICY);
	if (!x->up || !x->down) {
		free(x->up);
		free(x->down);
		free(x);
		return host->fail(host, VGPU_ERR_NO_HOST_MEMORY, "out of memory");
	}
	if (!*x->up && !*x->down) {
		free(x->up);
		free(x->down);
		free(x);
		return host->fail(host, VGPU_ERR_PLUGIN, "give up=COMMAND and/or down=COMMAND");
	}
	if (x->pol.min > x->pol.max) {
		free(x->up);
		free(x->down);
		free(x);
		return host->fail(host, VGPU_ERR_PLUGIN, "min is above max");
	}
	pthread_mutex_init(&x->lock, NULL);
	pthread_cond_init(&x->cond, NULL);
	if (pthread_create(&x->th, NULL, worker, x) != 0) {
		free(x->up);
		free(x->down);
		free(x);
		return host->fail(host, VGPU_ERR_INTERNAL, "cannot start a thread");
	}
	*state = x;
	return VGPU_OK;
}

static void ex_fini(void *state)
{
	struct ex *x = state;

	pthread_mutex_lock(&x->lock);
	x->stop = 1;
	pthread_cond_signal(&x->cond);
	pthread_mutex_unlock(&x->lock);
	pthread_join(x->th, NULL);
	pthread_mutex_destroy(&x->lock);
	pthread_cond_destroy(&x->cond);
	free(x->up);
	free(x->down);
	free(x);
}

static const struct vgpu_autoscale_ops ops = { sizeof(ops), ex_signal };

static const struct vgpu_plugin_desc desc = {
	VGPU_PLUGIN_ABI_VERSION, VGPU_PLUGIN_AUTOSCALE, "autoscale-exec",
	"run a command to scale up or down, demand in VGPU_SCALE_* variables", "1.0",
	params, ex_init, ex_fini, &ops,
};

VGPU_PLUGIN_DEFINE(desc)
