/* SPDX-License-Identifier: MIT */
/*
 * test_restart.c - vgpud killed (SIGKILL) and restarted on the same port
 * while clients run: every client's next call fails with
 * VGPU_ERR_CONNECTION (never hangs, never another error, never wrong data),
 * and each reopens the same URI once the new server listens.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "vgpud_proc.h"

#define NCLIENTS 4

static pid_t server_pid;
static char server_uri[300];

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void kill_server(void)
{
	vt_vgpud_kill_all(0);
	server_pid = 0;
}

static int start_server(int clients, const char *listen)
{
	server_pid = vt_vgpud_start_for(listen, clients, server_uri, sizeof(server_uri));
	return server_pid > 0 ? 0 : -1;
}

struct client {
	pthread_t th;
	int conn_errors, reopened, other;
	char why[256];
};

static volatile int stop;

static void *client_main(void *arg)
{
	struct client *c = arg;
	vgpu_t *v = NULL;
	uint64_t a[512], b[512];

	while (!stop) {
		vgpu_dptr p;
		vgpu_status st;

		if (!v) {
			double t0 = now_s();

			while ((st = vgpu_open(&v, server_uri)) < 0 && now_s() - t0 < 15 && !stop)
				poll(NULL, 0, 50);
			if (st < 0) {
				if (stop)
					break;
				snprintf(c->why, sizeof(c->why), "reopen: %s", vgpu_last_error());
				c->other++;
				return NULL;
			}
			if (c->conn_errors)
				c->reopened++;
		}
		for (int i = 0; i < 512; i++)
			a[i] = (uint64_t)rand() * (uint64_t)i;
		st = vgpu_mem_alloc(v, sizeof(a), &p);
		if (st == VGPU_OK) {
			st = vgpu_memcpy_htod(v, p, a, sizeof(a), NULL);
			if (st == VGPU_OK)
				st = vgpu_memcpy_dtoh(v, b, p, sizeof(b), NULL);
			if (st == VGPU_OK && memcmp(a, b, sizeof(a))) {
				snprintf(c->why, sizeof(c->why), "wrong data");
				c->other++;
			}
			if (st == VGPU_OK)
				st = vgpu_mem_free(v, p);
		}
		if (st == VGPU_ERR_CONNECTION) {
			c->conn_errors++;
			vgpu_close(v);
			v = NULL;
		} else if (st < 0) {
			snprintf(c->why, sizeof(c->why), "%s (%s)", vgpu_last_error(), vgpu_status_name(st));
			c->other++;
			vgpu_close(v);
			v = NULL;
		}
	}
	if (v)
		vgpu_close(v);
	return NULL;
}

int main(void)
{
	struct client cl[NCLIENTS];
	char listen[300];
	int rc = 0;

	signal(SIGALRM, vt_vgpud_watchdog);
	alarm(90);
	atexit(kill_server);
	if (start_server(NCLIENTS, "tcp://127.0.0.1:0") < 0)
		return 1;
	/* tcp://127.0.0.1:PORT/0 -> tcp://127.0.0.1:PORT */
	snprintf(listen, sizeof(listen), "%.*s", (int)(strlen(server_uri) - 2), server_uri);
	memset(cl, 0, sizeof(cl));
	for (int i = 0; i < NCLIENTS; i++)
		pthread_create(&cl[i].th, NULL, client_main, &cl[i]);
	poll(NULL, 0, 500);
	kill_server();
	poll(NULL, 0, 300);
	{
		char old[300];

		snprintf(old, sizeof(old), "%s", server_uri);
		if (start_server(NCLIENTS, listen) < 0)
			return 1;
		if (strcmp(old, server_uri)) {
			fprintf(stderr, "restarted on %s, not %s\n", server_uri, old);
			return 1;
		}
	}
	poll(NULL, 0, 1500);
	stop = 1;
	for (int i = 0; i < NCLIENTS; i++) {
		pthread_join(cl[i].th, NULL);
		printf("client %d: %d connection error(s), reopened %d time(s), %d other error(s)%s%s\n", i,
		       cl[i].conn_errors, cl[i].reopened, cl[i].other, cl[i].other ? ": " : "", cl[i].why);
		if (cl[i].conn_errors < 1 || cl[i].reopened < 1 || cl[i].other)
			rc = 1;
	}
	printf("%s\n", rc ? "FAIL" : "ok   clients saw VGPU_ERR_CONNECTION and reopened");
	return rc;
}
