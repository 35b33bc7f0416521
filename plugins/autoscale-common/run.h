/* SPDX-License-Identifier: MIT */
/*
 * run.h - run a program for an autoscale plugin: no shell, extra VGPU_*
 * environment, stdout captured (optional), descriptors above 2 closed in
 * the child (so a vgpud's listening sockets never leak into a job).
 * Blocking: call it from the plugin's own thread, never from signal().
 * Header-only; each plugin compiles its own copy.
 */
#ifndef VGPU_AUTOSCALE_RUN_H
#define VGPU_AUTOSCALE_RUN_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define RUN_MAX_ENV 32

struct run_env {
	char *v[RUN_MAX_ENV];
	int n;
	char buf[RUN_MAX_ENV][512];
};

static inline void run_env_set(struct run_env *e, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline void run_env_set(struct run_env *e, const char *key, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (e->n == RUN_MAX_ENV)
		return;
	k = snprintf(e->buf[e->n], sizeof(e->buf[e->n]), "%s=", key);
	va_start(ap, fmt);
	vsnprintf(e->buf[e->n] + k, sizeof(e->buf[e->n]) - (size_t)k, fmt, ap);
	va_end(ap);
	e->v[e->n] = e->buf[e->n];
	e->n++;
}

/*
 * Run argv[0] (searched in PATH) with argv. out (may be NULL) receives up to
 * outlen-1 bytes of its stdout, NUL-terminated. Returns the exit status, 128+N
 * when killed by signal N, or -1 with errno when it could not run.
 */
static inline int run_cmd(char *const argv[], const struct run_env *extra, char *out,
			  size_t outlen)
{
	char **envp;
	size_t n = 0, k = 0;
	int pfd[2] = { -1, -1 }, status = 0;
	pid_t pid;

	while (environ[n])
		n++;
	envp = calloc(n + (extra ? (size_t)extra->n : 0) + 1, sizeof(*envp));
	if (!envp)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int skip = 0;

		for (int j = 0; extra && j < extra->n && !skip; j++) {
			size_t kl = (size_t)(strchr(extra->v[j], '=') - extra->v[j]) + 1;

			skip = !strncmp(environ[i], extra->v[j], kl);
		}
		if (!skip)
			envp[k++] = environ[i];
	}
	for (int j = 0; extra && j < extra->n; j++)
		envp[k++] = extra->v[j];
	envp[k] = NULL;
	if (out && pipe2(pfd, O_CLOEXEC) < 0) {
		free(envp);
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		int e = errno;

		free(envp);
		if (pfd[0] >= 0) {
			close(pfd[0]);
			close(pfd[1]);
		}
		errno = e;
		return -1;
	}
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL); /* vgpud blocks TERM/INT for sigwait */
		signal(SIGPIPE, SIG_DFL);
		if (out)
			dup2(pfd[1], 1);
		closefrom(3);
		execvpe(argv[0], argv, envp);
		_exit(127);
	}
	free(envp);
	if (out) {
		size_t got = 0;

		close(pfd[1]);
		for (;;) {
			char tmp[256];
			ssize_t r = read(pfd[0], got + 1 < outlen ? out + got : tmp,
					 got + 1 < outlen ? outlen - 1 - got : sizeof(tmp));

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			if (got + 1 < outlen)
				got += (size_t)r;
		}
		out[got < outlen ? got : outlen - 1] = '\0';
		close(pfd[0]);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

#endif
