/* SPDX-License-Identifier: MIT */
/*
 * fake-cuda.h - for tests: point the cuda backend at the fake driver and
 * reach the fake's test-only API (call counters, failure injection, live
 * object counts).
 */
#ifndef FAKE_CUDA_H
#define FAKE_CUDA_H

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef FAKE_CUDA_LIB
#error "FAKE_CUDA_LIB must name the fake libcuda.so (set by the Makefile)"
#endif

struct fake_cuda {
	unsigned long (*calls)(const char *name);
	void (*reset_counts)(void);
	int (*fail)(const char *spec);
	long (*live)(const char *kind);
	size_t (*mem_used)(int dev);
};

/* Use the fake driver for this process (call before the backend loads). */
static inline void fake_cuda_use(void)
{
	setenv("VGPU_CUDA_LIBRARY", FAKE_CUDA_LIB, 1);
}

/* The test API of the fake the backend loaded (dlopen of the same path
 * returns the same object). Exits 1 if unavailable. */
static inline struct fake_cuda fake_cuda_api(void)
{
	struct fake_cuda f;
	void *h = dlopen(FAKE_CUDA_LIB, RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		fprintf(stderr, "cannot load %s: %s\n", FAKE_CUDA_LIB, dlerror());
		exit(1);
	}
	*(void **)&f.calls = dlsym(h, "fake_cuda_calls");
	*(void **)&f.reset_counts = dlsym(h, "fake_cuda_reset_counts");
	*(void **)&f.fail = dlsym(h, "fake_cuda_fail");
	*(void **)&f.live = dlsym(h, "fake_cuda_live");
	*(void **)&f.mem_used = dlsym(h, "fake_cuda_mem_used");
	if (!f.calls || !f.reset_counts || !f.fail || !f.live || !f.mem_used) {
		fprintf(stderr, "%s lacks the fake-cuda test API\n", FAKE_CUDA_LIB);
		exit(1);
	}
	return f;
}

#endif
