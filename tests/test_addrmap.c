/* SPDX-License-Identifier: MIT */
/* test_addrmap.c - range map (unit). */
#include "config.h"
#include "addrmap.h"
#include "test.h"

static int t_basic(void *d)
{
	struct vgpu_addrmap m;
	int a, b, c;

	vgpu__am_init(&m);
	CHECK(vgpu__am_insert(&m, 0x2000, 0x1000, &b) == 0);
	CHECK(vgpu__am_insert(&m, 0x1000, 0x1000, &a) == 0);
	CHECK(vgpu__am_insert(&m, 0x5000, 0x3000, &c) == 0);
	CHECK(vgpu__am_insert(&m, 0x2800, 0x1000, &c) != 0);  /* overlap */
	CHECK(vgpu__am_insert(&m, 0x0800, 0x1000, &c) != 0);  /* overlap */
	CHECK(vgpu__am_insert(&m, 0x4000, 0, &c) != 0);       /* empty */
	CHECK(vgpu__am_find(&m, 0x1000)->obj == &a);
	CHECK(vgpu__am_find(&m, 0x1fff)->obj == &a);
	CHECK(vgpu__am_find(&m, 0x2000)->obj == &b);
	CHECK(vgpu__am_find(&m, 0x3000) == NULL);
	CHECK(vgpu__am_find(&m, 0x7fff)->obj == &c);
	CHECK(vgpu__am_find(&m, 0x8000) == NULL);
	CHECK(vgpu__am_find(&m, 0) == NULL);
	CHECK(vgpu__am_find_base(&m, 0x5001) == NULL);
	CHECK(vgpu__am_remove(&m, 0x5001) == NULL);
	CHECK(vgpu__am_remove(&m, 0x2000) == &b);
	CHECK(vgpu__am_find(&m, 0x2000) == NULL);
	CHECK(m.n == 2);
	vgpu__am_fini(&m);
	return 0;
}

static int t_many(void *d)
{
	struct vgpu_addrmap m;
	static int objs[2000];

	vgpu__am_init(&m);
	for (int i = 1999; i >= 0; i--)
		CHECK(vgpu__am_insert(&m, (uint64_t)i * 0x10000, 0x8000, &objs[i]) == 0);
	for (int i = 0; i < 2000; i++) {
		CHECK(vgpu__am_find(&m, (uint64_t)i * 0x10000 + 0x7fff)->obj == &objs[i]);
		CHECK(vgpu__am_find(&m, (uint64_t)i * 0x10000 + 0x8000) == NULL);
	}
	vgpu__am_fini(&m);
	return 0;
}

int main(void)
{
	vt_run("addrmap.basic", t_basic, NULL);
	vt_run("addrmap.many", t_many, NULL);
	return vt_finish();
}
