/* SPDX-License-Identifier: MIT */
/*
 * vgpu_smi.c - `vgpu ls` and `vgpu smi`: what servers say about themselves
 * (vgpu_node_status_get, no session opened).
 *
 *   vgpu ls URI...            one line per device
 *   vgpu smi [--json] URI...  devices and sessions, nvidia-smi style, or JSON
 *
 * A URI may be a pool ("tcp://a:7100,tcp://b:7100", "pool=FILE"). Data on
 * stdout, errors on stderr; exit 1 if a server could not be asked.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"
#include "vgpu/pool.h"
#include "vgpu_cmds.h"

#define MAX_URIS 256

struct urilist {
	char *v[MAX_URIS];
	int n;
};

static void trim(char *s)
{
	char *b = s, *e;

	while (*b == ' ' || *b == '\t')
		b++;
	memmove(s, b, strlen(b) + 1);
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
}

static int add(struct urilist *l, const char *s)
{
	if (!*s)
		return 0;
	if (l->n == MAX_URIS) {
		fprintf(stderr, "vgpu: too many servers (at most %d)\n", MAX_URIS);
		return -1;
	}
	l->v[l->n] = strdup(s);
	if (!l->v[l->n])
		return -1;
	l->n++;
	return 0;
}

/* Expand pools: "a,b", "pool=FILE" (one URI a line, '#' comments). */
static int expand(struct urilist *l, const char *arg)
{
	char *copy = strdup(arg), *save = NULL, *tok;
	int rc = 0;

	if (!copy)
		return -1;
	for (tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		trim(tok);
		if (!strncmp(tok, "pool=", 5)) {
			char line[2048], *q = strchr(tok, '?');
			FILE *f;

			if (q)
				*q = '\0';
			f = fopen(tok + 5, "r");
			if (!f) {
				perror(tok + 5);
				rc = -1;
				break;
			}
			while (!rc && fgets(line, sizeof(line), f)) {
				char *h = strchr(line, '#');

				if (h)
					*h = '\0';
				trim(line);
				rc = add(l, line);
			}
			fclose(f);
		} else {
			rc = add(l, tok);
		}
	}
	free(copy);
	return rc;
}

static int collect(int argc, char **argv, int first, struct urilist *l)
{
	if (first >= argc) {
		const char *e = getenv("VGPU_URI");

		if (!e || !*e) {
			fprintf(stderr, "vgpu: no URI given and VGPU_URI is not set\n");
			return -1;
		}
		return expand(l, e);
	}
	for (int i = first; i < argc; i++)
		if (expand(l, argv[i]) < 0)
			return -1;
	return 0;
}

static void list_free(struct urilist *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->v[i]);
}

/* The server part of a URI for display: no query (tokens stay private), no
 * device: "tcp://h:7100/0?tenant=a&token=x" -> "tcp://h:7100". */
static const char *server_of(const char *uri, char *buf, size_t len)
{
	size_t n = strcspn(uri, "?");
	char *slash;

	if (n >= len)
		n = len - 1;
	memcpy(buf, uri, n);
	buf[n] = '\0';
	slash = strrchr(buf, '/');
	if (slash && slash > buf && slash[-1] != '/' && slash[1] &&
	    strspn(slash + 1, "0123456789") == strlen(slash + 1))
		*slash = '\0';
	return buf;
}

static const char *mib(uint64_t b, char *buf, size_t len)
{
	if (b >= (10ull << 30))
		snprintf(buf, len, "%.1f GiB", (double)b / (double)(1ull << 30));
	else
		snprintf(buf, len, "%llu MiB", (unsigned long long)(b >> 20));
	return buf;
}

static const char *dur(uint64_t ns, char *buf, size_t len)
{
	double s = (double)ns / 1e9;

	if (s < 60)
		snprintf(buf, len, "%.1fs", s);
	else if (s < 3600)
		snprintf(buf, len, "%ldm%02lds", (long)s / 60, (long)s % 60);
	else
		snprintf(buf, len, "%.1fh", s / 3600);
	return buf;
}

/* ---- vgpu ls ---- */

int vgpu_cmd_ls(int argc, char **argv)
{
	struct urilist l = { { 0 }, 0 };
	int rc = 0;

	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: vgpu ls URI...\n");
		return 0;
	}
	if (collect(argc, argv, 1, &l) < 0)
		return 2;
	for (int i = 0; i < l.n; i++) {
		struct vgpu_node_status *st;
		char a[32], b[32], srv[1024];

		server_of(l.v[i], srv, sizeof(srv));
		if (vgpu_node_status_get(l.v[i], NULL, &st) < 0) {
			fprintf(stderr, "vgpu: %s\n", vgpu_last_error());
			rc = 1;
			continue;
		}
		for (uint32_t k = 0; k < st->ndevices; k++) {
			const struct vgpu_node_device *d = &st->devices[k];
			char slots[32];

			if (st->max_sessions)
				snprintf(slots, sizeof(slots), "%u/%u", d->sessions, st->max_sessions);
			else
				snprintf(slots, sizeof(slots), "%u", d->sessions);
			printf("%s/%d\t%s\t%s\tmem %s / %s\tsessions %s\tqueue %llu\tutil %.0f%%\n",
			       srv, d->index, d->name, d->backend, mib(d->mem_used, a, sizeof(a)),
			       mib(d->mem_total, b, sizeof(b)), slots, (unsigned long long)d->queued,
			       d->util * 100.0);
		}
		vgpu_node_status_free(st);
	}
	list_free(&l);
	return rc;
}

/* ---- vgpu smi ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static double secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

static void json_server(FILE *f, const char *uri, const struct vgpu_node_status *st,
			const char *err)
{
	fputs("{\"uri\":", f);
	json_str(f, uri);
	if (!st) {
		fputs(",\"reachable\":false,\"error\":", f);
		json_str(f, err);
		fputc('}', f);
		return;
	}
	fputs(",\"reachable\":true,\"server\":", f);
	json_str(f, st->server);
	fputs(",\"backend\":", f);
	json_str(f, st->backend);
	fprintf(f, ",\"max_sessions\":%u,\"sessions_open\":%u,\"waiting\":%u,\"wait_seconds_max\":%.3f,"
		   "\"waits_total\":%llu,\"refused_total\":%llu,\"uptime_seconds\":%.3f,\"devices\":[",
		st->max_sessions, st->sessions, st->waiting, secs(st->wait_ns_max),
		(unsigned long long)st->waits_total, (unsigned long long)st->refused,
		secs(st->uptime_ns));
	for (uint32_t i = 0; i < st->ndevices; i++) {
		const struct vgpu_node_device *d = &st->devices[i];

		fprintf(f, "%s{\"index\":%d,\"name\":", i ? "," : "", d->index);
		json_str(f, d->name);
		fputs(",\"backend\":", f);
		json_str(f, d->backend);
		fprintf(f, ",\"memory_total_bytes\":%llu,\"memory_used_bytes\":%llu,"
			   "\"memory_on_host_bytes\":%llu,\"swap_in_bytes\":%llu,\"swap_out_bytes\":%llu,"
			   "\"sessions\":%u,\"queued\":%llu,\"utilization\":%.4f,\"busy_seconds\":%.6f,"
			   "\"items\":%llu,\"queue_wait_seconds\":%.6f}",
			(unsigned long long)d->mem_total, (unsigned long long)d->mem_used,
			(unsigned long long)d->mem_on_host, (unsigned long long)d->swapped_in,
			(unsigned long long)d->swapped_out, d->sessions, (unsigned long long)d->queued,
			d->util, secs(d->device_ns), (unsigned long long)d->items,
			secs(d->queue_wait_ns));
	}
	fputs("],\"sessions\":[", f);
	for (uint32_t i = 0; i < st->nsessions; i++) {
		const struct vgpu_node_session *x = &st->session[i];

		fprintf(f, "%s{\"id\":%llu,\"tenant\":", i ? "," : "", (unsigned long long)x->id);
		json_str(f, x->tenant);
		fprintf(f, ",\"device\":%d,\"memory_used_bytes\":%llu,\"memory_limit_bytes\":%llu,"
			   "\"share\":%.4f,\"swap_bytes\":%llu,\"busy_seconds\":%.6f,\"items\":%llu,"
			   "\"queued\":%llu,\"age_seconds\":%.3f,\"idle_seconds\":%.3f}",
			x->device, (unsigned long long)x->mem_used, (unsigned long long)x->mem_limit,
			x->share, (unsigned long long)x->mem_on_host, secs(x->device_ns),
			(unsigned long long)x->items, (unsigned long long)x->queued, secs(x->age_ns),
			secs(x->idle_ns));
	}
	fputs("],\"tenants\":[", f);
	for (uint32_t i = 0; i < st->ntenants; i++) {
		const struct vgpu_node_tenant *t = &st->tenants[i];

		fputs(i ? ",{\"tenant\":" : "{\"tenant\":", f);
		json_str(f, t->tenant);
		fprintf(f, ",\"busy_seconds_total\":%.6f,\"items_total\":%llu,\"sessions_total\":%llu}",
			secs(t->device_ns), (unsigned long long)t->items,
			(unsigned long long)t->sessions);
	}
	fputs("],\"transports\":[", f);
	for (uint32_t i = 0; i < st->ntransports; i++) {
		const struct vgpu_node_transport *t = &st->transports[i];

		fputs(i ? ",{\"name\":" : "{\"name\":", f);
		json_str(f, t->name);
		fprintf(f, ",\"received_bytes\":%llu,\"sent_bytes\":%llu,\"connections\":%llu}",
			(unsigned long long)t->rx_bytes, (unsigned long long)t->tx_bytes,
			(unsigned long long)t->connections);
	}
	fputs("]}", f);
}

#define RULE "+-----+--------------------------------+---------+----------------------+-------+--------+\n"
#define SRULE "+-----+--------+------------------+------------+------------+-------+------------+-----------+\n"

static void table_server(const char *uri, const struct vgpu_node_status *st)
{
	char a[32], b[32], c[32];

	printf(RULE);
	printf("| %-84s |\n", uri);
	if (st->max_sessions)
		snprintf(a, sizeof(a), "%u/%u", st->sessions, st->max_sessions);
	else
		snprintf(a, sizeof(a), "%u", st->sessions);
	{
		char line[256];

		snprintf(line, sizeof(line), "%s   up %s   sessions %s   waiting %u (longest %s)",
			 st->server, dur(st->uptime_ns, b, sizeof(b)), a, st->waiting,
			 dur(st->wait_ns_max, c, sizeof(c)));
		printf("| %-84.84s |\n", line);
	}
	printf(RULE);
	printf("| Dev | Name                           | Backend |   Memory used/total  | Util  | Queue  |\n");
	printf(RULE);
	for (uint32_t i = 0; i < st->ndevices; i++) {
		const struct vgpu_node_device *d = &st->devices[i];
		char mem[64];

		snprintf(mem, sizeof(mem), "%s / %s", mib(d->mem_used, a, sizeof(a)),
			 mib(d->mem_total, b, sizeof(b)));
		printf("| %3d | %-30.30s | %-7.7s | %20s | %4.0f%% | %6llu |\n", d->index, d->name,
		       d->backend, mem, d->util * 100.0, (unsigned long long)d->queued);
		if (d->mem_on_host || d->swapped_in || d->swapped_out) {
			char line[256];

			snprintf(line, sizeof(line), "      swap: %s on host, %s in, %s out",
				 mib(d->mem_on_host, a, sizeof(a)), mib(d->swapped_in, b, sizeof(b)),
				 mib(d->swapped_out, c, sizeof(c)));
			printf("| %-84.84s |\n", line);
		}
	}
	printf(RULE);
	printf("\n");
	printf(SRULE);
	printf("| Dev | ID     | Tenant           | Mem used   | Mem limit  | Share | Swapped    | Dev time  |\n");
	printf(SRULE);
	if (!st->nsessions)
		printf("| %-90s |\n", "no sessions");
	for (uint32_t i = 0; i < st->nsessions; i++) {
		const struct vgpu_node_session *x = &st->session[i];
		char lim[32];

		if (x->mem_limit)
			mib(x->mem_limit, lim, sizeof(lim));
		else
			snprintf(lim, sizeof(lim), "-");
		printf("| %3d | %-6llu | %-16.16s | %10s | %10s | %5.2f | %10s | %9s |\n", x->device,
		       (unsigned long long)x->id, x->tenant, mib(x->mem_used, a, sizeof(a)), lim,
		       x->share, mib(x->mem_on_host, b, sizeof(b)), dur(x->device_ns, c, sizeof(c)));
	}
	printf(SRULE);
}

int vgpu_cmd_smi(int argc, char **argv)
{
	struct urilist l = { { 0 }, 0 };
	int json = 0, first = 1, rc = 0;

	for (; first < argc && argv[first][0] == '-'; first++) {
		if (!strcmp(argv[first], "--json") || !strcmp(argv[first], "-j")) {
			json = 1;
		} else if (!strcmp(argv[first], "-h") || !strcmp(argv[first], "--help")) {
			printf("usage: vgpu smi [--json] URI...\n");
			return 0;
		} else {
			fprintf(stderr, "vgpu smi: unknown option '%s'\n", argv[first]);
			return 2;
		}
	}
	if (collect(argc, argv, first, &l) < 0)
		return 2;
	if (json)
		printf("{\"servers\":[");
	for (int i = 0; i < l.n; i++) {
		struct vgpu_node_status *st = NULL;
		char srv[1024];

		server_of(l.v[i], srv, sizeof(srv));
		if (vgpu_node_status_get(l.v[i], NULL, &st) < 0) {
			fprintf(stderr, "vgpu: %s\n", vgpu_last_error());
			rc = 1;
		}
		if (json) {
			if (i)
				putchar(',');
			json_server(stdout, srv, st, st ? NULL : vgpu_last_error());
		} else if (st) {
			if (i)
				putchar('\n');
			table_server(srv, st);
		}
		vgpu_node_status_free(st);
	}
	if (json)
		printf("]}\n");
	list_free(&l);
	return rc;
}
