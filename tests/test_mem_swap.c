/* SPDX-License-Identifier: MIT */
/*
 * test_mem_swap.c - oversubscription with the mem-swap plugin (cpu backend):
 * 4x oversubscribed random, cyclic and streaming access from several
 * sessions and streams at once with every buffer checked against a host
 * model; frees during eviction; buffers in use never evicted; a launch too
 * large to fit; pinning for kernels that follow stored pointers; the
 * policy against LRU on a cyclic scan.
 */
#include "config.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"

#define KB 1024u
#define MB (1024u * 1024u)

static int is_cpu(void)
{
	return !strncmp(vt_uri(), "cpu", 3);
}

static void plugins(const char *spec)
{
	setenv("VGPU_PLUGINS", spec, 1);
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ------------------------------------------------------------------------ */
/* A session running an access pattern over its buffers, with a host model  */

enum pattern { P_CYCLIC, P_RANDOM, P_STREAMING };

struct worker {
	const char *uri;
	enum pattern pat;
	unsigned nbuf, nstreams, steps;
	size_t bsize;
	uint64_t seed;
	int rc;            /* 0 ok */
	char why[256];
	struct vgpu_device_info info; /* at the end */
};

#define WFAIL(w, ...) do { snprintf((w)->why, sizeof((w)->why), __VA_ARGS__); \
	(w)->rc = 1; goto out; } while (0)

static void shadow_touch(uint32_t *p, size_t words, uint32_t add)
{
	for (size_t i = 0; i < words; i++)
		p[i] += add;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	vgpu_t *v = NULL;
	vgpu_module *m = NULL;
	vgpu_function *touch = NULL, *mix = NULL;
	vgpu_stream *st[8] = { NULL };
	vgpu_dptr *b = calloc(w->nbuf, sizeof(*b));
	uint32_t **sh = calloc(w->nbuf, sizeof(*sh));
	uint32_t *tmp = malloc(w->bsize);
	size_t words = w->bsize / 4;
	uint64_t seed = w->seed;
	unsigned *cursor = calloc(w->nstreams, sizeof(unsigned));
	vgpu_status s;

	w->rc = 0;
	if (!b || !sh || !tmp || !cursor)
		WFAIL(w, "no host memory");
	if ((s = vgpu_open(&v, w->uri)))
		WFAIL(w, "open: %s", vgpu_last_error());
	if (vt_module_load(v, "mem_kernels", &m) || vgpu_module_function(m, "touch_u32", &touch) ||
	    vgpu_module_function(m, "mix2_u32", &mix))
		WFAIL(w, "module: %s", vgpu_last_error());
	for (unsigned j = 0; j < w->nstreams; j++)
		if (vgpu_stream_create(v, &st[j], 0))
			WFAIL(w, "stream: %s", vgpu_last_error());
	for (unsigned i = 0; i < w->nbuf; i++) {
		if (!(sh[i] = malloc(w->bsize)))
			WFAIL(w, "no host memory");
		if (vgpu_mem_alloc(v, w->bsize, &b[i]))
			WFAIL(w, "alloc %u: %s", i, vgpu_last_error());
		vt_fill(sh[i], w->bsize, w->seed * 1000 + i);
		if (vgpu_memcpy_htod(v, b[i], sh[i], w->bsize, NULL))
			WFAIL(w, "htod %u: %s", i, vgpu_last_error());
	}
	/* stream j owns buffers i with i % nstreams == j (no two streams race
	 * on one buffer, so the model is exact) */
	for (unsigned step = 0; step < w->steps; step++) {
		unsigned j = step % w->nstreams;
		unsigned per = (w->nbuf - j + w->nstreams - 1) / w->nstreams;
		unsigned k, i, i2;
		uint32_t add = step + 1;
		vgpu_arg a[3];

		switch (w->pat) {
		case P_CYCLIC: k = cursor[j]++ % per; break;
		case P_RANDOM: k = (unsigned)(rng(&seed) % per); break;
		default: k = (cursor[j]++ / 2) % per; break; /* each buffer twice, then on */
		}
		i = j + k * w->nstreams;
		if (w->pat == P_STREAMING && k > 0) {
			/* produce i from its predecessor */
			i2 = j + (k - 1) * w->nstreams;
			a[0] = vgpu_arg_dptr(b[i]);
			a[1] = vgpu_arg_dptr(b[i2]);
			a[2] = vgpu_arg_u64(words);
			if (vgpu_launch(v, mix, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
					st[j], a, 3))
				WFAIL(w, "launch mix: %s", vgpu_last_error());
			for (size_t x = 0; x < words; x++)
				sh[i][x] += sh[i2][x] * 3u;
		} else {
			a[0] = vgpu_arg_dptr(b[i]);
			a[1] = vgpu_arg_u64(words);
			a[2] = vgpu_arg_u32(add);
			if (vgpu_launch(v, touch, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
					st[j], a, 3))
				WFAIL(w, "launch touch: %s", vgpu_last_error());
			shadow_touch(sh[i], words, add);
		}
		if (step % 97 == 96) {
			/* mid-run check of one buffer of stream j */
			if (vgpu_stream_synchronize(st[j]))
				WFAIL(w, "sync: %s", vgpu_last_error());
			if (vgpu_memcpy_dtoh(v, tmp, b[i], w->bsize, NULL))
				WFAIL(w, "dtoh: %s", vgpu_last_error());
			if (memcmp(tmp, sh[i], w->bsize))
				WFAIL(w, "buffer %u differs from the model at step %u", i, step);
		}
	}
	if (vgpu_synchronize(v))
		WFAIL(w, "synchronize: %s", vgpu_last_error());
	for (unsigned i = 0; i < w->nbuf; i++) {
		if (vgpu_memcpy_dtoh(v, tmp, b[i], w->bsize, NULL))
			WFAIL(w, "final dtoh %u: %s", i, vgpu_last_error());
		if (vt_hash(tmp, w->bsize) != vt_hash(sh[i], w->bsize))
			WFAIL(w, "buffer %u: checksum differs from the model", i);
	}
	if (vgpu_device_info(v, &w->info))
		WFAIL(w, "device_info: %s", vgpu_last_error());
	for (unsigned i = 0; i < w->nbuf; i++)
		if (vgpu_mem_free(v, b[i]))
			WFAIL(w, "free: %s", vgpu_last_error());
out:
	if (v)
		vgpu_close(v);
	for (unsigned i = 0; sh && i < w->nbuf; i++)
		free(sh[i]);
	free(sh);
	free(b);
	free(tmp);
	free(cursor);
	return NULL;
}

/* ------------------------------------------------------------------------ */

/* Several sessions x streams, one pattern each, 4x the device together. */
static int run_mixed_spec(enum pattern p0, const char *spec);

static int run_mixed(enum pattern p0)
{
	return run_mixed_spec(p0, "mem-swap:swap=64M");
}

static int run_mixed_spec(enum pattern p0, const char *spec)
{
	struct worker w[3];
	pthread_t t[3];
	vgpu_t *keep;
	struct vgpu_device_info info;

	if (!is_cpu())
		return VT_SKIP;
	plugins(spec);
	/* keeps the device (8 MiB) alive for the whole case */
	CHECK_OK(vgpu_open(&keep, "cpu:0?devmem=8M"));
	for (int i = 0; i < 3; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].uri = "cpu:0";
		w[i].pat = (enum pattern)((p0 + i) % 3);
		w[i].nbuf = 44;             /* 3 x 44 x 256 KiB = 33 MiB: 4.1x */
		w[i].bsize = 256 * KB;
		w[i].nstreams = 2;
		w[i].steps = 400;
		w[i].seed = 7 + (uint64_t)i * 31 + p0;
		CHECK(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0);
	}
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 3; i++)
		if (w[i].rc) {
			fprintf(stderr, "  session %d: %s\n", i, w[i].why);
			return VT_FAIL;
		}
	CHECK_OK(vgpu_device_info(keep, &info));
	CHECK(info.dev_evictions > 0 && info.dev_swapped_out > 0 && info.dev_swapped_in > 0);
	CHECK(info.dev_mem_resident == 0 && info.dev_mem_on_host == 0); /* all freed */
	for (int i = 0; i < 3; i++)
		CHECK(w[i].info.evictions > 0 || w[i].info.swapped_in > 0);
	vgpu_close(keep);
	return 0;
}

static int t_mixed_cyclic(void *d) { (void)d; return run_mixed(P_CYCLIC); }
static int t_mixed_random(void *d) { (void)d; return run_mixed(P_RANDOM); }
static int t_mixed_streaming(void *d) { (void)d; return run_mixed(P_STREAMING); }
/* the same under a scheduler plugin (synchronous work queued too) */
static int t_mixed_sched(void *d)
{
	(void)d;
	return run_mixed_spec(P_RANDOM, "sched-fair mem-quota mem-swap:swap=64M");
}

/* Allocation beyond the device succeeds up to device + swap. */
static int t_alloc_beyond_device(void *d)
{
	vgpu_t *v;
	vgpu_dptr p[20], q;
	struct vgpu_device_info info;
	unsigned char buf[4096];

	if (!is_cpu())
		return VT_SKIP;
	plugins("mem-swap:swap=12M");
	CHECK_OK(vgpu_open(&v, "cpu:1?devmem=4M"));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 16 * MB && info.free_mem == 16 * MB);
	CHECK(info.flags & VGPU_DEVICE_SWAP);
	for (int i = 0; i < 16; i++)
		CHECK_OK(vgpu_mem_alloc(v, MB, &p[i]));
	CHECK_ST(vgpu_mem_alloc(v, MB, &q), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_MSG("swap");
	CHECK_MSG("16 MiB in use, 1 MiB asked");
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.free_mem == 0 && info.mem_resident == 4 * MB && info.mem_on_host == 12 * MB);
	/* never-written memory reads as zeros, wherever it is */
	for (int i = 0; i < 16; i++) {
		CHECK_OK(vgpu_memcpy_dtoh(v, buf, p[i] + MB - sizeof(buf), sizeof(buf), NULL));
		for (size_t k = 0; k < sizeof(buf); k++)
			CHECK(buf[k] == 0);
	}
	for (int i = 0; i < 16; i++)
		CHECK_OK(vgpu_mem_free(v, p[i]));
	vgpu_close(v);
	return 0;
}

/* One launch whose buffers cannot be resident together fails clearly. */
static int t_launch_too_big(void *d)
{
	vgpu_t *v;
	vgpu_module *m;
	vgpu_function *mix;
	vgpu_dptr a, b;
	vgpu_arg args[3];

	if (!is_cpu())
		return VT_SKIP;
	plugins("mem-swap:swap=64M");
	CHECK_OK(vgpu_open(&v, "cpu:2?devmem=4M"));
	CHECK_OK(vt_module_load(v, "mem_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "mix2_u32", &mix));
	CHECK_OK(vgpu_mem_alloc(v, 3 * MB, &a));
	CHECK_OK(vgpu_mem_alloc(v, 3 * MB, &b));
	args[0] = vgpu_arg_dptr(a);
	args[1] = vgpu_arg_dptr(b);
	args[2] = vgpu_arg_u64(3 * MB / 4);
	CHECK_ST(vgpu_launch(v, mix, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL,
			     args, 3), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_MSG("6 MiB of buffers that must be resident at once");
	/* each alone is fine */
	args[1] = vgpu_arg_dptr(a);
	CHECK_OK(vgpu_launch(v, mix, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL,
			     args, 3));
	vgpu_close(v);
	return 0;
}

/* Frees (and allocations) of one session while others force evictions. */
static int t_frees_during_eviction(void *d)
{
	struct worker w[2];
	pthread_t t[2];
	vgpu_t *v;
	vgpu_module *m;
	vgpu_function *touch;
	vgpu_stream *s;
	uint64_t seed = 99;
	unsigned char *src = malloc(MB), *dst = malloc(MB);

	if (!is_cpu())
		return VT_SKIP;
	CHECK(src && dst);
	plugins("mem-swap:swap=64M");
	CHECK_OK(vgpu_open(&v, "cpu:3?devmem=6M"));
	CHECK_OK(vt_module_load(v, "mem_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "touch_u32", &touch));
	CHECK_OK(vgpu_stream_create(v, &s, 0));
	for (int i = 0; i < 2; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].uri = "cpu:3";
		w[i].pat = i ? P_RANDOM : P_CYCLIC;
		w[i].nbuf = 40;              /* 2 x 40 x 256 KiB = 20 MiB on 6 MiB */
		w[i].bsize = 256 * KB;
		w[i].nstreams = 2;
		w[i].steps = 400;
		w[i].seed = 500 + (uint64_t)i;
		CHECK(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0);
	}
	for (int it = 0; it < 150; it++) {
		size_t n = (size_t)(64 * KB + rng(&seed) % (960 * KB)) & ~(size_t)3;
		vgpu_dptr p;
		vgpu_arg a[3];

		vt_fill(src, n, (uint64_t)it);
		CHECK_OK(vgpu_mem_alloc(v, n, &p));
		CHECK_OK(vgpu_memcpy_htod(v, p, src, n, s));
		a[0] = vgpu_arg_dptr(p);
		a[1] = vgpu_arg_u64(n / 4);
		a[2] = vgpu_arg_u32(5);
		CHECK_OK(vgpu_launch(v, touch, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s,
				     a, 3));
		if (it % 3 == 0) {
			/* free with work still queued: waits for it */
			CHECK_OK(vgpu_mem_free(v, p));
			continue;
		}
		CHECK_OK(vgpu_memcpy_dtoh(v, dst, p, n, s));
		CHECK_OK(vgpu_stream_synchronize(s));
		for (size_t k = 0; k < n / 4; k++)
			((uint32_t *)src)[k] += 5;
		CHECK(!memcmp(src, dst, n));
		CHECK_OK(vgpu_mem_free(v, p));
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 2; i++)
		if (w[i].rc) {
			fprintf(stderr, "  session %d: %s\n", i, w[i].why);
			return VT_FAIL;
		}
	vgpu_close(v);
	free(src);
	free(dst);
	return 0;
}

/* A buffer used by a running kernel is never evicted, whatever pressure
 * other sessions put on the device meanwhile. */
struct holder {
	vgpu_t *v;
	vgpu_function *hold;
	vgpu_dptr p;
	int rc;
	char why[256];
};

static void *holder_main(void *arg)
{
	struct holder *h = arg;
	vgpu_arg a[4];

	for (int i = 0; i < 6 && !h->rc; i++) {
		a[0] = vgpu_arg_dptr(h->p);
		a[1] = vgpu_arg_u64(MB / 4);
		a[2] = vgpu_arg_u64(30000);
		a[3] = vgpu_arg_u32((uint32_t)i * 77u);
		if (vgpu_launch(h->v, h->hold, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
				NULL, a, 4)) {
			h->rc = 1;
			snprintf(h->why, sizeof(h->why), "%s", vgpu_last_error());
		}
	}
	return NULL;
}

static int t_in_use_never_evicted(void *d)
{
	struct worker w;
	struct holder h;
	pthread_t t1, t2;
	vgpu_module *m;
	struct vgpu_device_info info;

	if (!is_cpu())
		return VT_SKIP;
	plugins("mem-swap:swap=64M");
	memset(&h, 0, sizeof(h));
	CHECK_OK(vgpu_open(&h.v, "cpu:4?devmem=4M"));
	CHECK_OK(vt_module_load(h.v, "mem_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "hold_check", &h.hold));
	CHECK_OK(vgpu_mem_alloc(h.v, MB, &h.p));
	memset(&w, 0, sizeof(w));
	w.uri = "cpu:4";
	w.pat = P_CYCLIC;
	w.nbuf = 48;                 /* 12 MiB of 256 KiB buffers on 4 MiB */
	w.bsize = 256 * KB;
	w.nstreams = 3;
	w.steps = 600;
	w.seed = 4242;
	CHECK(pthread_create(&t1, NULL, worker_main, &w) == 0);
	CHECK(pthread_create(&t2, NULL, holder_main, &h) == 0);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	if (h.rc)
		fprintf(stderr, "  holder: %s\n", h.why);
	if (w.rc)
		fprintf(stderr, "  flooder: %s\n", w.why);
	CHECK(!h.rc && !w.rc);
	CHECK_OK(vgpu_device_info(h.v, &info));
	CHECK(info.dev_evictions > 0);
	vgpu_close(h.v);
	return 0;
}

/* Kernels that follow stored pointers: the buffers pinned stay resident. */
static int t_pin(void *d)
{
	vgpu_t *v;
	vgpu_module *m;
	vgpu_function *sum, *touch;
	vgpu_dptr data[4], table, out, anchor, flood[24], big;
	uint64_t tab[4], got[4], want[4];
	size_t words = 64 * KB;     /* 256 KiB buffers */
	uint32_t *h = malloc(words * 4);
	struct vgpu_device_info i0, i1;
	vgpu_arg a[6];

	if (!is_cpu())
		return VT_SKIP;
	CHECK(h != NULL);
	plugins("mem-swap:swap=64M");
	CHECK_OK(vgpu_open(&v, "cpu:5?devmem=4M"));
	CHECK_OK(vt_module_load(v, "mem_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "sum_indirect", &sum));
	CHECK_OK(vgpu_module_function(m, "touch_u32", &touch));
	for (int k = 0; k < 4; k++) {
		CHECK_OK(vgpu_mem_alloc(v, words * 4, &data[k]));
		want[k] = 0;
		for (size_t i = 0; i < words; i++) {
			h[i] = (uint32_t)(i * (k + 3));
			want[k] += h[i];
		}
		CHECK_OK(vgpu_memcpy_htod(v, data[k], h, words * 4, NULL));
		CHECK_OK(vgpu_mem_advise(v, data[k], VGPU_ADVISE_PIN));
		tab[k] = data[k];
	}
	CHECK_OK(vgpu_mem_alloc(v, sizeof(tab), &table));
	CHECK_OK(vgpu_memcpy_htod(v, table, tab, sizeof(tab), NULL));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(got), &out));
	CHECK_OK(vgpu_mem_alloc(v, 4096, &anchor));
	CHECK_OK(vgpu_device_info(v, &i0));
	/* pressure: 6 MiB of other buffers through a 4 MiB device (1 MiB pinned) */
	for (int k = 0; k < 24; k++) {
		CHECK_OK(vgpu_mem_alloc(v, words * 4, &flood[k]));
		a[0] = vgpu_arg_dptr(flood[k]);
		a[1] = vgpu_arg_u64(words);
		a[2] = vgpu_arg_u32(1);
		CHECK_OK(vgpu_launch(v, touch, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
				     NULL, a, 3));
	}
	CHECK_OK(vgpu_device_info(v, &i1));
	CHECK(i1.evictions > i0.evictions);
	a[0] = vgpu_arg_dptr(anchor);
	a[1] = vgpu_arg_u64(anchor);
	a[2] = vgpu_arg_dptr(table);
	a[3] = vgpu_arg_u32(4);
	a[4] = vgpu_arg_u64(words);
	a[5] = vgpu_arg_dptr(out);
	CHECK_OK(vgpu_launch(v, sum, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL,
			     a, 6));
	CHECK_OK(vgpu_memcpy_dtoh(v, got, out, sizeof(got), NULL));
	for (int k = 0; k < 4; k++)
		CHECK(got[k] == want[k]);
	/* a launch naming a pinned buffer does not count it twice */
	a[0] = vgpu_arg_dptr(data[0]);
	a[1] = vgpu_arg_u64(words);
	a[2] = vgpu_arg_u32(0);
	CHECK_OK(vgpu_launch(v, touch, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL,
			     a, 3));
	/* more than the device cannot be pinned */
	CHECK_OK(vgpu_mem_alloc(v, 4 * MB, &big));
	CHECK_ST(vgpu_mem_advise(v, big, VGPU_ADVISE_PIN), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_ST(vgpu_mem_advise(v, big + 8, VGPU_ADVISE_PIN), VGPU_ERR_BAD_ADDRESS);
	CHECK_ST(vgpu_mem_advise(v, big, 99), VGPU_ERR_INVALID);
	for (int k = 0; k < 4; k++)
		CHECK_OK(vgpu_mem_advise(v, data[k], VGPU_ADVISE_UNPIN));
	/* now it fits */
	CHECK_OK(vgpu_mem_advise(v, big, VGPU_ADVISE_PIN));
	vgpu_close(v);
	free(h);
	return 0;
}

/* A cyclic scan over twice the device, synchronous (no lookahead): the
 * default policy swaps far less than LRU, which misses every time. */
static uint64_t cyclic_swapped(const char *spec, int async)
{
	vgpu_t *v;
	vgpu_module *m;
	vgpu_function *touch;
	vgpu_stream *s = NULL;
	vgpu_dptr p[32];
	struct vgpu_device_info info;
	vgpu_arg a[3];

	plugins(spec);
	if (vgpu_open(&v, "cpu:6?devmem=4M"))
		return 0;
	if (vt_module_load(v, "mem_kernels", &m) || vgpu_module_function(m, "touch_u32", &touch))
		return 0;
	if (async && vgpu_stream_create(v, &s, 0))
		return 0;
	for (int i = 0; i < 32; i++)
		if (vgpu_mem_alloc(v, 256 * KB, &p[i]))
			return 0;
	for (int r = 0; r < 8; r++)
		for (int i = 0; i < 32; i++) {
			a[0] = vgpu_arg_dptr(p[i]);
			a[1] = vgpu_arg_u64(64 * KB);
			a[2] = vgpu_arg_u32(1);
			if (vgpu_launch(v, touch, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
					s, a, 3))
				return 0;
		}
	if (vgpu_synchronize(v) || vgpu_device_info(v, &info))
		return 0;
	vgpu_close(v);
	return info.dev_swapped_in + info.dev_swapped_out;
}

static int t_beats_lru_on_cyclic(void *d)
{
	uint64_t lru, fut, fut_async;

	if (!is_cpu())
		return VT_SKIP;
	lru = cyclic_swapped("mem-swap:policy=lru", 0);
	fut = cyclic_swapped("mem-swap:policy=future", 0);
	fut_async = cyclic_swapped("mem-swap:policy=future,prefetch=0", 1);
	fprintf(stderr, "  cyclic 2x: swapped lru %llu, future %llu, future+lookahead %llu\n",
		(unsigned long long)lru, (unsigned long long)fut, (unsigned long long)fut_async);
	CHECK(lru > 0 && fut > 0 && fut_async > 0);
	CHECK(fut * 3 < lru * 2);
	CHECK(fut_async * 3 < lru * 2);
	return 0;
}

/* Evicted, pinned and never-used buffers are freed (explicitly or by
 * close) without loss or leak: the device's counters return to zero. */
static int t_free_states(void *d)
{
	vgpu_t *keep, *v;
	vgpu_dptr p[12];
	struct vgpu_device_info info;
	unsigned char *buf = malloc(MB), *chk = malloc(MB);

	if (!is_cpu())
		return VT_SKIP;
	CHECK(buf && chk);
	plugins("mem-swap:swap=64M");
	CHECK_OK(vgpu_open(&keep, "cpu:7?devmem=4M"));
	CHECK_OK(vgpu_open(&v, "cpu:7"));
	for (int i = 0; i < 12; i++) {
		CHECK_OK(vgpu_mem_alloc(v, MB, &p[i]));
		if (i % 3) { /* every third never written */
			vt_fill(buf, MB, (uint64_t)i);
			CHECK_OK(vgpu_memcpy_htod(v, p[i], buf, MB, NULL));
		}
	}
	CHECK_OK(vgpu_mem_advise(v, p[1], VGPU_ADVISE_PIN));
	CHECK_OK(vgpu_memset(v, p[1], 7, 100, NULL)); /* pinned and used */
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.mem_resident <= 4 * MB && info.mem_on_host >= 8 * MB);
	/* free some of each kind: evicted written, evicted never written,
	 * pinned, resident */
	CHECK_OK(vgpu_mem_free(v, p[2]));
	CHECK_OK(vgpu_mem_free(v, p[3]));
	CHECK_OK(vgpu_mem_free(v, p[1]));
	CHECK_OK(vgpu_mem_free(v, p[11]));
	for (int i = 4; i < 11; i++) {
		CHECK_OK(vgpu_memcpy_dtoh(v, chk, p[i], MB, NULL));
		if (i % 3) {
			vt_fill(buf, MB, (uint64_t)i);
			CHECK(!memcmp(buf, chk, MB));
		} else {
			memset(buf, 0, MB);
			CHECK(!memcmp(buf, chk, MB));
		}
	}
	CHECK_OK(vgpu_mem_advise(v, p[5], VGPU_ADVISE_PIN));
	vgpu_close(v); /* frees the rest, pinned included */
	CHECK_OK(vgpu_device_info(keep, &info));
	CHECK(info.dev_mem_resident == 0 && info.dev_mem_on_host == 0);
	CHECK(info.free_mem == info.total_mem);
	vgpu_close(keep);
	free(buf);
	free(chk);
	return 0;
}

/*
 * The host's guarantee, whatever a plugin asks: with mem-evil (which tries
 * to evict every other buffer before each work item) a buffer in use by a
 * running kernel, or pinned, is never evicted, and no byte of the others
 * is lost. The kernel holds its buffer until the test lets it go, so the
 * attempts happen while it runs (no timing involved).
 */
static int t_host_refuses_in_use(void *d)
{
	char path[256], line[256];
	vgpu_t *v, *w;
	vgpu_module *m;
	vgpu_function *hold;
	vgpu_stream *s;
	vgpu_dptr x, y[8];
	vgpu_arg a[3];
	int flag = 0;
	unsigned long tried = 0, refused = 0, violations = 1;
	unsigned char *buf = malloc(MB), *chk = malloc(MB);
	FILE *f;

	if (!is_cpu())
		return VT_SKIP;
	CHECK(buf && chk);
	snprintf(path, sizeof(path), "mem-evil-%d.out", (int)getpid());
	remove(path);
	snprintf(line, sizeof(line), "mem-evil:out=%s", path);
	plugins(line);
	CHECK_OK(vgpu_open(&v, "cpu:6?devmem=4M"));
	CHECK_OK(vgpu_open(&w, "cpu:6"));
	CHECK_OK(vt_module_load(v, "mem_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "hold_flag", &hold));
	CHECK_OK(vgpu_stream_create(v, &s, 0));
	CHECK_OK(vgpu_mem_alloc(v, MB, &x));
	for (int i = 0; i < 8; i++) {
		CHECK_OK(vgpu_mem_alloc(i % 2 ? v : w, MB, &y[i]));
		vt_fill(buf, MB, 100u + (unsigned)i);
		CHECK_OK(vgpu_memcpy_htod(i % 2 ? v : w, y[i], buf, MB, NULL));
	}
	CHECK_OK(vgpu_mem_advise(w, y[0], VGPU_ADVISE_PIN));
	a[0] = vgpu_arg_dptr(x);
	a[1] = vgpu_arg_u64(MB / 4);
	a[2] = vgpu_arg_u64((uint64_t)(uintptr_t)&flag);
	CHECK_OK(vgpu_launch(v, hold, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, s, a, 3));
	while (__atomic_load_n(&flag, __ATOMIC_SEQ_CST) != 1)
		sched_yield();
	/* x is in use now: every copy below makes the plugin try to evict it */
	for (int r = 0; r < 3; r++)
		for (int i = 1; i < 8; i++) {
			vgpu_t *h = i % 2 ? v : w;

			CHECK_OK(vgpu_memcpy_dtoh(h, chk, y[i], MB, NULL));
			vt_fill(buf, MB, 100u + (unsigned)i);
			CHECK(!memcmp(buf, chk, MB));
		}
	__atomic_store_n(&flag, 2, __ATOMIC_SEQ_CST);
	CHECK_OK(vgpu_stream_synchronize(s)); /* no trap: x never moved */
	CHECK_OK(vgpu_memcpy_dtoh(w, chk, y[0], MB, NULL));
	vt_fill(buf, MB, 100u);
	CHECK(!memcmp(buf, chk, MB));
	vgpu_close(v);
	vgpu_close(w); /* the engine goes: the plugin writes its counts */
	f = fopen(path, "r");
	CHECK(f != NULL);
	CHECK(fgets(line, sizeof(line), f) != NULL);
	fclose(f);
	remove(path);
	CHECK(sscanf(line, "tried %lu refused %lu violations %lu", &tried, &refused,
		     &violations) == 3);
	fprintf(stderr, "  mem-evil: %s", line);
	CHECK(violations == 0);
	CHECK(refused >= 2 * 21); /* x (in use) and y[0] (pinned), at every copy */
	free(buf);
	free(chk);
	return 0;
}

static int t_bad_params(void *d)
{
	vgpu_t *v;

	if (!is_cpu())
		return VT_SKIP;
	plugins("mem-swap:policy=mru");
	CHECK_ST(vgpu_open(&v, "cpu:7"), VGPU_ERR_PLUGIN);
	CHECK_MSG("policy");
	plugins("mem-swap:swapp=1G");
	CHECK(vgpu_open(&v, "cpu:7") != VGPU_OK);
	CHECK_MSG("swapp");
	return 0;
}

int main(void)
{
	vt_run("alloc_beyond_device", t_alloc_beyond_device, NULL);
	vt_run("launch_too_big", t_launch_too_big, NULL);
	vt_run("oversub4x_cyclic_random_streaming", t_mixed_cyclic, NULL);
	vt_run("oversub4x_random_streaming_cyclic", t_mixed_random, NULL);
	vt_run("oversub4x_streaming_cyclic_random", t_mixed_streaming, NULL);
	vt_run("oversub4x_with_sched_fair_and_quota", t_mixed_sched, NULL);
	vt_run("frees_during_eviction", t_frees_during_eviction, NULL);
	vt_run("in_use_never_evicted", t_in_use_never_evicted, NULL);
	vt_run("pin", t_pin, NULL);
	vt_run("free_states", t_free_states, NULL);
	vt_run("host_refuses_evicting_in_use", t_host_refuses_in_use, NULL);
	vt_run("beats_lru_on_cyclic", t_beats_lru_on_cyclic, NULL);
	vt_run("bad_params", t_bad_params, NULL);
	return vt_finish();
}
