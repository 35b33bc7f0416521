/* SPDX-License-Identifier: MIT */
/* vecadd_kernels.c - the vecadd kernel for the cpu backend (see vecadd.cu
 * for the cuda one). Build: cc -shared -fPIC $(pkg-config --cflags vgpu) */
#include <vgpu/kernel.h>

VGPU_KERNEL(vecadd, VGPU_PTR(const float, a), VGPU_PTR(const float, b),
	    VGPU_PTR(float, c), VGPU_I32(n))
{
	VGPU_FOR_EACH_THREAD(ctx, t) {
		uint64_t i = vgpu_global_x(ctx, t);

		if (i < (uint64_t)n)
			c[i] = a[i] + b[i];
	}
}
