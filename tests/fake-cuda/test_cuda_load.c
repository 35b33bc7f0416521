/* SPDX-License-Identifier: MIT */
/*
 * test_cuda_load.c - how the cuda backend meets the driver it is given: no
 * library, the CUDA toolkit's stub library (the real one), a library that is
 * not a driver, a driver too old, no device, no VMM support, a driver
 * without cuFuncGetParamInfo (before 12.4), a failing cuInit. Each case runs
 * in its own process: a loaded driver stays loaded.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "error.h"
#include "test.h"
#include "fake-cuda.h"

#define B (&vgpu__cuda_backend)

#define BCHECK_ST(expr, want) do { vgpu_status st_ = (expr); \
	if (st_ != (want)) { \
		fprintf(stderr, "  %s:%d: %s = %d, want %d (message: %s)\n", __FILE__, __LINE__, \
			#expr, (int)st_, (int)(want), vgpu__error_msg()); \
		return VT_FAIL; } } while (0)
#define BCHECK_OK(expr) BCHECK_ST(expr, VGPU_OK)
#define BCHECK_MSG(needle) do { if (!strstr(vgpu__error_msg(), (needle))) { \
	fprintf(stderr, "  %s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__, \
		vgpu__error_msg(), (needle)); return VT_FAIL; } } while (0)

static struct vgpu_uri uri0;

/* Run fn in a child process; its exit status is the result. */
static int forked(void *fn)
{
	pid_t pid;
	int status;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return VT_FAIL;
	if (pid == 0) {
		int (*f)(void) = (int (*)(void))fn;
		_exit(f());
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return VT_FAIL;
	return WEXITSTATUS(status);
}

#define CASE(name) vt_run(#name, forked, (void *)c_##name)

static int c_no_library(void)
{
	struct vgpu_backend_dev *dev;

	setenv("VGPU_CUDA_LIBRARY", "/nonexistent/libcuda.so.1", 1);
	BCHECK_ST(B->device_count(), VGPU_ERR_NO_DEVICE);
	BCHECK_MSG("/nonexistent/libcuda.so.1");
	BCHECK_MSG("cannot open shared object file"); /* dlerror() */
	BCHECK_ST(B->device_open(0, &uri0, &dev), VGPU_ERR_NO_DEVICE);
	BCHECK_MSG("/nonexistent/libcuda.so.1");
	return 0;
}

static int c_stub_library(void)
{
	struct vgpu_backend_dev *dev;
	vgpu_status st;

	if (access(CUDA_STUB_LIB, R_OK) != 0) {
		fprintf(stderr, "  %s: not found\n", CUDA_STUB_LIB);
		return VT_FAIL;
	}
	setenv("VGPU_CUDA_LIBRARY", CUDA_STUB_LIB, 1);
	st = B->device_open(0, &uri0, &dev);
	CHECK(st == VGPU_ERR_DRIVER || st == VGPU_ERR_NO_DEVICE);
	BCHECK_MSG(CUDA_STUB_LIB);
	BCHECK_MSG("CUDA_ERROR_STUB_LIBRARY");
	BCHECK_MSG("stub");
	st = (vgpu_status)B->device_count();
	CHECK(st == VGPU_ERR_DRIVER || st == VGPU_ERR_NO_DEVICE);
	BCHECK_MSG("CUDA_ERROR_STUB_LIBRARY");
	return 0;
}

static int c_not_a_driver(void)
{
	setenv("VGPU_CUDA_LIBRARY", "libc.so.6", 1);
	BCHECK_ST(B->device_count(), VGPU_ERR_DRIVER);
	BCHECK_MSG("libc.so.6");
	BCHECK_MSG("not a CUDA driver");
	return 0;
}

static int c_too_old(void)
{
	fake_cuda_use();
	setenv("FAKE_CUDA_DRIVER_VERSION", "11080", 1);
	BCHECK_ST(B->device_count(), VGPU_ERR_DRIVER);
	BCHECK_MSG("11.8");
	BCHECK_MSG("too old");
	return 0;
}

static int c_no_device(void)
{
	struct vgpu_backend_dev *dev;

	fake_cuda_use();
	setenv("FAKE_CUDA_DEVICES", "0", 1);
	BCHECK_ST(B->device_open(0, &uri0, &dev), VGPU_ERR_NO_DEVICE);
	BCHECK_MSG("cuInit");
	BCHECK_MSG("CUDA_ERROR_NO_DEVICE");
	BCHECK_MSG(FAKE_CUDA_LIB);
	return 0;
}

static int c_no_vmm(void)
{
	struct vgpu_backend_dev *dev;
	struct fake_cuda fk;

	fake_cuda_use();
	setenv("FAKE_CUDA_NO_VMM", "1", 1);
	BCHECK_ST(B->device_open(0, &uri0, &dev), VGPU_ERR_UNSUPPORTED);
	BCHECK_MSG("virtual memory management");
	fk = fake_cuda_api();
	CHECK(fk.live("contexts") == 0);
	return 0;
}

static int c_cuinit_fails_once(void)
{
	struct vgpu_backend_dev *dev;

	fake_cuda_use();
	setenv("FAKE_CUDA_FAIL", "cuInit:1:CUDA_ERROR_UNKNOWN", 1);
	BCHECK_ST(B->device_open(0, &uri0, &dev), VGPU_ERR_DRIVER);
	BCHECK_MSG("cuInit");
	BCHECK_MSG("CUDA_ERROR_UNKNOWN");
	/* The failure is not remembered: the next open loads the driver. */
	BCHECK_OK(B->device_open(0, &uri0, &dev));
	B->device_close(dev);
	return 0;
}

/* A 12.2 driver has no cuFuncGetParamInfo: signatures are unknown, launches
 * still work. */
static int c_driver_12_2(void)
{
	static const char ptx[] =
		".version 8.0\n.target sm_80\n.address_size 64\n"
		".visible .entry fill_u32(\n\t.param .u64 fill_u32_param_0,\n"
		"\t.param .u32 fill_u32_param_1,\n\t.param .u64 fill_u32_param_2\n)\n{\n\tret;\n}\n";
	struct vgpu_backend_dev *dev;
	struct vgpu_func_sig sig;
	void *mod, *fn;
	vgpu_dptr p;
	uint32_t out[16];
	vgpu_arg args[3];
	struct fake_cuda fk;

	fake_cuda_use();
	setenv("FAKE_CUDA_DRIVER_VERSION", "12020", 1);
	BCHECK_OK(B->device_open(0, &uri0, &dev));
	BCHECK_OK(B->module_load(dev, ptx, sizeof(ptx), &mod));
	memset(&sig, 0xff, sizeof(sig));
	BCHECK_OK(B->function_get(dev, mod, "fill_u32", &fn, &sig));
	CHECK(sig.known == 0);
	BCHECK_OK(B->mem_alloc(dev, B->granularity(dev), &p));
	args[0] = vgpu_arg_dptr(p);
	args[1] = vgpu_arg_u32(7);
	args[2] = vgpu_arg_u64(16);
	BCHECK_OK(B->launch(dev, NULL, fn, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(32, 1, 1), 0,
			    args, 3));
	BCHECK_OK(B->memcpy_dtoh(dev, NULL, out, p, sizeof(out)));
	CHECK(out[0] == 7 && out[15] == 7);
	BCHECK_OK(B->mem_free(dev, p, B->granularity(dev)));
	B->module_unload(dev, mod);
	B->device_close(dev);
	fk = fake_cuda_api();
	CHECK(fk.calls("cuFuncGetParamInfo") == 0);
	CHECK(fk.live("contexts") == 0 && fk.live("streams") == 0 && fk.live("hostallocs") == 0);
	return 0;
}

int main(void)
{
	unsetenv("FAKE_CUDA_FAIL");
	unsetenv("FAKE_CUDA_DRIVER_VERSION");
	unsetenv("FAKE_CUDA_DEVICES");
	unsetenv("FAKE_CUDA_NO_VMM");
	if (vgpu__uri_parse("cuda:0", &uri0) != VGPU_OK)
		return 1;
	CASE(no_library);
	CASE(stub_library);
	CASE(not_a_driver);
	CASE(too_old);
	CASE(no_device);
	CASE(no_vmm);
	CASE(cuinit_fails_once);
	CASE(driver_12_2);
	return vt_finish();
}
