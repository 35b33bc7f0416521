/* SPDX-License-Identifier: MIT */
/*
 * vgpud_proc.h - real vgpud processes for the tests: started from the build
 * tree on loopback with ephemeral ports (the URIs are read from the
 * "vgpud: listening on" lines of its stderr log), and always killed: every
 * process started is SIGKILLed by vt_vgpud_kill_all() (atexit, a watchdog)
 * and, should the test itself die, by PR_SET_PDEATHSIG.
 */
#ifndef VGPU_TEST_VGPUD_PROC_H
#define VGPU_TEST_VGPUD_PROC_H

#include <stddef.h>
#include <sys/types.h>

struct vt_vgpud {
	pid_t pid;
	char log[256];
};

/*
 * Run tools/vgpud with args (NULL-terminated, no argv[0]) and its stderr in
 * dir/vgpud-N.log; wait up to 20 s for one "listening on" line per
 * --listen. 0, or -1 with the log copied to stderr (it exited, or never
 * listened).
 */
int vt_vgpud_start(struct vt_vgpud *s, const char *dir, const char *const *args);
/* The URI it listens on for scheme ("tcp", "unix"...), plus suffix ("/0"). */
int vt_vgpud_uri(const struct vt_vgpud *s, const char *scheme, const char *suffix, char *out,
		 size_t len);
/* Signal (SIGKILL, SIGTERM...) and reap it. */
void vt_vgpud_kill(struct vt_vgpud *s, int sig);
/* SIGTERM; 0 when it exited 0 with a log free of sanitizer reports. */
int vt_vgpud_stop_clean(struct vt_vgpud *s);
void vt_vgpud_dump_log(const struct vt_vgpud *s);
/* Remember another child to be killed with the servers (a client process). */
void vt_vgpud_track(pid_t pid);
void vt_vgpud_untrack(pid_t pid);
/* SIGKILL every process still running; reap (0) or not (1: a signal handler). */
void vt_vgpud_kill_all(int from_signal);
/* The same for atexit(). */
void vt_vgpud_cleanup(void);
/* A SIGALRM handler: every process killed, "watchdog expired", exit 1. */
void vt_vgpud_watchdog(int sig);
/*
 * A vgpud on listen for a load test: native modules allowed, room for
 * clients connections and 4 workers; uri gets its tcp URI with "/0". Its
 * log is removed once it listens. Its pid, or -1.
 */
pid_t vt_vgpud_start_for(const char *listen, int clients, char *uri, size_t len);
/* A field of /proc/PID/status in KiB ("VmRSS:", "VmHWM:"), or -1. */
long vt_proc_kib(pid_t pid, const char *field);

#endif
