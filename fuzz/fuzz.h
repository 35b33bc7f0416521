/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h - shared by the libFuzzer targets in fuzz/: an in-memory transport
 * that feeds a byte string to the protocol layer (the peer's bytes) and
 * swallows what is sent back, and, without libFuzzer (VGPU_FUZZ_REPLAY), a
 * main() that replays files and directories of inputs: the seed corpus and
 * every saved crash, run by make check.
 */
#ifndef VGPU_FUZZ_H
#define VGPU_FUZZ_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "proto.h"
#include "transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

struct vgpu_tp_conn {
	const uint8_t *p;
	size_t n, off;
	int shut;
	uint64_t sent;
};

static ssize_t mem_recv(struct vgpu_tp_conn *c, void *buf, size_t min, size_t max)
{
	size_t left = c->n - c->off, k;

	if (__atomic_load_n(&c->shut, __ATOMIC_ACQUIRE))
		return vgpu__error(VGPU_ERR_CONNECTION, "connection shut down");
	if (left < min || left == 0)
		return vgpu__error(VGPU_ERR_CONNECTION, "connection closed by peer");
	k = left < max ? left : max;
	memcpy(buf, c->p + c->off, k);
	c->off += k;
	return (ssize_t)k;
}

static vgpu_status mem_send(struct vgpu_tp_conn *c, const struct iovec *iov, int n)
{
	for (int i = 0; i < n; i++)
		__atomic_add_fetch(&c->sent, iov[i].iov_len, __ATOMIC_RELAXED);
	return VGPU_OK;
}

static vgpu_status mem_set_timeout(struct vgpu_tp_conn *c, uint32_t ms)
{
	return VGPU_OK;
}

static void mem_shutdown(struct vgpu_tp_conn *c, int read_only)
{
	__atomic_store_n(&c->shut, 1, __ATOMIC_RELEASE);
}

static void mem_close(struct vgpu_tp_conn *c)
{
}

static const char *mem_peer(struct vgpu_tp_conn *c)
{
	return "fuzz";
}

static const char *const mem_schemes[] = { "mem", NULL };

static const struct vgpu_transport_ops fuzz_mem_transport = {
	.size = sizeof(struct vgpu_transport_ops),
	.name = "mem",
	.schemes = mem_schemes,
	.send = mem_send,
	.recv = mem_recv,
	.set_timeout = mem_set_timeout,
	.shutdown = mem_shutdown,
	.close = mem_close,
	.peer = mem_peer,
};

/* Append one frame to out (cap bytes); returns the new length. */
static inline size_t fuzz_frame(uint8_t *out, size_t len, size_t cap, uint16_t type,
				uint32_t flags, uint64_t id, const void *body, size_t body_len,
				const void *bulk, size_t bulk_len)
{
	struct vgpu_hdr h = { VGPU_PROTO_MAGIC, VGPU_PROTO_VERSION, type, flags,
			      (uint32_t)body_len, id, bulk_len };

	if (len + VGPU_PROTO_HDR + body_len + bulk_len > cap)
		abort();
	vgpu__hdr_encode(out + len, &h);
	memcpy(out + len + VGPU_PROTO_HDR, body, body_len);
	if (bulk_len)
		memcpy(out + len + VGPU_PROTO_HDR + body_len, bulk, bulk_len);
	return len + VGPU_PROTO_HDR + body_len + bulk_len;
}

#ifdef VGPU_FUZZ_REPLAY
static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (!f) {
		perror(path);
		return -1;
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n > 0 ? (size_t)n : 1);
	if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
		fclose(f);
		free(buf);
		fprintf(stderr, "%s: cannot read\n", path);
		return -1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, (size_t)n);
	free(buf);
	return 1;
}

static int replay(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *e;
	int total = 0;

	if (stat(path, &st) < 0)
		return 0; /* a target with no saved crashes has no directory */
	if (!S_ISDIR(st.st_mode))
		return replay_file(path);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char p[4096];
		int r;

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
		r = replay(p);
		if (r < 0) {
			closedir(d);
			return r;
		}
		total += r;
	}
	closedir(d);
	return total;
}

int main(int argc, char **argv)
{
	int total = 0;

	LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		int r = replay(argv[i]);

		if (r < 0)
			return 1;
		total += r;
	}
	printf("%s: %d input(s) replayed without a crash\n", argv[0], total);
	return 0;
}
#endif

#endif
