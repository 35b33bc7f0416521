/* SPDX-License-Identifier: MIT */
/*
 * metrics.c - Prometheus metrics of a server: the text (format 0.0.4) and a
 * small HTTP responder thread (GET /metrics; one request per connection,
 * served in turn: scrapes are rare and the text is built in microseconds).
 *
 * Names follow the Prometheus conventions: vgpu_ prefix, base units
 * (bytes, seconds), _total for counters, HELP and TYPE for each family.
 * Tenant names appear as label values (an operator view, as `vgpu smi`);
 * tokens and secrets never do.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "vgpu/server.h"
#include "error.h"
#include "scale.h"

struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) VGPU_PRINTF(2, 3);
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = 1;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		{
			size_t nc = (b->cap + (size_t)n + 1) * 2;
			char *np = realloc(b->p, nc);

			if (!np) {
				b->oom = 1;
				return;
			}
			b->p = np;
			b->cap = nc;
		}
	}
}

/* A label value with \\, \" and \n escaped (into a static-size buffer). */
static const char *esc(const char *s, char *buf, size_t len)
{
	size_t o = 0;

	for (; *s && o + 3 < len; s++) {
		if (*s == '\\' || *s == '"') {
			buf[o++] = '\\';
			buf[o++] = *s;
		} else if (*s == '\n') {
			buf[o++] = '\\';
			buf[o++] = 'n';
		} else {
			buf[o++] = *s;
		}
	}
	buf[o] = '\0';
	return buf;
}

static void family(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static double secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

static void render(struct sbuf *b, const struct vgpu_node_status *st)
{
	char e1[200], e2[300];
	uint32_t i;

#define DEV_LOOP(N, type, help, fmt, expr) do { \
	family(b, N, type, help); \
	for (i = 0; i < st->ndevices; i++) { \
		const struct vgpu_node_device *d = &st->devices[i]; \
		sb_printf(b, N "{device=\"%d\"} " fmt "\n", d->index, expr); \
	} } while (0)
#define TEN_LOOP(N, type, help, fmt, expr) do { \
	family(b, N, type, help); \
	for (i = 0; i < st->ntenants; i++) { \
		const struct vgpu_node_tenant *t = &st->tenants[i]; \
		sb_printf(b, N "{tenant=\"%s\"} " fmt "\n", esc(t->tenant, e1, sizeof(e1)), expr); \
	} } while (0)
#define TP_LOOP(N, help, expr) do { \
	family(b, N, "counter", help); \
	for (i = 0; i < st->ntransports; i++) { \
		const struct vgpu_node_transport *t = &st->transports[i]; \
		sb_printf(b, N "{transport=\"%s\"} %llu\n", esc(t->name, e1, sizeof(e1)), \
			  (unsigned long long)(expr)); \
	} } while (0)

	family(b, "vgpu_build_info", "gauge", "Server version and backend (always 1).");
	sb_printf(b, "vgpu_build_info{server=\"%s\",backend=\"%s\"} 1\n",
		  esc(st->server, e1, sizeof(e1)), esc(st->backend, e2, sizeof(e2)));
	family(b, "vgpu_uptime_seconds", "gauge", "Seconds since the server started.");
	sb_printf(b, "vgpu_uptime_seconds %.3f\n", secs(st->uptime_ns));
	family(b, "vgpu_sessions", "gauge", "Open sessions (clients) on all devices.");
	sb_printf(b, "vgpu_sessions %u\n", st->sessions);
	family(b, "vgpu_sessions_max", "gauge", "Session capacity of the server (0: unlimited).");
	sb_printf(b, "vgpu_sessions_max %u\n", st->max_sessions);
	family(b, "vgpu_sessions_refused_total", "counter",
	       "Sessions refused because the server was full.");
	sb_printf(b, "vgpu_sessions_refused_total %llu\n", (unsigned long long)st->refused);
	family(b, "vgpu_queue_waiting_clients", "gauge",
	       "Pool clients waiting for capacity (admission queue).");
	sb_printf(b, "vgpu_queue_waiting_clients %u\n", st->waiting);
	family(b, "vgpu_queue_wait_max_seconds", "gauge",
	       "Longest current wait of a pool client for capacity.");
	sb_printf(b, "vgpu_queue_wait_max_seconds %.3f\n", secs(st->wait_ns_max));
	family(b, "vgpu_queue_waits_total", "counter", "Pool clients that had to wait for capacity.");
	sb_printf(b, "vgpu_queue_waits_total %llu\n", (unsigned long long)st->waits_total);

	family(b, "vgpu_device_info", "gauge", "Device name and backend (always 1).");
	for (i = 0; i < st->ndevices; i++)
		sb_printf(b, "vgpu_device_info{device=\"%d\",name=\"%s\",backend=\"%s\"} 1\n",
			  st->devices[i].index, esc(st->devices[i].name, e1, sizeof(e1)),
			  esc(st->devices[i].backend, e2, sizeof(e2)));
	DEV_LOOP("vgpu_device_memory_total_bytes", "gauge", "Device memory.", "%llu",
		 (unsigned long long)d->mem_total);
	DEV_LOOP("vgpu_device_memory_used_bytes", "gauge", "Device memory allocated by sessions.",
		 "%llu", (unsigned long long)d->mem_used);
	DEV_LOOP("vgpu_device_memory_on_host_bytes", "gauge",
		 "Device allocations evicted to host memory (oversubscription).", "%llu",
		 (unsigned long long)d->mem_on_host);
	DEV_LOOP("vgpu_device_utilization_ratio", "gauge",
		 "Fraction of the last second the device ran work (0 to 1).", "%.4f", d->util);
	DEV_LOOP("vgpu_device_sessions", "gauge", "Open sessions on the device.", "%u", d->sessions);
	DEV_LOOP("vgpu_device_queued_items", "gauge", "Work items queued or running.", "%llu",
		 (unsigned long long)d->queued);
	DEV_LOOP("vgpu_device_busy_seconds_total", "counter", "Measured device time of work items.",
		 "%.6f", secs(d->device_ns));
	DEV_LOOP("vgpu_device_items_total", "counter", "Work items (copies, sets, launches) run.",
		 "%llu", (unsigned long long)d->items);
	DEV_LOOP("vgpu_device_queue_wait_seconds_total", "counter",
		 "Total time work items waited in stream queues before running.", "%.6f",
		 secs(d->queue_wait_ns));
	DEV_LOOP("vgpu_device_swap_in_bytes_total", "counter",
		 "Bytes restored from host memory to the device (swap).", "%llu",
		 (unsigned long long)d->swapped_in);
	DEV_LOOP("vgpu_device_swap_out_bytes_total", "counter",
		 "Bytes evicted from the device to host memory (swap).", "%llu",
		 (unsigned long long)d->swapped_out);

	TEN_LOOP("vgpu_tenant_device_seconds_total", "counter",
		 "Measured device time used by the tenant's sessions.", "%.6f", secs(t->device_ns));
	TEN_LOOP("vgpu_tenant_items_total", "counter", "Work items run for the tenant.", "%llu",
		 (unsigned long long)t->items);
	TEN_LOOP("vgpu_tenant_sessions_total", "counter", "Sessions the tenant opened.", "%llu",
		 (unsigned long long)t->sessions);
	family(b, "vgpu_tenant_memory_used_bytes", "gauge",
	       "Device memory allocated by the tenant's open sessions.");
	for (i = 0; i < st->ntenants; i++) {
		uint64_t m = 0;

		for (uint32_t k = 0; k < st->nsessions; k++)
			if (!strcmp(st->session[k].tenant, st->tenants[i].tenant))
				m += st->session[k].mem_used;
		sb_printf(b, "vgpu_tenant_memory_used_bytes{tenant=\"%s\"} %llu\n",
			  esc(st->tenants[i].tenant, e1, sizeof(e1)), (unsigned long long)m);
	}

	TP_LOOP("vgpu_transport_received_bytes_total", "Protocol bytes received, per transport.",
		t->rx_bytes);
	TP_LOOP("vgpu_transport_sent_bytes_total", "Protocol bytes sent, per transport.", t->tx_bytes);
	TP_LOOP("vgpu_transport_connections_total", "Connections accepted, per transport.",
		t->connections);
#undef DEV_LOOP
#undef TEN_LOOP
#undef TP_LOOP
}

VGPU_API vgpu_status vgpu_server_metrics_text(vgpu_server *srv, char **text)
{
	struct vgpu_node_status *st;
	struct sbuf b = { NULL, 0, 0, 0 };
	vgpu_status rc;

	if (!srv || !text)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_server_metrics_text: NULL argument");
	*text = NULL;
	rc = vgpu__server_node_status(srv, &st);
	if (rc < 0)
		return rc;
	b.cap = 8192;
	b.p = malloc(b.cap);
	if (!b.p)
		b.oom = 1;
	else
		render(&b, st);
	vgpu_node_status_free(st);
	if (b.oom) {
		free(b.p);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory for the metrics");
	}
	*text = b.p;
	return VGPU_OK;
}

/* ---- the HTTP responder ---- */

struct vgpu__metrics {
	vgpu_server *srv;
	int fd;
	pthread_t th;
	int stop;
};

static void http_reply(int fd, const char *status, const char *type, const char *body, size_t len)
{
	char hdr[256];
	int n = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n", status, type, len);
	struct iovec iov[2] = { { hdr, (size_t)n }, { (void *)body, len } };
	struct msghdr mh;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 2;
	while (iov[0].iov_len + iov[1].iov_len) {
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		for (int i = 0; i < 2 && w; i++) {
			size_t k = (size_t)w < iov[i].iov_len ? (size_t)w : iov[i].iov_len;

			iov[i].iov_base = (char *)iov[i].iov_base + k;
			iov[i].iov_len -= k;
			w -= (ssize_t)k;
		}
		if (!iov[0].iov_len) {
			mh.msg_iov = &iov[1];
			mh.msg_iovlen = 1;
		}
	}
}

static void serve_one(struct vgpu__metrics *mt, int fd)
{
	char req[4096], method[16], path[256];
	size_t len = 0;
	struct timeval tv = { 2, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (len < sizeof(req) - 1) {
		ssize_t r = recv(fd, req + len, sizeof(req) - 1 - len, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
	}
	req[len] = '\0';
	if (sscanf(req, "%15s %255s", method, path) != 2) {
		http_reply(fd, "400 Bad Request", "text/plain", "bad request\n", 12);
		return;
	}
	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		http_reply(fd, "405 Method Not Allowed", "text/plain", "GET only\n", 9);
		return;
	}
	if (!strcmp(path, "/metrics") || !strncmp(path, "/metrics?", 9)) {
		char *text = NULL;

		if (vgpu_server_metrics_text(mt->srv, &text) < 0) {
			const char *m = vgpu__error_msg();

			http_reply(fd, "500 Internal Server Error", "text/plain", m, strlen(m));
			return;
		}
		http_reply(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text,
			   strcmp(method, "HEAD") ? strlen(text) : 0);
		free(text);
	} else if (!strcmp(path, "/")) {
		static const char page[] = "<html><body><a href=\"/metrics\">metrics</a></body></html>\n";

		http_reply(fd, "200 OK", "text/html", page, sizeof(page) - 1);
	} else {
		http_reply(fd, "404 Not Found", "text/plain", "not found\n", 10);
	}
}

static void *metrics_main(void *arg)
{
	struct vgpu__metrics *mt = arg;

	for (;;) {
		struct pollfd p = { mt->fd, POLLIN, 0 };
		int fd;

		if (__atomic_load_n(&mt->stop, __ATOMIC_ACQUIRE))
			break;
		if (poll(&p, 1, 200) <= 0)
			continue;
		fd = accept(mt->fd, NULL, NULL);
		if (fd < 0)
			continue;
		serve_one(mt, fd);
		close(fd);
	}
	return NULL;
}

vgpu_status vgpu__metrics_start(vgpu_server *srv, const char *hostport, char *bound,
				size_t boundlen, struct vgpu__metrics **out)
{
	char host[256], port[16];
	const char *colon;
	struct addrinfo hints, *ai = NULL;
	struct vgpu__metrics *mt;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = -1, one = 1, rc;

	*out = NULL;
	colon = hostport ? strrchr(hostport, ':') : NULL;
	if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host) ||
	    strlen(colon + 1) >= sizeof(port) || !colon[1])
		return vgpu__error(VGPU_ERR_INVALID, "metrics address '%s': expected HOST:PORT",
				   hostport ? hostport : "");
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	snprintf(port, sizeof(port), "%s", colon + 1);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc)
		return vgpu__error(VGPU_ERR_INVALID, "metrics address '%s': %s", hostport,
				   gai_strerror(rc));
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return vgpu__error(VGPU_ERR_CONNECTION, "metrics: cannot listen on %s: %s", hostport,
				   strerror(e));
	}
	freeaddrinfo(ai);
	if (bound) {
		char a[INET6_ADDRSTRLEN] = "?";
		int p = 0;

		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
			p = ntohs(s4->sin_port);
			snprintf(bound, boundlen, "%s:%d", a, p);
		} else {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
			p = ntohs(s6->sin6_port);
			snprintf(bound, boundlen, "[%s]:%d", a, p);
		}
	}
	mt = calloc(1, sizeof(*mt));
	if (!mt) {
		close(fd);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	}
	mt->srv = srv;
	mt->fd = fd;
	if (pthread_create(&mt->th, NULL, metrics_main, mt) != 0) {
		close(fd);
		free(mt);
		return vgpu__error(VGPU_ERR_INTERNAL, "cannot start the metrics thread");
	}
	*out = mt;
	return VGPU_OK;
}

void vgpu__metrics_stop(struct vgpu__metrics *mt)
{
	if (!mt)
		return;
	__atomic_store_n(&mt->stop, 1, __ATOMIC_RELEASE);
	pthread_join(mt->th, NULL);
	close(mt->fd);
	free(mt);
}
