/* SPDX-License-Identifier: MIT */
/*
 * test.h - tiny test harness. Each test program runs named cases with
 * vt_run(); exit status: 0 pass, 1 fail, 77 skip (automake TESTS).
 *
 *   static int t_alloc(void *d) { CHECK_OK(vgpu_mem_alloc(...)); return 0; }
 *   int main(void) { vt_run("alloc", t_alloc, NULL); return vt_finish(); }
 */
#ifndef VGPU_TEST_H
#define VGPU_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vgpu.h"

#define VT_FAIL 1
#define VT_SKIP 77

#define CHECK(cond) do { if (!(cond)) { \
	fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
	return VT_FAIL; } } while (0)

#define CHECK_ST(expr, want) do { vgpu_status st_ = (expr); \
	if (st_ != (want)) { \
		fprintf(stderr, "  %s:%d: %s = %s, want %s (last error: %s)\n", __FILE__, __LINE__, \
			#expr, vgpu_status_name(st_), vgpu_status_name(want), vgpu_last_error()); \
		return VT_FAIL; } } while (0)

#define CHECK_OK(expr) CHECK_ST(expr, VGPU_OK)

/* The last error message must contain `needle`. */
#define CHECK_MSG(needle) do { if (!strstr(vgpu_last_error(), (needle))) { \
	fprintf(stderr, "  %s:%d: last error '%s' lacks '%s'\n", __FILE__, __LINE__, \
		vgpu_last_error(), (needle)); return VT_FAIL; } } while (0)

/* Run one named case: prints "ok/FAIL/skip name". fn returns 0, VT_FAIL or VT_SKIP. */
int vt_run(const char *name, int (*fn)(void *), void *data);
/* Exit status for main(): 1 if any case failed, 77 if all skipped, else 0. */
int vt_finish(void);

/* Device under test: $VGPU_TEST_URI, else "cpu:0". */
const char *vt_uri(void);
/* Can work go on after a kernel fault? The cpu device reports a fault
 * once and keeps running; a real CUDA context is lost for the rest of the
 * process (test_cuda_backend tests that against the fake driver), so the
 * cases that trap skip themselves on a real GPU and run everywhere else
 * (cpu, and the fake driver with FAKE_CUDA_RECOVERABLE_FAULTS=1). */
int vt_faults_recoverable(void);
/* Open a kernel module of the test tree by base name ("test_kernels"):
 * cpu backend: $VGPU_TEST_MODDIR/<base>.so; cuda: $top_srcdir/tests/<base>.ptx */
vgpu_status vt_module_load(vgpu_t *v, const char *base, vgpu_module **m);
/* Path of a program in the build tree ("tools/vgpud"). Static buffer. */
const char *vt_build_path(const char *rel);
/* FNV-1a 64 checksum. */
uint64_t vt_hash(const void *p, size_t n);
/* Deterministic pseudo-random fill. */
void vt_fill(void *p, size_t n, uint64_t seed);

#endif
