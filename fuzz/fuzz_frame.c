/* SPDX-License-Identifier: MIT */
/*
 * fuzz_frame - the frame decoder: the input is a byte stream from a peer,
 * read frame by frame through the read-ahead buffer (vgpu__rbuf_frame: magic,
 * version, type, body and bulk limits), each body walked with the bounded
 * msgpack cursor and, when it looks like one, decoded as the device info a
 * server sends. Bulk bytes are skipped as a receiver does.
 */
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vgpu_rbuf rb; /* 128 KiB: not on the stack */
	static uint8_t body[VGPU_PROTO_MAX_BODY];
	struct vgpu_tp_conn c = { data, size, 0, 0, 0 };
	struct vgpu_hdr h;

	if (size >= VGPU_PROTO_HDR) {
		/* the header codec alone: decode, check, encode gives the bytes back */
		uint8_t again[VGPU_PROTO_HDR];

		vgpu__hdr_decode(data, &h);
		if (vgpu__hdr_check(&h, VGPU_PROTO_MAX_BULK, "client") == VGPU_OK) {
			vgpu__hdr_encode(again, &h);
			if (memcmp(again, data, VGPU_PROTO_HDR))
				abort();
		}
	}
	memset(&rb, 0, offsetof(struct vgpu_rbuf, buf));
	rb.tp = &fuzz_mem_transport;
	rb.c = &c;
	for (int frames = 0; frames < 64; frames++) {
		struct vgpu_mp m;
		struct vgpu_device_info di;
		uint32_t n;
		int64_t st;

		if (vgpu__rbuf_frame(&rb, &h, body, VGPU_PROTO_MAX_BULK,
				     frames & 1 ? "server" : "client") < 0)
			break;
		vgpu__mp_init(&m, body, h.body_len);
		vgpu__mp_skip(&m, 0);
		/* a response: [status, message, results...] */
		vgpu__mp_init(&m, body, h.body_len);
		if (vgpu__mp_array(&m, &n) == 0 && n >= 3 && vgpu__mp_i64(&m, &st) == 0) {
			const char *s;
			uint32_t sl;

			if (vgpu__mp_str(&m, &s, &sl) == 0 && vgpu__mp_is_nil(&m) == 0)
				vgpu__unpack_device_info(&m, &di);
		}
		if (vgpu__rbuf_discard(&rb, h.bulk_len) < 0)
			break;
	}
	return 0;
}
