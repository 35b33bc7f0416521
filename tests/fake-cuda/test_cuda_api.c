/* SPDX-License-Identifier: MIT */
/*
 * test_cuda_api.c - the public API on cuda:0 over the fake driver, for what
 * is particular to the cuda backend: device info, allocation granularity,
 * device memory exhaustion, PTX images, kernel arguments checked against
 * cuFuncGetParamInfo before anything reaches the driver.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"
#include "test.h"
#include "fake-cuda.h"

#define MIB (1024u * 1024u)

static struct fake_cuda fk;
static vgpu_t *v;
static vgpu_module *mod;

static int t_info(void *d)
{
	struct vgpu_device_info info;

	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(strcmp(info.backend, "cuda") == 0);
	CHECK(strcmp(info.arch, "sm_80") == 0);
	CHECK(info.cc_major == 8 && info.cc_minor == 0);
	CHECK(strstr(info.name, "Fake CUDA Device 0") != NULL);
	CHECK(info.total_mem == 64ull * MIB);
	CHECK(strcmp(vgpu_uri(v), "cuda:0") == 0);
	return 0;
}

static int t_granularity(void *d)
{
	vgpu_dptr a, b;
	size_t used = fk.mem_used(0);

	CHECK_OK(vgpu_mem_alloc(v, 4096, &a));
	CHECK_OK(vgpu_mem_alloc(v, 4096, &b));
	CHECK(a % (2 * MIB) == 0 && b % (2 * MIB) == 0 && a != b);
	CHECK(fk.mem_used(0) == used + 4 * MIB); /* each takes a 2 MiB granule */
	CHECK_OK(vgpu_mem_free(v, a));
	CHECK_OK(vgpu_mem_free(v, b));
	CHECK(fk.mem_used(0) == used);
	return 0;
}

static int t_out_of_memory(void *d)
{
	vgpu_dptr p[40];
	int n = 0;
	vgpu_status st = VGPU_OK;

	/* 64 MiB device: 32 granules of 2 MiB. */
	while (n < 40 && (st = vgpu_mem_alloc(v, 2 * MIB, &p[n])) == VGPU_OK)
		n++;
	CHECK(st == VGPU_ERR_OUT_OF_MEMORY);
	CHECK(n > 0 && n <= 32);
	CHECK_MSG("cuda:0");
	CHECK_MSG("CUDA_ERROR_OUT_OF_MEMORY");
	while (n > 0)
		CHECK_OK(vgpu_mem_free(v, p[--n]));
	CHECK(fk.mem_used(0) == 0);
	return 0;
}

static int t_ptx_image(void *d)
{
	/* A PTX image without its NUL, as a file's bytes would be. */
	static const char text[] =
		".version 8.0\n.target sm_80\n.address_size 64\n"
		".visible .entry empty()\n{\n\tret;\n}\n";
	char *img = malloc(sizeof(text) - 1);
	vgpu_module *m;
	vgpu_function *f;

	CHECK(img != NULL);
	memcpy(img, text, sizeof(text) - 1);
	CHECK_OK(vgpu_module_load(v, img, sizeof(text) - 1, &m));
	free(img);
	CHECK_OK(vgpu_module_function(m, "empty", &f));
	CHECK_OK(vgpu_launch(v, f, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL,
			     NULL, 0));
	CHECK_OK(vgpu_module_unload(m));
	/* Broken PTX: the JIT log is in the message. */
	CHECK_ST(vgpu_module_load(v, "garbage", 7, &m), VGPU_ERR_BAD_MODULE);
	CHECK_MSG("CUDA_ERROR_INVALID_PTX");
	CHECK_MSG("Parsing error");
	return 0;
}

static int t_arg_checks(void *d)
{
	vgpu_function *f;
	vgpu_dptr p;
	unsigned long launches;
	vgpu_dim3 g = vgpu_dim3_make(1, 1, 1), b = vgpu_dim3_make(32, 1, 1);

	CHECK_OK(vgpu_module_function(mod, "vecadd", &f));
	CHECK_OK(vgpu_mem_alloc(v, 4096, &p));
	launches = fk.calls("cuLaunchKernel");
	/* count, from cuFuncGetParamInfo */
	vgpu_arg three[] = { vgpu_arg_dptr(p), vgpu_arg_dptr(p), vgpu_arg_dptr(p) };
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, three, 3), VGPU_ERR_KERNEL_ARGS);
	CHECK_MSG("takes 4 arguments, 3 given");
	/* size: an i64 where the kernel has an int */
	vgpu_arg wide[] = { vgpu_arg_dptr(p), vgpu_arg_dptr(p), vgpu_arg_dptr(p),
			    vgpu_arg_i64(8) };
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, wide, 4), VGPU_ERR_KERNEL_ARGS);
	CHECK_MSG("argument 3");
	/* refused before the driver saw them */
	CHECK(fk.calls("cuLaunchKernel") == launches);
	vgpu_arg ok[] = { vgpu_arg_dptr(p), vgpu_arg_dptr(p), vgpu_arg_dptr(p), vgpu_arg_i32(8) };
	CHECK_OK(vgpu_launch(v, f, g, b, 0, NULL, ok, 4));
	CHECK(fk.calls("cuLaunchKernel") == launches + 1);
	CHECK_OK(vgpu_mem_free(v, p));
	return 0;
}

static int t_vecadd_stream(void *d)
{
	enum { N = 100000 };
	float *a = malloc(N * 4), *b = malloc(N * 4), *c = malloc(N * 4);
	vgpu_dptr da, db, dc;
	vgpu_function *f;
	vgpu_stream *s;

	CHECK(a && b && c);
	for (int i = 0; i < N; i++) {
		a[i] = (float)i;
		b[i] = 0.5f;
	}
	CHECK_OK(vgpu_module_function(mod, "vecadd", &f));
	CHECK_OK(vgpu_stream_create(v, &s, 0));
	CHECK_OK(vgpu_mem_alloc(v, N * 4, &da));
	CHECK_OK(vgpu_mem_alloc(v, N * 4, &db));
	CHECK_OK(vgpu_mem_alloc(v, N * 4, &dc));
	CHECK_OK(vgpu_memcpy_htod(v, da, a, N * 4, s));
	CHECK_OK(vgpu_memcpy_htod(v, db, b, N * 4, s));
	vgpu_arg args[] = { vgpu_arg_dptr(da), vgpu_arg_dptr(db), vgpu_arg_dptr(dc),
			    vgpu_arg_i32(N) };
	CHECK_OK(vgpu_launch(v, f, vgpu_dim3_make((N + 255) / 256, 1, 1), vgpu_dim3_make(256, 1, 1),
			     0, s, args, 4));
	CHECK_OK(vgpu_memcpy_dtoh(v, c, dc, N * 4, s));
	CHECK_OK(vgpu_stream_synchronize(s));
	for (int i = 0; i < N; i++)
		CHECK(c[i] == (float)i + 0.5f);
	CHECK_OK(vgpu_stream_destroy(s));
	CHECK_OK(vgpu_mem_free(v, da));
	CHECK_OK(vgpu_mem_free(v, db));
	CHECK_OK(vgpu_mem_free(v, dc));
	free(a);
	free(b);
	free(c);
	return 0;
}

int main(void)
{
	fake_cuda_use();
	setenv("FAKE_CUDA_MEM", "64", 1);
	setenv("FAKE_CUDA_DELAY_US", "50", 1);
	unsetenv("FAKE_CUDA_FAIL");
	unsetenv("FAKE_CUDA_DRIVER_VERSION");
	unsetenv("FAKE_CUDA_DEVICES");
	unsetenv("FAKE_CUDA_NO_VMM");
	unsetenv("FAKE_CUDA_RECOVERABLE_FAULTS");
	if (vgpu_open(&v, "cuda:0") != VGPU_OK) {
		fprintf(stderr, "cannot open cuda:0 on the fake driver: %s\n", vgpu_last_error());
		return 1;
	}
	fk = fake_cuda_api();
	if (vt_module_load(v, "test_kernels", &mod) != VGPU_OK) {
		fprintf(stderr, "cannot load test_kernels.ptx: %s\n", vgpu_last_error());
		return 1;
	}
	vt_run("info", t_info, NULL);
	vt_run("granularity", t_granularity, NULL);
	vt_run("out_of_memory", t_out_of_memory, NULL);
	vt_run("ptx_image", t_ptx_image, NULL);
	vt_run("arg_checks", t_arg_checks, NULL);
	vt_run("vecadd_stream", t_vecadd_stream, NULL);
	vgpu_module_unload(mod);
	vgpu_close(v);
	/* Everything went back to the driver. */
	if (fk.live("contexts") || fk.live("streams") || fk.live("modules") ||
	    fk.live("reservations") || fk.live("hostallocs")) {
		fprintf(stderr, "leaked: contexts %ld streams %ld modules %ld reservations %ld"
			" host %ld\n", fk.live("contexts"), fk.live("streams"), fk.live("modules"),
			fk.live("reservations"), fk.live("hostallocs"));
		return 1;
	}
	return vt_finish();
}
