/* SPDX-License-Identifier: MIT */
/* test_uri.c - URI parsing (unit). */
#include "config.h"
#include "test.h"
#include "uri.h"

static int t_local(void *d)
{
	struct vgpu_uri u;

	CHECK_OK(vgpu__uri_parse("cpu:0", &u));
	CHECK(!strcmp(u.scheme, "cpu") && u.device == 0 && u.nparams == 0 && u.port == -1);
	CHECK_OK(vgpu__uri_parse("cuda:3?mem=4G&share=0.25", &u));
	CHECK(!strcmp(u.scheme, "cuda") && u.device == 3 && u.nparams == 2);
	CHECK(!strcmp(vgpu__uri_get(&u, "share"), "0.25"));
	CHECK(vgpu__uri_get(&u, "nope") == NULL);
	CHECK_OK(vgpu__uri_parse("cpu", &u));
	CHECK(u.device == 0);
	CHECK_OK(vgpu__uri_parse("CPU:1", &u));
	CHECK(!strcmp(u.scheme, "cpu") && u.device == 1);
	return 0;
}

static int t_remote(void *d)
{
	struct vgpu_uri u;

	CHECK_OK(vgpu__uri_parse("tcp://gpu1:7100/2?tenant=alice&token=s3", &u));
	CHECK(!strcmp(u.host, "gpu1") && u.port == 7100 && u.device == 2);
	CHECK(!strcmp(vgpu__uri_get(&u, "tenant"), "alice"));
	CHECK_OK(vgpu__uri_parse("tcp://[::1]:7100/0", &u));
	CHECK(!strcmp(u.host, "::1") && u.port == 7100);
	CHECK_OK(vgpu__uri_parse("tcp://host", &u));
	CHECK(!strcmp(u.host, "host") && u.port == -1 && u.device == 0);
	CHECK_OK(vgpu__uri_parse("unix:///run/vgpud.sock/1", &u));
	CHECK(!strcmp(u.path, "/run/vgpud.sock") && u.device == 1);
	CHECK_OK(vgpu__uri_parse("unix:///run/vgpud.sock", &u));
	CHECK(!strcmp(u.path, "/run/vgpud.sock") && u.device == 0);
	CHECK_OK(vgpu__uri_parse("rdma://h:7101/0", &u));
	CHECK(!strcmp(u.scheme, "rdma"));
	return 0;
}

static int t_bad(void *d)
{
	struct vgpu_uri u;
	static const char *bad[] = {
		"", "cpu:x", "cpu:-1", ":0", "tcp://:7100/0", "tcp://h:99999/0", "tcp://h:7a/0",
		"tcp://[::1/0", "cpu:0?=x", "unix://relative/0", "cpu: 0", "cpu:0?k\n=v",
		"tcp://h:1/0/junk", "s c:0",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vgpu_status st = vgpu__uri_parse(bad[i], &u);

		if (st != VGPU_ERR_BAD_URI) {
			fprintf(stderr, "  '%s' parsed\n", bad[i]);
			return VT_FAIL;
		}
		CHECK_MSG("bad URI");
	}
	/* too many parameters */
	{
		char buf[1024] = "cpu:0?";

		for (int i = 0; i < 40; i++)
			sprintf(buf + strlen(buf), "k%d=v&", i);
		CHECK_ST(vgpu__uri_parse(buf, &u), VGPU_ERR_BAD_URI);
		CHECK_MSG("too many");
	}
	return 0;
}

static int t_sizes(void *d)
{
	uint64_t v;

	CHECK_OK(vgpu__parse_size("4096", &v));
	CHECK(v == 4096);
	CHECK_OK(vgpu__parse_size("256M", &v));
	CHECK(v == 256ull << 20);
	CHECK_OK(vgpu__parse_size("4GiB", &v));
	CHECK(v == 4ull << 30);
	CHECK_OK(vgpu__parse_size("1k", &v));
	CHECK(v == 1024);
	CHECK(vgpu__parse_size("12Q", &v) != VGPU_OK);
	CHECK(vgpu__parse_size("-1", &v) != VGPU_OK);
	CHECK(vgpu__parse_size("99999999999999999999", &v) != VGPU_OK);
	CHECK(vgpu__parse_size("17179869184T", &v) != VGPU_OK);
	return 0;
}

static int t_format(void *d)
{
	struct vgpu_uri u;
	char buf[512];

	CHECK_OK(vgpu__uri_parse("tcp://h:7100/1?token=secret&tenant=a", &u));
	vgpu__uri_format(&u, buf, sizeof(buf));
	CHECK(!strcmp(buf, "tcp://h:7100/1?tenant=a"));
	CHECK_OK(vgpu__uri_parse("cpu:2?mem=1G", &u));
	vgpu__uri_format(&u, buf, sizeof(buf));
	CHECK(!strcmp(buf, "cpu:2?mem=1G"));
	CHECK_OK(vgpu__uri_parse("unix:///tmp/x.sock/0", &u));
	vgpu__uri_format(&u, buf, sizeof(buf));
	CHECK(!strcmp(buf, "unix:///tmp/x.sock/0"));
	return 0;
}

int main(void)
{
	vt_run("uri.local", t_local, NULL);
	vt_run("uri.remote", t_remote, NULL);
	vt_run("uri.bad", t_bad, NULL);
	vt_run("uri.sizes", t_sizes, NULL);
	vt_run("uri.format", t_format, NULL);
	return vt_finish();
}
