#!/usr/bin/env bash
# Installs the chart on the cluster kubectl points at, as a user would, then `helm test`:
#   1. the CRDs the chart's optional resources use (prometheus-operator, KEDA), from the
#      pinned Go modules (the module proxy serves the repositories' files)
#   2. the release namespace, labelled for the `restricted` Pod Security Standard
#   3. the development livekit-server (deploy/e2e/livekit.yaml), its webhooks pointed at
#      the release's recovery_svc
#   4. helm upgrade --install --wait with VALUES, then helm test
# Shared by deploy/kind/e2e.sh and the local cluster (tests/cluster); the images must be
# in the cluster already. Prints `phase seconds` lines on stdout.
#
#   deploy/e2e/install.sh [VALUES]   (default: the chart's ci/kind-values.yaml)
# Environment: RELEASE (va), NAMESPACE (voice), HELM and KUBECTL (commands).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
chart=deploy/helm/voiceagent
values="${1:-$chart/ci/kind-values.yaml}"
release="${RELEASE:-va}"
namespace="${NAMESPACE:-voice}"
helm="${HELM:-$root/.tools/bin/helm}"
kubectl="${KUBECTL:-kubectl}"
prometheus_operator=github.com/prometheus-operator/prometheus-operator@v0.93.0
keda=github.com/kedacore/keda/v2@v2.20.1

phase_start=$SECONDS
phase() { echo "$1 $((SECONDS - phase_start))"; phase_start=$SECONDS; }
module_dir() { bash scripts/go-module-dir.sh "$1"; }

crds="$(module_dir "$prometheus_operator")/example/prometheus-operator-crd"
$kubectl apply --server-side -f "$crds/monitoring.coreos.com_servicemonitors.yaml" \
  -f "$crds/monitoring.coreos.com_prometheusrules.yaml" \
  -f "$(module_dir "$keda")/config/crd/bases/keda.sh_scaledobjects.yaml" >/dev/null
$kubectl wait --for=condition=Established --timeout=60s \
  crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com \
  crd/scaledobjects.keda.sh >/dev/null
phase crds

$kubectl create namespace "$namespace" --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
$kubectl label --overwrite namespace "$namespace" pod-security.kubernetes.io/enforce=restricted >/dev/null
# livekit-server's webhooks go to this release's recovery_svc (the chart's fullname).
fullname="$release-voiceagent"
[[ "$release" == *voiceagent* ]] && fullname="$release"
sed "s|va-voiceagent-recovery\.voice\.svc|$fullname-recovery.$namespace.svc|" deploy/e2e/livekit.yaml |
  $kubectl apply -f - >/dev/null
$kubectl rollout status --namespace livekit deployment/livekit-server --timeout=180s >/dev/null
phase livekit

"$helm" upgrade --install "$release" "$chart" --namespace "$namespace" --values "$values" \
  --wait --timeout 10m >/dev/null
phase helm_install

"$helm" test "$release" --namespace "$namespace" --timeout 5m >&2
phase helm_test
