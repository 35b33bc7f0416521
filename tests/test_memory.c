/* SPDX-License-Identifier: MIT */
/* test_memory.c - allocation, copies, bounds, out-of-memory, isolation. */
#include "config.h"

#include <stdlib.h>

#include "test.h"

static int is_cpu(void)
{
	return !strncmp(vt_uri(), "cpu", 3);
}

static int t_roundtrip(void *d)
{
	vgpu_t *v;
	vgpu_dptr a, b;
	size_t n = 3 * 1000 * 1000 + 17; /* not a multiple of anything */
	unsigned char *src = malloc(n), *dst = malloc(n);

	CHECK(src && dst);
	vt_fill(src, n, 42);
	CHECK_OK(vgpu_open(&v, vt_uri()));
	CHECK_OK(vgpu_mem_alloc(v, n, &a));
	CHECK_OK(vgpu_mem_alloc(v, n, &b));
	CHECK(a != 0 && b != 0 && a != b);
	CHECK_OK(vgpu_memcpy_htod(v, a, src, n, NULL));
	CHECK_OK(vgpu_memcpy_dtod(v, b, a, n, NULL));
	CHECK_OK(vgpu_memcpy_dtoh(v, dst, b, n, NULL));
	CHECK(vt_hash(src, n) == vt_hash(dst, n));
	/* interior offsets */
	CHECK_OK(vgpu_memcpy_dtoh(v, dst, a + 1000, 5000, NULL));
	CHECK(!memcmp(dst, src + 1000, 5000));
	CHECK_OK(vgpu_memset(v, b + 10, 0xab, 100, NULL));
	CHECK_OK(vgpu_memcpy_dtoh(v, dst, b, 200, NULL));
	for (int i = 0; i < 200; i++)
		CHECK(dst[i] == (i >= 10 && i < 110 ? 0xab : src[i]));
	/* zero-length copies are no-ops */
	CHECK_OK(vgpu_memcpy_htod(v, a, src, 0, NULL));
	CHECK_OK(vgpu_mem_free(v, a));
	CHECK_OK(vgpu_mem_free(v, b));
	vgpu_close(v);
	free(src);
	free(dst);
	return 0;
}

static int t_device_addresses(void *d)
{
	vgpu_t *v;
	vgpu_dptr a;
	int local;

	if (!is_cpu())
		return VT_SKIP;
	CHECK_OK(vgpu_open(&v, "cpu:0"));
	CHECK_OK(vgpu_mem_alloc(v, 4096, &a));
	/* device addresses are not host pointers of this process */
	CHECK(a >= 0x100000000000ull && a < 0x100000000000ull + (1ull << 40));
	CHECK((uintptr_t)&local < 0x100000000000ull || (uintptr_t)&local > a + (1ull << 40));
	/* a host pointer is not a device address */
	CHECK_ST(vgpu_memcpy_htod(v, (vgpu_dptr)(uintptr_t)&local, &local, sizeof(local), NULL),
		 VGPU_ERR_BAD_ADDRESS);
	vgpu_close(v);
	return 0;
}

static int t_bounds(void *d)
{
	vgpu_t *v;
	vgpu_dptr a, b;
	char buf[8192] = { 0 };

	CHECK_OK(vgpu_open(&v, vt_uri()));
	CHECK_OK(vgpu_mem_alloc(v, 1000, &a));
	CHECK_OK(vgpu_mem_alloc(v, 1000, &b));
	CHECK_ST(vgpu_memcpy_htod(v, a, buf, 8192, NULL), VGPU_ERR_BAD_ADDRESS);
	CHECK_MSG("run past the end");
	CHECK_ST(vgpu_memcpy_dtoh(v, buf, a + 999, 2, NULL), VGPU_ERR_BAD_ADDRESS);
	CHECK_ST(vgpu_memcpy_dtod(v, a, b, 5000, NULL), VGPU_ERR_BAD_ADDRESS);
	CHECK_ST(vgpu_memset(v, a - 1, 0, 1, NULL), VGPU_ERR_BAD_ADDRESS);
	CHECK_ST(vgpu_memcpy_htod(v, 0, buf, 1, NULL), VGPU_ERR_BAD_ADDRESS);
	CHECK_ST(vgpu_memcpy_htod(v, a, NULL, 1, NULL), VGPU_ERR_INVALID);
	CHECK_ST(vgpu_memcpy_dtoh(v, buf, a, SIZE_MAX, NULL), VGPU_ERR_BAD_ADDRESS);
	CHECK_OK(vgpu_memcpy_dtoh(v, buf, a + 999, 1, NULL));
	vgpu_close(v);
	return 0;
}

static int t_double_free_use_after_free(void *d)
{
	vgpu_t *v;
	vgpu_dptr a;
	char buf[64] = { 0 };

	CHECK_OK(vgpu_open(&v, vt_uri()));
	CHECK_OK(vgpu_mem_alloc(v, 4096, &a));
	CHECK_ST(vgpu_mem_free(v, a + 8), VGPU_ERR_BAD_ADDRESS);
	CHECK_MSG("not its start");
	CHECK_OK(vgpu_mem_free(v, a));
	CHECK_ST(vgpu_mem_free(v, a), VGPU_ERR_BAD_ADDRESS);
	CHECK_MSG("already freed");
	CHECK_ST(vgpu_memcpy_htod(v, a, buf, sizeof(buf), NULL), VGPU_ERR_BAD_ADDRESS);
	CHECK_MSG("not allocated");
	CHECK_ST(vgpu_memcpy_dtoh(v, buf, a, sizeof(buf), NULL), VGPU_ERR_BAD_ADDRESS);
	CHECK_ST(vgpu_mem_free(v, 0), VGPU_ERR_BAD_ADDRESS);
	vgpu_close(v);
	return 0;
}

static int t_out_of_memory(void *d)
{
	vgpu_t *v;
	vgpu_dptr a, b, c;
	struct vgpu_device_info info;

	if (!is_cpu())
		return VT_SKIP;
	CHECK_OK(vgpu_open(&v, "cpu:3?mem=1M"));
	CHECK_OK(vgpu_mem_alloc(v, 768 * 1024, &a));
	CHECK_ST(vgpu_mem_alloc(v, 512 * 1024, &b), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_MSG("cpu:3: out of device memory: 1 MiB device, 768 KiB in use, 512 KiB asked");
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 1 << 20 && info.free_mem == 256 * 1024);
	CHECK_OK(vgpu_mem_alloc(v, 256 * 1024, &b));
	CHECK_ST(vgpu_mem_alloc(v, 1, &c), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_OK(vgpu_mem_free(v, a));
	CHECK_OK(vgpu_mem_alloc(v, 512 * 1024, &c)); /* space comes back */
	CHECK_ST(vgpu_mem_alloc(v, (size_t)1 << 62, &c), VGPU_ERR_OUT_OF_MEMORY);
	vgpu_close(v);
	return 0;
}

static int t_freed_memory_is_wiped(void *d)
{
	vgpu_t *v;
	vgpu_dptr a, b;
	unsigned char buf[4096];

	if (!is_cpu())
		return VT_SKIP;
	CHECK_OK(vgpu_open(&v, "cpu:4?mem=64K"));
	CHECK_OK(vgpu_mem_alloc(v, 65536, &a));
	CHECK_OK(vgpu_memset(v, a, 0x5a, 65536, NULL));
	CHECK_OK(vgpu_mem_free(v, a));
	/* the whole device again: no byte of the old buffer may show */
	CHECK_OK(vgpu_mem_alloc(v, 65536, &b));
	for (size_t off = 0; off < 65536; off += sizeof(buf)) {
		CHECK_OK(vgpu_memcpy_dtoh(v, buf, b + off, sizeof(buf), NULL));
		for (size_t i = 0; i < sizeof(buf); i++)
			CHECK(buf[i] != 0x5a);
	}
	vgpu_close(v);
	return 0;
}

static int t_close_frees_all(void *d)
{
	vgpu_t *v, *w;
	struct vgpu_device_info info;
	vgpu_dptr p;

	if (!is_cpu())
		return VT_SKIP;
	/* w keeps the device alive across v's life */
	CHECK_OK(vgpu_open(&w, "cpu:5?mem=16M"));
	CHECK_OK(vgpu_open(&v, "cpu:5"));
	for (int i = 0; i < 10; i++)
		CHECK_OK(vgpu_mem_alloc(v, 1 << 20, &p));
	CHECK_OK(vgpu_device_info(w, &info));
	CHECK(info.free_mem == 6 << 20);
	vgpu_close(v); /* without freeing */
	CHECK_OK(vgpu_device_info(w, &info));
	CHECK(info.free_mem == 16 << 20);
	vgpu_close(w);
	return 0;
}

static int t_devices_separate(void *d)
{
	vgpu_t *a, *b;
	struct vgpu_device_info ia, ib;
	vgpu_dptr p;

	if (!is_cpu())
		return VT_SKIP;
	CHECK_OK(vgpu_open(&a, "cpu:6?mem=8M"));
	CHECK_OK(vgpu_open(&b, "cpu:7?mem=8M"));
	CHECK_OK(vgpu_mem_alloc(a, 8 << 20, &p));
	CHECK_OK(vgpu_device_info(a, &ia));
	CHECK_OK(vgpu_device_info(b, &ib));
	CHECK(ia.free_mem == 0 && ib.free_mem == 8 << 20);
	vgpu_close(a);
	vgpu_close(b);
	return 0;
}

int main(void)
{
	vt_run("roundtrip", t_roundtrip, NULL);
	vt_run("device_addresses", t_device_addresses, NULL);
	vt_run("bounds", t_bounds, NULL);
	vt_run("double_free_use_after_free", t_double_free_use_after_free, NULL);
	vt_run("out_of_memory", t_out_of_memory, NULL);
	vt_run("freed_memory_is_wiped", t_freed_memory_is_wiped, NULL);
	vt_run("close_frees_all", t_close_frees_all, NULL);
	vt_run("devices_separate", t_devices_separate, NULL);
	return vt_finish();
}
