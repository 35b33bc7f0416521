// SPDX-License-Identifier: MIT
// test_kernels.cu - the kernels of tests/test_kernels.c for the cuda backend:
// same names (extern "C"), same parameter types, same behaviour. The
// generated tests/test_kernels.ptx is committed (nvcc -ptx -arch=compute_80).
#include <stdint.h>

struct saxpy_params {
	float a;
	int32_t n;
};

extern "C" __global__ void empty(void)
{
}

extern "C" __global__ void vecadd(const float *a, const float *b, float *c, int32_t n)
{
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < (uint64_t)n)
		c[i] = a[i] + b[i];
}

extern "C" __global__ void fill_u32(uint32_t *p, uint32_t value, uint64_t n)
{
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		p[i] = value;
}

extern "C" __global__ void inc_u32(uint32_t *p, uint64_t n)
{
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		p[i] += 1;
}

// y[i] = p.a * x[i] + y[i]  (by-value struct parameter)
extern "C" __global__ void saxpy_s(struct saxpy_params p, const float *x, float *y)
{
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < (uint64_t)p.n)
		y[i] = p.a * x[i] + y[i];
}

// Block 0 spins usec microseconds: keeps a stream busy.
extern "C" __global__ void spin_us(uint64_t usec)
{
	if (blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && threadIdx.x == 0 &&
	    threadIdx.y == 0 && threadIdx.z == 0) {
		// %globaltimer counts nanoseconds.
		uint64_t t0, t;
		asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
		do {
			asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
		} while (t - t0 < usec * 1000);
	}
}

// Fails the launch (like the cpu backend's VGPU_TRAP).
extern "C" __global__ void trap(int32_t code)
{
	if (code != 0)
		__trap();
}
