#!/usr/bin/env bash
# End-to-end on kind: build the images, load them into a kind cluster, then the steps the
# local cluster of `make e2e` runs as well (deploy/e2e/install.sh: CRDs, the dev
# livekit-server, `helm install --wait` with ci/kind-values.yaml, `helm test`), then talk to
# state_svc with grpcurl through a port-forward: health, reflection, and a short
# conversation (create, append twice, history).
#
#   deploy/kind/e2e.sh
#
# Needs docker, kind, kubectl, helm, grpcurl and go (helm, grpcurl and the stand-ins'
# ferretdb and livekit-server from .tools/bin when `make setup` built them; go for the
# CRDs), and .venv (to mint a token). Environment:
#   E2E_CLUSTER=voiceagent-e2e   kind cluster name (created, and deleted at the end)
#   E2E_KEEP_CLUSTER=1           keep the cluster afterwards (for debugging)
#   E2E_SKIP_BUILD=1             use images already loaded into the cluster
#   KIND_NODE_IMAGE=...          kind node image (default: kind's own)
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export PATH="$root/.tools/bin:$PATH"

cluster="${E2E_CLUSTER:-voiceagent-e2e}"
namespace=voice
release=va
tag=e2e
fullname="$release-voiceagent"
state_local_port="${E2E_STATE_PORT:-15051}"
context_local_port="${E2E_CONTEXT_PORT:-15052}"
work="$(mktemp -d)"
pids=()

log() { echo "e2e: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

for tool in docker kind kubectl helm grpcurl go; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
[[ -x .venv/bin/python ]] || die ".venv is missing: run 'make setup'"

diagnose() {
  log "diagnostics"
  kubectl get pods,svc,networkpolicy,hpa,pdb -n "$namespace" -o wide || true
  kubectl describe pods -n "$namespace" || true
  for pod in $(kubectl get pods -n "$namespace" -o name 2>/dev/null); do
    echo "----- logs $pod" >&2
    kubectl logs -n "$namespace" "$pod" --all-containers --tail=80 || true
  done
  kubectl get events -n "$namespace" --sort-by=.lastTimestamp | tail -40 || true
}

cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ $rc -ne 0 ]] && diagnose
  if [[ "${E2E_KEEP_CLUSTER:-0}" != 1 ]]; then
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# ------------------------------------------------------------------------ cluster
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
kubectl config use-context "kind-$cluster" >/dev/null

# ------------------------------------------------------------------------- images
if [[ "${E2E_SKIP_BUILD:-0}" != 1 ]]; then
  TAG="$tag" bash deploy/e2e/build-images.sh
  for image in state context agent mongo-standin livekit; do
    kind load docker-image --name "$cluster" "voiceagent-$image:$tag"
  done
fi

# ------------------------------------------- install and helm test (shared with make e2e)
RELEASE="$release" NAMESPACE="$namespace" bash deploy/e2e/install.sh
kubectl get pods -n "$namespace" -o wide

# ----------------------------------------------------------------- port-forward
port_forward() {
  local service="$1" local_port="$2" remote_port="$3"
  kubectl port-forward -n "$namespace" "svc/$service" "$local_port:$remote_port" \
    >"$work/port-forward-$service.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 60); do
    if grpcurl -plaintext -max-time 2 "127.0.0.1:$local_port" list >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  cat "$work/port-forward-$service.log" >&2
  die "port-forward to $service did not come up"
}
port_forward "$fullname-state" "$state_local_port" 50051
port_forward "$fullname-context" "$context_local_port" 50052
state="127.0.0.1:$state_local_port"
context="127.0.0.1:$context_local_port"

log "reflection and health"
grpcurl -plaintext "$state" list | tee "$work/services.txt"
grep -qx voiceagent.state.v1.StateService "$work/services.txt" || die "StateService not listed"
for target in "$state" "$context"; do
  status="$(grpcurl -plaintext -d '{"service": ""}' "$target" grpc.health.v1.Health/Check)"
  echo "$status"
  grep -q '"SERVING"' <<<"$status" || die "$target is not SERVING"
done

# ------------------------------------------------------------ a short conversation
# The chart's values grant this ServiceAccount the tenant "default" (ci/kind-values.yaml).
kubectl create serviceaccount -n "$namespace" e2e-operator --dry-run=client -o yaml | kubectl apply -f - >/dev/null
TOKEN="$(kubectl create token -n "$namespace" e2e-operator --audience voiceagent)" \
  bash deploy/kind/conversation.sh "$state" "$context"

log "the agent worker is ready (registered with LiveKit)"
kubectl wait -n "$namespace" --for=condition=Ready pod \
  -l app.kubernetes.io/component=agent,app.kubernetes.io/instance="$release" --timeout=120s

log "passed"
