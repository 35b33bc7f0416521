/* SPDX-License-Identifier: MIT */
/*
 * scale.h - the autoscale host of a server (internal; see scale.c): loads
 * autoscale plugins and feeds them pressure signals once a second.
 */
#ifndef VGPU_SCALE_H
#define VGPU_SCALE_H

#include "vgpu.h"
#include "vgpu/pool.h"

struct vgpu_server;
struct vgpu__scale;

/* The server's status (server.c); freed with vgpu_node_status_free. */
vgpu_status vgpu__server_node_status(struct vgpu_server *s, struct vgpu_node_status **out);

/* Split a spec list into the engine's (scheduler, memory) and the
 * autoscale ones (either may come back NULL; free() both). */
vgpu_status vgpu__scale_split(const char *plugins, char **engine_specs, char **scale_specs);
/* plugins: blank-separated "NAME[:key=value,...]" specs, autoscale kind. */
vgpu_status vgpu__scale_create(struct vgpu_server *s, const char *plugins,
			       struct vgpu__scale **out);
vgpu_status vgpu__scale_start(struct vgpu__scale *sc);
/* NULL is ignored by both. */
void vgpu__scale_stop(struct vgpu__scale *sc);
void vgpu__scale_destroy(struct vgpu__scale *sc);

/* Prometheus responder (metrics.c). */
struct vgpu__metrics;
vgpu_status vgpu__metrics_start(struct vgpu_server *srv, const char *hostport, char *bound,
				size_t boundlen, struct vgpu__metrics **out);
void vgpu__metrics_stop(struct vgpu__metrics *mt);

#endif
