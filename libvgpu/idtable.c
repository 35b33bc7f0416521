/* SPDX-License-Identifier: MIT */
/* idtable.c - generation-checked id tables. */
#include "config.h"

#include <stdlib.h>

#include "idtable.h"

struct vgpu_idslot {
	void *obj;
	uint32_t gen;  /* 12 bits */
	uint32_t next_free;
};

#define IDX_BITS 20
#define IDX_MASK ((1u << IDX_BITS) - 1)
#define GEN_MASK 0xfffu

void vgpu__idt_init(struct vgpu_idtable *t)
{
	t->slots = NULL;
	t->nslots = t->cap = t->free_head = t->count = 0;
}

void vgpu__idt_fini(struct vgpu_idtable *t)
{
	free(t->slots);
	vgpu__idt_init(t);
}

static uint32_t make_id(uint32_t idx, uint32_t gen)
{
	return (gen << IDX_BITS) | (idx + 1);
}

uint32_t vgpu__idt_insert(struct vgpu_idtable *t, void *obj)
{
	uint32_t idx;

	if (t->free_head) {
		idx = t->free_head - 1;
		t->free_head = t->slots[idx].next_free;
	} else {
		if (t->nslots + 1 >= VGPU_ID_MAX_OBJECTS)
			return 0;
		if (t->nslots == t->cap) {
			uint32_t ncap = t->cap ? t->cap * 2 : 16;
			struct vgpu_idslot *n = realloc(t->slots, ncap * sizeof(*n));

			if (!n)
				return 0;
			t->slots = n;
			t->cap = ncap;
		}
		idx = t->nslots++;
		/* start generations at a slot-dependent value: ids of a fresh
		 * table are not the small integers a guesser would try first */
		t->slots[idx].gen = (idx * 2654435761u >> 20) & GEN_MASK;
	}
	t->slots[idx].obj = obj;
	t->slots[idx].next_free = 0;
	t->count++;
	return make_id(idx, t->slots[idx].gen);
}

static struct vgpu_idslot *slot_of(const struct vgpu_idtable *t, uint32_t id)
{
	uint32_t idx = (id & IDX_MASK);

	if (idx == 0 || idx > t->nslots)
		return NULL;
	idx--;
	if (t->slots[idx].gen != (id >> IDX_BITS) || !t->slots[idx].obj)
		return NULL;
	return &t->slots[idx];
}

void *vgpu__idt_get(const struct vgpu_idtable *t, uint32_t id)
{
	struct vgpu_idslot *s = slot_of(t, id);

	return s ? s->obj : NULL;
}

void *vgpu__idt_remove(struct vgpu_idtable *t, uint32_t id)
{
	struct vgpu_idslot *s = slot_of(t, id);
	void *obj;

	if (!s)
		return NULL;
	obj = s->obj;
	s->obj = NULL;
	s->gen = (s->gen + 1) & GEN_MASK;
	s->next_free = t->free_head;
	t->free_head = (uint32_t)(s - t->slots) + 1;
	t->count--;
	return obj;
}

uint32_t vgpu__idt_next(const struct vgpu_idtable *t, uint32_t after)
{
	uint32_t idx = after ? (after & IDX_MASK) : 0; /* idx+1 of `after` = next index to look at */

	for (; idx < t->nslots; idx++)
		if (t->slots[idx].obj)
			return make_id(idx, t->slots[idx].gen);
	return 0;
}
