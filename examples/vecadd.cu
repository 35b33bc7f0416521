// SPDX-License-Identifier: MIT
// vecadd.cu - the example kernel for the cuda backend. Build the PTX with
//   nvcc -ptx -arch=compute_80 vecadd.cu -o vecadd.ptx
// (PTX for compute_80 is JIT-compiled by the driver for Ampere and newer.)
extern "C" __global__ void vecadd(const float *a, const float *b, float *c, int n)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		c[i] = a[i] + b[i];
}
