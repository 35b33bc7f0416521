/* SPDX-License-Identifier: MIT */
/*
 * vgpu.h - libvgpu public API.
 *
 * A virtual GPU handle (vgpu_t) is opened by URI: "cpu:0" (emulated device in
 * this process), "cuda:0" (real GPU in this process), "tcp://host:7100/0",
 * "unix:///run/vgpud.sock/0", ... Every call returns a vgpu_status: VGPU_OK
 * (0) or a negative error code. vgpu_last_error() returns a human message for
 * the last failed call made by the calling thread.
 *
 * All functions are thread-safe: a handle may be used from several threads.
 */
#ifndef VGPU_H
#define VGPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(VGPU_API)
#define VGPU_API __attribute__((visibility("default")))
#elif !defined(VGPU_API)
#define VGPU_API
#endif

#define VGPU_VERSION_MAJOR 0
#define VGPU_VERSION_MINOR 1
#define VGPU_VERSION_PATCH 0

/*
 * Status codes. Values are fixed forever: new codes are added at the end,
 * never renumbered.
 */
typedef enum vgpu_status {
	VGPU_OK = 0,
	VGPU_ERR_INVALID = -1,        /* bad argument */
	VGPU_ERR_NO_HOST_MEMORY = -2, /* host allocation failed */
	VGPU_ERR_OUT_OF_MEMORY = -3,  /* device memory, quota or limit */
	VGPU_ERR_BAD_URI = -4,        /* URI could not be parsed/used */
	VGPU_ERR_NO_DEVICE = -5,      /* no such device / backend missing */
	VGPU_ERR_BAD_HANDLE = -6,     /* stream/event/module/function id unknown */
	VGPU_ERR_BAD_ADDRESS = -7,    /* device address not allocated/out of range */
	VGPU_ERR_NOT_FOUND = -8,      /* function/symbol/plugin not found */
	VGPU_ERR_BAD_MODULE = -9,     /* module image rejected */
	VGPU_ERR_KERNEL_ARGS = -10,   /* launch args do not match the kernel */
	VGPU_ERR_LAUNCH = -11,        /* kernel launch failed */
	VGPU_ERR_NOT_READY = -12,     /* query: work still pending */
	VGPU_ERR_UNSUPPORTED = -13,   /* not supported by this backend/build */
	VGPU_ERR_CONNECTION = -14,    /* lost or failed connection */
	VGPU_ERR_PROTOCOL = -15,      /* malformed or incompatible peer */
	VGPU_ERR_AUTH = -16,          /* authentication refused */
	VGPU_ERR_DRIVER = -17,        /* backend driver error */
	VGPU_ERR_BUSY = -18,          /* admission refused / capacity */
	VGPU_ERR_TIMEOUT = -19,       /* deadline passed */
	VGPU_ERR_PLUGIN = -20,        /* plugin load/parameter error */
	VGPU_ERR_INTERNAL = -21,      /* bug: please report */
	VGPU_ERR_CLOSED = -22,        /* handle being closed / server stopping */
} vgpu_status;

/* Name of a status ("VGPU_ERR_INVALID") and its description. Never NULL. */
VGPU_API const char *vgpu_status_name(vgpu_status st);
VGPU_API const char *vgpu_strerror(vgpu_status st);

/*
 * Message describing the last failure of a vgpu_* call on this thread
 * ("cpu:0: out of device memory: 256 MiB device, 240 MiB in use, 64 MiB asked").
 * Each public call that fails replaces it; a successful call leaves it.
 * Never NULL; "" when no error has occurred on this thread.
 */
VGPU_API const char *vgpu_last_error(void);
/* Status of that last failure (VGPU_OK when none). */
VGPU_API vgpu_status vgpu_last_status(void);

/* Library version as "MAJOR.MINOR.PATCH". */
VGPU_API const char *vgpu_version(void);

/* ------------------------------------------------------------------------ */
/* Handles                                                                  */

typedef struct vgpu vgpu_t;                 /* a virtual GPU handle */
typedef struct vgpu_stream vgpu_stream;     /* in-order work queue */
typedef struct vgpu_event vgpu_event;       /* stream marker with a time */
typedef struct vgpu_module vgpu_module;     /* loaded code image */
typedef struct vgpu_function vgpu_function; /* kernel of a module */

/* Device address. 0 is never a valid allocation. */
typedef uint64_t vgpu_dptr;

typedef struct vgpu_dim3 {
	uint32_t x, y, z;
} vgpu_dim3;

static inline vgpu_dim3 vgpu_dim3_make(uint32_t x, uint32_t y, uint32_t z)
{
	vgpu_dim3 d = { x, y, z };
	return d;
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                  */

/*
 * Options for vgpu_open_ex(). Set .size = sizeof(struct vgpu_open_opts)
 * (VGPU_OPEN_OPTS_INIT does); fields past .size are taken as zero, so the
 * struct can grow at its end without breaking old callers.
 */
struct vgpu_open_opts {
	size_t size;
	unsigned int flags;  /* reserved, 0 */
	const char *tenant;  /* overrides ?tenant= (remote) */
	const char *token;   /* overrides ?token= and $VGPU_TOKEN */
	const char *plugins; /* in-process: "sched:fair,mem-quota:limit=1G" */
	uint32_t timeout_ms; /* connect/admission timeout; 0 = default */
};
#define VGPU_OPEN_OPTS_INIT { sizeof(struct vgpu_open_opts), 0, NULL, NULL, NULL, 0 }

/*
 * Open a virtual GPU. uri NULL means $VGPU_URI, else "cpu:0".
 * On error *v is set to NULL.
 */
VGPU_API vgpu_status vgpu_open(vgpu_t **v, const char *uri);
VGPU_API vgpu_status vgpu_open_ex(vgpu_t **v, const char *uri,
				  const struct vgpu_open_opts *opts);
/*
 * Close a handle: waits for its queued work, then releases every stream,
 * event, module and allocation it still holds. NULL is ignored. Safe after
 * the connection to a server was lost.
 */
VGPU_API void vgpu_close(vgpu_t *v);

/* The URI the handle was opened with (normalised, without secrets). */
VGPU_API const char *vgpu_uri(const vgpu_t *v);

/* ------------------------------------------------------------------------ */
/* Device information                                                       */

/*
 * Filled by vgpu_device_info(). Fields are only appended; the reserved tail
 * keeps the size stable for a long while.
 */
struct vgpu_device_info {
	char name[128];        /* "libvgpu cpu device 0", "NVIDIA H100 ..." */
	char backend[16];      /* "cpu", "cuda" */
	char arch[16];         /* "cpu" or "sm_90" */
	int cc_major, cc_minor;/* compute capability; 0.0 for cpu */
	uint32_t multiprocessor_count;
	uint32_t max_threads_per_block;
	uint64_t total_mem;    /* bytes this handle may use */
	uint64_t free_mem;     /* bytes still available to this handle */
	uint8_t uuid[16];
	int device_index;      /* index on its backend/server */
	uint32_t flags;        /* VGPU_DEVICE_* */
	/* memory residency (oversubscription); zero when not in use */
	uint64_t mem_resident;
	uint64_t mem_on_host;
	uint64_t swapped_in;
	uint64_t swapped_out;
	uint64_t evictions;
	/* the same for the whole device (all sessions) */
	uint64_t dev_mem_resident;
	uint64_t dev_mem_on_host;
	uint64_t dev_swapped_in;
	uint64_t dev_swapped_out;
	uint64_t dev_evictions;
	uint8_t reserved[160];
};

#define VGPU_DEVICE_REMOTE 0x1u /* reached through a vgpud */
#define VGPU_DEVICE_SWAP 0x2u   /* oversubscribed (mem-swap): total_mem includes
				 * host memory that holds evicted buffers */

VGPU_API vgpu_status vgpu_device_info(vgpu_t *v, struct vgpu_device_info *out);

/* Wait until all work of this handle, on every stream, has completed. */
VGPU_API vgpu_status vgpu_synchronize(vgpu_t *v);

/* ------------------------------------------------------------------------ */
/* Memory                                                                   */

VGPU_API vgpu_status vgpu_mem_alloc(vgpu_t *v, size_t size, vgpu_dptr *out);
/* Waits for the handle's queued work (as cuMemFree), then frees. */
VGPU_API vgpu_status vgpu_mem_free(vgpu_t *v, vgpu_dptr p);

/*
 * Advice on an allocation (p: its start). With an oversubscribing memory
 * plugin (mem-swap) allocations may be evicted to host memory between the
 * work items that use them; only buffers passed as kernel pointer arguments
 * or named by copies are made resident before work runs. A kernel that
 * follows pointers stored in device memory must find those buffers pinned:
 *   VGPU_ADVISE_PIN    make it resident now and never evict it
 *                      (VGPU_ERR_OUT_OF_MEMORY if it cannot fit);
 *   VGPU_ADVISE_UNPIN  it may be evicted again.
 * Without such a plugin every allocation is always resident and advice is
 * accepted and has no effect. See vgpu-memory(7).
 */
enum vgpu_mem_advice {
	VGPU_ADVISE_PIN = 1,
	VGPU_ADVISE_UNPIN = 2,
};
VGPU_API vgpu_status vgpu_mem_advise(vgpu_t *v, vgpu_dptr p, unsigned int advice);

/*
 * Copies and sets. A NULL stream means synchronous: the call returns when the
 * operation is complete. On a stream the call returns at once; the operation
 * runs in stream order and its error, if any, is reported by the next
 * synchronizing call on that stream (vgpu_stream_synchronize, an event
 * synchronize of a later record, vgpu_synchronize).
 *
 * Asynchronous copies from or to host memory: the host buffer must stay
 * valid (and, for htod, unchanged) until the stream has passed the copy.
 */
VGPU_API vgpu_status vgpu_memcpy_htod(vgpu_t *v, vgpu_dptr dst, const void *src,
				      size_t n, vgpu_stream *s);
VGPU_API vgpu_status vgpu_memcpy_dtoh(vgpu_t *v, void *dst, vgpu_dptr src,
				      size_t n, vgpu_stream *s);
VGPU_API vgpu_status vgpu_memcpy_dtod(vgpu_t *v, vgpu_dptr dst, vgpu_dptr src,
				      size_t n, vgpu_stream *s);
VGPU_API vgpu_status vgpu_memset(vgpu_t *v, vgpu_dptr dst, uint8_t value,
				 size_t n, vgpu_stream *s);

/* ------------------------------------------------------------------------ */
/* Streams and events                                                       */

VGPU_API vgpu_status vgpu_stream_create(vgpu_t *v, vgpu_stream **s, unsigned int flags);
/* Waits for the stream's work, then destroys it. NULL is ignored. */
VGPU_API vgpu_status vgpu_stream_destroy(vgpu_stream *s);
/* Waits for the stream; returns the first error of its async work since the
 * last synchronization, and clears it. */
VGPU_API vgpu_status vgpu_stream_synchronize(vgpu_stream *s);
/* VGPU_OK if all work is done, VGPU_ERR_NOT_READY if not (or the error). */
VGPU_API vgpu_status vgpu_stream_query(vgpu_stream *s);
/* Work queued on s after this call waits until e's latest record completes. */
VGPU_API vgpu_status vgpu_stream_wait_event(vgpu_stream *s, vgpu_event *e);

VGPU_API vgpu_status vgpu_event_create(vgpu_t *v, vgpu_event **e, unsigned int flags);
VGPU_API vgpu_status vgpu_event_destroy(vgpu_event *e);
/* Record e on s (NULL stream: record now). */
VGPU_API vgpu_status vgpu_event_record(vgpu_event *e, vgpu_stream *s);
VGPU_API vgpu_status vgpu_event_synchronize(vgpu_event *e);
VGPU_API vgpu_status vgpu_event_query(vgpu_event *e);
/* Milliseconds between two completed records of the same handle. */
VGPU_API vgpu_status vgpu_event_elapsed_ms(float *ms, vgpu_event *start, vgpu_event *end);

/* ------------------------------------------------------------------------ */
/* Modules and kernels                                                      */

/*
 * Load a code image. cpu backend: the bytes of a shared object of host
 * kernels (see vgpu/kernel.h). cuda backend: PTX (NUL-terminated text),
 * cubin or fatbin.
 */
VGPU_API vgpu_status vgpu_module_load(vgpu_t *v, const void *image, size_t size,
				      vgpu_module **m);
/* Read a file and load it. */
VGPU_API vgpu_status vgpu_module_load_file(vgpu_t *v, const char *path, vgpu_module **m);
/* Waits for the handle's queued work, then unloads. Its functions become invalid. */
VGPU_API vgpu_status vgpu_module_unload(vgpu_module *m);
VGPU_API vgpu_status vgpu_module_function(vgpu_module *m, const char *name,
					  vgpu_function **f);

/* Typed kernel arguments. */
enum vgpu_arg_type {
	VGPU_ARG_NONE = 0,
	VGPU_ARG_DPTR = 1, /* device pointer (vgpu_dptr) */
	VGPU_ARG_I32 = 2,
	VGPU_ARG_U32 = 3,
	VGPU_ARG_I64 = 4,
	VGPU_ARG_U64 = 5,
	VGPU_ARG_F32 = 6,
	VGPU_ARG_F64 = 7,
	VGPU_ARG_BYTES = 8, /* by-value struct: size bytes at .v.ptr */
};

typedef struct vgpu_arg {
	uint32_t type; /* enum vgpu_arg_type */
	uint32_t size; /* bytes: 8 for DPTR, 4 for I32, ..., n for BYTES */
	union {
		vgpu_dptr dptr;
		int32_t i32;
		uint32_t u32;
		int64_t i64;
		uint64_t u64;
		float f32;
		double f64;
		const void *ptr;
	} v;
} vgpu_arg;

#define VGPU__ARG(t, sz, field, val) \
	do { a.type = (t); a.size = (sz); a.v.field = (val); } while (0)

static inline vgpu_arg vgpu_arg_dptr(vgpu_dptr p)
{ vgpu_arg a; a.v.u64 = 0; VGPU__ARG(VGPU_ARG_DPTR, 8, dptr, p); return a; }
static inline vgpu_arg vgpu_arg_i32(int32_t x)
{ vgpu_arg a; a.v.u64 = 0; VGPU__ARG(VGPU_ARG_I32, 4, i32, x); return a; }
static inline vgpu_arg vgpu_arg_u32(uint32_t x)
{ vgpu_arg a; a.v.u64 = 0; VGPU__ARG(VGPU_ARG_U32, 4, u32, x); return a; }
static inline vgpu_arg vgpu_arg_i64(int64_t x)
{ vgpu_arg a; a.v.u64 = 0; VGPU__ARG(VGPU_ARG_I64, 8, i64, x); return a; }
static inline vgpu_arg vgpu_arg_u64(uint64_t x)
{ vgpu_arg a; a.v.u64 = 0; VGPU__ARG(VGPU_ARG_U64, 8, u64, x); return a; }
static inline vgpu_arg vgpu_arg_f32(float x)
{ vgpu_arg a; a.v.u64 = 0; VGPU__ARG(VGPU_ARG_F32, 4, f32, x); return a; }
static inline vgpu_arg vgpu_arg_f64(double x)
{ vgpu_arg a; a.v.u64 = 0; VGPU__ARG(VGPU_ARG_F64, 8, f64, x); return a; }
static inline vgpu_arg vgpu_arg_bytes(const void *p, size_t n)
{ vgpu_arg a; a.v.u64 = 0; VGPU__ARG(VGPU_ARG_BYTES, (uint32_t)n, ptr, p); return a; }

#define VGPU_MAX_KERNEL_ARGS 64
#define VGPU_MAX_ARG_BYTES 4096 /* total by-value bytes of one launch */

/*
 * Launch f over grid x block with shmem bytes of per-block shared memory.
 * NULL stream: synchronous. Arguments are copied before the call returns.
 * Arguments that do not match the kernel's parameters (count, types, sizes)
 * give VGPU_ERR_KERNEL_ARGS at once; a pointer argument must lie inside one of
 * this handle's allocations (or be 0).
 */
VGPU_API vgpu_status vgpu_launch(vgpu_t *v, vgpu_function *f, vgpu_dim3 grid,
				 vgpu_dim3 block, size_t shmem, vgpu_stream *s,
				 const vgpu_arg *args, unsigned int nargs);

#ifdef __cplusplus
}
#endif
#endif /* VGPU_H */
