/* SPDX-License-Identifier: MIT */
/*
 * bench_mem.c - oversubscription with the mem-swap plugin (cpu backend).
 *
 * Working sets of 1.0x, 1.5x, 2x and 4x device memory, accessed by kernels
 * in three patterns:
 *   cyclic     buffer t mod N                       (LRU's worst case)
 *   random     a uniformly random buffer
 *   streaming  a small hot set (1/8 of the device) used with each buffer of
 *              a stream passing through: mix(hot[t mod H], cold[t mod C])
 * Work is queued on a stream with a bounded depth (the application runs
 * ahead of the device by at most `depth` launches), as real programs do.
 *
 * For each run: wall time of the access phase (best of two runs) relative
 * to the same pattern at 1.0x, and the bytes swapped (device<->host, both directions) relative
 * to Belady's MIN computed offline on the same reference trace with the
 * same device size and cost model (a buffer never written costs nothing to
 * drop or bring back; a written one costs its size each way). The trace
 * includes the initial writes of every buffer.
 *
 * usage: bench_mem [steps] [depth] [mem-swap params]
 *        (defaults 1000, 256, ""; e.g. "prefetch=0")
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vgpu.h"

#define MB (1024u * 1024u)
#define DEV_MB 32u
#define BSIZE (1u * MB)
#define CAP (DEV_MB * MB / BSIZE)   /* buffers the device holds */

enum { CYCLIC, RANDOM, STREAMING };
static const char *pat_name[] = { "cyclic", "random", "streaming" };

struct trace {
	unsigned T;
	int (*r)[2];  /* per step: up to two buffers (-1: none) */
};

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The whole reference trace: initial writes, then the pattern. */
static void make_trace(struct trace *tr, int pat, unsigned n, unsigned steps)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)(pat * 1000 + n);
	unsigned hot = CAP / 8, cold = n - hot;

	tr->T = n + steps;
	tr->r = malloc(tr->T * sizeof(*tr->r));
	for (unsigned i = 0; i < n; i++) {
		tr->r[i][0] = (int)i;
		tr->r[i][1] = -1;
	}
	for (unsigned t = 0; t < steps; t++) {
		int *r = tr->r[n + t];

		r[1] = -1;
		switch (pat) {
		case CYCLIC: r[0] = (int)(t % n); break;
		case RANDOM: r[0] = (int)(rng(&seed) % n); break;
		default:
			r[0] = (int)(t % hot);
			r[1] = (int)(hot + t % cold);
			break;
		}
	}
}

/* Belady's MIN on the trace (same cost model as the engine's counters). */
static uint64_t belady(const struct trace *tr, unsigned n)
{
	unsigned T = tr->T;
	unsigned *nxt = malloc(T * 2 * sizeof(*nxt));
	unsigned *last = malloc(n * sizeof(*last));
	unsigned *nextuse = malloc(n * sizeof(*nextuse));
	char *res = calloc(n, 1), *touched = calloc(n, 1);
	unsigned count = 0;
	uint64_t bytes = 0;
	const unsigned INF = 0xffffffffu;

	for (unsigned b = 0; b < n; b++)
		last[b] = INF;
	for (unsigned t = T; t-- > 0;)
		for (int k = 1; k >= 0; k--) {
			int b = tr->r[t][k];

			if (b < 0)
				continue;
			nxt[t * 2 + k] = last[b];
			last[b] = t;
		}
	/* allocation placed the first CAP buffers resident, never written */
	for (unsigned b = 0; b < n; b++) {
		nextuse[b] = last[b];
		if (b < CAP) {
			res[b] = 1;
			count++;
		}
	}
	for (unsigned t = 0; t < T; t++) {
		for (int k = 0; k < 2; k++) {
			int b = tr->r[t][k], v = -1;

			if (b < 0 || res[b])
				continue;
			while (count >= CAP) {
				for (unsigned c = 0; c < n; c++) {
					if (!res[c] || (int)c == tr->r[t][0] || (int)c == tr->r[t][1])
						continue;
					if (!touched[c]) { /* free to drop */
						v = (int)c;
						break;
					}
					if (v < 0 || nextuse[c] > nextuse[v])
						v = (int)c;
				}
				if (touched[v])
					bytes += BSIZE;
				res[v] = 0;
				count--;
			}
			if (touched[b])
				bytes += BSIZE;
			res[b] = 1;
			count++;
		}
		for (int k = 0; k < 2; k++) {
			int b = tr->r[t][k];

			if (b < 0)
				continue;
			touched[b] = 1;
			nextuse[b] = nxt[t * 2 + k];
		}
	}
	free(nxt);
	free(last);
	free(nextuse);
	free(res);
	free(touched);
	return bytes;
}

struct result {
	double secs;
	uint64_t swapped;
	int ok;
};

static struct result run(const struct trace *tr, unsigned n, const char *spec, unsigned depth)
{
	struct result out = { 0, 0, 0 };
	char uri[64];
	vgpu_t *v = NULL;
	vgpu_module *m;
	vgpu_function *touch, *mix;
	vgpu_stream *s;
	vgpu_event *ev[64];
	vgpu_dptr *b = calloc(n, sizeof(*b));
	unsigned char *init = malloc(BSIZE);
	struct vgpu_device_info info;
	const char *moddir = getenv("VGPU_TEST_MODDIR");
	char path[4096];
	double t0;
	unsigned nev = depth / 16 ? depth / 16 : 1;

	if (nev > 64)
		nev = 64;
	setenv("VGPU_PLUGINS", spec, 1);
	snprintf(uri, sizeof(uri), "cpu:0?devmem=%uM", DEV_MB);
	snprintf(path, sizeof(path), "%s/mem_kernels.so", moddir ? moddir : "tests/.libs");
	if (vgpu_open(&v, uri) || vgpu_module_load_file(v, path, &m) ||
	    vgpu_module_function(m, "touch_u32", &touch) ||
	    vgpu_module_function(m, "mix2_u32", &mix) || vgpu_stream_create(v, &s, 0))
		goto fail;
	for (unsigned i = 0; i < nev; i++)
		if (vgpu_event_create(v, &ev[i], 0))
			goto fail;
	for (unsigned i = 0; i < n; i++)
		if (vgpu_mem_alloc(v, BSIZE, &b[i]))
			goto fail;
	memset(init, 1, BSIZE);
	t0 = now_s();
	for (unsigned t = 0; t < tr->T; t++) {
		const int *r = tr->r[t];
		vgpu_arg a[3];
		vgpu_status st;

		if (t < n) { /* the initial writes */
			st = vgpu_memcpy_htod(v, b[r[0]], init, BSIZE, s);
		} else if (r[1] < 0) {
			a[0] = vgpu_arg_dptr(b[r[0]]);
			a[1] = vgpu_arg_u64(BSIZE / 4);
			a[2] = vgpu_arg_u32(1);
			st = vgpu_launch(v, touch, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
					 s, a, 3);
		} else {
			a[0] = vgpu_arg_dptr(b[r[0]]);
			a[1] = vgpu_arg_dptr(b[r[1]]);
			a[2] = vgpu_arg_u64(BSIZE / 4);
			st = vgpu_launch(v, mix, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
					 s, a, 3);
		}
		if (st)
			goto fail;
		if (t == n - 1) {
			/* initial writes done: time the access phase */
			if (vgpu_stream_synchronize(s))
				goto fail;
			t0 = now_s();
		}
		/* run ahead of the device by at most depth items */
		if (t % 16 == 15) {
			unsigned k = (t / 16) % nev;

			if ((t / 16) >= nev && vgpu_event_synchronize(ev[k]))
				goto fail;
			if (vgpu_event_record(ev[k], s))
				goto fail;
		}
	}
	if (vgpu_stream_synchronize(s))
		goto fail;
	out.secs = now_s() - t0;
	if (vgpu_device_info(v, &info))
		goto fail;
	out.swapped = info.dev_swapped_in + info.dev_swapped_out;
	out.ok = 1;
	vgpu_close(v);
	free(b);
	free(init);
	return out;
fail:
	fprintf(stderr, "bench_mem: %s: %s\n", spec, vgpu_last_error());
	vgpu_close(v);
	free(b);
	free(init);
	return out;
}

int main(int argc, char **argv)
{
	static const double ws[] = { 1.0, 1.5, 2.0, 4.0 };
	unsigned steps = argc > 1 ? (unsigned)atoi(argv[1]) : 1000;
	unsigned depth = argc > 2 ? (unsigned)atoi(argv[2]) : 256;
	const char *extra = argc > 3 ? argv[3] : "";
	int fail = 0;

	if (depth < 16)
		depth = 16;
	printf("bench_mem: cpu device %u MiB, %u MiB buffers, %u accesses after the initial "
	       "writes,\n  queue depth %u, mem-swap (policy=future, prefetch=4); LRU for "
	       "comparison.\n  swapped = bytes moved device<->host; Belady = MIN on the same "
	       "trace; ratio = swapped / Belady\n\n", DEV_MB, BSIZE / MB, steps, depth);
	printf("%-10s %5s %9s %12s %12s %7s %12s %7s\n", "pattern", "ws", "time/1.0x",
	       "swapped MiB", "Belady MiB", "ratio", "LRU MiB", "LRU/B");
	for (int p = 0; p < 3; p++) {
		double base = 0;

		for (unsigned w = 0; w < 4; w++) {
			unsigned n = (unsigned)(ws[w] * CAP + 0.5);
			struct trace tr;
			struct result r, l;
			uint64_t floor;
			char swap[160];

			make_trace(&tr, p, n, steps);
			floor = belady(&tr, n);
			snprintf(swap, sizeof(swap), "mem-swap:swap=%uM%s%s", DEV_MB * 4,
				 *extra ? "," : "", extra);
			r = run(&tr, n, swap, depth);
			if (r.ok) { /* time: best of two (the machine may be shared) */
				struct result r2 = run(&tr, n, swap, depth);

				if (r2.ok && r2.secs < r.secs)
					r.secs = r2.secs;
			}
			snprintf(swap, sizeof(swap), "mem-swap:swap=%uM,policy=lru", DEV_MB * 4);
			l = run(&tr, n, swap, depth);
			free(tr.r);
			if (!r.ok || !l.ok) {
				fail = 1;
				continue;
			}
			if (w == 0)
				base = r.secs;
			printf("%-10s %4.1fx %8.2fx %12.1f %12.1f %7s %12.1f %7s\n", pat_name[p],
			       ws[w], base > 0 ? r.secs / base : 0, (double)r.swapped / MB,
			       (double)floor / MB,
			       floor ? (snprintf(swap, 32, "%.2f", (double)r.swapped / (double)floor), swap)
				     : (r.swapped ? "inf" : "-"),
			       (double)l.swapped / MB,
			       floor ? (snprintf(swap + 32, 32, "%.2f", (double)l.swapped / (double)floor),
					swap + 32) : (l.swapped ? "inf" : "-"));
			fflush(stdout);
		}
	}
	return fail;
}
