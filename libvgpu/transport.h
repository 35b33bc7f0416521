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

/* Does tp have send_deferred and flush? (optional fields: size checked) */
static inline int vgpu__tp_can_defer(const struct vgpu_transport_ops *tp)
{
	return tp->size >= offsetof(struct vgpu_transport_ops, flush) + sizeof(tp->flush) &&
	       tp->send_deferred && tp->flush;
}

/* tp->send_deferred where the transport has it, else tp->send. */
static inline vgpu_status vgpu__tp_send_deferred(const struct vgpu_transport_ops *tp,
						 struct vgpu_tp_conn *c, const struct iovec *iov,
						 int n)
{
	return vgpu__tp_can_defer(tp) ? tp->send_deferred(c, iov, n) : tp->send(c, iov, n);
}

/* tp->flush where the transport has it (else nothing is in flight). */
static inline vgpu_status vgpu__tp_flush(const struct vgpu_transport_ops *tp,
					 struct vgpu_tp_conn *c)
{
	return vgpu__tp_can_defer(tp) ? tp->flush(c) : VGPU_OK;
}

/* Does tp have recv_deferred and recv_flush? */
static inline int vgpu__tp_can_defer_recv(const struct vgpu_transport_ops *tp)
{
	return tp->size >= offsetof(struct vgpu_transport_ops, recv_flush) +
				   sizeof(tp->recv_flush) &&
	       tp->recv_deferred && tp->recv_flush;
}

/* tp->recv_flush where the transport has it (else nothing is in flight). */
static inline vgpu_status vgpu__tp_recv_flush(const struct vgpu_transport_ops *tp,
					      struct vgpu_tp_conn *c)
{
	return vgpu__tp_can_defer_recv(tp) ? tp->recv_flush(c) : VGPU_OK;
}

/* Does tp have send_recv? send_recvv? */
static inline int vgpu__tp_has_send_recv(const struct vgpu_transport_ops *tp)
{
	return tp->size >= offsetof(struct vgpu_transport_ops, send_recv) + sizeof(tp->send_recv) &&
	       tp->send_recv;
}

static inline int vgpu__tp_has_send_recvv(const struct vgpu_transport_ops *tp)
{
	return tp->size >= offsetof(struct vgpu_transport_ops, send_recvv) +
				   sizeof(tp->send_recvv) &&
	       tp->send_recvv;
}

extern const struct vgpu_transport_ops vgpu__transport_tcp;
/* tcp.c helpers for the uring transport (same sockets, other I/O). */
int vgpu__tcp_conn_release(struct vgpu_tp_conn *c, char *peer, size_t peerlen);
int vgpu__tcp_listener_fd(struct vgpu_tp_listener *l);
extern const struct vgpu_transport_ops vgpu__transport_uring;

#endif
