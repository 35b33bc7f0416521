/* SPDX-License-Identifier: MIT */
/*
 * autoscale-slurm - grow a pool of vgpuds with Slurm batch jobs.
 *
 * Controller (role=controller, the default), in the vgpud that clients
 * reach first: when clients wait for capacity (pressure lasting up_after),
 * it writes a job script and submits it with sbatch (partition=, gres=,
 * time=, job_name=; at most max jobs, never two within cooldown, none while
 * one of its jobs is still pending). The job starts a vgpud on an ephemeral
 * port, appends "URI # slurm job ID" to pool_file and removes the line when
 * it ends, so pool clients (VGPU_URI=pool=FILE?wait=...) land on it. When
 * this server has been idle for down_after, the controller cancels its jobs
 * that are still pending.
 *
 * Member (role=member): the plugin the job's own vgpud runs. Once that vgpud
 * has had no session for cooldown, it cancels its own job (scancel
 * $SLURM_JOB_ID): the job ends, its pool line goes away.
 *
 * The job script comes from template= (a file) or the built-in one below;
 * @NAME@ placeholders are replaced: @VGPUD@ @VGPUD_ARGS@ @LISTEN_HOST@
 * @POOL_FILE@ @MEMBER_PLUGIN@ @JOB_NAME@ @SCRIPT_DIR@. The controller keeps
 * its jobs' ids and learns which still exist from squeue (-n job_name, -u
 * its user). sbatch/squeue/scancel may be given as paths (tests, wrappers).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <pthread.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vgpu/plugin.h>
#include "../autoscale-common/policy.h"
#include "../autoscale-common/run.h"

enum {
	P_ROLE, P_PARTITION, P_GRES, P_TIME, P_TEMPLATE, P_SCRIPT_DIR, P_POOL_FILE, P_JOB_NAME,
	P_VGPUD, P_VGPUD_ARGS, P_LISTEN_HOST, P_SBATCH, P_SQUEUE, P_SCANCEL, P_POLICY
};

static const struct vgpu_plugin_param params[] = {
	{ "role", "controller", "controller (submits and cancels jobs) or member (the job's own "
	  "vgpud: cancels its job when idle for cooldown)", VGPU_PARAM_STRING, 0, 0 },
	{ "partition", "", "sbatch --partition", VGPU_PARAM_STRING, 0, 0 },
	{ "gres", "", "sbatch --gres (e.g. gpu:1)", VGPU_PARAM_STRING, 0, 0 },
	{ "time", "", "sbatch --time limit (e.g. 01:00:00)", VGPU_PARAM_STRING, 0, 0 },
	{ "template", "", "job script template file (default: built in)", VGPU_PARAM_STRING, 0, 0 },
	{ "script_dir", "/tmp", "where job scripts and job logs are written", VGPU_PARAM_STRING, 0, 0 },
	{ "pool_file", "", "pool file the jobs add their URI to (clients: VGPU_URI=pool=FILE)",
	  VGPU_PARAM_STRING, 0, 0 },
	{ "job_name", "vgpud-autoscale", "Slurm job name of the jobs", VGPU_PARAM_STRING, 0, 0 },
	{ "vgpud", "vgpud", "vgpud program the job runs", VGPU_PARAM_STRING, 0, 0 },
	{ "vgpud_args", "", "more vgpud arguments, ';'-separated (--max-sessions;4)",
	  VGPU_PARAM_LIST, 0, 0 },
	{ "listen_host", "127.0.0.1", "address the job's vgpud listens on (port 0: any free port; "
	  "an address other hosts reach needs --secrets in vgpud_args)", VGPU_PARAM_STRING, 0, 0 },
	{ "sbatch", "sbatch", "sbatch program", VGPU_PARAM_STRING, 0, 0 },
	{ "squeue", "squeue", "squeue program", VGPU_PARAM_STRING, 0, 0 },
	{ "scancel", "scancel", "scancel program", VGPU_PARAM_STRING, 0, 0 },
	SCALE_POLICY_PARAMS,
	VGPU_PARAM_END
};

static const char builtin_template[] =
	"#!/bin/sh\n"
	"# vgpud job submitted by the autoscale-slurm plugin\n"
	"log=\"@SCRIPT_DIR@/@JOB_NAME@-$SLURM_JOB_ID.log\"\n"
	"pool=\"@POOL_FILE@\"\n"
	"tag=\"# slurm job $SLURM_JOB_ID\"\n"
	"@VGPUD@ --listen tcp://@LISTEN_HOST@:0 @VGPUD_ARGS@ --plugin @MEMBER_PLUGIN@ 2>\"$log\" &\n"
	"pid=$!\n"
	"cleanup() {\n"
	"\tkill -TERM $pid 2>/dev/null\n"
	"\t[ -n \"$pool\" ] && [ -f \"$pool\" ] && sed -i \"\\|$tag\\$|d\" \"$pool\"\n"
	"}\n"
	"trap 'cleanup; wait $pid; exit 0' TERM INT\n"
	"uri=\n"
	"i=0\n"
	"while [ $i -lt 300 ] && [ -z \"$uri\" ] && kill -0 $pid 2>/dev/null; do\n"
	"\turi=$(sed -n 's/^vgpud: listening on //p' \"$log\" | head -n 1)\n"
	"\t[ -n \"$uri\" ] || sleep 0.1\n"
	"\ti=$((i+1))\n"
	"done\n"
	"[ -n \"$uri\" ] || { echo \"vgpud did not start (see $log)\" >&2; kill $pid 2>/dev/null; exit 1; }\n"
	"echo \"vgpud job $SLURM_JOB_ID: $uri\" >&2\n"
	"[ -n \"$pool\" ] && echo \"$uri/0 $tag\" >> \"$pool\"\n"
	"wait $pid\n"
	"cleanup\n";

#define MAX_JOBS 64

struct job {
	unsigned long id;
	int pending;   /* PENDING in squeue at the last look */
};

struct sl {
	const struct vgpu_plugin_host *host;
	const union vgpu_param_value *v;
	int member;
	struct scale_policy pol;
	struct scale_state ss;
	char *tmpl;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t th;
	int stop, started;
	int pending_action;
	struct vgpu_autoscale_signal sig;
	struct job jobs[MAX_JOBS];
	unsigned njobs;
	int npending;
	unsigned seq;
	int cancelled;  /* member: scancel issued */
};

static const char *S(const struct sl *x, int i)
{
	return x->v[i].s ? x->v[i].s : "";
}

#define LOG(x, lvl, ...) (x)->host->log((x)->host, VGPU_PLUGIN_LOG_##lvl, __VA_ARGS__)

/* ---- the job script ---- */

static int sb_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t nc = (*cap + n + 1) * 2;
		char *nb = realloc(*buf, nc);

		if (!nb)
			return -1;
		*buf = nb;
		*cap = nc;
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
	return 0;
}

/* Quote for sh: 'it'\''s'. */
static int sb_quote(char **buf, size_t *len, size_t *cap, const char *s)
{
	if (sb_add(buf, len, cap, "'", 1))
		return -1;
	for (; *s; s++) {
		if (*s == '\'') {
			if (sb_add(buf, len, cap, "'\\''", 4))
				return -1;
		} else if (sb_add(buf, len, cap, s, 1)) {
			return -1;
		}
	}
	return sb_add(buf, len, cap, "'", 1);
}

static char *render(struct sl *x)
{
	const char *t = x->tmpl ? x->tmpl : builtin_template;
	char *out = NULL, member[512];
	size_t len = 0, cap = 0;

	snprintf(member, sizeof(member), "autoscale-slurm:role=member,cooldown=%llums,scancel=%s",
		 (unsigned long long)(x->pol.cooldown / 1000000ull), S(x, P_SCANCEL));
	if (sb_add(&out, &len, &cap, "", 0))
		return NULL;
	while (*t) {
		const char *at = strchr(t, '@'), *end;
		char key[32];
		size_t kl;
		int rc = 0;

		if (!at) {
			if (sb_add(&out, &len, &cap, t, strlen(t)))
				goto oom;
			break;
		}
		if (sb_add(&out, &len, &cap, t, (size_t)(at - t)))
			goto oom;
		end = strchr(at + 1, '@');
		kl = end ? (size_t)(end - at - 1) : 0;
		if (!end || kl == 0 || kl >= sizeof(key)) {
			if (sb_add(&out, &len, &cap, "@", 1))
				goto oom;
			t = at + 1;
			continue;
		}
		memcpy(key, at + 1, kl);
		key[kl] = '\0';
		if (!strcmp(key, "VGPUD")) {
			rc = sb_quote(&out, &len, &cap, S(x, P_VGPUD));
		} else if (!strcmp(key, "VGPUD_ARGS")) {
			for (uint32_t i = 0; i < x->v[P_VGPUD_ARGS].list.n && !rc; i++) {
				rc = sb_quote(&out, &len, &cap, x->v[P_VGPUD_ARGS].list.items[i]);
				if (!rc)
					rc = sb_add(&out, &len, &cap, " ", 1);
			}
		} else if (!strcmp(key, "LISTEN_HOST")) {
			rc = sb_add(&out, &len, &cap, S(x, P_LISTEN_HOST), strlen(S(x, P_LISTEN_HOST)));
		} else if (!strcmp(key, "POOL_FILE")) {
			rc = sb_add(&out, &len, &cap, S(x, P_POOL_FILE), strlen(S(x, P_POOL_FILE)));
		} else if (!strcmp(key, "MEMBER_PLUGIN")) {
			rc = sb_quote(&out, &len, &cap, member);
		} else if (!strcmp(key, "JOB_NAME")) {
			rc = sb_add(&out, &len, &cap, S(x, P_JOB_NAME), strlen(S(x, P_JOB_NAME)));
		} else if (!strcmp(key, "SCRIPT_DIR")) {
			rc = sb_add(&out, &len, &cap, S(x, P_SCRIPT_DIR), strlen(S(x, P_SCRIPT_DIR)));
		} else {
			/* not ours (e.g. an e-mail address): keep it */
			rc = sb_add(&out, &len, &cap, at, kl + 2);
		}
		if (rc)
			goto oom;
		t = end + 1;
	}
	return out;
oom:
	free(out);
	return NULL;
}

/* ---- controller actions (plugin thread) ---- */

static void submit(struct sl *x, const struct vgpu_autoscale_signal *s)
{
	char path[1024], out[512], part[300], gres[300], tim[300], name[300];
	char *argv[12], *script;
	int argc = 0, rc;
	unsigned long id;
	FILE *f;

	script = render(x);
	if (!script) {
		LOG(x, ERROR, "out of memory for the job script");
		return;
	}
	snprintf(path, sizeof(path), "%s/%s-%ld-%u.sh", S(x, P_SCRIPT_DIR), S(x, P_JOB_NAME),
		 (long)getpid(), ++x->seq);
	f = fopen(path, "w");
	if (!f || fputs(script, f) < 0 || fclose(f) != 0) {
		LOG(x, ERROR, "cannot write the job script %s: %s", path, strerror(errno));
		free(script);
		return;
	}
	free(script);
	chmod(path, 0700);
	argv[argc++] = (char *)S(x, P_SBATCH);
	argv[argc++] = "--parsable";
	snprintf(name, sizeof(name), "--job-name=%s", S(x, P_JOB_NAME));
	argv[argc++] = name;
	if (*S(x, P_PARTITION)) {
		snprintf(part, sizeof(part), "--partition=%s", S(x, P_PARTITION));
		argv[argc++] = part;
	}
	if (*S(x, P_GRES)) {
		snprintf(gres, sizeof(gres), "--gres=%s", S(x, P_GRES));
		argv[argc++] = gres;
	}
	if (*S(x, P_TIME)) {
		snprintf(tim, sizeof(tim), "--time=%s", S(x, P_TIME));
		argv[argc++] = tim;
	}
	argv[argc++] = "--output=/dev/null";
	argv[argc++] = path;
	argv[argc] = NULL;
	LOG(x, INFO, "%u client(s) waiting (longest %.1f s): submitting %s", s->waiting,
	    (double)s->wait_ns_max / 1e9, path);
	rc = run_cmd(argv, NULL, out, sizeof(out));
	if (rc != 0) {
		LOG(x, ERROR, "%s failed (%s %d): %s", S(x, P_SBATCH), rc < 0 ? "error" : "status",
		    rc < 0 ? errno : rc, out);
		return;
	}
	id = strtoul(out, NULL, 10);
	if (!id) {
		LOG(x, ERROR, "sbatch gave no job id: '%s'", out);
		return;
	}
	pthread_mutex_lock(&x->lock);
	if (x->njobs < MAX_JOBS) {
		x->jobs[x->njobs].id = id;
		x->jobs[x->njobs].pending = 1;
		x->njobs++;
		x->npending++;
	}
	pthread_mutex_unlock(&x->lock);
	LOG(x, INFO, "submitted Slurm job %lu", id);
}

static void cancel(struct sl *x, unsigned long id)
{
	char num[32], *argv[3];
	int rc;

	snprintf(num, sizeof(num), "%lu", id);
	argv[0] = (char *)S(x, P_SCANCEL);
	argv[1] = num;
	argv[2] = NULL;
	rc = run_cmd(argv, NULL, NULL, 0);
	LOG(x, INFO, "scancel %lu: %s", id, rc == 0 ? "done" : "failed");
}

/* Which of our jobs still exist (squeue -h -n NAME -u USER -o "%i %T"). */
static void refresh(struct sl *x)
{
	char out[8192], name[300], user[300], *argv[8], *line, *save = NULL;
	struct passwd *pw = getpwuid(getuid());
	struct job keep[MAX_JOBS];
	unsigned n = 0;
	int npending = 0, rc;

	snprintf(name, sizeof(name), "--name=%s", S(x, P_JOB_NAME));
	snprintf(user, sizeof(user), "--user=%s", pw ? pw->pw_name : "root");
	argv[0] = (char *)S(x, P_SQUEUE);
	argv[1] = "-h";
	argv[2] = name;
	argv[3] = user;
	argv[4] = "--format=%i %T";
	argv[5] = NULL;
	rc = run_cmd(argv, NULL, out, sizeof(out));
	if (rc != 0) {
		LOG(x, WARN, "%s failed (status %d): keeping the job list as it is", S(x, P_SQUEUE), rc);
		return;
	}
	pthread_mutex_lock(&x->lock);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long id = strtoul(line, NULL, 10);
		const char *state = strchr(line, ' ');

		for (unsigned i = 0; i < x->njobs; i++)
			if (x->jobs[i].id == id && n < MAX_JOBS) {
				keep[n].id = id;
				keep[n].pending = state && !strncmp(state + 1, "PENDING", 7);
				npending += keep[n].pending;
				n++;
			}
	}
	for (unsigned i = 0; i < x->njobs; i++) {
		int found = 0;

		for (unsigned k = 0; k < n; k++)
			found |= keep[k].id == x->jobs[i].id;
		if (!found)
			LOG(x, INFO, "Slurm job %lu has ended", x->jobs[i].id);
	}
	memcpy(x->jobs, keep, n * sizeof(keep[0]));
	x->njobs = n;
	x->npending = npending;
	pthread_mutex_unlock(&x->lock);
}

static void *controller(void *arg)
{
	struct sl *x = arg;
	uint64_t last_refresh = 0;

	pthread_mutex_lock(&x->lock);
	while (!x->stop) {
		struct timespec ts;
		uint64_t now;

		if (x->pending_action) {
			int a = x->pending_action;
			struct vgpu_autoscale_signal s = x->sig;

			x->pending_action = 0;
			pthread_mutex_unlock(&x->lock);
			if (a == SCALE_UP) {
				submit(x, &s);
			} else {
				unsigned long ids[MAX_JOBS];
				unsigned n = 0;

				pthread_mutex_lock(&x->lock);
				for (unsigned i = 0; i < x->njobs; i++)
					if (x->jobs[i].pending)
						ids[n++] = x->jobs[i].id;
				pthread_mutex_unlock(&x->lock);
				for (unsigned i = 0; i < n; i++)
					cancel(x, ids[i]);
			}
			pthread_mutex_lock(&x->lock);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
		if (x->njobs && now - last_refresh >= 2000000000ull) {
			last_refresh = now;
			pthread_mutex_unlock(&x->lock);
			refresh(x);
			pthread_mutex_lock(&x->lock);
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&x->cond, &x->lock, &ts);
	}
	pthread_mutex_unlock(&x->lock);
	return NULL;
}

static void *member_cancel(void *arg)
{
	struct sl *x = arg;
	const char *id = getenv("SLURM_JOB_ID");

	if (id && *id)
		cancel(x, strtoul(id, NULL, 10));
	return NULL;
}

/* ---- the plugin ---- */

static void sl_signal(void *state, const struct vgpu_autoscale_signal *sig)
{
	struct sl *x = state;

	pthread_mutex_lock(&x->lock);
	if (x->member) {
		/* our own job: gone once idle for cooldown */
		if (sig->event == VGPU_SCALE_IDLE && sig->idle_ns >= x->pol.cooldown && !x->cancelled) {
			pthread_t th;

			x->cancelled = 1;
			LOG(x, INFO, "idle for %.1f s: cancelling job %s", (double)sig->idle_ns / 1e9,
			    getenv("SLURM_JOB_ID") ? getenv("SLURM_JOB_ID") : "(none: not in a job)");
			if (pthread_create(&th, NULL, member_cancel, x) == 0) {
				x->th = th;
				x->started = 1;
			}
		}
	} else if (!x->pending_action) {
		/* a pending job will bring capacity: do not pile up more */
		enum scale_action a = scale_decide(&x->pol, &x->ss, sig, x->njobs);

		if (a == SCALE_UP && x->npending)
			a = SCALE_NONE;
		if (a == SCALE_DOWN && !x->npending)
			a = SCALE_NONE; /* running jobs cancel themselves when idle */
		if (a != SCALE_NONE) {
			x->pending_action = a;
			x->sig = *sig;
			scale_done(&x->ss, sig->now_ns);
			if (a == SCALE_UP)
				x->npending++; /* until squeue says otherwise */
			pthread_cond_signal(&x->cond);
		}
	}
	pthread_mutex_unlock(&x->lock);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	char tmp[4096];

	if (!f)
		return NULL;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		if (sb_add(&buf, &len, &cap, tmp, n)) {
			free(buf);
			buf = NULL;
			break;
		}
	fclose(f);
	return buf;
}

static vgpu_status sl_init(const struct vgpu_plugin_host *host, const struct vgpu_plugin_config *cfg,
			   void **state)
{
	struct sl *x = calloc(1, sizeof(*x));
	const char *role;

	if (!x)
		return host->fail(host, VGPU_ERR_NO_HOST_MEMORY, "out of memory");
	x->host = host;
	x->v = cfg->values;
	scale_policy_read(&x->pol, cfg->values, P_POLICY);
	role = S(x, P_ROLE);
	if (!strcmp(role, "member")) {
		x->member = 1;
	} else if (strcmp(role, "controller")) {
		free(x);
		return host->fail(host, VGPU_ERR_PLUGIN, "role=%s: controller or member", role);
	}
	if (x->pol.min > x->pol.max) {
		free(x);
		return host->fail(host, VGPU_ERR_PLUGIN, "min is above max");
	}
	if (*S(x, P_TEMPLATE) && !(x->tmpl = slurp(S(x, P_TEMPLATE)))) {
		vgpu_status st = host->fail(host, VGPU_ERR_PLUGIN, "template %s: %s",
					    S(x, P_TEMPLATE), strerror(errno));

		free(x);
		return st;
	}
	pthread_mutex_init(&x->lock, NULL);
	pthread_cond_init(&x->cond, NULL);
	if (!x->member) {
		if (pthread_create(&x->th, NULL, controller, x) != 0) {
			free(x->tmpl);
			free(x);
			return host->fail(host, VGPU_ERR_INTERNAL, "cannot start a thread");
		}
		x->started = 1;
		LOG(x, INFO, "controller: job %s, pool file %s, max %llu job(s)", S(x, P_JOB_NAME),
		    *S(x, P_POOL_FILE) ? S(x, P_POOL_FILE) : "(none)", (unsigned long long)x->pol.max);
	} else {
		LOG(x, INFO, "member of Slurm job %s: cancels it after %.1f s idle",
		    getenv("SLURM_JOB_ID") ? getenv("SLURM_JOB_ID") : "(none)",
		    (double)x->pol.cooldown / 1e9);
	}
	*state = x;
	return VGPU_OK;
}

static void sl_fini(void *state)
{
	struct sl *x = state;

	pthread_mutex_lock(&x->lock);
	x->stop = 1;
	pthread_cond_signal(&x->cond);
	pthread_mutex_unlock(&x->lock);
	if (x->started)
		pthread_join(x->th, NULL);
	pthread_mutex_destroy(&x->lock);
	pthread_cond_destroy(&x->cond);
	free(x->tmpl);
	free(x);
}

static const struct vgpu_autoscale_ops ops = { sizeof(ops), sl_signal };

static const struct vgpu_plugin_desc desc = {
	VGPU_PLUGIN_ABI_VERSION, VGPU_PLUGIN_AUTOSCALE, "autoscale-slurm",
	"submit vgpud Slurm jobs when clients wait; jobs cancel themselves when idle", "1.0",
	params, sl_init, sl_fini, &ops,
};

VGPU_PLUGIN_DEFINE(desc)
