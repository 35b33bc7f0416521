/* SPDX-License-Identifier: MIT */
/*
 * vgpu_hold - test helper: open URI (a pool works), allocate MiB and touch
 * them, optionally run vecadd-like copies, print "held URI" on stdout and
 * keep the session until SIGTERM/SIGINT or stdin reaches EOF.
 *
 *   vgpu_hold URI MIB
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vgpu.h"

int main(int argc, char **argv)
{
	vgpu_t *v;
	vgpu_dptr p = 0;
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 1;
	sigset_t s;
	int sig;

	sigemptyset(&s);
	sigaddset(&s, SIGTERM);
	sigaddset(&s, SIGINT);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	if (vgpu_open(&v, argc > 1 ? argv[1] : NULL) != VGPU_OK) {
		fprintf(stderr, "vgpu_hold: %s\n", vgpu_last_error());
		return 1;
	}
	if (mib) {
		char *buf = calloc(1, mib << 20);

		if (!buf || vgpu_mem_alloc(v, mib << 20, &p) != VGPU_OK ||
		    vgpu_memcpy_htod(v, p, buf, mib << 20, NULL) != VGPU_OK ||
		    vgpu_memcpy_dtoh(v, buf, p, mib << 20, NULL) != VGPU_OK) {
			fprintf(stderr, "vgpu_hold: %s\n", vgpu_last_error());
			return 1;
		}
		free(buf);
	}
	printf("held %s\n", vgpu_uri(v));
	fflush(stdout);
	sigwait(&s, &sig);
	vgpu_close(v);
	return 0;
}
