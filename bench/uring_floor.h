/* SPDX-License-Identifier: MIT */
/*
 * uring_floor.h - the raw io_uring floor of the transport benchmark
 * (uring_floor.c): the raw socket floor's exchanges (a 16-byte header
 * {request bytes, reply bytes}, the request, the reply) with every byte
 * moved by io_uring, on both sides, the way the uring transport moves them
 * at its best: a send and the receive of its answer submitted together in
 * one io_uring_enter (the receive armed poll-first), MSG_WAITALL so that one
 * SQE moves a whole message, messages of at most 8 KiB gathered into one
 * SEND, the socket a registered file, the server reading ahead as vgpud
 * does and its ring owned by its thread (SINGLE_ISSUER | DEFER_TASKRUN)
 * when the kernel has that.
 */
#ifndef VGPU_BENCH_URING_FLOOR_H
#define VGPU_BENCH_URING_FLOOR_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct uf_conn;

/* A ring for the connected socket fd (owned: SINGLE_ISSUER | DEFER_TASKRUN
 * when the kernel has it, for a ring only this thread enters). NULL with
 * errno set on failure. uf_close closes the ring, not fd. */
struct uf_conn *uf_open(int fd, int owned);
void uf_close(struct uf_conn *c);

/*
 * Send every byte of iov[0..niov) and receive at least rmin, at most rn
 * bytes into rp (rmin == rn: one MSG_WAITALL receive), both submitted in
 * one io_uring_enter (either may be empty). The bytes received, or -1 with
 * errno set (ECONNRESET for an orderly close by the peer).
 */
ssize_t uf_xfer(struct uf_conn *c, const struct iovec *iov, int niov, void *rp, size_t rmin,
		size_t rn);

/* Thread body: the echo server for one accepted socket (arg: the fd as
 * intptr_t): reads {req, resp}, req bytes, answers resp bytes (at most max
 * each), until the peer closes. Closes the fd. */
void *uf_serve(void *arg);
extern size_t uf_serve_max;

/*
 * The floors' messages are a 16-byte header and its bytes, both ways (an
 * answer's header is the 16 bytes in front of its buffer). Their buffers
 * are at 16 modulo 64, so every byte sits in the stream at an offset
 * congruent to its address: the kernel copies fastest so, and vgpud and
 * the client align their bulk the same way (VGPU_PROTO_BULK_ALIGN). The
 * floor at its best. uf_bulk_alloc: n bytes there, with UF_HDR bytes in
 * front that an answer may send as its header; uf_bulk_free frees it.
 */
#define UF_HDR 16
void *uf_bulk_alloc(size_t n);
void uf_bulk_free(void *p);

#endif
