/* SPDX-License-Identifier: MIT */
/* status.h - status request codec and client side (internal; see status.c). */
#ifndef VGPU_STATUS_H
#define VGPU_STATUS_H

#include <msgpack.h>
#include "proto.h"
#include "uri.h"
#include "vgpu/pool.h"

/* Caps of a status reply (it must fit one VGPU_PROTO_MAX_BODY body). */
#define VGPU_STATUS_MAX_DEVICES 64
#define VGPU_STATUS_MAX_SESSIONS 256
#define VGPU_STATUS_MAX_TENANTS 128

void vgpu__pack_node_status(msgpack_packer *pk, const struct vgpu_node_status *s);
/* Allocates the arrays of s (vgpu_node_status_free). */
int vgpu__unpack_node_status(struct vgpu_mp *m, struct vgpu_node_status *s);

/* Sessionless status request to the server of u. wait_id != 0: a pool
 * client waiting for capacity (mem_wanted bytes). */
vgpu_status vgpu__status_query(const struct vgpu_uri *u, const struct vgpu_open_opts *opts,
			       uint64_t wait_id, uint64_t mem_wanted, struct vgpu_node_status **out);

#endif
