/* SPDX-License-Identifier: MIT */
/*
 * pluginhost.h - loading plugins, parsing their parameters, plugin specs.
 * Internal. The engine instantiates what this parses (engine.c).
 */
#ifndef VGPU_PLUGINHOST_H
#define VGPU_PLUGINHOST_H

#include "vgpu.h"
#include "vgpu/plugin.h"

/* A loaded plugin (never unloaded; lives until exit). */
struct vgpu__plugin {
	const struct vgpu_plugin_desc *desc;
	char name[64];
	char path[1024];
	struct vgpu__plugin *next;
};

/* One "NAME[:key=value,...]" of a spec list, parsed and validated. */
struct vgpu__plugin_conf {
	const struct vgpu__plugin *plugin;
	struct vgpu_plugin_config cfg;   /* values in table order */
	union vgpu_param_value *values;
	char **strings;                  /* owned strings (STRING values, list items) */
	unsigned nstrings;
	char *spec;                      /* "NAME:key=value,..." as given */
};

/* A spec list: "sched-fair:weights=a=3;b=1 mem-quota:limit=1G" (specs are
 * separated by blanks, or by ',' before a token without '=' or whose key
 * holds ':'). */
struct vgpu__plugin_set {
	struct vgpu__plugin_conf **v;
	unsigned n;
	char *text;                      /* the list as given */
};

/* Find NAME.so on the search path and load it (cached). VGPU_ERR_NOT_FOUND
 * (naming the directories searched) or VGPU_ERR_PLUGIN (wrong ABI, bad
 * descriptor) with the message set. */
vgpu_status vgpu__plugin_load(const char *name, const struct vgpu__plugin **out);
/* Load the plugin and parse "key=value,..." (may be NULL or "") against its
 * table. Unknown or malformed parameters: VGPU_ERR_PLUGIN naming them. */
vgpu_status vgpu__plugin_conf_new(const char *spec, struct vgpu__plugin_conf **out);
void vgpu__plugin_conf_free(struct vgpu__plugin_conf *c);
/* Parse a spec list; text NULL or blank gives an empty set. */
vgpu_status vgpu__plugin_set_parse(const char *text, struct vgpu__plugin_set *out);
void vgpu__plugin_set_free(struct vgpu__plugin_set *set);
/* The conf of the given kind in set (the first), or NULL. */
const struct vgpu__plugin_conf *vgpu__plugin_set_find(const struct vgpu__plugin_set *set,
						      uint32_t kind);

/* Parse a duration ("100ms", "2s", "500us", "10ns"; a bare number is ms). */
vgpu_status vgpu__parse_time_ns(const char *s, uint64_t *out);

#endif
