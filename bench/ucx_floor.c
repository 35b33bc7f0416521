/* SPDX-License-Identifier: MIT */
/*
 * ucx_floor.c - the raw UCX floor of bench_transports and bench_tp_rdma:
 * active messages between this process and a forked raw UCX server, with
 * the same UCX_TLS as the transport under test. Both sides spin 16
 * progress rounds, then sleep on the worker's event fd, as the rdma
 * transport does (busy polling alone collapses on an oversubscribed host).
 * A request's header says how many bytes the answer has (0: no answer, as
 * for the launch floor's messages); large messages go by rendezvous into a
 * preallocated buffer.
 */
#include "config.h"

#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <ucp/api/ucp.h>

#include "ucx_floor.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "raw UCX floor: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

#define RAW_AM 3

struct ux {
	ucp_context_h ctx;
	ucp_worker_h w;
	ucp_ep_h ep;
	volatile int got;
	volatile int pending;
	uint8_t *buf;
	uint64_t owe[64];
	int nowe;
	int efd;
};
static struct ux U = { .efd = -1 };
static uint64_t owed_resp[64];
static ucp_conn_request_h ux_req;
static size_t server_max;

static void ux_init(void)
{
	ucp_params_t p;
	ucp_worker_params_t wp;
	ucp_config_t *cfg;

	memset(&p, 0, sizeof(p));
	p.field_mask = UCP_PARAM_FIELD_FEATURES;
	p.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
	if (ucp_config_read(NULL, NULL, &cfg) != UCS_OK || ucp_init(&p, cfg, &U.ctx) != UCS_OK)
		die("ucp_init failed");
	ucp_config_release(cfg);
	memset(&wp, 0, sizeof(wp));
	wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
	wp.thread_mode = UCS_THREAD_MODE_SINGLE;
	if (ucp_worker_create(U.ctx, &wp, &U.w) != UCS_OK)
		die("ucp_worker_create failed");
}

static void ux_progress(void)
{
	for (int i = 0; i < 16; i++)
		if (ucp_worker_progress(U.w))
			return;
	if (U.efd < 0 && ucp_worker_get_efd(U.w, &U.efd) != UCS_OK)
		return;
	if (ucp_worker_arm(U.w) == UCS_OK) {
		struct pollfd p = { U.efd, POLLIN, 0 };
		poll(&p, 1, 1);
	}
}

static void ux_wait(void *req)
{
	if (req == NULL)
		return;
	if (UCS_PTR_IS_ERR(req))
		die("ucx: %s", ucs_status_string(UCS_PTR_STATUS(req)));
	while (ucp_request_check_status(req) == UCS_INPROGRESS)
		ux_progress();
	ucp_request_free(req);
}

static void *ux_send(uint64_t resp, const void *data, size_t n)
{
	ucp_request_param_t rp;

	memset(&rp, 0, sizeof(rp));
	return ucp_am_send_nbx(U.ep, RAW_AM, &resp, sizeof(resp), data, n, &rp);
}

/* The server owes an answer of resp bytes (0: none). The client waits for
 * each answer before its next request, so a few are owed at most; the
 * launch floor's 100000 messages want none. (Queuing an answer for each of
 * them once overflowed owe[] into efd, and the server then spun on poll(0)
 * for the rest of the run, stealing the CPU from whatever was measured.) */
static void owe(uint64_t resp)
{
	if (!resp)
		return;
	if (U.nowe == (int)(sizeof(U.owe) / sizeof(U.owe[0])))
		die("raw UCX server: more than %d answers owed", U.nowe);
	U.owe[U.nowe++] = resp;
}

static void rx_done(void *req, ucs_status_t st, size_t len, void *user)
{
	if (req)
		ucp_request_free(req);
	U.pending--;
	if (user)
		owe(*(uint64_t *)user);
	else
		U.got++;
}

static ucs_status_t ux_am(void *arg, const void *hdr, size_t hl, void *data, size_t len,
			  const ucp_am_recv_param_t *param)
{
	int server = arg != NULL;
	uint64_t resp = 0;

	if (hl == sizeof(resp))
		memcpy(&resp, hdr, sizeof(resp));
	if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
		ucp_request_param_t rp;
		void *r;
		int slot = U.pending;

		if (slot == (int)(sizeof(owed_resp) / sizeof(owed_resp[0])))
			die("raw UCX: more than %d rendezvous pending", slot);
		memset(&rp, 0, sizeof(rp));
		rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
		rp.cb.recv_am = rx_done;
		owed_resp[slot] = resp;
		rp.user_data = server ? &owed_resp[slot] : NULL;
		U.pending++;
		r = ucp_am_recv_data_nbx(U.w, data, U.buf, len, &rp);
		if (r == NULL)
			rx_done(NULL, UCS_OK, len, rp.user_data);
		else if (UCS_PTR_IS_ERR(r))
			die("ucx recv failed");
		return UCS_OK;
	}
	if (server)
		owe(resp);
	else
		U.got++;
	return UCS_OK;
}

static void ux_handler(int server)
{
	ucp_am_handler_param_t ap;

	memset(&ap, 0, sizeof(ap));
	ap.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
			UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
	ap.id = RAW_AM;
	ap.flags = UCP_AM_FLAG_WHOLE_MSG;
	ap.cb = ux_am;
	ap.arg = server ? (void *)1 : NULL;
	ucp_worker_set_am_recv_handler(U.w, &ap);
}

/* VGPU_BENCH_FLOOR_PEER=1: the floor's endpoints ask for peer error
 * handling as the transport's do (UCX then picks other lanes: with shared
 * memory, no cma, and rendezvous over tcp). */
static void ux_errmode(ucp_ep_params_t *ep)
{
	const char *e = getenv("VGPU_BENCH_FLOOR_PEER");

	if (e && atoi(e)) {
		ep->field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
		ep->err_mode = UCP_ERR_HANDLING_MODE_PEER;
	}
}

static void ux_conn(ucp_conn_request_h r, void *arg)
{
	ux_req = r;
}

static void ux_flush(void)
{
	ucp_request_param_t rp;

	memset(&rp, 0, sizeof(rp));
	ux_wait(ucp_ep_flush_nbx(U.ep, &rp));
}

static void ux_server(int wfd)
{
	ucp_listener_params_t lp;
	ucp_listener_h l;
	ucp_listener_attr_t la;
	struct sockaddr_in sa;
	ucp_ep_params_t ep;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	ux_init();
	/* page-aligned, as the client's buffer and vgpud's device memory
	 * are (bench_transports: UCX's tcp transport moves those faster) */
	if (posix_memalign((void **)&U.buf, 4096, server_max))
		die("raw UCX server: out of memory");
	ux_handler(1);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	memset(&lp, 0, sizeof(lp));
	lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
	lp.sockaddr.addr = (struct sockaddr *)&sa;
	lp.sockaddr.addrlen = sizeof(sa);
	lp.conn_handler.cb = ux_conn;
	if (ucp_listener_create(U.w, &lp, &l) != UCS_OK)
		_exit(1);
	la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
	ucp_listener_query(l, &la);
	if (write(wfd, &((struct sockaddr_in *)&la.sockaddr)->sin_port, 2) != 2)
		_exit(1);
	close(wfd);
	while (!ux_req)
		ux_progress();
	memset(&ep, 0, sizeof(ep));
	ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST;
	ep.conn_request = ux_req;
	ux_errmode(&ep);
	if (ucp_ep_create(U.w, &ep, &U.ep) != UCS_OK)
		_exit(1);
	ux_flush();
	for (;;) {
		ux_progress();
		while (U.nowe) {
			uint64_t r = U.owe[--U.nowe];
			ux_wait(ux_send(0, U.buf, r));
		}
	}
}

pid_t ux_floor_start(void *client_buf, size_t max)
{
	ucp_ep_params_t ep;
	struct sockaddr_in sa;
	int p[2];
	uint16_t port;
	pid_t pid;

	if (pipe(p))
		die("pipe");
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		server_max = max;
		ux_server(p[1]);
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], &port, 2) != 2)
		die("raw UCX server did not start");
	close(p[0]);
	ux_init();
	U.buf = client_buf;
	ux_handler(0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = port; /* network order, as the server wrote it */
	memset(&ep, 0, sizeof(ep));
	ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
	ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
	ep.sockaddr.addr = (struct sockaddr *)&sa;
	ep.sockaddr.addrlen = sizeof(sa);
	ux_errmode(&ep);
	if (ucp_ep_create(U.w, &ep, &U.ep) != UCS_OK)
		die("raw UCX connect failed");
	ux_flush();
	return pid;
}

static void ux_call(size_t req, size_t resp)
{
	int want = U.got + (resp ? 1 : 0);

	ux_wait(ux_send(resp, U.buf, req));
	while (U.got < want || U.pending)
		ux_progress();
}

double ux_floor_metric(int m, size_t n, unsigned count)
{
	double t0;

	switch (m) {
	case UX_RTT:
		for (unsigned i = 0; i < 100; i++)
			ux_call(64, 64);
		t0 = now();
		for (unsigned i = 0; i < count; i++)
			ux_call(64, 64);
		return (now() - t0) / count * 1e6;
	case UX_LAUNCH:
		t0 = now();
		for (unsigned i = 0; i < count; i++)
			ux_wait(ux_send(0, U.buf, 96));
		ux_call(16, 16);
		return count / (now() - t0);
	case UX_HTOD:
		ux_call(n, 16);
		t0 = now();
		for (unsigned i = 0; i < count; i++)
			ux_call(n, 16);
		return (double)n * count / (now() - t0) / 1e9;
	default:
		ux_call(16, n);
		t0 = now();
		for (unsigned i = 0; i < count; i++)
			ux_call(16, n);
		return (double)n * count / (now() - t0) / 1e9;
	}
}
