#!/usr/bin/env bash
# The images of the local cluster, built by the harness's own dockerd (docker.sh):
#   - the base: Debian bookworm's CPython 3.11 (mmdebstrap), standing in for python:3.11-slim
#   - the project's three images and the stand-ins (deploy/e2e/build-images.sh)
#   - the pause image from Kubernetes' own source
set -euo pipefail
source "$(dirname "$0")/lib.sh"

base_image() {
  local rootfs="$CLUSTER_CACHE/base/bookworm-python3.11.tar"
  docker_cmd image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
  if [[ ! -s "$rootfs" ]]; then
    log "base image: mmdebstrap (once per machine)"
    mkdir -p "$(dirname "$rootfs")"
    # No recommended packages, documentation or translations: a slim image's contents.
    # The merged-usr hook does the /usr merge itself; the usrmerge package would add Perl.
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
      --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
      bookworm "$rootfs.tmp" http://deb.debian.org/debian
    mv "$rootfs.tmp" "$rootfs"
  fi
  docker_cmd import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$rootfs" "$BASE_IMAGE" >/dev/null
}

pause_image() {
  local src work
  docker_cmd image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
  src="$(bash "$root/scripts/go-module-dir.sh" "k8s.io/kubernetes@$(kube_version)")/build/pause/linux/pause.c"
  work="$(mktemp -d)"
  cp "$(dirname "$0")/pause/Dockerfile" "$work/"
  gcc -Os -static -o "$work/pause" "$src"
  docker_cmd build --quiet -t "$PAUSE_IMAGE" "$work" >/dev/null
  rm -rf "$work"
}

# The CA certificates this machine trusts beyond Debian's own (a TLS-intercepting proxy's).
extra_ca_file() {
  local file="$CLUSTER_RUN/extra-ca.pem"
  cat /usr/local/share/ca-certificates/*.crt >"$file" 2>/dev/null || true
  [[ -s "$file" ]] && echo "$file"
}

mkdir -p "$CLUSTER_RUN"
bash "$(dirname "$0")/docker.sh" start
base_image
pause_image
DOCKER="env DOCKER_HOST=unix://$DOCKER_SOCK /usr/bin/docker" PYTHON_IMAGE="$BASE_IMAGE" \
  EXTRA_CA_FILE="$(extra_ca_file || true)" BUILD_NETWORK=host bash "$root/deploy/e2e/build-images.sh"
# Each build leaves the previous images untagged and its cache behind: keep the disk bounded.
docker_cmd image prune --force >/dev/null
docker_cmd builder prune --force --keep-storage 3gb >/dev/null
log "images: $(docker_cmd images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E ':e2e ' | tr '\n' ' ')"
