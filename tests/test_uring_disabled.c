/* SPDX-License-Identifier: MIT */
/*
 * test_uring_disabled.c - where io_uring is unavailable (a seccomp profile
 * that answers io_uring_setup with EPERM, as container runtimes do, or the
 * kernel.io_uring_disabled sysctl), uring:// fails to open and to listen
 * with a message that says so, and tcp:// still works. The filter is
 * installed in forked children only.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/* io_uring_setup -> EPERM; everything else allowed. */
static int deny_io_uring(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { (unsigned short)(sizeof(f) / sizeof(f[0])), f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

/* In a child under the filter: the client side. */
static int t_open_refused(void *d)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		vgpu_t *v;
		vgpu_status st;

		if (deny_io_uring() < 0)
			_exit(3);
		st = vgpu_open(&v, "uring://127.0.0.1:9/0");
		if (st == VGPU_OK)
			_exit(4);
		fprintf(stderr, "  open: %s\n", vgpu_last_error());
		if (st != VGPU_ERR_UNSUPPORTED || !strstr(vgpu_last_error(), "io_uring is not available") ||
		    !strstr(vgpu_last_error(), "Operation not permitted"))
			_exit(5);
		_exit(0);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return 0;
}

/* vgpud under the filter: listening on uring fails with the reason. */
static int t_listen_refused(void *d)
{
	char log[] = "/tmp/vgpu-uring-disabled-XXXXXX";
	int fd = mkstemp(log), status;
	pid_t pid;
	char buf[4096];
	ssize_t n;

	CHECK(fd >= 0);
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		const char *vgpud = vt_build_path("tools/vgpud");

		dup2(fd, 2);
		if (deny_io_uring() < 0)
			_exit(3);
		execl(vgpud, vgpud, "--listen", "tcp://127.0.0.1:0", "--listen", "uring://127.0.0.1:0",
		      (char *)NULL);
		_exit(127);
	}
	alarm(30);
	CHECK(waitpid(pid, &status, 0) == pid);
	alarm(0);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	unlink(log);
	buf[n > 0 ? n : 0] = 0;
	fprintf(stderr, "  vgpud: %s", buf);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 127);
	CHECK(strstr(buf, "io_uring is not available"));
	CHECK(strstr(buf, "uring://127.0.0.1:0"));
	return 0;
}

int main(void)
{
	vt_run("open_refused", t_open_refused, NULL);
	vt_run("vgpud_listen_refused", t_listen_refused, NULL);
	return vt_finish();
}
