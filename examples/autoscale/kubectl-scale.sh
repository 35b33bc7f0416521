#!/bin/sh
# autoscale-exec command (UNTESTED recipe): scale the vgpud StatefulSet to
# the plugin's target. Pod 0 (the controller) is not counted by the plugin,
# so replicas = target + 1. Runs in pod 0 with a ServiceAccount that may
# patch statefulsets/scale (the Role in vgpud-statefulset.yaml).
set -eu
: "${VGPU_SCALE_ACTION:?run by the autoscale-exec plugin}"
target=${VGPU_SCALE_TARGET:?}
ns=${POD_NAMESPACE:-default}
echo "vgpu autoscale: $VGPU_SCALE_ACTION ($VGPU_SCALE_REASON, $VGPU_SCALE_WAITING waiting):" \
     "replicas -> $((target + 1))" >&2
exec kubectl --namespace "$ns" scale statefulset/vgpud --replicas=$((target + 1))
