#!/usr/bin/env bash
# Builds the Go-based test and ops tools at pinned versions into .tools/bin.
# A tool is rebuilt only when its pinned version changes (a stamp file per tool),
# so the second run of `make test` costs nothing here.
#   scripts/install-tools.sh [all|NAME...]
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;; esac

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.tools/bin"
stamps="$root/.tools/stamps"
# Built binaries are also kept per version in a user cache, so a fresh clone on the same
# machine copies them instead of compiling again.
cache="${VOICEAGENT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voiceagent-backbone/tools}"
mkdir -p "$bin" "$stamps" "$cache"

# name|module|package (main)|version
# FerretDB embeds build/version/version.txt, which its release process generates and the
# module zip lacks: it is built from a copy of its module source with that file written.
tools=(
  "ferretdb|github.com/FerretDB/FerretDB|github.com/FerretDB/FerretDB/cmd/ferretdb|v1.24.2"
  "livekit-server|github.com/livekit/livekit-server|github.com/livekit/livekit-server/cmd/server|v1.13.5"
  "helm|helm.sh/helm/v3|helm.sh/helm/v3/cmd/helm|v3.19.0"
  "grpcurl|github.com/fullstorydev/grpcurl|github.com/fullstorydev/grpcurl/cmd/grpcurl|v1.9.3"
  "kubeconform|github.com/yannh/kubeconform|github.com/yannh/kubeconform/cmd/kubeconform|v0.7.0"
  # The single-node cluster of `make e2e` (deploy/local-cluster): Kubernetes server
  # binaries and a CoreDNS with only the plugins cluster DNS needs.
  "kube-apiserver|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|v1.35.4"
  "kube-controller-manager|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|v1.35.4"
  "kube-scheduler|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|v1.35.4"
  "kubelet|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kubelet|v1.35.4"
  "kube-proxy|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-proxy|v1.35.4"
  "kubectl|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kubectl|v1.35.4"
  "coredns|github.com/coredns/coredns|deploy/local-cluster/coredns|v1.12.4"
)

if ! command -v go >/dev/null 2>&1; then
  echo "install-tools: 'go' not found; tests that need Go-built tools are skipped (and fail under CI=true)" >&2
  exit 0
fi

wanted() {
  [[ $# -eq 0 ]] && return 0
  local n
  for n in "${selected[@]}"; do [[ "$n" == all || "$n" == "$1" ]] && return 0; done
  return 1
}
selected=("${@:-all}")

export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"

# A throw-away module that requires the tool at its pinned version. Unlike
# `go install pkg@version`, this does not list the module's versions to look up
# deprecations, which the module proxy refuses for some modules.
build_in_scratch_module() {
  local work="$1" module="$2" pkg="$3" version="$4"
  (
    cd "$work" &&
      go mod init tools.local/build >/dev/null 2>&1 &&
      go mod edit -require="$module@$version" &&
      go build -trimpath -ldflags="-s -w" -o "$work/out" "$pkg"
  )
}

# The module's own source (from the module proxy) as the main module, with the version
# file its release tooling would generate.
build_from_source_copy() {
  local work="$1" module="$2" pkg="$3" version="$4" dir
  (
    set -e
    dir="$(bash "$root/scripts/go-module-dir.sh" "$module@$version")"
    cp -r "$dir" "$work/src"
    chmod -R u+w "$work/src"
    echo "$version" >"$work/src/build/version/version.txt"
    cd "$work/src"
    go build -trimpath -ldflags="-s -w" -o "$work/out" "./${pkg#"$module"/}"
  )
}

# k8s.io/kubernetes cannot be required as it is: its go.mod replaces its 31 staging
# modules (k8s.io/api, ...) with folders of its own repository. A wrapper module requires
# it and points each staging module at its published tag (v1.35.4 -> v0.35.4). The
# version variables are set as the release build sets them: the API server reports its
# version to `helm install`, and the chart's kubeVersion needs a real one.
build_kubernetes() {
  local work="$1" module="$2" pkg="$3" version="$4" dir go_version ldflags="-s -w" kv
  (
    set -e
    dir="$(bash "$root/scripts/go-module-dir.sh" "$module@$version")"
    go_version="$(awk '/^go /{print $2; exit}' "$dir/go.mod")"
    cd "$work"
    {
      printf 'module tools.local/kubernetes\n\ngo %s\n\nrequire %s %s\n\nreplace (\n' \
        "$go_version" "$module" "$version"
      awk -v tag="v0.${version#v1.}" '$2 == "=>" && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " " tag}' \
        "$dir/go.mod"
      printf ')\n'
    } >go.mod
    for kv in "gitVersion=$version" "gitMajor=1" "gitMinor=$(cut -d. -f2 <<<"$version")" \
      "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
      ldflags="$ldflags -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
    done
    go get "$pkg@$version"
    go build -trimpath -ldflags="$ldflags" -o "$work/out" "$pkg"
  )
}

# CoreDNS's own main links every plugin; ours (deploy/local-cluster/coredns/main.go)
# links the ten that cluster DNS uses, which halves the build.
build_coredns() {
  local work="$1" module="$2" pkg="$3" version="$4"
  (
    set -e
    cp "$root/$pkg/main.go" "$work/main.go"
    cd "$work"
    go mod init tools.local/coredns >/dev/null 2>&1
    go mod edit -require="$module@$version"
    go mod tidy >/dev/null 2>&1
    go build -trimpath -ldflags="-s -w" -o "$work/out" .
  )
}

failed=0
for entry in "${tools[@]}"; do
  IFS='|' read -r name module pkg version <<<"$entry"
  wanted "$name" || continue
  stamp="$stamps/$name"
  if [[ -x "$bin/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    continue
  fi
  cached="$cache/$name-$version"
  if [[ -x "$cached" ]]; then
    cp "$cached" "$bin/$name"
    echo "$version" >"$stamp"
    echo "install-tools: $name $version from the machine's tool cache" >&2
    continue
  fi
  echo "install-tools: building $name $version (once; reused on later runs)" >&2
  start=$(date +%s)
  work="$(mktemp -d)"
  case "$name" in
    ferretdb) builder=build_from_source_copy ;;
    kube*) builder=build_kubernetes ;;
    coredns) builder=build_coredns ;;
    *) builder=build_in_scratch_module ;;
  esac
  if "$builder" "$work" "$module" "$pkg" "$version"; then
    mv "$work/out" "$bin/$name"
    cp "$bin/$name" "$cache/$name-$version.tmp" && mv "$cache/$name-$version.tmp" "$cache/$name-$version"
    echo "$version" >"$stamp"
    echo "install-tools: built $name $version in $(($(date +%s) - start))s" >&2
  else
    echo "install-tools: FAILED to build $name $version" >&2
    failed=1
  fi
  rm -rf "$work"
done
exit "$failed"
