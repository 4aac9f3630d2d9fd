# Shared by the local cluster's scripts (sourced, not run): where things live, the pinned
# versions, logging, and starting and stopping host processes by PID file.
#
# Two folders per machine, both outside the checkout so that every clone shares them:
#   $CLUSTER_CACHE  kept between runs: the base image's root filesystem, dockerd's layers
#   $CLUSTER_RUN    one run's state: PKI, etcd, containerd, kubelet, logs, PID files;
#                   emptied when a cluster starts, left for reading when it stops
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER_CACHE="${VOICEAGENT_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voiceagent-backbone/cluster}"
CLUSTER_RUN="${VOICEAGENT_CLUSTER_RUN:-/var/lib/voiceagent-cluster/run}"
# What the host had before the cluster changed it, kept until it is restored.
CLUSTER_STATE="$(dirname "$CLUSTER_RUN")/saved"
TOOLS="$root/.tools/bin"
PKI="$CLUSTER_RUN/pki"
KUBECONFIG="$PKI/admin.kubeconfig"
DOCKER_SOCK="$CLUSTER_RUN/docker.sock"
CONTAINERD_SOCK="$CLUSTER_RUN/containerd/containerd.sock"
export KUBECONFIG

# The pod network: a bridge of our own (never docker0 or the host's interfaces), its
# gateway address serves cluster DNS and the kubelet; Services get virtual addresses.
BRIDGE=va-cni0
BRIDGE_IP=10.213.0.1
POD_CIDR=10.213.0.0/24
SERVICE_CIDR=10.214.0.0/16
KUBERNETES_SERVICE_IP=10.214.0.1
NODE_NAME=voiceagent-node

# The base image for every image the harness builds: Debian bookworm's own CPython 3.11,
# made with mmdebstrap from the Debian mirror apt already uses.
BASE_IMAGE=localhost/voiceagent-python:3.11-bookworm
PAUSE_IMAGE=registry.k8s.io/pause:3.10

log() { printf 'local-cluster: %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# start NAME COMMAND...: run in the background, output to $CLUSTER_RUN/NAME.log.
start_process() {
  local name="$1"
  shift
  setsid "$@" >"$CLUSTER_RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$CLUSTER_RUN/$name.pid"
}

# stop NAME: SIGTERM, then SIGKILL after 10 s; nothing when it is not running.
stop_process() {
  local pid_file="$CLUSTER_RUN/$1.pid" pid
  [[ -s "$pid_file" ]] || return 0
  pid="$(cat "$pid_file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds.
wait_for() {
  local seconds="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what did not come up within ${seconds}s (logs: $CLUSTER_RUN)"
    sleep 0.3
  done
}

kubectl() { "$TOOLS/kubectl" "$@"; }
docker_cmd() { DOCKER_HOST="unix://$DOCKER_SOCK" DOCKER_BUILDKIT=1 /usr/bin/docker "$@"; }
kube_version() { sed -n "s/^  \"kube-apiserver|[^|]*|[^|]*|\(v[^|\"]*\)\"$/\1/p" "$root/scripts/install-tools.sh"; }
