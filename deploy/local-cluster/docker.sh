#!/usr/bin/env bash
# The harness's own dockerd, beside any other on the machine:
#   docker.sh start   unless it already answers on $CLUSTER_RUN/docker.sock
#   docker.sh stop
# Its layers stay in $CLUSTER_CACHE/docker, so builds after the first take seconds. No
# bridge, NAT or iptables rules of its own: builds use the host's network
# (`--network host`), and compose networks reach nothing off the machine.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

start() {
  docker_cmd info >/dev/null 2>&1 && return 0
  mkdir -p "$CLUSTER_CACHE/docker" "$CLUSTER_RUN/docker-exec"
  start_process dockerd /usr/sbin/dockerd --host "unix://$DOCKER_SOCK" \
    --data-root "$CLUSTER_CACHE/docker" --exec-root "$CLUSTER_RUN/docker-exec" \
    --pidfile "$CLUSTER_RUN/docker-exec/dockerd.pid" --bridge none --iptables=false \
    --ip-masq=false --exec-opt native.cgroupdriver=cgroupfs
  wait_for 60 dockerd docker_cmd info
}

stop() {
  stop_process dockerd
  # dockerd keeps its data folder as a private mount while it runs.
  awk -v folder="$CLUSTER_CACHE/docker" 'index($2, folder) == 1 {print $2}' /proc/mounts |
    sort -r | while read -r mount; do umount "$mount" 2>/dev/null || umount -l "$mount"; done
}

"$@"
