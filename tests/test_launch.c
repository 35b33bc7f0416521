/* SPDX-License-Identifier: MIT */
/* test_launch.c - modules, functions, kernel launches and their checks. */
#include "config.h"

#include <stdlib.h>

#include "test.h"

struct saxpy_params {
	float a;
	int32_t n;
};

static vgpu_t *v;
static vgpu_module *mod;

static int setup(void)
{
	if (vgpu_open(&v, vt_uri()) || vt_module_load(v, "test_kernels", &mod)) {
		fprintf(stderr, "setup: %s\n", vgpu_last_error());
		return -1;
	}
	return 0;
}

static int t_vecadd(void *d)
{
	enum { N = 10000 };
	static float a[N], b[N], c[N];
	vgpu_function *f;
	vgpu_dptr da, db, dc;

	for (int i = 0; i < N; i++) {
		a[i] = (float)i;
		b[i] = 0.5f * (float)i;
	}
	CHECK_OK(vgpu_module_function(mod, "vecadd", &f));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(a), &da));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(b), &db));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(c), &dc));
	CHECK_OK(vgpu_memcpy_htod(v, da, a, sizeof(a), NULL));
	CHECK_OK(vgpu_memcpy_htod(v, db, b, sizeof(b), NULL));
	vgpu_arg args[] = { vgpu_arg_dptr(da), vgpu_arg_dptr(db), vgpu_arg_dptr(dc), vgpu_arg_i32(N) };
	CHECK_OK(vgpu_launch(v, f, vgpu_dim3_make((N + 127) / 128, 1, 1), vgpu_dim3_make(128, 1, 1), 0,
			     NULL, args, 4));
	CHECK_OK(vgpu_memcpy_dtoh(v, c, dc, sizeof(c), NULL));
	for (int i = 0; i < N; i++)
		CHECK(c[i] == 1.5f * (float)i);
	vgpu_mem_free(v, da);
	vgpu_mem_free(v, db);
	vgpu_mem_free(v, dc);
	return 0;
}

static int t_by_value(void *d)
{
	enum { N = 1000 };
	float x[N], y[N];
	struct saxpy_params p = { 2.0f, N };
	vgpu_function *f;
	vgpu_dptr dx, dy;

	for (int i = 0; i < N; i++) {
		x[i] = (float)i;
		y[i] = 1.0f;
	}
	CHECK_OK(vgpu_module_function(mod, "saxpy_s", &f));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(x), &dx));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(y), &dy));
	CHECK_OK(vgpu_memcpy_htod(v, dx, x, sizeof(x), NULL));
	CHECK_OK(vgpu_memcpy_htod(v, dy, y, sizeof(y), NULL));
	vgpu_arg args[] = { vgpu_arg_bytes(&p, sizeof(p)), vgpu_arg_dptr(dx), vgpu_arg_dptr(dy) };
	CHECK_OK(vgpu_launch(v, f, vgpu_dim3_make(4, 1, 1), vgpu_dim3_make(256, 1, 1), 0, NULL, args, 3));
	CHECK_OK(vgpu_memcpy_dtoh(v, y, dy, sizeof(y), NULL));
	for (int i = 0; i < N; i++)
		CHECK(y[i] == 2.0f * (float)i + 1.0f);
	vgpu_mem_free(v, dx);
	vgpu_mem_free(v, dy);
	return 0;
}

static int t_grid_2d(void *d)
{
	/* fill_u32 indexes by x only; a 2-D grid runs every block: y blocks
	 * rewrite the same x range, which must end with the value */
	vgpu_function *f;
	vgpu_dptr p;
	uint32_t out[512];

	CHECK_OK(vgpu_module_function(mod, "fill_u32", &f));
	CHECK_OK(vgpu_mem_alloc(v, sizeof(out), &p));
	vgpu_arg args[] = { vgpu_arg_dptr(p), vgpu_arg_u32(7), vgpu_arg_u64(512) };
	CHECK_OK(vgpu_launch(v, f, vgpu_dim3_make(4, 3, 2), vgpu_dim3_make(128, 1, 1), 0, NULL, args, 3));
	CHECK_OK(vgpu_memcpy_dtoh(v, out, p, sizeof(out), NULL));
	for (int i = 0; i < 512; i++)
		CHECK(out[i] == 7);
	vgpu_mem_free(v, p);
	return 0;
}

static int t_bad_args(void *d)
{
	vgpu_function *f;
	vgpu_dptr p;
	struct saxpy_params sp = { 1, 1 };
	char big[16];

	CHECK_OK(vgpu_module_function(mod, "fill_u32", &f));
	CHECK_OK(vgpu_mem_alloc(v, 4096, &p));
	vgpu_dim3 g = vgpu_dim3_make(1, 1, 1), b = vgpu_dim3_make(1, 1, 1);
	/* count */
	vgpu_arg two[] = { vgpu_arg_dptr(p), vgpu_arg_u32(1) };
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, two, 2), VGPU_ERR_KERNEL_ARGS);
	CHECK_MSG("takes 3 arguments, 2 given");
	/* type */
	vgpu_arg wrongtype[] = { vgpu_arg_dptr(p), vgpu_arg_f32(1), vgpu_arg_u64(1) };
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, wrongtype, 3), VGPU_ERR_KERNEL_ARGS);
	CHECK_MSG("argument 1");
	/* size */
	vgpu_arg wrongsize[] = { vgpu_arg_dptr(p), vgpu_arg_u32(1), vgpu_arg_u32(1) };
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, wrongsize, 3), VGPU_ERR_KERNEL_ARGS);
	/* pointer outside this handle's memory */
	vgpu_arg wild[] = { vgpu_arg_dptr(p + 8192), vgpu_arg_u32(1), vgpu_arg_u64(1) };
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, wild, 3), VGPU_ERR_BAD_ADDRESS);
	CHECK_MSG("not inside an allocation");
	/* corrupt arg records */
	vgpu_arg corrupt[] = { vgpu_arg_dptr(p), vgpu_arg_u32(1), vgpu_arg_u64(1) };
	corrupt[1].size = 3;
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, corrupt, 3), VGPU_ERR_KERNEL_ARGS);
	corrupt[1].size = 4;
	corrupt[1].type = 99;
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, corrupt, 3), VGPU_ERR_KERNEL_ARGS);
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, NULL, 3), VGPU_ERR_INVALID);
	/* by-value size mismatch */
	CHECK_OK(vgpu_module_function(mod, "saxpy_s", &f));
	vgpu_arg bv[] = { vgpu_arg_bytes(big, sizeof(big)), vgpu_arg_dptr(p), vgpu_arg_dptr(p) };
	CHECK_ST(vgpu_launch(v, f, g, b, 0, NULL, bv, 3), VGPU_ERR_KERNEL_ARGS);
	CHECK_MSG("16 bytes");
	bv[0] = vgpu_arg_bytes(&sp, sizeof(sp));
	CHECK_OK(vgpu_launch(v, f, g, b, 0, NULL, bv, 3));
	vgpu_mem_free(v, p);
	return 0;
}

static int t_bad_dims(void *d)
{
	vgpu_function *f;

	CHECK_OK(vgpu_module_function(mod, "empty", &f));
	CHECK_ST(vgpu_launch(v, f, vgpu_dim3_make(0, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL, NULL, 0),
		 VGPU_ERR_INVALID);
	CHECK_ST(vgpu_launch(v, f, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1025, 1, 1), 0, NULL, NULL, 0),
		 VGPU_ERR_INVALID);
	CHECK_MSG("1025");
	CHECK_ST(vgpu_launch(v, f, vgpu_dim3_make(1, 70000, 1), vgpu_dim3_make(1, 1, 1), 0, NULL, NULL, 0),
		 VGPU_ERR_INVALID);
	CHECK_OK(vgpu_launch(v, f, vgpu_dim3_make(3, 2, 1), vgpu_dim3_make(32, 32, 1), 0, NULL, NULL, 0));
	return 0;
}

static int t_lookup_errors(void *d)
{
	vgpu_function *f;
	vgpu_module *m2;
	static const char junk[128] = "this is not a module";

	CHECK_ST(vgpu_module_function(mod, "no_such_kernel", &f), VGPU_ERR_NOT_FOUND);
	CHECK_MSG("no_such_kernel");
	CHECK_ST(vgpu_module_load(v, junk, sizeof(junk), &m2), VGPU_ERR_BAD_MODULE);
	CHECK(m2 == NULL);
	CHECK_ST(vgpu_module_load_file(v, "/nonexistent/k.so", &m2), VGPU_ERR_NOT_FOUND);
	CHECK_MSG("/nonexistent/k.so");
	return 0;
}

static int t_unload(void *d)
{
	vgpu_module *m;
	vgpu_function *f, *g;

	CHECK_OK(vt_module_load(v, "test_kernels", &m));
	CHECK_OK(vgpu_module_function(m, "empty", &f));
	CHECK_OK(vgpu_module_function(mod, "empty", &g));
	CHECK_OK(vgpu_launch(v, f, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL, NULL, 0));
	CHECK_OK(vgpu_module_unload(m));
	/* the other module's function still works */
	CHECK_OK(vgpu_launch(v, g, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL, NULL, 0));
	return 0;
}

static int t_trap_sync(void *d)
{
	vgpu_function *f;

	if (!vt_faults_recoverable())
		return VT_SKIP;
	CHECK_OK(vgpu_module_function(mod, "trap", &f));
	vgpu_arg a[] = { vgpu_arg_i32(1) };
	CHECK_ST(vgpu_launch(v, f, vgpu_dim3_make(4, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL, a, 1),
		 VGPU_ERR_LAUNCH);
	CHECK_MSG("trap");
	a[0] = vgpu_arg_i32(0);
	CHECK_OK(vgpu_launch(v, f, vgpu_dim3_make(4, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL, a, 1));
	return 0;
}

static int t_foreign_function(void *d)
{
	vgpu_t *w;
	vgpu_function *f;

	CHECK_OK(vgpu_open(&w, vt_uri()));
	CHECK_OK(vgpu_module_function(mod, "empty", &f));
	CHECK_ST(vgpu_launch(w, f, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0, NULL, NULL, 0),
		 VGPU_ERR_BAD_HANDLE);
	vgpu_close(w);
	return 0;
}

int main(void)
{
	if (setup())
		return 1;
	vt_run("vecadd", t_vecadd, NULL);
	vt_run("by_value_struct", t_by_value, NULL);
	vt_run("grid_2d", t_grid_2d, NULL);
	vt_run("bad_args", t_bad_args, NULL);
	vt_run("bad_dims", t_bad_dims, NULL);
	vt_run("lookup_errors", t_lookup_errors, NULL);
	vt_run("unload", t_unload, NULL);
	vt_run("trap_sync", t_trap_sync, NULL);
	vt_run("foreign_function", t_foreign_function, NULL);
	vgpu_close(v);
	return vt_finish();
}
