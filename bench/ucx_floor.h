/* SPDX-License-Identifier: MIT */
/* ucx_floor.h - the raw UCX floor of the transport benchmarks (ucx_floor.c). */
#ifndef VGPU_BENCH_UCX_FLOOR_H
#define VGPU_BENCH_UCX_FLOOR_H

#include <stddef.h>
#include <sys/types.h>

enum { UX_RTT, UX_LAUNCH, UX_HTOD, UX_DTOH };

/*
 * Fork the raw UCX server (it dies with this process: PR_SET_PDEATHSIG) and
 * connect to it. client_buf: this side's buffer of max bytes; max: the
 * largest message. VGPU_BENCH_FLOOR_PEER=1 gives both endpoints peer error
 * handling, as the rdma transport's have. Returns the server's pid; exits
 * on failure.
 */
pid_t ux_floor_start(void *client_buf, size_t max);
/*
 * One measurement: UX_RTT (count 64-byte round trips, us), UX_LAUNCH (count
 * 96-byte messages then one round trip, messages/s), UX_HTOD (count
 * requests of n bytes answered by 16, GB/s), UX_DTOH (16-byte requests
 * answered by n bytes, GB/s).
 */
double ux_floor_metric(int m, size_t n, unsigned count);

#endif
