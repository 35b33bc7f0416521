/* SPDX-License-Identifier: MIT */
/* backend.c - the table of built-in backends. */
#include "config.h"

#include <string.h>

#include "backend.h"

static const struct vgpu_backend_ops *const backends[] = {
	&vgpu__cpu_backend,
#ifdef VGPU_HAVE_CUDA_BACKEND
	&vgpu__cuda_backend,
#endif
};

const struct vgpu_backend_ops *vgpu__backend_find(const char *name)
{
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (!strcmp(backends[i]->name, name))
			return backends[i];
	return NULL;
}
