/* SPDX-License-Identifier: MIT */
/*
 * gen_corpus - writes the seed corpus of the fuzz targets from the
 * protocol's own encoders (vgpu__hdr_encode, the msgpack packer, the device
 * info codec), in the layouts client.c sends:
 *   gen_corpus DIR  ->  DIR/frame/, DIR/request/, DIR/handshake/
 * Regenerate with `make fuzz-corpus` after a protocol change.
 */
#include "config.h"
#include <errno.h>
#include <sys/stat.h>
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return 0; }
int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

static const char *outdir;
static uint8_t stream[1 << 20];
static size_t slen;
static uint64_t next_id = 2;

static void save(const char *target, const char *name, const void *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, target);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n) {
		perror(path);
		exit(1);
	}
	fclose(f);
}

#define BEGIN(nargs, op)                                \
	uint8_t b[4096];                                 \
	struct vgpu_wbuf w;                              \
	vgpu__wbuf_init(&w, b, sizeof(b));               \
	msgpack_pack_array(&w.pk, 1 + (nargs));          \
	msgpack_pack_uint32(&w.pk, (op))

/* a request as one frame: appended to the running stream and saved alone */
static void req(const char *name, struct vgpu_wbuf *w, uint32_t flags, const void *bulk,
		size_t bulk_len)
{
	static uint8_t one[1 << 17];
	size_t n = fuzz_frame(one, 0, sizeof(one), VGPU_MSG_REQ, flags, next_id, w->buf, w->len,
			      bulk, bulk_len);

	slen = fuzz_frame(stream, slen, sizeof(stream), VGPU_MSG_REQ, flags, next_id++, w->buf,
			  w->len, bulk, bulk_len);
	save("request", name, one, n);
	save("frame", name, one, n);
}

static void requests(void)
{
	static uint8_t data[8192];
	const uint64_t dptr = 0x7f0000000000ull; /* plausible: the fuzzer finds real ones */

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	{ BEGIN(0, VGPU_OP_DEVICE_INFO); req("device_info", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_MEM_ALLOC); msgpack_pack_uint64(&w.pk, 8192); req("mem_alloc", &w, 0, NULL, 0); }
	{ BEGIN(3, VGPU_OP_HTOD); msgpack_pack_uint32(&w.pk, 0); msgpack_pack_uint64(&w.pk, dptr);
	  msgpack_pack_uint64(&w.pk, sizeof(data)); req("htod", &w, 0, data, sizeof(data)); }
	{ BEGIN(3, VGPU_OP_DTOH); msgpack_pack_uint32(&w.pk, 0); msgpack_pack_uint64(&w.pk, dptr);
	  msgpack_pack_uint64(&w.pk, sizeof(data)); req("dtoh", &w, 0, NULL, 0); }
	{ BEGIN(4, VGPU_OP_DTOD); msgpack_pack_uint32(&w.pk, 0); msgpack_pack_uint64(&w.pk, dptr + 4096);
	  msgpack_pack_uint64(&w.pk, dptr); msgpack_pack_uint64(&w.pk, 4096); req("dtod", &w, 0, NULL, 0); }
	{ BEGIN(4, VGPU_OP_MEMSET); msgpack_pack_uint32(&w.pk, 0); msgpack_pack_uint64(&w.pk, dptr);
	  msgpack_pack_uint64(&w.pk, 0xab); msgpack_pack_uint64(&w.pk, 4096); req("memset", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_STREAM_CREATE); msgpack_pack_uint32(&w.pk, 0); req("stream_create", &w, 0, NULL, 0); }
	{ BEGIN(4, VGPU_OP_MEMSET); msgpack_pack_uint32(&w.pk, 1); msgpack_pack_uint64(&w.pk, dptr);
	  msgpack_pack_uint64(&w.pk, 1); msgpack_pack_uint64(&w.pk, 64);
	  req("memset_async", &w, VGPU_MSGF_NOREPLY, NULL, 0); }
	{ BEGIN(3, VGPU_OP_HTOD); msgpack_pack_uint32(&w.pk, 1); msgpack_pack_uint64(&w.pk, dptr);
	  msgpack_pack_uint64(&w.pk, 256); req("htod_async", &w, VGPU_MSGF_NOREPLY, data, 256); }
	{ BEGIN(1, VGPU_OP_EVENT_CREATE); msgpack_pack_uint32(&w.pk, 0); req("event_create", &w, 0, NULL, 0); }
	{ BEGIN(2, VGPU_OP_EVENT_RECORD); msgpack_pack_uint32(&w.pk, 1); msgpack_pack_uint32(&w.pk, 1);
	  req("event_record", &w, 0, NULL, 0); }
	{ BEGIN(2, VGPU_OP_STREAM_WAIT_EVENT); msgpack_pack_uint32(&w.pk, 1); msgpack_pack_uint32(&w.pk, 1);
	  req("stream_wait_event", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_EVENT_SYNC); msgpack_pack_uint32(&w.pk, 1); req("event_sync", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_EVENT_QUERY); msgpack_pack_uint32(&w.pk, 1); req("event_query", &w, 0, NULL, 0); }
	{ BEGIN(2, VGPU_OP_EVENT_ELAPSED); msgpack_pack_uint32(&w.pk, 1); msgpack_pack_uint32(&w.pk, 1);
	  req("event_elapsed", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_STREAM_QUERY); msgpack_pack_uint32(&w.pk, 1); req("stream_query", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_STREAM_SYNC); msgpack_pack_uint32(&w.pk, 1); req("stream_sync", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_MODULE_LOAD); msgpack_pack_uint64(&w.pk, 16);
	  req("module_load", &w, 0, "\x7f" "ELF not really", 16); }
	{ BEGIN(2, VGPU_OP_FUNCTION); msgpack_pack_uint32(&w.pk, 1);
	  msgpack_pack_str_with_body(&w.pk, "vecadd", 6); req("function", &w, 0, NULL, 0); }
	{ BEGIN(10, VGPU_OP_LAUNCH); uint32_t i;
	  msgpack_pack_uint32(&w.pk, 1); msgpack_pack_uint32(&w.pk, 1);
	  for (i = 0; i < 6; i++) msgpack_pack_uint32(&w.pk, i < 3 ? 4 : 64);
	  msgpack_pack_uint64(&w.pk, 0);
	  msgpack_pack_array(&w.pk, 9);
	  msgpack_pack_uint32(&w.pk, VGPU_ARG_DPTR); msgpack_pack_uint32(&w.pk, 8); msgpack_pack_uint64(&w.pk, dptr);
	  msgpack_pack_uint32(&w.pk, VGPU_ARG_I32); msgpack_pack_uint32(&w.pk, 4); msgpack_pack_uint64(&w.pk, 1024);
	  msgpack_pack_uint32(&w.pk, VGPU_ARG_BYTES); msgpack_pack_uint32(&w.pk, 8); msgpack_pack_bin_with_body(&w.pk, data, 8);
	  req("launch", &w, VGPU_MSGF_NOREPLY, NULL, 0); }
	{ BEGIN(1, VGPU_OP_MODULE_UNLOAD); msgpack_pack_uint32(&w.pk, 1); req("module_unload", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_EVENT_DESTROY); msgpack_pack_uint32(&w.pk, 1); req("event_destroy", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_STREAM_DESTROY); msgpack_pack_uint32(&w.pk, 1); req("stream_destroy", &w, 0, NULL, 0); }
	{ BEGIN(0, VGPU_OP_SYNCHRONIZE); req("synchronize", &w, 0, NULL, 0); }
	{ BEGIN(0, VGPU_OP_SERVER_STATS); req("server_stats", &w, 0, NULL, 0); }
	{ BEGIN(0, VGPU_OP_STATUS); req("status", &w, 0, NULL, 0); }
	{ BEGIN(2, VGPU_OP_MEM_ADVISE); msgpack_pack_uint64(&w.pk, dptr); msgpack_pack_uint64(&w.pk, 1);
	  req("mem_advise", &w, 0, NULL, 0); }
	{ BEGIN(1, VGPU_OP_MEM_FREE); msgpack_pack_uint64(&w.pk, dptr); req("mem_free", &w, 0, NULL, 0); }
	save("request", "session", stream, slen);
	save("frame", "session", stream, slen);
}

static void hello(const char *name, uint32_t op, const char *tenant, int mac, int nparams)
{
	uint8_t b[1024], out[2048], m[VGPU_PROTO_MAC] = { 0 };
	struct vgpu_wbuf w;
	size_t n;

	vgpu__wbuf_init(&w, b, sizeof(b));
	msgpack_pack_array(&w.pk, op == VGPU_OP_STATUS ? 6 : 5);
	msgpack_pack_uint32(&w.pk, op);
	msgpack_pack_str_with_body(&w.pk, tenant, strlen(tenant));
	if (mac)
		msgpack_pack_bin_with_body(&w.pk, m, sizeof(m));
	else
		msgpack_pack_nil(&w.pk);
	if (op == VGPU_OP_STATUS) {
		msgpack_pack_uint64(&w.pk, 0x1234);
		msgpack_pack_uint64(&w.pk, 1 << 20);
		msgpack_pack_int(&w.pk, 0);
	} else {
		msgpack_pack_int(&w.pk, 0);
		msgpack_pack_array(&w.pk, 2 * nparams);
		for (int i = 0; i < nparams; i++) {
			static const char *const kv[][2] = { { "mem", "64M" }, { "share", "0.5" },
				{ "priority", "2" }, { "wait_id", "1234" } };
			msgpack_pack_str_with_body(&w.pk, kv[i % 4][0], strlen(kv[i % 4][0]));
			msgpack_pack_str_with_body(&w.pk, kv[i % 4][1], strlen(kv[i % 4][1]));
		}
	}
	n = fuzz_frame(out, 0, sizeof(out), VGPU_MSG_REQ, 0, 1, w.buf, w.len, NULL, 0);
	if (op == VGPU_OP_HELLO && nparams == 1) {
		/* then a request in the new session */
		uint8_t rb[64];
		struct vgpu_wbuf r;

		vgpu__wbuf_init(&r, rb, sizeof(rb));
		msgpack_pack_array(&r.pk, 2);
		msgpack_pack_uint32(&r.pk, VGPU_OP_MEM_ALLOC);
		msgpack_pack_uint64(&r.pk, 4096);
		n = fuzz_frame(out, n, sizeof(out), VGPU_MSG_REQ, 0, 2, r.buf, r.len, NULL, 0);
	}
	save("handshake", name, out, n);
	save("frame", name, out, n);
}

static void responses(void)
{
	uint8_t b[1024], out[2048];
	struct vgpu_wbuf w;
	struct vgpu_device_info di;

	memset(&di, 0, sizeof(di));
	snprintf(di.name, sizeof(di.name), "libvgpu cpu device 0");
	snprintf(di.backend, sizeof(di.backend), "cpu");
	di.total_mem = di.free_mem = 1ull << 30;
	vgpu__wbuf_init(&w, b, sizeof(b));
	msgpack_pack_array(&w.pk, 4);
	msgpack_pack_int(&w.pk, 0);
	msgpack_pack_str_with_body(&w.pk, "", 0);
	msgpack_pack_uint64(&w.pk, 42);
	vgpu__pack_device_info(&w.pk, &di);
	save("frame", "hello_reply",
	     out, fuzz_frame(out, 0, sizeof(out), VGPU_MSG_RESP, 0, 1, w.buf, w.len, NULL, 0));
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_corpus DIR\n");
		return 2;
	}
	outdir = argv[1];
	if (mkdir(outdir, 0755) < 0 && errno != EEXIST) {
		perror(outdir);
		return 1;
	}
	requests();
	hello("hello", VGPU_OP_HELLO, "alice", 0, 0);
	hello("hello_params", VGPU_OP_HELLO, "bob", 0, 4);
	hello("hello_then_alloc", VGPU_OP_HELLO, "default", 0, 1);
	hello("hello_mac", VGPU_OP_HELLO, "alice", 1, 2);
	hello("status", VGPU_OP_STATUS, "ops", 0, 0);
	hello("status_mac", VGPU_OP_STATUS, "alice", 1, 0);
	responses();
	return 0;
}
