/* SPDX-License-Identifier: MIT */
/*
 * tcp.c - the tcp and unix socket transport: TCP_NODELAY, sendmsg with
 * iovecs (header, body and bulk leave in one call, bulk never copied), one
 * reader thread per connection (the caller's).
 *
 * TLS (OpenSSL, tls=1 on the URI; see docs/remote.md): the listener takes
 * tls_cert, tls_key and optionally tls_client_ca (client certificates then
 * required); the client takes tls_ca (else the system's CAs) and optionally
 * tls_cert/tls_key, or $VGPU_TLS_CA, $VGPU_TLS_CERT, $VGPU_TLS_KEY. The
 * server's certificate must name the host of the URI (DNS name or IP
 * address). A TLS connection's socket is non-blocking: one lock serialises
 * the SSL object between the reader and a writer thread, and waiting (for
 * bytes or for room) happens in poll() with the lock released, so a reader
 * blocked on an idle peer never holds up a send. The TLS handshake runs on
 * the connection's first send or receive, on that connection's thread (a
 * slow client never stalls the accept loop), bounded by tls_timeout_ms
 * (default 10000).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "error.h"
#include "transport.h"

struct sockbufs {
	int snd, rcv; /* bytes; 0: the kernel's (see sockbuf) */
};

struct vgpu_tp_listener {
	int fd;
	int is_unix;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	SSL_CTX *tls;           /* tls=1: every accepted connection speaks TLS */
	uint32_t tls_timeout_ms;
	struct sockbufs bufs;   /* of every accepted connection */
};

struct vgpu_tp_conn {
	int fd;
	char peer[128];
	/* TLS */
	SSL *ssl;
	pthread_mutex_t tlock;
	int hs_done;
	uint32_t timeout_ms;     /* set_timeout (0: none) */
	uint32_t hs_timeout_ms;
	char tls_err[256];       /* first handshake failure, repeated to later calls */
};

/* ---- TLS ---- */

static int is_unix_scheme(const struct vgpu_tp_addr *u);

/* OpenSSL writes with write(2): a peer gone raises SIGPIPE, which must not
 * kill the application. Block it on this thread around TLS calls and
 * swallow the one raised meanwhile (MSG_NOSIGNAL for the plain path). */
struct nopipe {
	sigset_t old;
	int pending;
};

static void nopipe_begin(struct nopipe *np)
{
	sigset_t set, pend;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, &np->old);
	sigpending(&pend);
	np->pending = sigismember(&pend, SIGPIPE);
}

static void nopipe_end(struct nopipe *np)
{
	if (!np->pending) {
		sigset_t set;
		struct timespec zero = { 0, 0 };

		sigemptyset(&set);
		sigaddset(&set, SIGPIPE);
		while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &np->old, NULL);
}

static void tls_errstr(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	unsigned long last = e;

	while (e) { /* the last queued error is the most specific */
		last = e;
		e = ERR_get_error();
	}
	if (last)
		ERR_error_string_n(last, buf, len);
	else
		snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
}

static const char *param(const struct vgpu_tp_addr *u, const char *key, const char *env)
{
	const char *v = u->param(u, key);

	if ((!v || !*v) && env)
		v = getenv(env);
	return v && *v ? v : NULL;
}

static int want_tls(const struct vgpu_tp_addr *u)
{
	const char *v = u->param(u, "tls");

	return !is_unix_scheme(u) && v && strcmp(v, "0") && strcmp(v, "no") && strcmp(v, "false");
}

static uint32_t tls_timeout(const struct vgpu_tp_addr *u)
{
	const char *v = u->param(u, "tls_timeout_ms");
	long ms = v ? strtol(v, NULL, 10) : 0;

	return ms > 0 && ms < 600000 ? (uint32_t)ms : 10000;
}

static SSL_CTX *tls_ctx(const struct vgpu_tp_addr *u, int server, const char *where)
{
	const char *cert = param(u, "tls_cert", server ? NULL : "VGPU_TLS_CERT");
	const char *key = param(u, "tls_key", server ? NULL : "VGPU_TLS_KEY");
	const char *ca = server ? param(u, "tls_client_ca", NULL) : param(u, "tls_ca", "VGPU_TLS_CA");
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	char e[256];

	if (!ctx) {
		vgpu__error(VGPU_ERR_INTERNAL, "%s: TLS: cannot create a context", where);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (server && (!cert || !key)) {
		vgpu__error(VGPU_ERR_INVALID, "%s: tls=1 needs a certificate and key (--tls-cert FILE "
			    "--tls-key FILE, or ?tls_cert=&tls_key=)", where);
		goto fail;
	}
	if (!server && (!cert) != (!key)) {
		vgpu__error(VGPU_ERR_INVALID, "%s: TLS client certificate: give both tls_cert and tls_key",
			    where);
		goto fail;
	}
	if (cert && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		tls_errstr(e, sizeof(e));
		vgpu__error(VGPU_ERR_INVALID, "%s: TLS certificate %s: %s", where, cert, e);
		goto fail;
	}
	if (key && (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1)) {
		tls_errstr(e, sizeof(e));
		vgpu__error(VGPU_ERR_INVALID, "%s: TLS key %s: %s", where, key, e);
		goto fail;
	}
	if (ca && SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		tls_errstr(e, sizeof(e));
		vgpu__error(VGPU_ERR_INVALID, "%s: TLS CA file %s: %s", where, ca, e);
		goto fail;
	}
	if (!server && !ca)
		SSL_CTX_set_default_verify_paths(ctx);
	if (!server)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	else if (ca)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Wait for the socket (lock not held); ms 0 = forever. 0, or -1 on timeout. */
static int tls_wait(struct vgpu_tp_conn *c, int want_write, uint64_t deadline)
{
	struct pollfd p = { c->fd, (short)(want_write ? POLLOUT : POLLIN), 0 };
	int rc, ms = -1;

	if (deadline) {
		uint64_t n = now_ms();
		if (n >= deadline)
			return -1;
		ms = (int)(deadline - n);
	}
	do
		rc = poll(&p, 1, ms);
	while (rc < 0 && errno == EINTR);
	return rc == 0 ? -1 : 0;
}

/* Run the handshake if not done (lock held; released while waiting). */
static vgpu_status tls_handshake_locked(struct vgpu_tp_conn *c)
{
	uint64_t deadline = now_ms() + c->hs_timeout_ms;

	while (!c->hs_done) {
		int r, err;

		if (c->tls_err[0])
			return vgpu__error(VGPU_ERR_CONNECTION, "%s", c->tls_err);
		ERR_clear_error();
		errno = 0;
		r = SSL_do_handshake(c->ssl);
		if (r == 1) {
			c->hs_done = 1;
			break;
		}
		err = SSL_get_error(c->ssl, r);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
			pthread_mutex_unlock(&c->tlock);
			r = tls_wait(c, err == SSL_ERROR_WANT_WRITE, deadline);
			pthread_mutex_lock(&c->tlock);
			if (r < 0 && !c->hs_done && !c->tls_err[0])
				snprintf(c->tls_err, sizeof(c->tls_err),
					 "TLS handshake with %s: timed out (is the peer speaking TLS?)", c->peer);
			continue;
		}
		{
			char e[200];
			long v = SSL_get_verify_result(c->ssl);

			tls_errstr(e, sizeof(e));
			if (v != X509_V_OK)
				snprintf(c->tls_err, sizeof(c->tls_err),
					 "TLS handshake with %s failed: certificate verification: %s",
					 c->peer, X509_verify_cert_error_string(v));
			else
				snprintf(c->tls_err, sizeof(c->tls_err),
					 "TLS handshake with %s failed: %s (does the peer speak TLS, "
					 "and does it accept this certificate?)", c->peer, e);
		}
	}
	return VGPU_OK;
}

static vgpu_status tls_send(struct vgpu_tp_conn *c, const struct iovec *iov, int n)
{
	vgpu_status st;
	struct nopipe np;

	nopipe_begin(&np);
	pthread_mutex_lock(&c->tlock);
	st = tls_handshake_locked(c);
	for (int i = 0; st == VGPU_OK && i < n; i++) {
		const char *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;
		uint64_t deadline = c->timeout_ms ? now_ms() + c->timeout_ms : 0;

		while (left) {
			int chunk = left > (1u << 30) ? 1 << 30 : (int)left, r, err;

			ERR_clear_error();
			errno = 0;
			r = SSL_write(c->ssl, p, chunk);
			if (r > 0) {
				p += r;
				left -= (size_t)r;
				continue;
			}
			err = SSL_get_error(c->ssl, r);
			if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
				pthread_mutex_unlock(&c->tlock);
				r = tls_wait(c, err == SSL_ERROR_WANT_WRITE, deadline);
				pthread_mutex_lock(&c->tlock);
				if (r < 0) {
					st = vgpu__error(VGPU_ERR_CONNECTION, "send to %s: timed out", c->peer);
					break;
				}
				continue;
			}
			{
				char e[200];
				tls_errstr(e, sizeof(e));
				st = vgpu__error(VGPU_ERR_CONNECTION, "send to %s: TLS: %s", c->peer, e);
			}
			break;
		}
	}
	pthread_mutex_unlock(&c->tlock);
	nopipe_end(&np);
	return st;
}

static ssize_t tls_recv(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max)
{
	size_t got = 0;
	ssize_t ret = 0;
	uint64_t deadline;
	struct nopipe np;

	nopipe_begin(&np);
	pthread_mutex_lock(&c->tlock);
	ret = tls_handshake_locked(c);
	deadline = c->timeout_ms ? now_ms() + c->timeout_ms : 0;
	while (ret == 0 && (got < min || (got == 0 && max > 0))) {
		size_t want = max - got;
		int r, err;

		ERR_clear_error();
		errno = 0;
		r = SSL_read(c->ssl, (char *)buf + got, want > INT32_MAX ? INT32_MAX : (int)want);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		err = SSL_get_error(c->ssl, r);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
			pthread_mutex_unlock(&c->tlock);
			r = tls_wait(c, err == SSL_ERROR_WANT_WRITE, deadline);
			pthread_mutex_lock(&c->tlock);
			if (r < 0)
				ret = vgpu__error(VGPU_ERR_TIMEOUT, "receive from %s: timed out%s", c->peer,
						  got ? " mid-message" : "");
			continue;
		}
		if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && !ERR_peek_error())) {
			ret = vgpu__error(VGPU_ERR_CONNECTION, "connection closed by peer%s",
					  got ? " mid-message" : "");
		} else {
			char e[200];
			tls_errstr(e, sizeof(e));
			ret = vgpu__error(VGPU_ERR_CONNECTION, "receive from %s: TLS: %s", c->peer, e);
		}
	}
	pthread_mutex_unlock(&c->tlock);
	nopipe_end(&np);
	return ret < 0 ? ret : (ssize_t)got;
}

/* Make c a TLS connection on ctx (client: check the server is host). */
static vgpu_status tls_attach(struct vgpu_tp_conn *c, SSL_CTX *ctx, int server, const char *host,
			      uint32_t hs_timeout_ms)
{
	c->ssl = SSL_new(ctx);
	if (!c->ssl)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "TLS: cannot create a connection");
	pthread_mutex_init(&c->tlock, NULL);
	c->hs_timeout_ms = hs_timeout_ms;
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
	SSL_set_fd(c->ssl, c->fd);
	if (server) {
		SSL_set_accept_state(c->ssl);
	} else {
		struct in6_addr a6;
		struct in_addr a4;

		if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1) {
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host);
		} else {
			SSL_set_tlsext_host_name(c->ssl, host);
			SSL_set1_host(c->ssl, host);
		}
		SSL_set_connect_state(c->ssl);
	}
	return VGPU_OK;
}

static int is_unix_scheme(const struct vgpu_tp_addr *u)
{
	return strcmp(u->scheme, "unix") == 0;
}

static vgpu_status unix_addr(const struct vgpu_tp_addr *u, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!u->path[0])
		return vgpu__error(VGPU_ERR_BAD_URI, "unix URI without a socket path");
	if (strlen(u->path) >= sizeof(sa->sun_path))
		return vgpu__error(VGPU_ERR_BAD_URI, "unix socket path too long (%zu bytes, at most %zu): %s",
				   strlen(u->path), sizeof(sa->sun_path) - 1, u->path);
	memcpy(sa->sun_path, u->path, strlen(u->path) + 1);
	return VGPU_OK;
}

/*
 * Socket buffer sizes, per direction: the URI's sndbuf= and rcvbuf= (a
 * size: 256K, 4M), else VGPU_TCP_SNDBUF and VGPU_TCP_RCVBUF, else 4 MiB;
 * 0 leaves the size to the kernel (its autotuning, bounded by
 * net.ipv4.tcp_wmem and tcp_rmem). The kernel doubles what it is given and
 * caps it at net.core.wmem_max and rmem_max.
 */
#define SOCKBUF_DEFAULT (4 << 20)
#define SOCKBUF_MAX (1 << 30)

static vgpu_status sockbuf(const struct vgpu_tp_addr *u, const char *key, const char *env, int *out)
{
	const char *v = u->param(u, key);
	const char *what = "bad URI parameter ", *from = key;
	uint64_t n;

	if (!v || !*v) {
		v = getenv(env);
		what = "";
		from = env;
	}
	*out = SOCKBUF_DEFAULT;
	if (!v || !*v)
		return VGPU_OK;
	if (vgpu__parse_size(v, &n) != VGPU_OK || n > SOCKBUF_MAX)
		return vgpu__error(VGPU_ERR_BAD_URI,
				   "%s%s=%s: expected a socket buffer size of at most 1G, such as 256K "
				   "or 4M, or 0 for the kernel's own",
				   what, from, v);
	*out = (int)n;
	return VGPU_OK;
}

static vgpu_status sockbufs(const struct vgpu_tp_addr *u, struct sockbufs *b)
{
	vgpu_status st = sockbuf(u, "sndbuf", "VGPU_TCP_SNDBUF", &b->snd);

	return st < 0 ? st : sockbuf(u, "rcvbuf", "VGPU_TCP_RCVBUF", &b->rcv);
}

static void tune(int fd, int is_unix, const struct sockbufs *b)
{
	int one = 1;

	if (!is_unix) {
		/* A peer whose host vanished (no RST) is noticed within about 25 s
		 * idle, or 30 s of unacknowledged data: waiters get an error, the
		 * server releases the session. */
		int idle = 10, intvl = 5, cnt = 3;
		unsigned int uto = 30000;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
	}
	if (b->snd)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b->snd, sizeof(b->snd));
	if (b->rcv)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b->rcv, sizeof(b->rcv));
}

static vgpu_status tcp_listen(const struct vgpu_tp_addr *u, struct vgpu_tp_listener **out,
			      char *bound, size_t boundlen)
{
	struct vgpu_tp_listener *l = calloc(1, sizeof(*l));
	int fd = -1;

	if (!l)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	l->fd = -1;
	if (sockbufs(u, &l->bufs) < 0)
		goto fail_st;
	if (is_unix_scheme(u)) {
		struct sockaddr_un sa;
		struct stat st;
		vgpu_status rc = unix_addr(u, &sa);

		if (rc < 0)
			goto fail_st;
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			goto fail;
		/* A stale socket of a dead server: replace it. Never remove
		 * anything that is not a socket. */
		if (lstat(sa.sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
			if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
				close(fd);
				free(l);
				return vgpu__error(VGPU_ERR_BUSY, "unix://%s: another server is listening there",
						   u->path);
			}
			close(fd);
			unlink(sa.sun_path);
			fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (fd < 0)
				goto fail;
		}
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0)
			goto fail;
		l->is_unix = 1;
		snprintf(l->path, sizeof(l->path), "%s", sa.sun_path);
		snprintf(bound, boundlen, "unix://%s", u->path);
	} else {
		struct addrinfo hints, *ai = NULL, *p;
		char port[16];
		int gai, one = 1;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char host[INET6_ADDRSTRLEN];

		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		snprintf(port, sizeof(port), "%d", u->port < 0 ? 7100 : u->port);
		gai = getaddrinfo(u->host[0] ? u->host : NULL, port, &hints, &ai);
		if (gai) {
			free(l);
			return vgpu__error(VGPU_ERR_BAD_URI, "tcp://%s:%s: cannot resolve: %s", u->host, port,
					   gai_strerror(gai));
		}
		errno = EADDRNOTAVAIL;
		for (p = ai; p; p = p->ai_next) {
			fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
			if (fd < 0)
				continue;
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (bind(fd, p->ai_addr, p->ai_addrlen) == 0 && listen(fd, 128) == 0)
				break;
			close(fd);
			fd = -1;
		}
		freeaddrinfo(ai);
		if (fd < 0)
			goto fail;
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
			goto fail;
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
			snprintf(bound, boundlen, "tcp://[%s]:%u", host, ntohs(s6->sin6_port));
		} else {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
			snprintf(bound, boundlen, "tcp://%s:%u", host, ntohs(s4->sin_port));
		}
	}
	l->fd = fd;
	if (want_tls(u)) {
		char where[300];

		snprintf(where, sizeof(where), "%s", bound);
		l->tls = tls_ctx(u, 1, where);
		if (!l->tls) {
			close(fd);
			free(l);
			return vgpu__error_status();
		}
		l->tls_timeout_ms = tls_timeout(u);
	}
	*out = l;
	return VGPU_OK;
fail:
	{
		int e = errno;
		if (fd >= 0)
			close(fd);
		free(l);
		if (is_unix_scheme(u))
			return vgpu__error(VGPU_ERR_CONNECTION, "unix://%s: cannot listen: %s", u->path, strerror(e));
		return vgpu__error(VGPU_ERR_CONNECTION, "tcp://%s:%d: cannot listen: %s", u->host,
				   u->port, strerror(e));
	}
fail_st:
	free(l);
	return vgpu__error_status();
}

static vgpu_status tcp_accept(struct vgpu_tp_listener *l, struct vgpu_tp_conn **out)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	struct vgpu_tp_conn *c;
	int fd;

	for (;;) {
		sl = sizeof(ss);
		fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			poll(NULL, 0, 50); /* out of descriptors: back off, keep serving */
			continue;
		}
		return vgpu__error(VGPU_ERR_CLOSED, "accept: %s", strerror(errno));
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	}
	c->fd = fd;
	tune(fd, l->is_unix, &l->bufs);
	if (l->is_unix) {
		snprintf(c->peer, sizeof(c->peer), "unix");
	} else if (ss.ss_family == AF_INET6) {
		char h[INET6_ADDRSTRLEN];
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, h, sizeof(h));
		snprintf(c->peer, sizeof(c->peer), "[%s]:%u", h, ntohs(s6->sin6_port));
	} else {
		char h[INET_ADDRSTRLEN];
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, h, sizeof(h));
		snprintf(c->peer, sizeof(c->peer), "%s:%u", h, ntohs(s4->sin_port));
	}
	if (l->tls && tls_attach(c, l->tls, 1, NULL, l->tls_timeout_ms) < 0) {
		vgpu_status st = vgpu__error_status();

		close(fd);
		free(c);
		return st;
	}
	*out = c;
	return VGPU_OK;
}

static void tcp_listen_shutdown(struct vgpu_tp_listener *l)
{
	shutdown(l->fd, SHUT_RDWR); /* wakes accept() (EINVAL) */
}

static void tcp_listen_close(struct vgpu_tp_listener *l)
{
	if (!l)
		return;
	close(l->fd);
	if (l->is_unix && l->path[0])
		unlink(l->path);
	SSL_CTX_free(l->tls);
	free(l);
}

static int tcp_listen_is_remote(const struct vgpu_tp_addr *u)
{
	if (is_unix_scheme(u))
		return 0;
	if (!strcmp(u->host, "localhost") || !strcmp(u->host, "::1") ||
	    !strncmp(u->host, "127.", 4))
		return 0;
	return 1;
}

static int connect_timeout(int fd, const struct sockaddr *sa, socklen_t sl, uint32_t ms)
{
	int fl = fcntl(fd, F_GETFL), rc, err = 0;
	socklen_t el = sizeof(err);
	struct pollfd pfd = { fd, POLLOUT, 0 };

	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	rc = connect(fd, sa, sl);
	if (rc < 0 && errno == EINPROGRESS) {
		do
			rc = poll(&pfd, 1, (int)ms);
		while (rc < 0 && errno == EINTR);
		if (rc == 0) {
			errno = ETIMEDOUT;
			rc = -1;
		} else if (rc > 0) {
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
			rc = err ? -1 : 0;
			if (err)
				errno = err;
		}
	}
	if (rc == 0)
		fcntl(fd, F_SETFL, fl);
	return rc;
}

static vgpu_status tcp_connect(const struct vgpu_tp_addr *u, uint32_t timeout_ms,
			       struct vgpu_tp_conn **out)
{
	struct vgpu_tp_conn *c;
	struct sockbufs b;
	int fd = -1, e = 0;

	if (sockbufs(u, &b) < 0)
		return vgpu__error_status();
	c = calloc(1, sizeof(*c));
	if (!c)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	if (!timeout_ms)
		timeout_ms = 10000;
	if (is_unix_scheme(u)) {
		struct sockaddr_un sa;

		if (unix_addr(u, &sa) < 0) {
			free(c);
			return vgpu__error_status();
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect_timeout(fd, (struct sockaddr *)&sa, sizeof(sa), timeout_ms) < 0) {
			e = errno;
			if (fd >= 0)
				close(fd);
			free(c);
			return vgpu__error(VGPU_ERR_CONNECTION, "cannot connect to unix://%s: %s", u->path,
					   strerror(e));
		}
		snprintf(c->peer, sizeof(c->peer), "unix://%s", u->path);
		tune(fd, 1, &b);
	} else {
		struct addrinfo hints, *ai = NULL, *p;
		char port[16];
		int gai;

		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		snprintf(port, sizeof(port), "%d", u->port < 0 ? 7100 : u->port);
		gai = getaddrinfo(u->host, port, &hints, &ai);
		if (gai) {
			free(c);
			return vgpu__error(VGPU_ERR_CONNECTION, "cannot resolve %s: %s", u->host,
					   gai_strerror(gai));
		}
		e = ECONNREFUSED;
		for (p = ai; p; p = p->ai_next) {
			fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
			if (fd < 0) {
				e = errno;
				continue;
			}
			if (connect_timeout(fd, p->ai_addr, p->ai_addrlen, timeout_ms) == 0)
				break;
			e = errno;
			close(fd);
			fd = -1;
		}
		freeaddrinfo(ai);
		if (fd < 0) {
			free(c);
			return vgpu__error(VGPU_ERR_CONNECTION, "cannot connect to %s:%s: %s", u->host, port,
					   strerror(e));
		}
		snprintf(c->peer, sizeof(c->peer), "%s:%s", u->host, port);
		tune(fd, 0, &b);
	}
	c->fd = fd;
	if (want_tls(u)) {
		char where[300];
		SSL_CTX *ctx;
		vgpu_status st;

		snprintf(where, sizeof(where), "tcp://%s", c->peer);
		ctx = tls_ctx(u, 0, where);
		st = ctx ? tls_attach(c, ctx, 0, u->host, timeout_ms) : vgpu__error_status();
		SSL_CTX_free(ctx); /* the SSL object holds its own reference */
		if (st == VGPU_OK) {
			/* handshake now: a wrong CA or a plaintext server fails the open */
			struct nopipe np;

			nopipe_begin(&np);
			pthread_mutex_lock(&c->tlock);
			st = tls_handshake_locked(c);
			pthread_mutex_unlock(&c->tlock);
			nopipe_end(&np);
		}
		if (st < 0) {
			if (c->ssl) {
				SSL_free(c->ssl);
				pthread_mutex_destroy(&c->tlock);
			}
			close(fd);
			free(c);
			return st;
		}
	}
	*out = c;
	return VGPU_OK;
}

static vgpu_status send_all(struct vgpu_tp_conn *c, struct iovec *iov, int n);

/* One piece: one send, usually whole; send_all does the rest, or the error
 * (again after EINTR). */
static vgpu_status send_one(struct vgpu_tp_conn *c, const void *p, size_t n)
{
	ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
	struct iovec iov;

	if (w == (ssize_t)n)
		return VGPU_OK;
	iov.iov_base = (char *)p + (w > 0 ? w : 0);
	iov.iov_len = n - (size_t)(w > 0 ? w : 0);
	return send_all(c, &iov, 1);
}

static vgpu_status tcp_send(struct vgpu_tp_conn *c, const struct iovec *iov_in, int n)
{
	struct iovec iov[16];

	if (n > 16)
		return vgpu__error(VGPU_ERR_INTERNAL, "tcp send: %d iovecs (at most 16)", n);
	if (c->ssl)
		return tls_send(c, iov_in, n);
	if (n == 1)
		return send_one(c, iov_in[0].iov_base, iov_in[0].iov_len);
	if (n > 1) {
		/* a small message (a request, a reply): one flat send is cheaper
		 * for the kernel than gathering iovecs */
		uint8_t flat[2048];
		size_t total = 0;

		for (int k = 0; k < n; k++)
			total += iov_in[k].iov_len;
		if (total <= sizeof(flat)) {
			size_t off = 0;

			for (int k = 0; k < n; k++) {
				if (iov_in[k].iov_len)
					memcpy(flat + off, iov_in[k].iov_base, iov_in[k].iov_len);
				off += iov_in[k].iov_len;
			}
			return send_one(c, flat, total);
		}
	}
	memcpy(iov, iov_in, (size_t)n * sizeof(*iov));
	return send_all(c, iov, n);
}

/* Send iov[0..n) (modified in place). */
static vgpu_status send_all(struct vgpu_tp_conn *c, struct iovec *iov, int n)
{
	struct msghdr mh;
	int i = 0;

	while (i < n) {
		ssize_t w;

		if (iov[i].iov_len == 0) {
			i++;
			continue;
		}
		if (n - i == 1) {
			w = send(c->fd, iov[i].iov_base, iov[i].iov_len, MSG_NOSIGNAL);
		} else {
			memset(&mh, 0, sizeof(mh));
			mh.msg_iov = iov + i;
			mh.msg_iovlen = (size_t)(n - i);
			w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		}
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return vgpu__error(VGPU_ERR_CONNECTION, "send to %s: timed out", c->peer);
			return vgpu__error(VGPU_ERR_CONNECTION, "send to %s: %s", c->peer, strerror(errno));
		}
		while (w > 0 && i < n) {
			if ((size_t)w >= iov[i].iov_len) {
				w -= (ssize_t)iov[i].iov_len;
				iov[i].iov_len = 0;
				i++;
			} else {
				iov[i].iov_base = (char *)iov[i].iov_base + w;
				iov[i].iov_len -= (size_t)w;
				w = 0;
			}
		}
	}
	return VGPU_OK;
}

/* The error of a receive that returned r <= 0 (not EINTR) after got bytes. */
static vgpu_status recv_error(struct vgpu_tp_conn *c, ssize_t r, size_t got)
{
	if (r == 0)
		return vgpu__error(VGPU_ERR_CONNECTION, "connection closed by peer%s",
				   got ? " mid-message" : "");
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return vgpu__error(VGPU_ERR_TIMEOUT, "receive from %s: timed out%s", c->peer,
				   got ? " mid-message" : "");
	return vgpu__error(VGPU_ERR_CONNECTION, "receive from %s: %s", c->peer, strerror(errno));
}

static ssize_t tcp_recv(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max)
{
	size_t got = 0;

	if (c->ssl)
		return tls_recv(c, buf, min, max);
	while (got < min || (got == 0 && max > 0)) {
		ssize_t r = recv(c->fd, (char *)buf + got, max - got, 0);

		if (r > 0)
			got += (size_t)r;
		else if (r == 0 || errno != EINTR)
			return recv_error(c, r, got);
	}
	return (ssize_t)got;
}

/* send, then one recvmsg into the segments (TLS: a plain receive into the
 * first): the same system calls as send and recv, the reply's bulk
 * straight where the caller wants it */
static ssize_t tcp_send_recvv(struct vgpu_tp_conn *c, const struct iovec *iov, int n,
			      const struct iovec *riov, int rn, size_t min)
{
	struct msghdr mh;
	vgpu_status st;
	ssize_t r;

	if (rn < 1 || rn > VGPU_TP_MAX_IOV || min > riov[0].iov_len)
		return vgpu__error(VGPU_ERR_INTERNAL, "tcp send_recvv: %d segments, min %zu", rn,
				   min);
	st = tcp_send(c, iov, n);
	if (st < 0)
		return st;
	if (c->ssl)
		return tls_recv(c, riov[0].iov_base, min ? min : 1, riov[0].iov_len);
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = (struct iovec *)riov;
	mh.msg_iovlen = (size_t)rn;
	do
		r = recvmsg(c->fd, &mh, 0);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return recv_error(c, r, 0);
	if ((size_t)r < min) { /* within the first segment: min is */
		ssize_t k = tcp_recv(c, (uint8_t *)riov[0].iov_base + r, min - (size_t)r,
				     riov[0].iov_len - (size_t)r);
		return k < 0 ? k : r + k;
	}
	return r;
}

static vgpu_status tcp_set_timeout(struct vgpu_tp_conn *c, uint32_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	if (c->ssl) {
		pthread_mutex_lock(&c->tlock);
		c->timeout_ms = ms == UINT32_MAX ? 0 : ms;
		pthread_mutex_unlock(&c->tlock);
		return VGPU_OK;
	}
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return VGPU_OK;
}

static void tcp_shutdown(struct vgpu_tp_conn *c, int read_only)
{
	shutdown(c->fd, read_only ? SHUT_RD : SHUT_RDWR);
}

static void tcp_close(struct vgpu_tp_conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		if (c->hs_done) {
			/* best effort close_notify: never wait for it */
			struct nopipe np;

			nopipe_begin(&np);
			pthread_mutex_lock(&c->tlock);
			SSL_shutdown(c->ssl);
			pthread_mutex_unlock(&c->tlock);
			nopipe_end(&np);
		}
		SSL_free(c->ssl);
		pthread_mutex_destroy(&c->tlock);
	}
	close(c->fd);
	free(c);
}

static const char *tcp_peer(struct vgpu_tp_conn *c)
{
	return c->peer;
}

/* For transports layered on these sockets (uring): take the descriptor
 * and the peer name out of a connection and free it. */
int vgpu__tcp_conn_release(struct vgpu_tp_conn *c, char *peer, size_t peerlen)
{
	int fd = c->fd;

	snprintf(peer, peerlen, "%s", c->peer);
	free(c);
	return fd;
}

int vgpu__tcp_listener_fd(struct vgpu_tp_listener *l)
{
	return l->fd;
}

static const char *const tcp_schemes[] = { "tcp", "unix", NULL };

const struct vgpu_transport_ops vgpu__transport_tcp = {
	.size = sizeof(struct vgpu_transport_ops),
	.abi = VGPU_TRANSPORT_ABI,
	.name = "tcp",
	.schemes = tcp_schemes,
	.caps = VGPU_TP_CAP_ZEROCOPY_SEND,
	.listen = tcp_listen,
	.accept = tcp_accept,
	.listen_shutdown = tcp_listen_shutdown,
	.listen_close = tcp_listen_close,
	.listen_is_remote = tcp_listen_is_remote,
	.connect = tcp_connect,
	.send = tcp_send,
	.recv = tcp_recv,
	.set_timeout = tcp_set_timeout,
	.shutdown = tcp_shutdown,
	.close = tcp_close,
	.peer = tcp_peer,
	.send_recvv = tcp_send_recvv,
};
