/* SPDX-License-Identifier: MIT */
/*
 * soak - N concurrent clients on one vgpud for S seconds, each doing mixed
 * allocations, copies (htod, dtoh, dtod), memsets, launches and frees, every
 * result checked against what the host computed. Afterwards the server's
 * device memory and sessions are back to zero (asked over the protocol) and
 * its RSS is back near its start.
 *
 *   soak [CLIENTS [SECONDS]]      (make soak SOAK_CLIENTS=256 SOAK_SECONDS=60)
 *
 * Starts its own vgpud (tools/vgpud, --allow-native-modules for the test
 * kernels) on 127.0.0.1 with an ephemeral port, killed whatever happens.
 * Prints calls/s, p50/p99 call latency and the server's RSS before and after.
 * Exit 0 when every result was right and everything was released.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "remote.h"
#include "test.h"
#include "vgpud_proc.h"

#define SAMPLES 4096 /* latency samples kept per client (reservoir) */

static pid_t server_pid;
static char server_uri[300];
static double deadline;
static int failures;

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void kill_server(void)
{
	vt_vgpud_kill_all(0);
	server_pid = 0;
}

static int start_server(int clients)
{
	server_pid = vt_vgpud_start_for("tcp://127.0.0.1:0", clients, server_uri, sizeof(server_uri));
	return server_pid > 0 ? 0 : -1;
}

struct client {
	pthread_t th;
	int idx;
	uint64_t calls, bytes, seen;
	double lat[SAMPLES];
	unsigned nlat;
	int failed;
	char why[256];
	uint64_t rng;
};

static uint64_t rnd(struct client *c)
{
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	return c->rng;
}

static void sample(struct client *c, double t0)
{
	double d = now_s() - t0;

	c->calls++;
	c->seen++;
	if (c->nlat < SAMPLES)
		c->lat[c->nlat++] = d;
	else {
		uint64_t k = rnd(c) % c->seen;
		if (k < SAMPLES)
			c->lat[k] = d;
	}
}

#define CALL(c, expr) do { double t0_ = now_s(); vgpu_status st_ = (expr); sample(c, t0_); \
	if (st_ < 0) { snprintf((c)->why, sizeof((c)->why), "%s: %s", #expr, vgpu_last_error()); \
		goto fail; } } while (0)

static void *client_main(void *arg)
{
	struct client *c = arg;
	vgpu_t *v = NULL;
	vgpu_module *m;
	vgpu_function *inc;
	uint32_t *a = NULL, *b = NULL;
	size_t cap = 256 * 1024 / 4;

	a = malloc(cap * 4);
	b = malloc(cap * 4);
	if (!a || !b) {
		snprintf(c->why, sizeof(c->why), "out of host memory");
		goto fail;
	}
	CALL(c, vgpu_open(&v, server_uri));
	CALL(c, vt_module_load(v, "test_kernels", &m));
	CALL(c, vgpu_module_function(m, "inc_u32", &inc));
	while (now_s() < deadline) {
		size_t n = 1024 + rnd(c) % (cap - 1024); /* 4 KiB .. 256 KiB */
		vgpu_dptr p, q;
		uint32_t seed = (uint32_t)rnd(c);
		uint8_t fillv = (uint8_t)rnd(c);

		for (size_t i = 0; i < n; i++)
			a[i] = seed + (uint32_t)i * 2654435761u;
		CALL(c, vgpu_mem_alloc(v, n * 4, &p));
		CALL(c, vgpu_mem_alloc(v, n * 4, &q));
		CALL(c, vgpu_memcpy_htod(v, p, a, n * 4, NULL));
		{
			vgpu_arg args[] = { vgpu_arg_dptr(p), vgpu_arg_u64(n) };

			CALL(c, vgpu_launch(v, inc, vgpu_dim3_make((unsigned)((n + 255) / 256), 1, 1),
					    vgpu_dim3_make(256, 1, 1), 0, NULL, args, 2));
		}
		CALL(c, vgpu_memcpy_dtod(v, q, p, n * 4, NULL));
		CALL(c, vgpu_memcpy_dtoh(v, b, q, n * 4, NULL));
		for (size_t i = 0; i < n; i++)
			if (b[i] != a[i] + 1) {
				snprintf(c->why, sizeof(c->why), "word %zu of %zu: %08x, want %08x", i, n,
					 b[i], a[i] + 1);
				goto fail;
			}
		CALL(c, vgpu_memset(v, p, fillv, n * 4, NULL));
		CALL(c, vgpu_memcpy_dtoh(v, b, p, 4096, NULL));
		for (size_t i = 0; i < 1024; i++)
			if (b[i] != fillv * 0x01010101u) {
				snprintf(c->why, sizeof(c->why), "memset word %zu: %08x", i, b[i]);
				goto fail;
			}
		CALL(c, vgpu_mem_free(v, p));
		CALL(c, vgpu_mem_free(v, q));
		c->bytes += n * 4 * 3;
	}
	vgpu_close(v);
	free(a);
	free(b);
	return NULL;
fail:
	c->failed = 1;
	__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
	if (v)
		vgpu_close(v);
	free(a);
	free(b);
	return NULL;
}

static int cmp_d(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return a < b ? -1 : a > b;
}

int main(int argc, char **argv)
{
	int nclients = argc > 1 ? atoi(argv[1]) : 16;
	double seconds = argc > 2 ? atof(argv[2]) : 5;
	struct client *cl;
	uint64_t calls = 0, bytes = 0, sessions = 99, mem = 99, allocs = 0;
	double t0, el, *all;
	size_t nall = 0;
	long rss0, rss1 = -1;
	vgpu_t *probe;

	if (nclients < 1 || nclients > 4096 || seconds <= 0) {
		fprintf(stderr, "usage: soak [CLIENTS [SECONDS]]\n");
		return 2;
	}
	signal(SIGALRM, vt_vgpud_watchdog);
	alarm((unsigned)seconds + 120);
	atexit(kill_server);
	if (start_server(nclients) < 0)
		return 1;
	/* the server's start: one client through the whole mix first */
	deadline = now_s() + 0.2;
	{
		struct client *w = calloc(1, sizeof(*w));

		w->rng = 42;
		client_main(w);
		if (w->failed) {
			fprintf(stderr, "soak: warm-up failed: %s\n", w->why);
			return 1;
		}
		free(w);
	}
	poll(NULL, 0, 200);
	rss0 = vt_proc_kib(server_pid, "VmRSS:");
	cl = calloc((size_t)nclients, sizeof(*cl));
	if (!cl)
		return 1;
	t0 = now_s();
	deadline = t0 + seconds;
	for (int i = 0; i < nclients; i++) {
		cl[i].idx = i;
		cl[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
		if (pthread_create(&cl[i].th, NULL, client_main, &cl[i]) != 0) {
			fprintf(stderr, "soak: cannot start client %d\n", i);
			return 1;
		}
	}
	for (int i = 0; i < nclients; i++)
		pthread_join(cl[i].th, NULL);
	el = now_s() - t0;
	all = malloc((size_t)nclients * SAMPLES * sizeof(*all));
	for (int i = 0; i < nclients; i++) {
		calls += cl[i].calls;
		bytes += cl[i].bytes;
		memcpy(all + nall, cl[i].lat, cl[i].nlat * sizeof(*all));
		nall += cl[i].nlat;
		if (cl[i].failed)
			fprintf(stderr, "soak: client %d: %s\n", i, cl[i].why);
	}
	qsort(all, nall, sizeof(*all), cmp_d);
	/* released? ask the server (this probe is the one session left) */
	for (int i = 0; i < 100; i++) {
		if (vgpu_open(&probe, server_uri) == VGPU_OK) {
			vgpu__remote_server_stats(probe, &sessions, &mem, &allocs);
			vgpu_close(probe);
		}
		if (sessions == 1 && mem == 0)
			break;
		poll(NULL, 0, 50);
	}
	for (int i = 0; i < 20; i++) { /* freed memory goes back to the system in steps */
		rss1 = vt_proc_kib(server_pid, "VmRSS:");
		if (rss1 <= rss0 + 32 * 1024)
			break;
		poll(NULL, 0, 100);
	}
	printf("soak: %d clients x %.0f s: %llu calls, %.0f calls/s, %.1f MiB/s checked\n", nclients,
	       seconds, (unsigned long long)calls, calls / el, bytes / el / 1048576.0);
	printf("soak: call latency p50 %.3f ms, p99 %.3f ms, max %.3f ms (%zu samples)\n",
	       nall ? all[nall / 2] * 1e3 : 0, nall ? all[nall * 99 / 100] * 1e3 : 0,
	       nall ? all[nall - 1] * 1e3 : 0, nall);
	printf("soak: server after: %llu session(s) (this probe), %llu bytes of device memory; "
	       "RSS %ld KiB at start, %ld KiB after\n", (unsigned long long)sessions - 1,
	       (unsigned long long)mem, rss0, rss1);
	free(all);
	free(cl);
	if (failures) {
		printf("soak: FAIL: %d client(s) failed\n", failures);
		return 1;
	}
	if (sessions != 1 || mem != 0) {
		printf("soak: FAIL: the server did not release everything\n");
		return 1;
	}
	/* near its start: the allocator keeps some arenas per thread (under
	 * AddressSanitizer freed memory sits in its quarantine: not checked) */
#ifndef __SANITIZE_ADDRESS__
	if (rss1 > rss0 + 64 * 1024 + rss0 / 2) {
		printf("soak: FAIL: server RSS grew from %ld to %ld KiB\n", rss0, rss1);
		return 1;
	}
#endif
	printf("soak: OK\n");
	return 0;
}
