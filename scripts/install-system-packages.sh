#!/usr/bin/env bash
# The Debian packages the tests use, installed when we may (root and apt), else named:
#   espeak-ng                      spoken test audio (tests/support/speech.py)
#   docker.io containerd runc ...  the local Kubernetes cluster and the compose stack
#                                  (deploy/local-cluster, tests/cluster, tests/test_compose.py)
# No package may start a daemon meanwhile: the tests start their own, and stop them.
#   install-system-packages.sh [--check]   (--check: install nothing, exit 1 if one is missing)
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
packages=(espeak-ng docker.io containerd runc containernetworking-plugins iptables
  mmdebstrap etcd-server conntrack docker-compose)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
((${#missing[@]})) || exit 0
if [[ "${1:-}" == --check ]]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  exit 1
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: missing Debian packages ${missing[*]}; the voice, cluster and compose tests" \
    "need them (sudo apt-get install ${missing[*]})" >&2
  exit 0
fi
echo "setup: installing ${missing[*]} (apt-get)" >&2
created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
trap 'if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
