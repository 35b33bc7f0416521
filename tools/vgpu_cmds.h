/* SPDX-License-Identifier: MIT */
/* vgpu_cmds.h - subcommands of the vgpu command line that live in their own files. */
#ifndef VGPU_CMDS_H
#define VGPU_CMDS_H

int vgpu_cmd_ls(int argc, char **argv);  /* vgpu_smi.c */
int vgpu_cmd_smi(int argc, char **argv); /* vgpu_smi.c */

#endif
