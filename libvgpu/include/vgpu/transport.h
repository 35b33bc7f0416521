/* SPDX-License-Identifier: MIT */
/*
 * vgpu/transport.h - for transport authors.
 *
 * A transport moves libvgpu protocol messages between a client and a
 * server. The library ships tcp and unix (built in), uring (built in: io_uring
 * through liburing) and rdma (a module, UCX); others can be added as modules
 * without rebuilding the library.
 *
 * A module is a shared object named "transport_<name>.so" found in
 * $VGPU_TRANSPORT_PATH (colon-separated directories), then in the installed
 * transport directory (${libdir}/vgpu/transports). It exports one symbol,
 *
 *     const struct vgpu_transport_ops *
 *     vgpu_transport_init(const struct vgpu_transport_host *host, unsigned int abi);
 *
 * which returns its ops table or NULL (after host->error(): "UCX is not
 * usable: ..."). The library refuses a table whose abi differs from
 * VGPU_TRANSPORT_ABI or whose size is smaller than the fields it reads;
 * tables only grow at the end. Modules are never unloaded.
 *
 * Semantics, for every transport:
 *  - send(c, iov, n): every byte of iov[0..n) leaves, in order, or the call
 *    fails (VGPU_ERR_CONNECTION). One call may carry several protocol
 *    messages or a part of one: the byte stream is what counts. The caller's
 *    buffers may be reused as soon as send returns (a zero-copy transport
 *    waits for its completion notifications before returning);
 *    send_deferred (optional, below) lets the last segment stay in
 *    flight until flush.
 *    The library passes at most VGPU_TP_MAX_IOV segments per call (send,
 *    send_recv, send_deferred).
 *  - recv(c, buf, min, max): between min and max bytes of the stream, in
 *    order. The protocol layer calls it with a small read-ahead buffer for
 *    headers and with min == max == n for bulk data that should land
 *    straight in the caller's memory. End of stream is an error.
 *  - one thread receives on a connection; send is serialised by the caller
 *    but may come from another thread than recv; shutdown may come from any
 *    thread and must wake both.
 * Calls return VGPU_OK (0), a byte count, or a negative vgpu_status after
 * host->error() has set the thread's message.
 */
#ifndef VGPU_TRANSPORT_PUBLIC_H
#define VGPU_TRANSPORT_PUBLIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <vgpu.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VGPU_TRANSPORT_ABI 1u
/* Segments (iovecs) the library passes in one send call, at most. */
#define VGPU_TP_MAX_IOV 16

/* Opaque, defined by each transport. */
struct vgpu_tp_listener;
struct vgpu_tp_conn;

/* Capabilities (ops->caps). */
#define VGPU_TP_CAP_ZEROCOPY_SEND 0x1u  /* send() does not copy bulk bytes */
#define VGPU_TP_CAP_REGISTERED_MEM 0x2u /* uses registered memory (RDMA) */
#define VGPU_TP_CAP_LOCAL 0x4u          /* same-host only (unix sockets) */
#define VGPU_TP_CAP_MESSAGES 0x8u       /* message transport underneath (UCX) */

/* A parsed URI as handed to a transport ("uring://127.0.0.1:0/0?x=y"). */
struct vgpu_tp_addr {
	size_t size;         /* sizeof(struct vgpu_tp_addr) of the library */
	const char *text;    /* the URI as given (may carry secrets: do not log) */
	const char *scheme;  /* "uring" */
	const char *host;    /* "127.0.0.1"; "" when absent */
	int port;            /* -1 when absent; 0: any free port (listen) */
	const char *path;    /* unix socket path; "" otherwise */
	/* Value of ?key=..., or NULL. */
	const char *(*param)(const struct vgpu_tp_addr *a, const char *key);
	const void *priv;    /* the library's */
};

/* What the library hands a module (the only host functions it may call). */
struct vgpu_transport_host {
	size_t size;
	/* Set this thread's error message; returns st (< 0). */
	vgpu_status (*error)(vgpu_status st, const char *fmt, ...)
#if defined(__GNUC__)
		__attribute__((format(printf, 2, 3)))
#endif
		;
	/* Log to stderr, filtered by VGPU_LOG. lvl: 0 error .. 3 debug. */
	void (*log)(int lvl, const char *fmt, ...)
#if defined(__GNUC__)
		__attribute__((format(printf, 2, 3)))
#endif
		;
	/* This thread's current error message. */
	const char *(*error_msg)(void);
};

struct vgpu_transport_ops {
	size_t size;                 /* sizeof(struct vgpu_transport_ops) */
	unsigned int abi;            /* VGPU_TRANSPORT_ABI */
	const char *name;            /* "tcp" */
	const char *const *schemes;  /* NULL-terminated: "tcp", "unix" */
	unsigned int caps;           /* VGPU_TP_CAP_* */

	/* Bind and listen. bound receives the URI with the real port
	 * ("tcp://127.0.0.1:41234"), without device or parameters. */
	vgpu_status (*listen)(const struct vgpu_tp_addr *a, struct vgpu_tp_listener **l,
			      char *bound, size_t boundlen);
	/* Blocking accept; VGPU_ERR_CLOSED once listen_shutdown was called. */
	vgpu_status (*accept)(struct vgpu_tp_listener *l, struct vgpu_tp_conn **c);
	/* Wake a blocked accept and refuse new connections. */
	void (*listen_shutdown)(struct vgpu_tp_listener *l);
	void (*listen_close)(struct vgpu_tp_listener *l);
	/* Is the listener reachable from other hosts? (then secrets are required) */
	int (*listen_is_remote)(const struct vgpu_tp_addr *a);

	vgpu_status (*connect)(const struct vgpu_tp_addr *a, uint32_t timeout_ms,
			       struct vgpu_tp_conn **c);
	vgpu_status (*send)(struct vgpu_tp_conn *c, const struct iovec *iov, int n);
	ssize_t (*recv)(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max);
	/* Send/receive timeout (0 = none), for handshakes. */
	vgpu_status (*set_timeout)(struct vgpu_tp_conn *c, uint32_t ms);
	/* Wake every thread blocked in recv/send on c (they fail). read_only:
	 * stop receiving only (replies still flow). */
	void (*shutdown)(struct vgpu_tp_conn *c, int read_only);
	void (*close)(struct vgpu_tp_conn *c);
	/* "127.0.0.1:53412", "unix" */
	const char *(*peer)(struct vgpu_tp_conn *c);

	/* ---- optional from here: check size, and NULL means absent ---- */

	/* send(c, iov, n), then recv(c, buf, min, max), where the transport can
	 * do both in fewer system calls (uring: one io_uring_enter submits the
	 * request and waits for the reply): a synchronous call.
	 *  - The caller holds the receiving role (it is the one thread reading
	 *    c, as for recv) and has serialised this call with every other send
	 *    (as for send), so it may be called by one thread at a time.
	 *  - Serialisation: the bytes of iov leave contiguously, as with send.
	 *    The transport may keep other senders of c waiting until the reply
	 *    has begun to arrive, so the caller should use it only when no
	 *    other thread is waiting to send or to read.
	 *  - The timeout of set_timeout applies as to send and recv. A reply
	 *    that has not begun within it: VGPU_ERR_TIMEOUT, which (alone among
	 *    failures) means that the request left whole and nothing was
	 *    received, so the caller may recv again, as after recv's timeout.
	 *  - Returns the number of bytes received (min..max), or a negative
	 *    vgpu_status (host->error() called); after any other failure the
	 *    caller cannot tell whether the request left: treat the connection
	 *    as lost. shutdown() from another thread wakes it, as it wakes recv.
	 * NULL: the library calls send, then recv. */
	ssize_t (*send_recv)(struct vgpu_tp_conn *c, const struct iovec *iov, int n, void *buf,
			     size_t min, size_t max);
	/* send(c, iov, n), except that the transport may go on reading the
	 * LAST segment, iov[n-1] (the bulk of a protocol message), after the
	 * call returns: several bulk transfers can then be in flight at once
	 * (rdma: one rendezvous per 1 MiB chunk of a large copy, where send
	 * waits for each to complete).
	 *  - The caller keeps the memory of iov[n-1] valid and unchanged
	 *    until its next flush(c) returns, whatever that returns. Every
	 *    other segment may be reused as soon as send_deferred returns
	 *    (the transport copies them or waits for them: headers may live
	 *    on the caller's stack).
	 *  - Ordering and serialisation as for send: the bytes leave in
	 *    order with those of every other send, send_deferred and
	 *    send_recv on c, and the caller serialises all of them and flush.
	 *    A plain send does not release earlier deferred segments: only
	 *    flush does. The transport bounds what it keeps in flight (it
	 *    may wait for an earlier transfer before starting the next).
	 *  - Errors: VGPU_ERR_CONNECTION when this call or an earlier
	 *    deferred transfer failed (the connection is then lost; the
	 *    caller still calls flush before releasing its memory).
	 * NULL: the library calls send (and no flush). Present only with flush. */
	vgpu_status (*send_deferred)(struct vgpu_tp_conn *c, const struct iovec *iov, int n);
	/* Wait until the transport reads no segment of an earlier
	 * send_deferred on c any more. VGPU_OK: every byte of them left (as
	 * send's VGPU_OK); VGPU_ERR_CONNECTION: one failed, or the connection
	 * was lost, timed out (set_timeout) or shut down; the memory is
	 * released in every case once flush returns. shutdown(c, 0) from
	 * another thread wakes a waiting flush, which then cancels what is
	 * still in flight. Called by the sending side (serialised as send). */
	vgpu_status (*flush)(struct vgpu_tp_conn *c);
	/* recv(c, buf, n, n), except that the transport may go on writing
	 * buf after the call returns: the fetches of several bulk messages
	 * can then be in flight at once (rdma: the receiver asks for each
	 * rendezvous as soon as it knows where the bytes go, instead of one
	 * round trip after the other).
	 *  - The n bytes are the next n of the stream; a later recv,
	 *    recv_deferred or send_recv returns the bytes after them.
	 *  - The caller neither reads nor frees buf until its next
	 *    recv_flush(c) has returned, whatever that returns.
	 *  - The transport bounds what it keeps in flight (it may wait for an
	 *    earlier fetch first), and may receive synchronously (as recv)
	 *    whenever it cannot defer, e.g. when the bytes are not one bulk
	 *    message of its own.
	 *  - Errors: as recv's (the connection is then lost; the caller
	 *    still calls recv_flush before it releases buf).
	 * Called by the receiving thread. NULL: the library calls recv (and
	 * no recv_flush). Present only with recv_flush. */
	vgpu_status (*recv_deferred)(struct vgpu_tp_conn *c, void *buf, size_t n);
	/* Wait until no earlier recv_deferred of c writes its buffer any
	 * more. VGPU_OK: every byte of them landed. VGPU_ERR_CONNECTION: one
	 * failed, or the connection was lost, timed out (set_timeout) or
	 * shut down; what was still in flight is cancelled, and the buffers
	 * are released in every case once recv_flush returns. shutdown(c, 0)
	 * from another thread wakes a waiting recv_flush, which then cancels
	 * what is still in flight; after shutdown(c, 1) (stop reading) the
	 * fetches under way may finish.
	 * Called by the receiving thread. */
	vgpu_status (*recv_flush)(struct vgpu_tp_conn *c);
	/* send_recv, except that the bytes received fill riov[0..rn) in
	 * order (a scatter receive, like readv): the first riov[0].iov_len
	 * bytes go to riov[0], the next to riov[1], and so on. The client
	 * receives a small synchronous dtoh this way, the reply's header and
	 * body into its read-ahead buffer and its bulk straight into the
	 * caller's memory: one call, no copy.
	 *  - min <= riov[0].iov_len; 1 <= rn <= VGPU_TP_MAX_IOV. Returns the
	 *    number of bytes received (at least min, at most the sum of the
	 *    lengths), or a negative vgpu_status, exactly as send_recv.
	 *  - Serialisation, timeouts, VGPU_ERR_TIMEOUT and shutdown: as
	 *    send_recv.
	 * NULL: the library does not receive in place; the reply goes
	 * through its read-ahead buffer (send_recv, or send then recv). */
	ssize_t (*send_recvv)(struct vgpu_tp_conn *c, const struct iovec *iov, int n,
			      const struct iovec *riov, int rn, size_t min);
	/* New fields go here (check size before reading them). */
};

/* The entry point of a transport module. */
typedef const struct vgpu_transport_ops *(*vgpu_transport_init_fn)(
	const struct vgpu_transport_host *host, unsigned int abi);
#define VGPU_TRANSPORT_INIT_SYMBOL "vgpu_transport_init"

#ifdef __cplusplus
}
#endif

#endif
