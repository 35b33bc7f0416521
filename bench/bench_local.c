/* SPDX-License-Identifier: MIT */
/*
 * bench_local - in-process call overhead on cpu:0.
 *
 * Each figure is printed next to its floor measured in the same run:
 *   64-byte synchronous htod copy   vs  memcpy of 64 bytes
 *   empty kernel launch (sync)      vs  an indirect call of an empty function
 *   empty kernel launch (async)     vs  the same floor (pipelined on a stream)
 * and the overhead (figure - floor) in ns per call.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vgpu.h>

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void __attribute__((noinline)) empty_fn(void *p)
{
	__asm__ __volatile__("" : : "r"(p) : "memory");
}

static void (*volatile empty_ptr)(void *) = empty_fn;

static void die(const char *what)
{
	fprintf(stderr, "bench_local: %s: %s\n", what, vgpu_last_error());
	exit(1);
}

/* best of 5 runs of n iterations, ns per iteration */
#define MEASURE(result, n, body)                                   \
	do {                                                       \
		double best_ = 1e30;                               \
		for (int r_ = 0; r_ < 5; r_++) {                   \
			double t0_ = now_ns();                     \
			for (long i_ = 0; i_ < (n); i_++) {        \
				body;                              \
			}                                          \
			double t_ = (now_ns() - t0_) / (double)(n); \
			if (t_ < best_)                            \
				best_ = t_;                        \
		}                                                  \
		(result) = best_;                                  \
	} while (0)

static void row(const char *name, double fig, double floor, const char *unit)
{
	printf("%-34s %10.1f %-8s floor %8.1f  overhead %8.1f ns  ratio %6.2fx\n", name, fig, unit,
	       floor, fig - floor, floor > 0 ? fig / floor : 0.0);
}

int main(void)
{
	const char *dir = getenv("VGPU_TEST_MODDIR");
	char path[4096];
	unsigned char src[64], dst[64];
	vgpu_t *v;
	vgpu_module *m;
	vgpu_function *f;
	vgpu_stream *s;
	vgpu_dptr p;
	double t_copy, t_memcpy, t_launch, t_call, t_async;
	const long N = 200000;

	snprintf(path, sizeof(path), "%s/test_kernels.so", dir ? dir : "tests/.libs");
	memset(src, 1, sizeof(src));
	if (vgpu_open(&v, "cpu:0"))
		die("open");
	if (vgpu_module_load_file(v, path, &m) || vgpu_module_function(m, "empty", &f))
		die("module");
	if (vgpu_mem_alloc(v, 4096, &p) || vgpu_stream_create(v, &s, 0))
		die("setup");

	MEASURE(t_memcpy, N * 10, {
		memcpy(dst, src, sizeof(src));
		__asm__ __volatile__("" : : "r"(dst) : "memory");
	});
	MEASURE(t_copy, N, {
		if (vgpu_memcpy_htod(v, p, src, 64, NULL))
			die("htod");
	});
	MEASURE(t_call, N * 10, empty_ptr(dst));
	vgpu_dim3 one = vgpu_dim3_make(1, 1, 1);
	MEASURE(t_launch, N, {
		if (vgpu_launch(v, f, one, one, 0, NULL, NULL, 0))
			die("launch");
	});
	{
		double t0 = now_ns();

		for (long i = 0; i < N; i++)
			if (vgpu_launch(v, f, one, one, 0, s, NULL, 0))
				die("launch async");
		if (vgpu_stream_synchronize(s))
			die("sync");
		t_async = (now_ns() - t0) / (double)N;
	}

	printf("libvgpu in-process call overhead, cpu:0 (best of 5, %ld calls each)\n", N);
	row("htod 64 B, synchronous", t_copy, t_memcpy, "ns/call");
	row("empty kernel launch, synchronous", t_launch, t_call, "ns/call");
	row("empty kernel launch, async stream", t_async, t_call, "ns/call");
	printf("async launches: %.0f per second\n", 1e9 / t_async);
	printf("target: <= 200 ns above the floor for the synchronous rows: %s\n",
	       (t_copy - t_memcpy <= 200 && t_launch - t_call <= 200) ? "met" : "NOT met");
	vgpu_close(v);
	return 0;
}
