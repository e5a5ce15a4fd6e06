# shellcheck shell=bash
# Sourced by every deploy/local script: where the repo's ignored cache and cluster state live.
# Everything braid's local cluster writes stays under $BRAID_CACHE (the repo's ignored .cache/), except the
# paths the runtime hard-codes (/run/containerd, /var/lib/cni, /var/lib/kubelet), which cluster-down cleans.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BRAID_CACHE=${BRAID_CACHE:-$REPO/.cache}
BIN=$BRAID_CACHE/bin            # kube-apiserver, etcd, kubectl, kubelet, ... (KUBEBUILDER_ASSETS)
CNI_BIN=$BRAID_CACHE/cni-bin    # CNI reference plugins (+ braid's own once built)
STATE=$BRAID_CACHE/cluster      # etcd data, pki, kubeconfigs, logs, pids, containerd root/state
NODE_NAME=${NODE_NAME:-braid-node}
APISERVER_PORT=${APISERVER_PORT:-6443}
KUBECONFIG_ADMIN=$STATE/admin.kubeconfig
export PATH=/usr/local/go/bin:$BIN:$PATH
step() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
