/* SPDX-License-Identifier: MIT */
/*
 * vgpu - the libvgpu command line.
 *
 *   vgpu plugins [NAME...]     plugins found, their parameters, defaults, help
 *   vgpu ls URI...             devices of servers (vgpu_smi.c)
 *   vgpu smi [--json] URI...   devices and sessions, table or JSON (vgpu_smi.c)
 *   vgpu help [COMMAND]
 *
 * Data goes to stdout, logs and errors to stderr. Exit status: 0 ok, 1 the
 * command failed, 2 usage error. More subcommands (ls, smi, bench) are
 * added to the table below.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"
#include "vgpu/plugin.h"
#include "vgpu_cmds.h"

struct cmd {
	const char *name;
	const char *args;
	const char *help;
	int (*run)(int argc, char **argv);
};

static int cmd_help(int argc, char **argv);
static int cmd_plugins(int argc, char **argv);

static const struct cmd cmds[] = {
	{ "plugins", "[NAME...]", "list the plugins found (search path, kind, parameters with "
	  "defaults and help)", cmd_plugins },
	{ "ls", "URI...", "devices of servers or pools: memory, sessions, queue, utilisation",
	  vgpu_cmd_ls },
	{ "smi", "[--json] URI...", "devices and sessions of servers or pools (tenant, memory, "
	  "share, swap), as a table or JSON", vgpu_cmd_smi },
	{ "help", "[COMMAND]", "this help", cmd_help },
};
#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static void usage(FILE *f)
{
	fprintf(f, "usage: vgpu COMMAND [ARGS...]\n\ncommands:\n");
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(f, "  %-8s %-12s %s\n", cmds[i].name, cmds[i].args, cmds[i].help);
	fprintf(f, "\nlibvgpu %s. Environment: VGPU_PLUGIN_PATH (plugin directories, "
		"searched first), VGPU_LOG.\n", vgpu_version());
}

static int cmd_help(int argc, char **argv)
{
	if (argc > 1)
		for (size_t i = 0; i < NCMDS; i++)
			if (!strcmp(cmds[i].name, argv[1])) {
				printf("usage: vgpu %s %s\n  %s\n", cmds[i].name, cmds[i].args,
				       cmds[i].help);
				return 0;
			}
	usage(stdout);
	return 0;
}

/* ---- vgpu plugins ------------------------------------------------------ */

struct plist {
	int argc;
	char **argv;
	int shown;
};

static int wanted(const struct plist *pl, const char *name)
{
	if (pl->argc <= 1)
		return 1;
	for (int i = 1; i < pl->argc; i++)
		if (!strcmp(pl->argv[i], name))
			return 1;
	return 0;
}

static void show_plugin(void *arg, const struct vgpu_plugin_info *pi)
{
	struct plist *pl = arg;
	const struct vgpu_plugin_desc *d = pi->desc;

	if (!wanted(pl, pi->name))
		return;
	if (pl->shown++)
		printf("\n");
	if (!d) {
		printf("%s  (refused)\n  file: %s\n  error: %s\n", pi->name, pi->path,
		       pi->error ? pi->error : vgpu_strerror(pi->status));
		return;
	}
	printf("%s  %s plugin, version %s\n", pi->name, vgpu_plugin_kind_name(d->kind),
	       d->version ? d->version : "?");
	if (d->description)
		printf("  %s\n", d->description);
	printf("  file: %s\n", pi->path);
	if (!d->params || !d->params[0].name) {
		printf("  parameters: none\n");
		return;
	}
	printf("  parameters:\n");
	printf("    %-18s %-7s %-10s %s\n", "NAME", "TYPE", "DEFAULT", "HELP");
	for (const struct vgpu_plugin_param *p = d->params; p->name; p++) {
		const char *def = p->default_value && *p->default_value ? p->default_value : "\"\"";

		printf("    %-18s %-7s %-10s %s", p->name, vgpu_param_type_name(p->type), def,
		       p->help ? p->help : "");
		if (p->min != p->max)
			printf(" [%g..%g%s]", p->type == VGPU_PARAM_TIME ? p->min / 1e6 : p->min,
			       p->type == VGPU_PARAM_TIME ? p->max / 1e6 : p->max,
			       p->type == VGPU_PARAM_TIME ? " ms" : "");
		printf("\n");
	}
}

static int cmd_plugins(int argc, char **argv)
{
	struct plist pl = { argc, argv, 0 };

	if (argc > 1 && argv[1][0] == '-') {
		fprintf(stderr, "vgpu plugins: unknown option %s\n", argv[1]);
		return 2;
	}
	if (vgpu_plugin_list(show_plugin, &pl, 0) != VGPU_OK) {
		fprintf(stderr, "vgpu plugins: %s\n", vgpu_last_error());
		return 1;
	}
	if (!pl.shown) {
		fprintf(stderr, "vgpu plugins: no %s found (set VGPU_PLUGIN_PATH)\n",
			argc > 1 ? "such plugin" : "plugin");
		return argc > 1 ? 1 : 0;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
		return cmd_help(1, argv);
	if (!strcmp(argv[1], "--version")) {
		printf("vgpu (libvgpu) %s\n", vgpu_version());
		return 0;
	}
	for (size_t i = 0; i < NCMDS; i++)
		if (!strcmp(cmds[i].name, argv[1]))
			return cmds[i].run(argc - 1, argv + 1);
	fprintf(stderr, "vgpu: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
