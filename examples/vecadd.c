/* SPDX-License-Identifier: MIT */
/*
 * vecadd - add two vectors on a virtual GPU.
 *
 * Runs on $VGPU_URI, else cpu:0 (or the URI given as the first argument).
 * Prints "vecadd: OK <uri>" and exits 0 when the result checks; prints the
 * error and exits 1 otherwise.
 *
 * The kernel comes from vecadd_kernels.so (cpu backend) or vecadd.ptx (cuda
 * backend), looked up in $VGPU_VECADD_DIR, beside the program, and in the
 * installed examples directory.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vgpu.h>

#ifndef VGPU_EXAMPLEDIR
#define VGPU_EXAMPLEDIR "/usr/local/lib/vgpu/examples"
#endif

#define N (1 << 20)

static int fail(const char *what, vgpu_status st)
{
	fprintf(stderr, "vecadd: %s: %s (%s)\n", what, vgpu_last_error(), vgpu_status_name(st));
	return 1;
}

/* Find the kernel image for this device's backend. */
static int find_module(const char *file, char *out, size_t len)
{
	char exe[PATH_MAX], *slash;
	const char *env = getenv("VGPU_VECADD_DIR");
	ssize_t n;

	if (env && snprintf(out, len, "%s/%s", env, file) < (int)len && access(out, R_OK) == 0)
		return 0;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			if (snprintf(out, len, "%s/%s", exe, file) < (int)len && access(out, R_OK) == 0)
				return 0;
			if (snprintf(out, len, "%s/.libs/%s", exe, file) < (int)len &&
			    access(out, R_OK) == 0)
				return 0;
			/* libtool puts uninstalled programs in .libs/ */
			if (snprintf(out, len, "%s/../%s", exe, file) < (int)len &&
			    access(out, R_OK) == 0)
				return 0;
		}
	}
	if (snprintf(out, len, "%s/%s", VGPU_EXAMPLEDIR, file) < (int)len && access(out, R_OK) == 0)
		return 0;
	return -1;
}

int main(int argc, char **argv)
{
	const char *uri = argc > 1 ? argv[1] : NULL;
	struct vgpu_device_info info;
	vgpu_t *v;
	vgpu_module *mod;
	vgpu_function *fn;
	vgpu_dptr da, db, dc;
	float *a, *b, *c;
	char path[PATH_MAX];
	const char *file;
	vgpu_status st;
	int rc = 1;

	if ((st = vgpu_open(&v, uri)))
		return fail("open", st);
	if ((st = vgpu_device_info(v, &info))) {
		vgpu_close(v);
		return fail("device info", st);
	}
	file = !strcmp(info.backend, "cuda") ? "vecadd.ptx" : "vecadd_kernels.so";
	if (find_module(file, path, sizeof(path))) {
		fprintf(stderr, "vecadd: cannot find %s (set VGPU_VECADD_DIR)\n", file);
		vgpu_close(v);
		return 1;
	}
	a = malloc(N * sizeof(float));
	b = malloc(N * sizeof(float));
	c = malloc(N * sizeof(float));
	if (!a || !b || !c) {
		fprintf(stderr, "vecadd: out of host memory\n");
		goto out;
	}
	for (int i = 0; i < N; i++) {
		a[i] = (float)i;
		b[i] = 2.0f * (float)i;
	}
	if ((st = vgpu_module_load_file(v, path, &mod)) ||
	    (st = vgpu_module_function(mod, "vecadd", &fn))) {
		fail("module", st);
		goto out;
	}
	if ((st = vgpu_mem_alloc(v, N * sizeof(float), &da)) ||
	    (st = vgpu_mem_alloc(v, N * sizeof(float), &db)) ||
	    (st = vgpu_mem_alloc(v, N * sizeof(float), &dc))) {
		fail("alloc", st);
		goto out;
	}
	if ((st = vgpu_memcpy_htod(v, da, a, N * sizeof(float), NULL)) ||
	    (st = vgpu_memcpy_htod(v, db, b, N * sizeof(float), NULL))) {
		fail("copy to device", st);
		goto out;
	}
	vgpu_arg args[] = { vgpu_arg_dptr(da), vgpu_arg_dptr(db), vgpu_arg_dptr(dc),
			    vgpu_arg_i32(N) };
	if ((st = vgpu_launch(v, fn, vgpu_dim3_make(N / 256, 1, 1), vgpu_dim3_make(256, 1, 1), 0,
			      NULL, args, 4))) {
		fail("launch", st);
		goto out;
	}
	if ((st = vgpu_memcpy_dtoh(v, c, dc, N * sizeof(float), NULL))) {
		fail("copy to host", st);
		goto out;
	}
	for (int i = 0; i < N; i++)
		if (c[i] != 3.0f * (float)i) {
			fprintf(stderr, "vecadd: wrong result at %d: %f, expected %f\n", i,
				(double)c[i], 3.0 * i);
			goto out;
		}
	printf("vecadd: OK %s (%s, %s)\n", vgpu_uri(v), info.name, info.backend);
	rc = 0;
out:
	free(a);
	free(b);
	free(c);
	vgpu_close(v); /* frees the buffers and the module too */
	return rc;
}
