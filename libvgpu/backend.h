/* SPDX-License-Identifier: MIT */
/*
 * backend.h - the interface between the engine and a device backend.
 * Internal: never installed.
 *
 * A backend drives devices. The engine calls it from its worker threads and
 * from callers' threads (synchronous NULL-stream work); a backend must be
 * thread-safe per device. Execution calls (memcpy, memset, launch) may be
 * asynchronous on the backend stream `bs` (cuda); the engine calls
 * stream_sync(bs) when it needs completion (after each work item). A NULL bs
 * means "the device's own synchronous stream".
 *
 * Errors: return a negative vgpu_status after setting the thread's message
 * with vgpu__error() (error.h); the engine adds context.
 */
#ifndef VGPU_BACKEND_H
#define VGPU_BACKEND_H

#include "vgpu.h"
#include "uri.h"

struct vgpu_backend_dev; /* backend's device, opaque to the engine */

/* What the engine knows of a kernel's parameters (from the backend). */
struct vgpu_func_sig {
	int known;        /* 0: the backend cannot tell; args passed unchecked */
	uint32_t nparams;
	uint32_t type[VGPU_MAX_KERNEL_ARGS]; /* enum vgpu_arg_type, 0 = any type of that size */
	uint32_t size[VGPU_MAX_KERNEL_ARGS];
};

struct vgpu_backend_ops {
	size_t size; /* sizeof(struct vgpu_backend_ops) */
	const char *name; /* "cpu", "cuda" */

	/* Number of devices, or a negative status with the message set. */
	int (*device_count)(void);
	/* Open device `index` with URI parameters (mem=, ...). */
	vgpu_status (*device_open)(int index, const struct vgpu_uri *uri,
				   struct vgpu_backend_dev **dev);
	void (*device_close)(struct vgpu_backend_dev *dev);
	/* name, arch, cc, multiprocessor_count, total_mem, uuid,... free_mem is
	 * the device's physical free memory. */
	vgpu_status (*device_info)(struct vgpu_backend_dev *dev,
				   struct vgpu_device_info *out);
	/* Allocation granularity in bytes (sizes are rounded up to it). */
	size_t (*granularity)(struct vgpu_backend_dev *dev);

	/* Memory: allocate size bytes (a multiple of granularity). */
	vgpu_status (*mem_alloc)(struct vgpu_backend_dev *dev, size_t size,
				 vgpu_dptr *out);
	vgpu_status (*mem_free)(struct vgpu_backend_dev *dev, vgpu_dptr p, size_t size);

	/* Streams (optional: NULL means the backend has only its sync stream). */
	vgpu_status (*stream_create)(struct vgpu_backend_dev *dev, void **bs);
	void (*stream_destroy)(struct vgpu_backend_dev *dev, void *bs);
	/* Wait for all work issued on bs; return its first error. */
	vgpu_status (*stream_sync)(struct vgpu_backend_dev *dev, void *bs);

	/* Execution. Ranges are already validated by the engine. */
	vgpu_status (*memcpy_htod)(struct vgpu_backend_dev *dev, void *bs,
				   vgpu_dptr dst, const void *src, size_t n);
	vgpu_status (*memcpy_dtoh)(struct vgpu_backend_dev *dev, void *bs,
				   void *dst, vgpu_dptr src, size_t n);
	vgpu_status (*memcpy_dtod)(struct vgpu_backend_dev *dev, void *bs,
				   vgpu_dptr dst, vgpu_dptr src, size_t n);
	vgpu_status (*memset)(struct vgpu_backend_dev *dev, void *bs,
			      vgpu_dptr dst, uint8_t value, size_t n);

	/* Modules and functions. */
	vgpu_status (*module_load)(struct vgpu_backend_dev *dev, const void *image,
				   size_t size, void **mod);
	void (*module_unload)(struct vgpu_backend_dev *dev, void *mod);
	vgpu_status (*function_get)(struct vgpu_backend_dev *dev, void *mod,
				    const char *name, void **fn,
				    struct vgpu_func_sig *sig);
	/* Release what function_get returned (optional). Called before the
	 * module is unloaded. */
	void (*function_free)(struct vgpu_backend_dev *dev, void *fn);
	/* Args are validated against sig by the engine; DPTR values are device
	 * addresses inside allocations of the launching session. */
	vgpu_status (*launch)(struct vgpu_backend_dev *dev, void *bs, void *fn,
			      vgpu_dim3 grid, vgpu_dim3 block, size_t shmem,
			      const vgpu_arg *args, unsigned int nargs);

	/* Residency, for the memory plugin (optional; NULL = not supported):
	 * evict copies [p, p+size) to host and releases its physical backing
	 * while the address stays reserved; restore maps backing again at the
	 * same address and copies host back. */
	vgpu_status (*mem_evict)(struct vgpu_backend_dev *dev, vgpu_dptr p,
				 size_t size, void *host);
	vgpu_status (*mem_restore)(struct vgpu_backend_dev *dev, vgpu_dptr p,
				   size_t size, const void *host);
	/* Oversubscription (optional; NULL = not supported): reserve size bytes
	 * of device addresses without backing, i.e. an allocation in the state
	 * mem_evict leaves (mem_restore backs it); and free an allocation that
	 * is in that state (mem_free frees backed ones). */
	vgpu_status (*mem_reserve)(struct vgpu_backend_dev *dev, size_t size,
				   vgpu_dptr *out);
	vgpu_status (*mem_release)(struct vgpu_backend_dev *dev, vgpu_dptr p,
				   size_t size);
	/* Host address of device bytes [p, p+n) (validated and resident) when
	 * the device's memory is host memory that may be read and written
	 * directly (cpu), so that copies can skip staging; optional, NULL for
	 * devices whose memory the host cannot address (cuda). */
	void *(*host_ptr)(struct vgpu_backend_dev *dev, vgpu_dptr p, size_t n);
};

extern const struct vgpu_backend_ops vgpu__cpu_backend;
#ifdef VGPU_HAVE_CUDA_BACKEND
extern const struct vgpu_backend_ops vgpu__cuda_backend;
#endif

/* Find a backend by name ("cpu", "cuda"); NULL if not built in. */
const struct vgpu_backend_ops *vgpu__backend_find(const char *name);

#endif
