/* SPDX-License-Identifier: MIT */
/*
 * uring_floor.c - the raw io_uring floor of bench_transports: what io_uring
 * itself costs for the exchanges of the raw socket floor, measured in the
 * same run, so that the uring transport can be read against the mechanism
 * it is built on as well as against a plain socket.
 */
#include "config.h"

#include <errno.h>
#include <liburing.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "uring_floor.h"

#define UD_SEND 1
#define UD_RECV 2
#define MAX_IOV 4
#define FLAT_MAX 8192 /* smaller messages are gathered into one SEND */

struct uf_conn {
	struct io_uring r;
	int fd;
	int fixed; /* fd registered: index 0, IOSQE_FIXED_FILE */
	char flat[FLAT_MAX];
};

size_t uf_serve_max;

void *uf_bulk_alloc(size_t n)
{
	void *p = NULL;

	if (posix_memalign(&p, 64, n + 64))
		return NULL;
	return (uint8_t *)p + UF_HDR;
}

void uf_bulk_free(void *p)
{
	if (p)
		free((uint8_t *)p - UF_HDR);
}

struct uf_conn *uf_open(int fd, int owned)
{
	struct uf_conn *c = calloc(1, sizeof(*c));
	struct io_uring_params p;
	int rc = -EINVAL;

	if (!c)
		return NULL;
	c->fd = fd;
	if (owned) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
		rc = io_uring_queue_init_params(8, &c->r, &p);
	}
	if (rc < 0) { /* not owned, or a kernel before 6.1 */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_COOP_TASKRUN;
		rc = io_uring_queue_init_params(8, &c->r, &p);
		if (rc == -EINVAL) {
			memset(&p, 0, sizeof(p));
			rc = io_uring_queue_init_params(8, &c->r, &p);
		}
	}
	if (rc < 0) {
		free(c);
		errno = -rc;
		return NULL;
	}
	c->fixed = io_uring_register_files(&c->r, &fd, 1) == 0;
	return c;
}

void uf_close(struct uf_conn *c)
{
	if (c) {
		io_uring_queue_exit(&c->r);
		free(c);
	}
}

ssize_t uf_xfer(struct uf_conn *c, const struct iovec *iov, int niov, void *rp, size_t rmin,
		size_t rn)
{
	struct iovec v[MAX_IOV];
	struct msghdr mh;
	size_t sleft = 0, rdone = 0;
	int inflight = 0, send_busy = 0, recv_busy = 0, poll_first, send_quiet = 0;

	if (niov > MAX_IOV) {
		errno = EINVAL;
		return -1;
	}
	memcpy(v, iov, sizeof(*iov) * (size_t)niov);
	for (int i = 0; i < niov; i++)
		sleft += v[i].iov_len;
	if (niov > 1 && sleft <= FLAT_MAX) { /* gathered: one SEND */
		size_t o = 0;
		for (int i = 0; i < niov; i++) {
			memcpy(c->flat + o, v[i].iov_base, v[i].iov_len);
			o += v[i].iov_len;
		}
		v[0].iov_base = c->flat;
		v[0].iov_len = o;
		niov = 1;
	}
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = v;
	mh.msg_iovlen = (size_t)niov;
	/* the answer to what this sends is not there yet: arm the poll at
	 * once instead of trying the receive first */
	poll_first = sleft > 0;

	while (sleft || rdone < rmin || inflight) {
		struct io_uring_cqe *cqe;
		struct io_uring_sqe *sqe;
		int rc;

		/* a short send or receive (a signal, a full socket) goes
		 * round again for what is left */
		if (sleft && !send_busy) {
			sqe = io_uring_get_sqe(&c->r);
			if (mh.msg_iovlen == 1)
				io_uring_prep_send(sqe, c->fixed ? 0 : c->fd, mh.msg_iov->iov_base,
						   mh.msg_iov->iov_len, MSG_WAITALL | MSG_NOSIGNAL);
			else
				io_uring_prep_sendmsg(sqe, c->fixed ? 0 : c->fd, &mh,
						      MSG_WAITALL | MSG_NOSIGNAL);
			if (c->fixed)
				sqe->flags |= IOSQE_FIXED_FILE;
			sqe->user_data = UD_SEND;
			send_busy = 1;
			/* sent with a receive of its answer: no completion unless
			 * it fails or falls short, and the wait is for the receive
			 * alone. A wait for both would cost a second
			 * io_uring_enter when the send completes at once, or never
			 * end when it does not: on a DEFER_TASKRUN ring the retry
			 * of a send that found the socket full is task work that
			 * wakes a waiter only once it is as many as the
			 * completions awaited. The answer arrives only after all
			 * of the request has, so its receive completing means the
			 * send has. */
			send_quiet = rdone < rmin && !recv_busy;
			if (send_quiet)
				sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
			else
				inflight++;
		}
		if (rdone < rmin && !recv_busy) {
			sqe = io_uring_get_sqe(&c->r);
			io_uring_prep_recv(sqe, c->fixed ? 0 : c->fd, (char *)rp + rdone, rn - rdone,
					   rmin == rn ? MSG_WAITALL : 0);
			if (c->fixed)
				sqe->flags |= IOSQE_FIXED_FILE;
			if (poll_first)
				sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
			sqe->user_data = UD_RECV;
			recv_busy = 1;
			inflight++;
		}
		rc = io_uring_submit_and_wait(&c->r, 1);
		if (rc < 0 && rc != -EINTR) {
			errno = -rc;
			return -1;
		}
		while (io_uring_peek_cqe(&c->r, &cqe) == 0) {
			int res = cqe->res;
			uint64_t ud = cqe->user_data;

			io_uring_cqe_seen(&c->r, cqe);
			if (ud == UD_SEND && send_quiet)
				send_quiet = 0; /* failed or short: it was not counted */
			else
				inflight--;
			if (ud == UD_SEND) {
				send_busy = 0;
				if (res < 0 && res != -EINTR && res != -EAGAIN) {
					errno = -res;
					return -1;
				}
				for (size_t w = res > 0 ? (size_t)res : 0; w;) {
					size_t k = w < mh.msg_iov->iov_len ? w : mh.msg_iov->iov_len;
					mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + k;
					mh.msg_iov->iov_len -= k;
					sleft -= k;
					w -= k;
					if (!mh.msg_iov->iov_len && mh.msg_iovlen > 1) {
						mh.msg_iov++;
						mh.msg_iovlen--;
					}
				}
			} else {
				recv_busy = 0;
				if (res == 0) {
					errno = ECONNRESET;
					return -1;
				}
				if (res < 0 && res != -EINTR && res != -EAGAIN) {
					errno = -res;
					return -1;
				}
				if (res > 0)
					rdone += (size_t)res;
				if (rdone >= rmin && send_quiet) { /* see above */
					sleft = 0;
					send_busy = send_quiet = 0;
				}
			}
		}
	}
	return (ssize_t)rdone;
}

/*
 * The server reads ahead, as the raw socket floor's does: each receive
 * takes what has arrived, up to 8 KiB, so a request of a few KiB comes
 * with its header in one receive, and the rest of a larger one goes
 * straight to its buffer after a copy of at most 8 KiB. (With 64 KiB, as
 * until 2026-12-07, a 64 KiB request was copied whole out of the
 * read-ahead: slower than the floor can be.)
 */
#define AHEAD (8u * 1024)

void *uf_serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	struct uf_conn *c = uf_open(fd, 1);
	uint8_t *buf = uf_bulk_alloc(uf_serve_max), *ra = malloc(AHEAD);
	size_t have = 0; /* bytes at the start of ra */
	struct iovec iov = { NULL, 0 };
	int niov = 0;

	while (c && buf && ra) {
		uint64_t h[2];
		size_t body;
		ssize_t r;

		/* the last reply and (at least) the next header in one
		 * io_uring_enter */
		if (have < sizeof(h) || niov) {
			r = uf_xfer(c, &iov, niov, ra + have, have < sizeof(h) ? sizeof(h) - have : 0,
				    AHEAD - have);
			if (r < 0)
				break;
			have += (size_t)r;
			niov = 0;
		}
		memcpy(h, ra, sizeof(h));
		if (h[0] > uf_serve_max || h[1] > uf_serve_max)
			break;
		body = have - sizeof(h) < h[0] ? have - sizeof(h) : h[0];
		memcpy(buf, ra + sizeof(h), body);
		if (body < h[0] && uf_xfer(c, NULL, 0, buf + body, h[0] - body, h[0] - body) < 0)
			break;
		have -= sizeof(h) + body;
		memmove(ra, ra + sizeof(h) + body, have);
		iov.iov_base = buf - UF_HDR; /* a header and the answer */
		iov.iov_len = UF_HDR + h[1];
		niov = h[1] ? 1 : 0;
	}
	uf_close(c);
	uf_bulk_free(buf);
	free(ra);
	close(fd);
	return NULL;
}
