/* SPDX-License-Identifier: MIT */
/*
 * test_mem_quota.c - the mem-quota plugin: session limits (?mem=), tenant
 * limits, the device reserve, device info as the session sees it, mem= vs
 * devmem=, and quota together with swap.
 */
#include "config.h"

#include <stdlib.h>

#include "test.h"

#define MB (1024u * 1024u)

static int is_cpu(void)
{
	return !strncmp(vt_uri(), "cpu", 3);
}

static void plugins(const char *spec)
{
	if (spec)
		setenv("VGPU_PLUGINS", spec, 1);
	else
		unsetenv("VGPU_PLUGINS");
}

static int t_session_limit(void *d)
{
	vgpu_t *v, *w;
	vgpu_dptr a, b;
	struct vgpu_device_info info;

	if (!is_cpu())
		return VT_SKIP;
	plugins("mem-quota");
	CHECK_OK(vgpu_open(&v, "cpu:0?devmem=64M&mem=4M"));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 4 * MB && info.free_mem == 4 * MB);
	CHECK_OK(vgpu_mem_alloc(v, 3 * MB, &a));
	CHECK_ST(vgpu_mem_alloc(v, 2 * MB, &b), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_MSG("cpu:0?devmem=64M&mem=4M: session memory limit (mem=) 4 MiB exceeded: "
		  "3 MiB in use, 2 MiB asked");
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 4 * MB && info.free_mem == 1 * MB);
	/* another session without mem= sees the device (64 MiB, minus what is
	 * allocated) */
	CHECK_OK(vgpu_open(&w, "cpu:0"));
	CHECK_OK(vgpu_device_info(w, &info));
	CHECK(info.total_mem == 64 * MB && info.free_mem == 61 * MB);
	vgpu_close(w);
	CHECK_OK(vgpu_mem_free(v, a));
	CHECK_OK(vgpu_mem_alloc(v, 4 * MB, &b)); /* room comes back */
	vgpu_close(v);
	plugins(NULL);
	return 0;
}

static int t_session_default(void *d)
{
	vgpu_t *v;
	vgpu_dptr a;

	if (!is_cpu())
		return VT_SKIP;
	plugins("mem-quota:session=2M");
	CHECK_OK(vgpu_open(&v, "cpu:1?devmem=64M"));
	CHECK_ST(vgpu_mem_alloc(v, 3 * MB, &a), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_MSG("session memory limit (mem=) 2 MiB exceeded: 0 bytes in use, 3 MiB asked");
	vgpu_close(v);
	plugins(NULL);
	return 0;
}

static int t_tenant_limit(void *d)
{
	vgpu_t *a1, *a2, *b1;
	vgpu_dptr p, q;
	struct vgpu_device_info info;

	if (!is_cpu())
		return VT_SKIP;
	plugins("mem-quota:tenants=alice=6M;bob=64M");
	CHECK_OK(vgpu_open(&a1, "cpu:2?devmem=64M&tenant=alice&mem=4M"));
	CHECK_OK(vgpu_open(&a2, "cpu:2?tenant=alice&mem=4M"));
	CHECK_OK(vgpu_open(&b1, "cpu:2?tenant=bob"));
	CHECK_OK(vgpu_mem_alloc(a1, 4 * MB, &p));
	CHECK_OK(vgpu_device_info(a2, &info));
	CHECK(info.total_mem == 4 * MB && info.free_mem == 2 * MB); /* the tenant's room */
	CHECK_ST(vgpu_mem_alloc(a2, 3 * MB, &q), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_MSG("tenant 'alice' memory limit 6 MiB exceeded: 4 MiB in use by its 2 sessions, "
		  "3 MiB asked");
	CHECK_OK(vgpu_mem_alloc(a2, 2 * MB, &q));
	CHECK_OK(vgpu_mem_alloc(b1, 32 * MB, &q)); /* bob is not alice */
	vgpu_close(a1);                           /* frees alice's 4 MiB */
	CHECK_OK(vgpu_mem_alloc(a2, 2 * MB, &q));
	vgpu_close(a2);
	vgpu_close(b1);
	plugins(NULL);
	return 0;
}

static int t_reserve(void *d)
{
	vgpu_t *v;
	vgpu_dptr a;
	struct vgpu_device_info info;

	if (!is_cpu())
		return VT_SKIP;
	plugins("mem-quota:reserve=60M");
	CHECK_OK(vgpu_open(&v, "cpu:3?devmem=64M"));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 4 * MB && info.free_mem == 4 * MB);
	CHECK_OK(vgpu_mem_alloc(v, 3 * MB, &a));
	CHECK_ST(vgpu_mem_alloc(v, 2 * MB, &a), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_MSG("device reserve 60 MiB reached: 3 MiB of 64 MiB allocated, 2 MiB asked");
	vgpu_close(v);
	plugins(NULL);
	return 0;
}

/* Without memory plugins mem= is the cpu device size; devmem= wins. */
static int t_mem_vs_devmem(void *d)
{
	vgpu_t *v;
	struct vgpu_device_info info;

	if (!is_cpu())
		return VT_SKIP;
	plugins(NULL);
	CHECK_OK(vgpu_open(&v, "cpu:4?mem=2M"));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 2 * MB);
	vgpu_close(v);
	CHECK_OK(vgpu_open(&v, "cpu:4?devmem=3M&mem=2M"));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 3 * MB);
	vgpu_close(v);
	/* with the quota plugin mem= is not the device size */
	plugins("mem-quota");
	CHECK_OK(vgpu_open(&v, "cpu:4?mem=2M"));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 2 * MB);         /* the session's view */
	vgpu_close(v);
	plugins(NULL);
	return 0;
}

/* The quota counts what the session allocated, resident or not. */
static int t_quota_and_swap(void *d)
{
	vgpu_t *v;
	vgpu_dptr p[12], q;
	struct vgpu_device_info info;
	unsigned char *src = malloc(MB), *dst = malloc(MB);

	if (!is_cpu())
		return VT_SKIP;
	CHECK(src && dst);
	plugins("mem-quota mem-swap:swap=64M");
	CHECK_OK(vgpu_open(&v, "cpu:5?devmem=4M&mem=12M"));
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.total_mem == 12 * MB && info.free_mem == 12 * MB);
	for (int i = 0; i < 12; i++) {
		CHECK_OK(vgpu_mem_alloc(v, MB, &p[i]));
		vt_fill(src, MB, (uint64_t)i);
		CHECK_OK(vgpu_memcpy_htod(v, p[i], src, MB, NULL));
	}
	CHECK_ST(vgpu_mem_alloc(v, MB, &q), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_MSG("session memory limit (mem=) 12 MiB exceeded: 12 MiB in use, 1 MiB asked");
	CHECK_OK(vgpu_device_info(v, &info));
	CHECK(info.free_mem == 0 && info.mem_resident <= 4 * MB &&
	      info.mem_resident + info.mem_on_host == 12 * MB && info.evictions >= 8);
	for (int i = 0; i < 12; i++) {
		vt_fill(src, MB, (uint64_t)i);
		CHECK_OK(vgpu_memcpy_dtoh(v, dst, p[i], MB, NULL));
		CHECK(!memcmp(src, dst, MB));
	}
	vgpu_close(v);
	free(src);
	free(dst);
	plugins(NULL);
	return 0;
}

/* The same through vgpu_open_ex's plugin list (no environment). */
static int t_open_ex(void *d)
{
	vgpu_t *v;
	vgpu_dptr a;
	struct vgpu_open_opts o = VGPU_OPEN_OPTS_INIT;

	if (!is_cpu())
		return VT_SKIP;
	plugins(NULL);
	o.plugins = "mem-quota:session=1M";
	CHECK_OK(vgpu_open_ex(&v, "cpu:6?devmem=8M", &o));
	CHECK_ST(vgpu_mem_alloc(v, 2 * MB, &a), VGPU_ERR_OUT_OF_MEMORY);
	CHECK_MSG("session memory limit (mem=) 1 MiB exceeded");
	CHECK_OK(vgpu_mem_alloc(v, MB, &a));
	vgpu_close(v);
	return 0;
}

static int t_bad_params(void *d)
{
	vgpu_t *v;

	if (!is_cpu())
		return VT_SKIP;
	plugins("mem-quota:tenants=alice");
	CHECK_ST(vgpu_open(&v, "cpu:6"), VGPU_ERR_PLUGIN);
	CHECK_MSG("not name=size");
	plugins("mem-quota:tenants=alice=lots");
	CHECK_ST(vgpu_open(&v, "cpu:6"), VGPU_ERR_PLUGIN);
	CHECK_MSG("bad size");
	plugins("mem-quota");
	CHECK_ST(vgpu_open(&v, "cpu:6?mem=banana"), VGPU_ERR_BAD_URI);
	plugins(NULL);
	return 0;
}

int main(void)
{
	vt_run("session_limit", t_session_limit, NULL);
	vt_run("session_default", t_session_default, NULL);
	vt_run("tenant_limit", t_tenant_limit, NULL);
	vt_run("reserve", t_reserve, NULL);
	vt_run("mem_vs_devmem", t_mem_vs_devmem, NULL);
	vt_run("quota_and_swap", t_quota_and_swap, NULL);
	vt_run("open_ex_plugins", t_open_ex, NULL);
	vt_run("bad_params", t_bad_params, NULL);
	return vt_finish();
}
