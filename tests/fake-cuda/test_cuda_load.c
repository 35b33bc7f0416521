/* SPDX-License-Identifier: MIT */
/*
 * test_cuda_load.c - how the cuda backend meets the driver it is given: no
 * library, the CUDA toolkit's stub library (the real one), a library that is
 * not a driver, a driver too old, no device, no VMM support, a driver
 * without cuFuncGetParamInfo (before 12.4), a failing cuInit. Each case runs
 * in its own process: a loaded driver stays loaded.
 */
#include "config.h"

#include <glob.h>
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

	const char *stub = CUDA_STUB_LIB;
	glob_t g;

	/* $(CUDA_DIR)/lib64/stubs, else the toolkit's targets/<arch>/lib/stubs */
	if (access(stub, R_OK) != 0 &&
	    glob(CUDA_DIR "/targets/*/lib/stubs/libcuda.so", 0, NULL, &g) == 0) {
		stub = strdup(g.gl_pathv[0]);
		globfree(&g);
	}
	if (!stub || access(stub, R_OK) != 0) {
		fprintf(stderr, "  the CUDA toolkit's stub libcuda.so is not under %s\n", CUDA_DIR);
		return VT_FAIL;
	}
	setenv("VGPU_CUDA_LIBRARY", stub, 1);
	st = B->device_open(0, &uri0, &dev);
	CHECK(st == VGPU_ERR_DRIVER || st == VGPU_ERR_NO_DEVICE);
	BCHECK_MSG(stub);
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

/* A GPU without virtual memory management: memory from cuMemAlloc, no
 * eviction, everything else the same. */
static int c_no_vmm(void)
{
	struct vgpu_backend_dev *dev;
	struct fake_cuda fk;
	vgpu_dptr p;
	size_t g;
	char in[10000], out[10000], host[16384];

	fake_cuda_use();
	setenv("FAKE_CUDA_NO_VMM", "1", 1);
	BCHECK_OK(B->device_open(0, &uri0, &dev));
	fk = fake_cuda_api();
	g = B->granularity(dev);
	CHECK(g == 4096);
	BCHECK_OK(B->mem_alloc(dev, 3 * g, &p));
	CHECK(fk.calls("cuMemAlloc") == 1 && fk.calls("cuMemCreate") == 0);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (char)(i * 7);
	BCHECK_OK(B->memcpy_htod(dev, NULL, p, in, sizeof(in)));
	BCHECK_OK(B->memcpy_dtoh(dev, NULL, out, p, sizeof(out)));
	CHECK(memcmp(in, out, sizeof(in)) == 0);
	BCHECK_ST(B->mem_evict(dev, p, 3 * g, host), VGPU_ERR_UNSUPPORTED);
	BCHECK_MSG("virtual memory management");
	BCHECK_OK(B->mem_free(dev, p, 3 * g));
	CHECK(fk.calls("cuMemFree") == 1);
	B->device_close(dev);
	CHECK(fk.live("contexts") == 0 && fk.live("mappings") == 0 && fk.live("phys") == 0);
	CHECK(fk.mem_used(0) == 0);
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
	B->function_free(dev, fn);
	B->module_unload(dev, mod);
	B->device_close(dev);
	fk = fake_cuda_api();
	CHECK(fk.calls("cuFuncGetParamInfo") == 0);
	CHECK(fk.live("contexts") == 0 && fk.live("streams") == 0 && fk.live("hostallocs") == 0);
	return 0;
}

/* A device with the test kernels loaded. */
struct kit {
	struct vgpu_backend_dev *dev;
	void *mod, *trap, *fill;
};

static int kit_open(struct kit *k)
{
	static const char ptx[] =
		".version 8.0\n.target sm_80\n.address_size 64\n"
		".visible .entry trap(\n\t.param .u32 trap_param_0\n)\n{\n\ttrap;\n}\n"
		".visible .entry fill_u32(\n\t.param .u64 fill_u32_param_0,\n"
		"\t.param .u32 fill_u32_param_1,\n\t.param .u64 fill_u32_param_2\n)\n{\n\tret;\n}\n";
	struct vgpu_func_sig sig;

	fake_cuda_use();
	BCHECK_OK(B->device_open(0, &uri0, &k->dev));
	BCHECK_OK(B->module_load(k->dev, ptx, sizeof(ptx), &k->mod));
	BCHECK_OK(B->function_get(k->dev, k->mod, "trap", &k->trap, &sig));
	BCHECK_OK(B->function_get(k->dev, k->mod, "fill_u32", &k->fill, &sig));
	return 0;
}

static void kit_close(struct kit *k)
{
	B->function_free(k->dev, k->trap);
	B->function_free(k->dev, k->fill);
	B->module_unload(k->dev, k->mod);
	B->device_close(k->dev);
}

/* After a kernel fault the device refuses all work for the rest of the
 * process, as CUDA documents; the message says so and names the kernel. */
static int c_trap_is_fatal(void)
{
	struct kit k;
	void *bs = NULL;
	vgpu_arg a = vgpu_arg_i32(1);
	vgpu_dptr p;

	if (kit_open(&k))
		return VT_FAIL;
	BCHECK_OK(B->stream_create(k.dev, &bs));
	BCHECK_OK(B->launch(k.dev, bs, k.trap, vgpu_dim3_make(4, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
			    &a, 1));
	BCHECK_ST(B->stream_sync(k.dev, bs), VGPU_ERR_LAUNCH);
	BCHECK_MSG("cuda:0: cuStreamSynchronize: CUDA_ERROR_LAUNCH_FAILED");
	BCHECK_MSG("last kernel launched on the stream: 'trap'");
	BCHECK_MSG("process restarts");
	BCHECK_ST(B->mem_alloc(k.dev, B->granularity(k.dev), &p), VGPU_ERR_LAUNCH);
	B->stream_destroy(k.dev, bs);
	kit_close(&k);
	/* Closing and reopening does not bring the GPU back. */
	BCHECK_ST(B->device_open(0, &uri0, &k.dev), VGPU_ERR_LAUNCH);
	BCHECK_MSG("CUDA_ERROR_LAUNCH_FAILED");
	return 0;
}

/* On the synchronous stream the launch itself reports the fault. */
static int c_trap_sync_stream(void)
{
	struct kit k;
	vgpu_arg a = vgpu_arg_i32(1);

	if (kit_open(&k))
		return VT_FAIL;
	BCHECK_ST(B->launch(k.dev, NULL, k.trap, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1),
			    0, &a, 1), VGPU_ERR_LAUNCH);
	BCHECK_MSG("CUDA_ERROR_LAUNCH_FAILED");
	BCHECK_MSG("'trap'");
	kit_close(&k);
	return 0;
}

/* An injected illegal address on a launch is raised when the kernel runs. */
static int c_illegal_address(void)
{
	struct kit k;
	void *bs = NULL;
	vgpu_arg a[3];
	vgpu_dptr p;

	setenv("FAKE_CUDA_FAIL", "cuLaunchKernel:1:CUDA_ERROR_ILLEGAL_ADDRESS", 1);
	if (kit_open(&k))
		return VT_FAIL;
	BCHECK_OK(B->mem_alloc(k.dev, B->granularity(k.dev), &p));
	a[0] = vgpu_arg_dptr(p);
	a[1] = vgpu_arg_u32(1);
	a[2] = vgpu_arg_u64(1);
	BCHECK_OK(B->stream_create(k.dev, &bs));
	BCHECK_OK(B->launch(k.dev, bs, k.fill, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(1, 1, 1), 0,
			    a, 3));
	BCHECK_ST(B->stream_sync(k.dev, bs), VGPU_ERR_LAUNCH);
	BCHECK_MSG("CUDA_ERROR_ILLEGAL_ADDRESS");
	BCHECK_MSG("'fill_u32'");
	B->stream_destroy(k.dev, bs);
	kit_close(&k);
	return 0;
}

/* An injected failure of an asynchronous copy surfaces at the sync. */
static int c_copy_fault(void)
{
	struct kit k;
	void *bs = NULL;
	vgpu_dptr p;
	char buf[64] = { 0 };
	vgpu_status st;

	setenv("FAKE_CUDA_FAIL", "cuMemcpyHtoDAsync:1:CUDA_ERROR_ILLEGAL_ADDRESS", 1);
	if (kit_open(&k))
		return VT_FAIL;
	BCHECK_OK(B->mem_alloc(k.dev, B->granularity(k.dev), &p));
	BCHECK_OK(B->stream_create(k.dev, &bs));
	/* The fault may already show at a later call of the copy itself
	 * (cuEventRecord), as on a GPU; at the latest at the sync. */
	st = B->memcpy_htod(k.dev, bs, p, buf, sizeof(buf));
	CHECK(st == VGPU_OK || st == VGPU_ERR_LAUNCH);
	if (st == VGPU_OK)
		BCHECK_ST(B->stream_sync(k.dev, bs), VGPU_ERR_LAUNCH);
	BCHECK_MSG("CUDA_ERROR_ILLEGAL_ADDRESS");
	B->stream_destroy(k.dev, bs);
	kit_close(&k);
	return 0;
}

/* Two GPUs used alternately from one thread: each operation runs in its
 * device's context; a kernel given the other device's memory faults. */
static int c_two_devices(void)
{
	struct vgpu_backend_dev *d0, *d1;
	struct vgpu_func_sig sig;
	void *m0, *m1, *f0, *f1;
	vgpu_dptr p0, p1;
	uint32_t out0[8], out1[8];
	struct fake_cuda fk;
	static const char ptx[] =
		".version 8.0\n.target sm_80\n.address_size 64\n"
		".visible .entry fill_u32(\n\t.param .u64 fill_u32_param_0,\n"
		"\t.param .u32 fill_u32_param_1,\n\t.param .u64 fill_u32_param_2\n)\n{\n\tret;\n}\n";

	fake_cuda_use();
	setenv("FAKE_CUDA_DEVICES", "2", 1);
	CHECK(B->device_count() == 2);
	BCHECK_OK(B->device_open(0, &uri0, &d0));
	BCHECK_OK(B->device_open(1, &uri0, &d1));
	CHECK(d0 != d1);
	fk = fake_cuda_api();
	CHECK(fk.live("contexts") == 2);
	BCHECK_OK(B->module_load(d0, ptx, sizeof(ptx), &m0));
	BCHECK_OK(B->module_load(d1, ptx, sizeof(ptx), &m1));
	BCHECK_OK(B->function_get(d0, m0, "fill_u32", &f0, &sig));
	BCHECK_OK(B->function_get(d1, m1, "fill_u32", &f1, &sig));
	BCHECK_OK(B->mem_alloc(d0, B->granularity(d0), &p0));
	BCHECK_OK(B->mem_alloc(d1, B->granularity(d1), &p1));
	CHECK(fk.mem_used(0) == B->granularity(d0) && fk.mem_used(1) == B->granularity(d1));
	for (int round = 0; round < 3; round++) {
		vgpu_arg a0[3] = { vgpu_arg_dptr(p0), vgpu_arg_u32(100 + round), vgpu_arg_u64(8) };
		vgpu_arg a1[3] = { vgpu_arg_dptr(p1), vgpu_arg_u32(200 + round), vgpu_arg_u64(8) };
		BCHECK_OK(B->launch(d0, NULL, f0, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(8, 1, 1),
				    0, a0, 3));
		BCHECK_OK(B->launch(d1, NULL, f1, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(8, 1, 1),
				    0, a1, 3));
		BCHECK_OK(B->memcpy_dtoh(d0, NULL, out0, p0, sizeof(out0)));
		BCHECK_OK(B->memcpy_dtoh(d1, NULL, out1, p1, sizeof(out1)));
		CHECK(out0[7] == 100u + (unsigned)round && out1[7] == 200u + (unsigned)round);
	}
	{
		/* device 1's kernel on device 0's memory */
		vgpu_arg bad[3] = { vgpu_arg_dptr(p0), vgpu_arg_u32(1), vgpu_arg_u64(8) };
		BCHECK_ST(B->launch(d1, NULL, f1, vgpu_dim3_make(1, 1, 1), vgpu_dim3_make(8, 1, 1),
				    0, bad, 3), VGPU_ERR_LAUNCH);
		BCHECK_MSG("cuda:1");
		BCHECK_MSG("CUDA_ERROR_ILLEGAL_ADDRESS");
	}
	/* device 0 is unaffected by device 1's fault */
	BCHECK_OK(B->memcpy_dtoh(d0, NULL, out0, p0, sizeof(out0)));
	BCHECK_OK(B->mem_free(d0, p0, B->granularity(d0)));
	B->function_free(d0, f0);
	B->module_unload(d0, m0);
	B->device_close(d0);
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
	CASE(trap_is_fatal);
	CASE(trap_sync_stream);
	CASE(illegal_address);
	CASE(copy_fault);
	CASE(two_devices);
	return vt_finish();
}
