/* SPDX-License-Identifier: MIT */
/* vgpud_proc.c - real vgpud processes for the tests (vgpud_proc.h). */
#include "config.h"

#include <errno.h>
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

void vt_vgpud_cleanup(void)
{
	vt_vgpud_kill_all(0);
}

void vt_vgpud_watchdog(int sig)
{
	static const char m[] = ": watchdog expired, servers killed\n";
	const char *name = program_invocation_short_name;

	(void)sig;
	vt_vgpud_kill_all(1);
	if (write(2, name, strlen(name)) < 0 || write(2, m, sizeof(m) - 1) < 0) {
	}
	_exit(1);
}

pid_t vt_vgpud_start_for(const char *listen, int clients, char *uri, size_t len)
{
	struct vt_vgpud d;
	char maxc[32];
	const char *args[] = { "--listen", listen, "--allow-native-modules", "--max-connections",
			       maxc, "--workers", "4", NULL };

	snprintf(maxc, sizeof(maxc), "%d", clients * 2 + 16);
	if (vt_vgpud_start(&d, "/tmp", args) < 0 || vt_vgpud_uri(&d, "tcp", "/0", uri, len) < 0) {
		fprintf(stderr, "%s: vgpud did not start\n", program_invocation_short_name);
		vt_vgpud_kill(&d, SIGKILL);
		unlink(d.log);
		return -1;
	}
	unlink(d.log);
	return d.pid;
}

long vt_proc_kib(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t fl = strlen(field);
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, fl))
			kib = strtol(line + fl, NULL, 10);
	fclose(f);
	return kib;
}
