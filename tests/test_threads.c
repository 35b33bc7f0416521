/* SPDX-License-Identifier: MIT */
/* test_threads.c - one handle used from several threads at once. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>

#include "test.h"

enum { THREADS = 8, ITERS = 200 };

static vgpu_t *v;
static vgpu_function *f_inc;

static void *worker(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	vgpu_stream *s = NULL;
	size_t n = 4096 + id * 100;
	unsigned char *src = malloc(n), *dst = malloc(n);
	intptr_t bad = 0;

	if (vgpu_stream_create(v, &s, 0))
		return (void *)1;
	for (int i = 0; i < ITERS && !bad; i++) {
		vgpu_dptr p;

		vt_fill(src, n, id * 1000 + (uint64_t)i);
		if (vgpu_mem_alloc(v, n, &p)) {
			bad = 1;
			break;
		}
		if (i & 1) {
			bad |= vgpu_memcpy_htod(v, p, src, n, s) != VGPU_OK;
			vgpu_arg a[] = { vgpu_arg_dptr(p), vgpu_arg_u64(n / 4) };
			bad |= vgpu_launch(v, f_inc, vgpu_dim3_make((unsigned)(n / 4 + 255) / 256, 1, 1),
					   vgpu_dim3_make(256, 1, 1), 0, s, a, 2) != VGPU_OK;
			bad |= vgpu_memcpy_dtoh(v, dst, p, n, s) != VGPU_OK;
			bad |= vgpu_stream_synchronize(s) != VGPU_OK;
			for (size_t k = 0; k + 4 <= n && !bad; k += 4) {
				uint32_t x, y;

				memcpy(&x, src + k, 4);
				memcpy(&y, dst + k, 4);
				bad |= y != x + 1;
			}
		} else {
			bad |= vgpu_memcpy_htod(v, p, src, n, NULL) != VGPU_OK;
			bad |= vgpu_memcpy_dtoh(v, dst, p, n, NULL) != VGPU_OK;
			bad |= memcmp(src, dst, n) != 0;
		}
		bad |= vgpu_mem_free(v, p) != VGPU_OK;
		if (bad)
			fprintf(stderr, "  thread %lu iter %d: %s\n", (unsigned long)id, i, vgpu_last_error());
	}
	vgpu_stream_destroy(s);
	free(src);
	free(dst);
	return (void *)bad;
}

static int t_shared_handle(void *d)
{
	pthread_t t[THREADS];
	struct vgpu_device_info info;
	int bad = 0;

	for (uintptr_t i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	for (int i = 0; i < THREADS; i++) {
		void *r;

		pthread_join(t[i], &r);
		bad |= r != NULL;
	}
	CHECK(!bad);
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.free_mem == info.total_mem);
	return 0;
}

int main(void)
{
	vgpu_module *m;

	if (vgpu_open(&v, vt_uri()) || vt_module_load(v, "test_kernels", &m) ||
	    vgpu_module_function(m, "inc_u32", &f_inc)) {
		fprintf(stderr, "setup: %s\n", vgpu_last_error());
		return 1;
	}
	vt_run("shared_handle", t_shared_handle, NULL);
	vgpu_close(v);
	return vt_finish();
}
