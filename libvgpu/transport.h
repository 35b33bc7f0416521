/* SPDX-License-Identifier: MIT */
/*
 * transport.h - byte transports under the wire protocol. Internal for now
 * (io_uring and UCX transports come later and implement the same table).
 *
 * A transport moves whole messages out (send: header, msgpack body and raw
 * bulk bytes as one iovec array, never copied into one buffer) and bytes in
 * (recv: at least `min`, at most `max` bytes, so the protocol layer can keep
 * a read-ahead buffer for small frames and receive bulk straight into the
 * caller's memory). One reader thread per connection; send may be called
 * from any thread but the protocol layer serialises messages.
 *
 * Calls return 0 / a byte count or a negative vgpu_status with the thread's
 * message set (vgpu__error).
 */
#ifndef VGPU_TRANSPORT_H
#define VGPU_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include "vgpu.h"
#include "uri.h"

struct vgpu_tp_listener;
struct vgpu_tp_conn;

#define VGPU_TP_CAP_ZEROCOPY_SEND 0x1u /* send() does not copy bulk bytes */
#define VGPU_TP_CAP_REGISTERED_MEM 0x2u /* supports registered memory */
#define VGPU_TP_CAP_LOCAL 0x4u /* same-host only (unix sockets) */

struct vgpu_transport_ops {
	size_t size;           /* sizeof(struct vgpu_transport_ops) */
	const char *name;      /* "tcp" */
	const char *const *schemes; /* NULL-terminated: "tcp", "unix" */
	unsigned int caps;     /* VGPU_TP_CAP_* */

	/* Bind and listen. bound receives the URI with the real port
	 * ("tcp://127.0.0.1:41234"), without device or parameters. */
	vgpu_status (*listen)(const struct vgpu_uri *u, struct vgpu_tp_listener **l,
			      char *bound, size_t boundlen);
	/* Blocking accept; VGPU_ERR_CLOSED once listen_shutdown was called. */
	vgpu_status (*accept)(struct vgpu_tp_listener *l, struct vgpu_tp_conn **c);
	/* Wake a blocked accept and refuse new connections. */
	void (*listen_shutdown)(struct vgpu_tp_listener *l);
	void (*listen_close)(struct vgpu_tp_listener *l);
	/* Is the listener reachable from other hosts? (secrets required) */
	int (*listen_is_remote)(const struct vgpu_uri *u);

	vgpu_status (*connect)(const struct vgpu_uri *u, uint32_t timeout_ms,
			       struct vgpu_tp_conn **c);
	/* Send every byte of iov[0..n) or fail (VGPU_ERR_CONNECTION). */
	vgpu_status (*send)(struct vgpu_tp_conn *c, const struct iovec *iov, int n);
	/* Receive between min and max bytes; 0 bytes at EOF is an error
	 * (VGPU_ERR_CONNECTION, "connection closed by peer"). */
	ssize_t (*recv)(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max);
	/* Send/receive timeout (0 = none), for handshakes. */
	vgpu_status (*set_timeout)(struct vgpu_tp_conn *c, uint32_t ms);
	/* Wake every thread blocked in recv/send on c (they fail). */
	void (*shutdown)(struct vgpu_tp_conn *c, int read_only);
	void (*close)(struct vgpu_tp_conn *c);
	/* "127.0.0.1:53412", "unix" */
	const char *(*peer)(struct vgpu_tp_conn *c);
};

/* The transport serving a URI scheme, or NULL. */
const struct vgpu_transport_ops *vgpu__transport_find(const char *scheme);

extern const struct vgpu_transport_ops vgpu__transport_tcp;

#endif
