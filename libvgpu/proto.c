/* SPDX-License-Identifier: MIT */
/* proto.c - wire protocol: header codec, bounded msgpack cursor, framing, HMAC. */
#include "config.h"

#include <endian.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "error.h"
#include "proto.h"

static const char *const op_names[VGPU_OP_MAX] = {
	[VGPU_OP_HELLO] = "hello", [VGPU_OP_DEVICE_INFO] = "device_info",
	[VGPU_OP_SYNCHRONIZE] = "synchronize", [VGPU_OP_MEM_ALLOC] = "mem_alloc",
	[VGPU_OP_MEM_FREE] = "mem_free", [VGPU_OP_HTOD] = "memcpy_htod",
	[VGPU_OP_DTOH] = "memcpy_dtoh", [VGPU_OP_DTOD] = "memcpy_dtod",
	[VGPU_OP_MEMSET] = "memset", [VGPU_OP_STREAM_CREATE] = "stream_create",
	[VGPU_OP_STREAM_DESTROY] = "stream_destroy", [VGPU_OP_STREAM_SYNC] = "stream_synchronize",
	[VGPU_OP_STREAM_QUERY] = "stream_query", [VGPU_OP_STREAM_WAIT_EVENT] = "stream_wait_event",
	[VGPU_OP_EVENT_CREATE] = "event_create", [VGPU_OP_EVENT_DESTROY] = "event_destroy",
	[VGPU_OP_EVENT_RECORD] = "event_record", [VGPU_OP_EVENT_SYNC] = "event_synchronize",
	[VGPU_OP_EVENT_QUERY] = "event_query", [VGPU_OP_EVENT_ELAPSED] = "event_elapsed",
	[VGPU_OP_MODULE_LOAD] = "module_load", [VGPU_OP_MODULE_UNLOAD] = "module_unload",
	[VGPU_OP_FUNCTION] = "module_function", [VGPU_OP_LAUNCH] = "launch",
	[VGPU_OP_SERVER_STATS] = "server_stats",
	[VGPU_OP_STATUS] = "status",
	[VGPU_OP_MEM_ADVISE] = "mem_advise",
};

const char *vgpu__op_name(unsigned op)
{
	return op < VGPU_OP_MAX && op_names[op] ? op_names[op] : "unknown";
}

/* ---- header ---- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return get16(p) | ((uint32_t)get16(p + 2) << 16); }
static uint64_t get64(const uint8_t *p) { return get32(p) | ((uint64_t)get32(p + 4) << 32); }

void vgpu__hdr_encode(uint8_t out[VGPU_PROTO_HDR], const struct vgpu_hdr *h)
{
	put32(out, h->magic);
	put16(out + 4, h->version);
	put16(out + 6, h->type);
	put32(out + 8, h->flags);
	put32(out + 12, h->body_len);
	put64(out + 16, h->id);
	put64(out + 24, h->bulk_len);
}

void vgpu__hdr_decode(const uint8_t in[VGPU_PROTO_HDR], struct vgpu_hdr *h)
{
	h->magic = get32(in);
	h->version = get16(in + 4);
	h->type = get16(in + 6);
	h->flags = get32(in + 8);
	h->body_len = get32(in + 12);
	h->id = get64(in + 16);
	h->bulk_len = get64(in + 24);
}

vgpu_status vgpu__hdr_check(const struct vgpu_hdr *h, uint64_t max_bulk, const char *peer)
{
	if (h->magic != VGPU_PROTO_MAGIC)
		return vgpu__error(VGPU_ERR_PROTOCOL, "bad frame: magic 0x%08x is not a libvgpu peer",
				   h->magic);
	if (h->version != VGPU_PROTO_VERSION)
		return vgpu__error(VGPU_ERR_PROTOCOL,
				   "protocol version mismatch: %s speaks version %u, %s speaks version %u",
				   peer, h->version, strcmp(peer, "server") ? "server" : "client",
				   VGPU_PROTO_VERSION);
	if (h->type < VGPU_MSG_HELLO || h->type > VGPU_MSG_RESP)
		return vgpu__error(VGPU_ERR_PROTOCOL, "bad frame: unknown message type %u", h->type);
	if (h->body_len > VGPU_PROTO_MAX_BODY)
		return vgpu__error(VGPU_ERR_PROTOCOL, "bad frame: body length %u exceeds the limit %u",
				   h->body_len, VGPU_PROTO_MAX_BODY);
	if (h->body_len == 0)
		return vgpu__error(VGPU_ERR_PROTOCOL, "bad frame: empty body");
	if (h->bulk_len > max_bulk)
		return vgpu__error(VGPU_ERR_PROTOCOL,
				   "bad frame: bulk length %llu exceeds the limit %llu",
				   (unsigned long long)h->bulk_len, (unsigned long long)max_bulk);
	return VGPU_OK;
}

/* ---- packing ---- */

static int wbuf_write(void *data, const char *buf, size_t len)
{
	struct vgpu_wbuf *w = data;

	uint8_t *d;

	if (w->overflow || len > w->cap - w->len) {
		w->overflow = 1;
		return -1;
	}
	d = w->buf + w->len;
	w->len += len;
	if (len > 16) {
		memcpy(d, buf, len);
		return 0;
	}
	/* msgpack hands over one token at a time (1 to 9 bytes): fixed-size
	 * copies, which the compiler turns into moves, not a call */
	if (len >= 8) {
		memcpy(d, buf, 8);
		memcpy(d + len - 8, buf + len - 8, 8);
	} else if (len >= 4) {
		memcpy(d, buf, 4);
		memcpy(d + len - 4, buf + len - 4, 4);
	} else if (len) {
		d[0] = (uint8_t)buf[0];
		d[len / 2] = (uint8_t)buf[len / 2];
		d[len - 1] = (uint8_t)buf[len - 1];
	}
	return 0;
}

void vgpu__wbuf_init(struct vgpu_wbuf *w, void *buf, size_t cap)
{
	w->buf = buf;
	w->len = 0;
	w->cap = cap;
	w->overflow = 0;
	msgpack_packer_init(&w->pk, w, wbuf_write);
}

/* ---- cursor ---- */

void vgpu__mp_init(struct vgpu_mp *m, const void *buf, size_t len)
{
	m->p = buf;
	m->end = m->p + len;
	m->err = 0;
}

int vgpu__mp_padding(const struct vgpu_mp *m)
{
	if (m->err || m->end - m->p >= (ptrdiff_t)VGPU_PROTO_BULK_ALIGN)
		return -1;
	for (const uint8_t *q = m->p; q < m->end; q++)
		if (*q)
			return -1;
	return 0;
}

static int fail(struct vgpu_mp *m)
{
	m->err = 1;
	return -1;
}

static int need(struct vgpu_mp *m, size_t n)
{
	if (m->err || (size_t)(m->end - m->p) < n)
		return fail(m);
	return 0;
}

static uint64_t be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	uint32_t v32;
	uint16_t v16;

	/* big-endian loads of the widths msgpack uses */
	switch (n) {
	case 8:
		memcpy(&v, p, 8);
		return be64toh(v);
	case 4:
		memcpy(&v32, p, 4);
		return be32toh(v32);
	case 2:
		memcpy(&v16, p, 2);
		return be16toh(v16);
	}
	for (int i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Integer of any msgpack encoding: *neg set when negative. */
static int mp_intany(struct vgpu_mp *m, uint64_t *u, int *neg)
{
	uint8_t b;
	int n;

	if (need(m, 1))
		return -1;
	b = *m->p;
	*neg = 0;
	if (b <= 0x7f) {
		*u = b;
		m->p++;
		return 0;
	}
	if (b >= 0xe0) {
		*u = (uint64_t)(int64_t)(int8_t)b;
		*neg = 1;
		m->p++;
		return 0;
	}
	switch (b) {
	case 0xcc: n = 1; break;
	case 0xcd: n = 2; break;
	case 0xce: n = 4; break;
	case 0xcf: n = 8; break;
	case 0xd0: n = -1; break;
	case 0xd1: n = -2; break;
	case 0xd2: n = -4; break;
	case 0xd3: n = -8; break;
	default: return fail(m);
	}
	if (n > 0) {
		if (need(m, 1 + (size_t)n))
			return -1;
		*u = be(m->p + 1, n);
		m->p += 1 + n;
		return 0;
	}
	n = -n;
	if (need(m, 1 + (size_t)n))
		return -1;
	{
		uint64_t v = be(m->p + 1, n);
		int64_t s;
		int bits = n * 8;

		if (bits < 64 && (v >> (bits - 1)) & 1)
			s = (int64_t)(v | (~0ull << bits));
		else
			s = (int64_t)v;
		*u = (uint64_t)s;
		*neg = s < 0;
	}
	m->p += 1 + n;
	return 0;
}

int vgpu__mp_u64(struct vgpu_mp *m, uint64_t *v)
{
	int neg;
	if (mp_intany(m, v, &neg) || neg)
		return fail(m);
	return 0;
}

int vgpu__mp_u32(struct vgpu_mp *m, uint32_t *v)
{
	uint64_t u;
	if (vgpu__mp_u64(m, &u) || u > UINT32_MAX)
		return fail(m);
	*v = (uint32_t)u;
	return 0;
}

int vgpu__mp_i64(struct vgpu_mp *m, int64_t *v)
{
	uint64_t u;
	int neg;
	if (mp_intany(m, &u, &neg))
		return -1;
	if (!neg && u > INT64_MAX)
		return fail(m);
	*v = (int64_t)u;
	return 0;
}

int vgpu__mp_int(struct vgpu_mp *m, int *v)
{
	int64_t x;
	if (vgpu__mp_i64(m, &x) || x < INT32_MIN || x > INT32_MAX)
		return fail(m);
	*v = (int)x;
	return 0;
}

int vgpu__mp_f64(struct vgpu_mp *m, double *v)
{
	if (need(m, 1))
		return -1;
	if (*m->p == 0xca && !need(m, 5)) {
		uint32_t b = (uint32_t)be(m->p + 1, 4);
		float f;
		memcpy(&f, &b, 4);
		*v = f;
		m->p += 5;
		return 0;
	}
	if (*m->p == 0xcb && !need(m, 9)) {
		uint64_t b = be(m->p + 1, 8);
		memcpy(v, &b, 8);
		m->p += 9;
		return 0;
	}
	return fail(m);
}

int vgpu__mp_bool(struct vgpu_mp *m, int *v)
{
	if (need(m, 1))
		return -1;
	if (*m->p != 0xc2 && *m->p != 0xc3)
		return fail(m);
	*v = *m->p == 0xc3;
	m->p++;
	return 0;
}

int vgpu__mp_is_nil(struct vgpu_mp *m)
{
	if (m->err || m->p >= m->end || *m->p != 0xc0)
		return 0;
	m->p++;
	return 1;
}

/* Length-prefixed payload: header bytes hl, payload length len. */
static int payload(struct vgpu_mp *m, size_t hl, uint64_t len, const void **p, uint32_t *out)
{
	if (need(m, hl) || (uint64_t)(m->end - m->p - (ptrdiff_t)hl) < len)
		return fail(m);
	*p = m->p + hl;
	*out = (uint32_t)len;
	m->p += hl + len;
	return 0;
}

int vgpu__mp_str(struct vgpu_mp *m, const char **s, uint32_t *len)
{
	uint8_t b;
	const void *p;

	if (need(m, 1))
		return -1;
	b = *m->p;
	if ((b & 0xe0) == 0xa0) {
		if (payload(m, 1, b & 0x1f, &p, len))
			return -1;
	} else if (b == 0xd9 && !need(m, 2)) {
		if (payload(m, 2, m->p[1], &p, len))
			return -1;
	} else if (b == 0xda && !need(m, 3)) {
		if (payload(m, 3, be(m->p + 1, 2), &p, len))
			return -1;
	} else if (b == 0xdb && !need(m, 5)) {
		if (payload(m, 5, be(m->p + 1, 4), &p, len))
			return -1;
	} else {
		return fail(m);
	}
	*s = p;
	return 0;
}

int vgpu__mp_strcpy(struct vgpu_mp *m, char *buf, size_t cap)
{
	const char *s;
	uint32_t n;

	if (vgpu__mp_str(m, &s, &n))
		return -1;
	if (n >= cap || memchr(s, 0, n))
		return fail(m);
	memcpy(buf, s, n);
	buf[n] = 0;
	return 0;
}

int vgpu__mp_bin(struct vgpu_mp *m, const void **p, uint32_t *len)
{
	uint8_t b;

	if (need(m, 2))
		return -1;
	b = *m->p;
	if (b == 0xc4)
		return payload(m, 2, m->p[1], p, len);
	if (b == 0xc5 && !need(m, 3))
		return payload(m, 3, be(m->p + 1, 2), p, len);
	if (b == 0xc6 && !need(m, 5))
		return payload(m, 5, be(m->p + 1, 4), p, len);
	return fail(m);
}

static int mp_container(struct vgpu_mp *m, uint32_t *n, int map)
{
	uint8_t b;
	uint64_t cnt;
	size_t hl;

	if (need(m, 1))
		return -1;
	b = *m->p;
	if (!map && (b & 0xf0) == 0x90) {
		cnt = b & 0x0f;
		hl = 1;
	} else if (map && (b & 0xf0) == 0x80) {
		cnt = b & 0x0f;
		hl = 1;
	} else if (b == (map ? 0xde : 0xdc) && !need(m, 3)) {
		cnt = be(m->p + 1, 2);
		hl = 3;
	} else if (b == (map ? 0xdf : 0xdd) && !need(m, 5)) {
		cnt = be(m->p + 1, 4);
		hl = 5;
	} else {
		return fail(m);
	}
	m->p += hl;
	/* every element takes at least one byte: a count larger than the bytes
	 * left is a lie, refused before anyone sizes anything from it */
	if (cnt * (map ? 2u : 1u) > (uint64_t)(m->end - m->p))
		return fail(m);
	*n = (uint32_t)cnt;
	return 0;
}

int vgpu__mp_array(struct vgpu_mp *m, uint32_t *n)
{
	return mp_container(m, n, 0);
}

int vgpu__mp_skip(struct vgpu_mp *m, int depth)
{
	uint8_t b;
	uint32_t n, i;
	const void *p;
	uint64_t u;
	double d;
	int neg;

	if (depth > VGPU_PROTO_MAX_DEPTH || need(m, 1))
		return fail(m);
	b = *m->p;
	if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3))
		return mp_intany(m, &u, &neg);
	if (b == 0xc0 || b == 0xc2 || b == 0xc3) {
		m->p++;
		return 0;
	}
	if (b == 0xca || b == 0xcb)
		return vgpu__mp_f64(m, &d);
	if ((b & 0xe0) == 0xa0 || b == 0xd9 || b == 0xda || b == 0xdb)
		return vgpu__mp_str(m, (const char **)&p, &n);
	if (b == 0xc4 || b == 0xc5 || b == 0xc6)
		return vgpu__mp_bin(m, &p, &n);
	if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) {
		if (mp_container(m, &n, 0))
			return -1;
		for (i = 0; i < n; i++)
			if (vgpu__mp_skip(m, depth + 1))
				return -1;
		return 0;
	}
	if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) {
		if (mp_container(m, &n, 1))
			return -1;
		for (i = 0; i < 2 * n; i++)
			if (vgpu__mp_skip(m, depth + 1))
				return -1;
		return 0;
	}
	return fail(m); /* ext types and reserved bytes are not used */
}

/* ---- framing ---- */

void vgpu__rbuf_unland(struct vgpu_rbuf *r)
{
	if (!r->land_len)
		return;
	/* what the buffer holds, then what landed: the stream in order (it
	 * fits: the buffer held at most the prefix of the scatter receive) */
	if (r->off) {
		memmove(r->buf, r->buf + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	memcpy(r->buf + r->len, r->land, r->land_len);
	r->len += r->land_len;
	r->land = NULL;
	r->land_len = 0;
	r->n_moved++;
}

vgpu_status vgpu__rbuf_fill(struct vgpu_rbuf *r, void *dst, size_t n)
{
	uint8_t *d = dst;
	int landed = 0;

	while (n) {
		size_t have = r->len - r->off;
		ssize_t got;

		if (r->land_len) {
			if (have || d != r->land) {
				vgpu__rbuf_unland(r); /* not where they are: read as usual */
				continue;
			}
			/* bulk a scatter receive left where it belongs: no copy */
			size_t k = r->land_len < n ? r->land_len : n;
			d += k;
			n -= k;
			r->land += k;
			r->land_len -= k;
			if (!r->land_len)
				r->land = NULL;
			r->n_in_place += !landed;
			landed = 1;
			continue;
		}
		if (have) {
			size_t k = have < n ? have : n;
			memcpy(d, r->buf + r->off, k);
			r->off += k;
			d += k;
			n -= k;
			continue;
		}
		r->off = r->len = 0;
		if (n >= sizeof(r->buf) / 2 || landed) {
			/* bulk: straight into the destination; a header and
			 * more bulk likely follow (the rest of bulk that began
			 * landing in place: nothing follows the one reply) */
			got = r->tp->recv(r->c, d, n, n);
			if (got < 0)
				return (vgpu_status)got;
			d += got;
			n -= (size_t)got;
			r->ahead = VGPU_RBUF_BULK_AHEAD;
			continue;
		}
		got = r->tp->recv(r->c, r->buf, n,
				  r->ahead > n ? r->ahead : sizeof(r->buf));
		r->ahead = 0;
		if (got < 0)
			return (vgpu_status)got;
		r->len = (size_t)got;
	}
	return VGPU_OK;
}

vgpu_status vgpu__rbuf_read_deferred(struct vgpu_rbuf *r, void *dst, size_t n, int *deferred)
{
	size_t have = r->len - r->off;

	if (have >= n || n - have < sizeof(r->buf) / 2 || !vgpu__tp_can_defer_recv(r->tp) ||
	    r->land_len)
		return vgpu__rbuf_read(r, dst, n);
	/* what was read ahead, then the rest left in flight */
	memcpy(dst, r->buf + r->off, have);
	r->off = r->len = 0;
	r->ahead = VGPU_RBUF_BULK_AHEAD;
	*deferred = 1;
	return r->tp->recv_deferred(r->c, (uint8_t *)dst + have, n - have);
}

vgpu_status vgpu__rbuf_send_fill(struct vgpu_rbuf *r, const struct iovec *iov, int n)
{
	ssize_t got;

	r->off = r->len = 0;
	got = r->tp->send_recv(r->c, iov, n, r->buf, 1, r->ahead ? r->ahead : sizeof(r->buf));
	if (got < 0)
		return (vgpu_status)got;
	r->ahead = 0;
	r->len = (size_t)got;
	return VGPU_OK;
}

vgpu_status vgpu__rbuf_send_fill_to(struct vgpu_rbuf *r, const struct iovec *iov, int n,
				    size_t prefix, void *dst, size_t dst_len)
{
	struct iovec riov[2] = { { r->buf, prefix }, { dst, dst_len } };
	ssize_t got;

	if (prefix == 0 || prefix + dst_len > sizeof(r->buf) || r->land_len)
		return vgpu__error(VGPU_ERR_INTERNAL, "scatter receive of %zu + %zu bytes", prefix,
				   dst_len);
	r->off = r->len = 0;
	got = r->tp->send_recvv(r->c, iov, n, riov, 2, 1);
	if (got < 0)
		return (vgpu_status)got;
	r->ahead = 0;
	if ((size_t)got <= prefix) {
		r->len = (size_t)got;
	} else {
		r->len = prefix;
		r->land = dst;
		r->land_len = (size_t)got - prefix;
	}
	return VGPU_OK;
}

vgpu_status vgpu__rbuf_discard(struct vgpu_rbuf *r, uint64_t n)
{
	uint8_t tmp[4096];

	while (n) {
		size_t k = n < sizeof(tmp) ? (size_t)n : sizeof(tmp);
		vgpu_status st = vgpu__rbuf_read(r, tmp, k);
		if (st < 0)
			return st;
		n -= k;
	}
	return VGPU_OK;
}

vgpu_status vgpu__rbuf_frame(struct vgpu_rbuf *r, struct vgpu_hdr *h, uint8_t *body,
			     uint64_t max_bulk, const char *peer)
{
	uint8_t raw[VGPU_PROTO_HDR];
	vgpu_status st = vgpu__rbuf_read(r, raw, 4);

	if (st < 0)
		return st;
	/* a peer that is not libvgpu at all is told so without waiting for 32
	 * bytes it may never send */
	if (raw[0] != 'V' || raw[1] != 'G' || raw[2] != 'P' || raw[3] != 'U') {
		memset(h, 0, sizeof(*h));
		return vgpu__error(VGPU_ERR_PROTOCOL, "bad frame: the %s is not a libvgpu peer "
				   "(bytes %02x %02x %02x %02x)", peer, raw[0], raw[1], raw[2], raw[3]);
	}
	st = vgpu__rbuf_read(r, raw + 4, sizeof(raw) - 4);
	if (st < 0)
		return st;
	vgpu__hdr_decode(raw, h);
	st = vgpu__hdr_check(h, max_bulk, peer);
	if (st < 0)
		return st;
	return vgpu__rbuf_read(r, body, h->body_len);
}

/* Bodies up to this size travel in the header's buffer. */
#define SMALL_BODY 256

static vgpu_status send_msg(const struct vgpu_transport_ops *tp, struct vgpu_tp_conn *c,
			    uint16_t type, uint32_t flags, uint64_t id, const void *body,
			    size_t body_len, const void *bulk, size_t bulk_len, int deferred)
{
	uint8_t raw[VGPU_PROTO_HDR + SMALL_BODY];
	struct vgpu_hdr h = { VGPU_PROTO_MAGIC, VGPU_PROTO_VERSION, type, flags,
			      (uint32_t)body_len, id, bulk_len };
	struct iovec iov[3] = {
		{ raw, VGPU_PROTO_HDR }, { (void *)body, body_len }, { (void *)bulk, bulk_len } };
	int n = bulk_len ? 3 : 2;

	vgpu__hdr_encode(raw, &h);
	if (body_len <= SMALL_BODY) {
		/* header and body in one piece: a reply is then one plain send */
		memcpy(raw + VGPU_PROTO_HDR, body, body_len);
		iov[0].iov_len += body_len;
		iov[1] = iov[2];
		n--;
	}
	if (deferred && bulk_len)
		return vgpu__tp_send_deferred(tp, c, iov, n);
	return tp->send(c, iov, n);
}

vgpu_status vgpu__send_msg(const struct vgpu_transport_ops *tp, struct vgpu_tp_conn *c,
			   uint16_t type, uint32_t flags, uint64_t id, const void *body,
			   size_t body_len, const void *bulk, size_t bulk_len)
{
	return send_msg(tp, c, type, flags, id, body, body_len, bulk, bulk_len, 0);
}

void vgpu__sbatch_init(struct vgpu_sbatch *b, const struct vgpu_transport_ops *tp,
		       struct vgpu_tp_conn *c, const struct iovec *pre, int npre)
{
	b->tp = tp;
	b->c = c;
	b->n = 0;
	b->pre = pre;
	b->npre = npre > 0 ? 1 : 0;
	b->off = b->npre ? pre->iov_len : 0;
}

vgpu_status vgpu__sbatch_flush(struct vgpu_sbatch *b)
{
	int k = 0;
	vgpu_status st;

	if (b->npre) {
		b->iov[k++] = *b->pre;
		b->npre = 0;
	}
	for (int i = 0; i < b->n; i++) {
		b->iov[k++] = b->msg[i][0];
		if (b->msg[i][1].iov_len)
			b->iov[k++] = b->msg[i][1];
	}
	b->n = 0;
	b->off = 0;
	if (!k)
		return VGPU_OK;
	st = b->tp->send(b->c, b->iov, k);
	return st < 0 ? st : VGPU_OK;
}

vgpu_status vgpu__sbatch_add(struct vgpu_sbatch *b, uint16_t type, uint32_t flags, uint64_t id,
			     const void *body, size_t body_len, const void *bulk, size_t bulk_len,
			     uint64_t align_to)
{
	struct vgpu_hdr h = { VGPU_PROTO_MAGIC, VGPU_PROTO_VERSION, type, flags,
			      (uint32_t)body_len, id, bulk_len };
	size_t pad = 0;
	uint8_t *raw;

	if (body_len > VGPU_SBATCH_BODY)
		return vgpu__error(VGPU_ERR_INTERNAL, "send batch: body of %zu bytes", body_len);
	if (vgpu__tp_can_defer(b->tp) && !b->npre)
		return send_msg(b->tp, b->c, type, flags, id, body, body_len, bulk, bulk_len, 1);
	/* the bulk at an offset of this send congruent to its destination */
	if (bulk_len)
		pad = vgpu__bulk_pad(b->off + VGPU_PROTO_HDR + body_len, align_to);
	h.body_len = (uint32_t)(body_len + pad);
	raw = b->raw[b->n];
	vgpu__hdr_encode(raw, &h);
	memcpy(raw + VGPU_PROTO_HDR, body, body_len);
	memset(raw + VGPU_PROTO_HDR + body_len, 0, pad);
	b->msg[b->n][0].iov_base = raw;
	b->msg[b->n][0].iov_len = VGPU_PROTO_HDR + body_len + pad;
	b->msg[b->n][1].iov_base = (void *)bulk;
	b->msg[b->n][1].iov_len = bulk_len;
	b->off += VGPU_PROTO_HDR + body_len + pad + bulk_len;
	b->n++;
	if (b->n == VGPU_SBATCH_MAX || vgpu__tp_can_defer(b->tp))
		return vgpu__sbatch_flush(b);
	return VGPU_OK;
}

vgpu_status vgpu__send_msg_deferred(const struct vgpu_transport_ops *tp, struct vgpu_tp_conn *c,
				    uint16_t type, uint32_t flags, uint64_t id, const void *body,
				    size_t body_len, const void *bulk, size_t bulk_len)
{
	return send_msg(tp, c, type, flags, id, body, body_len, bulk, bulk_len, 1);
}

/* ---- authentication ---- */

vgpu_status vgpu__auth_mac(const char *secret, const uint8_t nonce[VGPU_PROTO_NONCE],
			   const char *tenant, uint8_t mac[VGPU_PROTO_MAC])
{
	uint8_t msg[VGPU_PROTO_NONCE + 256];
	size_t tl = strlen(tenant);
	unsigned int ml = 0;

	if (tl > 255)
		return vgpu__error(VGPU_ERR_INVALID, "tenant name too long (%zu bytes, at most 255)", tl);
	memcpy(msg, nonce, VGPU_PROTO_NONCE);
	memcpy(msg + VGPU_PROTO_NONCE, tenant, tl);
	if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, VGPU_PROTO_NONCE + tl, mac, &ml) ||
	    ml != VGPU_PROTO_MAC)
		return vgpu__error(VGPU_ERR_INTERNAL, "HMAC-SHA256 failed");
	return VGPU_OK;
}

vgpu_status vgpu__auth_nonce(uint8_t nonce[VGPU_PROTO_NONCE])
{
	if (RAND_bytes(nonce, VGPU_PROTO_NONCE) != 1)
		return vgpu__error(VGPU_ERR_INTERNAL, "no random bytes for the handshake nonce");
	return VGPU_OK;
}

/* ---- device info ---- */

#define DI_FIELDS 17    /* the fields every peer sends */
#define DI_FIELDS_ALL 22 /* + the device-wide residency statistics */

void vgpu__pack_device_info(msgpack_packer *pk, const struct vgpu_device_info *d)
{
	msgpack_pack_array(pk, DI_FIELDS_ALL);
	msgpack_pack_str_with_body(pk, d->name, strnlen(d->name, sizeof(d->name)));
	msgpack_pack_str_with_body(pk, d->backend, strnlen(d->backend, sizeof(d->backend)));
	msgpack_pack_str_with_body(pk, d->arch, strnlen(d->arch, sizeof(d->arch)));
	msgpack_pack_int(pk, d->cc_major);
	msgpack_pack_int(pk, d->cc_minor);
	msgpack_pack_uint32(pk, d->multiprocessor_count);
	msgpack_pack_uint32(pk, d->max_threads_per_block);
	msgpack_pack_uint64(pk, d->total_mem);
	msgpack_pack_uint64(pk, d->free_mem);
	msgpack_pack_bin_with_body(pk, d->uuid, sizeof(d->uuid));
	msgpack_pack_int(pk, d->device_index);
	msgpack_pack_uint32(pk, d->flags);
	msgpack_pack_uint64(pk, d->mem_resident);
	msgpack_pack_uint64(pk, d->mem_on_host);
	msgpack_pack_uint64(pk, d->swapped_in);
	msgpack_pack_uint64(pk, d->swapped_out);
	msgpack_pack_uint64(pk, d->evictions);
	msgpack_pack_uint64(pk, d->dev_mem_resident);
	msgpack_pack_uint64(pk, d->dev_mem_on_host);
	msgpack_pack_uint64(pk, d->dev_swapped_in);
	msgpack_pack_uint64(pk, d->dev_swapped_out);
	msgpack_pack_uint64(pk, d->dev_evictions);
}

int vgpu__unpack_device_info(struct vgpu_mp *m, struct vgpu_device_info *d)
{
	uint32_t n, ul;
	const void *uuid;

	memset(d, 0, sizeof(*d));
	if (vgpu__mp_array(m, &n) || n < DI_FIELDS)
		return fail(m);
	vgpu__mp_strcpy(m, d->name, sizeof(d->name));
	vgpu__mp_strcpy(m, d->backend, sizeof(d->backend));
	vgpu__mp_strcpy(m, d->arch, sizeof(d->arch));
	vgpu__mp_int(m, &d->cc_major);
	vgpu__mp_int(m, &d->cc_minor);
	vgpu__mp_u32(m, &d->multiprocessor_count);
	vgpu__mp_u32(m, &d->max_threads_per_block);
	vgpu__mp_u64(m, &d->total_mem);
	vgpu__mp_u64(m, &d->free_mem);
	if (vgpu__mp_bin(m, &uuid, &ul) == 0 && ul == sizeof(d->uuid))
		memcpy(d->uuid, uuid, ul);
	vgpu__mp_int(m, &d->device_index);
	vgpu__mp_u32(m, &d->flags);
	vgpu__mp_u64(m, &d->mem_resident);
	vgpu__mp_u64(m, &d->mem_on_host);
	vgpu__mp_u64(m, &d->swapped_in);
	vgpu__mp_u64(m, &d->swapped_out);
	vgpu__mp_u64(m, &d->evictions);
	if (n >= DI_FIELDS_ALL) {
		vgpu__mp_u64(m, &d->dev_mem_resident);
		vgpu__mp_u64(m, &d->dev_mem_on_host);
		vgpu__mp_u64(m, &d->dev_swapped_in);
		vgpu__mp_u64(m, &d->dev_swapped_out);
		vgpu__mp_u64(m, &d->dev_evictions);
	}
	for (uint32_t i = n >= DI_FIELDS_ALL ? DI_FIELDS_ALL : DI_FIELDS; i < n && !m->err; i++)
		vgpu__mp_skip(m, 1); /* newer servers may add fields */
	return m->err ? -1 : 0;
}
