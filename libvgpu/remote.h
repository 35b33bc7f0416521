/* SPDX-License-Identifier: MIT */
/* remote.h - remote door extras (internal; for tests and tools). */
#ifndef VGPU_REMOTE_H
#define VGPU_REMOTE_H

#include <stdint.h>
#include "vgpu.h"

/* Engine-wide figures of the server's device behind a remote handle:
 * open sessions, bytes allocated by all sessions, allocations. */
vgpu_status vgpu__remote_server_stats(vgpu_t *v, uint64_t *sessions, uint64_t *mem_used,
				      uint64_t *allocations);

#endif
