/* SPDX-License-Identifier: MIT */
/*
 * status.c - the status request (VGPU_OP_STATUS): its wire codec and the
 * client side (vgpu_node_status_get), used by pool placement and `vgpu smi`.
 *
 * A status request may be the first request of a connection instead of
 * OP_HELLO: it opens no session (a full server still answers), and the
 * server closes the connection after the reply. It carries the same
 * authentication as OP_HELLO. Request:
 *   [OP_STATUS, tenant, mac|nil, wait_id, mem_wanted, device]
 * wait_id != 0 says "a pool client waits for capacity on device": the
 * server counts it for a few seconds after each poll and hands it to the
 * engine's autoscale signals (vgpu__engine_scale_demand).
 * Reply: [0, "", status] (see vgpu__pack_node_status).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "proto.h"
#include "status.h"
#include "transport.h"
#include "uri.h"
#include "vgpu/pool.h"

#define DEV_FIELDS 14
#define SES_FIELDS 12
#define TEN_FIELDS 4
#define TP_FIELDS 4
#define ST_FIELDS 13

static void pk_str(msgpack_packer *pk, const char *s, size_t cap)
{
	msgpack_pack_str_with_body(pk, s, strnlen(s, cap));
}

void vgpu__pack_node_status(msgpack_packer *pk, const struct vgpu_node_status *s)
{
	msgpack_pack_array(pk, ST_FIELDS);
	pk_str(pk, s->server, sizeof(s->server));
	pk_str(pk, s->backend, sizeof(s->backend));
	msgpack_pack_uint32(pk, s->max_sessions);
	msgpack_pack_uint32(pk, s->sessions);
	msgpack_pack_uint32(pk, s->waiting);
	msgpack_pack_uint64(pk, s->wait_ns_max);
	msgpack_pack_uint64(pk, s->waits_total);
	msgpack_pack_uint64(pk, s->refused);
	msgpack_pack_uint64(pk, s->uptime_ns);
	msgpack_pack_array(pk, s->ndevices);
	for (uint32_t i = 0; i < s->ndevices; i++) {
		const struct vgpu_node_device *d = &s->devices[i];

		msgpack_pack_array(pk, DEV_FIELDS);
		msgpack_pack_int(pk, d->index);
		pk_str(pk, d->name, sizeof(d->name));
		pk_str(pk, d->backend, sizeof(d->backend));
		msgpack_pack_uint64(pk, d->mem_total);
		msgpack_pack_uint64(pk, d->mem_used);
		msgpack_pack_uint64(pk, d->mem_on_host);
		msgpack_pack_uint64(pk, d->swapped_in);
		msgpack_pack_uint64(pk, d->swapped_out);
		msgpack_pack_uint32(pk, d->sessions);
		msgpack_pack_uint64(pk, d->queued);
		msgpack_pack_double(pk, d->util);
		msgpack_pack_uint64(pk, d->device_ns);
		msgpack_pack_uint64(pk, d->items);
		msgpack_pack_uint64(pk, d->queue_wait_ns);
	}
	msgpack_pack_array(pk, s->nsessions);
	for (uint32_t i = 0; i < s->nsessions; i++) {
		const struct vgpu_node_session *x = &s->session[i];

		msgpack_pack_array(pk, SES_FIELDS);
		msgpack_pack_uint64(pk, x->id);
		pk_str(pk, x->tenant, sizeof(x->tenant));
		msgpack_pack_int(pk, x->device);
		msgpack_pack_uint64(pk, x->mem_used);
		msgpack_pack_uint64(pk, x->mem_limit);
		msgpack_pack_uint64(pk, x->mem_on_host);
		msgpack_pack_double(pk, x->share);
		msgpack_pack_uint64(pk, x->device_ns);
		msgpack_pack_uint64(pk, x->items);
		msgpack_pack_uint64(pk, x->queued);
		msgpack_pack_uint64(pk, x->age_ns);
		msgpack_pack_uint64(pk, x->idle_ns);
	}
	msgpack_pack_array(pk, s->ntenants);
	for (uint32_t i = 0; i < s->ntenants; i++) {
		const struct vgpu_node_tenant *t = &s->tenants[i];

		msgpack_pack_array(pk, TEN_FIELDS);
		pk_str(pk, t->tenant, sizeof(t->tenant));
		msgpack_pack_uint64(pk, t->device_ns);
		msgpack_pack_uint64(pk, t->items);
		msgpack_pack_uint64(pk, t->sessions);
	}
	msgpack_pack_array(pk, s->ntransports);
	for (uint32_t i = 0; i < s->ntransports; i++) {
		const struct vgpu_node_transport *t = &s->transports[i];

		msgpack_pack_array(pk, TP_FIELDS);
		pk_str(pk, t->name, sizeof(t->name));
		msgpack_pack_uint64(pk, t->rx_bytes);
		msgpack_pack_uint64(pk, t->tx_bytes);
		msgpack_pack_uint64(pk, t->connections);
	}
}

/* Array header of an element with at least min fields; returns the extra count. */
static int elem(struct vgpu_mp *m, uint32_t min, uint32_t *extra)
{
	uint32_t n;

	if (vgpu__mp_array(m, &n) || n < min) {
		m->err = 1;
		return -1;
	}
	*extra = n - min;
	return 0;
}

static void skip_extra(struct vgpu_mp *m, uint32_t extra)
{
	while (extra-- && !m->err)
		vgpu__mp_skip(m, 1);
}

static int list(struct vgpu_mp *m, uint32_t max, uint32_t *n, void **v, size_t esize)
{
	if (vgpu__mp_array(m, n) || *n > max) {
		m->err = 1;
		return -1;
	}
	/* each element takes at least one byte: no count beyond the body */
	if (*n > (uint32_t)(m->end - m->p)) {
		m->err = 1;
		return -1;
	}
	*v = *n ? calloc(*n, esize) : NULL;
	if (*n && !*v) {
		m->err = 1;
		return -1;
	}
	return 0;
}

int vgpu__unpack_node_status(struct vgpu_mp *m, struct vgpu_node_status *s)
{
	uint32_t extra, x;

	if (elem(m, ST_FIELDS, &extra))
		return -1;
	vgpu__mp_strcpy(m, s->server, sizeof(s->server));
	vgpu__mp_strcpy(m, s->backend, sizeof(s->backend));
	vgpu__mp_u32(m, &s->max_sessions);
	vgpu__mp_u32(m, &s->sessions);
	vgpu__mp_u32(m, &s->waiting);
	vgpu__mp_u64(m, &s->wait_ns_max);
	vgpu__mp_u64(m, &s->waits_total);
	vgpu__mp_u64(m, &s->refused);
	vgpu__mp_u64(m, &s->uptime_ns);
	if (m->err || list(m, VGPU_STATUS_MAX_DEVICES, &s->ndevices, (void **)&s->devices,
			   sizeof(*s->devices)))
		return -1;
	for (uint32_t i = 0; i < s->ndevices && !m->err; i++) {
		struct vgpu_node_device *d = &s->devices[i];

		if (elem(m, DEV_FIELDS, &x))
			return -1;
		vgpu__mp_int(m, &d->index);
		vgpu__mp_strcpy(m, d->name, sizeof(d->name));
		vgpu__mp_strcpy(m, d->backend, sizeof(d->backend));
		vgpu__mp_u64(m, &d->mem_total);
		vgpu__mp_u64(m, &d->mem_used);
		vgpu__mp_u64(m, &d->mem_on_host);
		vgpu__mp_u64(m, &d->swapped_in);
		vgpu__mp_u64(m, &d->swapped_out);
		vgpu__mp_u32(m, &d->sessions);
		vgpu__mp_u64(m, &d->queued);
		vgpu__mp_f64(m, &d->util);
		vgpu__mp_u64(m, &d->device_ns);
		vgpu__mp_u64(m, &d->items);
		vgpu__mp_u64(m, &d->queue_wait_ns);
		skip_extra(m, x);
	}
	if (m->err || list(m, VGPU_STATUS_MAX_SESSIONS, &s->nsessions, (void **)&s->session,
			   sizeof(*s->session)))
		return -1;
	for (uint32_t i = 0; i < s->nsessions && !m->err; i++) {
		struct vgpu_node_session *e = &s->session[i];

		if (elem(m, SES_FIELDS, &x))
			return -1;
		vgpu__mp_u64(m, &e->id);
		vgpu__mp_strcpy(m, e->tenant, sizeof(e->tenant));
		vgpu__mp_int(m, &e->device);
		vgpu__mp_u64(m, &e->mem_used);
		vgpu__mp_u64(m, &e->mem_limit);
		vgpu__mp_u64(m, &e->mem_on_host);
		vgpu__mp_f64(m, &e->share);
		vgpu__mp_u64(m, &e->device_ns);
		vgpu__mp_u64(m, &e->items);
		vgpu__mp_u64(m, &e->queued);
		vgpu__mp_u64(m, &e->age_ns);
		vgpu__mp_u64(m, &e->idle_ns);
		skip_extra(m, x);
	}
	if (m->err || list(m, VGPU_STATUS_MAX_TENANTS, &s->ntenants, (void **)&s->tenants,
			   sizeof(*s->tenants)))
		return -1;
	for (uint32_t i = 0; i < s->ntenants && !m->err; i++) {
		struct vgpu_node_tenant *t = &s->tenants[i];

		if (elem(m, TEN_FIELDS, &x))
			return -1;
		vgpu__mp_strcpy(m, t->tenant, sizeof(t->tenant));
		vgpu__mp_u64(m, &t->device_ns);
		vgpu__mp_u64(m, &t->items);
		vgpu__mp_u64(m, &t->sessions);
		skip_extra(m, x);
	}
	if (m->err || list(m, 16, &s->ntransports, (void **)&s->transports, sizeof(*s->transports)))
		return -1;
	for (uint32_t i = 0; i < s->ntransports && !m->err; i++) {
		struct vgpu_node_transport *t = &s->transports[i];

		if (elem(m, TP_FIELDS, &x))
			return -1;
		vgpu__mp_strcpy(m, t->name, sizeof(t->name));
		vgpu__mp_u64(m, &t->rx_bytes);
		vgpu__mp_u64(m, &t->tx_bytes);
		vgpu__mp_u64(m, &t->connections);
		skip_extra(m, x);
	}
	skip_extra(m, extra);
	return m->err ? -1 : 0;
}

VGPU_API void vgpu_node_status_free(struct vgpu_node_status *st)
{
	if (!st)
		return;
	free(st->devices);
	free(st->session);
	free(st->tenants);
	free(st->transports);
	free(st);
}

vgpu_status vgpu__status_query(const struct vgpu_uri *u, const struct vgpu_open_opts *opts,
			       uint64_t wait_id, uint64_t mem_wanted, struct vgpu_node_status **out)
{
	const struct vgpu_transport_ops *tp = vgpu__transport_find(u->scheme);
	struct vgpu_tp_conn *c = NULL;
	struct vgpu_rbuf *rb = NULL;
	uint8_t *body = NULL, mac[VGPU_PROTO_MAC], buf[512];
	struct vgpu_node_status *st = NULL;
	struct vgpu_hdr h;
	struct vgpu_mp m;
	struct vgpu_wbuf w;
	const char *tenant = NULL, *token = NULL, *e;
	const void *nonce;
	char label[VGPU_URI_MAX], sname[128];
	uint32_t n, ver, nl, timeout = 0;
	int auth = 0;
	int64_t status;
	vgpu_status rc;

	*out = NULL;
	vgpu__uri_format(u, label, sizeof(label));
	if (!tp)
		return vgpu__error(VGPU_ERR_BAD_URI, "%s: no transport for scheme '%s'", label, u->scheme);
	if (opts && opts->size > offsetof(struct vgpu_open_opts, timeout_ms))
		timeout = opts->timeout_ms;
	if (!timeout)
		timeout = 2000;
	if (opts && opts->size > offsetof(struct vgpu_open_opts, tenant))
		tenant = opts->tenant;
	if (!tenant)
		tenant = vgpu__uri_get(u, "tenant");
	if (!tenant || !*tenant)
		tenant = "default";
	if (strlen(tenant) > 63)
		return vgpu__error(VGPU_ERR_INVALID, "%s: tenant name too long (at most 63 bytes)", label);
	if (opts && opts->size > offsetof(struct vgpu_open_opts, token))
		token = opts->token;
	if (!token)
		token = vgpu__uri_get(u, "token");
	if (!token && (e = getenv("VGPU_TOKEN")) && *e)
		token = e;

	rb = calloc(1, sizeof(*rb));
	body = malloc(VGPU_PROTO_MAX_BODY);
	st = calloc(1, sizeof(*st));
	if (!rb || !body || !st) {
		rc = vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
		goto out;
	}
	{
		struct vgpu_tp_addr a;

		vgpu__tp_addr(u, &a);
		rc = tp->connect(&a, timeout, &c);
	}
	if (rc < 0) {
		vgpu__error_prefix(rc, "%s", label);
		goto out;
	}
	tp->set_timeout(c, timeout);
	rb->tp = tp;
	rb->c = c;
	memset(&h, 0, sizeof(h));
	rc = vgpu__rbuf_frame(rb, &h, body, 0, "server");
	if (rc < 0) {
		vgpu__error_prefix(rc, "%s", label);
		goto out;
	}
	vgpu__mp_init(&m, body, h.body_len);
	if (h.type != VGPU_MSG_HELLO || vgpu__mp_array(&m, &n) || n < 4 || vgpu__mp_u32(&m, &ver) ||
	    vgpu__mp_bin(&m, &nonce, &nl) || nl != VGPU_PROTO_NONCE ||
	    vgpu__mp_strcpy(&m, sname, sizeof(sname)) || vgpu__mp_bool(&m, &auth)) {
		rc = vgpu__error(VGPU_ERR_PROTOCOL, "%s: not a libvgpu server (bad greeting)", label);
		goto out;
	}
	if (ver != VGPU_PROTO_VERSION) {
		rc = vgpu__error(VGPU_ERR_PROTOCOL, "%s: protocol version mismatch: server %u, client %u",
				 label, ver, VGPU_PROTO_VERSION);
		goto out;
	}
	if (token) {
		rc = vgpu__auth_mac(token, nonce, tenant, mac);
		if (rc < 0)
			goto out;
	}
	vgpu__wbuf_init(&w, buf, sizeof(buf));
	msgpack_pack_array(&w.pk, 6);
	msgpack_pack_uint32(&w.pk, VGPU_OP_STATUS);
	msgpack_pack_str_with_body(&w.pk, tenant, strlen(tenant));
	if (token)
		msgpack_pack_bin_with_body(&w.pk, mac, sizeof(mac));
	else
		msgpack_pack_nil(&w.pk);
	msgpack_pack_uint64(&w.pk, wait_id);
	msgpack_pack_uint64(&w.pk, mem_wanted);
	msgpack_pack_int(&w.pk, u->device);
	rc = vgpu__send_msg(tp, c, VGPU_MSG_REQ, 0, 1, w.buf, w.len, NULL, 0);
	if (rc < 0) {
		vgpu__error_prefix(rc, "%s", label);
		goto out;
	}
	rc = vgpu__rbuf_frame(rb, &h, body, 0, "server");
	if (rc < 0) {
		vgpu__error_prefix(rc, "%s: status", label);
		goto out;
	}
	vgpu__mp_init(&m, body, h.body_len);
	if (h.type != VGPU_MSG_RESP || vgpu__mp_array(&m, &n) || n < 2 || vgpu__mp_i64(&m, &status) ||
	    status > 0 || status < INT32_MIN) {
		rc = vgpu__error(VGPU_ERR_PROTOCOL, "%s: malformed status reply", label);
		goto out;
	}
	if (status < 0) {
		const char *s = "";
		uint32_t sl = 0;

		vgpu__mp_str(&m, &s, &sl);
		rc = vgpu__error((vgpu_status)status, "%.*s", (int)sl, s);
		goto out;
	}
	if (n < 3 || vgpu__mp_skip(&m, 0) || vgpu__unpack_node_status(&m, st)) {
		rc = vgpu__error(VGPU_ERR_PROTOCOL, "%s: malformed status reply", label);
		goto out;
	}
	st->size = sizeof(*st);
	snprintf(st->uri, sizeof(st->uri), "%s", label);
	*out = st;
	st = NULL;
	rc = VGPU_OK;
out:
	if (c)
		tp->close(c);
	vgpu_node_status_free(st);
	free(rb);
	free(body);
	return rc;
}

VGPU_API vgpu_status vgpu_node_status_get(const char *uri, const struct vgpu_open_opts *opts,
					  struct vgpu_node_status **out)
{
	struct vgpu_uri *u;
	vgpu_status rc;

	if (!out)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_node_status_get: out is NULL");
	*out = NULL;
	if (!uri || !*uri)
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_node_status_get: no URI");
	if (opts && (opts->size == 0 || opts->size > 4096))
		return vgpu__error(VGPU_ERR_INVALID, "vgpu_node_status_get: opts->size must be "
				   "sizeof(struct vgpu_open_opts)");
	u = malloc(sizeof(*u));
	if (!u)
		return vgpu__error(VGPU_ERR_NO_HOST_MEMORY, "out of host memory");
	rc = vgpu__uri_parse(uri, u);
	if (rc == VGPU_OK)
		rc = vgpu__status_query(u, opts, 0, 0, out);
	free(u);
	return rc;
}
