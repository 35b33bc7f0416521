/* SPDX-License-Identifier: MIT */
/* sched-badabi - a plugin that claims a plugin ABI libvgpu does not speak;
 * the loader must refuse it (tests/test_sched.c). */
#include <vgpu/plugin.h>

static const struct vgpu_sched_ops ops = { sizeof(ops), 0, 0, 0, 0, 0, 0 };

static const struct vgpu_plugin_desc desc = {
	.abi_version = 999,
	.kind = VGPU_PLUGIN_SCHEDULER,
	.name = "sched-badabi",
	.description = "built for a future ABI",
	.version = "0",
	.ops = &ops,
};

VGPU_PLUGIN_DEFINE(desc)
