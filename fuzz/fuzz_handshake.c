/* SPDX-License-Identifier: MIT */
/*
 * fuzz_handshake - the server side of the handshake: the input is the
 * client's byte stream from its first frame on (OP_HELLO with tenant, MAC,
 * device and parameters, or a sessionless OP_STATUS), served twice: by a
 * server without secrets (the handshake opens a session, requests may
 * follow) and by one with a secrets file (the MAC is checked against a fresh
 * nonce, so the input is refused, after every field was decoded).
 */
#include "config.h"
#include <unistd.h>
#include "fuzz.h"
#include "remote.h"
#include "vgpu/server.h"

static vgpu_server *open_srv, *auth_srv;
static char secrets[64];

static void srv_destroy(void)
{
	vgpu_server_destroy(open_srv);
	vgpu_server_destroy(auth_srv);
	if (secrets[0])
		unlink(secrets);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct vgpu_server_opts o = VGPU_SERVER_OPTS_INIT;
	int fd;

	setenv("VGPU_LOG", "error", 0);
	o.backend = "cpu";
	o.workers = 1;
	if (vgpu_server_create(&open_srv, &o) < 0)
		goto fail;
	snprintf(secrets, sizeof(secrets), "/tmp/vgpu-fuzz-secrets.XXXXXX");
	fd = mkstemp(secrets);
	if (fd < 0 || write(fd, "alice:s3cret\nany-tenant-secret\n", 31) != 31)
		abort();
	close(fd);
	o.secrets_file = secrets;
	if (vgpu_server_create(&auth_srv, &o) < 0)
		goto fail;
	atexit(srv_destroy);
	return 0;
fail:
	fprintf(stderr, "fuzz_handshake: %s\n", vgpu_last_error());
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vgpu_tp_conn c = { data, size, 0, 0, 0 };

	vgpu__server_serve_conn(open_srv, &fuzz_mem_transport, &c, "fuzz://handshake");
	memset(&c, 0, sizeof(c));
	c.p = data;
	c.n = size;
	vgpu__server_serve_conn(auth_srv, &fuzz_mem_transport, &c, "fuzz://handshake-auth");
	return 0;
}
