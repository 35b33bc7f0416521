/* SPDX-License-Identifier: MIT */
/* vgpud_proc.c - real vgpud processes for the tests (vgpud_proc.h). */
#include "config.h"

#include <fcntl.h>
#include <poll.h>
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

#define MAX_PIDS 64
#define START_S 20

static volatile pid_t pids[MAX_PIDS];

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

void vt_vgpud_track(pid_t pid)
{
	for (int i = 0; i < MAX_PIDS; i++)
		if (!pids[i]) {
			pids[i] = pid;
			return;
		}
}

void vt_vgpud_untrack(pid_t pid)
{
	for (int i = 0; i < MAX_PIDS; i++)
		if (pids[i] == pid)
			pids[i] = 0;
}

void vt_vgpud_kill_all(int from_signal)
{
	for (int i = 0; i < MAX_PIDS; i++)
		if (pids[i] > 0) {
			kill(pids[i], SIGKILL);
			if (!from_signal) {
				waitpid(pids[i], NULL, 0);
				pids[i] = 0;
			}
		}
}

void vt_vgpud_dump_log(const struct vt_vgpud *s)
{
	char buf[4096];
	FILE *f = fopen(s->log, "r");
	size_t n;

	if (!f)
		return;
	fprintf(stderr, "  --- %s ---\n", s->log);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stderr);
	fclose(f);
}

/* The log so far (NUL-terminated, truncated to len - 1). */
static size_t read_log(const struct vt_vgpud *s, char *buf, size_t len)
{
	FILE *f = fopen(s->log, "r");
	size_t n = f ? fread(buf, 1, len - 1, f) : 0;

	if (f)
		fclose(f);
	buf[n] = 0;
	return n;
}

/* Number of complete "listening on" lines. */
static int listening(const char *buf)
{
	int n = 0;

	for (const char *p = buf; (p = strstr(p, "vgpud: listening on ")); p++)
		if (strchr(p, '\n'))
			n++;
	return n;
}

int vt_vgpud_start(struct vt_vgpud *s, const char *dir, const char *const *args)
{
	static int seq;
	const char *argv[40];
	int argc = 0, want = 0, fd;
	double t0;

	memset(s, 0, sizeof(*s));
	snprintf(s->log, sizeof(s->log), "%s/vgpud-%d-%d.log", dir, (int)getpid(), ++seq);
	argv[argc++] = vt_build_path("tools/vgpud");
	for (int i = 0; args && args[i] && argc < 39; i++) {
		want += !strcmp(args[i], "--listen");
		argv[argc++] = args[i];
	}
	argv[argc] = NULL;
	fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	fflush(NULL);
	s->pid = fork();
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fd);
	if (s->pid < 0)
		return -1;
	vt_vgpud_track(s->pid);
	for (t0 = now_s(); now_s() - t0 < START_S; poll(NULL, 0, 20)) {
		char buf[8192];

		read_log(s, buf, sizeof(buf));
		if (listening(buf) >= (want ? want : 1))
			return 0;
		if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
			vt_vgpud_untrack(s->pid);
			s->pid = 0;
			break;
		}
	}
	vt_vgpud_dump_log(s);
	return -1;
}

int vt_vgpud_uri(const struct vt_vgpud *s, const char *scheme, const char *suffix, char *out,
		 size_t len)
{
	char buf[8192], pre[64];
	const char *p;

	read_log(s, buf, sizeof(buf));
	snprintf(pre, sizeof(pre), "vgpud: listening on %s://", scheme);
	if (!(p = strstr(buf, pre)) || !strchr(p, '\n'))
		return -1;
	p += strlen("vgpud: listening on ");
	snprintf(out, len, "%.*s%s", (int)strcspn(p, "\n"), p, suffix ? suffix : "");
	return 0;
}

void vt_vgpud_kill(struct vt_vgpud *s, int sig)
{
	if (s->pid > 0) {
		kill(s->pid, sig);
		waitpid(s->pid, NULL, 0);
		vt_vgpud_untrack(s->pid);
		s->pid = 0;
	}
}

int vt_vgpud_stop_clean(struct vt_vgpud *s)
{
	int status = -1;
	char buf[65536];

	if (s->pid <= 0)
		return -1;
	kill(s->pid, SIGTERM);
	waitpid(s->pid, &status, 0);
	vt_vgpud_untrack(s->pid);
	s->pid = 0;
	read_log(s, buf, sizeof(buf));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || strstr(buf, "Sanitizer") ||
	    strstr(buf, "runtime error:")) {
		fprintf(stderr, "  vgpud did not stop cleanly (status 0x%x)\n", status);
		vt_vgpud_dump_log(s);
		return -1;
	}
	return 0;
}
