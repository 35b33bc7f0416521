/* SPDX-License-Identifier: MIT */
/* remote.h - remote door extras (internal; for tests and tools). */
#ifndef VGPU_REMOTE_H
#define VGPU_REMOTE_H

#include <stdint.h>
#include "vgpu.h"

/* Engine-wide figures of the server's device behind a remote handle:
 * open sessions, bytes allocated by all sessions, allocations. */
vgpu_status vgpu__remote_server_stats(vgpu_t *v, uint64_t *sessions, uint64_t *mem_used,
				      uint64_t *allocations);

/* Synchronous dtoh replies whose bulk a scatter receive (send_recvv) put
 * straight into the caller's memory (in_place), and those whose shape was
 * not the one predicted, their bytes moved back and read as usual (moved). */
vgpu_status vgpu__remote_scatter_stats(vgpu_t *v, uint64_t *in_place, uint64_t *moved);

/* Serve one connection on the calling thread until it ends (handshake,
 * requests, teardown), as a listener's reader thread would: for fuzzing and
 * tests that feed the server from memory. tc belongs to tp and is closed. */
struct vgpu_server;
struct vgpu_transport_ops;
struct vgpu_tp_conn;
vgpu_status vgpu__server_serve_conn(struct vgpu_server *s, const struct vgpu_transport_ops *tp,
				    struct vgpu_tp_conn *tc, const char *label);

#endif
