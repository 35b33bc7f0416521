/* SPDX-License-Identifier: MIT */
/*
 * test_status.c - the status codec (status.c): a round trip keeps every
 * field, every truncation of a valid body and hostile counts fail cleanly
 * (no read past the body, no allocation from an unchecked count), and a
 * newer peer's extra fields are skipped.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "status.h"
#include "test.h"

static struct vgpu_node_device devs[2];
static struct vgpu_node_session sess[3];
static struct vgpu_node_tenant tens[2];
static struct vgpu_node_transport tps[1];

static void sample(struct vgpu_node_status *s)
{
	memset(s, 0, sizeof(*s));
	s->size = sizeof(*s);
	snprintf(s->server, sizeof(s->server), "libvgpu 0.1.0 cpu");
	snprintf(s->backend, sizeof(s->backend), "cpu");
	s->max_sessions = 4;
	s->sessions = 3;
	s->waiting = 2;
	s->wait_ns_max = 1234567;
	s->waits_total = 9;
	s->refused = 1;
	s->uptime_ns = 42;
	for (int i = 0; i < 2; i++) {
		devs[i].index = i;
		snprintf(devs[i].name, sizeof(devs[i].name), "dev %d", i);
		snprintf(devs[i].backend, sizeof(devs[i].backend), "cpu");
		devs[i].mem_total = 1ull << 30;
		devs[i].mem_used = (uint64_t)i << 20;
		devs[i].mem_on_host = 7;
		devs[i].swapped_in = 8;
		devs[i].swapped_out = 9;
		devs[i].sessions = 1 + (uint32_t)i;
		devs[i].queued = 3;
		devs[i].util = 0.5;
		devs[i].device_ns = 100;
		devs[i].items = 10;
		devs[i].queue_wait_ns = 11;
	}
	for (int i = 0; i < 3; i++) {
		sess[i].id = 100 + (uint64_t)i;
		snprintf(sess[i].tenant, sizeof(sess[i].tenant), "tenant\"%d", i);
		sess[i].device = i % 2;
		sess[i].mem_used = 1 << 20;
		sess[i].mem_limit = 2 << 20;
		sess[i].mem_on_host = 5;
		sess[i].share = 0.25;
		sess[i].device_ns = 6;
		sess[i].items = 7;
		sess[i].queued = 8;
		sess[i].age_ns = 9;
		sess[i].idle_ns = 10;
	}
	snprintf(tens[0].tenant, sizeof(tens[0].tenant), "alice");
	tens[0].device_ns = 1;
	tens[0].items = 2;
	tens[0].sessions = 3;
	snprintf(tens[1].tenant, sizeof(tens[1].tenant), "bob");
	snprintf(tps[0].name, sizeof(tps[0].name), "tcp");
	tps[0].rx_bytes = 1000;
	tps[0].tx_bytes = 2000;
	tps[0].connections = 3;
	s->ndevices = 2;
	s->devices = devs;
	s->nsessions = 3;
	s->session = sess;
	s->ntenants = 2;
	s->tenants = tens;
	s->ntransports = 1;
	s->transports = tps;
}

static uint8_t buf[VGPU_PROTO_MAX_BODY];

static size_t pack(const struct vgpu_node_status *s)
{
	struct vgpu_wbuf w;

	vgpu__wbuf_init(&w, buf, sizeof(buf));
	vgpu__pack_node_status(&w.pk, s);
	return w.overflow ? 0 : w.len;
}

static void release(struct vgpu_node_status *o)
{
	free(o->devices);
	free(o->session);
	free(o->tenants);
	free(o->transports);
	memset(o, 0, sizeof(*o));
}

static int t_roundtrip(void *d)
{
	struct vgpu_node_status s, o;
	struct vgpu_mp m;
	size_t n;

	(void)d;
	sample(&s);
	n = pack(&s);
	CHECK(n > 0);
	memset(&o, 0, sizeof(o));
	vgpu__mp_init(&m, buf, n);
	CHECK(vgpu__unpack_node_status(&m, &o) == 0);
	CHECK(m.p == m.end);
	CHECK(!strcmp(o.server, s.server) && !strcmp(o.backend, "cpu"));
	CHECK(o.max_sessions == 4 && o.sessions == 3 && o.waiting == 2);
	CHECK(o.wait_ns_max == 1234567 && o.waits_total == 9 && o.refused == 1 && o.uptime_ns == 42);
	CHECK(o.ndevices == 2 && o.nsessions == 3 && o.ntenants == 2 && o.ntransports == 1);
	CHECK(!memcmp(&o.devices[1], &devs[1], sizeof(devs[1])));
	for (int i = 0; i < 3; i++)
		CHECK(!memcmp(&o.session[i], &sess[i], sizeof(sess[i])));
	CHECK(!memcmp(&o.tenants[0], &tens[0], sizeof(tens[0])));
	CHECK(!memcmp(&o.transports[0], &tps[0], sizeof(tps[0])));
	release(&o);
	return 0;
}

static int t_truncated(void *d)
{
	struct vgpu_node_status s, o;
	struct vgpu_mp m;
	size_t n;

	(void)d;
	sample(&s);
	n = pack(&s);
	for (size_t len = 0; len < n; len++) {
		uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan sees any overread */

		CHECK(copy);
		memcpy(copy, buf, len);
		memset(&o, 0, sizeof(o));
		vgpu__mp_init(&m, copy, len);
		CHECK(vgpu__unpack_node_status(&m, &o) != 0);
		release(&o);
		free(copy);
	}
	return 0;
}

static int t_hostile_counts(void *d)
{
	struct vgpu_node_status o;
	struct vgpu_wbuf w;
	struct vgpu_mp m;

	(void)d;
	/* 13 fields, then a device array claiming 2^32-1 elements */
	vgpu__wbuf_init(&w, buf, sizeof(buf));
	msgpack_pack_array(&w.pk, 13);
	msgpack_pack_str_with_body(&w.pk, "x", 1);
	msgpack_pack_str_with_body(&w.pk, "cpu", 3);
	for (int i = 0; i < 7; i++)
		msgpack_pack_uint32(&w.pk, 0);
	msgpack_pack_array(&w.pk, 0xffffffffu);
	memset(&o, 0, sizeof(o));
	vgpu__mp_init(&m, buf, w.len);
	CHECK(vgpu__unpack_node_status(&m, &o) != 0);
	CHECK(o.devices == NULL);
	release(&o);
	/* a session array longer than the cap, each element absent */
	vgpu__wbuf_init(&w, buf, sizeof(buf));
	msgpack_pack_array(&w.pk, 13);
	msgpack_pack_str_with_body(&w.pk, "x", 1);
	msgpack_pack_str_with_body(&w.pk, "cpu", 3);
	for (int i = 0; i < 7; i++)
		msgpack_pack_uint32(&w.pk, 0);
	msgpack_pack_array(&w.pk, 0);
	msgpack_pack_array(&w.pk, VGPU_STATUS_MAX_SESSIONS + 1);
	memset(&o, 0, sizeof(o));
	vgpu__mp_init(&m, buf, w.len);
	CHECK(vgpu__unpack_node_status(&m, &o) != 0);
	release(&o);
	/* too few fields */
	vgpu__wbuf_init(&w, buf, sizeof(buf));
	msgpack_pack_array(&w.pk, 3);
	msgpack_pack_str_with_body(&w.pk, "x", 1);
	msgpack_pack_str_with_body(&w.pk, "cpu", 3);
	msgpack_pack_uint32(&w.pk, 0);
	vgpu__mp_init(&m, buf, w.len);
	CHECK(vgpu__unpack_node_status(&m, &o) != 0);
	release(&o);
	return 0;
}

static int t_newer_peer(void *d)
{
	struct vgpu_node_status o;
	struct vgpu_wbuf w;
	struct vgpu_mp m;

	(void)d;
	/* 14 top-level fields (one unknown at the end), a device with 15 */
	vgpu__wbuf_init(&w, buf, sizeof(buf));
	msgpack_pack_array(&w.pk, 14);
	msgpack_pack_str_with_body(&w.pk, "srv", 3);
	msgpack_pack_str_with_body(&w.pk, "cpu", 3);
	for (int i = 0; i < 7; i++)
		msgpack_pack_uint32(&w.pk, (uint32_t)i + 1);
	msgpack_pack_array(&w.pk, 1);
	msgpack_pack_array(&w.pk, 15);
	msgpack_pack_int(&w.pk, 0);
	msgpack_pack_str_with_body(&w.pk, "d", 1);
	msgpack_pack_str_with_body(&w.pk, "cpu", 3);
	for (int i = 0; i < 7; i++)
		msgpack_pack_uint64(&w.pk, 5);
	msgpack_pack_double(&w.pk, 0.25);
	for (int i = 0; i < 3; i++)
		msgpack_pack_uint64(&w.pk, 6);
	msgpack_pack_str_with_body(&w.pk, "future", 6);
	msgpack_pack_array(&w.pk, 0);
	msgpack_pack_array(&w.pk, 0);
	msgpack_pack_array(&w.pk, 0);
	msgpack_pack_map(&w.pk, 1);
	msgpack_pack_str_with_body(&w.pk, "k", 1);
	msgpack_pack_uint32(&w.pk, 1);
	memset(&o, 0, sizeof(o));
	vgpu__mp_init(&m, buf, w.len);
	CHECK(vgpu__unpack_node_status(&m, &o) == 0);
	CHECK(m.p == m.end);
	CHECK(o.max_sessions == 1 && o.uptime_ns == 7);
	CHECK(o.ndevices == 1 && o.devices[0].util == 0.25 && o.devices[0].queue_wait_ns == 6);
	release(&o);
	return 0;
}

int main(void)
{
	vt_run("roundtrip", t_roundtrip, NULL);
	vt_run("every_truncation_fails", t_truncated, NULL);
	vt_run("hostile_counts", t_hostile_counts, NULL);
	vt_run("newer_peer_fields_skipped", t_newer_peer, NULL);
	return vt_finish();
}
