#!/usr/bin/env bash
# Builds the Go-based test and ops tools at pinned versions into .tools/bin.
# A tool is rebuilt only when its pinned version changes (a stamp file per tool),
# so the second run of `make test` costs nothing here.
#   scripts/install-tools.sh [all|NAME...]
set -euo pipefail

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
    dir="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -n "$dir" ]]
    cp -r "$dir" "$work/src"
    chmod -R u+w "$work/src"
    echo "$version" >"$work/src/build/version/version.txt"
    cd "$work/src"
    go build -trimpath -ldflags="-s -w" -o "$work/out" "./${pkg#"$module"/}"
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
  builder=build_in_scratch_module
  [[ "$name" == ferretdb ]] && builder=build_from_source_copy
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
