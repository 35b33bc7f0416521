/* SPDX-License-Identifier: MIT */
/*
 * test_kernels.c - host kernels used by the test suite (cpu backend).
 * tests/test_kernels.ptx holds the same kernels for the cuda backend; keep
 * the two in step (names, parameter types, behaviour).
 */
#include <time.h>
#include <vgpu/kernel.h>

struct saxpy_params {
	float a;
	int32_t n;
};

VGPU_KERNEL0(empty)
{
	(void)ctx;
}

VGPU_KERNEL(vecadd, VGPU_PTR(const float, a), VGPU_PTR(const float, b),
	    VGPU_PTR(float, c), VGPU_I32(n))
{
	VGPU_FOR_EACH_THREAD(ctx, t) {
		uint64_t i = vgpu_global_x(ctx, t);
		if (i < (uint64_t)n)
			c[i] = a[i] + b[i];
	}
}

VGPU_KERNEL(fill_u32, VGPU_PTR(uint32_t, p), VGPU_U32(value), VGPU_U64(n))
{
	VGPU_FOR_EACH_THREAD(ctx, t) {
		uint64_t i = vgpu_global_x(ctx, t);
		if (i < n)
			p[i] = value;
	}
}

VGPU_KERNEL(inc_u32, VGPU_PTR(uint32_t, p), VGPU_U64(n))
{
	VGPU_FOR_EACH_THREAD(ctx, t) {
		uint64_t i = vgpu_global_x(ctx, t);
		if (i < n)
			p[i] += 1;
	}
}

/* y[i] = p->a * x[i] + y[i]  (by-value struct parameter) */
VGPU_KERNEL(saxpy_s, VGPU_VAL(struct saxpy_params, p), VGPU_PTR(const float, x),
	    VGPU_PTR(float, y))
{
	VGPU_FOR_EACH_THREAD(ctx, t) {
		uint64_t i = vgpu_global_x(ctx, t);
		if (i < (uint64_t)p->n)
			y[i] = p->a * x[i] + y[i];
	}
}

/* Block 0 sleeps usec microseconds: keeps a stream busy. */
VGPU_KERNEL(spin_us, VGPU_U64(usec))
{
	if (ctx->block_idx.x == 0 && ctx->block_idx.y == 0 && ctx->block_idx.z == 0) {
		struct timespec ts = { (time_t)(usec / 1000000), (long)(usec % 1000000) * 1000 };
		nanosleep(&ts, NULL);
	}
}

/* Fails the launch (like __trap()). */
VGPU_KERNEL(trap, VGPU_I32(code))
{
	if (code != 0)
		VGPU_TRAP(ctx, "trap kernel called");
}
