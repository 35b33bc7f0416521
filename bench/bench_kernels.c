/* SPDX-License-Identifier: MIT */
/* bench_kernels.c - host kernels for the benchmarks (cpu backend). */
#include <vgpu/kernel.h>

VGPU_KERNEL0(empty)
{
	(void)ctx;
}
