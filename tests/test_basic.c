/* SPDX-License-Identifier: MIT */
/* test_basic.c - opening, device info, error reporting. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>

#include "test.h"

static int is_cpu(void)
{
	return !strncmp(vt_uri(), "cpu", 3);
}

static int t_open_close(void *d)
{
	vgpu_t *v;
	struct vgpu_device_info info;

	CHECK_OK(vgpu_open(&v, vt_uri()));
	CHECK(v != NULL);
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem > 0 && info.free_mem <= info.total_mem);
	CHECK(info.max_threads_per_block >= 1);
	CHECK(info.multiprocessor_count >= 1);
	CHECK(info.name[0] && info.backend[0] && info.arch[0]);
	vgpu_close(v);
	vgpu_close(NULL); /* ignored */
	return 0;
}

static int t_cpu_info(void *d)
{
	vgpu_t *v;
	struct vgpu_device_info info;

	if (!is_cpu())
		return VT_SKIP;
	CHECK_OK(vgpu_open(&v, "cpu:1?mem=64M"));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(!strcmp(info.backend, "cpu") && !strcmp(info.arch, "cpu"));
	CHECK(info.cc_major == 0 && info.cc_minor == 0);
	CHECK(info.total_mem == 64ull << 20 && info.free_mem == 64ull << 20);
	CHECK(info.device_index == 1);
	CHECK(!strcmp(vgpu_uri(v), "cpu:1?mem=64M"));
	vgpu_close(v);
	/* default size 1 GiB */
	CHECK_OK(vgpu_open(&v, "cpu:0"));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 1ull << 30);
	vgpu_close(v);
	return 0;
}

static int t_default_uri(void *d)
{
	vgpu_t *v;
	struct vgpu_device_info info;

	if (!is_cpu())
		return VT_SKIP;
	unsetenv("VGPU_URI");
	CHECK_OK(vgpu_open(&v, NULL));
	CHECK(!strcmp(vgpu_uri(v), "cpu:0"));
	vgpu_close(v);
	setenv("VGPU_URI", "cpu:2?mem=32M", 1);
	CHECK_OK(vgpu_open(&v, NULL));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.device_index == 2 && info.total_mem == 32ull << 20);
	vgpu_close(v);
	setenv("VGPU_URI", "nonsense", 1);
	CHECK_ST(vgpu_open(&v, NULL), VGPU_ERR_BAD_URI);
	CHECK(v == NULL);
	unsetenv("VGPU_URI");
	return 0;
}

static int t_bad_uris(void *d)
{
	vgpu_t *v = (vgpu_t *)1;

	CHECK_ST(vgpu_open(&v, "gpu:0"), VGPU_ERR_BAD_URI);
	CHECK(v == NULL);
	CHECK_MSG("unknown scheme 'gpu'");
	CHECK_ST(vgpu_open(&v, "cpu:99"), VGPU_ERR_NO_DEVICE);
	CHECK_MSG("cpu:99");
	CHECK_ST(vgpu_open(&v, "cpu:0?mem=lots"), VGPU_ERR_BAD_URI);
	CHECK_MSG("mem=lots");
	CHECK_ST(vgpu_open(&v, "cpu:0?mem=1"), VGPU_ERR_BAD_URI);
	CHECK_ST(vgpu_open(NULL, "cpu:0"), VGPU_ERR_INVALID);
	return 0;
}

static int t_errors(void *d)
{
	CHECK(!strcmp(vgpu_status_name(VGPU_ERR_OUT_OF_MEMORY), "VGPU_ERR_OUT_OF_MEMORY"));
	CHECK(!strcmp(vgpu_status_name(VGPU_OK), "VGPU_OK"));
	CHECK(!strcmp(vgpu_status_name((vgpu_status)-999), "VGPU_ERR_UNKNOWN"));
	CHECK(strlen(vgpu_strerror(VGPU_ERR_CONNECTION)) > 0);
	CHECK(strlen(vgpu_strerror((vgpu_status)-999)) > 0);
	/* fixed values: a contract */
	CHECK(VGPU_ERR_INVALID == -1 && VGPU_ERR_OUT_OF_MEMORY == -3 && VGPU_ERR_CONNECTION == -14);
	CHECK(VGPU_ERR_CLOSED == -22);
	CHECK(vgpu_version()[0] >= '0');
	return 0;
}

static void *other_thread(void *arg)
{
	vgpu_t *v = arg;

	/* an error on this thread must not show on the main thread */
	vgpu_mem_free(v, 0x1234);
	return strdup(vgpu_last_error());
}

static int t_thread_errors(void *d)
{
	vgpu_t *v;
	pthread_t t;
	char *msg;

	CHECK_OK(vgpu_open(&v, vt_uri()));
	CHECK_ST(vgpu_mem_alloc(v, 0, &(vgpu_dptr){ 0 }), VGPU_ERR_INVALID);
	CHECK_MSG("size is 0");
	pthread_create(&t, NULL, other_thread, v);
	pthread_join(t, (void **)&msg);
	CHECK(strstr(msg, "0x1234") != NULL);
	free(msg);
	CHECK_MSG("size is 0"); /* still ours */
	CHECK(vgpu_last_status() == VGPU_ERR_INVALID);
	vgpu_close(v);
	return 0;
}

static int t_null_args(void *d)
{
	vgpu_t *v;

	CHECK_ST(vgpu_device_info(NULL, NULL), VGPU_ERR_INVALID);
	CHECK_OK(vgpu_open(&v, vt_uri()));
	CHECK_ST(vgpu_device_info(v, NULL), VGPU_ERR_INVALID);
	CHECK_ST(vgpu_mem_alloc(v, 16, NULL), VGPU_ERR_INVALID);
	CHECK_ST(vgpu_stream_synchronize(NULL), VGPU_ERR_INVALID);
	CHECK_ST(vgpu_event_record(NULL, NULL), VGPU_ERR_INVALID);
	CHECK_ST(vgpu_module_load(v, NULL, 0, &(vgpu_module *){ NULL }), VGPU_ERR_INVALID);
	CHECK_ST(vgpu_stream_create(v, &(vgpu_stream *){ NULL }, 7), VGPU_ERR_INVALID);
	{
		struct vgpu_open_opts o = { 0 };
		vgpu_t *w;

		CHECK_ST(vgpu_open_ex(&w, "cpu:0", &o), VGPU_ERR_INVALID);
		CHECK_MSG("opts->size");
	}
	vgpu_close(v);
	return 0;
}

static int t_two_handles(void *d)
{
	vgpu_t *a, *b;
	vgpu_dptr pa;
	struct vgpu_device_info ia;

	CHECK_OK(vgpu_open(&a, vt_uri()));
	CHECK_OK(vgpu_open(&b, vt_uri()));
	CHECK_OK(vgpu_mem_alloc(a, 1 << 20, &pa));
	/* b may not touch a's memory, even on the same device */
	CHECK_ST(vgpu_memset(b, pa, 0, 16, NULL), VGPU_ERR_BAD_ADDRESS);
	CHECK_ST(vgpu_mem_free(b, pa), VGPU_ERR_BAD_ADDRESS);
	CHECK_MSG("not an allocation of this handle");
	/* both see the device's memory use */
	CHECK_OK(vgpu_device_info(b, &ia));
	CHECK(ia.free_mem <= ia.total_mem - (1 << 20));
	vgpu_close(a);
	vgpu_close(b);
	return 0;
}

int main(void)
{
	vt_run("open_close", t_open_close, NULL);
	vt_run("cpu_info", t_cpu_info, NULL);
	vt_run("default_uri", t_default_uri, NULL);
	vt_run("bad_uris", t_bad_uris, NULL);
	vt_run("errors", t_errors, NULL);
	vt_run("thread_errors", t_thread_errors, NULL);
	vt_run("null_args", t_null_args, NULL);
	vt_run("two_handles", t_two_handles, NULL);
	return vt_finish();
}
