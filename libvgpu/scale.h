/* SPDX-License-Identifier: MIT */
/*
 * scale.h - what metrics.c and status.c need of the server (internal).
 * (Autoscale plugins run in the engine; the server hands it the demand of
 * waiting pool clients with vgpu__engine_scale_demand.)
 */
#ifndef VGPU_SCALE_H
#define VGPU_SCALE_H

#include "vgpu.h"
#include "vgpu/pool.h"

struct vgpu_server;

/* The server's status (server.c); freed with vgpu_node_status_free. */
vgpu_status vgpu__server_node_status(struct vgpu_server *s, struct vgpu_node_status **out);

/* Prometheus responder (metrics.c). */
struct vgpu__metrics;
vgpu_status vgpu__metrics_start(struct vgpu_server *srv, const char *hostport, char *bound,
				size_t boundlen, struct vgpu__metrics **out);
void vgpu__metrics_stop(struct vgpu__metrics *mt);

#endif
