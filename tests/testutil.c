/* SPDX-License-Identifier: MIT */
/* testutil.c - the test harness (test.h). */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test.h"

static int n_pass, n_fail, n_skip;

int vt_run(const char *name, int (*fn)(void *), void *data)
{
	struct timespec a, b;
	int rc;

	clock_gettime(CLOCK_MONOTONIC, &a);
	rc = fn(data);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
	if (rc == 0) {
		n_pass++;
		printf("ok   %s (%.1f ms)\n", name, ms);
	} else if (rc == VT_SKIP) {
		n_skip++;
		printf("skip %s\n", name);
	} else {
		n_fail++;
		printf("FAIL %s\n", name);
	}
	fflush(stdout);
	return rc;
}

int vt_finish(void)
{
	printf("# %d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
	if (n_fail)
		return 1;
	if (!n_pass && n_skip)
		return 77;
	return 0;
}

const char *vt_uri(void)
{
	const char *u = getenv("VGPU_TEST_URI");

	return u && *u ? u : "cpu:0";
}

int vt_faults_recoverable(void)
{
	const char *f = getenv("FAKE_CUDA_RECOVERABLE_FAULTS");

	return strncmp(vt_uri(), "cuda", 4) != 0 || (f && !strcmp(f, "1"));
}

vgpu_status vt_module_load(vgpu_t *v, const char *base, vgpu_module **m)
{
	struct vgpu_device_info info;
	char path[4096];
	vgpu_status st = vgpu_device_info(v, &info);

	if (st)
		return st;
	if (!strcmp(info.backend, "cuda")) {
		const char *src = getenv("top_srcdir");

		snprintf(path, sizeof(path), "%s/tests/%s.ptx", src ? src : ".", base);
	} else {
		const char *dir = getenv("VGPU_TEST_MODDIR");

		snprintf(path, sizeof(path), "%s/%s.so", dir ? dir : "tests/.libs", base);
	}
	return vgpu_module_load_file(v, path, m);
}

const char *vt_build_path(const char *rel)
{
	static char buf[4096];
	const char *b = getenv("top_builddir");

	snprintf(buf, sizeof(buf), "%s/%s", b ? b : ".", rel);
	return buf;
}

uint64_t vt_hash(const void *p, size_t n)
{
	const unsigned char *c = p;
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= 1099511628211ull;
	}
	return h;
}

void vt_fill(void *p, size_t n, uint64_t seed)
{
	unsigned char *c = p;
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		c[i] = (unsigned char)x;
	}
}
