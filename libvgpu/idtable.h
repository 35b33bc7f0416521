/* SPDX-License-Identifier: MIT */
/*
 * idtable.h - session-local handle ids. An id names a slot and the slot's
 * generation, so a stale (freed) or forged id is refused. Not thread-safe:
 * the owner locks. Ids are never 0.
 */
#ifndef VGPU_IDTABLE_H
#define VGPU_IDTABLE_H

#include <stdint.h>

struct vgpu_idtable {
	struct vgpu_idslot *slots;
	uint32_t nslots, cap;
	uint32_t free_head; /* index+1 of first free slot, 0 = none */
	uint32_t count;
};

#define VGPU_ID_MAX_OBJECTS (1u << 20)

void vgpu__idt_init(struct vgpu_idtable *t);
void vgpu__idt_fini(struct vgpu_idtable *t);
/* Returns 0 when full or out of memory. */
uint32_t vgpu__idt_insert(struct vgpu_idtable *t, void *obj);
void *vgpu__idt_get(const struct vgpu_idtable *t, uint32_t id);
/* Remove and return the object (NULL if id is not live). */
void *vgpu__idt_remove(struct vgpu_idtable *t, uint32_t id);
/* Iterate: first live id after `after` (0 to start), 0 at the end. */
uint32_t vgpu__idt_next(const struct vgpu_idtable *t, uint32_t after);

#endif
