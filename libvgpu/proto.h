/* SPDX-License-Identifier: MIT */
/*
 * proto.h - the libvgpu wire protocol. Internal.
 *
 * Every message is a 32-byte little-endian header, a msgpack body and raw
 * bulk bytes:
 *
 *   0  u32 magic "VGPU"    4  u16 version     6  u16 type (HELLO/REQ/RESP)
 *   8  u32 flags          12  u32 body length
 *  16  u64 request id     24  u64 bulk length
 *
 * Requests: [op, args...]. Responses: [status, message, results...].
 * The server speaks first (HELLO: [version, nonce, server name, auth
 * required]); the client answers with OP_HELLO (tenant, HMAC-SHA256 of the
 * nonce and tenant under the shared secret, device, resource parameters) and
 * gets [0, "", session id, device info...] or an error and a closed
 * connection. Bodies are decoded with a bounds-checked cursor: no count or
 * length read from the wire is trusted before it is checked against the
 * bytes actually present (msgpack-c's unpacker allocates array storage from
 * the header before reading the elements, so it is used only to pack).
 */
#ifndef VGPU_PROTO_H
#define VGPU_PROTO_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <msgpack.h>
#include "vgpu.h"
#include "transport.h"

#define VGPU_PROTO_MAGIC 0x55504756u /* "VGPU" little-endian */
#define VGPU_PROTO_VERSION 2 /* 2: 8 MiB synchronous chunks (1: 1 MiB) */
#define VGPU_PROTO_HDR 32

enum vgpu_msg_type {
	VGPU_MSG_HELLO = 1, /* server -> client, first message */
	VGPU_MSG_REQ = 2,
	VGPU_MSG_RESP = 3,
};

#define VGPU_MSGF_NOREPLY 0x1u /* async: no response; errors at the next sync */
#define VGPU_MSGF_MORE 0x2u    /* response: more frames follow for this id */
#define VGPU_MSGF_LAST 0x4u    /* request: last chunk of a chunked sync copy */

/* Limits checked before anything is allocated. */
#define VGPU_PROTO_MAX_BODY (64u * 1024)          /* msgpack body */
#define VGPU_PROTO_MAX_BULK (64ull * 1024 * 1024) /* module images */
#define VGPU_PROTO_CHUNK (1u * 1024 * 1024)       /* copy chunk */
#define VGPU_PROTO_INLINE (64u * 1024)            /* copies sent as one frame */
/*
 * The chunk of a large synchronous copy: the client's htod chunks and the
 * dtoh chunks vgpud sends straight from device memory. Every chunk has a
 * fixed cost (a header read, the device range's checks; over rdma a
 * rendezvous handshake), measurable on one CPU at 1 MiB: 8 MiB chunks moved
 * 64 MiB copies from 0.86-0.90 of the raw floor to 0.93-1.05 on every
 * transport (docs/transports.md). Copies on streams and the dtoh chunks
 * vgpud stages stay at VGPU_PROTO_CHUNK.
 */
#define VGPU_PROTO_SYNC_CHUNK (8u * 1024 * 1024)
#define VGPU_PROTO_MAX_DEPTH 4
#define VGPU_PROTO_NONCE 32
#define VGPU_PROTO_MAC 32

enum vgpu_op {
	VGPU_OP_HELLO = 1,
	VGPU_OP_DEVICE_INFO,
	VGPU_OP_SYNCHRONIZE,
	VGPU_OP_MEM_ALLOC,
	VGPU_OP_MEM_FREE,
	VGPU_OP_HTOD,          /* sid dst n [+bulk] */
	VGPU_OP_DTOH,          /* sid src n -> chunks */
	VGPU_OP_DTOD,
	VGPU_OP_MEMSET,
	VGPU_OP_STREAM_CREATE, /* 10 */
	VGPU_OP_STREAM_DESTROY,
	VGPU_OP_STREAM_SYNC,
	VGPU_OP_STREAM_QUERY,
	VGPU_OP_STREAM_WAIT_EVENT,
	VGPU_OP_EVENT_CREATE,
	VGPU_OP_EVENT_DESTROY,
	VGPU_OP_EVENT_RECORD,
	VGPU_OP_EVENT_SYNC,
	VGPU_OP_EVENT_QUERY,
	VGPU_OP_EVENT_ELAPSED, /* 20 */
	VGPU_OP_MODULE_LOAD,   /* [+bulk image] */
	VGPU_OP_MODULE_UNLOAD,
	VGPU_OP_FUNCTION,
	VGPU_OP_LAUNCH,
	VGPU_OP_SERVER_STATS,
	VGPU_OP_STATUS,        /* sessionless (first request) or in a session: see status.c */
	VGPU_OP_MEM_ADVISE,    /* p advice */
	VGPU_OP_MAX
};

const char *vgpu__op_name(unsigned op);

struct vgpu_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t flags;
	uint32_t body_len;
	uint64_t id;
	uint64_t bulk_len;
};

void vgpu__hdr_encode(uint8_t out[VGPU_PROTO_HDR], const struct vgpu_hdr *h);
void vgpu__hdr_decode(const uint8_t in[VGPU_PROTO_HDR], struct vgpu_hdr *h);
/* Check magic, version and limits (max_bulk: the receiver's cap). peer is
 * "client" or "server" (who sent it). VGPU_ERR_PROTOCOL with a message. */
vgpu_status vgpu__hdr_check(const struct vgpu_hdr *h, uint64_t max_bulk, const char *peer);

/* ---- packing into a fixed buffer (msgpack-c packer) ---- */
struct vgpu_wbuf {
	uint8_t *buf;
	size_t len, cap;
	int overflow;
	msgpack_packer pk;
};
void vgpu__wbuf_init(struct vgpu_wbuf *w, void *buf, size_t cap);
#define VGPU_PK(w) (&(w)->pk)

/* ---- bounds-checked cursor over a received body ---- */
struct vgpu_mp {
	const uint8_t *p, *end;
	int err;
};
void vgpu__mp_init(struct vgpu_mp *m, const void *buf, size_t len);
/* Each returns 0 or -1 (and sets m->err, sticky). */
int vgpu__mp_array(struct vgpu_mp *m, uint32_t *n);
int vgpu__mp_u64(struct vgpu_mp *m, uint64_t *v);
int vgpu__mp_u32(struct vgpu_mp *m, uint32_t *v);
int vgpu__mp_i64(struct vgpu_mp *m, int64_t *v);
int vgpu__mp_int(struct vgpu_mp *m, int *v);
int vgpu__mp_f64(struct vgpu_mp *m, double *v);
int vgpu__mp_bool(struct vgpu_mp *m, int *v);
/* Strings and bins point into the buffer (not NUL-terminated). */
int vgpu__mp_str(struct vgpu_mp *m, const char **s, uint32_t *len);
/* Copy a string into buf (NUL-terminated); too long is an error. */
int vgpu__mp_strcpy(struct vgpu_mp *m, char *buf, size_t cap);
int vgpu__mp_bin(struct vgpu_mp *m, const void **p, uint32_t *len);
/* nil: returns 1 and consumes it; else 0. */
int vgpu__mp_is_nil(struct vgpu_mp *m);
/* Skip one object of any type (depth-limited). */
int vgpu__mp_skip(struct vgpu_mp *m, int depth);
/* 0 when what is left of m is padding after the value: at most
 * VGPU_PROTO_BULK_ALIGN - 1 zero bytes (see Bulk alignment below) */
int vgpu__mp_padding(const struct vgpu_mp *m);

/* ---- framing over a transport: read-ahead buffer ---- */
struct vgpu_rbuf {
	const struct vgpu_transport_ops *tp;
	struct vgpu_tp_conn *c;
	size_t off, len;
	/* read-ahead of the next refill (0: the whole buffer). After bulk went
	 * straight to its destination, the next header is read with a short
	 * read-ahead, so that the bulk behind it is not copied through buf. */
	size_t ahead;
	/* bytes of the stream that follow buf[len], left by a scatter receive
	 * (vgpu__rbuf_send_fill_to) where the reader expects them: at land.
	 * vgpu__rbuf_fill takes them there, or moves them back into buf for
	 * any other read; a caller that may copy out of buf into the memory
	 * at land calls vgpu__rbuf_unland first. */
	uint8_t *land;
	size_t land_len;
	uint64_t n_in_place, n_moved; /* landings read in place, moved back */
	uint8_t buf[128 * 1024];
};
/* Read-ahead in front of bulk that goes straight to its destination (half
 * of buf or more): a header, a body and a little more. */
#define VGPU_RBUF_BULK_AHEAD 1024
/* The read-ahead (r->ahead) for a reply that brings n bytes of bulk: short
 * when what follows it still goes straight to the destination, else the
 * whole buffer (0): a smaller reply is read in the one call. */
static inline size_t vgpu__rbuf_ahead_for(const struct vgpu_rbuf *r, uint64_t n)
{
	return n >= sizeof(r->buf) / 2 + VGPU_RBUF_BULK_AHEAD ? VGPU_RBUF_BULK_AHEAD : 0;
}
/* Read exactly n bytes into dst (large reads go straight to dst). */
vgpu_status vgpu__rbuf_fill(struct vgpu_rbuf *r, void *dst, size_t n);
static inline vgpu_status vgpu__rbuf_read(struct vgpu_rbuf *r, void *dst, size_t n)
{
	/* the common case, bytes already read ahead: a copy, no call */
	if (r->len - r->off >= n) {
		memcpy(dst, r->buf + r->off, n);
		r->off += n;
		return VGPU_OK;
	}
	return vgpu__rbuf_fill(r, dst, n);
}
/* vgpu__rbuf_read, except that bulk may go on landing in dst after the
 * call returns, where the transport can (ops->recv_deferred): then
 * *deferred is set, and dst is neither read nor released before
 * vgpu__tp_recv_flush has returned. */
vgpu_status vgpu__rbuf_read_deferred(struct vgpu_rbuf *r, void *dst, size_t n, int *deferred);
/* Read a header, then its body into body[VGPU_PROTO_MAX_BODY]. Bulk is left
 * for the caller (vgpu__rbuf_read or vgpu__rbuf_discard). */
vgpu_status vgpu__rbuf_frame(struct vgpu_rbuf *r, struct vgpu_hdr *h, uint8_t *body,
			     uint64_t max_bulk, const char *peer);
vgpu_status vgpu__rbuf_discard(struct vgpu_rbuf *r, uint64_t n);
/* Send iov[0..n), then read ahead into the empty buffer r, in one
 * transport call (ops->send_recv, which the caller checked). VGPU_OK, or
 * VGPU_ERR_TIMEOUT: sent, nothing received yet (read again), or the
 * connection's failure. */
vgpu_status vgpu__rbuf_send_fill(struct vgpu_rbuf *r, const struct iovec *iov, int n);
/*
 * vgpu__rbuf_send_fill for a reply whose first prefix bytes are a frame's
 * header and body and whose next dst_len bytes are bulk that goes to dst,
 * over a transport with send_recvv: the reply is received with one
 * scatter receive, prefix bytes into the buffer and the rest straight into
 * dst. A later vgpu__rbuf_read of the bulk into dst then finds it there
 * (no copy); any other read first moves what landed in dst back into the
 * buffer, in stream order, so that a reply of another shape (an error,
 * another server's padding) is read as usual: dst's contents are then
 * undefined. prefix + dst_len <= sizeof(r->buf), r empty.
 */
vgpu_status vgpu__rbuf_send_fill_to(struct vgpu_rbuf *r, const struct iovec *iov, int n,
				    size_t prefix, void *dst, size_t dst_len);
/* Move bytes left landing by vgpu__rbuf_send_fill_to back into the buffer
 * (before a read that does not take them where they are). */
void vgpu__rbuf_unland(struct vgpu_rbuf *r);

/* Send header + body + bulk as one iovec message. */
vgpu_status vgpu__send_msg(const struct vgpu_transport_ops *tp, struct vgpu_tp_conn *c,
			   uint16_t type, uint32_t flags, uint64_t id, const void *body,
			   size_t body_len, const void *bulk, size_t bulk_len);
/* The same with the bulk left in flight where the transport can
 * (vgpu__tp_send_deferred): bulk stays valid until vgpu__tp_flush. */
vgpu_status vgpu__send_msg_deferred(const struct vgpu_transport_ops *tp, struct vgpu_tp_conn *c,
				    uint16_t type, uint32_t flags, uint64_t id, const void *body,
				    size_t body_len, const void *bulk, size_t bulk_len);

/*
 * The chunks of one large copy, sent in as few transport calls as the
 * transport allows: where it can leave bulk in flight (send_deferred), each
 * message goes at once; elsewhere (sockets) up to VGPU_SBATCH_MAX messages
 * are held and leave as one gathered send, one system call instead of one
 * per chunk (7 MiB of 1 MiB chunks per call). Every bulk added stays
 * valid and unchanged until vgpu__sbatch_flush and then vgpu__tp_flush
 * have returned. Bodies of at most VGPU_SBATCH_BODY bytes.
 */
#define VGPU_SBATCH_MAX ((VGPU_TP_MAX_IOV - 1) / 2) /* 7: a prefix, 7 headers, 7 bulks */
#define VGPU_SBATCH_BODY 64
/*
 * Bulk alignment. The kernel copies a socket's bytes into the receiver's
 * memory fastest when source and destination agree in their low address
 * bits, and a unix socket lays out each send from a 64-byte boundary (its
 * buffers are multiples of 64 bytes). So a bulk byte at offset x of a send
 * is copied best to an address congruent to x modulo 64. A sender that
 * knows where the receiver puts the bulk pads the frame's body with up to
 * VGPU_PROTO_BULK_ALIGN - 1 zero bytes after its msgpack value so that the
 * bulk starts at such an offset (docs/remote.md, Copies; measured: 64 MiB
 * htod over unix 0.84 -> 1.00 of the raw socket). Receivers skip the
 * padding; the body length includes it.
 */
#define VGPU_PROTO_BULK_ALIGN 64u
#define VGPU_BULK_ANYWHERE UINT64_MAX /* no destination address to match */
/* The zero bytes a body ending at offset at (of its send) takes so that
 * the bulk after it starts congruent to align_to; 0 for VGPU_BULK_ANYWHERE. */
static inline size_t vgpu__bulk_pad(size_t at, uint64_t align_to)
{
	return align_to == VGPU_BULK_ANYWHERE ?
		       0 : (size_t)(align_to - at) & (VGPU_PROTO_BULK_ALIGN - 1);
}
/*
 * The bytes in front of the bulk of a DTOH's one-frame successful reply
 * (a synchronous copy of one chunk or less) when the request carried its
 * align: a header, the body [0, "", 0] (4 bytes) and the padding that
 * puts the bulk at an offset congruent to align. The server sends that
 * reply as one send of exactly this shape, so the client can receive its
 * bulk straight into the destination (vgpu__rbuf_send_fill_to).
 */
#define VGPU_DTOH_REPLY_BODY 4u
static inline size_t vgpu__dtoh_reply_prefix(uint64_t align)
{
	size_t p = VGPU_PROTO_HDR + VGPU_DTOH_REPLY_BODY;

	return p + vgpu__bulk_pad(p, align);
}
struct vgpu_sbatch {
	const struct vgpu_transport_ops *tp;
	struct vgpu_tp_conn *c;
	int n;
	const struct iovec *pre; /* sent before the first message, once */
	int npre;
	size_t off; /* bytes of the send being gathered, so far */
	uint8_t raw[VGPU_SBATCH_MAX][VGPU_PROTO_HDR + VGPU_SBATCH_BODY + VGPU_PROTO_BULK_ALIGN];
	struct iovec msg[VGPU_SBATCH_MAX][2]; /* header and body; bulk */
	struct iovec iov[2 * VGPU_SBATCH_MAX + 1];
};
/* pre[0..npre) (npre 0 or 1: bytes already framed, a client's coalesced
 * requests) go out ahead of the first message, in the same call. */
void vgpu__sbatch_init(struct vgpu_sbatch *b, const struct vgpu_transport_ops *tp,
		       struct vgpu_tp_conn *c, const struct iovec *pre, int npre);
/* align_to: the address the receiver copies the bulk to (only its low bits
 * count), or VGPU_BULK_ANYWHERE; the body is padded to match it where the
 * messages are gathered into one send (not over send_deferred). */
vgpu_status vgpu__sbatch_add(struct vgpu_sbatch *b, uint16_t type, uint32_t flags, uint64_t id,
			     const void *body, size_t body_len, const void *bulk,
			     size_t bulk_len, uint64_t align_to);
vgpu_status vgpu__sbatch_flush(struct vgpu_sbatch *b);

/* ---- authentication ---- */
/* mac = HMAC-SHA256(secret, nonce || tenant). */
vgpu_status vgpu__auth_mac(const char *secret, const uint8_t nonce[VGPU_PROTO_NONCE],
			   const char *tenant, uint8_t mac[VGPU_PROTO_MAC]);
vgpu_status vgpu__auth_nonce(uint8_t nonce[VGPU_PROTO_NONCE]);

/* ---- device info codec ---- */
void vgpu__pack_device_info(msgpack_packer *pk, const struct vgpu_device_info *d);
int vgpu__unpack_device_info(struct vgpu_mp *m, struct vgpu_device_info *d);

#endif
