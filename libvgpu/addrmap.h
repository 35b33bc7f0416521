/* SPDX-License-Identifier: MIT */
/*
 * addrmap.h - a sorted map of disjoint address ranges [base, base+size) to
 * objects: which allocation contains an address. Not thread-safe.
 */
#ifndef VGPU_ADDRMAP_H
#define VGPU_ADDRMAP_H

#include <stddef.h>
#include <stdint.h>

struct vgpu_range {
	uint64_t base, size;
	void *obj;
};

struct vgpu_addrmap {
	struct vgpu_range *r;
	size_t n, cap;
};

void vgpu__am_init(struct vgpu_addrmap *m);
void vgpu__am_fini(struct vgpu_addrmap *m);
/* -1 on overlap or no memory. */
int vgpu__am_insert(struct vgpu_addrmap *m, uint64_t base, uint64_t size, void *obj);
/* The range starting exactly at base (NULL if none). */
struct vgpu_range *vgpu__am_find_base(struct vgpu_addrmap *m, uint64_t base);
/* The range containing addr. */
struct vgpu_range *vgpu__am_find(struct vgpu_addrmap *m, uint64_t addr);
/* Remove the range starting at base; returns its obj or NULL. */
void *vgpu__am_remove(struct vgpu_addrmap *m, uint64_t base);

#endif
