/* SPDX-License-Identifier: MIT */
/* addrmap.c - sorted range map (binary search; inserts shift the array). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "addrmap.h"

void vgpu__am_init(struct vgpu_addrmap *m)
{
	m->r = NULL;
	m->n = m->cap = 0;
}

void vgpu__am_fini(struct vgpu_addrmap *m)
{
	free(m->r);
	vgpu__am_init(m);
}

/* Index of the first range with base > addr. */
static size_t upper(const struct vgpu_addrmap *m, uint64_t addr)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->r[mid].base <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int vgpu__am_insert(struct vgpu_addrmap *m, uint64_t base, uint64_t size, void *obj)
{
	size_t i;

	if (size == 0 || base + size < base)
		return -1;
	i = upper(m, base);
	if (i > 0 && m->r[i - 1].base + m->r[i - 1].size > base)
		return -1;
	if (i < m->n && base + size > m->r[i].base)
		return -1;
	if (m->n == m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 16;
		struct vgpu_range *n = realloc(m->r, ncap * sizeof(*n));

		if (!n)
			return -1;
		m->r = n;
		m->cap = ncap;
	}
	memmove(&m->r[i + 1], &m->r[i], (m->n - i) * sizeof(*m->r));
	m->r[i].base = base;
	m->r[i].size = size;
	m->r[i].obj = obj;
	m->n++;
	return 0;
}

struct vgpu_range *vgpu__am_find(struct vgpu_addrmap *m, uint64_t addr)
{
	size_t i = upper(m, addr);

	if (i == 0)
		return NULL;
	if (addr - m->r[i - 1].base < m->r[i - 1].size)
		return &m->r[i - 1];
	return NULL;
}

struct vgpu_range *vgpu__am_find_base(struct vgpu_addrmap *m, uint64_t base)
{
	struct vgpu_range *r = vgpu__am_find(m, base);

	return r && r->base == base ? r : NULL;
}

void *vgpu__am_remove(struct vgpu_addrmap *m, uint64_t base)
{
	struct vgpu_range *r = vgpu__am_find_base(m, base);
	size_t i;
	void *obj;

	if (!r)
		return NULL;
	i = (size_t)(r - m->r);
	obj = r->obj;
	memmove(&m->r[i], &m->r[i + 1], (m->n - i - 1) * sizeof(*m->r));
	m->n--;
	return obj;
}
