/* SPDX-License-Identifier: MIT */
/* test_idtable.c - generation-checked ids (unit). */
#include "config.h"
#include "idtable.h"
#include "test.h"

static int t_basic(void *d)
{
	struct vgpu_idtable t;
	int a, b;
	uint32_t ia, ib, ia2;

	vgpu__idt_init(&t);
	ia = vgpu__idt_insert(&t, &a);
	ib = vgpu__idt_insert(&t, &b);
	CHECK(ia && ib && ia != ib);
	CHECK(vgpu__idt_get(&t, ia) == &a && vgpu__idt_get(&t, ib) == &b);
	CHECK(vgpu__idt_get(&t, 0) == NULL);
	CHECK(vgpu__idt_remove(&t, ia) == &a);
	CHECK(vgpu__idt_get(&t, ia) == NULL);        /* stale */
	CHECK(vgpu__idt_remove(&t, ia) == NULL);     /* double remove */
	ia2 = vgpu__idt_insert(&t, &a);              /* slot reused ... */
	CHECK(ia2 != ia);                            /* ... with a new generation */
	CHECK(vgpu__idt_get(&t, ia) == NULL && vgpu__idt_get(&t, ia2) == &a);
	CHECK(t.count == 2);
	vgpu__idt_fini(&t);
	return 0;
}

static int t_forged(void *d)
{
	struct vgpu_idtable t;
	int x;
	uint32_t id;

	vgpu__idt_init(&t);
	id = vgpu__idt_insert(&t, &x);
	for (uint32_t g = 0; g < 0x1000; g++) {
		uint32_t forged = (g << 20) | (id & 0xfffff);

		if (forged != id)
			CHECK(vgpu__idt_get(&t, forged) == NULL);
	}
	CHECK(vgpu__idt_get(&t, id + 1) == NULL);
	CHECK(vgpu__idt_get(&t, 0xffffffffu) == NULL);
	vgpu__idt_fini(&t);
	return 0;
}

static int t_iterate(void *d)
{
	struct vgpu_idtable t;
	int v[100];
	uint32_t ids[100], id;
	int n = 0;

	vgpu__idt_init(&t);
	for (int i = 0; i < 100; i++)
		ids[i] = vgpu__idt_insert(&t, &v[i]);
	for (int i = 0; i < 100; i += 2)
		vgpu__idt_remove(&t, ids[i]);
	for (id = vgpu__idt_next(&t, 0); id; id = vgpu__idt_next(&t, id))
		n++;
	CHECK(n == 50);
	vgpu__idt_fini(&t);
	return 0;
}

int main(void)
{
	vt_run("idtable.basic", t_basic, NULL);
	vt_run("idtable.forged", t_forged, NULL);
	vt_run("idtable.iterate", t_iterate, NULL);
	return vt_finish();
}
