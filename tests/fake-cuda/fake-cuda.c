/* SPDX-License-Identifier: MIT */
/*
 * fake-cuda.c - a test double of the CUDA driver (libcuda.so.1) for the cuda
 * backend's tests. Built only for `make check`; the tests point
 * $VGPU_CUDA_LIBRARY at it. It emulates, on host memory, the subset of the
 * Driver API the backend uses, and checks what a real driver checks:
 *
 *  - cuInit before anything else; a current context for context-bound calls;
 *    handles (streams, events, modules, functions, memory) valid and alive;
 *  - VMM rules: reservations page-sized, cuMemCreate/cuMemMap sizes and
 *    addresses multiples of the granularity, offset 0, mappings only inside
 *    reserved ranges and not overlapping, cuMemSetAccess before any access,
 *    cuMemUnmap of whole mappings only, physical memory freed when released
 *    and unmapped (release while mapped is legal, as documented);
 *  - streams execute their work in order on a worker thread each, really
 *    asynchronously (set FAKE_CUDA_DELAY_US to slow every operation down);
 *    errors of executed work (illegal address, trap) are sticky for the
 *    device for the rest of the process, as the CUDA documentation says
 *    ("the process must be terminated and relaunched").
 *
 * Kernels: cuModuleLoadDataEx parses PTX `.entry name(` and its `.param`
 * list (for cuFuncGetParamInfo) and cuLaunchKernel runs a built-in host
 * implementation of the test kernels by name (empty, vecadd, fill_u32,
 * inc_u32, saxpy_s, spin_us, trap). cubin and fatbin images are recognised
 * and refused (CUDA_ERROR_NO_BINARY_FOR_GPU).
 *
 * Environment:
 *   FAKE_CUDA_DRIVER_VERSION  cuDriverGetVersion's answer (default 13000)
 *   FAKE_CUDA_DEVICES         number of devices (default 1)
 *   FAKE_CUDA_MEM             device memory in MiB (default 1024)
 *   FAKE_CUDA_NO_VMM=1        devices without virtual memory management
 *   FAKE_CUDA_DELAY_US        sleep before each stream operation executes
 *   FAKE_CUDA_RECOVERABLE_FAULTS=1  NOT what CUDA does: a kernel fault is
 *                             reported once by the next synchronization of
 *                             its stream and later work runs (the cpu
 *                             backend's contract), so that the engine's
 *                             tests can go on after a trap
 *   FAKE_CUDA_FAIL            name:N:ERROR[,name:N:ERROR...]: the Nth call
 *                             (1-based) of entry point `name` fails with
 *                             ERROR (a CUDA_ERROR_* name or a number). An
 *                             execution error (illegal address, launch
 *                             failed, ... : the sticky ones) given to an
 *                             asynchronous call (launch, copy, memset) is
 *                             raised when the work executes, sticky.
 * Exports: cuGetProcAddress_v2 and cuGetProcAddress (v1), cuDriverGetVersion,
 * cuInit; everything else only through cuGetProcAddress.
 * Test-only exports: fake_cuda_calls(name), fake_cuda_reset_counts(),
 * fake_cuda_fail(spec), fake_cuda_live(kind), fake_cuda_mem_used(dev).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cuda.h>

#define FK_EXPORT __attribute__((visibility("default")))
#define FK_MAXDEV 8
#define FK_GRAN (2ull << 20)
#define FK_VA_BASE 0x7f2000000000ull
#define FK_MAXPARAMS 64

/* Test-only API (declared here for -Wmissing-prototypes). */
FK_EXPORT unsigned long fake_cuda_calls(const char *name);
FK_EXPORT void fake_cuda_reset_counts(void);
FK_EXPORT int fake_cuda_fail(const char *spec);
FK_EXPORT long fake_cuda_live(const char *kind);
FK_EXPORT size_t fake_cuda_mem_used(int dev);

/* ------------------------------------------------------------------------ */
/* Global state (one big lock)                                              */

static pthread_mutex_t G = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t G_cond = PTHREAD_COND_INITIALIZER;
/* Held for reading while an operation touches memory, for writing when
 * memory goes away (unmap, free): no use after free inside the fake. */
static pthread_rwlock_t exec_lock = PTHREAD_RWLOCK_INITIALIZER;

static int g_env_done;
static int g_initialized;
static int g_version = 13000;
static int g_ndev = 1;
static size_t g_mem = 1024ull << 20;
static int g_no_vmm;
static unsigned g_delay_us;
static int g_recoverable;

struct counter {
	struct counter *next;
	char name[64];
	unsigned long n;
};
static struct counter *g_counters;

struct failspec {
	struct failspec *next;
	char name[64];
	unsigned long nth;  /* fail when the counter reaches this */
	CUresult err;
};
static struct failspec *g_fails;

static __thread CUresult tl_async_fail; /* injected error for the async op */

struct CUctx_st {
	int dev;
	int refs;
	int alive;
	CUresult sticky;
};
static struct CUctx_st g_ctx[FK_MAXDEV];
static size_t g_used[FK_MAXDEV];
static __thread struct CUctx_st *tl_ctx;

struct reservation {
	struct reservation *next;
	uint64_t base, size;
	int alive;
};
struct phys {
	struct phys *next;
	int dev;
	size_t size;
	void *mem;
	int maps;
	int released;
	int freed;
};
struct mapping {
	struct mapping *next;
	uint64_t va, size;
	struct phys *phys;
	int access;
	int alive;
	int legacy; /* from cuMemAlloc: only cuMemFree takes it back */
};
struct hostbuf {
	struct hostbuf *next;
	struct CUctx_st *ctx;
	char *p;
	size_t size;
	int alive;
};
static struct reservation *g_res;
static struct phys *g_phys;
static struct mapping *g_maps;
static struct hostbuf *g_host;
static uint64_t g_next_va = FK_VA_BASE;

enum op_kind { OP_HTOD, OP_DTOH, OP_DTOD, OP_MEMSET, OP_KERNEL, OP_EVENT };

struct CUfunc_st;
struct CUevent_st;

struct op {
	struct op *next;
	enum op_kind kind;
	CUresult fail;        /* injected execution error */
	uint64_t dst, src;    /* device addresses */
	void *host;           /* host side of htod/dtoh */
	int own_host;         /* host is a snapshot to free */
	size_t n;
	unsigned char value;
	struct CUfunc_st *fn;
	unsigned grid[3], block[3];
	unsigned char *params;
	struct CUevent_st *ev;
	uint64_t ev_gen;
	uint64_t seq;
	int dev;              /* device of the stream */
};

struct CUstream_st {
	struct CUstream_st *next_all;
	struct CUctx_st *ctx;
	unsigned flags;
	int alive;
	int stopping;
	pthread_t thread;
	struct op *head, *tail;
	uint64_t enqueued, completed;
	CUresult err; /* FAKE_CUDA_RECOVERABLE_FAULTS: first error since the last sync */
};
static struct CUstream_st *g_streams;

struct CUevent_st {
	struct CUevent_st *next_all;
	struct CUctx_st *ctx;
	int alive;
	uint64_t rec_gen, done_gen;
};
static struct CUevent_st *g_events;

struct entry {
	char name[128];
	unsigned nparams;
	size_t off[FK_MAXPARAMS], size[FK_MAXPARAMS];
	size_t param_bytes;
};
struct CUmod_st {
	struct CUmod_st *next_all;
	struct CUctx_st *ctx;
	int alive;
	unsigned nentries;
	struct entry *entries;
	struct CUfunc_st *funcs;
};
struct CUfunc_st {
	struct CUmod_st *mod;
	struct entry *e;
	int max_dyn_shared;
};
static struct CUmod_st *g_mods;

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

static const struct { CUresult code; const char *name, *desc; } fk_errors[] = {
	{ CUDA_SUCCESS, "CUDA_SUCCESS", "no error" },
	{ CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument" },
	{ CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory" },
	{ CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error" },
	{ CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED", "driver shutting down" },
	{ CUDA_ERROR_STUB_LIBRARY, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library" },
	{ CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected" },
	{ CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal" },
	{ CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid" },
	{ CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context" },
	{ CUDA_ERROR_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU",
	  "no kernel image is available for execution on the device" },
	{ CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed" },
	{ CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle" },
	{ CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found" },
	{ CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready" },
	{ CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS",
	  "an illegal memory access was encountered" },
	{ CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
	  "too many resources requested for launch" },
	{ CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure" },
	{ CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported" },
	{ CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error" },
};

static CUresult fk_GetErrorName(CUresult r, const char **s)
{
	for (size_t i = 0; i < sizeof(fk_errors) / sizeof(fk_errors[0]); i++)
		if (fk_errors[i].code == r) {
			*s = fk_errors[i].name;
			return CUDA_SUCCESS;
		}
	*s = NULL;
	return CUDA_ERROR_INVALID_VALUE;
}

static CUresult fk_GetErrorString(CUresult r, const char **s)
{
	for (size_t i = 0; i < sizeof(fk_errors) / sizeof(fk_errors[0]); i++)
		if (fk_errors[i].code == r) {
			*s = fk_errors[i].desc;
			return CUDA_SUCCESS;
		}
	*s = NULL;
	return CUDA_ERROR_INVALID_VALUE;
}

static CUresult parse_err(const char *s)
{
	char *end;
	long v = strtol(s, &end, 0);

	if (*s && !*end)
		return (CUresult)v;
	for (size_t i = 0; i < sizeof(fk_errors) / sizeof(fk_errors[0]); i++)
		if (strcmp(fk_errors[i].name, s) == 0)
			return fk_errors[i].code;
	return CUDA_ERROR_UNKNOWN;
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("fake-cuda: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* G held. */
static struct counter *counter_get(const char *name)
{
	struct counter *c;

	for (c = g_counters; c; c = c->next)
		if (strcmp(c->name, name) == 0)
			return c;
	c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->next = g_counters;
	g_counters = c;
	return c;
}

static void count(const char *name)
{
	pthread_mutex_lock(&G);
	counter_get(name)->n++;
	pthread_mutex_unlock(&G);
}

/* G held. */
static int add_fails(const char *spec)
{
	char buf[1024], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *a = strchr(tok, ':'), *b = a ? strchr(a + 1, ':') : NULL;
		struct failspec *f;
		if (!a || !b) {
			note("bad FAKE_CUDA_FAIL item '%s' (want name:N:ERROR)", tok);
			return -1;
		}
		*a = *b = '\0';
		f = calloc(1, sizeof(*f));
		if (!f)
			abort();
		snprintf(f->name, sizeof(f->name), "%s", tok);
		/* N counts from the calls made so far. */
		f->nth = counter_get(tok)->n + strtoul(a + 1, NULL, 10);
		f->err = parse_err(b + 1);
		f->next = g_fails;
		g_fails = f;
	}
	return 0;
}

/* G held. */
static void read_env(void)
{
	const char *s;

	if (g_env_done)
		return;
	g_env_done = 1;
	if ((s = getenv("FAKE_CUDA_DRIVER_VERSION")))
		g_version = atoi(s);
	if ((s = getenv("FAKE_CUDA_DEVICES")))
		g_ndev = atoi(s) < 0 ? 0 : atoi(s) > FK_MAXDEV ? FK_MAXDEV : atoi(s);
	if ((s = getenv("FAKE_CUDA_MEM")))
		g_mem = strtoull(s, NULL, 10) << 20;
	if ((s = getenv("FAKE_CUDA_NO_VMM")))
		g_no_vmm = atoi(s);
	if ((s = getenv("FAKE_CUDA_RECOVERABLE_FAULTS")))
		g_recoverable = atoi(s);
	if ((s = getenv("FAKE_CUDA_DELAY_US")))
		g_delay_us = (unsigned)atoi(s);
	if ((s = getenv("FAKE_CUDA_FAIL")) && *s)
		add_fails(s);
	for (int i = 0; i < FK_MAXDEV; i++)
		g_ctx[i].dev = i;
}

enum { NEED_INIT = 1, NEED_CTX = 2, ASYNC = 4 };

/* Errors of executed work: sticky, raised asynchronously. */
static int is_exec_error(CUresult r)
{
	switch (r) {
	case CUDA_ERROR_ILLEGAL_ADDRESS:
	case CUDA_ERROR_LAUNCH_TIMEOUT:
	case CUDA_ERROR_ASSERT:
	case CUDA_ERROR_HARDWARE_STACK_ERROR:
	case CUDA_ERROR_ILLEGAL_INSTRUCTION:
	case CUDA_ERROR_MISALIGNED_ADDRESS:
	case CUDA_ERROR_INVALID_ADDRESS_SPACE:
	case CUDA_ERROR_INVALID_PC:
	case CUDA_ERROR_LAUNCH_FAILED:
		return 1;
	default:
		return 0;
	}
}

static CUresult enter(const char *name, int flags)
{
	CUresult inj = CUDA_SUCCESS;
	struct counter *c;

	pthread_mutex_lock(&G);
	read_env();
	c = counter_get(name);
	c->n++;
	for (struct failspec *f = g_fails; f; f = f->next)
		if (f->nth == c->n && strcmp(f->name, name) == 0)
			inj = f->err;
	tl_async_fail = CUDA_SUCCESS;
	if (inj && !(is_exec_error(inj) && (flags & ASYNC))) {
		pthread_mutex_unlock(&G);
		return inj;
	}
	if ((flags & NEED_INIT) && !g_initialized) {
		pthread_mutex_unlock(&G);
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (flags & NEED_CTX) {
		if (!tl_ctx || !tl_ctx->alive) {
			pthread_mutex_unlock(&G);
			note("%s called with no current context", name);
			return CUDA_ERROR_INVALID_CONTEXT;
		}
		if (tl_ctx->sticky) {
			CUresult r = tl_ctx->sticky;
			pthread_mutex_unlock(&G);
			return r;
		}
	}
	tl_async_fail = inj;
	pthread_mutex_unlock(&G);
	return CUDA_SUCCESS;
}

#define ENTER(name, flags)                          \
	do {                                        \
		CUresult e_ = enter((name), (flags)); \
		if (e_ != CUDA_SUCCESS)             \
			return e_;                  \
	} while (0)

#define CTXCALL (NEED_INIT | NEED_CTX)

/* ------------------------------------------------------------------------ */
/* Init, devices, contexts                                                  */

static CUresult fk_Init(unsigned int flags)
{
	ENTER("cuInit", 0);
	if (flags != 0)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&G);
	g_initialized = 1;
	pthread_mutex_unlock(&G);
	return g_ndev > 0 ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE;
}

static CUresult fk_DeviceGetCount(int *n)
{
	ENTER("cuDeviceGetCount", NEED_INIT);
	if (!n)
		return CUDA_ERROR_INVALID_VALUE;
	*n = g_ndev;
	return CUDA_SUCCESS;
}

static int valid_dev(CUdevice d)
{
	return d >= 0 && d < g_ndev;
}

static CUresult fk_DeviceGet(CUdevice *d, int ordinal)
{
	ENTER("cuDeviceGet", NEED_INIT);
	if (!d)
		return CUDA_ERROR_INVALID_VALUE;
	if (!valid_dev(ordinal))
		return CUDA_ERROR_INVALID_DEVICE;
	*d = ordinal;
	return CUDA_SUCCESS;
}

static CUresult fk_DeviceGetName(char *name, int len, CUdevice d)
{
	ENTER("cuDeviceGetName", NEED_INIT);
	if (!name || len <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (!valid_dev(d))
		return CUDA_ERROR_INVALID_DEVICE;
	snprintf(name, (size_t)len, "Fake CUDA Device %d (libvgpu test double)", d);
	return CUDA_SUCCESS;
}

static CUresult fk_DeviceGetUuid(CUuuid *u, CUdevice d)
{
	ENTER("cuDeviceGetUuid", NEED_INIT);
	if (!u)
		return CUDA_ERROR_INVALID_VALUE;
	if (!valid_dev(d))
		return CUDA_ERROR_INVALID_DEVICE;
	for (int i = 0; i < 16; i++)
		u->bytes[i] = (char)(0xf0 + i + d * 16);
	return CUDA_SUCCESS;
}

static CUresult fk_DeviceTotalMem(size_t *b, CUdevice d)
{
	ENTER("cuDeviceTotalMem", NEED_INIT);
	if (!b)
		return CUDA_ERROR_INVALID_VALUE;
	if (!valid_dev(d))
		return CUDA_ERROR_INVALID_DEVICE;
	*b = g_mem;
	return CUDA_SUCCESS;
}

static CUresult fk_DeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d)
{
	ENTER("cuDeviceGetAttribute", NEED_INIT);
	if (!v)
		return CUDA_ERROR_INVALID_VALUE;
	if (!valid_dev(d))
		return CUDA_ERROR_INVALID_DEVICE;
	switch (a) {
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 8; break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 108; break;
	case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
	case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 48 * 1024; break;
	case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 163 * 1024; break;
	case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: *v = !g_no_vmm; break;
	case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *v = 1; break;
	default:
		note("cuDeviceGetAttribute(%d) not emulated", (int)a);
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

static void stream_stop(struct CUstream_st *s);

static CUresult fk_DevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
	ENTER("cuDevicePrimaryCtxRetain", NEED_INIT);
	if (!c)
		return CUDA_ERROR_INVALID_VALUE;
	if (!valid_dev(d))
		return CUDA_ERROR_INVALID_DEVICE;
	pthread_mutex_lock(&G);
	/* A new primary context after a fault is still faulted: "to continue
	 * using CUDA, the process must be terminated and relaunched". */
	if (g_ctx[d].refs++ == 0)
		g_ctx[d].alive = 1;
	*c = &g_ctx[d];
	pthread_mutex_unlock(&G);
	return CUDA_SUCCESS;
}

static CUresult fk_DevicePrimaryCtxRelease(CUdevice d)
{
	struct CUctx_st *c;
	int leaks = 0;

	ENTER("cuDevicePrimaryCtxRelease", NEED_INIT);
	if (!valid_dev(d))
		return CUDA_ERROR_INVALID_DEVICE;
	pthread_mutex_lock(&G);
	c = &g_ctx[d];
	if (c->refs <= 0) {
		pthread_mutex_unlock(&G);
		note("cuDevicePrimaryCtxRelease of a context not retained");
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	if (--c->refs > 0) {
		pthread_mutex_unlock(&G);
		return CUDA_SUCCESS;
	}
	/* Destroy the context and what still lives in it. */
	c->alive = 0;
	for (struct CUstream_st *s = g_streams; s; s = s->next_all)
		if (s->ctx == c && s->alive) {
			leaks++;
			s->alive = 0;
			pthread_mutex_unlock(&G);
			stream_stop(s);
			pthread_mutex_lock(&G);
		}
	for (struct CUevent_st *e = g_events; e; e = e->next_all)
		if (e->ctx == c && e->alive) {
			leaks++;
			e->alive = 0;
		}
	for (struct CUmod_st *m = g_mods; m; m = m->next_all)
		if (m->ctx == c && m->alive) {
			leaks++;
			m->alive = 0;
		}
	for (struct hostbuf *h = g_host; h; h = h->next)
		if (h->ctx == c && h->alive) {
			leaks++;
			h->alive = 0;
			free(h->p);
			h->p = NULL;
		}
	if (leaks) {
		counter_get("leaked-at-ctx-destroy")->n += (unsigned long)leaks;
		note("primary context of device %d destroyed with %d stream/event/module/host"
		     " allocation(s) still alive (freed with it)", d, leaks);
	}
	pthread_mutex_unlock(&G);
	return CUDA_SUCCESS;
}

static CUresult fk_CtxGetCurrent(CUcontext *c)
{
	ENTER("cuCtxGetCurrent", NEED_INIT);
	if (!c)
		return CUDA_ERROR_INVALID_VALUE;
	*c = tl_ctx;
	return CUDA_SUCCESS;
}

static CUresult fk_CtxSetCurrent(CUcontext c)
{
	ENTER("cuCtxSetCurrent", NEED_INIT);
	if (c && (c < &g_ctx[0] || c >= &g_ctx[FK_MAXDEV] || !c->alive))
		return CUDA_ERROR_INVALID_CONTEXT;
	tl_ctx = c;
	return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                   */

static int prop_ok(const CUmemAllocationProp *p)
{
	return p && p->type == CU_MEM_ALLOCATION_TYPE_PINNED &&
	       p->location.type == CU_MEM_LOCATION_TYPE_DEVICE && valid_dev(p->location.id) &&
	       p->requestedHandleTypes == CU_MEM_HANDLE_TYPE_NONE && !p->win32HandleMetaData;
}

static CUresult fk_MemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *p,
					       CUmemAllocationGranularity_flags f)
{
	ENTER("cuMemGetAllocationGranularity", NEED_INIT);
	if (!g || !prop_ok(p) ||
	    (f != CU_MEM_ALLOC_GRANULARITY_MINIMUM && f != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
		return CUDA_ERROR_INVALID_VALUE;
	*g = FK_GRAN;
	return CUDA_SUCCESS;
}

static CUresult fk_MemGetInfo(size_t *freeb, size_t *total)
{
	ENTER("cuMemGetInfo", CTXCALL);
	if (!freeb || !total)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&G);
	*total = g_mem;
	*freeb = g_mem - g_used[tl_ctx->dev];
	pthread_mutex_unlock(&G);
	return CUDA_SUCCESS;
}

static CUresult fk_MemAddressReserve(CUdeviceptr *ptr, size_t size, size_t align,
				     CUdeviceptr addr, unsigned long long flags)
{
	struct reservation *r;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uint64_t a;

	ENTER("cuMemAddressReserve", CTXCALL);
	if (!ptr || size == 0 || size % page || flags || (align & (align - 1)) || addr % page)
		return CUDA_ERROR_INVALID_VALUE;
	a = align > FK_GRAN ? align : FK_GRAN;
	r = calloc(1, sizeof(*r));
	if (!r)
		return CUDA_ERROR_OUT_OF_MEMORY;
	pthread_mutex_lock(&G);
	g_next_va = (g_next_va + a - 1) & ~(a - 1);
	r->base = g_next_va;
	r->size = size;
	r->alive = 1;
	/* a guard gap between reservations catches overruns */
	g_next_va += size + FK_GRAN;
	r->next = g_res;
	g_res = r;
	pthread_mutex_unlock(&G);
	*ptr = r->base;
	return CUDA_SUCCESS;
}

static CUresult fk_MemAddressFree(CUdeviceptr ptr, size_t size)
{
	CUresult res = CUDA_ERROR_INVALID_VALUE;

	ENTER("cuMemAddressFree", CTXCALL);
	pthread_mutex_lock(&G);
	for (struct reservation *r = g_res; r; r = r->next) {
		if (!r->alive || r->base != ptr)
			continue;
		if (r->size != size) {
			note("cuMemAddressFree(0x%" PRIx64 ", %zu): reserved size is %" PRIu64,
			     (uint64_t)ptr, size, r->size);
			break;
		}
		for (struct mapping *m = g_maps; m; m = m->next)
			if (m->alive && m->va >= r->base && m->va < r->base + r->size) {
				note("cuMemAddressFree(0x%" PRIx64 "): range still mapped",
				     (uint64_t)ptr);
				pthread_mutex_unlock(&G);
				return CUDA_ERROR_INVALID_VALUE;
			}
		r->alive = 0;
		res = CUDA_SUCCESS;
		break;
	}
	pthread_mutex_unlock(&G);
	if (res)
		note("cuMemAddressFree(0x%" PRIx64 "): not a reservation", (uint64_t)ptr);
	return res;
}

static CUresult fk_MemCreate(CUmemGenericAllocationHandle *h, size_t size,
			     const CUmemAllocationProp *p, unsigned long long flags)
{
	struct phys *ph;
	void *mem;

	ENTER("cuMemCreate", CTXCALL);
	if (!h || !prop_ok(p) || flags || size == 0 || size % FK_GRAN) {
		note("cuMemCreate(%zu): invalid (size must be a multiple of %llu)", size, FK_GRAN);
		return CUDA_ERROR_INVALID_VALUE;
	}
	pthread_mutex_lock(&G);
	if (g_used[p->location.id] + size > g_mem) {
		pthread_mutex_unlock(&G);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	g_used[p->location.id] += size;
	pthread_mutex_unlock(&G);
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	ph = calloc(1, sizeof(*ph));
	if (mem == MAP_FAILED || !ph) {
		pthread_mutex_lock(&G);
		g_used[p->location.id] -= size;
		pthread_mutex_unlock(&G);
		if (mem != MAP_FAILED)
			munmap(mem, size);
		free(ph);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	ph->dev = p->location.id;
	ph->size = size;
	ph->mem = mem;
	pthread_mutex_lock(&G);
	ph->next = g_phys;
	g_phys = ph;
	pthread_mutex_unlock(&G);
	*h = (CUmemGenericAllocationHandle)(uintptr_t)ph;
	return CUDA_SUCCESS;
}

/* G held. */
static struct phys *phys_find(CUmemGenericAllocationHandle h)
{
	for (struct phys *p = g_phys; p; p = p->next)
		if ((CUmemGenericAllocationHandle)(uintptr_t)p == h && !p->freed && !p->released)
			return p;
	return NULL;
}

/* G held. */
static void phys_maybe_free(struct phys *p)
{
	if (p->released && p->maps == 0 && !p->freed) {
		munmap(p->mem, p->size);
		p->mem = NULL;
		p->freed = 1;
		g_used[p->dev] -= p->size;
	}
}

static CUresult fk_MemRelease(CUmemGenericAllocationHandle h)
{
	struct phys *p;

	ENTER("cuMemRelease", CTXCALL);
	pthread_rwlock_wrlock(&exec_lock);
	pthread_mutex_lock(&G);
	p = phys_find(h);
	if (p) {
		p->released = 1;
		phys_maybe_free(p);
	}
	pthread_mutex_unlock(&G);
	pthread_rwlock_unlock(&exec_lock);
	if (!p) {
		note("cuMemRelease of an unknown or already released handle");
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

static CUresult fk_MemMap(CUdeviceptr ptr, size_t size, size_t offset,
			  CUmemGenericAllocationHandle h, unsigned long long flags)
{
	struct phys *p;
	struct reservation *r;
	struct mapping *m;

	ENTER("cuMemMap", CTXCALL);
	if (flags || offset || size == 0 || size % FK_GRAN || ptr % FK_GRAN) {
		note("cuMemMap(0x%" PRIx64 ", %zu, %zu): invalid", (uint64_t)ptr, size, offset);
		return CUDA_ERROR_INVALID_VALUE;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return CUDA_ERROR_OUT_OF_MEMORY;
	pthread_mutex_lock(&G);
	p = phys_find(h);
	for (r = g_res; r; r = r->next)
		if (r->alive && ptr >= r->base && ptr + size <= r->base + r->size)
			break;
	if (!p || !r || offset + size > p->size) {
		pthread_mutex_unlock(&G);
		free(m);
		note("cuMemMap(0x%" PRIx64 ", %zu): %s", (uint64_t)ptr, size,
		     !p ? "bad handle" : !r ? "not inside a reservation" : "larger than the allocation");
		return CUDA_ERROR_INVALID_VALUE;
	}
	for (struct mapping *o = g_maps; o; o = o->next)
		if (o->alive && o->va < ptr + size && ptr < o->va + o->size) {
			pthread_mutex_unlock(&G);
			free(m);
			note("cuMemMap(0x%" PRIx64 "): range already mapped", (uint64_t)ptr);
			return CUDA_ERROR_INVALID_VALUE;
		}
	m->va = ptr;
	m->size = size;
	m->phys = p;
	m->alive = 1;
	p->maps++;
	m->next = g_maps;
	g_maps = m;
	pthread_mutex_unlock(&G);
	return CUDA_SUCCESS;
}

static CUresult fk_MemUnmap(CUdeviceptr ptr, size_t size)
{
	struct mapping *m;

	ENTER("cuMemUnmap", CTXCALL);
	pthread_rwlock_wrlock(&exec_lock);
	pthread_mutex_lock(&G);
	for (m = g_maps; m; m = m->next)
		if (m->alive && !m->legacy && m->va == ptr && m->size == size)
			break;
	if (m) {
		m->alive = 0;
		m->phys->maps--;
		phys_maybe_free(m->phys);
	}
	pthread_mutex_unlock(&G);
	pthread_rwlock_unlock(&exec_lock);
	if (!m) {
		note("cuMemUnmap(0x%" PRIx64 ", %zu): not a whole mapping", (uint64_t)ptr, size);
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

static CUresult fk_MemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
				size_t n)
{
	uint64_t covered = 0;

	ENTER("cuMemSetAccess", CTXCALL);
	if (!desc || n != 1 || desc->location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
	    !valid_dev(desc->location.id) || desc->flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&G);
	for (struct mapping *m = g_maps; m; m = m->next)
		if (m->alive && m->va >= ptr && m->va + m->size <= ptr + size)
			covered += m->size;
	if (covered != size) {
		pthread_mutex_unlock(&G);
		note("cuMemSetAccess(0x%" PRIx64 ", %zu): range not fully mapped", (uint64_t)ptr,
		     size);
		return CUDA_ERROR_INVALID_VALUE;
	}
	for (struct mapping *m = g_maps; m; m = m->next)
		if (m->alive && m->va >= ptr && m->va + m->size <= ptr + size)
			m->access = 1;
	pthread_mutex_unlock(&G);
	return CUDA_SUCCESS;
}

/* G held. Host address of device range [a, a+n) in one accessible mapping. */
static void *xlate(uint64_t a, size_t n, int need_access)
{
	for (struct mapping *m = g_maps; m; m = m->next)
		if (m->alive && a >= m->va && a + n <= m->va + m->size && a + n >= a) {
			if (need_access && !m->access) {
				note("access to 0x%" PRIx64 " before cuMemSetAccess", a);
				return NULL;
			}
			return (char *)m->phys->mem + (a - m->va);
		}
	return NULL;
}

/* G held. */
static struct hostbuf *pinned(const void *p, size_t n)
{
	for (struct hostbuf *h = g_host; h; h = h->next)
		if (h->alive && (const char *)p >= h->p && (const char *)p + n <= h->p + h->size)
			return h;
	return NULL;
}

static CUresult fk_MemHostAlloc(void **pp, size_t size, unsigned int flags)
{
	struct hostbuf *h;

	ENTER("cuMemHostAlloc", CTXCALL);
	if (!pp || size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	h = calloc(1, sizeof(*h));
	if (!h || !(h->p = malloc(size))) {
		free(h);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	h->size = size;
	h->alive = 1;
	h->ctx = tl_ctx;
	pthread_mutex_lock(&G);
	h->next = g_host;
	g_host = h;
	pthread_mutex_unlock(&G);
	*pp = h->p;
	(void)flags;
	return CUDA_SUCCESS;
}

static CUresult fk_MemFreeHost(void *p)
{
	struct hostbuf *h;

	ENTER("cuMemFreeHost", CTXCALL);
	pthread_rwlock_wrlock(&exec_lock);
	pthread_mutex_lock(&G);
	for (h = g_host; h; h = h->next)
		if (h->alive && h->p == p)
			break;
	if (h) {
		h->alive = 0;
		free(h->p);
		h->p = NULL;
	}
	pthread_mutex_unlock(&G);
	pthread_rwlock_unlock(&exec_lock);
	if (!h) {
		note("cuMemFreeHost(%p): not from cuMemHostAlloc", p);
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

/* cuMemAlloc/cuMemFree: a reservation, physical memory and an accessible
 * mapping in one, given back only by cuMemFree. */
static CUresult fk_MemAlloc(CUdeviceptr *p, size_t size)
{
	size_t sz = (size + FK_GRAN - 1) / FK_GRAN * FK_GRAN;
	struct reservation *r;
	struct phys *ph;
	struct mapping *m;
	void *mem = MAP_FAILED;
	int dev;

	ENTER("cuMemAlloc", CTXCALL);
	dev = tl_ctx->dev;
	r = calloc(1, sizeof(*r));
	ph = calloc(1, sizeof(*ph));
	m = calloc(1, sizeof(*m));
	if (!p || size == 0 || !r || !ph || !m)
		goto fail;
	pthread_mutex_lock(&G);
	if (g_used[dev] + sz > g_mem) {
		pthread_mutex_unlock(&G);
		free(r), free(ph), free(m);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	g_used[dev] += sz;
	pthread_mutex_unlock(&G);
	mem = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (mem == MAP_FAILED) {
		pthread_mutex_lock(&G);
		g_used[dev] -= sz;
		pthread_mutex_unlock(&G);
		goto fail;
	}
	pthread_mutex_lock(&G);
	r->base = g_next_va;
	r->size = sz;
	r->alive = 1;
	g_next_va += sz + FK_GRAN;
	r->next = g_res;
	g_res = r;
	ph->dev = dev;
	ph->size = sz;
	ph->mem = mem;
	ph->maps = 1;
	ph->released = 1;
	ph->next = g_phys;
	g_phys = ph;
	m->va = r->base;
	m->size = sz;
	m->phys = ph;
	m->access = 1;
	m->alive = 1;
	m->legacy = 1;
	m->next = g_maps;
	g_maps = m;
	pthread_mutex_unlock(&G);
	*p = r->base;
	return CUDA_SUCCESS;
fail:
	free(r), free(ph), free(m);
	return p && size ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_ERROR_INVALID_VALUE;
}

static CUresult fk_MemFree(CUdeviceptr p)
{
	struct mapping *m;

	ENTER("cuMemFree", CTXCALL);
	pthread_rwlock_wrlock(&exec_lock);
	pthread_mutex_lock(&G);
	for (m = g_maps; m; m = m->next)
		if (m->alive && m->legacy && m->va == p)
			break;
	if (m) {
		m->alive = 0;
		m->phys->maps--;
		phys_maybe_free(m->phys);
		for (struct reservation *r = g_res; r; r = r->next)
			if (r->alive && r->base == p)
				r->alive = 0;
	}
	pthread_mutex_unlock(&G);
	pthread_rwlock_unlock(&exec_lock);
	if (!m) {
		note("cuMemFree(0x%" PRIx64 "): not from cuMemAlloc", (uint64_t)p);
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Streams and execution                                                    */

static CUresult run_kernel(struct op *o);

/* Executes with exec_lock held for reading. */
static CUresult op_exec(struct op *o)
{
	void *d = NULL, *s = NULL;
	CUresult r = CUDA_SUCCESS;

	if (o->fail)
		return o->fail;
	switch (o->kind) {
	case OP_HTOD:
		pthread_mutex_lock(&G);
		d = xlate(o->dst, o->n, 1);
		pthread_mutex_unlock(&G);
		if (!d)
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		memcpy(d, o->host, o->n);
		break;
	case OP_DTOH:
		pthread_mutex_lock(&G);
		s = xlate(o->src, o->n, 1);
		pthread_mutex_unlock(&G);
		if (!s)
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		memcpy(o->host, s, o->n);
		break;
	case OP_DTOD:
		pthread_mutex_lock(&G);
		s = xlate(o->src, o->n, 1);
		d = xlate(o->dst, o->n, 1);
		pthread_mutex_unlock(&G);
		if (!s || !d)
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		memmove(d, s, o->n);
		break;
	case OP_MEMSET:
		pthread_mutex_lock(&G);
		d = xlate(o->dst, o->n, 1);
		pthread_mutex_unlock(&G);
		if (!d)
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		memset(d, o->value, o->n);
		break;
	case OP_KERNEL:
		r = run_kernel(o);
		break;
	case OP_EVENT:
		break;
	}
	return r;
}

static void op_free(struct op *o)
{
	if (o->own_host)
		free(o->host);
	free(o->params);
	free(o);
}

static void *stream_main(void *arg)
{
	struct CUstream_st *s = arg;

	pthread_mutex_lock(&G);
	for (;;) {
		struct op *o;
		CUresult r;
		int faulted;
		while (!s->head && !s->stopping)
			pthread_cond_wait(&G_cond, &G);
		if (!s->head)
			break;
		o = s->head;
		faulted = s->ctx->sticky != CUDA_SUCCESS;
		pthread_mutex_unlock(&G);
		if (g_delay_us)
			usleep(g_delay_us);
		pthread_rwlock_rdlock(&exec_lock);
		r = faulted ? CUDA_SUCCESS : op_exec(o); /* a faulted context runs nothing */
		pthread_rwlock_unlock(&exec_lock);
		pthread_mutex_lock(&G);
		if (r != CUDA_SUCCESS && g_recoverable) {
			if (!s->err)
				s->err = r;
		} else if (r != CUDA_SUCCESS && !s->ctx->sticky) {
			s->ctx->sticky = r;
		}
		if (o->kind == OP_EVENT && o->ev->done_gen < o->ev_gen)
			o->ev->done_gen = o->ev_gen;
		s->head = o->next;
		if (!s->head)
			s->tail = NULL;
		s->completed = o->seq;
		op_free(o);
		pthread_cond_broadcast(&G_cond);
	}
	pthread_mutex_unlock(&G);
	return NULL;
}

/* Stop the worker after it drained its queue. */
static void stream_stop(struct CUstream_st *s)
{
	pthread_mutex_lock(&G);
	s->stopping = 1;
	pthread_cond_broadcast(&G_cond);
	pthread_mutex_unlock(&G);
	pthread_join(s->thread, NULL);
}

/* G held. */
static int stream_ok(CUstream s)
{
	if (!s)
		return 0;
	for (struct CUstream_st *x = g_streams; x; x = x->next_all)
		if (x == s)
			return x->alive && x->ctx == tl_ctx;
	return 0;
}

/* Queue o on s; returns its sequence number. */
static CUresult enqueue(CUstream s, struct op *o, const char *who, uint64_t *seq)
{
	pthread_mutex_lock(&G);
	if (!stream_ok(s)) {
		pthread_mutex_unlock(&G);
		note("%s: %s stream", who, s ? "invalid" : "NULL (legacy default)");
		op_free(o);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	o->fail = tl_async_fail;
	o->dev = s->ctx->dev;
	o->seq = ++s->enqueued;
	if (s->tail)
		s->tail->next = o;
	else
		s->head = o;
	s->tail = o;
	if (seq)
		*seq = o->seq;
	pthread_cond_broadcast(&G_cond);
	pthread_mutex_unlock(&G);
	return CUDA_SUCCESS;
}

/* G held: wait until s has executed seq. */
static void wait_seq(struct CUstream_st *s, uint64_t seq)
{
	while (s->completed < seq)
		pthread_cond_wait(&G_cond, &G);
}

static CUresult fk_StreamCreate(CUstream *ps, unsigned int flags)
{
	struct CUstream_st *s;

	ENTER("cuStreamCreate", CTXCALL);
	if (!ps || (flags != CU_STREAM_DEFAULT && flags != CU_STREAM_NON_BLOCKING))
		return CUDA_ERROR_INVALID_VALUE;
	if (flags == CU_STREAM_DEFAULT)
		count("cuStreamCreate.blocking");
	s = calloc(1, sizeof(*s));
	if (!s)
		return CUDA_ERROR_OUT_OF_MEMORY;
	s->ctx = tl_ctx;
	s->flags = flags;
	s->alive = 1;
	if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
		free(s);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_mutex_lock(&G);
	s->next_all = g_streams;
	g_streams = s;
	pthread_mutex_unlock(&G);
	*ps = s;
	return CUDA_SUCCESS;
}

static CUresult fk_StreamDestroy(CUstream s)
{
	ENTER("cuStreamDestroy", CTXCALL);
	pthread_mutex_lock(&G);
	if (!stream_ok(s)) {
		pthread_mutex_unlock(&G);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	s->alive = 0;
	pthread_mutex_unlock(&G);
	/* A real driver returns at once and lets queued work finish. */
	stream_stop(s);
	return CUDA_SUCCESS;
}

static CUresult fk_StreamSynchronize(CUstream s)
{
	CUresult r;

	ENTER("cuStreamSynchronize", CTXCALL);
	pthread_mutex_lock(&G);
	if (!stream_ok(s)) {
		pthread_mutex_unlock(&G);
		note("cuStreamSynchronize: %s stream", s ? "invalid" : "NULL");
		return CUDA_ERROR_INVALID_HANDLE;
	}
	wait_seq(s, s->enqueued);
	r = s->ctx->sticky ? s->ctx->sticky : s->err;
	s->err = CUDA_SUCCESS;
	pthread_mutex_unlock(&G);
	return r;
}

static CUresult fk_CtxSynchronize(void)
{
	CUresult r;

	ENTER("cuCtxSynchronize", CTXCALL);
	pthread_mutex_lock(&G);
	r = tl_ctx->sticky;
	for (struct CUstream_st *s = g_streams; s; s = s->next_all)
		if (s->alive && s->ctx == tl_ctx) {
			wait_seq(s, s->enqueued);
			if (!r)
				r = s->err;
			s->err = CUDA_SUCCESS;
		}
	pthread_mutex_unlock(&G);
	return r;
}

static struct op *op_new(enum op_kind k)
{
	struct op *o = calloc(1, sizeof(*o));
	if (o)
		o->kind = k;
	return o;
}

/* G held: the device range is allocated (call-time check of a real driver). */
static int dev_range_ok(uint64_t a, size_t n)
{
	return xlate(a, n, 0) != NULL;
}

static CUresult fk_MemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t n, CUstream s)
{
	struct op *o;
	int pin;

	ENTER("cuMemcpyHtoDAsync", CTXCALL | ASYNC);
	if (!src || n == 0)
		return n == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&G);
	pin = pinned(src, n) != NULL;
	if (!dev_range_ok(dst, n)) {
		pthread_mutex_unlock(&G);
		note("cuMemcpyHtoDAsync: 0x%" PRIx64 "+%zu is not allocated", (uint64_t)dst, n);
		return CUDA_ERROR_INVALID_VALUE;
	}
	pthread_mutex_unlock(&G);
	if (!(o = op_new(OP_HTOD)))
		return CUDA_ERROR_OUT_OF_MEMORY;
	o->dst = dst;
	o->n = n;
	if (pin) {
		o->host = (void *)(uintptr_t)src;
	} else {
		/* Pageable: the driver stages the bytes before returning. */
		count("cuMemcpyHtoDAsync.pageable");
		o->host = malloc(n);
		if (!o->host) {
			free(o);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
		memcpy(o->host, src, n);
		o->own_host = 1;
	}
	return enqueue(s, o, "cuMemcpyHtoDAsync", NULL);
}

static CUresult fk_MemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t n, CUstream s)
{
	struct op *o;
	int pin;
	uint64_t seq;
	CUresult r;

	ENTER("cuMemcpyDtoHAsync", CTXCALL | ASYNC);
	if (!dst || n == 0)
		return n == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&G);
	pin = pinned(dst, n) != NULL;
	if (!dev_range_ok(src, n)) {
		pthread_mutex_unlock(&G);
		note("cuMemcpyDtoHAsync: 0x%" PRIx64 "+%zu is not allocated", (uint64_t)src, n);
		return CUDA_ERROR_INVALID_VALUE;
	}
	pthread_mutex_unlock(&G);
	if (!(o = op_new(OP_DTOH)))
		return CUDA_ERROR_OUT_OF_MEMORY;
	o->src = src;
	o->n = n;
	o->host = dst;
	if ((r = enqueue(s, o, "cuMemcpyDtoHAsync", &seq)) != CUDA_SUCCESS)
		return r;
	if (!pin) {
		/* Pageable: returns once the copy has completed. */
		count("cuMemcpyDtoHAsync.pageable");
		pthread_mutex_lock(&G);
		wait_seq(s, seq);
		r = s->ctx->sticky;
		pthread_mutex_unlock(&G);
	}
	return r;
}

static CUresult fk_MemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
	struct op *o;
	int ok;

	ENTER("cuMemcpyDtoDAsync", CTXCALL | ASYNC);
	if (n == 0)
		return CUDA_SUCCESS;
	pthread_mutex_lock(&G);
	ok = dev_range_ok(dst, n) && dev_range_ok(src, n);
	pthread_mutex_unlock(&G);
	if (!ok)
		return CUDA_ERROR_INVALID_VALUE;
	if (!(o = op_new(OP_DTOD)))
		return CUDA_ERROR_OUT_OF_MEMORY;
	o->dst = dst;
	o->src = src;
	o->n = n;
	return enqueue(s, o, "cuMemcpyDtoDAsync", NULL);
}

static CUresult fk_MemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s)
{
	struct op *o;
	int ok;

	ENTER("cuMemsetD8Async", CTXCALL | ASYNC);
	if (n == 0)
		return CUDA_SUCCESS;
	pthread_mutex_lock(&G);
	ok = dev_range_ok(dst, n);
	pthread_mutex_unlock(&G);
	if (!ok)
		return CUDA_ERROR_INVALID_VALUE;
	if (!(o = op_new(OP_MEMSET)))
		return CUDA_ERROR_OUT_OF_MEMORY;
	o->dst = dst;
	o->n = n;
	o->value = v;
	return enqueue(s, o, "cuMemsetD8Async", NULL);
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */

/* G held. */
static int event_ok(CUevent e)
{
	for (struct CUevent_st *x = g_events; x; x = x->next_all)
		if (x == e)
			return x->alive && x->ctx == tl_ctx;
	return 0;
}

static CUresult fk_EventCreate(CUevent *pe, unsigned int flags)
{
	struct CUevent_st *e;

	ENTER("cuEventCreate", CTXCALL);
	if (!pe || (flags & ~(unsigned)(CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING |
					 CU_EVENT_INTERPROCESS)))
		return CUDA_ERROR_INVALID_VALUE;
	e = calloc(1, sizeof(*e));
	if (!e)
		return CUDA_ERROR_OUT_OF_MEMORY;
	e->ctx = tl_ctx;
	e->alive = 1;
	pthread_mutex_lock(&G);
	e->next_all = g_events;
	g_events = e;
	pthread_mutex_unlock(&G);
	*pe = e;
	return CUDA_SUCCESS;
}

static CUresult fk_EventDestroy(CUevent e)
{
	ENTER("cuEventDestroy", CTXCALL);
	pthread_mutex_lock(&G);
	if (!event_ok(e)) {
		pthread_mutex_unlock(&G);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	while (e->done_gen < e->rec_gen && !e->ctx->sticky)
		pthread_cond_wait(&G_cond, &G);
	e->alive = 0;
	pthread_mutex_unlock(&G);
	return CUDA_SUCCESS;
}

static CUresult fk_EventRecord(CUevent e, CUstream s)
{
	struct op *o;

	ENTER("cuEventRecord", CTXCALL);
	pthread_mutex_lock(&G);
	if (!event_ok(e)) {
		pthread_mutex_unlock(&G);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	pthread_mutex_unlock(&G);
	if (!(o = op_new(OP_EVENT)))
		return CUDA_ERROR_OUT_OF_MEMORY;
	o->ev = e;
	pthread_mutex_lock(&G);
	o->ev_gen = ++e->rec_gen;
	pthread_mutex_unlock(&G);
	return enqueue(s, o, "cuEventRecord", NULL);
}

static CUresult fk_EventSynchronize(CUevent e)
{
	CUresult r;

	ENTER("cuEventSynchronize", CTXCALL);
	pthread_mutex_lock(&G);
	if (!event_ok(e)) {
		pthread_mutex_unlock(&G);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	while (e->done_gen < e->rec_gen && !e->ctx->sticky)
		pthread_cond_wait(&G_cond, &G);
	r = e->ctx->sticky;
	pthread_mutex_unlock(&G);
	return r;
}

/* ------------------------------------------------------------------------ */
/* Modules and kernels                                                      */

static size_t type_size(const char *t)
{
	static const struct { const char *t; size_t n; } types[] = {
		{ ".u8", 1 }, { ".s8", 1 }, { ".b8", 1 }, { ".u16", 2 }, { ".s16", 2 },
		{ ".b16", 2 }, { ".f16", 2 }, { ".u32", 4 }, { ".s32", 4 }, { ".b32", 4 },
		{ ".f32", 4 }, { ".u64", 8 }, { ".s64", 8 }, { ".b64", 8 }, { ".f64", 8 },
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(types[i].t, t) == 0)
			return types[i].n;
	return 0;
}

/* Parse one ".param .align 4 .b8 name[8]" / ".param .u64 .ptr .align 1 name". */
static int parse_param(const char *s, size_t len, size_t *size, size_t *align)
{
	char buf[256], *save = NULL;
	size_t tsize = 0, al = 0, count = 1;
	int seen_param = 0;

	if (len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	for (char *tok = strtok_r(buf, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
		if (strcmp(tok, ".param") == 0) {
			seen_param = 1;
		} else if (strcmp(tok, ".align") == 0) {
			char *v = strtok_r(NULL, " \t\r\n", &save);
			if (!v)
				return -1;
			al = strtoul(v, NULL, 10);
		} else if (tok[0] == '.') {
			size_t ts = type_size(tok);
			if (ts)
				tsize = ts;
			/* .ptr, .global, .const ... are qualifiers */
		} else {
			char *br = strchr(tok, '[');
			if (br)
				count = strtoul(br + 1, NULL, 10);
		}
	}
	if (!seen_param || !tsize || !count)
		return -1;
	*size = tsize * count;
	*align = al ? al : tsize;
	return 0;
}

static int parse_ptx(const char *text, struct CUmod_st *m, char *log, size_t loglen)
{
	const char *p = text;

	if (!strstr(text, ".version") || !strstr(text, ".target")) {
		snprintf(log, loglen, "ptxas application ptx input, line 1; fatal   : Parsing error"
			 " near '%.20s': syntax error (fake-cuda: no .version/.target)", text);
		return -1;
	}
	while ((p = strstr(p, ".entry")) != NULL) {
		struct entry *e, *ne;
		const char *q = p + 6, *name;
		size_t nlen, cur = 0;

		while (*q == ' ' || *q == '\t')
			q++;
		name = q;
		while (*q && *q != '(' && *q != ' ' && *q != '\t' && *q != '\n' && *q != '{')
			q++;
		nlen = (size_t)(q - name);
		if (nlen == 0 || nlen >= sizeof(e->name)) {
			snprintf(log, loglen, "fake-cuda: bad .entry name");
			return -1;
		}
		ne = realloc(m->entries, (m->nentries + 1) * sizeof(*m->entries));
		if (!ne)
			return -1;
		m->entries = ne;
		e = &m->entries[m->nentries++];
		memset(e, 0, sizeof(*e));
		memcpy(e->name, name, nlen);
		while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
			q++;
		if (*q == '(') {
			const char *end = strchr(q, ')');
			q++;
			if (!end) {
				snprintf(log, loglen, "fake-cuda: unterminated parameter list of %s",
					 e->name);
				return -1;
			}
			while (q < end) {
				const char *c = memchr(q, ',', (size_t)(end - q));
				const char *stop = c ? c : end;
				size_t sz, al;
				const char *t = q;
				while (t < stop && (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r'))
					t++;
				if (t < stop) {
					if (e->nparams >= FK_MAXPARAMS ||
					    parse_param(t, (size_t)(stop - t), &sz, &al) < 0) {
						snprintf(log, loglen, "fake-cuda: cannot parse a"
							 " parameter of %s", e->name);
						return -1;
					}
					cur = (cur + al - 1) / al * al;
					e->off[e->nparams] = cur;
					e->size[e->nparams] = sz;
					e->nparams++;
					cur += sz;
				}
				q = stop + 1;
			}
		}
		e->param_bytes = cur;
		p = q;
	}
	return 0;
}

static CUresult fk_ModuleLoadDataEx(CUmodule *pm, const void *image, unsigned int nopt,
				    CUjit_option *opts, void **vals)
{
	char *log = NULL;
	size_t loglen = 0;
	int log_size_idx = -1;
	const unsigned char *b = image;
	struct CUmod_st *m;
	char msg[512] = "";
	CUresult r = CUDA_SUCCESS;

	ENTER("cuModuleLoadDataEx", CTXCALL);
	if (!pm || !image || (nopt && (!opts || !vals)))
		return CUDA_ERROR_INVALID_VALUE;
	for (unsigned i = 0; i < nopt; i++) {
		if (opts[i] == CU_JIT_ERROR_LOG_BUFFER) {
			log = vals[i];
		} else if (opts[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES) {
			loglen = (size_t)(uintptr_t)vals[i];
			log_size_idx = (int)i;
		}
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return CUDA_ERROR_OUT_OF_MEMORY;
	/* byte by byte: a short PTX string ends at its NUL */
	if (((b[0] == 0x7f && b[1] == 'E' && b[2] == 'L' && b[3] == 'F') ||
	     (b[0] == 0x50 && b[1] == 0xED && b[2] == 0x55 && b[3] == 0xBA)) &&
	    (uintptr_t)b % 8) {
		count("cuModuleLoadDataEx.misaligned");
		snprintf(msg, sizeof(msg), "fake-cuda: binary image at a misaligned address");
		r = CUDA_ERROR_INVALID_IMAGE;
	} else if (b[0] == 0x7f && b[1] == 'E' && b[2] == 'L' && b[3] == 'F') {
		count("cuModuleLoadDataEx.cubin");
		snprintf(msg, sizeof(msg), "fake-cuda: cannot run cubin images (ELF)");
		r = CUDA_ERROR_NO_BINARY_FOR_GPU;
	} else if (b[0] == 0x50 && b[1] == 0xED && b[2] == 0x55 && b[3] == 0xBA) {
		count("cuModuleLoadDataEx.fatbin");
		snprintf(msg, sizeof(msg), "fake-cuda: cannot run fatbin images");
		r = CUDA_ERROR_NO_BINARY_FOR_GPU;
	} else {
		count("cuModuleLoadDataEx.ptx");
		/* PTX is NUL-terminated text: strlen reads up to the NUL (ASan
		 * catches a missing one). */
		(void)strlen(image);
		if (parse_ptx(image, m, msg, sizeof(msg)) < 0)
			r = CUDA_ERROR_INVALID_PTX;
	}
	if (log && loglen) {
		size_t n = strnlen(msg, loglen - 1);
		memcpy(log, msg, n);
		log[n] = '\0';
		if (log_size_idx >= 0)
			vals[log_size_idx] = (void *)(uintptr_t)(r ? n + 1 : 0);
	}
	if (r != CUDA_SUCCESS) {
		free(m->entries);
		free(m);
		return r;
	}
	m->funcs = calloc(m->nentries ? m->nentries : 1, sizeof(*m->funcs));
	if (!m->funcs) {
		free(m->entries);
		free(m);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	for (unsigned i = 0; i < m->nentries; i++) {
		m->funcs[i].mod = m;
		m->funcs[i].e = &m->entries[i];
	}
	m->ctx = tl_ctx;
	m->alive = 1;
	pthread_mutex_lock(&G);
	m->next_all = g_mods;
	g_mods = m;
	pthread_mutex_unlock(&G);
	*pm = m;
	return CUDA_SUCCESS;
}

/* G held. */
static int module_ok(CUmodule m)
{
	for (struct CUmod_st *x = g_mods; x; x = x->next_all)
		if (x == m)
			return x->alive && x->ctx == tl_ctx;
	return 0;
}

/* G held. */
static int func_ok(CUfunction f)
{
	for (struct CUmod_st *x = g_mods; x; x = x->next_all)
		if (x->alive && f >= x->funcs && f < x->funcs + x->nentries)
			return x->ctx == tl_ctx;
	return 0;
}

static CUresult fk_ModuleUnload(CUmodule m)
{
	ENTER("cuModuleUnload", CTXCALL);
	pthread_mutex_lock(&G);
	if (!module_ok(m)) {
		pthread_mutex_unlock(&G);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	m->alive = 0;
	pthread_mutex_unlock(&G);
	return CUDA_SUCCESS;
}

static CUresult fk_ModuleGetFunction(CUfunction *pf, CUmodule m, const char *name)
{
	ENTER("cuModuleGetFunction", CTXCALL);
	if (!pf || !name)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&G);
	if (!module_ok(m)) {
		pthread_mutex_unlock(&G);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	pthread_mutex_unlock(&G);
	for (unsigned i = 0; i < m->nentries; i++)
		if (strcmp(m->entries[i].name, name) == 0) {
			*pf = &m->funcs[i];
			return CUDA_SUCCESS;
		}
	return CUDA_ERROR_NOT_FOUND;
}

static CUresult fk_FuncGetParamInfo(CUfunction f, size_t idx, size_t *off, size_t *size)
{
	int ok;

	ENTER("cuFuncGetParamInfo", CTXCALL);
	pthread_mutex_lock(&G);
	ok = func_ok(f);
	pthread_mutex_unlock(&G);
	if (!ok)
		return CUDA_ERROR_INVALID_HANDLE;
	if (!off || idx >= f->e->nparams)
		return CUDA_ERROR_INVALID_VALUE;
	*off = f->e->off[idx];
	if (size)
		*size = f->e->size[idx];
	return CUDA_SUCCESS;
}

static CUresult fk_FuncSetAttribute(CUfunction f, CUfunction_attribute a, int v)
{
	int ok;

	ENTER("cuFuncSetAttribute", CTXCALL);
	pthread_mutex_lock(&G);
	ok = func_ok(f);
	pthread_mutex_unlock(&G);
	if (!ok)
		return CUDA_ERROR_INVALID_HANDLE;
	if (a != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES || v < 0 || v > 163 * 1024)
		return CUDA_ERROR_INVALID_VALUE;
	f->max_dyn_shared = v;
	return CUDA_SUCCESS;
}

static CUresult fk_LaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
				unsigned bx, unsigned by, unsigned bz, unsigned shmem,
				CUstream s, void **params, void **extra)
{
	struct op *o;
	struct entry *e;
	int ok;

	ENTER("cuLaunchKernel", CTXCALL | ASYNC);
	pthread_mutex_lock(&G);
	ok = func_ok(f);
	pthread_mutex_unlock(&G);
	if (!ok)
		return CUDA_ERROR_INVALID_HANDLE;
	e = f->e;
	if (!gx || !gy || !gz || !bx || !by || !bz || gx > 0x7fffffffu || gy > 65535 ||
	    gz > 65535 || bx > 1024 || by > 1024 || bz > 64 ||
	    (uint64_t)bx * by * bz > 1024 || extra)
		return CUDA_ERROR_INVALID_VALUE;
	if (shmem > 48 * 1024 && (int)shmem > f->max_dyn_shared)
		return CUDA_ERROR_INVALID_VALUE;
	if (e->nparams && !params)
		return CUDA_ERROR_INVALID_VALUE;
	if (!(o = op_new(OP_KERNEL)))
		return CUDA_ERROR_OUT_OF_MEMORY;
	o->fn = f;
	o->grid[0] = gx, o->grid[1] = gy, o->grid[2] = gz;
	o->block[0] = bx, o->block[1] = by, o->block[2] = bz;
	/* The driver copies the argument values at launch. */
	o->params = calloc(1, e->param_bytes ? e->param_bytes : 1);
	if (!o->params) {
		free(o);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	for (unsigned i = 0; i < e->nparams; i++) {
		if (!params[i]) {
			op_free(o);
			return CUDA_ERROR_INVALID_VALUE;
		}
		memcpy(o->params + e->off[i], params[i], e->size[i]);
	}
	return enqueue(s, o, "cuLaunchKernel", NULL);
}

/* --- host implementations of the test kernels --- */

#define P(T, i) (*(const T *)(o->params + o->fn->e->off[i]))

/* A kernel on device dev reaches only memory of that device (no peer
 * access is ever enabled). */
static void *kptr(int dev, uint64_t a, size_t n)
{
	void *p;
	int other = 0;

	if (n == 0)
		return (void *)1; /* nothing accessed */
	pthread_mutex_lock(&G);
	p = xlate(a, n, 1);
	if (p) {
		for (struct mapping *m = g_maps; m; m = m->next)
			if (m->alive && a >= m->va && a < m->va + m->size && m->phys->dev != dev)
				other = 1;
	}
	pthread_mutex_unlock(&G);
	if (other) {
		note("kernel on device %d accesses 0x%" PRIx64 " of another device", dev, a);
		return NULL;
	}
	if (!p)
		note("kernel access to 0x%" PRIx64 "+%zu is outside accessible memory", a, n);
	return p;
}

static CUresult run_kernel(struct op *o)
{
	static const struct { const char *name; unsigned nparams; size_t bytes; } known[] = {
		{ "empty", 0, 0 }, { "vecadd", 4, 28 }, { "fill_u32", 3, 24 },
		{ "inc_u32", 2, 16 }, { "saxpy_s", 3, 24 }, { "spin_us", 1, 8 }, { "trap", 1, 4 },
	};
	const char *name = o->fn->e->name;
	uint64_t threads = (uint64_t)o->grid[0] * o->block[0];

	/* The host versions read the parameters at the test kernels' layout. */
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(known[i].name, name) == 0 &&
		    (o->fn->e->nparams != known[i].nparams || o->fn->e->param_bytes < known[i].bytes)) {
			note("kernel '%s' has %u parameters (%zu bytes), not those of the test"
			     " kernel", name, o->fn->e->nparams, o->fn->e->param_bytes);
			return CUDA_ERROR_LAUNCH_FAILED;
		}

	if (strcmp(name, "empty") == 0)
		return CUDA_SUCCESS;
	if (strcmp(name, "vecadd") == 0) {
		int32_t n = P(int32_t, 3);
		uint64_t m = n > 0 ? ((uint64_t)n < threads ? (uint64_t)n : threads) : 0;
		const float *a = kptr(o->dev, P(uint64_t, 0), m * 4);
		const float *b = kptr(o->dev, P(uint64_t, 1), m * 4);
		float *c = kptr(o->dev, P(uint64_t, 2), m * 4);
		if (!a || !b || !c)
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		for (uint64_t i = 0; i < m; i++)
			c[i] = a[i] + b[i];
		return CUDA_SUCCESS;
	}
	if (strcmp(name, "fill_u32") == 0 || strcmp(name, "inc_u32") == 0) {
		int fill = name[0] == 'f';
		uint64_t n = fill ? P(uint64_t, 2) : P(uint64_t, 1);
		uint64_t m = n < threads ? n : threads;
		uint32_t *p = kptr(o->dev, P(uint64_t, 0), m * 4);
		if (!p)
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		for (uint64_t i = 0; i < m; i++)
			p[i] = fill ? P(uint32_t, 1) : p[i] + 1;
		return CUDA_SUCCESS;
	}
	if (strcmp(name, "saxpy_s") == 0) {
		float a = P(float, 0);
		int32_t n = *(const int32_t *)(o->params + o->fn->e->off[0] + 4);
		uint64_t m = n > 0 ? ((uint64_t)n < threads ? (uint64_t)n : threads) : 0;
		const float *x = kptr(o->dev, P(uint64_t, 1), m * 4);
		float *y = kptr(o->dev, P(uint64_t, 2), m * 4);
		if (!x || !y)
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		for (uint64_t i = 0; i < m; i++)
			y[i] = a * x[i] + y[i];
		return CUDA_SUCCESS;
	}
	if (strcmp(name, "spin_us") == 0) {
		uint64_t us = P(uint64_t, 0);
		struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
		nanosleep(&ts, NULL);
		return CUDA_SUCCESS;
	}
	if (strcmp(name, "trap") == 0)
		return P(int32_t, 0) != 0 ? CUDA_ERROR_LAUNCH_FAILED : CUDA_SUCCESS;
	note("no host implementation of kernel '%s'", name);
	return CUDA_ERROR_LAUNCH_FAILED;
}

/* Older and newer ABI variants, handed out by cuGetProcAddress for the
 * versions that select them (as cudaTypedefs.h lists them). */

/* CUDA 13.0: cuCtxSynchronize_v2(CUcontext). */
static CUresult fk_CtxSynchronize_v2(CUcontext c)
{
	int ok;

	pthread_mutex_lock(&G);
	ok = c >= &g_ctx[0] && c < &g_ctx[FK_MAXDEV] && c->alive;
	pthread_mutex_unlock(&G);
	if (!ok) {
		note("cuCtxSynchronize_v2 (CUDA 13.0 variant) called with an invalid context %p:"
		     " the caller asked cuGetProcAddress for a version it does not call", (void *)c);
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	if (c != tl_ctx) {
		note("cuCtxSynchronize_v2 of a context that is not current: not emulated");
		return CUDA_ERROR_NOT_SUPPORTED;
	}
	return fk_CtxSynchronize();
}

/* CUDA 2.0: cuMemGetInfo(unsigned int *, unsigned int *). */
static CUresult fk_MemGetInfo_v1(unsigned int *f, unsigned int *t)
{
	(void)f;
	(void)t;
	note("cuMemGetInfo (32-bit CUDA 2.0 variant) called");
	return CUDA_ERROR_NOT_SUPPORTED;
}

/* CUDA 9.2: cuDeviceGetUuid (v1, same signature, no MIG UUIDs). */
static CUresult fk_DeviceGetUuid_v1(CUuuid *u, CUdevice d)
{
	return fk_DeviceGetUuid(u, d);
}

/* CUDA 7.0: cuDevicePrimaryCtxRelease (v1, same signature). */
static CUresult fk_DevicePrimaryCtxRelease_v1(CUdevice d)
{
	return fk_DevicePrimaryCtxRelease(d);
}

/* ------------------------------------------------------------------------ */
/* Entry points by name                                                     */

static const struct {
	const char *name;
	void *fn;
	int since; /* CUDA version that introduced this ABI variant */
} fk_syms[] = {
#define S(n, v) { "cu" #n, (void *)fk_##n, v }
	S(GetErrorName, 6000), S(GetErrorString, 6000), S(Init, 2000),
	S(DeviceGetCount, 2000), S(DeviceGet, 2000), S(DeviceGetName, 2000),
	S(DeviceGetUuid, 11040), S(DeviceTotalMem, 3020), S(DeviceGetAttribute, 2000),
	S(DevicePrimaryCtxRetain, 7000), S(DevicePrimaryCtxRelease, 11000),
	S(CtxGetCurrent, 4000), S(CtxSetCurrent, 4000), S(CtxSynchronize, 2000),
	S(MemGetInfo, 3020), S(MemGetAllocationGranularity, 10020),
	S(MemAddressReserve, 10020), S(MemAddressFree, 10020), S(MemCreate, 10020),
	S(MemRelease, 10020), S(MemMap, 10020), S(MemUnmap, 10020), S(MemSetAccess, 10020),
	S(MemAlloc, 3020), S(MemFree, 3020),
	S(MemHostAlloc, 2020), S(MemFreeHost, 2000), S(MemcpyHtoDAsync, 3020),
	S(MemcpyDtoHAsync, 3020), S(MemcpyDtoDAsync, 3020), S(MemsetD8Async, 3020),
	S(StreamCreate, 2000), S(StreamDestroy, 4000), S(StreamSynchronize, 2000),
	S(EventCreate, 2000), S(EventDestroy, 4000), S(EventRecord, 2000),
	S(EventSynchronize, 2000), S(ModuleLoadDataEx, 2010), S(ModuleUnload, 2000),
	S(ModuleGetFunction, 2000), S(FuncSetAttribute, 9000), S(LaunchKernel, 4000),
	S(FuncGetParamInfo, 12040),
	{ "cuCtxSynchronize", (void *)fk_CtxSynchronize_v2, 13000 },
	{ "cuMemGetInfo", (void *)fk_MemGetInfo_v1, 2000 },
	{ "cuDeviceGetUuid", (void *)fk_DeviceGetUuid_v1, 9020 },
	{ "cuDevicePrimaryCtxRelease", (void *)fk_DevicePrimaryCtxRelease_v1, 7000 },
#undef S
};

FK_EXPORT CUresult CUDAAPI cuDriverGetVersion(int *v)
{
	count("cuDriverGetVersion");
	pthread_mutex_lock(&G);
	read_env();
	pthread_mutex_unlock(&G);
	if (!v)
		return CUDA_ERROR_INVALID_VALUE;
	*v = g_version;
	return CUDA_SUCCESS;
}

FK_EXPORT CUresult CUDAAPI cuInit(unsigned int flags)
{
	return fk_Init(flags);
}

FK_EXPORT CUresult CUDAAPI cuGetProcAddress_v2(const char *symbol, void **pfn, int version,
					       cuuint64_t flags,
					       CUdriverProcAddressQueryResult *status)
{
	CUresult r = enter("cuGetProcAddress", 0);

	if (r != CUDA_SUCCESS)
		return r;
	if (!symbol || !pfn || flags > (CU_GET_PROC_ADDRESS_LEGACY_STREAM |
					CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
		return CUDA_ERROR_INVALID_VALUE;
	*pfn = NULL;
	if (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)
		note("cuGetProcAddress(%s): per-thread default stream variants not emulated", symbol);
	{
		int found = 0, best = -1;
		char cname[128];
		/* The newest variant this driver has that the version asks for. */
		for (size_t i = 0; i < sizeof(fk_syms) / sizeof(fk_syms[0]); i++) {
			if (strcmp(fk_syms[i].name, symbol) != 0 || fk_syms[i].since > g_version)
				continue;
			found = 1;
			if (fk_syms[i].since <= version &&
			    (best < 0 || fk_syms[i].since > fk_syms[best].since))
				best = (int)i;
		}
		if (found && best < 0) {
			if (status)
				*status = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
			return CUDA_ERROR_NOT_FOUND;
		}
		if (best >= 0) {
			/* Tests check which variant each entry point was given. */
			snprintf(cname, sizeof(cname), "cuGetProcAddress:%s@%d", symbol,
				 fk_syms[best].since);
			count(cname);
			*pfn = fk_syms[best].fn;
			if (status)
				*status = CU_GET_PROC_ADDRESS_SUCCESS;
			return CUDA_SUCCESS;
		}
	}
	if (status)
		*status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
	return CUDA_ERROR_NOT_FOUND;
}

/* The CUDA 11.3 entry point, without the query result (exported by real
 * drivers too; the backend must not need it). */
#undef cuGetProcAddress
FK_EXPORT CUresult CUDAAPI cuGetProcAddress(const char *symbol, void **pfn, int version,
					    cuuint64_t flags);
FK_EXPORT CUresult CUDAAPI cuGetProcAddress(const char *symbol, void **pfn, int version,
					    cuuint64_t flags)
{
	count("cuGetProcAddress_v1");
	return cuGetProcAddress_v2(symbol, pfn, version, flags, NULL);
}

/* ------------------------------------------------------------------------ */
/* Test-only API                                                            */

FK_EXPORT unsigned long fake_cuda_calls(const char *name)
{
	unsigned long n = 0;

	pthread_mutex_lock(&G);
	for (struct counter *c = g_counters; c; c = c->next)
		if (strcmp(c->name, name) == 0)
			n = c->n;
	pthread_mutex_unlock(&G);
	return n;
}

FK_EXPORT void fake_cuda_reset_counts(void)
{
	pthread_mutex_lock(&G);
	for (struct counter *c = g_counters; c; c = c->next)
		c->n = 0;
	for (struct failspec *f = g_fails; f; f = f->next)
		f->nth = 0; /* disarm */
	pthread_mutex_unlock(&G);
}

FK_EXPORT int fake_cuda_fail(const char *spec)
{
	int r;

	pthread_mutex_lock(&G);
	read_env();
	r = add_fails(spec);
	pthread_mutex_unlock(&G);
	return r;
}

FK_EXPORT long fake_cuda_live(const char *kind)
{
	long n = 0;

	pthread_mutex_lock(&G);
	if (strcmp(kind, "streams") == 0) {
		for (struct CUstream_st *s = g_streams; s; s = s->next_all)
			n += s->alive;
	} else if (strcmp(kind, "events") == 0) {
		for (struct CUevent_st *e = g_events; e; e = e->next_all)
			n += e->alive;
	} else if (strcmp(kind, "modules") == 0) {
		for (struct CUmod_st *m = g_mods; m; m = m->next_all)
			n += m->alive;
	} else if (strcmp(kind, "reservations") == 0) {
		for (struct reservation *r = g_res; r; r = r->next)
			n += r->alive;
	} else if (strcmp(kind, "mappings") == 0) {
		for (struct mapping *m = g_maps; m; m = m->next)
			n += m->alive;
	} else if (strcmp(kind, "phys") == 0) {
		for (struct phys *p = g_phys; p; p = p->next)
			n += !p->freed;
	} else if (strcmp(kind, "hostallocs") == 0) {
		for (struct hostbuf *h = g_host; h; h = h->next)
			n += h->alive;
	} else if (strcmp(kind, "contexts") == 0) {
		for (int i = 0; i < FK_MAXDEV; i++)
			n += g_ctx[i].refs;
	} else {
		n = -1;
	}
	pthread_mutex_unlock(&G);
	return n;
}

FK_EXPORT size_t fake_cuda_mem_used(int dev)
{
	size_t n;

	if (dev < 0 || dev >= FK_MAXDEV)
		return 0;
	pthread_mutex_lock(&G);
	n = g_used[dev];
	pthread_mutex_unlock(&G);
	return n;
}
