/* SPDX-License-Identifier: MIT */
/*
 * test_cuda_backend.c - the cuda backend's ops table driven directly, on the
 * fake driver (tests/fake-cuda): driver loading, contexts on several
 * threads, VMM allocation, staged copies, modules, parameter info, launches,
 * asynchronous and injected errors, eviction and restore, and no leaks.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "test.h"
#include "fake-cuda.h"

#define B (&vgpu__cuda_backend)
#define MIB (1024u * 1024u)

/* Like CHECK_ST, with the backend's thread message. */
#define BCHECK_ST(expr, want) do { vgpu_status st_ = (expr); \
	if (st_ != (want)) { \
		fprintf(stderr, "  %s:%d: %s = %d, want %d (message: %s)\n", __FILE__, __LINE__, \
			#expr, (int)st_, (int)(want), vgpu__error_msg()); \
		return VT_FAIL; } } while (0)
#define BCHECK_OK(expr) BCHECK_ST(expr, VGPU_OK)
#define BCHECK_MSG(needle) do { if (!strstr(vgpu__error_msg(), (needle))) { \
	fprintf(stderr, "  %s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__, \
		vgpu__error_msg(), (needle)); return VT_FAIL; } } while (0)

static struct fake_cuda fk;
static struct vgpu_backend_dev *dev;
static struct vgpu_uri uri0;

struct saxpy_params {
	float a;
	int32_t n;
};

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return buf; /* deliberately not NUL-terminated */
}

static char *ptx_image(size_t *len)
{
	const char *src = getenv("top_srcdir");
	char path[4096];

	snprintf(path, sizeof(path), "%s/tests/test_kernels.ptx", src ? src : TOP_SRCDIR);
	return read_file(path, len);
}

static int t_open(void *d)
{
	struct vgpu_device_info info;
	struct vgpu_backend_dev *dev2 = NULL;

	CHECK(B->device_count() == 1);
	fk = fake_cuda_api();
	BCHECK_OK(B->device_open(0, &uri0, &dev));
	memset(&info, 0, sizeof(info));
	BCHECK_OK(B->device_info(dev, &info));
	CHECK(strstr(info.name, "Fake CUDA Device 0") != NULL);
	CHECK(strcmp(info.backend, "cuda") == 0);
	CHECK(strcmp(info.arch, "sm_80") == 0);
	CHECK(info.cc_major == 8 && info.cc_minor == 0);
	CHECK(info.multiprocessor_count == 108);
	CHECK(info.max_threads_per_block == 1024);
	CHECK(info.total_mem == 1024ull * MIB);
	CHECK(info.free_mem == 1024ull * MIB);
	CHECK(info.uuid[0] == 0xf0 && info.uuid[15] == 0xff);
	CHECK(B->granularity(dev) == 2 * MIB);
	/* Opening the device again shares the retained primary context. */
	BCHECK_OK(B->device_open(0, &uri0, &dev2));
	CHECK(dev2 == dev);
	CHECK(fk.live("contexts") == 1);
	B->device_close(dev2);
	CHECK(fk.live("contexts") == 1);
	/* Out of range. */
	BCHECK_ST(B->device_open(1, &uri0, &dev2), VGPU_ERR_NO_DEVICE);
	BCHECK_MSG("cuda:1");
	/* Only the v2 entry point was taken with cuGetProcAddress. */
	CHECK(fk.calls("cuGetProcAddress") > 30);
	CHECK(fk.calls("cuGetProcAddress_v1") == 0);
	/* Each entry point in the ABI variant the backend calls, although this
	 * (fake) driver is CUDA 13.0 and has newer or older ones. */
	CHECK(fk.calls("cuGetProcAddress:cuCtxSynchronize@2000") == 1);
	CHECK(fk.calls("cuGetProcAddress:cuCtxSynchronize@13000") == 0);
	CHECK(fk.calls("cuGetProcAddress:cuMemGetInfo@3020") == 1);
	CHECK(fk.calls("cuGetProcAddress:cuMemGetInfo@2000") == 0);
	CHECK(fk.calls("cuGetProcAddress:cuDeviceGetUuid@11040") == 1);
	CHECK(fk.calls("cuGetProcAddress:cuDevicePrimaryCtxRelease@11000") == 1);
	CHECK(fk.calls("cuGetProcAddress:cuFuncGetParamInfo@12040") == 1);
	CHECK(fk.calls("cuInit") == 1);
	return 0;
}

static int t_alloc(void *d)
{
	vgpu_dptr p = 0, q = 0;
	long res = fk.live("reservations"), maps = fk.live("mappings");

	fk.reset_counts();
	BCHECK_OK(B->mem_alloc(dev, 4 * MIB, &p));
	CHECK(p != 0 && p % (2 * MIB) == 0);
	CHECK(fk.calls("cuMemAddressReserve") == 1 && fk.calls("cuMemCreate") == 1);
	CHECK(fk.calls("cuMemMap") == 1 && fk.calls("cuMemSetAccess") == 1);
	CHECK(fk.mem_used(0) == 4 * MIB);
	BCHECK_OK(B->mem_alloc(dev, 2 * MIB, &q));
	CHECK(q != p);
	CHECK(fk.live("reservations") == res + 2 && fk.live("mappings") == maps + 2);
	BCHECK_OK(B->mem_free(dev, p, 4 * MIB));
	BCHECK_OK(B->mem_free(dev, q, 2 * MIB));
	CHECK(fk.live("reservations") == res && fk.live("mappings") == maps);
	CHECK(fk.mem_used(0) == 0 && fk.live("phys") == 0);
	/* Not a multiple of the granularity: refused before the driver sees it. */
	BCHECK_ST(B->mem_alloc(dev, 4096, &p), VGPU_ERR_INVALID);
	/* More than the device has. */
	BCHECK_ST(B->mem_alloc(dev, 2048 * MIB, &p), VGPU_ERR_OUT_OF_MEMORY);
	BCHECK_MSG("cuMemCreate");
	BCHECK_MSG("CUDA_ERROR_OUT_OF_MEMORY");
	CHECK(fk.live("reservations") == res);
	return 0;
}

static int roundtrip(void *bs, size_t n, uint64_t seed)
{
	size_t sz = (n + 2 * MIB - 1) / (2 * MIB) * (2 * MIB);
	unsigned char *in = malloc(n), *out = malloc(n);
	vgpu_dptr p;
	int rc = 0;

	CHECK(in && out);
	vt_fill(in, n, seed);
	memset(out, 0, n);
	BCHECK_OK(B->mem_alloc(dev, sz, &p));
	BCHECK_OK(B->memcpy_htod(dev, bs, p, in, n));
	/* Overwrite the source at once: the copy must not depend on it. */
	memset(in, 0xee, n < 64 ? n : 64);
	BCHECK_OK(B->memcpy_dtoh(dev, bs, out, p, n));
	BCHECK_OK(B->stream_sync(dev, bs));
	vt_fill(in, n, seed);
	if (memcmp(in, out, n) != 0) {
		fprintf(stderr, "  roundtrip of %zu bytes differs\n", n);
		rc = VT_FAIL;
	}
	BCHECK_OK(B->mem_free(dev, p, sz));
	free(in);
	free(out);
	return rc;
}

static int t_copies(void *d)
{
	void *bs = NULL;
	size_t sizes[] = { 1, 4097, 2 * MIB, 2 * MIB + 1, 9 * MIB + 3 };

	fk.reset_counts();
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		if (roundtrip(NULL, sizes[i], i + 1))
			return VT_FAIL;
	BCHECK_OK(B->stream_create(dev, &bs));
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		if (roundtrip(bs, sizes[i], i + 11))
			return VT_FAIL;
	B->stream_destroy(dev, bs);
	/* Every byte went through pinned staging buffers, on non-blocking
	 * streams; multi-chunk copies waited for a staging buffer's event. */
	CHECK(fk.calls("cuMemcpyHtoDAsync.pageable") == 0);
	CHECK(fk.calls("cuMemcpyDtoHAsync.pageable") == 0);
	CHECK(fk.calls("cuStreamCreate.blocking") == 0);
	CHECK(fk.calls("cuEventSynchronize") > 0);
	return 0;
}

static int t_memset_dtod(void *d)
{
	vgpu_dptr p;
	unsigned char buf[8192];
	void *bs = NULL;

	BCHECK_OK(B->stream_create(dev, &bs));
	BCHECK_OK(B->mem_alloc(dev, 2 * MIB, &p));
	BCHECK_OK(B->memset(dev, bs, p, 0x5a, 4096));
	BCHECK_OK(B->memset(dev, bs, p + 4096, 0x11, 4096));
	BCHECK_OK(B->memcpy_dtod(dev, bs, p + 8192, p, 8192));
	BCHECK_OK(B->memcpy_dtoh(dev, bs, buf, p + 8192, sizeof(buf)));
	BCHECK_OK(B->stream_sync(dev, bs));
	CHECK(buf[0] == 0x5a && buf[4095] == 0x5a && buf[4096] == 0x11 && buf[8191] == 0x11);
	BCHECK_OK(B->mem_free(dev, p, 2 * MIB));
	B->stream_destroy(dev, bs);
	return 0;
}

static int t_module(void *d)
{
	size_t len;
	char *img = ptx_image(&len);
	void *mod = NULL, *fn = NULL;
	struct vgpu_func_sig sig;

	CHECK(img != NULL);
	/* The image is not NUL-terminated: the backend adds the NUL (ASan
	 * would catch the fake's strlen running off the end otherwise). */
	fk.reset_counts();
	BCHECK_OK(B->module_load(dev, img, len, &mod));
	CHECK(fk.calls("cuModuleLoadDataEx.ptx") == 1);
	BCHECK_OK(B->function_get(dev, mod, "vecadd", &fn, &sig));
	B->function_free(dev, fn);
	CHECK(sig.known == 1 && sig.nparams == 4);
	CHECK(sig.size[0] == 8 && sig.size[1] == 8 && sig.size[2] == 8 && sig.size[3] == 4);
	CHECK(sig.type[0] == 0 && sig.type[3] == 0);
	BCHECK_OK(B->function_get(dev, mod, "saxpy_s", &fn, &sig));
	B->function_free(dev, fn);
	CHECK(sig.known && sig.nparams == 3 && sig.size[0] == 8 && sig.size[1] == 8);
	BCHECK_OK(B->function_get(dev, mod, "fill_u32", &fn, &sig));
	B->function_free(dev, fn);
	CHECK(sig.known && sig.nparams == 3 && sig.size[1] == 4 && sig.size[2] == 8);
	BCHECK_OK(B->function_get(dev, mod, "empty", &fn, &sig));
	B->function_free(dev, fn);
	CHECK(sig.known && sig.nparams == 0);
	/* cuFuncGetParamInfo failing: the kernel is usable, unchecked. */
	CHECK(fk.fail("cuFuncGetParamInfo:2:CUDA_ERROR_UNKNOWN") == 0);
	BCHECK_OK(B->function_get(dev, mod, "vecadd", &fn, &sig));
	CHECK(sig.known == 0);
	B->function_free(dev, fn);
	BCHECK_ST(B->function_get(dev, mod, "nosuch", &fn, &sig), VGPU_ERR_NOT_FOUND);
	BCHECK_MSG("nosuch");
	B->module_unload(dev, mod);
	free(img);
	return 0;
}

static int t_bad_modules(void *d)
{
	static const char bad_ptx[] = "this is not PTX";
	/* the cubin at an odd address, as in a byte buffer */
	static uint64_t cubin_store[9];
	unsigned char *cubin = (unsigned char *)cubin_store + 1;
	unsigned char fatbin[64] = { 0x50, 0xed, 0x55, 0xba, 1, 0 };
	void *mod = NULL;

	fk.reset_counts();
	BCHECK_ST(B->module_load(dev, bad_ptx, sizeof(bad_ptx) - 1, &mod), VGPU_ERR_BAD_MODULE);
	BCHECK_MSG("CUDA_ERROR_INVALID_PTX");
	BCHECK_MSG("Parsing error"); /* the JIT error log */
	BCHECK_MSG("PTX");
	memcpy(cubin, "\177ELF\2\1\1", 7);
	BCHECK_ST(B->module_load(dev, cubin, 64, &mod), VGPU_ERR_BAD_MODULE);
	BCHECK_MSG("cubin");
	BCHECK_MSG("CUDA_ERROR_NO_BINARY_FOR_GPU");
	BCHECK_ST(B->module_load(dev, fatbin, sizeof(fatbin), &mod), VGPU_ERR_BAD_MODULE);
	BCHECK_MSG("fatbin");
	CHECK(fk.calls("cuModuleLoadDataEx.cubin") == 1);
	CHECK(fk.calls("cuModuleLoadDataEx.fatbin") == 1);
	CHECK(fk.calls("cuModuleLoadDataEx.misaligned") == 0);
	CHECK(fk.calls("cuModuleLoadDataEx.ptx") == 1);
	CHECK(fk.live("modules") == 0);
	return 0;
}

struct kit {
	void *mod, *vecadd, *saxpy, *fill, *inc, *trap, *spin;
};

static int kit_load(struct kit *k)
{
	size_t len;
	char *img = ptx_image(&len);
	struct vgpu_func_sig sig;

	CHECK(img != NULL);
	BCHECK_OK(B->module_load(dev, img, len, &k->mod));
	free(img);
	BCHECK_OK(B->function_get(dev, k->mod, "vecadd", &k->vecadd, &sig));
	BCHECK_OK(B->function_get(dev, k->mod, "saxpy_s", &k->saxpy, &sig));
	BCHECK_OK(B->function_get(dev, k->mod, "fill_u32", &k->fill, &sig));
	BCHECK_OK(B->function_get(dev, k->mod, "inc_u32", &k->inc, &sig));
	BCHECK_OK(B->function_get(dev, k->mod, "trap", &k->trap, &sig));
	BCHECK_OK(B->function_get(dev, k->mod, "spin_us", &k->spin, &sig));
	return 0;
}

static void kit_unload(struct kit *k)
{
	void *fns[] = { k->vecadd, k->saxpy, k->fill, k->inc, k->trap, k->spin };

	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
		B->function_free(dev, fns[i]);
	B->module_unload(dev, k->mod);
}

/* vecadd + saxpy_s on stream bs; 0 on success. */
static int compute(struct kit *k, void *bs, int n)
{
	size_t bytes = (size_t)n * 4, sz = (bytes + 2 * MIB - 1) / (2 * MIB) * (2 * MIB);
	float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
	vgpu_dptr da, db, dc;
	struct saxpy_params sp = { 2.0f, n - 1 };
	int rc = 0;

	CHECK(a && b && c);
	for (int i = 0; i < n; i++) {
		a[i] = (float)i;
		b[i] = (float)(2 * i);
	}
	BCHECK_OK(B->mem_alloc(dev, sz, &da));
	BCHECK_OK(B->mem_alloc(dev, sz, &db));
	BCHECK_OK(B->mem_alloc(dev, sz, &dc));
	BCHECK_OK(B->memcpy_htod(dev, bs, da, a, bytes));
	BCHECK_OK(B->memcpy_htod(dev, bs, db, b, bytes));
	{
		vgpu_arg args[4] = { vgpu_arg_dptr(da), vgpu_arg_dptr(db), vgpu_arg_dptr(dc),
				     vgpu_arg_i32(n) };
		BCHECK_OK(B->launch(dev, bs, k->vecadd, vgpu_dim3_make((uint32_t)(n + 255) / 256, 1, 1),
				    vgpu_dim3_make(256, 1, 1), 0, args, 4));
	}
	{
		/* y = 2*x + y over n-1 elements, x = a, y = c */
		vgpu_arg args[3] = { vgpu_arg_bytes(&sp, sizeof(sp)), vgpu_arg_dptr(da),
				     vgpu_arg_dptr(dc) };
		BCHECK_OK(B->launch(dev, bs, k->saxpy, vgpu_dim3_make((uint32_t)(n + 127) / 128, 1, 1),
				    vgpu_dim3_make(128, 1, 1), 0, args, 3));
		sp.a = -1.0f; /* values were copied at launch */
	}
	BCHECK_OK(B->memcpy_dtoh(dev, bs, c, dc, bytes));
	BCHECK_OK(B->stream_sync(dev, bs));
	for (int i = 0; i < n; i++) {
		float want = (float)(3 * i) + (i < n - 1 ? 2.0f * (float)i : 0.0f);
		if (c[i] != want) {
			fprintf(stderr, "  c[%d] = %g, want %g\n", i, (double)c[i], (double)want);
			rc = VT_FAIL;
			break;
		}
	}
	BCHECK_OK(B->mem_free(dev, da, sz));
	BCHECK_OK(B->mem_free(dev, db, sz));
	BCHECK_OK(B->mem_free(dev, dc, sz));
	free(a);
	free(b);
	free(c);
	return rc;
}

static int t_launch(void *d)
{
	struct kit k;
	void *bs = NULL;
	vgpu_dptr p;
	uint32_t out[1000];

	if (kit_load(&k))
		return VT_FAIL;
	if (compute(&k, NULL, 1000) || compute(&k, NULL, 300000))
		return VT_FAIL;
	BCHECK_OK(B->stream_create(dev, &bs));
	if (compute(&k, bs, 4097))
		return VT_FAIL;
	/* fill then inc, in stream order */
	BCHECK_OK(B->mem_alloc(dev, 2 * MIB, &p));
	{
		vgpu_arg fa[3] = { vgpu_arg_dptr(p), vgpu_arg_u32(41), vgpu_arg_u64(1000) };
		vgpu_arg ia[2] = { vgpu_arg_dptr(p), vgpu_arg_u64(999) };
		vgpu_arg sa[1] = { vgpu_arg_u64(2000) };
		BCHECK_OK(B->launch(dev, bs, k.spin, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1),
				    0, sa, 1));
		BCHECK_OK(B->launch(dev, bs, k.fill, vgpu_dim3_make(4, 1, 1),
				    vgpu_dim3_make(256, 1, 1), 0, fa, 3));
		BCHECK_OK(B->launch(dev, bs, k.inc, vgpu_dim3_make(4, 1, 1),
				    vgpu_dim3_make(256, 1, 1), 64 * 1024, ia, 2));
	}
	BCHECK_OK(B->memcpy_dtoh(dev, bs, out, p, sizeof(out)));
	BCHECK_OK(B->stream_sync(dev, bs));
	CHECK(out[0] == 42 && out[998] == 42 && out[999] == 41);
	CHECK(fk.calls("cuFuncSetAttribute") >= 1); /* 64 KiB of dynamic shared memory */
	BCHECK_OK(B->mem_free(dev, p, 2 * MIB));
	B->stream_destroy(dev, bs);
	kit_unload(&k);
	return 0;
}

struct worker {
	struct kit *k;
	int rc;
	int n;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	void *bs = NULL;

	/* A fresh thread has no current context: the backend makes it so. */
	if (B->stream_create(dev, &bs) != VGPU_OK) {
		w->rc = VT_FAIL;
		return NULL;
	}
	for (int i = 0; i < 5 && !w->rc; i++)
		w->rc = compute(w->k, i & 1 ? bs : NULL, w->n + i);
	B->stream_destroy(dev, bs);
	return NULL;
}

static int t_threads(void *d)
{
	struct kit k;
	pthread_t th[4];
	struct worker w[4];

	if (kit_load(&k))
		return VT_FAIL;
	for (int i = 0; i < 4; i++) {
		w[i].k = &k;
		w[i].rc = 0;
		w[i].n = 1000 * (i + 1);
		CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK(w[i].rc == 0);
	}
	kit_unload(&k);
	return 0;
}

static int t_evict(void *d)
{
	size_t sz = 6 * MIB;
	unsigned char *in = malloc(sz), *host = malloc(sz), *out = malloc(sz);
	vgpu_dptr p, q;
	size_t used;

	CHECK(in && host && out);
	vt_fill(in, sz, 77);
	BCHECK_OK(B->mem_alloc(dev, sz, &p));
	BCHECK_OK(B->memcpy_htod(dev, NULL, p, in, sz));
	used = fk.mem_used(0);
	BCHECK_OK(B->mem_evict(dev, p, sz, host));
	CHECK(memcmp(host, in, sz) == 0);
	CHECK(fk.mem_used(0) == used - sz); /* physical memory given back */
	/* The address stays reserved: a new allocation does not get it. */
	BCHECK_OK(B->mem_alloc(dev, sz, &q));
	CHECK(q != p);
	BCHECK_OK(B->mem_free(dev, q, sz));
	/* Restoring something not evicted is refused. */
	BCHECK_ST(B->mem_restore(dev, p + sz, sz, host), VGPU_ERR_BAD_ADDRESS);
	BCHECK_OK(B->mem_restore(dev, p, sz, host));
	CHECK(fk.mem_used(0) == used);
	memset(out, 0, sz);
	BCHECK_OK(B->memcpy_dtoh(dev, NULL, out, p, sz));
	CHECK(memcmp(out, in, sz) == 0);
	/* Evict again, then free while evicted. */
	BCHECK_OK(B->mem_evict(dev, p, sz, host));
	BCHECK_OK(B->mem_free(dev, p, sz));
	CHECK(fk.mem_used(0) == used - sz);
	/* A failed restore leaves the allocation evicted and retryable. */
	BCHECK_OK(B->mem_alloc(dev, 2 * MIB, &p));
	BCHECK_OK(B->mem_evict(dev, p, 2 * MIB, host));
	CHECK(fk.fail("cuMemCreate:1:CUDA_ERROR_OUT_OF_MEMORY") == 0);
	BCHECK_ST(B->mem_restore(dev, p, 2 * MIB, host), VGPU_ERR_OUT_OF_MEMORY);
	BCHECK_OK(B->mem_restore(dev, p, 2 * MIB, host));
	BCHECK_OK(B->mem_free(dev, p, 2 * MIB));
	free(in);
	free(host);
	free(out);
	return 0;
}

static int t_injected(void *d)
{
	vgpu_dptr p;
	long res = fk.live("reservations");

	CHECK(fk.fail("cuMemCreate:1:CUDA_ERROR_OUT_OF_MEMORY") == 0);
	BCHECK_ST(B->mem_alloc(dev, 2 * MIB, &p), VGPU_ERR_OUT_OF_MEMORY);
	BCHECK_MSG("cuda:0: cuMemCreate");
	BCHECK_MSG("CUDA_ERROR_OUT_OF_MEMORY");
	CHECK(fk.live("reservations") == res);
	CHECK(fk.fail("cuMemMap:1:CUDA_ERROR_INVALID_VALUE") == 0);
	BCHECK_ST(B->mem_alloc(dev, 2 * MIB, &p), VGPU_ERR_DRIVER);
	BCHECK_MSG("cuMemMap");
	CHECK(fk.live("reservations") == res && fk.live("phys") == 0);
	CHECK(fk.fail("cuMemSetAccess:1:CUDA_ERROR_INVALID_VALUE") == 0);
	BCHECK_ST(B->mem_alloc(dev, 2 * MIB, &p), VGPU_ERR_DRIVER);
	BCHECK_MSG("cuMemSetAccess");
	CHECK(fk.live("reservations") == res && fk.live("phys") == 0);
	CHECK(fk.fail("cuStreamCreate:1:CUDA_ERROR_OUT_OF_MEMORY") == 0);
	{
		void *bs = NULL;
		BCHECK_ST(B->stream_create(dev, &bs), VGPU_ERR_OUT_OF_MEMORY);
		BCHECK_MSG("cuStreamCreate");
	}
	return 0;
}

/* Errors refused at launch time leave the device usable (faults, which are
 * fatal for the process, are in test_cuda_load). */
static int t_launch_errors(void *d)
{
	struct kit k;
	vgpu_arg ta = vgpu_arg_i32(0);

	if (kit_load(&k))
		return VT_FAIL;
	BCHECK_ST(B->launch(dev, NULL, k.trap, vgpu_dim3_make(1, 1, 1),
			    vgpu_dim3_make(2048, 1, 1), 0, &ta, 1), VGPU_ERR_LAUNCH);
	BCHECK_MSG("cuLaunchKernel(trap)");
	BCHECK_MSG("CUDA_ERROR_INVALID_VALUE");
	CHECK(fk.fail("cuLaunchKernel:1:CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES") == 0);
	BCHECK_ST(B->launch(dev, NULL, k.trap, vgpu_dim3_make(1, 1, 1),
			    vgpu_dim3_make(1, 1, 1), 0, &ta, 1), VGPU_ERR_LAUNCH);
	BCHECK_MSG("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES");
	/* ... and the device still works. */
	if (compute(&k, NULL, 100))
		return VT_FAIL;
	kit_unload(&k);
	return 0;
}

static int t_close(void *d)
{
	B->device_close(dev);
	dev = NULL;
	CHECK(fk.live("contexts") == 0);
	CHECK(fk.live("streams") == 0);
	CHECK(fk.live("events") == 0);
	CHECK(fk.live("modules") == 0);
	CHECK(fk.live("reservations") == 0);
	CHECK(fk.live("mappings") == 0);
	CHECK(fk.live("phys") == 0);
	CHECK(fk.live("hostallocs") == 0);
	CHECK(fk.calls("leaked-at-ctx-destroy") == 0);
	CHECK(fk.mem_used(0) == 0);
	return 0;
}

int main(void)
{
	fake_cuda_use();
	/* Slow every stream operation down so that ordering bugs (a staging
	 * buffer reused before its DMA ran) show up as wrong bytes. */
	setenv("FAKE_CUDA_DELAY_US", "200", 1);
	unsetenv("FAKE_CUDA_FAIL");
	unsetenv("FAKE_CUDA_DRIVER_VERSION");
	unsetenv("FAKE_CUDA_DEVICES");
	unsetenv("FAKE_CUDA_NO_VMM");
	unsetenv("FAKE_CUDA_MEM");
	CHECK(vgpu__uri_parse("cuda:0", &uri0) == VGPU_OK);
	if (vt_run("open", t_open, NULL)) {
		vt_finish();
		return 1;
	}
	vt_run("alloc", t_alloc, NULL);
	vt_run("copies", t_copies, NULL);
	vt_run("memset_dtod", t_memset_dtod, NULL);
	vt_run("module", t_module, NULL);
	vt_run("bad_modules", t_bad_modules, NULL);
	vt_run("launch", t_launch, NULL);
	vt_run("threads", t_threads, NULL);
	vt_run("evict_restore", t_evict, NULL);
	vt_run("injected_failures", t_injected, NULL);
	vt_run("launch_errors", t_launch_errors, NULL);
	vt_run("close_no_leaks", t_close, NULL);
	return vt_finish();
}
