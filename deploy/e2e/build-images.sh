#!/usr/bin/env bash
# Builds every image the end-to-end cluster runs, tagged TAG (default e2e):
#   voiceagent-state, voiceagent-context, voiceagent-agent   deploy/docker/Dockerfile
#   voiceagent-mongo-standin   FerretDB as `mongod` (the chart's development MongoDB)
#   voiceagent-livekit         the pinned livekit-server (deploy/e2e/livekit.yaml)
# The stand-ins use the project's own Go-built binaries (scripts/install-tools.sh), so
# nothing comes from Docker Hub.
#
# Environment:
#   DOCKER          the docker command (default: docker)
#   TAG             image tag (default: e2e)
#   PYTHON_IMAGE    base image with CPython 3.11 and pip (default: the Dockerfile's)
#   EXTRA_CA_FILE   PEM file of extra CA certificates for a TLS-intercepting proxy
#   BUILD_NETWORK   the builds' network (default: the daemon's; `host` without a bridge)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
read -r -a docker <<<"${DOCKER:-docker}"
tag="${TAG:-e2e}"
export DOCKER_BUILDKIT=1

args=()
[[ -n "${PYTHON_IMAGE:-}" ]] && args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
[[ -n "${EXTRA_CA_FILE:-}" ]] && args+=(--secret "id=extra-ca,src=$EXTRA_CA_FILE")
[[ -n "${BUILD_NETWORK:-}" ]] && args+=(--network "$BUILD_NETWORK")

for target in state context agent; do
  echo "build-images: voiceagent-$target:$tag" >&2
  "${docker[@]}" build --quiet "${args[@]}" -f deploy/docker/Dockerfile --target "$target" \
    -t "voiceagent-$target:$tag" . >/dev/null
done

# A stand-in's build context: its folder plus the binary, in a scratch folder.
standin() {
  local name="$1" image="$2" binary="$3" context
  context="$(mktemp -d)"
  cp -r "deploy/e2e/standins/$name/." "$context/"
  cp "$root/.tools/bin/$binary" "$context/$binary" ||
    { echo "build-images: $binary is not built: run scripts/install-tools.sh $binary" >&2; return 1; }
  echo "build-images: $image:$tag" >&2
  "${docker[@]}" build --quiet --build-arg "BASE_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}" \
    -t "$image:$tag" "$context" >/dev/null
  rm -rf "$context"
}
standin mongo voiceagent-mongo-standin ferretdb
standin livekit voiceagent-livekit livekit-server
