/* SPDX-License-Identifier: MIT */
/*
 * vgpu/server.h - embed a libvgpu server (what vgpud runs) in a program.
 *
 *   struct vgpu_server_opts o = VGPU_SERVER_OPTS_INIT;
 *   vgpu_server *srv;
 *   char uri[256];
 *   vgpu_server_create(&srv, &o);
 *   vgpu_server_listen(srv, "tcp://127.0.0.1:0", uri, sizeof(uri));
 *   vgpu_server_start(srv);         // accepts connections from now on
 *   ...
 *   vgpu_server_stop(srv);          // stop accepting, finish in-flight calls
 *   vgpu_server_destroy(srv);
 *
 * Clients reach it with vgpu_open("tcp://host:port/0"). Every client gets
 * its own session of the server's engine; when it disconnects (or dies)
 * every object of the session is released.
 *
 * Security: a server listening on anything but loopback or a unix socket
 * refuses to start without a secrets file. On the cpu backend, a module is a
 * native shared object: loading one sent by a client runs the client's code
 * in the server. Client module uploads are therefore refused on the cpu
 * backend unless VGPU_SERVER_ALLOW_NATIVE_MODULES is set.
 */
#ifndef VGPU_SERVER_H
#define VGPU_SERVER_H

#include <vgpu.h>
#include <vgpu/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vgpu_server vgpu_server;

/* Let clients load native (cpu backend) modules: runs their code here. */
#define VGPU_SERVER_ALLOW_NATIVE_MODULES 0x1u

/*
 * Options. Set .size = sizeof(struct vgpu_server_opts) (VGPU_SERVER_OPTS_INIT
 * does); fields past .size are taken as zero.
 */
struct vgpu_server_opts {
	size_t size;
	unsigned int flags;        /* VGPU_SERVER_* */
	const char *backend;       /* "cpu" (NULL) or "cuda" */
	/* File of "tenant:secret" lines ("secret" alone: any tenant); clients
	 * authenticate with HMAC-SHA256 of a server nonce. NULL: no
	 * authentication, allowed on loopback and unix sockets only. */
	const char *secrets_file;
	uint32_t stop_timeout_ms;  /* in-flight calls at stop; 0 = 10 s */
	int workers;               /* engine worker threads; 0 = default */
	unsigned int max_connections; /* more are refused (VGPU_ERR_BUSY); 0 = 1024 */
	/* Plugins (see vgpu-plugin(7)): blank-separated "NAME[:key=value,...]"
	 * specs; scheduler and memory plugins go to the engine, autoscale
	 * plugins too, fed by the server's waiting pool clients
	 * (docs/autoscale.md). Scheduling: vgpu-sched(7). */
	const char *plugins;
	unsigned int slots;        /* with a scheduler: items a device runs at once; 0 = 1 */
	/* Sessions a device admits at once; more wait in the admission queue.
	 * Pool clients see the server as full and place elsewhere. 0: unlimited. */
	unsigned int max_sessions;
	int admit_queue;           /* sessions waiting for admission; 0 = 16, < 0 = none */
	uint32_t admit_timeout_ms; /* longest admission wait; 0 = 10 s */
	const char *tenant_shares; /* device-time caps per tenant: "alice=0.25;bob=0.5" */
	/* Per-connection deadline: once a client has started a frame, each read
	 * (and each send to it) must make progress within this many ms, or the
	 * connection is closed; idle connections between frames are kept.
	 * 0 = 30000; UINT32_MAX = none. */
	uint32_t frame_timeout_ms;
	/* Backend parameters every device is opened with, as a URI query:
	 * "devmem=8G" (the cpu device's memory). Clients' URIs never size or
	 * configure a device (their mem= is a quota or a placement hint).
	 * NULL: the backend's defaults. */
	const char *device_params;
	/* Bytes of queued work one session may hold (launches, copies, records
	 * not yet run: about 160 bytes a launch) before its connection is read
	 * no further until the device has run a quarter of them; the client's
	 * asynchronous calls then wait, as cuLaunchKernel does on a full queue.
	 * Bounds the server's memory at about max_connections times this.
	 * 0 = 16 MiB; SIZE_MAX = no limit. */
	size_t queue_limit;
	/* Live streams, events, modules and functions one session may hold, of
	 * each (a stream or an event takes about 650 bytes of the server's
	 * memory); more are refused with VGPU_ERR_NO_HOST_MEMORY naming the
	 * limit. 0 = 65536; UINT_MAX = as many as the handle tables hold (2^20). */
	unsigned int max_handles;
};
#define VGPU_SERVER_OPTS_INIT { sizeof(struct vgpu_server_opts), 0, NULL, NULL, 0, 0, 0, \
				NULL, 0, 0, 0, 0, NULL, 0, NULL, 0, 0 }

VGPU_API vgpu_status vgpu_server_create(vgpu_server **srv, const struct vgpu_server_opts *opts);
/*
 * Bind a listener ("tcp://127.0.0.1:7100", "tcp://0.0.0.0:0", "unix:///run/vgpud.sock").
 * bound (may be NULL) receives the URI with the real port. Connections are
 * accepted once vgpu_server_start() ran.
 */
VGPU_API vgpu_status vgpu_server_listen(vgpu_server *srv, const char *uri, char *bound,
					size_t boundlen);
/* Number of listeners and the URI of listener i (NULL when out of range). */
VGPU_API unsigned int vgpu_server_listener_count(const vgpu_server *srv);
VGPU_API const char *vgpu_server_listener_uri(const vgpu_server *srv, unsigned int i);
VGPU_API vgpu_status vgpu_server_start(vgpu_server *srv);
/* Stop accepting, let in-flight calls finish (bounded by stop_timeout_ms),
 * close every session. VGPU_ERR_TIMEOUT if some client could not be drained. */
VGPU_API vgpu_status vgpu_server_stop(vgpu_server *srv);
/*
 * The server's status as vgpu_node_status_get() would return it to a
 * client (devices, sessions with tenant names and usage, waiting pool
 * clients). Free with vgpu_node_status_free().
 */
VGPU_API vgpu_status vgpu_server_status(vgpu_server *srv, struct vgpu_node_status **out);
/*
 * Serve Prometheus metrics (text format 0.0.4) on http://HOSTPORT/metrics
 * from a small responder thread. hostport: "127.0.0.1:9400" (port 0: any;
 * bound receives "HOST:PORT"). Call once, before or after start.
 */
VGPU_API vgpu_status vgpu_server_metrics_listen(vgpu_server *srv, const char *hostport,
						char *bound, size_t boundlen);
/* The metrics text (malloc'd, NUL-terminated; free() it). */
VGPU_API vgpu_status vgpu_server_metrics_text(vgpu_server *srv, char **text);

/* Stops if needed, then frees everything. NULL is ignored. */
VGPU_API void vgpu_server_destroy(vgpu_server *srv);

#ifdef __cplusplus
}
#endif
#endif
