/* SPDX-License-Identifier: MIT */
/*
 * test_pool.c - pools and the status request with real vgpud processes on
 * loopback (ephemeral ports): placement by load and capacity, failover past
 * a dead server, mem= that fits nowhere, pool=FILE read at every attempt,
 * wait= until capacity frees up, what the status shows (and does not:
 * tokens), the autoscale host feeding autoscale-exec. Every server is
 * killed whatever happens (atexit, a watchdog alarm, PR_SET_PDEATHSIG).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "vgpud_proc.h"
#include "vgpu/pool.h"

struct server {
	struct vt_vgpud p;
	char uri[256];   /* tcp://127.0.0.1:PORT (no device) */
};

static char tmpdir[128];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
	poll(NULL, 0, ms);
}

/* vgpud --listen tcp://127.0.0.1:0 EXTRA... */
static int server_start(struct server *s, const char *const *extra)
{
	const char *argv[32];
	int argc = 0;

	memset(s, 0, sizeof(*s));
	argv[argc++] = "--listen";
	argv[argc++] = "tcp://127.0.0.1:0";
	for (int i = 0; extra && extra[i] && argc < 30; i++)
		argv[argc++] = extra[i];
	argv[argc] = NULL;
	if (vt_vgpud_start(&s->p, tmpdir, argv) < 0)
		return -1;
	return vt_vgpud_uri(&s->p, "tcp", NULL, s->uri, sizeof(s->uri));
}

static void server_kill(struct server *s)
{
	vt_vgpud_kill(&s->p, SIGKILL);
}

static const char *const one[] = { "--max-sessions", "1", NULL };
static struct server A, B, D; /* A, B: one session each; D: killed (its port refuses) */

/* "tcp://A/0,tcp://B/0" */
static const char *pool2(const struct server *x, const struct server *y, const char *q)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "%s/0,%s/0%s", x->uri, y->uri, q ? q : "");
	return buf;
}

static int on(const vgpu_t *v, const struct server *s)
{
	return !strncmp(vgpu_uri(v), s->uri, strlen(s->uri));
}

/* ------------------------------------------------------------------------ */

static int t_status(void *d)
{
	struct vgpu_node_status *st;
	vgpu_t *v;
	vgpu_dptr p;
	char uri[512];
	int found = 0;

	(void)d;
	snprintf(uri, sizeof(uri), "%s/0?tenant=alice&token=not-shown", A.uri);
	CHECK_OK(vgpu_open(&v, uri));
	CHECK(strstr(vgpu_uri(v), "not-shown") == NULL);
	CHECK_OK(vgpu_mem_alloc(v, 8 << 20, &p));
	CHECK_OK(vgpu_node_status_get(A.uri, NULL, &st));
	CHECK(st->size == sizeof(*st));
	CHECK(st->max_sessions == 1);
	CHECK(st->sessions == 1);
	CHECK(st->ndevices >= 1 && st->devices[0].index == 0);
	CHECK(st->devices[0].mem_total > 0);
	CHECK(st->devices[0].mem_used >= (8u << 20));
	CHECK(!strcmp(st->backend, "cpu"));
	for (uint32_t i = 0; i < st->nsessions; i++)
		if (!strcmp(st->session[i].tenant, "alice") && st->session[i].mem_used >= (8u << 20))
			found = 1;
	CHECK(found);
	vgpu_node_status_free(st);
	/* a full server still answers a status request: it opens no session */
	CHECK_OK(vgpu_node_status_get(A.uri, NULL, &st));
	vgpu_node_status_free(st);
	vgpu_close(v);
	/* an unreachable server: a clean error naming it */
	CHECK_ST(vgpu_node_status_get(D.uri, NULL, &st), VGPU_ERR_CONNECTION);
	CHECK_MSG(D.uri);
	CHECK(st == NULL);
	return 0;
}

static int t_placement(void *d)
{
	vgpu_t *v1, *v2, *v3;

	(void)d;
	/* both empty: one each, by load */
	CHECK_OK(vgpu_open(&v1, pool2(&A, &B, NULL)));
	CHECK_OK(vgpu_open(&v2, pool2(&A, &B, NULL)));
	CHECK((on(v1, &A) && on(v2, &B)) || (on(v1, &B) && on(v2, &A)));
	/* both full: the error names each server and why */
	CHECK_ST(vgpu_open(&v3, pool2(&A, &B, NULL)), VGPU_ERR_BUSY);
	CHECK(v3 == NULL);
	CHECK_MSG("no server fits");
	CHECK_MSG(A.uri);
	CHECK_MSG(B.uri);
	CHECK_MSG("full (1 of 1 sessions)");
	vgpu_close(v1);
	vgpu_close(v2);
	return 0;
}

static int t_failover(void *d)
{
	char pool[1024];
	vgpu_t *v1, *v2, *v3;

	(void)d;
	snprintf(pool, sizeof(pool), "%s/0,%s/0,%s/0", D.uri, A.uri, B.uri);
	CHECK_OK(vgpu_open(&v1, pool));
	CHECK(on(v1, &A) || on(v1, &B));
	CHECK_OK(vgpu_open(&v2, pool));
	CHECK(!on(v2, &D));
	CHECK_ST(vgpu_open(&v3, pool), VGPU_ERR_BUSY);
	CHECK_MSG("unreachable");
	CHECK_MSG(D.uri);
	vgpu_close(v1);
	vgpu_close(v2);
	/* every server gone */
	snprintf(pool, sizeof(pool), "%s/0,%s/0", D.uri, D.uri);
	CHECK_ST(vgpu_open(&v3, pool), VGPU_ERR_BUSY);
	CHECK_MSG("unreachable");
	return 0;
}

static int t_mem(void *d)
{
	vgpu_t *v;

	(void)d;
	/* the cpu devices have 1 GiB: 4G fits nowhere, 64M anywhere */
	CHECK_ST(vgpu_open(&v, pool2(&A, &B, "?mem=4G")), VGPU_ERR_BUSY);
	CHECK_MSG("not enough free memory");
	CHECK_OK(vgpu_open(&v, pool2(&A, &B, "?mem=64M")));
	vgpu_close(v);
	return 0;
}

static int t_pool_file(void *d)
{
	char path[300], pool[400];
	FILE *f;
	vgpu_t *v1, *v2;

	(void)d;
	snprintf(path, sizeof(path), "%s/pool", tmpdir);
	f = fopen(path, "w");
	CHECK(f);
	fprintf(f, "# servers, one a line\n%s/0   # the first\n\n", B.uri);
	fclose(f);
	snprintf(pool, sizeof(pool), "pool=%s", path);
	CHECK_OK(vgpu_open(&v1, pool));
	CHECK(on(v1, &B));
	CHECK_ST(vgpu_open(&v2, pool), VGPU_ERR_BUSY);
	/* a server joins: the next open reads the file again */
	f = fopen(path, "a");
	CHECK(f);
	fprintf(f, "%s/0\n", A.uri);
	fclose(f);
	CHECK_OK(vgpu_open(&v2, pool));
	CHECK(on(v2, &A));
	vgpu_close(v1);
	vgpu_close(v2);
	/* a missing file is a clear error */
	CHECK_ST(vgpu_open(&v1, "pool=/nonexistent/vgpu-pool"), VGPU_ERR_BAD_URI);
	CHECK_MSG("/nonexistent/vgpu-pool");
	return 0;
}

struct waiter {
	const char *pool;
	vgpu_status st;
	char uri[512];
	double took;
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;
	double t0 = now_s();
	vgpu_t *v;

	w->st = vgpu_open(&v, w->pool);
	w->took = now_s() - t0;
	if (w->st == VGPU_OK) {
		snprintf(w->uri, sizeof(w->uri), "%s", vgpu_uri(v));
		vgpu_close(v);
	}
	return NULL;
}

static int t_wait(void *d)
{
	struct vgpu_node_status *st;
	struct waiter w;
	pthread_t th;
	vgpu_t *v1, *v2, *v3;
	char pool[1024];
	uint32_t seen = 0;

	(void)d;
	CHECK_OK(vgpu_open(&v1, pool2(&A, &B, NULL)));
	CHECK_OK(vgpu_open(&v2, pool2(&A, &B, NULL)));
	/* without wait= a full pool fails at once; with it, the client waits */
	snprintf(pool, sizeof(pool), "%s", pool2(&A, &B, "?wait=20s"));
	memset(&w, 0, sizeof(w));
	w.pool = pool;
	CHECK(pthread_create(&th, NULL, wait_main, &w) == 0);
	/* the first server hears that a client waits */
	for (int i = 0; i < 50 && !seen; i++) {
		sleep_ms(100);
		if (vgpu_node_status_get(A.uri, NULL, &st) == VGPU_OK) {
			seen = st->waiting;
			if (seen)
				CHECK(st->wait_ns_max > 0);
			vgpu_node_status_free(st);
		}
	}
	CHECK(seen == 1);
	vgpu_close(v2); /* capacity frees up: the waiter lands there */
	pthread_join(th, NULL);
	CHECK_ST(w.st, VGPU_OK);
	CHECK(w.took > 0.05 && w.took < 15);
	vgpu_close(v1);
	/* a wait that runs out */
	CHECK_OK(vgpu_open(&v1, pool2(&A, &B, NULL)));
	CHECK_OK(vgpu_open(&v2, pool2(&A, &B, NULL)));
	CHECK_ST(vgpu_open(&v3, pool2(&A, &B, "?wait=600ms")), VGPU_ERR_TIMEOUT);
	CHECK_MSG("waited for capacity");
	vgpu_close(v1);
	vgpu_close(v2);
	return 0;
}

/* A server with secrets wants the same authentication for its status. */
static int t_status_auth(void *d)
{
	char secrets[300], arg[320], uri[600];
	const char *extra[4];
	struct vgpu_node_status *st = NULL;
	struct vgpu_open_opts o = VGPU_OPEN_OPTS_INIT;
	struct server G;
	vgpu_t *v;
	FILE *f;

	(void)d;
	snprintf(secrets, sizeof(secrets), "%s/secrets", tmpdir);
	f = fopen(secrets, "w");
	CHECK(f);
	fprintf(f, "alice:s3cret\n");
	fclose(f);
	chmod(secrets, 0600);
	snprintf(arg, sizeof(arg), "%s", secrets);
	extra[0] = "--secrets";
	extra[1] = arg;
	extra[2] = NULL;
	CHECK(server_start(&G, extra) == 0);
	CHECK_ST(vgpu_node_status_get(G.uri, NULL, &st), VGPU_ERR_AUTH);
	CHECK(st == NULL);
	o.tenant = "alice";
	o.token = "wrong";
	CHECK_ST(vgpu_node_status_get(G.uri, &o, &st), VGPU_ERR_AUTH);
	o.token = "s3cret";
	CHECK_OK(vgpu_node_status_get(G.uri, &o, &st));
	vgpu_node_status_free(st);
	/* a pool carries the tenant and token of its URIs to the status request */
	snprintf(uri, sizeof(uri), "%s/0,%s/0?tenant=alice&token=s3cret", D.uri, G.uri);
	CHECK_OK(vgpu_open(&v, uri));
	CHECK(on(v, &G));
	CHECK(strstr(vgpu_uri(v), "s3cret") == NULL);
	vgpu_close(v);
	snprintf(uri, sizeof(uri), "%s/0?tenant=alice&token=nope&wait=100ms", G.uri);
	CHECK(vgpu_open(&v, uri) < 0);
	CHECK_MSG("authentication failed");
	server_kill(&G);
	return 0;
}

/* share=: fractions of a device fill a server before the next is used. */
static int t_share(void *d)
{
	static const char *const fifo[] = { "--plugin", "sched-fifo", NULL };
	struct server E, F;
	vgpu_t *v[5];
	char pool[600];
	int onE = 0, onF = 0;

	(void)d;
	CHECK(server_start(&E, fifo) == 0);
	CHECK(server_start(&F, fifo) == 0);
	snprintf(pool, sizeof(pool), "%s/0,%s/0?share=0.5", E.uri, F.uri);
	/* by load: 0.5 on each, then the second halves, then nothing fits */
	for (int i = 0; i < 4; i++) {
		CHECK_OK(vgpu_open(&v[i], pool));
		onE += on(v[i], &E);
		onF += on(v[i], &F);
	}
	CHECK(onE == 2 && onF == 2);
	CHECK_ST(vgpu_open(&v[4], pool), VGPU_ERR_BUSY);
	CHECK_MSG("share=0.5 does not fit (1.00 of the device taken)");
	{
		/* a half freed on one server: the next half lands there */
		const struct server *freed = on(v[0], &E) ? &E : &F;

		vgpu_close(v[0]);
		CHECK_OK(vgpu_open(&v[0], pool));
		CHECK(on(v[0], freed));
		vgpu_close(v[0]);
	}
	/* no share= asked: shares do not limit it (--max-sessions and memory do) */
	snprintf(pool, sizeof(pool), "%s/0,%s/0", E.uri, F.uri);
	CHECK_OK(vgpu_open(&v[0], pool));
	for (int i = 0; i < 4; i++)
		vgpu_close(v[i]);
	server_kill(&E);
	server_kill(&F);
	return 0;
}

/* The autoscale host feeds autoscale-exec; its command sees the demand. */
static int t_autoscale_exec(void *d)
{
	char script[300], out[300], up[320], down[320], spec[1024], buf[4096];
	struct server S;
	const char *extra[8];
	vgpu_t *v1, *v2;
	char pool[600];
	FILE *f;
	size_t n = 0;

	(void)d;
	snprintf(script, sizeof(script), "%s/scale-up.sh", tmpdir);
	snprintf(out, sizeof(out), "%s/scale.out", tmpdir);
	f = fopen(script, "w");
	CHECK(f);
	/* one script for both: writes OUT-up or OUT-down */
	fprintf(f, "#!/bin/sh\nenv | grep '^VGPU_SCALE_' | sort > %s-$1.tmp\necho \"arg=$1\" >> %s-$1.tmp\n"
		   "mv %s-$1.tmp %s-$1\n", out, out, out, out);
	fclose(f);
	chmod(script, 0700);
	snprintf(spec, sizeof(spec), "autoscale-exec:up=%s,down=%s,up_after=0s,down_after=1s,"
		 "cooldown=1s,max=1", script, script);
	extra[0] = "--max-sessions";
	extra[1] = "1";
	extra[2] = "--plugin";
	extra[3] = spec;
	extra[4] = NULL;
	CHECK(server_start(&S, extra) == 0);
	snprintf(pool, sizeof(pool), "%s/0?wait=4s", S.uri);
	CHECK_OK(vgpu_open(&v1, pool));
	/* a second client waits: pressure; the command runs once */
	CHECK_ST(vgpu_open(&v2, pool), VGPU_ERR_TIMEOUT);
	snprintf(up, sizeof(up), "%s-up", out);
	snprintf(down, sizeof(down), "%s-down", out);
	for (int i = 0; i < 50 && access(up, R_OK) != 0; i++)
		sleep_ms(100);
	f = fopen(up, "r");
	if (!f)
		vt_vgpud_dump_log(&S.p);
	CHECK(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	CHECK(strstr(buf, "VGPU_SCALE_ACTION=up\n"));
	CHECK(strstr(buf, "VGPU_SCALE_REASON=pressure\n"));
	CHECK(strstr(buf, "VGPU_SCALE_WAITING=1\n"));
	CHECK(strstr(buf, "VGPU_SCALE_SESSIONS=1\n"));
	CHECK(strstr(buf, "VGPU_SCALE_INSTANCES=0\n"));
	CHECK(strstr(buf, "VGPU_SCALE_TARGET=1\n"));
	CHECK(strstr(buf, "arg=up\n"));
	CHECK(access(down, R_OK) != 0); /* busy: no scale-down */
	/* idle for down_after (after the cooldown): one scale-down */
	vgpu_close(v1);
	for (int i = 0; i < 80 && access(down, R_OK) != 0; i++)
		sleep_ms(100);
	f = fopen(down, "r");
	if (!f)
		vt_vgpud_dump_log(&S.p);
	CHECK(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	CHECK(strstr(buf, "VGPU_SCALE_ACTION=down\n"));
	CHECK(strstr(buf, "VGPU_SCALE_REASON=idle\n"));
	CHECK(strstr(buf, "VGPU_SCALE_INSTANCES=1\n"));
	CHECK(strstr(buf, "VGPU_SCALE_TARGET=0\n"));
	CHECK(strstr(buf, "VGPU_SCALE_SESSIONS=0\n"));
	server_kill(&S);
	return 0;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/vgpu-test-pool-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	atexit(vt_vgpud_cleanup);
	signal(SIGALRM, vt_vgpud_watchdog);
	alarm(240);
	if (server_start(&A, one) || server_start(&B, one) || server_start(&D, one)) {
		fprintf(stderr, "cannot start vgpud\n");
		return 1;
	}
	server_kill(&D);
	vt_run("status", t_status, NULL);
	vt_run("placement_by_load", t_placement, NULL);
	vt_run("failover", t_failover, NULL);
	vt_run("mem_fits_nowhere", t_mem, NULL);
	vt_run("pool_file", t_pool_file, NULL);
	vt_run("wait_for_capacity", t_wait, NULL);
	vt_run("share_placement", t_share, NULL);
	vt_run("status_needs_auth", t_status_auth, NULL);
	vt_run("autoscale_exec", t_autoscale_exec, NULL);
	vt_vgpud_cleanup();
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
		if (system(cmd) != 0) {
		}
	}
	return vt_finish();
}
