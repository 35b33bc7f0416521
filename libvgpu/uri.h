/* SPDX-License-Identifier: MIT */
/* uri.h - device URI parsing. Internal. */
#ifndef VGPU_URI_H
#define VGPU_URI_H

#include <stdint.h>
#include "vgpu.h"

#define VGPU_URI_MAX 2048
#define VGPU_URI_MAX_PARAMS 32

struct vgpu_uri_param {
	char key[32];
	char value[256];
};

/*
 * "cpu:0?mem=256M"          scheme=cpu  device=0
 * "cuda:1"                  scheme=cuda device=1
 * "tcp://host:7100/0?x=y"   scheme=tcp  host=host port=7100 device=0
 * "tcp://[::1]:7100/0"      host=::1
 * "unix:///run/v.sock/0"    scheme=unix path=/run/v.sock device=0
 * A missing device index means 0.
 */
struct vgpu_uri {
	char scheme[16];
	char host[256];
	int port;        /* -1 when absent */
	char path[1024]; /* unix socket path */
	int device;
	int nparams;
	struct vgpu_uri_param params[VGPU_URI_MAX_PARAMS];
};

/* Parse; on error sets the message ("bad URI 'x': ...") and returns VGPU_ERR_BAD_URI. */
vgpu_status vgpu__uri_parse(const char *s, struct vgpu_uri *u);
/* Value of ?key=, or NULL. */
const char *vgpu__uri_get(const struct vgpu_uri *u, const char *key);
/* Sizes: "4096", "256K", "256M", "4G", "1T" (binary units; also KiB/MiB/GiB). */
vgpu_status vgpu__parse_size(const char *s, uint64_t *out);
vgpu_status vgpu__uri_get_size(const struct vgpu_uri *u, const char *key,
			       uint64_t def, uint64_t *out);
/* Format back to text without secret parameters (token=). */
void vgpu__uri_format(const struct vgpu_uri *u, char *buf, size_t len);

#endif
