/* SPDX-License-Identifier: MIT */
/* remote_stub.c - placeholder until the remote door is built in. */
#include "config.h"

#include "door.h"
#include "error.h"

vgpu_status vgpu__door_remote_open(vgpu_t *v, const struct vgpu_uri *uri,
				   const struct vgpu_open_opts *opts)
{
	(void)opts;
	return vgpu__error(VGPU_ERR_UNSUPPORTED, "%s: remote URIs (%s://) are not supported by "
			   "this build", v->uri, uri->scheme);
}
