/* SPDX-License-Identifier: MIT */
/* error.c - status names, per-thread messages, logging. */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

struct tls_error {
	vgpu_status st;
	char msg[VGPU_ERRMSG_MAX];
};

static __thread struct tls_error tls_err;

static const struct {
	vgpu_status st;
	const char *name;
	const char *desc;
} status_table[] = {
	{ VGPU_OK, "VGPU_OK", "success" },
	{ VGPU_ERR_INVALID, "VGPU_ERR_INVALID", "invalid argument" },
	{ VGPU_ERR_NO_HOST_MEMORY, "VGPU_ERR_NO_HOST_MEMORY", "out of host memory" },
	{ VGPU_ERR_OUT_OF_MEMORY, "VGPU_ERR_OUT_OF_MEMORY", "out of device memory or over a memory limit" },
	{ VGPU_ERR_BAD_URI, "VGPU_ERR_BAD_URI", "bad device URI" },
	{ VGPU_ERR_NO_DEVICE, "VGPU_ERR_NO_DEVICE", "no such device or backend" },
	{ VGPU_ERR_BAD_HANDLE, "VGPU_ERR_BAD_HANDLE", "unknown or invalid handle" },
	{ VGPU_ERR_BAD_ADDRESS, "VGPU_ERR_BAD_ADDRESS", "device address not allocated or out of range" },
	{ VGPU_ERR_NOT_FOUND, "VGPU_ERR_NOT_FOUND", "not found" },
	{ VGPU_ERR_BAD_MODULE, "VGPU_ERR_BAD_MODULE", "module image rejected" },
	{ VGPU_ERR_KERNEL_ARGS, "VGPU_ERR_KERNEL_ARGS", "kernel arguments do not match the kernel" },
	{ VGPU_ERR_LAUNCH, "VGPU_ERR_LAUNCH", "kernel launch failed" },
	{ VGPU_ERR_NOT_READY, "VGPU_ERR_NOT_READY", "work not yet complete" },
	{ VGPU_ERR_UNSUPPORTED, "VGPU_ERR_UNSUPPORTED", "not supported" },
	{ VGPU_ERR_CONNECTION, "VGPU_ERR_CONNECTION", "connection failed or lost" },
	{ VGPU_ERR_PROTOCOL, "VGPU_ERR_PROTOCOL", "protocol error" },
	{ VGPU_ERR_AUTH, "VGPU_ERR_AUTH", "authentication refused" },
	{ VGPU_ERR_DRIVER, "VGPU_ERR_DRIVER", "device driver error" },
	{ VGPU_ERR_BUSY, "VGPU_ERR_BUSY", "no capacity: not admitted" },
	{ VGPU_ERR_TIMEOUT, "VGPU_ERR_TIMEOUT", "timed out" },
	{ VGPU_ERR_PLUGIN, "VGPU_ERR_PLUGIN", "plugin error" },
	{ VGPU_ERR_INTERNAL, "VGPU_ERR_INTERNAL", "internal error" },
	{ VGPU_ERR_CLOSED, "VGPU_ERR_CLOSED", "handle closed or server stopping" },
};

VGPU_API const char *vgpu_status_name(vgpu_status st)
{
	for (size_t i = 0; i < sizeof(status_table) / sizeof(status_table[0]); i++)
		if (status_table[i].st == st)
			return status_table[i].name;
	return "VGPU_ERR_UNKNOWN";
}

VGPU_API const char *vgpu_strerror(vgpu_status st)
{
	for (size_t i = 0; i < sizeof(status_table) / sizeof(status_table[0]); i++)
		if (status_table[i].st == st)
			return status_table[i].desc;
	return "unknown status";
}

VGPU_API const char *vgpu_last_error(void)
{
	return tls_err.msg;
}

VGPU_API vgpu_status vgpu_last_status(void)
{
	return tls_err.st;
}

VGPU_API const char *vgpu_version(void)
{
	return PACKAGE_VERSION;
}

vgpu_status vgpu__error(vgpu_status st, const char *fmt, ...)
{
	va_list ap;

	tls_err.st = st;
	va_start(ap, fmt);
	vsnprintf(tls_err.msg, sizeof(tls_err.msg), fmt, ap);
	va_end(ap);
	vgpu_debug("error %s: %s", vgpu_status_name(st), tls_err.msg);
	return st;
}

vgpu_status vgpu__error_prefix(vgpu_status st, const char *fmt, ...)
{
	char prefix[VGPU_ERRMSG_MAX], old[VGPU_ERRMSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, tls_err.msg, sizeof(old));
	tls_err.st = st;
	if (old[0])
		snprintf(tls_err.msg, sizeof(tls_err.msg), "%s: %s", prefix, old);
	else
		snprintf(tls_err.msg, sizeof(tls_err.msg), "%s: %s", prefix, vgpu_strerror(st));
	return st;
}

void vgpu__error_set_raw(vgpu_status st, const char *msg)
{
	tls_err.st = st;
	snprintf(tls_err.msg, sizeof(tls_err.msg), "%s", msg ? msg : vgpu_strerror(st));
}

const char *vgpu__error_msg(void)
{
	return tls_err.msg;
}

vgpu_status vgpu__error_status(void)
{
	return tls_err.st;
}

void vgpu__error_clear(void)
{
	tls_err.st = VGPU_OK;
	tls_err.msg[0] = '\0';
}

/* ---- logging ---------------------------------------------------------- */

static int log_override = -1;
static int log_env_level = -2; /* -2: not read yet */
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_read_env(void)
{
	const char *s = getenv("VGPU_LOG");
	static const char *names[] = { "error", "warn", "info", "debug" };

	log_env_level = VGPU_LOG_WARN;
	if (!s || !*s)
		return;
	for (int i = 0; i < 4; i++)
		if (!strcasecmp(s, names[i])) {
			log_env_level = i;
			return;
		}
	if (!strcasecmp(s, "warning"))
		return;
	fprintf(stderr, "libvgpu: warning: VGPU_LOG='%s' is not one of error, warn, info, debug; using warn\n", s);
}

int vgpu__log_enabled(enum vgpu_log_level lvl)
{
	if (log_override >= 0)
		return (int)lvl <= log_override;
	pthread_once(&log_once, log_read_env);
	return (int)lvl <= log_env_level;
}

void vgpu__log_set_level(int lvl)
{
	log_override = lvl;
}

void vgpu__log(enum vgpu_log_level lvl, const char *fmt, ...)
{
	static const char *tag[] = { "error", "warn", "info", "debug" };
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	if (!vgpu__log_enabled(lvl))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld vgpu[%d] %s: ",
		     tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(), tag[lvl]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");
	fputs(line, stderr);
}

const char *vgpu__fmt_bytes(char *buf, size_t len, uint64_t n)
{
	static const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int i = 0;
	double d = (double)n;

	if (n < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)n);
		return buf;
	}
	while (d >= 1024 && i < 4) {
		d /= 1024;
		i++;
	}
	if (d == (double)(uint64_t)d)
		snprintf(buf, len, "%llu %s", (unsigned long long)d, u[i]);
	else
		snprintf(buf, len, "%.1f %s", d, u[i]);
	return buf;
}
