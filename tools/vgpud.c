/* SPDX-License-Identifier: MIT */
/*
 * vgpud - the libvgpu server: a thin main over vgpu_server_* (vgpu/server.h).
 *
 *   vgpud --listen tcp://127.0.0.1:7100 --listen unix:///run/vgpud.sock
 *   vgpud --config /etc/vgpud.conf
 *
 * Settings come from one table: it is the command line, the config file
 * (INI, section [vgpud] or none; "key = value"), the --help text and the
 * validation. Command-line flags override the file; --listen on the command
 * line replaces the file's listeners.
 *
 * Logs go to stderr (level: --log-level or $VGPU_LOG). Once a listener
 * accepts connections vgpud prints "vgpud: listening on URI" on stderr.
 * SIGTERM/SIGINT: stop accepting, let in-flight calls finish, exit 0.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ini.h>

#include <vgpu.h>
#include <vgpu/server.h>

#define MAX_LIST 16

struct strlist {
	int n;
	char *v[MAX_LIST];
};

struct settings {
	struct strlist listen;
	char *backend;
	struct strlist plugin;
	char *metrics;
	char *secrets;
	int allow_native_modules;
	char *log_level;
	long stop_timeout;
	long workers;
	long max_connections;
	long slots;
	long max_sessions;
	long admit_queue;
	long admit_timeout;
	char *tenant_shares;
	char *device_params;
	long frame_timeout;
	long long queue_limit; /* bytes; -1: not set */
	long max_handles;
	char *tls_cert;
	char *tls_key;
	char *tls_client_ca;
};

enum stype { S_STR, S_LIST, S_BOOL, S_INT, S_SIZE };

static const struct setting {
	const char *name;   /* config key; the flag is --name with '_' as '-' */
	enum stype type;
	size_t off;
	const char *arg;
	const char *help;
} table[] = {
	{ "listen", S_LIST, offsetof(struct settings, listen), "URI",
	  "listen on URI (repeatable): tcp://HOST:PORT (port 0: any free port), unix:///PATH" },
	{ "backend", S_STR, offsetof(struct settings, backend), "cpu|cuda", "device backend (default cpu)" },
	{ "plugin", S_LIST, offsetof(struct settings, plugin), "NAME[:k=v,...]",
	  "load a plugin (repeatable): scheduler, memory or autoscale: sched-fair:weights=alice=3;bob=1 (see vgpu plugins)" },
	{ "config", S_STR, (size_t)-1, "FILE", "read settings from an INI file (keys as these flags)" },
	{ "metrics", S_STR, offsetof(struct settings, metrics), "HOST:PORT",
	  "serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free port)" },
	{ "secrets", S_STR, offsetof(struct settings, secrets), "FILE",
	  "tenant:secret lines; clients authenticate with HMAC-SHA256 (required unless only loopback/unix)" },
	{ "allow_native_modules", S_BOOL, offsetof(struct settings, allow_native_modules), NULL,
	  "let clients load cpu-backend modules: they are native code and run inside vgpud" },
	{ "log_level", S_STR, offsetof(struct settings, log_level), "LEVEL",
	  "error, warn, info or debug (default: $VGPU_LOG, else warn)" },
	{ "stop_timeout", S_INT, offsetof(struct settings, stop_timeout), "SECONDS",
	  "on SIGTERM, wait this long for in-flight calls (default 10)" },
	{ "workers", S_INT, offsetof(struct settings, workers), "N", "engine worker threads (default 2)" },
	{ "max_connections", S_INT, offsetof(struct settings, max_connections), "N",
	  "refuse clients beyond N connections (default 1024)" },
	{ "slots", S_INT, offsetof(struct settings, slots), "N",
	  "with a scheduler plugin: work items a device runs at once (default 1)" },
	{ "max_sessions", S_INT, offsetof(struct settings, max_sessions), "N",
	  "admit at most N sessions per device (default unlimited); others wait" },
	{ "admit_queue", S_INT, offsetof(struct settings, admit_queue), "N",
	  "sessions that may wait for admission (default 16; 0: refuse at once)" },
	{ "admit_timeout", S_INT, offsetof(struct settings, admit_timeout), "MS",
	  "a session not admitted within MS milliseconds gets VGPU_ERR_BUSY (default 10000)" },
	{ "tenant_shares", S_STR, offsetof(struct settings, tenant_shares), "T=F;...",
	  "cap tenants' device time: alice=0.25;bob=0.5 (needs a scheduler plugin)" },
	{ "device_params", S_STR, offsetof(struct settings, device_params), "QUERY",
	  "backend parameters of every device, as a URI query: devmem=8G (the cpu device's memory)" },
	{ "frame_timeout", S_INT, offsetof(struct settings, frame_timeout), "MS",
	  "close a connection whose frame (or reply) makes no progress for MS ms (default 30000; 0: none)" },
	{ "queue_limit", S_SIZE, offsetof(struct settings, queue_limit), "SIZE",
	  "queued work one session may hold (about 160 bytes a launch) before vgpud stops reading "
	  "its connection until the device catches up: 16M (default), 256K, 1G; 0: no limit" },
	{ "max_handles", S_INT, offsetof(struct settings, max_handles), "N",
	  "live streams, events, modules and functions one session may hold, of each "
	  "(default 65536; 0: as many as the tables hold, about a million)" },
	{ "tls_cert", S_STR, offsetof(struct settings, tls_cert), "FILE",
	  "serve tcp listeners over TLS with this PEM certificate (chain); needs --tls-key" },
	{ "tls_key", S_STR, offsetof(struct settings, tls_key), "FILE", "the TLS private key (PEM)" },
	{ "tls_client_ca", S_STR, offsetof(struct settings, tls_client_ca), "FILE",
	  "require TLS client certificates signed by these CAs (PEM)" },
};
#define NSET (sizeof(table) / sizeof(table[0]))

static void usage(FILE *f)
{
	fprintf(f, "usage: vgpud --listen URI [options]\n\noptions:\n");
	for (size_t i = 0; i < NSET; i++) {
		char flag[64];
		size_t k;

		snprintf(flag, sizeof(flag), "--%s", table[i].name);
		for (k = 0; flag[k]; k++)
			if (flag[k] == '_')
				flag[k] = '-';
		fprintf(f, "  %s%s%s\n      %s\n", flag, table[i].arg ? " " : "",
			table[i].arg ? table[i].arg : "", table[i].help);
	}
	fprintf(f, "  --help, --version\n\nConfig file: INI, section [vgpud] (or none), "
		   "keys as above with '_' (listen and plugin may repeat).\n");
}

static int set_value(struct settings *s, const struct setting *t, const char *val, int from_cmdline,
		     const char *where)
{
	void *p = (char *)s + t->off;
	char *end;

	switch (t->type) {
	case S_STR:
		free(*(char **)p);
		*(char **)p = strdup(val);
		break;
	case S_LIST: {
		struct strlist *l = p;
		if (l->n >= MAX_LIST) {
			fprintf(stderr, "vgpud: %s: too many %s values (at most %d)\n", where, t->name, MAX_LIST);
			return -1;
		}
		l->v[l->n++] = strdup(val);
		break;
	}
	case S_BOOL:
		if (!val || !strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "1") ||
		    !strcmp(val, "on"))
			*(int *)p = 1;
		else if (!strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "0") ||
			 !strcmp(val, "off"))
			*(int *)p = 0;
		else {
			fprintf(stderr, "vgpud: %s: %s: '%s' is not a boolean (true/false)\n", where, t->name, val);
			return -1;
		}
		break;
	case S_INT:
		errno = 0;
		*(long *)p = strtol(val, &end, 10);
		if (errno || *end || end == val || *(long *)p < 0) {
			fprintf(stderr, "vgpud: %s: %s: '%s' is not a non-negative integer\n", where, t->name, val);
			return -1;
		}
		break;
	case S_SIZE: {
		unsigned long long n;

		errno = 0;
		n = strtoull(val, &end, 10);
		if (*end == 'K' || *end == 'k')
			n <<= 10, end++;
		else if (*end == 'M' || *end == 'm')
			n <<= 20, end++;
		else if (*end == 'G' || *end == 'g')
			n <<= 30, end++;
		if (errno || end == val || *end || val[0] == '-' || n > (1ull << 40)) {
			fprintf(stderr, "vgpud: %s: %s: '%s' is not a size such as 4096, 256K, 16M or 1G "
				"(at most 1024G)\n", where, t->name, val);
			return -1;
		}
		*(long long *)p = (long long)n;
		break;
	}
	}
	(void)from_cmdline;
	return 0;
}

struct ini_ctx {
	struct settings *s;
	const char *path;
	int failed;
};

/* inih reports the line of the first error as ini_parse()'s result. */
static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
	struct ini_ctx *c = user;
	const char *where = c->path;

	if (c->failed)
		return 0;
	if (section[0] && strcmp(section, "vgpud")) {
		fprintf(stderr, "vgpud: %s: unknown section [%s] (use [vgpud])\n", where, section);
		c->failed = 1;
		return 0;
	}
	for (size_t i = 0; i < NSET; i++) {
		if (strcmp(table[i].name, name) || table[i].off == (size_t)-1)
			continue;
		if (set_value(c->s, &table[i], value, 0, where) < 0) {
			c->failed = 1;
			return 0;
		}
		return 1;
	}
	fprintf(stderr, "vgpud: %s: unknown setting '%s'\n", where, name);
	c->failed = 1;
	return 0;
}

static void settings_free(struct settings *s)
{
	for (int i = 0; i < s->listen.n; i++)
		free(s->listen.v[i]);
	for (int i = 0; i < s->plugin.n; i++)
		free(s->plugin.v[i]);
	free(s->backend);
	free(s->metrics);
	free(s->secrets);
	free(s->tls_cert);
	free(s->tls_key);
	free(s->tls_client_ca);
	free(s->log_level);
	free(s->tenant_shares);
	free(s->device_params);
}

int main(int argc, char **argv)
{
	struct settings cfg, cmd;
	struct option opts[NSET + 3];
	char flagnames[NSET][64];
	const char *config = NULL;
	struct vgpu_server_opts so = VGPU_SERVER_OPTS_INIT;
	vgpu_server *srv = NULL;
	char *plugins = NULL;
	sigset_t sigs;
	int sig, rc = 1, o, idx;
	vgpu_status st;

	memset(&cfg, 0, sizeof(cfg));
	memset(&cmd, 0, sizeof(cmd));
	cmd.stop_timeout = cmd.workers = cmd.max_connections = -1;
	cmd.slots = cmd.max_sessions = cmd.admit_queue = cmd.admit_timeout = -1;
	cfg.admit_queue = -1;
	cmd.frame_timeout = cfg.frame_timeout = -1;
	cmd.queue_limit = cfg.queue_limit = -1;
	cmd.max_handles = cfg.max_handles = -1;
	cmd.allow_native_modules = -1;
	for (size_t i = 0; i < NSET; i++) {
		size_t k;
		snprintf(flagnames[i], sizeof(flagnames[i]), "%s", table[i].name);
		for (k = 0; flagnames[i][k]; k++)
			if (flagnames[i][k] == '_')
				flagnames[i][k] = '-';
		opts[i].name = flagnames[i];
		opts[i].has_arg = table[i].type == S_BOOL ? no_argument : required_argument;
		opts[i].flag = NULL;
		opts[i].val = 1000 + (int)i;
	}
	opts[NSET] = (struct option){ "help", no_argument, NULL, 'h' };
	opts[NSET + 1] = (struct option){ "version", no_argument, NULL, 'V' };
	opts[NSET + 2] = (struct option){ NULL, 0, NULL, 0 };

	while ((o = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
		const struct setting *t;

		if (o == 'h') {
			usage(stdout);
			return 0;
		}
		if (o == 'V') {
			printf("vgpud %s\n", vgpu_version());
			return 0;
		}
		if (o < 1000 || o >= 1000 + (int)NSET) {
			usage(stderr);
			return 2;
		}
		t = &table[o - 1000];
		if (t->off == (size_t)-1) {
			config = optarg;
			continue;
		}
		if (set_value(&cmd, t, optarg, 1, "command line") < 0)
			return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "vgpud: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (config) {
		struct ini_ctx ic = { &cfg, config, 0 };
		int e = ini_parse(config, ini_cb, &ic);

		if (e < 0) {
			fprintf(stderr, "vgpud: cannot read config file %s: %s\n", config, strerror(errno));
			goto out;
		}
		if (e > 0 || ic.failed) {
			fprintf(stderr, "vgpud: %s:%d: %s\n", config, e,
				ic.failed ? "bad setting (see above)" : "syntax error");
			rc = 2;
			goto out;
		}
	}
	/* command line over config */
	if (cmd.listen.n) {
		for (int i = 0; i < cfg.listen.n; i++)
			free(cfg.listen.v[i]);
		cfg.listen = cmd.listen;
		cmd.listen.n = 0;
	}
	for (int i = 0; i < cmd.plugin.n && cfg.plugin.n < MAX_LIST; i++) {
		cfg.plugin.v[cfg.plugin.n++] = cmd.plugin.v[i];
		cmd.plugin.v[i] = NULL;
	}
	cmd.plugin.n = 0;
#define TAKE(f) do { if (cmd.f) { free(cfg.f); cfg.f = cmd.f; cmd.f = NULL; } } while (0)
	TAKE(backend);
	TAKE(metrics);
	TAKE(secrets);
	TAKE(log_level);
	TAKE(tenant_shares);
	TAKE(device_params);
	TAKE(tls_cert);
	TAKE(tls_key);
	TAKE(tls_client_ca);
	if (cmd.allow_native_modules >= 0)
		cfg.allow_native_modules = cmd.allow_native_modules;
	if (cmd.stop_timeout >= 0)
		cfg.stop_timeout = cmd.stop_timeout;
	if (cmd.workers >= 0)
		cfg.workers = cmd.workers;
	if (cmd.max_connections >= 0)
		cfg.max_connections = cmd.max_connections;
	if (cmd.slots >= 0)
		cfg.slots = cmd.slots;
	if (cmd.max_sessions >= 0)
		cfg.max_sessions = cmd.max_sessions;
	if (cmd.admit_queue >= 0)
		cfg.admit_queue = cmd.admit_queue;
	if (cmd.admit_timeout >= 0)
		cfg.admit_timeout = cmd.admit_timeout;
	if (cmd.frame_timeout >= 0)
		cfg.frame_timeout = cmd.frame_timeout;
	if (cmd.queue_limit >= 0)
		cfg.queue_limit = cmd.queue_limit;
	if (cmd.max_handles >= 0)
		cfg.max_handles = cmd.max_handles;

	if (cfg.log_level) {
		if (strcmp(cfg.log_level, "error") && strcmp(cfg.log_level, "warn") &&
		    strcmp(cfg.log_level, "info") && strcmp(cfg.log_level, "debug")) {
			fprintf(stderr, "vgpud: log level '%s': use error, warn, info or debug\n", cfg.log_level);
			rc = 2;
			goto out;
		}
		setenv("VGPU_LOG", cfg.log_level, 1); /* before the library's first log */
	}
	if (!cfg.listen.n) {
		fprintf(stderr, "vgpud: no listener: give --listen URI (e.g. tcp://127.0.0.1:7100)\n");
		rc = 2;
		goto out;
	}
	if (cfg.plugin.n) {
		/* one spec list: the --plugin values, blank-separated */
		size_t len = 1;

		for (int i = 0; i < cfg.plugin.n; i++)
			len += strlen(cfg.plugin.v[i]) + 1;
		plugins = calloc(1, len);
		if (!plugins)
			goto out;
		for (int i = 0; i < cfg.plugin.n; i++) {
			if (strpbrk(cfg.plugin.v[i], " \t")) {
				fprintf(stderr, "vgpud: --plugin '%s': blanks are not allowed in a "
					"plugin spec\n", cfg.plugin.v[i]);
				rc = 2;
				goto out;
			}
			if (i)
				strcat(plugins, " ");
			strcat(plugins, cfg.plugin.v[i]);
		}
	}
	if (cfg.backend && strcmp(cfg.backend, "cpu") && strcmp(cfg.backend, "cuda")) {
		fprintf(stderr, "vgpud: unknown backend '%s' (cpu or cuda)\n", cfg.backend);
		rc = 2;
		goto out;
	}

	/* signals are taken by sigwait below; every thread inherits the mask */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	so.backend = cfg.backend;
	so.secrets_file = cfg.secrets;
	if (cfg.frame_timeout > 0)
		so.frame_timeout_ms = cfg.frame_timeout > 3600000 ? 3600000 : (uint32_t)cfg.frame_timeout;
	else if (cfg.frame_timeout == 0)
		so.frame_timeout_ms = UINT32_MAX;
	so.flags = cfg.allow_native_modules ? VGPU_SERVER_ALLOW_NATIVE_MODULES : 0;
	so.stop_timeout_ms = (uint32_t)(cfg.stop_timeout > 0 ? cfg.stop_timeout * 1000 : 0);
	so.workers = (int)cfg.workers;
	so.max_connections = (unsigned)(cfg.max_connections > 0 ? cfg.max_connections : 0);
	so.plugins = plugins;
	so.slots = (unsigned)(cfg.slots > 0 ? cfg.slots : 0);
	so.max_sessions = (unsigned)(cfg.max_sessions > 0 ? cfg.max_sessions : 0);
	so.admit_queue = cfg.admit_queue < 0 ? 0 : cfg.admit_queue == 0 ? -1 : (int)cfg.admit_queue;
	so.admit_timeout_ms = (uint32_t)(cfg.admit_timeout > 0 ? cfg.admit_timeout : 0);
	so.tenant_shares = cfg.tenant_shares;
	so.device_params = cfg.device_params;
	so.queue_limit = cfg.queue_limit < 0    ? 0 /* the default */
			 : cfg.queue_limit == 0 ? SIZE_MAX
						: (size_t)cfg.queue_limit;
	so.max_handles = cfg.max_handles < 0	  ? 0 /* the default */
			 : cfg.max_handles == 0	  ? UINT_MAX
			 : cfg.max_handles > 1 << 20 ? 1u << 20
						  : (unsigned)cfg.max_handles;
	st = vgpu_server_create(&srv, &so);
	if (st < 0) {
		fprintf(stderr, "vgpud: %s\n", vgpu_last_error());
		goto out;
	}
	if ((!cfg.tls_cert) != (!cfg.tls_key) || (cfg.tls_client_ca && !cfg.tls_cert)) {
		fprintf(stderr, "vgpud: TLS needs both --tls-cert and --tls-key (and they with --tls-client-ca)\n");
		rc = 2;
		goto out;
	}
	for (int i = 0; i < cfg.listen.n; i++) {
		char uri[4096];

		/* --tls-*: every tcp listener speaks TLS (the URI's own tls_* win) */
		if (cfg.tls_cert && !strncmp(cfg.listen.v[i], "tcp://", 6) && !strstr(cfg.listen.v[i], "tls=")) {
			int n = snprintf(uri, sizeof(uri), "%s%ctls=1&tls_cert=%s&tls_key=%s%s%s",
					 cfg.listen.v[i], strchr(cfg.listen.v[i], '?') ? '&' : '?',
					 cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca ? "&tls_client_ca=" : "",
					 cfg.tls_client_ca ? cfg.tls_client_ca : "");
			if (n < 0 || (size_t)n >= sizeof(uri)) {
				fprintf(stderr, "vgpud: TLS file names too long\n");
				rc = 2;
				goto out;
			}
		} else {
			snprintf(uri, sizeof(uri), "%s", cfg.listen.v[i]);
		}
		st = vgpu_server_listen(srv, uri, NULL, 0);
		if (st < 0) {
			fprintf(stderr, "vgpud: %s\n", vgpu_last_error());
			goto out;
		}
	}
	if (cfg.allow_native_modules && (!cfg.backend || !strcmp(cfg.backend, "cpu")))
		fprintf(stderr, "vgpud: warning: --allow-native-modules: clients' cpu modules run as native "
				"code inside vgpud\n");
	if (cfg.metrics) {
		char bound[300];

		st = vgpu_server_metrics_listen(srv, cfg.metrics, bound, sizeof(bound));
		if (st < 0) {
			fprintf(stderr, "vgpud: %s\n", vgpu_last_error());
			goto out;
		}
		fprintf(stderr, "vgpud: metrics on http://%s/metrics\n", bound);
	}
	st = vgpu_server_start(srv);
	if (st < 0) {
		fprintf(stderr, "vgpud: %s\n", vgpu_last_error());
		goto out;
	}
	for (unsigned i = 0; i < vgpu_server_listener_count(srv); i++)
		fprintf(stderr, "vgpud: listening on %s\n", vgpu_server_listener_uri(srv, i));
	fflush(stderr);

	do
		sig = 0, sigwait(&sigs, &sig);
	while (sig == SIGHUP); /* reload: nothing to reload yet */
	fprintf(stderr, "vgpud: %s: stopping\n", strsignal(sig));
	st = vgpu_server_stop(srv);
	if (st < 0) {
		fprintf(stderr, "vgpud: %s\n", vgpu_last_error());
		rc = 1;
		srv = NULL; /* sessions still busy: exit without freeing under them */
		goto out;
	}
	rc = 0;
out:
	vgpu_server_destroy(srv);
	settings_free(&cfg);
	settings_free(&cmd);
	free(plugins);
	return rc;
}
