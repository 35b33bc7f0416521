/* SPDX-License-Identifier: MIT */
/*
 * cuda.c - the cuda backend: real GPUs through the CUDA Driver API.
 *
 * The driver is loaded at run time: dlopen("libcuda.so.1") (or
 * $VGPU_CUDA_LIBRARY), then only cuGetProcAddress_v2 and cuDriverGetVersion
 * are taken with dlsym. cuDriverGetVersion decides whether the driver is new
 * enough (12.0) and which optional entry points to expect; every entry point
 * comes from cuGetProcAddress at the CUDA version of the exact ABI variant
 * the backend calls (see CUDA_SYMBOLS), so the right versioned symbol
 * (cuMemGetInfo_v2, cuDeviceGetUuid_v2, ...) is used whatever the driver's
 * age. <cuda.h> and <cudaTypedefs.h> supply types only; nothing links
 * against libcuda.
 *
 * One primary context per device (cuDevicePrimaryCtxRetain, shared by every
 * open of that ordinal in the process), made current at the entry of every op
 * on the calling thread. One non-blocking CUstream per backend stream, plus an
 * internal one per device for the synchronous (NULL) stream.
 *
 * Memory goes through the virtual memory management API: each allocation is
 * its own address reservation (aligned to the allocation granularity) with
 * one physical allocation mapped into it. The handle is released right after
 * cuMemMap (documented: the physical memory then lives until it is unmapped),
 * so an allocation is fully described by (address, size). mem_evict copies
 * the bytes out and unmaps (freeing the physical memory) but keeps the
 * reservation; mem_restore maps fresh physical memory at the same address.
 *
 * Copies from/to pageable host memory go through two pinned staging buffers
 * per stream: chunk N+1 is memcpy'd into one buffer while the DMA of chunk N
 * from the other runs; an event per buffer says when it is free again.
 */
#include "config.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda.h>
#if CUDA_VERSION < 12000
#error "the cuda backend needs the headers of CUDA 12.0 or newer (configure --with-cuda=DIR or --without-cuda)"
#endif
#include <cudaTypedefs.h> /* PFN_cu<name>_v<version>: one type per ABI variant */

#include "backend.h"
#include "error.h"

#define CUDA_DEFAULT_LIBRARY "libcuda.so.1"
#define CUDA_MIN_DRIVER 12000            /* cuGetProcAddress_v2 appeared in 12.0 */
#define CUDA_MAX_DEVICES 64
#define CUDA_STAGE_CHUNK (2u << 20)      /* bytes per staging buffer */
#define CUDA_SYNC_STREAMS 4              /* streams for synchronous work, per device */
#define CUDA_JIT_LOG_SIZE 8192
#define CUDA_FATBIN_MAGIC 0xBA55ED50u

/* ------------------------------------------------------------------------ */
/* The driver's entry points                                                */

/*
 * X(name, ABI version, required). Each entry point is asked of
 * cuGetProcAddress at the CUDA version of the ABI variant the backend calls
 * (the PFN_cu<name>_v<version> typedef of <cudaTypedefs.h>, so the compiler
 * checks the signature), never at the driver's own version: a newer driver
 * hands out newer variants for that (CUDA 13's cuCtxSynchronize takes a
 * context, CUDA 3.2's cuMemGetInfo takes size_t, ...).
 */
#define CUDA_SYMBOLS(X)                          \
	X(GetErrorName, 6000, 1)                 \
	X(GetErrorString, 6000, 1)               \
	X(Init, 2000, 1)                         \
	X(DeviceGetCount, 2000, 1)               \
	X(DeviceGet, 2000, 1)                    \
	X(DeviceGetName, 2000, 1)                \
	X(DeviceGetUuid, 11040, 1)               \
	X(DeviceTotalMem, 3020, 1)               \
	X(DeviceGetAttribute, 2000, 1)           \
	X(DevicePrimaryCtxRetain, 7000, 1)       \
	X(DevicePrimaryCtxRelease, 11000, 1)     \
	X(CtxGetCurrent, 4000, 1)                \
	X(CtxSetCurrent, 4000, 1)                \
	X(CtxSynchronize, 2000, 1)               \
	X(MemGetInfo, 3020, 1)                   \
	X(MemGetAllocationGranularity, 10020, 1) \
	X(MemAddressReserve, 10020, 1)           \
	X(MemAddressFree, 10020, 1)              \
	X(MemCreate, 10020, 1)                   \
	X(MemRelease, 10020, 1)                  \
	X(MemMap, 10020, 1)                      \
	X(MemUnmap, 10020, 1)                    \
	X(MemSetAccess, 10020, 1)                \
	X(MemAlloc, 3020, 1)                     \
	X(MemFree, 3020, 1)                      \
	X(MemHostAlloc, 2020, 1)                 \
	X(MemFreeHost, 2000, 1)                  \
	X(MemcpyHtoDAsync, 3020, 1)              \
	X(MemcpyDtoHAsync, 3020, 1)              \
	X(MemcpyDtoDAsync, 3020, 1)              \
	X(MemsetD8Async, 3020, 1)                \
	X(StreamCreate, 2000, 1)                 \
	X(StreamDestroy, 4000, 1)                \
	X(StreamSynchronize, 2000, 1)            \
	X(EventCreate, 2000, 1)                  \
	X(EventDestroy, 4000, 1)                 \
	X(EventRecord, 2000, 1)                  \
	X(EventSynchronize, 2000, 1)             \
	X(ModuleLoadDataEx, 2010, 1)             \
	X(ModuleUnload, 2000, 1)                 \
	X(ModuleGetFunction, 2000, 1)            \
	X(FuncSetAttribute, 9000, 1)             \
	X(LaunchKernel, 4000, 1)                 \
	X(FuncGetParamInfo, 12040, 0)

typedef CUresult (*cuda_get_proc_fn)(const char *, void **, int, cuuint64_t,
				     CUdriverProcAddressQueryResult *);

struct cuda_driver {
	int loaded;
	void *lib;
	char path[512];
	int version;     /* cuDriverGetVersion: 12040 = 12.4 */
	cuda_get_proc_fn GetProcAddress;
	CUresult (*DriverGetVersion)(int *);
#define X(name, ver, req) PFN_cu##name##_v##ver name;
	CUDA_SYMBOLS(X)
#undef X
};

static struct cuda_driver drv;
static pthread_mutex_t drv_lock = PTHREAD_MUTEX_INITIALIZER;

/* Names of the errors we may meet before cuGetErrorName is usable (the stub
 * library answers CUDA_ERROR_STUB_LIBRARY to cuGetErrorName too). */
static const struct { int code; const char *name; } cuda_error_names[] = {
	{ 0, "CUDA_SUCCESS" },
	{ 1, "CUDA_ERROR_INVALID_VALUE" },
	{ 2, "CUDA_ERROR_OUT_OF_MEMORY" },
	{ 3, "CUDA_ERROR_NOT_INITIALIZED" },
	{ 4, "CUDA_ERROR_DEINITIALIZED" },
	{ 34, "CUDA_ERROR_STUB_LIBRARY" },
	{ 36, "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER" },
	{ 46, "CUDA_ERROR_DEVICE_UNAVAILABLE" },
	{ 100, "CUDA_ERROR_NO_DEVICE" },
	{ 101, "CUDA_ERROR_INVALID_DEVICE" },
	{ 102, "CUDA_ERROR_DEVICE_NOT_LICENSED" },
	{ 200, "CUDA_ERROR_INVALID_IMAGE" },
	{ 201, "CUDA_ERROR_INVALID_CONTEXT" },
	{ 209, "CUDA_ERROR_NO_BINARY_FOR_GPU" },
	{ 218, "CUDA_ERROR_INVALID_PTX" },
	{ 221, "CUDA_ERROR_JIT_COMPILER_NOT_FOUND" },
	{ 222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION" },
	{ 400, "CUDA_ERROR_INVALID_HANDLE" },
	{ 500, "CUDA_ERROR_NOT_FOUND" },
	{ 600, "CUDA_ERROR_NOT_READY" },
	{ 700, "CUDA_ERROR_ILLEGAL_ADDRESS" },
	{ 701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES" },
	{ 702, "CUDA_ERROR_LAUNCH_TIMEOUT" },
	{ 719, "CUDA_ERROR_LAUNCH_FAILED" },
	{ 801, "CUDA_ERROR_NOT_SUPPORTED" },
	{ 999, "CUDA_ERROR_UNKNOWN" },
};

static const char *cuda_err_name(CUresult r)
{
	const char *s = NULL;
	static __thread char buf[32];

	if (drv.GetErrorName && drv.GetErrorName(r, &s) == CUDA_SUCCESS && s)
		return s;
	for (size_t i = 0; i < sizeof(cuda_error_names) / sizeof(cuda_error_names[0]); i++)
		if (cuda_error_names[i].code == (int)r)
			return cuda_error_names[i].name;
	snprintf(buf, sizeof(buf), "CUDA error %d", (int)r);
	return buf;
}

static const char *cuda_err_desc(CUresult r)
{
	const char *s = NULL;

	if (drv.GetErrorString && drv.GetErrorString(r, &s) == CUDA_SUCCESS && s)
		return s;
	return NULL;
}

/* CUresult -> vgpu_status; `def` for codes with no better match. */
static vgpu_status cuda_status(CUresult r, vgpu_status def)
{
	switch ((int)r) {
	case CUDA_SUCCESS:
		return VGPU_OK;
	case CUDA_ERROR_OUT_OF_MEMORY:
		return VGPU_ERR_OUT_OF_MEMORY;
	case CUDA_ERROR_NO_DEVICE:
	case CUDA_ERROR_INVALID_DEVICE:
	case CUDA_ERROR_DEVICE_UNAVAILABLE:
		return VGPU_ERR_NO_DEVICE;
	case CUDA_ERROR_STUB_LIBRARY:
	case CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER:
	case CUDA_ERROR_NOT_INITIALIZED:
	case CUDA_ERROR_DEINITIALIZED:
		return VGPU_ERR_DRIVER;
	case CUDA_ERROR_INVALID_IMAGE:
	case CUDA_ERROR_INVALID_PTX:
	case CUDA_ERROR_NO_BINARY_FOR_GPU:
	case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
	case CUDA_ERROR_JIT_COMPILER_NOT_FOUND:
	case CUDA_ERROR_INVALID_SOURCE:
	case CUDA_ERROR_SHARED_OBJECT_INIT_FAILED:
		return VGPU_ERR_BAD_MODULE;
	case CUDA_ERROR_NOT_FOUND:
		return VGPU_ERR_NOT_FOUND;
	case CUDA_ERROR_NOT_READY:
		return VGPU_ERR_NOT_READY;
	case CUDA_ERROR_NOT_SUPPORTED:
		return VGPU_ERR_UNSUPPORTED;
	case CUDA_ERROR_ILLEGAL_ADDRESS:
	case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES:
	case CUDA_ERROR_LAUNCH_TIMEOUT:
	case CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING:
	case CUDA_ERROR_ASSERT:
	case CUDA_ERROR_HARDWARE_STACK_ERROR:
	case CUDA_ERROR_ILLEGAL_INSTRUCTION:
	case CUDA_ERROR_MISALIGNED_ADDRESS:
	case CUDA_ERROR_INVALID_ADDRESS_SPACE:
	case CUDA_ERROR_INVALID_PC:
	case CUDA_ERROR_LAUNCH_FAILED:
		return VGPU_ERR_LAUNCH;
	default:
		return def;
	}
}

/* Errors after which the context is unusable until it is destroyed. */
static int cuda_sticky(CUresult r)
{
	return r == CUDA_ERROR_ILLEGAL_ADDRESS || r == CUDA_ERROR_LAUNCH_FAILED ||
	       r == CUDA_ERROR_ASSERT || r == CUDA_ERROR_HARDWARE_STACK_ERROR ||
	       r == CUDA_ERROR_ILLEGAL_INSTRUCTION || r == CUDA_ERROR_MISALIGNED_ADDRESS ||
	       r == CUDA_ERROR_INVALID_ADDRESS_SPACE || r == CUDA_ERROR_INVALID_PC ||
	       r == CUDA_ERROR_LAUNCH_TIMEOUT;
}

/* Set the thread's message "<label>: <what>: CUDA_ERROR_X (description)". */
static vgpu_status cuda_fail(const char *label, const char *what, CUresult r, vgpu_status def)
{
	const char *desc = cuda_err_desc(r);
	vgpu_status st = cuda_status(r, def);

	return vgpu__error(st, "%s: %s: %s%s%s%s%s", label, what, cuda_err_name(r),
			   desc ? " (" : "", desc ? desc : "", desc ? ")" : "",
			   cuda_sticky(r) ? "; CUDA leaves the process in an inconsistent state after"
					    " this error: the GPU cannot be used again until the process"
					    " restarts" : "");
}

static vgpu_status cuda_load_locked(void)
{
	const char *path = getenv("VGPU_CUDA_LIBRARY");
	const char *label = "cuda";
	struct cuda_driver d;
	CUresult r;

	if (drv.loaded)
		return VGPU_OK;
	if (!path || !*path)
		path = CUDA_DEFAULT_LIBRARY;
	memset(&d, 0, sizeof(d));
	snprintf(d.path, sizeof(d.path), "%s", path);

	dlerror();
	/* Never dlclose()d: a driver is not safely unloadable. */
	d.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!d.lib) {
		const char *e = dlerror();
		return vgpu__error(VGPU_ERR_NO_DEVICE,
				   "%s: cannot load the CUDA driver library %s: %s (is the NVIDIA"
				   " driver installed? $VGPU_CUDA_LIBRARY names another path)",
				   label, path, e ? e : "unknown dlopen error");
	}
	d.GetProcAddress = (cuda_get_proc_fn)dlsym(d.lib, "cuGetProcAddress_v2");
	d.DriverGetVersion = (CUresult (*)(int *))dlsym(d.lib, "cuDriverGetVersion");
	if (!d.DriverGetVersion)
		return vgpu__error(VGPU_ERR_DRIVER,
				   "%s: %s is not a CUDA driver library (no cuDriverGetVersion)",
				   label, path);
	r = d.DriverGetVersion(&d.version);
	if (r != CUDA_SUCCESS) {
		/* Try to get the real name of the error (fails on the stub). */
		if (d.GetProcAddress) {
			void *p = NULL;
			CUdriverProcAddressQueryResult q;
			if (d.GetProcAddress("cuGetErrorName", &p, 6000,
					     CU_GET_PROC_ADDRESS_LEGACY_STREAM, &q) == CUDA_SUCCESS &&
			    q == CU_GET_PROC_ADDRESS_SUCCESS)
				drv.GetErrorName = (PFN_cuGetErrorName_v6000)p;
		}
		vgpu__error(VGPU_ERR_DRIVER, "%s: %s: cuDriverGetVersion: %s%s", label, path,
			    cuda_err_name(r),
			    r == CUDA_ERROR_STUB_LIBRARY
				    ? " (this is the CUDA toolkit's stub library, not a driver:"
				      " install the NVIDIA driver or point $VGPU_CUDA_LIBRARY at"
				      " the real libcuda.so.1)"
				    : "");
		drv.GetErrorName = NULL;
		return VGPU_ERR_DRIVER;
	}
	if (d.version < CUDA_MIN_DRIVER || !d.GetProcAddress)
		return vgpu__error(VGPU_ERR_DRIVER,
				   "%s: %s: CUDA driver %d.%d is too old: the cuda backend needs"
				   " a driver for CUDA %d.%d or newer (cuGetProcAddress_v2)",
				   label, path, d.version / 1000, d.version % 1000 / 10,
				   CUDA_MIN_DRIVER / 1000, CUDA_MIN_DRIVER % 1000 / 10);

#define X(name, ver, req)                                                                 \
	do {                                                                              \
		void *p_ = NULL;                                                          \
		CUdriverProcAddressQueryResult q_ = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND; \
		CUresult r_ = d.GetProcAddress("cu" #name, &p_, ver,                       \
					       CU_GET_PROC_ADDRESS_LEGACY_STREAM, &q_);   \
		if (r_ == CUDA_SUCCESS && q_ == CU_GET_PROC_ADDRESS_SUCCESS && p_) {      \
			d.name = (PFN_cu##name##_v##ver)p_;                               \
		} else if (req) {                                                         \
			return vgpu__error(VGPU_ERR_DRIVER,                               \
					   "%s: %s (CUDA %d.%d): cuGetProcAddress(%s, %d): %s%s", \
					   label, path, d.version / 1000,                 \
					   d.version % 1000 / 10, "cu" #name, ver,        \
					   cuda_err_name(r_), r_ != CUDA_SUCCESS ? "" :   \
					   q_ == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT ? \
					   " (driver too old for this entry point)" :     \
					   " (symbol not found)");                        \
		}                                                                         \
	} while (0);
	CUDA_SYMBOLS(X)
#undef X

	drv = d; /* from here on error names come from the driver */
	r = drv.Init(0);
	if (r != CUDA_SUCCESS) {
		char where[600];
		vgpu_status st;
		snprintf(where, sizeof(where), "%s (CUDA %d.%d): cuInit", path,
			 drv.version / 1000, drv.version % 1000 / 10);
		st = cuda_fail(label, where, r, VGPU_ERR_DRIVER);
		memset(&drv, 0, sizeof(drv));
		return st;
	}
	drv.loaded = 1;
	vgpu_info("cuda: loaded %s, CUDA driver %d.%d%s", path, drv.version / 1000,
		  drv.version % 1000 / 10, drv.FuncGetParamInfo ? "" :
		  " (no cuFuncGetParamInfo: kernel arguments are not checked)");
	return VGPU_OK;
}

/* Load the driver once per process. A failure is not remembered: the next
 * call tries again (and sets the message again). */
static vgpu_status cuda_load(void)
{
	vgpu_status st;

	pthread_mutex_lock(&drv_lock);
	st = cuda_load_locked();
	pthread_mutex_unlock(&drv_lock);
	return st;
}

/* ------------------------------------------------------------------------ */
/* Devices and streams                                                      */

struct cuda_stream {
	struct cuda_dev *dev;
	CUstream s;
	pthread_mutex_t lock;    /* staging buffers */
	void *stage[2];          /* pinned, CUDA_STAGE_CHUNK each; NULL until used */
	CUevent ev[2];
	int busy[2];             /* ev[i] recorded after a DMA reading stage[i] */
	int stage_failed;        /* pinned allocation failed: copy pageable */
	char last_kernel[64];    /* named in asynchronous launch errors */
};

/* What function_get hands out. */
struct cuda_func {
	CUfunction f;
	char name[];
};

struct cuda_evicted {
	struct cuda_evicted *next;
	CUdeviceptr p;
	size_t size;
};

struct cuda_dev {
	int ordinal;
	int refs;                /* opens sharing this device (under drv_lock) */
	char label[32];          /* "cuda:0" */
	CUdevice cudev;
	CUcontext ctx;           /* the retained primary context */
	size_t gran;
	int vmm;                 /* virtual memory management (else cuMemAlloc) */
	CUmemAllocationProp prop;
	CUmemAccessDesc access;
	/* The synchronous (NULL) stream: a few CUDA streams, so that callers
	 * on different threads do not wait for each other's work. */
	struct cuda_stream sync[CUDA_SYNC_STREAMS];
	unsigned int next_sync;  /* which one to wait for when all are busy */
	pthread_mutex_t lock;    /* evicted list */
	struct cuda_evicted *evicted;
};

static struct cuda_dev *cuda_devs[CUDA_MAX_DEVICES];

/* Make the device's context current on this thread (cheap when it is). */
static vgpu_status cuda_enter(struct cuda_dev *d)
{
	CUcontext cur = NULL;
	CUresult r;

	if (drv.CtxGetCurrent(&cur) == CUDA_SUCCESS && cur == d->ctx)
		return VGPU_OK;
	r = drv.CtxSetCurrent(d->ctx);
	if (r != CUDA_SUCCESS)
		return cuda_fail(d->label, "cuCtxSetCurrent", r, VGPU_ERR_DRIVER);
	return VGPU_OK;
}

#define CU_CALL(d, what, def, call)                                   \
	do {                                                          \
		CUresult r_ = (call);                                 \
		if (r_ != CUDA_SUCCESS)                               \
			return cuda_fail((d)->label, (what), r_, (def)); \
	} while (0)

static vgpu_status cuda_stream_init(struct cuda_dev *d, struct cuda_stream *cs)
{
	CUresult r;

	memset(cs, 0, sizeof(*cs));
	cs->dev = d;
	r = drv.StreamCreate(&cs->s, CU_STREAM_NON_BLOCKING);
	if (r != CUDA_SUCCESS)
		return cuda_fail(d->label, "cuStreamCreate", r, VGPU_ERR_DRIVER);
	pthread_mutex_init(&cs->lock, NULL);
	return VGPU_OK;
}

/* Context current. Waits for the stream, frees its resources. */
static void cuda_stream_fini(struct cuda_stream *cs)
{
	CUresult r = drv.StreamSynchronize(cs->s);

	if (r != CUDA_SUCCESS)
		vgpu_debug("%s: cuStreamSynchronize at destroy: %s", cs->dev->label,
			   cuda_err_name(r));
	for (int i = 0; i < 2; i++) {
		if (cs->ev[i])
			drv.EventDestroy(cs->ev[i]);
		if (cs->stage[i])
			drv.MemFreeHost(cs->stage[i]);
	}
	drv.StreamDestroy(cs->s);
	pthread_mutex_destroy(&cs->lock);
}

/* Allocate the staging buffers on first use. 0 = use them, 1 = copy pageable
 * directly (pinned memory unavailable), <0 = error. Lock held. */
static int cuda_stage_ready(struct cuda_stream *cs)
{
	struct cuda_dev *d = cs->dev;
	CUresult r;

	if (cs->stage_failed)
		return 1;
	if (cs->stage[1])
		return 0;
	for (int i = 0; i < 2; i++) {
		if (!cs->ev[i]) {
			r = drv.EventCreate(&cs->ev[i], CU_EVENT_DISABLE_TIMING);
			if (r != CUDA_SUCCESS)
				return cuda_fail(d->label, "cuEventCreate", r, VGPU_ERR_DRIVER);
		}
		if (!cs->stage[i]) {
			r = drv.MemHostAlloc(&cs->stage[i], CUDA_STAGE_CHUNK, 0);
			if (r != CUDA_SUCCESS) {
				cs->stage[i] = NULL;
				vgpu_warn("%s: cuMemHostAlloc(%u bytes) for staging: %s; copying"
					  " from pageable memory", d->label, CUDA_STAGE_CHUNK,
					  cuda_err_name(r));
				cs->stage_failed = 1;
				return 1;
			}
		}
	}
	return 0;
}

/* Wait until stage[b] is no longer read by a DMA. Lock held. */
static vgpu_status cuda_stage_wait(struct cuda_stream *cs, int b)
{
	if (cs->busy[b]) {
		CUresult r = drv.EventSynchronize(cs->ev[b]);
		cs->busy[b] = 0;
		if (r != CUDA_SUCCESS)
			return cuda_fail(cs->dev->label, "cuEventSynchronize", r, VGPU_ERR_DRIVER);
	}
	return VGPU_OK;
}

static vgpu_status cuda_htod_locked(struct cuda_stream *cs, CUdeviceptr dst,
				    const void *src, size_t n)
{
	struct cuda_dev *d = cs->dev;
	const char *s = src;
	int rc = cuda_stage_ready(cs);
	vgpu_status st;

	if (rc < 0)
		return rc;
	if (rc == 1) {
		CU_CALL(d, "cuMemcpyHtoDAsync", VGPU_ERR_DRIVER,
			drv.MemcpyHtoDAsync(dst, src, n, cs->s));
		return VGPU_OK;
	}
	for (size_t off = 0, i = 0; off < n; off += CUDA_STAGE_CHUNK, i++) {
		size_t len = n - off < CUDA_STAGE_CHUNK ? n - off : CUDA_STAGE_CHUNK;
		int b = (int)(i & 1);
		if ((st = cuda_stage_wait(cs, b)) < 0)
			return st;
		memcpy(cs->stage[b], s + off, len);
		CU_CALL(d, "cuMemcpyHtoDAsync", VGPU_ERR_DRIVER,
			drv.MemcpyHtoDAsync(dst + off, cs->stage[b], len, cs->s));
		CU_CALL(d, "cuEventRecord", VGPU_ERR_DRIVER, drv.EventRecord(cs->ev[b], cs->s));
		cs->busy[b] = 1;
	}
	return VGPU_OK;
}

/* Returns when dst is filled (the stream has passed the copy). */
static vgpu_status cuda_dtoh_locked(struct cuda_stream *cs, void *dst, CUdeviceptr src,
				    size_t n)
{
	struct cuda_dev *d = cs->dev;
	char *out = dst;
	int rc = cuda_stage_ready(cs);
	size_t nchunks, prev_off = 0, prev_len = 0;
	vgpu_status st;

	if (rc < 0)
		return rc;
	if (rc == 1) {
		CU_CALL(d, "cuMemcpyDtoHAsync", VGPU_ERR_DRIVER,
			drv.MemcpyDtoHAsync(dst, src, n, cs->s));
		CU_CALL(d, "cuStreamSynchronize", VGPU_ERR_DRIVER, drv.StreamSynchronize(cs->s));
		return VGPU_OK;
	}
	nchunks = (n + CUDA_STAGE_CHUNK - 1) / CUDA_STAGE_CHUNK;
	for (size_t i = 0; i <= nchunks; i++) {
		if (i < nchunks) {
			/* DMA chunk i into stage[i&1]; its last reader (chunk i-2)
			 * was drained in iteration i-1, earlier htod DMAs reading it
			 * come before in stream order. */
			size_t off = i * CUDA_STAGE_CHUNK;
			size_t len = n - off < CUDA_STAGE_CHUNK ? n - off : CUDA_STAGE_CHUNK;
			int b = (int)(i & 1);
			CU_CALL(d, "cuMemcpyDtoHAsync", VGPU_ERR_DRIVER,
				drv.MemcpyDtoHAsync(cs->stage[b], src + off, len, cs->s));
			CU_CALL(d, "cuEventRecord", VGPU_ERR_DRIVER,
				drv.EventRecord(cs->ev[b], cs->s));
			cs->busy[b] = 1;
		}
		if (i > 0) {
			int b = (int)((i - 1) & 1);
			if ((st = cuda_stage_wait(cs, b)) < 0)
				return st;
			memcpy(out + prev_off, cs->stage[b], prev_len);
		}
		prev_off = i * CUDA_STAGE_CHUNK;
		prev_len = n > prev_off ? (n - prev_off < CUDA_STAGE_CHUNK ? n - prev_off
								    : CUDA_STAGE_CHUNK) : 0;
	}
	return VGPU_OK;
}

/* The stream to issue on, locked: bs, or a free synchronous stream. */
static struct cuda_stream *cuda_stream_get(struct cuda_dev *d, void *bs)
{
	struct cuda_stream *cs;

	if (bs) {
		cs = bs;
		pthread_mutex_lock(&cs->lock);
		return cs;
	}
	for (int i = 0; i < CUDA_SYNC_STREAMS; i++)
		if (pthread_mutex_trylock(&d->sync[i].lock) == 0)
			return &d->sync[i];
	cs = &d->sync[__atomic_fetch_add(&d->next_sync, 1, __ATOMIC_RELAXED) % CUDA_SYNC_STREAMS];
	pthread_mutex_lock(&cs->lock);
	return cs;
}

static void cuda_stream_put(struct cuda_stream *cs)
{
	pthread_mutex_unlock(&cs->lock);
}

static vgpu_status cuda_sync_locked(struct cuda_stream *cs);

/* The NULL stream is synchronous: wait and report before returning. Lock
 * of the stream held. */
static vgpu_status cuda_finish(struct cuda_stream *cs, void *bs, vgpu_status st)
{
	if (bs || st < 0)
		return st;
	return cuda_sync_locked(cs);
}

/* ------------------------------------------------------------------------ */
/* Backend ops                                                              */

static int cuda_device_count(void)
{
	int n = 0;
	CUresult r;
	vgpu_status st = cuda_load();

	if (st < 0)
		return st;
	r = drv.DeviceGetCount(&n);
	if (r != CUDA_SUCCESS)
		return cuda_fail("cuda", "cuDeviceGetCount", r, VGPU_ERR_DRIVER);
	return n;
}

static void cuda_dev_free(struct cuda_dev *d)
{
	while (d->evicted) {
		struct cuda_evicted *e = d->evicted;
		d->evicted = e->next;
		free(e);
	}
	pthread_mutex_destroy(&d->lock);
	free(d);
}

static vgpu_status cuda_device_open_locked(int index, struct cuda_dev **out)
{
	struct cuda_dev *d;
	int n = 0, vmm = 0;
	CUresult r;
	vgpu_status st;
	char label[32];

	snprintf(label, sizeof(label), "cuda:%d", index);
	if (index < 0 || index >= CUDA_MAX_DEVICES)
		return vgpu__error(VGPU_ERR_NO_DEVICE, "%s: no such device", label);
	if (cuda_devs[index]) {
		cuda_devs[index]->refs++;
		*out = cuda_devs[index];
		return VGPU_OK;
	}
	r = drv.DeviceGetCount(&n);
	if (r != CUDA_SUCCESS)
		return cuda_fail(label, "cuDeviceGetCount", r, VGPU_ERR_DRIVER);
	if (index >= n)
		return vgpu__error(VGPU_ERR_NO_DEVICE, "%s: no such device (%d CUDA device%s)",
				   label, n, n == 1 ? "" : "s");
	d = calloc(1, sizeof(*d));
	if (!d)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory", label);
	pthread_mutex_init(&d->lock, NULL);
	d->ordinal = index;
	d->refs = 1;
	memcpy(d->label, label, sizeof(label));
	r = drv.DeviceGet(&d->cudev, index);
	if (r != CUDA_SUCCESS) {
		st = cuda_fail(label, "cuDeviceGet", r, VGPU_ERR_NO_DEVICE);
		goto fail;
	}
	r = drv.DeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
				   d->cudev);
	if (r != CUDA_SUCCESS) {
		st = cuda_fail(label, "cuDeviceGetAttribute", r, VGPU_ERR_DRIVER);
		goto fail;
	}
	d->vmm = vmm != 0;
	if (!d->vmm)
		vgpu_warn("%s: the device does not support CUDA virtual memory management"
			  " (cuMemCreate/cuMemMap): memory comes from cuMemAlloc and cannot be"
			  " evicted (no oversubscription)", label);
	r = drv.DevicePrimaryCtxRetain(&d->ctx, d->cudev);
	if (r != CUDA_SUCCESS) {
		st = cuda_fail(label, "cuDevicePrimaryCtxRetain", r, VGPU_ERR_DRIVER);
		goto fail;
	}
	if ((st = cuda_enter(d)) < 0)
		goto fail_ctx;

	d->prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	d->prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
	d->prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	d->prop.location.id = d->cudev;
	d->access.location = d->prop.location;
	d->access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	d->gran = 4096; /* without VMM: cuMemAlloc's own rounding is finer */
	r = d->vmm ? drv.MemGetAllocationGranularity(&d->gran, &d->prop,
						     CU_MEM_ALLOC_GRANULARITY_MINIMUM)
		   : CUDA_SUCCESS;
	if (r != CUDA_SUCCESS || d->gran == 0) {
		st = cuda_fail(label, "cuMemGetAllocationGranularity", r, VGPU_ERR_DRIVER);
		goto fail_ctx;
	}
	for (int i = 0; i < CUDA_SYNC_STREAMS; i++) {
		if ((st = cuda_stream_init(d, &d->sync[i])) < 0) {
			while (i-- > 0)
				cuda_stream_fini(&d->sync[i]);
			goto fail_ctx;
		}
	}
	cuda_devs[index] = d;
	*out = d;
	return VGPU_OK;

fail_ctx:
	drv.DevicePrimaryCtxRelease(d->cudev);
fail:
	cuda_dev_free(d);
	return st;
}

static vgpu_status cuda_device_open(int index, const struct vgpu_uri *uri,
				    struct vgpu_backend_dev **dev)
{
	struct cuda_dev *d = NULL;
	vgpu_status st = cuda_load();

	(void)uri; /* resource parameters (mem=, share=) are the engine's */
	if (st < 0)
		return st;
	pthread_mutex_lock(&drv_lock);
	st = cuda_device_open_locked(index, &d);
	pthread_mutex_unlock(&drv_lock);
	if (st < 0)
		return st;
	*dev = (struct vgpu_backend_dev *)d;
	return VGPU_OK;
}

static void cuda_device_close(struct vgpu_backend_dev *dev)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;

	if (!d)
		return;
	pthread_mutex_lock(&drv_lock);
	if (--d->refs > 0) {
		pthread_mutex_unlock(&drv_lock);
		return;
	}
	cuda_devs[d->ordinal] = NULL;
	pthread_mutex_unlock(&drv_lock);
	if (cuda_enter(d) == VGPU_OK) {
		for (int i = 0; i < CUDA_SYNC_STREAMS; i++)
			cuda_stream_fini(&d->sync[i]);
		/* Leave no dangling context current on this thread. */
		drv.CtxSetCurrent(NULL);
	}
	drv.DevicePrimaryCtxRelease(d->cudev);
	cuda_dev_free(d);
}

static vgpu_status cuda_device_info(struct vgpu_backend_dev *dev, struct vgpu_device_info *out)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	int major = 0, minor = 0, mp = 0, tpb = 0;
	size_t total = 0, freeb = 0, ctotal = 0;
	CUuuid uuid;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	CU_CALL(d, "cuDeviceGetName", VGPU_ERR_DRIVER,
		drv.DeviceGetName(out->name, (int)sizeof(out->name), d->cudev));
	out->name[sizeof(out->name) - 1] = '\0';
	CU_CALL(d, "cuDeviceGetUuid", VGPU_ERR_DRIVER, drv.DeviceGetUuid(&uuid, d->cudev));
	memcpy(out->uuid, uuid.bytes, sizeof(out->uuid));
	CU_CALL(d, "cuDeviceGetAttribute", VGPU_ERR_DRIVER,
		drv.DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d->cudev));
	CU_CALL(d, "cuDeviceGetAttribute", VGPU_ERR_DRIVER,
		drv.DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d->cudev));
	CU_CALL(d, "cuDeviceGetAttribute", VGPU_ERR_DRIVER,
		drv.DeviceGetAttribute(&mp, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d->cudev));
	CU_CALL(d, "cuDeviceGetAttribute", VGPU_ERR_DRIVER,
		drv.DeviceGetAttribute(&tpb, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, d->cudev));
	CU_CALL(d, "cuDeviceTotalMem", VGPU_ERR_DRIVER, drv.DeviceTotalMem(&ctotal, d->cudev));
	CU_CALL(d, "cuMemGetInfo", VGPU_ERR_DRIVER, drv.MemGetInfo(&freeb, &total));
	snprintf(out->backend, sizeof(out->backend), "cuda");
	snprintf(out->arch, sizeof(out->arch), "sm_%d%d", major, minor);
	out->cc_major = major;
	out->cc_minor = minor;
	out->multiprocessor_count = (uint32_t)mp;
	out->max_threads_per_block = (uint32_t)tpb;
	out->total_mem = ctotal ? ctotal : total;
	out->free_mem = freeb;
	out->device_index = d->ordinal;
	return VGPU_OK;
}

static size_t cuda_granularity(struct vgpu_backend_dev *dev)
{
	return ((struct cuda_dev *)dev)->gran;
}

/* Map fresh physical memory at [p, p+size) (reserved, unmapped). */
static vgpu_status cuda_map(struct cuda_dev *d, CUdeviceptr p, size_t size)
{
	CUmemGenericAllocationHandle h;
	CUresult r;
	char what[64];

	r = drv.MemCreate(&h, size, &d->prop, 0);
	if (r != CUDA_SUCCESS) {
		char b[32];
		snprintf(what, sizeof(what), "cuMemCreate(%s)",
			 vgpu__fmt_bytes(b, sizeof(b), size));
		return cuda_fail(d->label, what, r, VGPU_ERR_DRIVER);
	}
	r = drv.MemMap(p, size, 0, h, 0);
	/* The mapping keeps the physical memory alive; cuMemUnmap frees it. */
	drv.MemRelease(h);
	if (r != CUDA_SUCCESS)
		return cuda_fail(d->label, "cuMemMap", r, VGPU_ERR_DRIVER);
	r = drv.MemSetAccess(p, size, &d->access, 1);
	if (r != CUDA_SUCCESS) {
		drv.MemUnmap(p, size);
		return cuda_fail(d->label, "cuMemSetAccess", r, VGPU_ERR_DRIVER);
	}
	return VGPU_OK;
}

static vgpu_status cuda_mem_alloc(struct vgpu_backend_dev *dev, size_t size, vgpu_dptr *out)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	CUdeviceptr p = 0;
	CUresult r;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	if (size == 0 || size % d->gran)
		return vgpu__error(VGPU_ERR_INVALID, "%s: allocation size %zu is not a multiple"
				   " of the granularity %zu", d->label, size, d->gran);
	if (!d->vmm) {
		r = drv.MemAlloc(&p, size);
		if (r != CUDA_SUCCESS) {
			char what[64], b[32];
			snprintf(what, sizeof(what), "cuMemAlloc(%s)",
				 vgpu__fmt_bytes(b, sizeof(b), size));
			return cuda_fail(d->label, what, r, VGPU_ERR_DRIVER);
		}
		*out = (vgpu_dptr)p;
		return VGPU_OK;
	}
	r = drv.MemAddressReserve(&p, size, d->gran, 0, 0);
	if (r != CUDA_SUCCESS)
		return cuda_fail(d->label, "cuMemAddressReserve", r, VGPU_ERR_DRIVER);
	if ((st = cuda_map(d, p, size)) < 0) {
		drv.MemAddressFree(p, size);
		return st;
	}
	*out = (vgpu_dptr)p;
	return VGPU_OK;
}

/* Remove [p] from the evicted list; 1 if it was there. */
static int cuda_evicted_take(struct cuda_dev *d, CUdeviceptr p)
{
	int found = 0;

	pthread_mutex_lock(&d->lock);
	for (struct cuda_evicted **e = &d->evicted; *e; e = &(*e)->next) {
		if ((*e)->p == p) {
			struct cuda_evicted *x = *e;
			*e = x->next;
			free(x);
			found = 1;
			break;
		}
	}
	pthread_mutex_unlock(&d->lock);
	return found;
}

static vgpu_status cuda_mem_free(struct vgpu_backend_dev *dev, vgpu_dptr p, size_t size)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	if (!d->vmm) {
		CU_CALL(d, "cuMemFree", VGPU_ERR_DRIVER, drv.MemFree((CUdeviceptr)p));
		return VGPU_OK;
	}
	if (!cuda_evicted_take(d, (CUdeviceptr)p))
		CU_CALL(d, "cuMemUnmap", VGPU_ERR_DRIVER, drv.MemUnmap((CUdeviceptr)p, size));
	CU_CALL(d, "cuMemAddressFree", VGPU_ERR_DRIVER, drv.MemAddressFree((CUdeviceptr)p, size));
	return VGPU_OK;
}

/* Oversubscription (mem-swap): an allocation placed evicted, i.e. an
 * address reservation with nothing mapped, on the evicted list; mem_restore
 * maps it on first use. Released like an evicted allocation. */
static vgpu_status cuda_mem_reserve(struct vgpu_backend_dev *dev, size_t size, vgpu_dptr *out)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	struct cuda_evicted *e;
	CUdeviceptr p = 0;
	CUresult r;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	if (!d->vmm)
		return vgpu__error(VGPU_ERR_UNSUPPORTED, "%s: cannot place an allocation evicted:"
				   " the device does not support CUDA virtual memory management",
				   d->label);
	if (size == 0 || size % d->gran)
		return vgpu__error(VGPU_ERR_INVALID, "%s: allocation size %zu is not a multiple"
				   " of the granularity %zu", d->label, size, d->gran);
	e = malloc(sizeof(*e));
	if (!e)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory", d->label);
	r = drv.MemAddressReserve(&p, size, d->gran, 0, 0);
	if (r != CUDA_SUCCESS) {
		free(e);
		return cuda_fail(d->label, "cuMemAddressReserve", r, VGPU_ERR_DRIVER);
	}
	e->p = p;
	e->size = size;
	pthread_mutex_lock(&d->lock);
	e->next = d->evicted;
	d->evicted = e;
	pthread_mutex_unlock(&d->lock);
	*out = (vgpu_dptr)p;
	return VGPU_OK;
}

static vgpu_status cuda_mem_release(struct vgpu_backend_dev *dev, vgpu_dptr p, size_t size)
{
	return cuda_mem_free(dev, p, size); /* it knows evicted allocations */
}

static vgpu_status cuda_stream_create(struct vgpu_backend_dev *dev, void **bs)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	struct cuda_stream *cs;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	cs = malloc(sizeof(*cs));
	if (!cs)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory", d->label);
	if ((st = cuda_stream_init(d, cs)) < 0) {
		free(cs);
		return st;
	}
	*bs = cs;
	return VGPU_OK;
}

static void cuda_stream_destroy(struct vgpu_backend_dev *dev, void *bs)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;

	if (!bs || cuda_enter(d) < 0)
		return;
	cuda_stream_fini(bs);
	free(bs);
}

/* Lock held. Wait for the stream; name its last kernel in a launch error. */
static vgpu_status cuda_sync_locked(struct cuda_stream *cs)
{
	CUresult r = drv.StreamSynchronize(cs->s);
	vgpu_status st;

	if (r == CUDA_SUCCESS)
		return VGPU_OK;
	st = cuda_fail(cs->dev->label, "cuStreamSynchronize", r, VGPU_ERR_DRIVER);
	if (cs->last_kernel[0] && st == VGPU_ERR_LAUNCH) {
		char msg[VGPU_ERRMSG_MAX];
		snprintf(msg, sizeof(msg), "%s", vgpu__error_msg());
		vgpu__error(st, "%.400s (last kernel launched on the stream: '%s')", msg,
			    cs->last_kernel);
	}
	return st;
}

static vgpu_status cuda_stream_sync(struct vgpu_backend_dev *dev, void *bs)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	if (bs) {
		struct cuda_stream *cs = cuda_stream_get(d, bs);
		st = cuda_sync_locked(cs);
		cuda_stream_put(cs);
		return st;
	}
	/* Work on the synchronous streams completed, and reported its error,
	 * before its call returned: nothing is pending. */
	return VGPU_OK;
}

static vgpu_status cuda_memcpy_htod(struct vgpu_backend_dev *dev, void *bs, vgpu_dptr dst,
				    const void *src, size_t n)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	struct cuda_stream *cs;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	cs = cuda_stream_get(d, bs);
	st = cuda_finish(cs, bs, cuda_htod_locked(cs, (CUdeviceptr)dst, src, n));
	cuda_stream_put(cs);
	return st;
}

static vgpu_status cuda_memcpy_dtoh(struct vgpu_backend_dev *dev, void *bs, void *dst,
				    vgpu_dptr src, size_t n)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	struct cuda_stream *cs;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	cs = cuda_stream_get(d, bs);
	st = cuda_dtoh_locked(cs, dst, (CUdeviceptr)src, n);
	cuda_stream_put(cs);
	return st;
}

static vgpu_status cuda_memcpy_dtod(struct vgpu_backend_dev *dev, void *bs, vgpu_dptr dst,
				    vgpu_dptr src, size_t n)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	struct cuda_stream *cs;
	CUresult r;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	cs = cuda_stream_get(d, bs);
	r = drv.MemcpyDtoDAsync((CUdeviceptr)dst, (CUdeviceptr)src, n, cs->s);
	st = r != CUDA_SUCCESS ? cuda_fail(d->label, "cuMemcpyDtoDAsync", r, VGPU_ERR_DRIVER)
			       : cuda_finish(cs, bs, VGPU_OK);
	cuda_stream_put(cs);
	return st;
}

static vgpu_status cuda_memset(struct vgpu_backend_dev *dev, void *bs, vgpu_dptr dst,
			       uint8_t value, size_t n)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	struct cuda_stream *cs;
	CUresult r;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	cs = cuda_stream_get(d, bs);
	r = drv.MemsetD8Async((CUdeviceptr)dst, value, n, cs->s);
	st = r != CUDA_SUCCESS ? cuda_fail(d->label, "cuMemsetD8Async", r, VGPU_ERR_DRIVER)
			       : cuda_finish(cs, bs, VGPU_OK);
	cuda_stream_put(cs);
	return st;
}

/* Image kinds, by magic. */
enum { CUDA_IMG_PTX, CUDA_IMG_CUBIN, CUDA_IMG_FATBIN };

static int cuda_image_kind(const void *image, size_t size)
{
	const unsigned char *b = image;

	if (size >= 4 && memcmp(b, "\177ELF", 4) == 0)
		return CUDA_IMG_CUBIN;
	if (size >= 4 && ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
			  (uint32_t)b[3] << 24) == CUDA_FATBIN_MAGIC)
		return CUDA_IMG_FATBIN;
	return CUDA_IMG_PTX;
}

static vgpu_status cuda_module_load(struct vgpu_backend_dev *dev, const void *image,
				    size_t size, void **mod)
{
	static const char *kinds[] = { "PTX", "cubin", "fatbin" };
	struct cuda_dev *d = (struct cuda_dev *)dev;
	int kind = cuda_image_kind(image, size);
	char *copy = NULL, *log = NULL;
	const void *img = image;
	CUjit_option opt[2] = { CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
	void *val[2];
	CUmodule m = NULL;
	CUresult r;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	if (size == 0)
		return vgpu__error(VGPU_ERR_BAD_MODULE, "%s: empty module image", d->label);
	if (kind == CUDA_IMG_PTX) {
		if (memchr(image, '\0', size) == NULL) {
			/* PTX is text that the driver reads up to its NUL. */
			copy = malloc(size + 1);
			if (!copy)
				return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory",
						   d->label);
			memcpy(copy, image, size);
			copy[size] = '\0';
			img = copy;
		}
	} else if ((uintptr_t)image % 8) {
		/* ELF and fatbin headers are read as structs: keep them aligned
		 * (an image may come from a byte buffer of the wire protocol). */
		copy = malloc(size);
		if (!copy)
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory",
					   d->label);
		memcpy(copy, image, size);
		img = copy;
	}
	log = calloc(1, CUDA_JIT_LOG_SIZE);
	if (!log) {
		free(copy);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory", d->label);
	}
	val[0] = log;
	val[1] = (void *)(uintptr_t)CUDA_JIT_LOG_SIZE;
	r = drv.ModuleLoadDataEx(&m, img, 2, opt, val);
	free(copy);
	if (r != CUDA_SUCCESS) {
		size_t len = strnlen(log, CUDA_JIT_LOG_SIZE - 1);
		const char *desc = cuda_err_desc(r);
		log[len] = '\0';
		while (len > 0 && (log[len - 1] == '\n' || log[len - 1] == ' '))
			log[--len] = '\0';
		st = vgpu__error(cuda_status(r, VGPU_ERR_BAD_MODULE),
				 "%s: cuModuleLoadDataEx (%s, %zu bytes): %s%s%s%s%s%s", d->label,
				 kinds[kind], size, cuda_err_name(r), desc ? " (" : "",
				 desc ? desc : "", desc ? ")" : "", len ? ": " : "", log);
		free(log);
		return st;
	}
	free(log);
	*mod = m;
	return VGPU_OK;
}

static void cuda_module_unload(struct vgpu_backend_dev *dev, void *mod)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	CUresult r;

	if (!mod || cuda_enter(d) < 0)
		return;
	r = drv.ModuleUnload((CUmodule)mod);
	if (r != CUDA_SUCCESS && !cuda_sticky(r)) /* a faulted context takes it along */
		vgpu_warn("%s: cuModuleUnload: %s", d->label, cuda_err_name(r));
}

static vgpu_status cuda_function_get(struct vgpu_backend_dev *dev, void *mod, const char *name,
				     void **fn, struct vgpu_func_sig *sig)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	struct cuda_func *cf;
	CUfunction f = NULL;
	CUresult r;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	r = drv.ModuleGetFunction(&f, (CUmodule)mod, name);
	if (r == CUDA_ERROR_NOT_FOUND)
		return vgpu__error(VGPU_ERR_NOT_FOUND, "%s: kernel '%s' not found in the module"
				   " (declare it extern \"C\" so its name is not mangled)",
				   d->label, name);
	if (r != CUDA_SUCCESS) {
		char what[300];
		snprintf(what, sizeof(what), "cuModuleGetFunction(%s)", name);
		return cuda_fail(d->label, what, r, VGPU_ERR_NOT_FOUND);
	}
	if (sig) {
		memset(sig, 0, sizeof(*sig));
		if (drv.FuncGetParamInfo) {
			/* Probe parameters until the index is out of range. */
			uint32_t i;
			for (i = 0; i <= VGPU_MAX_KERNEL_ARGS; i++) {
				size_t off = 0, psize = 0;
				r = drv.FuncGetParamInfo(f, i, &off, &psize);
				if (r == CUDA_ERROR_INVALID_VALUE)
					break;
				if (r != CUDA_SUCCESS) {
					/* Not worth refusing the kernel for: launch it
					 * unchecked. */
					vgpu_warn("%s: cuFuncGetParamInfo(%s, %u): %s; its arguments"
						  " will not be checked", d->label, name, i,
						  cuda_err_name(r));
					break;
				}
				if (i == VGPU_MAX_KERNEL_ARGS)
					return vgpu__error(VGPU_ERR_UNSUPPORTED,
							   "%s: kernel '%s' has more than %d"
							   " parameters", d->label, name,
							   VGPU_MAX_KERNEL_ARGS);
				sig->type[i] = 0; /* any type of that size */
				sig->size[i] = (uint32_t)psize;
			}
			if (r == CUDA_ERROR_INVALID_VALUE) {
				sig->nparams = i;
				sig->known = 1;
			} else {
				memset(sig, 0, sizeof(*sig));
			}
		}
	}
	cf = malloc(sizeof(*cf) + strlen(name) + 1);
	if (!cf)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory", d->label);
	cf->f = f;
	memcpy(cf->name, name, strlen(name) + 1);
	*fn = cf;
	return VGPU_OK;
}

static void cuda_function_free(struct vgpu_backend_dev *dev, void *fn)
{
	free(fn);
}

static vgpu_status cuda_launch(struct vgpu_backend_dev *dev, void *bs, void *fn,
			       vgpu_dim3 grid, vgpu_dim3 block, size_t shmem,
			       const vgpu_arg *args, unsigned int nargs)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	struct cuda_stream *cs;
	void *params[VGPU_MAX_KERNEL_ARGS + 1];
	struct cuda_func *cf = fn;
	CUfunction f = cf->f;
	CUresult r;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	if (nargs > VGPU_MAX_KERNEL_ARGS)
		return vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: %u kernel arguments (at most %d)",
				   d->label, nargs, VGPU_MAX_KERNEL_ARGS);
	/* kernelParams[i] points at the value of argument i; the driver copies
	 * the values (sizes from the kernel's own parameter list) at launch. */
	for (unsigned int i = 0; i < nargs; i++) {
		const vgpu_arg *a = &args[i];
		switch (a->type) {
		case VGPU_ARG_BYTES:
			params[i] = (void *)(uintptr_t)a->v.ptr;
			break;
		case VGPU_ARG_DPTR:
		case VGPU_ARG_I32:
		case VGPU_ARG_U32:
		case VGPU_ARG_I64:
		case VGPU_ARG_U64:
		case VGPU_ARG_F32:
		case VGPU_ARG_F64:
			/* union members all start at the union's address */
			params[i] = (void *)(uintptr_t)&a->v;
			break;
		default:
			return vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: argument %u has unknown"
					   " type %u", d->label, i, a->type);
		}
	}
	params[nargs] = NULL;
	if (shmem > 48 * 1024) {
		/* Dynamic shared memory above 48 KiB must be opted in per kernel. */
		r = drv.FuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
					 (int)shmem);
		if (r != CUDA_SUCCESS)
			return cuda_fail(d->label, "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
					 r, VGPU_ERR_LAUNCH);
	}
	cs = cuda_stream_get(d, bs);
	r = drv.LaunchKernel(f, grid.x, grid.y, grid.z, block.x, block.y, block.z,
			     (unsigned int)shmem, cs->s, nargs ? params : NULL, NULL);
	if (r != CUDA_SUCCESS) {
		char what[128];
		snprintf(what, sizeof(what), "cuLaunchKernel(%.64s)", cf->name);
		st = cuda_fail(d->label, what, r, VGPU_ERR_LAUNCH);
	} else {
		snprintf(cs->last_kernel, sizeof(cs->last_kernel), "%s", cf->name);
		st = cuda_finish(cs, bs, VGPU_OK);
	}
	cuda_stream_put(cs);
	return st;
}

static vgpu_status cuda_mem_evict(struct vgpu_backend_dev *dev, vgpu_dptr p, size_t size,
				  void *host)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	struct cuda_evicted *e;
	struct cuda_stream *cs;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	if (!d->vmm)
		return vgpu__error(VGPU_ERR_UNSUPPORTED, "%s: cannot evict: the device does not"
				   " support CUDA virtual memory management", d->label);
	e = malloc(sizeof(*e));
	if (!e)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: out of host memory", d->label);
	/* Work on other streams may still use the buffer: wait for all of it. */
	CUresult r = drv.CtxSynchronize();
	if (r != CUDA_SUCCESS) {
		free(e);
		return cuda_fail(d->label, "cuCtxSynchronize", r, VGPU_ERR_DRIVER);
	}
	cs = cuda_stream_get(d, NULL);
	st = cuda_dtoh_locked(cs, host, (CUdeviceptr)p, size);
	cuda_stream_put(cs);
	if (st < 0) {
		free(e);
		return st;
	}
	r = drv.MemUnmap((CUdeviceptr)p, size);
	if (r != CUDA_SUCCESS) {
		free(e);
		return cuda_fail(d->label, "cuMemUnmap", r, VGPU_ERR_DRIVER);
	}
	e->p = (CUdeviceptr)p;
	e->size = size;
	pthread_mutex_lock(&d->lock);
	e->next = d->evicted;
	d->evicted = e;
	pthread_mutex_unlock(&d->lock);
	return VGPU_OK;
}

static vgpu_status cuda_mem_restore(struct vgpu_backend_dev *dev, vgpu_dptr p, size_t size,
				    const void *host)
{
	struct cuda_dev *d = (struct cuda_dev *)dev;
	vgpu_status st;

	if ((st = cuda_enter(d)) < 0)
		return st;
	if (!d->vmm || !cuda_evicted_take(d, (CUdeviceptr)p))
		return vgpu__error(VGPU_ERR_BAD_ADDRESS, "%s: restore of 0x%" PRIx64
				   ": not an evicted allocation", d->label, p);
	st = cuda_map(d, (CUdeviceptr)p, size);
	if (st == VGPU_OK) {
		struct cuda_stream *cs = cuda_stream_get(d, NULL);
		st = cuda_finish(cs, NULL, cuda_htod_locked(cs, (CUdeviceptr)p, host, size));
		cuda_stream_put(cs);
		if (st < 0)
			drv.MemUnmap((CUdeviceptr)p, size);
	}
	if (st < 0) {
		/* Still evicted: the reservation stays, the bytes are in host. */
		struct cuda_evicted *e = malloc(sizeof(*e));
		if (e) {
			e->p = (CUdeviceptr)p;
			e->size = size;
			pthread_mutex_lock(&d->lock);
			e->next = d->evicted;
			d->evicted = e;
			pthread_mutex_unlock(&d->lock);
		}
	}
	return st;
}

const struct vgpu_backend_ops vgpu__cuda_backend = {
	.size = sizeof(struct vgpu_backend_ops),
	.name = "cuda",
	.device_count = cuda_device_count,
	.device_open = cuda_device_open,
	.device_close = cuda_device_close,
	.device_info = cuda_device_info,
	.granularity = cuda_granularity,
	.mem_alloc = cuda_mem_alloc,
	.mem_free = cuda_mem_free,
	.stream_create = cuda_stream_create,
	.stream_destroy = cuda_stream_destroy,
	.stream_sync = cuda_stream_sync,
	.memcpy_htod = cuda_memcpy_htod,
	.memcpy_dtoh = cuda_memcpy_dtoh,
	.memcpy_dtod = cuda_memcpy_dtod,
	.memset = cuda_memset,
	.module_load = cuda_module_load,
	.module_unload = cuda_module_unload,
	.function_get = cuda_function_get,
	.function_free = cuda_function_free,
	.launch = cuda_launch,
	.mem_evict = cuda_mem_evict,
	.mem_restore = cuda_mem_restore,
	.mem_reserve = cuda_mem_reserve,
	.mem_release = cuda_mem_release,
};
