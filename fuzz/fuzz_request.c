/* SPDX-License-Identifier: MIT */
/*
 * fuzz_request - every request's msgpack body, decoded and dispatched by the
 * server against a real engine and session on the cpu backend. The input is
 * the client's byte stream after a valid handshake (which this target
 * prepends): any number of frames, each [op, args...] with flags and bulk
 * bytes. The connection is served on this thread exactly as vgpud's reader
 * thread serves one (vgpu__server_serve_conn), replies are swallowed. Native
 * modules stay refused (they would run the input as code), so launches are
 * decoded and refused at the function lookup.
 */
#include "config.h"
#include "fuzz.h"
#include "remote.h"
#include "vgpu/server.h"

static vgpu_server *srv;

static void srv_destroy(void)
{
	vgpu_server_destroy(srv);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct vgpu_server_opts o = VGPU_SERVER_OPTS_INIT;

	setenv("VGPU_LOG", "error", 0);
	o.backend = "cpu";
	o.workers = 2;
	if (vgpu_server_create(&srv, &o) < 0) {
		fprintf(stderr, "fuzz_request: %s\n", vgpu_last_error());
		abort();
	}
	atexit(srv_destroy);
	return 0;
}

/* [OP_HELLO, "fuzz", nil, 0, ["mem", "64M"]] */
static size_t hello(uint8_t *out, size_t cap)
{
	uint8_t b[128];
	struct vgpu_wbuf w;

	vgpu__wbuf_init(&w, b, sizeof(b));
	msgpack_pack_array(&w.pk, 5);
	msgpack_pack_uint32(&w.pk, VGPU_OP_HELLO);
	msgpack_pack_str_with_body(&w.pk, "fuzz", 4);
	msgpack_pack_nil(&w.pk);
	msgpack_pack_int(&w.pk, 0);
	msgpack_pack_array(&w.pk, 2);
	msgpack_pack_str_with_body(&w.pk, "mem", 3);
	msgpack_pack_str_with_body(&w.pk, "64M", 3);
	return fuzz_frame(out, 0, cap, VGPU_MSG_REQ, 0, 1, w.buf, w.len, NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t pre[256];
	static size_t npre;
	struct vgpu_tp_conn c = { 0 };
	uint8_t *buf;

	if (!npre)
		npre = hello(pre, sizeof(pre));
	buf = malloc(npre + size);
	if (!buf)
		return 0;
	memcpy(buf, pre, npre);
	if (size)
		memcpy(buf + npre, data, size);
	c.p = buf;
	c.n = npre + size;
	vgpu__server_serve_conn(srv, &fuzz_mem_transport, &c, "fuzz://request");
	free(buf);
	return 0;
}
