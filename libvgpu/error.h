/* SPDX-License-Identifier: MIT */
/* error.h - per-thread error messages and logging. Internal. */
#ifndef VGPU_ERROR_H
#define VGPU_ERROR_H

#include <stdarg.h>
#include "vgpu.h"

#define VGPU_ERRMSG_MAX 512

#if defined(__GNUC__)
#define VGPU_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define VGPU_HIDDEN __attribute__((visibility("hidden")))
#else
#define VGPU_PRINTF(a, b)
#define VGPU_HIDDEN
#endif

/* Set this thread's last error and return st (which must be < 0). */
vgpu_status vgpu__error(vgpu_status st, const char *fmt, ...) VGPU_PRINTF(2, 3);
/* Prefix the current message: "<prefix>: <old message>". Returns st. */
vgpu_status vgpu__error_prefix(vgpu_status st, const char *fmt, ...) VGPU_PRINTF(2, 3);
/* Set from a saved status+message (async errors). */
void vgpu__error_set_raw(vgpu_status st, const char *msg);
/* Current thread's message / status. */
const char *vgpu__error_msg(void);
vgpu_status vgpu__error_status(void);
/* Clear this thread's error. */
void vgpu__error_clear(void);

/* Logging to stderr, filtered by $VGPU_LOG (error|warn|info|debug; default warn). */
enum vgpu_log_level { VGPU_LOG_ERROR = 0, VGPU_LOG_WARN, VGPU_LOG_INFO, VGPU_LOG_DEBUG };
void vgpu__log(enum vgpu_log_level lvl, const char *fmt, ...) VGPU_PRINTF(2, 3);
int vgpu__log_enabled(enum vgpu_log_level lvl);
/* Override the level (vgpud --log-level); -1 = back to $VGPU_LOG. */
void vgpu__log_set_level(int lvl);
#define vgpu_err(...) vgpu__log(VGPU_LOG_ERROR, __VA_ARGS__)
#define vgpu_warn(...) vgpu__log(VGPU_LOG_WARN, __VA_ARGS__)
#define vgpu_info(...) vgpu__log(VGPU_LOG_INFO, __VA_ARGS__)
#define vgpu_debug(...) \
	do { if (vgpu__log_enabled(VGPU_LOG_DEBUG)) vgpu__log(VGPU_LOG_DEBUG, __VA_ARGS__); } while (0)

/* Format a byte count as "256 MiB" into buf. Returns buf. */
const char *vgpu__fmt_bytes(char *buf, size_t len, uint64_t n);

#endif
