/* SPDX-License-Identifier: MIT */
/*
 * transport.h - the transport registry. Internal.
 *
 * The ops table itself is public (vgpu/transport.h, for transport authors).
 * Built in: tcp and unix (transports/tcp), uring (transports/uring). Others
 * (rdma) are modules loaded on first use of their scheme: transport_<scheme>.so
 * from $VGPU_TRANSPORT_PATH, then VGPU_TRANSPORTDIR. Never unloaded.
 */
#ifndef VGPU_TRANSPORT_H
#define VGPU_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include "vgpu.h"
#include "vgpu/transport.h"
#include "uri.h"

/* The transport serving a URI scheme, loading its module if needed; NULL
 * with the thread's error set ("no transport for scheme 'x'", or why the
 * module could not be loaded). */
const struct vgpu_transport_ops *vgpu__transport_find(const char *scheme);

/* Fill a transport address view of a parsed URI (points into u). */
void vgpu__tp_addr(const struct vgpu_uri *u, struct vgpu_tp_addr *a);

/* Host services handed to transports (built in and modules). */
extern const struct vgpu_transport_host vgpu__transport_host;

extern const struct vgpu_transport_ops vgpu__transport_tcp;
/* tcp.c helpers for the uring transport (same sockets, other I/O). */
int vgpu__tcp_conn_release(struct vgpu_tp_conn *c, char *peer, size_t peerlen);
int vgpu__tcp_listener_fd(struct vgpu_tp_listener *l);
extern const struct vgpu_transport_ops vgpu__transport_uring;

#endif
