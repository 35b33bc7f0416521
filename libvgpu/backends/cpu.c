/* SPDX-License-Identifier: MIT */
/*
 * cpu.c - the emulated device.
 *
 * Each cpu device owns a window of device addresses (1 TiB at
 * 0x100000000000 + index * 1 TiB) backed by a private reservation of host
 * virtual memory (PROT_NONE, MAP_NORESERVE). An allocation takes a range of
 * the window and makes its pages accessible; a free wipes them
 * (MADV_DONTNEED) and makes them inaccessible again, so a stale pointer faults
 * rather than reading another tenant's data. Device memory is limited by
 * ?devmem= (or ?mem= when no memory plugin runs; default 1 GiB, fixed by the
 * first open of the device) independently of the window, so addresses can be
 * handed out beyond physical memory once buffers can be evicted (mem_evict /
 * mem_restore keep the address and move the bytes).
 *
 * Modules are shared objects of host kernels (vgpu/kernel.h), loaded from
 * memory through memfd_create + dlopen. A launch calls the kernel once per
 * block through libffi with its typed arguments, device pointers translated
 * to host addresses.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <ffi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "backend.h"
#include "error.h"
#include "vgpu/kernel.h"

#define CPU_MAX_DEVICES 8
#define CPU_WINDOW (1ull << 40)
#define CPU_DEV_BASE(i) (0x100000000000ull + (uint64_t)(i) * CPU_WINDOW)
#define CPU_PAGE 4096ull
#define CPU_DEFAULT_MEM (1ull << 30)
#define CPU_MAX_SHMEM (1u << 20)
#define CPU_MAX_THREADS_PER_BLOCK 1024

struct extent {
	uint64_t off, len;
};

struct vgpu_backend_dev {
	int index;
	char name[32];          /* "cpu:0" */
	uint64_t mem_limit;     /* bytes of device memory */
	uint8_t *host_base;     /* reservation */
	uint64_t window;        /* reservation size */
	pthread_mutex_t lock;
	uint64_t used;          /* bytes backed (allocated and resident) */
	struct extent *free_ext; /* sorted, coalesced free ranges of the window */
	size_t nfree, capfree;
};

struct cpu_module {
	void *dl;
};

struct cpu_function {
	const struct vgpu_kernel_desc *desc;
	ffi_cif cif;
	ffi_type *types[VGPU_MAX_KERNEL_ARGS + 1];
};

static int cpu_device_count(void)
{
	return CPU_MAX_DEVICES;
}

static vgpu_status ext_add(struct vgpu_backend_dev *d, uint64_t off, uint64_t len)
{
	size_t i = 0;

	while (i < d->nfree && d->free_ext[i].off < off)
		i++;
	/* merge with previous / next */
	if (i > 0 && d->free_ext[i - 1].off + d->free_ext[i - 1].len == off) {
		d->free_ext[i - 1].len += len;
		if (i < d->nfree && off + len == d->free_ext[i].off) {
			d->free_ext[i - 1].len += d->free_ext[i].len;
			memmove(&d->free_ext[i], &d->free_ext[i + 1],
				(d->nfree - i - 1) * sizeof(*d->free_ext));
			d->nfree--;
		}
		return VGPU_OK;
	}
	if (i < d->nfree && off + len == d->free_ext[i].off) {
		d->free_ext[i].off = off;
		d->free_ext[i].len += len;
		return VGPU_OK;
	}
	if (d->nfree == d->capfree) {
		size_t ncap = d->capfree ? d->capfree * 2 : 64;
		struct extent *n = realloc(d->free_ext, ncap * sizeof(*n));

		if (!n)
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: no host memory", d->name);
		d->free_ext = n;
		d->capfree = ncap;
	}
	memmove(&d->free_ext[i + 1], &d->free_ext[i], (d->nfree - i) * sizeof(*d->free_ext));
	d->free_ext[i].off = off;
	d->free_ext[i].len = len;
	d->nfree++;
	return VGPU_OK;
}

static vgpu_status cpu_device_open(int index, const struct vgpu_uri *uri,
				   struct vgpu_backend_dev **out)
{
	struct vgpu_backend_dev *d;
	uint64_t mem;
	const char *key;
	vgpu_status st;

	if (index < 0 || index >= CPU_MAX_DEVICES)
		return vgpu__error(VGPU_ERR_NO_DEVICE, "cpu:%d: no such device (cpu:0 to cpu:%d)",
				   index, CPU_MAX_DEVICES - 1);
	/* devmem= is the device size; mem= too when it is not a session quota
	 * (the engine drops mem= from the URI when memory plugins run). */
	key = vgpu__uri_get(uri, "devmem") ? "devmem" : "mem";
	st = vgpu__uri_get_size(uri, key, CPU_DEFAULT_MEM, &mem);
	if (st)
		return st;
	if (mem < CPU_PAGE || mem > (CPU_WINDOW / 4))
		return vgpu__error(VGPU_ERR_BAD_URI, "cpu:%d: %s=%s out of range (4K to 256G)",
				   index, key, vgpu__uri_get(uri, key));
	d = calloc(1, sizeof(*d));
	if (!d)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "cpu:%d: no host memory", index);
	d->index = index;
	snprintf(d->name, sizeof(d->name), "cpu:%d", index);
	d->mem_limit = (mem + CPU_PAGE - 1) & ~(CPU_PAGE - 1);
	/* Room for oversubscription: addresses up to 16x the memory (>= 64 GiB). */
	d->window = d->mem_limit * 16;
	if (d->window < (64ull << 30))
		d->window = 64ull << 30;
	if (d->window > CPU_WINDOW)
		d->window = CPU_WINDOW;
	d->host_base = mmap(NULL, d->window, PROT_NONE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	/* a limited address space (ulimit -v, valgrind): a smaller window, as
	 * long as it holds twice the memory */
	while (d->host_base == MAP_FAILED && d->window / 2 >= 2 * d->mem_limit) {
		d->window /= 2;
		d->host_base = mmap(NULL, d->window, PROT_NONE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	}
	if (d->host_base == MAP_FAILED) {
		int err = errno;
		unsigned long long gib = d->window >> 30;

		free(d);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY,
				   "cpu:%d: cannot reserve %llu GiB of address space: %s", index,
				   gib, strerror(err));
	}
	pthread_mutex_init(&d->lock, NULL);
	/* Skip the first page: device address 0 is never valid. */
	if ((st = ext_add(d, CPU_PAGE, d->window - CPU_PAGE)) != VGPU_OK) {
		munmap(d->host_base, d->window);
		free(d);
		return st;
	}
	*out = d;
	return VGPU_OK;
}

static void cpu_device_close(struct vgpu_backend_dev *d)
{
	if (!d)
		return;
	munmap(d->host_base, d->window);
	pthread_mutex_destroy(&d->lock);
	free(d->free_ext);
	free(d);
}

static vgpu_status cpu_device_info(struct vgpu_backend_dev *d, struct vgpu_device_info *out)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	snprintf(out->name, sizeof(out->name), "libvgpu cpu device %d", d->index);
	snprintf(out->backend, sizeof(out->backend), "cpu");
	snprintf(out->arch, sizeof(out->arch), "cpu");
	out->cc_major = out->cc_minor = 0;
	out->multiprocessor_count = ncpu > 0 ? (uint32_t)ncpu : 1;
	out->max_threads_per_block = CPU_MAX_THREADS_PER_BLOCK;
	pthread_mutex_lock(&d->lock);
	out->total_mem = d->mem_limit;
	out->free_mem = d->mem_limit - d->used;
	pthread_mutex_unlock(&d->lock);
	memset(out->uuid, 0, sizeof(out->uuid));
	memcpy(out->uuid, "vgpu-cpu", 8);
	out->uuid[15] = (uint8_t)d->index;
	out->device_index = d->index;
	return VGPU_OK;
}

static size_t cpu_granularity(struct vgpu_backend_dev *d)
{
	(void)d;
	return CPU_PAGE;
}

static inline void *host_of(struct vgpu_backend_dev *d, vgpu_dptr p)
{
	return d->host_base + (p - CPU_DEV_BASE(d->index));
}

static vgpu_status oom(struct vgpu_backend_dev *d, size_t size)
{
	char a[32], b[32], c[32];

	return vgpu__error(VGPU_ERR_OUT_OF_MEMORY,
			   "%s: out of device memory: %s device, %s in use, %s asked", d->name,
			   vgpu__fmt_bytes(a, sizeof(a), d->mem_limit),
			   vgpu__fmt_bytes(b, sizeof(b), d->used), vgpu__fmt_bytes(c, sizeof(c), size));
}

/* Take size bytes of the window (d->lock held). */
static vgpu_status take_range(struct vgpu_backend_dev *d, size_t size, uint64_t *offp)
{
	uint64_t off;
	size_t i;

	for (i = 0; i < d->nfree; i++)
		if (d->free_ext[i].len >= size)
			break;
	if (i == d->nfree)
		return vgpu__error(VGPU_ERR_OUT_OF_MEMORY, "%s: device address space exhausted",
				   d->name);
	off = d->free_ext[i].off;
	d->free_ext[i].off += size;
	d->free_ext[i].len -= size;
	if (d->free_ext[i].len == 0) {
		memmove(&d->free_ext[i], &d->free_ext[i + 1], (d->nfree - i - 1) * sizeof(*d->free_ext));
		d->nfree--;
	}
	*offp = off;
	return VGPU_OK;
}

/* An allocation placed evicted: addresses only (PROT_NONE, no pages). */
static vgpu_status cpu_mem_reserve(struct vgpu_backend_dev *d, size_t size, vgpu_dptr *out)
{
	uint64_t off = 0;
	vgpu_status st;

	pthread_mutex_lock(&d->lock);
	st = take_range(d, size, &off);
	pthread_mutex_unlock(&d->lock);
	if (st == VGPU_OK)
		*out = CPU_DEV_BASE(d->index) + off;
	return st;
}

static vgpu_status cpu_mem_release(struct vgpu_backend_dev *d, vgpu_dptr p, size_t size)
{
	vgpu_status st;

	pthread_mutex_lock(&d->lock);
	st = ext_add(d, p - CPU_DEV_BASE(d->index), size);
	pthread_mutex_unlock(&d->lock);
	return st;
}

static vgpu_status cpu_mem_alloc(struct vgpu_backend_dev *d, size_t size, vgpu_dptr *out)
{
	uint64_t off = 0;
	size_t i;

	pthread_mutex_lock(&d->lock);
	if (size > d->mem_limit - d->used) {
		vgpu_status st = oom(d, size);

		pthread_mutex_unlock(&d->lock);
		return st;
	}
	for (i = 0; i < d->nfree; i++)
		if (d->free_ext[i].len >= size)
			break;
	if (i == d->nfree) {
		pthread_mutex_unlock(&d->lock);
		return vgpu__error(VGPU_ERR_OUT_OF_MEMORY, "%s: device address space exhausted",
				   d->name);
	}
	off = d->free_ext[i].off;
	d->free_ext[i].off += size;
	d->free_ext[i].len -= size;
	if (d->free_ext[i].len == 0) {
		memmove(&d->free_ext[i], &d->free_ext[i + 1], (d->nfree - i - 1) * sizeof(*d->free_ext));
		d->nfree--;
	}
	if (mprotect(d->host_base + off, size, PROT_READ | PROT_WRITE) != 0) {
		int err = errno;

		ext_add(d, off, size);
		pthread_mutex_unlock(&d->lock);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: mprotect: %s", d->name, strerror(err));
	}
	d->used += size;
	pthread_mutex_unlock(&d->lock);
	*out = CPU_DEV_BASE(d->index) + off;
	return VGPU_OK;
}

/* Drop the pages' contents (they read back as zero) and make them
 * inaccessible. */
static void wipe(struct vgpu_backend_dev *d, uint64_t off, size_t size)
{
	madvise(d->host_base + off, size, MADV_DONTNEED);
	mprotect(d->host_base + off, size, PROT_NONE);
}

static vgpu_status cpu_mem_free(struct vgpu_backend_dev *d, vgpu_dptr p, size_t size)
{
	uint64_t off = p - CPU_DEV_BASE(d->index);
	vgpu_status st;

	wipe(d, off, size);
	pthread_mutex_lock(&d->lock);
	d->used -= size;
	st = ext_add(d, off, size);
	pthread_mutex_unlock(&d->lock);
	return st;
}

/* Evicted buffers keep their range but not their pages. */
static vgpu_status cpu_mem_evict(struct vgpu_backend_dev *d, vgpu_dptr p, size_t size, void *host)
{
	memcpy(host, host_of(d, p), size);
	wipe(d, p - CPU_DEV_BASE(d->index), size);
	pthread_mutex_lock(&d->lock);
	d->used -= size;
	pthread_mutex_unlock(&d->lock);
	return VGPU_OK;
}

static vgpu_status cpu_mem_restore(struct vgpu_backend_dev *d, vgpu_dptr p, size_t size,
				   const void *host)
{
	pthread_mutex_lock(&d->lock);
	if (size > d->mem_limit - d->used) {
		vgpu_status st = oom(d, size);

		pthread_mutex_unlock(&d->lock);
		return st;
	}
	d->used += size;
	pthread_mutex_unlock(&d->lock);
	if (mprotect(host_of(d, p), size, PROT_READ | PROT_WRITE) != 0) {
		pthread_mutex_lock(&d->lock);
		d->used -= size;
		pthread_mutex_unlock(&d->lock);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: mprotect: %s", d->name, strerror(errno));
	}
	memcpy(host_of(d, p), host, size);
	return VGPU_OK;
}

static vgpu_status cpu_memcpy_htod(struct vgpu_backend_dev *d, void *bs, vgpu_dptr dst,
				   const void *src, size_t n)
{
	memcpy(host_of(d, dst), src, n);
	return VGPU_OK;
}

static vgpu_status cpu_memcpy_dtoh(struct vgpu_backend_dev *d, void *bs, void *dst,
				   vgpu_dptr src, size_t n)
{
	memcpy(dst, host_of(d, src), n);
	return VGPU_OK;
}

static void *cpu_host_ptr(struct vgpu_backend_dev *d, vgpu_dptr p, size_t n)
{
	(void)n;
	return host_of(d, p);
}

static vgpu_status cpu_memcpy_dtod(struct vgpu_backend_dev *d, void *bs, vgpu_dptr dst,
				   vgpu_dptr src, size_t n)
{
	memmove(host_of(d, dst), host_of(d, src), n);
	return VGPU_OK;
}

static vgpu_status cpu_memset(struct vgpu_backend_dev *d, void *bs, vgpu_dptr dst,
			      uint8_t value, size_t n)
{
	memset(host_of(d, dst), value, n);
	return VGPU_OK;
}

/* ---- modules ---------------------------------------------------------- */

static vgpu_status cpu_module_load(struct vgpu_backend_dev *d, const void *image, size_t size,
				   void **out)
{
	static const unsigned char elf_magic[4] = { 0x7f, 'E', 'L', 'F' };
	char path[64];
	struct cpu_module *m;
	const uint8_t *p = image;
	size_t done = 0;
	int fd;
	void *dl;

	if (size < 64 || memcmp(image, elf_magic, 4) != 0)
		return vgpu__error(VGPU_ERR_BAD_MODULE,
				   "%s: module image is not a shared object (no ELF header); the cpu "
				   "backend loads host-kernel modules built with vgpu/kernel.h",
				   d->name);
	fd = (int)syscall(SYS_memfd_create, "vgpu-module", 1u /* MFD_CLOEXEC */);
	if (fd < 0)
		return vgpu__error(VGPU_ERR_BAD_MODULE, "%s: memfd_create: %s", d->name, strerror(errno));
	while (done < size) {
		ssize_t w = write(fd, p + done, size - done);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: writing module: %s", d->name,
					   strerror(errno));
		}
		done += (size_t)w;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	close(fd);
	if (!dl) {
		const char *e = dlerror();

		return vgpu__error(VGPU_ERR_BAD_MODULE, "%s: module rejected by the loader: %s",
				   d->name, e ? e : "unknown error");
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		dlclose(dl);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: no host memory", d->name);
	}
	m->dl = dl;
	*out = m;
	return VGPU_OK;
}

static void cpu_module_unload(struct vgpu_backend_dev *d, void *mod)
{
	struct cpu_module *m = mod;

	if (!m)
		return;
	dlclose(m->dl);
	free(m);
}

static ffi_type *ffi_of(uint32_t type)
{
	switch (type) {
	case VGPU_KPARAM_DPTR: return &ffi_type_pointer;
	case VGPU_KPARAM_I32: return &ffi_type_sint32;
	case VGPU_KPARAM_U32: return &ffi_type_uint32;
	case VGPU_KPARAM_I64: return &ffi_type_sint64;
	case VGPU_KPARAM_U64: return &ffi_type_uint64;
	case VGPU_KPARAM_F32: return &ffi_type_float;
	case VGPU_KPARAM_F64: return &ffi_type_double;
	case VGPU_KPARAM_BYTES: return &ffi_type_pointer;
	default: return NULL;
	}
}

static vgpu_status cpu_function_get(struct vgpu_backend_dev *d, void *mod, const char *name,
				    void **out, struct vgpu_func_sig *sig)
{
	struct cpu_module *m = mod;
	const struct vgpu_kernel_desc *desc;
	struct cpu_function *f;
	char sym[256];

	if (snprintf(sym, sizeof(sym), VGPU_KERNEL_SYMBOL_PREFIX "%s", name) >= (int)sizeof(sym))
		return vgpu__error(VGPU_ERR_INVALID, "%s: kernel name too long", d->name);
	dlerror();
	desc = dlsym(m->dl, sym);
	if (!desc)
		return vgpu__error(VGPU_ERR_NOT_FOUND,
				   "%s: no kernel '%s' in module (declare it with VGPU_KERNEL)",
				   d->name, name);
	if (desc->abi != VGPU_KERNEL_ABI)
		return vgpu__error(VGPU_ERR_BAD_MODULE,
				   "%s: kernel '%s' built for kernel ABI %u, this device runs ABI %u",
				   d->name, name, desc->abi, VGPU_KERNEL_ABI);
	if (!desc->fn || desc->nparams > VGPU_MAX_KERNEL_ARGS || (desc->nparams && !desc->params))
		return vgpu__error(VGPU_ERR_BAD_MODULE, "%s: kernel '%s' has a corrupt descriptor",
				   d->name, name);
	f = calloc(1, sizeof(*f));
	if (!f)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: no host memory", d->name);
	f->desc = desc;
	f->types[0] = &ffi_type_pointer; /* const struct vgpu_kctx * */
	memset(sig, 0, sizeof(*sig));
	sig->known = 1;
	sig->nparams = desc->nparams;
	for (uint32_t i = 0; i < desc->nparams; i++) {
		f->types[i + 1] = ffi_of(desc->params[i].type);
		if (!f->types[i + 1]) {
			free(f);
			return vgpu__error(VGPU_ERR_BAD_MODULE,
					   "%s: kernel '%s' parameter %u has unknown type %u",
					   d->name, name, i, desc->params[i].type);
		}
		sig->type[i] = desc->params[i].type;
		sig->size[i] = desc->params[i].type == VGPU_KPARAM_DPTR ? 8 : desc->params[i].size;
	}
	if (ffi_prep_cif(&f->cif, FFI_DEFAULT_ABI, desc->nparams + 1, &ffi_type_void,
			 f->types) != FFI_OK) {
		free(f);
		return vgpu__error(VGPU_ERR_BAD_MODULE, "%s: kernel '%s': libffi cannot call it",
				   d->name, name);
	}
	*out = f;
	return VGPU_OK;
}

struct launch_state {
	int trapped;
	char msg[200];
};

static void cpu_trap(const struct vgpu_kctx *ctx, const char *msg)
{
	struct launch_state *ls = ctx->internal_;

	if (!ls->trapped) {
		ls->trapped = 1;
		snprintf(ls->msg, sizeof(ls->msg), "%s", msg ? msg : "trap");
	}
}

static vgpu_status cpu_launch(struct vgpu_backend_dev *d, void *bs, void *fn, vgpu_dim3 grid,
			      vgpu_dim3 block, size_t shmem, const vgpu_arg *args,
			      unsigned int nargs)
{
	struct cpu_function *f = fn;
	struct vgpu_kctx ctx;
	struct launch_state ls = { 0, "" };
	const struct vgpu_kctx *ctxp = &ctx;
	void *values[VGPU_MAX_KERNEL_ARGS + 1];
	void *ptrs[VGPU_MAX_KERNEL_ARGS];
	void *shared = NULL;

	if (shmem > CPU_MAX_SHMEM)
		return vgpu__error(VGPU_ERR_LAUNCH, "%s: %zu bytes of shared memory asked, at most %u",
				   d->name, shmem, CPU_MAX_SHMEM);
	if (nargs != f->desc->nparams)
		return vgpu__error(VGPU_ERR_KERNEL_ARGS, "%s: kernel '%s' takes %u arguments, got %u",
				   d->name, f->desc->name, f->desc->nparams, nargs);
	values[0] = &ctxp;
	for (unsigned i = 0; i < nargs; i++) {
		switch (args[i].type) {
		case VGPU_ARG_DPTR:
			ptrs[i] = args[i].v.dptr ? host_of(d, args[i].v.dptr) : NULL;
			values[i + 1] = &ptrs[i];
			break;
		case VGPU_ARG_BYTES:
			ptrs[i] = (void *)args[i].v.ptr;
			values[i + 1] = &ptrs[i];
			break;
		default:
			values[i + 1] = (void *)&args[i].v;
			break;
		}
	}
	if (shmem) {
		shared = malloc(shmem);
		if (!shared)
			return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "%s: no host memory for %zu bytes "
					   "of shared memory", d->name, shmem);
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.grid_dim = (struct vgpu_kdim){ grid.x, grid.y, grid.z };
	ctx.block_dim = (struct vgpu_kdim){ block.x, block.y, block.z };
	ctx.shared = shared;
	ctx.shared_size = shmem;
	ctx.trap = cpu_trap;
	ctx.internal_ = &ls;
	for (uint32_t z = 0; z < grid.z && !ls.trapped; z++)
		for (uint32_t y = 0; y < grid.y && !ls.trapped; y++)
			for (uint32_t x = 0; x < grid.x && !ls.trapped; x++) {
				ctx.block_idx = (struct vgpu_kdim){ x, y, z };
				if (shared)
					memset(shared, 0, shmem);
				ffi_call(&f->cif, f->desc->fn, NULL, values);
			}
	free(shared);
	if (ls.trapped)
		return vgpu__error(VGPU_ERR_LAUNCH, "%s: kernel '%s' trapped: %s", d->name,
				   f->desc->name, ls.msg);
	return VGPU_OK;
}

static void cpu_function_free(struct vgpu_backend_dev *d, void *fn)
{
	free(fn);
}

const struct vgpu_backend_ops vgpu__cpu_backend = {
	.size = sizeof(struct vgpu_backend_ops),
	.name = "cpu",
	.device_count = cpu_device_count,
	.device_open = cpu_device_open,
	.device_close = cpu_device_close,
	.device_info = cpu_device_info,
	.granularity = cpu_granularity,
	.mem_alloc = cpu_mem_alloc,
	.mem_free = cpu_mem_free,
	.memcpy_htod = cpu_memcpy_htod,
	.memcpy_dtoh = cpu_memcpy_dtoh,
	.host_ptr = cpu_host_ptr,
	.memcpy_dtod = cpu_memcpy_dtod,
	.memset = cpu_memset,
	.module_load = cpu_module_load,
	.module_unload = cpu_module_unload,
	.function_get = cpu_function_get,
	.function_free = cpu_function_free,
	.launch = cpu_launch,
	.mem_evict = cpu_mem_evict,
	.mem_restore = cpu_mem_restore,
	.mem_reserve = cpu_mem_reserve,
	.mem_release = cpu_mem_release,
};
