/* placeholder */
#include "config.h"
#include <vgpu/transport.h>
__attribute__((visibility("default"))) const struct vgpu_transport_ops *vgpu_transport_init(const struct vgpu_transport_host *host, unsigned int abi);
const struct vgpu_transport_ops *vgpu_transport_init(const struct vgpu_transport_host *host, unsigned int abi)
{
	(void)abi;
	host->error(VGPU_ERR_UNSUPPORTED, "not yet");
	return 0;
}
