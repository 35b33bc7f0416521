/* SPDX-License-Identifier: MIT */
/* bench_transport_kernels.c - the empty kernel of bench_transports (cpu backend). */
#include <vgpu/kernel.h>

VGPU_KERNEL0(empty)
{
	(void)ctx;
}
