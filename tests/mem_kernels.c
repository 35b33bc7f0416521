/* SPDX-License-Identifier: MIT */
/*
 * mem_kernels.c - host kernels of the memory (quota, swap) tests, cpu
 * backend. Each runs as one block and walks its buffers itself.
 */
#include <time.h>
#include <vgpu/kernel.h>

/* p[i] += add for i < n (u32 words) */
VGPU_KERNEL(touch_u32, VGPU_PTR(uint32_t, p), VGPU_U64(n), VGPU_U32(add))
{
	if (ctx->block_idx.x == 0)
		for (uint64_t i = 0; i < n; i++)
			p[i] += add;
}

/* a[i] += b[i] * 3 for i < n */
VGPU_KERNEL(mix2_u32, VGPU_PTR(uint32_t, a), VGPU_PTR(const uint32_t, b), VGPU_U64(n))
{
	if (ctx->block_idx.x == 0)
		for (uint64_t i = 0; i < n; i++)
			a[i] += b[i] * 3u;
}

/* Writes a pattern, sleeps usec, and traps if the pattern changed: the
 * buffer must stay resident and untouched while the kernel runs. */
VGPU_KERNEL(hold_check, VGPU_PTR(uint32_t, p), VGPU_U64(n), VGPU_U64(usec), VGPU_U32(seed))
{
	struct timespec ts = { (time_t)(usec / 1000000), (long)(usec % 1000000) * 1000 };

	if (ctx->block_idx.x != 0)
		return;
	for (uint64_t i = 0; i < n; i++)
		p[i] = (uint32_t)i * 2654435761u ^ seed;
	nanosleep(&ts, NULL);
	for (uint64_t i = 0; i < n; i++)
		if (p[i] != ((uint32_t)i * 2654435761u ^ seed)) {
			VGPU_TRAP(ctx, "buffer changed while the kernel ran");
			return;
		}
}

/*
 * Follows device pointers stored in memory: table[k] is the device address
 * of a buffer of `words` u32; out[k] = sum of its words. The cpu device maps
 * its whole address window at one host range, so a stored device address
 * translates through the anchor buffer (its host pointer and device
 * address). Such buffers must be pinned (vgpu_mem_advise).
 */
VGPU_KERNEL(sum_indirect, VGPU_PTR(uint8_t, anchor), VGPU_U64(anchor_dev),
	    VGPU_PTR(const uint64_t, table), VGPU_U32(n), VGPU_U64(words), VGPU_PTR(uint64_t, out))
{
	if (ctx->block_idx.x != 0)
		return;
	for (uint32_t k = 0; k < n; k++) {
		const uint32_t *q = (const uint32_t *)(anchor + (table[k] - anchor_dev));
		uint64_t s = 0;

		for (uint64_t i = 0; i < words; i++)
			s += q[i];
		out[k] = s;
	}
}

/*
 * Writes a pattern, then waits for the host: *flag (a host address, cpu
 * backend only) is set to 1 when the kernel runs and the test sets it to 2
 * to let it finish; traps if the pattern changed meanwhile.
 */
VGPU_KERNEL(hold_flag, VGPU_PTR(uint32_t, p), VGPU_U64(n), VGPU_U64(flag))
{
	int *f = (int *)(uintptr_t)flag;
	struct timespec ts = { 0, 200000 };

	if (ctx->block_idx.x != 0)
		return;
	for (uint64_t i = 0; i < n; i++)
		p[i] = (uint32_t)i ^ 0x5a5a5a5au;
	__atomic_store_n(f, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(f, __ATOMIC_SEQ_CST) != 2)
		nanosleep(&ts, NULL);
	for (uint64_t i = 0; i < n; i++)
		if (p[i] != ((uint32_t)i ^ 0x5a5a5a5au)) {
			VGPU_TRAP(ctx, "buffer changed while the kernel ran");
			return;
		}
}
