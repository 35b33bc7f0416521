/* SPDX-License-Identifier: MIT */
/*
 * test_mem_cuda.c - mem-swap on the cuda backend, over the fake driver
 * (tests/fake-cuda): allocations placed evicted (address reservations),
 * eviction (copy out, cuMemUnmap) and restore (cuMemCreate/cuMemMap at the
 * same address), 4x a 16 MiB device, every buffer checked. Copies only (no
 * kernels), on the NULL stream and on streams.
 */
#include "config.h"

#include <stdlib.h>

#include "test.h"

#define MB (1024u * 1024u)
#define NBUF 32
#define BSIZE (2 * MB) /* the fake's granularity */

static int t_swap_on_cuda(void *d)
{
	vgpu_t *v;
	vgpu_stream *s[2];
	vgpu_dptr p[NBUF];
	struct vgpu_device_info info;
	unsigned char *buf = malloc(BSIZE), *chk = malloc(BSIZE);
	vgpu_status st;

	(void)d;
	CHECK(buf && chk);
	setenv("VGPU_PLUGINS", "mem-swap:swap=64M", 1);
	st = vgpu_open(&v, "cuda:0");
	if (st != VGPU_OK) {
		fprintf(stderr, "  cuda:0: %s\n", vgpu_last_error());
		return VT_FAIL;
	}
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 80 * MB && (info.flags & VGPU_DEVICE_SWAP));
	for (int i = 0; i < NBUF; i++) {
		CHECK_OK(vgpu_mem_alloc(v, BSIZE, &p[i]));
		vt_fill(buf, BSIZE, 1000u + (unsigned)i);
		CHECK_OK(vgpu_memcpy_htod(v, p[i], buf, BSIZE, NULL));
	}
	{ /* beyond device + swap: refused, naming the limit */
		vgpu_dptr big;

		CHECK_ST(vgpu_mem_alloc(v, 32 * MB, &big), VGPU_ERR_OUT_OF_MEMORY);
		CHECK_MSG("swap");
	}
	/* second pass: memset a stripe on streams, read back on streams */
	CHECK_OK(vgpu_stream_create(v, &s[0], 0));
	CHECK_OK(vgpu_stream_create(v, &s[1], 0));
	for (int r = 0; r < 2; r++)
		for (int i = 0; i < NBUF; i++) {
			CHECK_OK(vgpu_memset(v, p[i] + 4096 * (unsigned)r, (uint8_t)(i + r), 4096,
					     s[i % 2]));
		}
	for (int i = 0; i < NBUF; i++) {
		CHECK_OK(vgpu_memcpy_dtoh(v, chk, p[i], BSIZE, s[i % 2]));
		CHECK_OK(vgpu_stream_synchronize(s[i % 2]));
		vt_fill(buf, BSIZE, 1000u + (unsigned)i);
		memset(buf, i, 4096);
		memset(buf + 4096, i + 1, 4096);
		CHECK(!memcmp(buf, chk, BSIZE));
	}
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.evictions > 0 && info.swapped_out > 0 && info.swapped_in > 0);
	CHECK(info.mem_resident <= 16 * MB);
	for (int i = 0; i < NBUF; i += 2)
		CHECK_OK(vgpu_mem_free(v, p[i]));
	for (int i = 1; i < NBUF; i += 2) {
		CHECK_OK(vgpu_memcpy_dtoh(v, chk, p[i], BSIZE, NULL));
		CHECK(chk[0] == (unsigned char)i && chk[4096] == (unsigned char)(i + 1));
	}
	vgpu_stream_destroy(s[0]);
	vgpu_stream_destroy(s[1]);
	vgpu_close(v);
	free(buf);
	free(chk);
	return 0;
}

int main(void)
{
	/* the fake driver, 16 MiB, with virtual memory management */
	setenv("VGPU_CUDA_LIBRARY", FAKE_CUDA_LIB, 1);
	setenv("FAKE_CUDA_MEM", "16", 1);
	unsetenv("FAKE_CUDA_NO_VMM");
	unsetenv("FAKE_CUDA_FAIL");
	vt_run("swap_on_cuda", t_swap_on_cuda, NULL);
	return vt_finish();
}
