#!/usr/bin/env bash
# Stops everything up.sh started and restores what it changed on the host: processes,
# pod containers and their network namespaces, mounts, the bridge, iptables rules and
# sysctls. Safe to run at any time, any number of times. Logs stay in $CLUSTER_RUN.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

stop_process kubelet
if [[ -S "$CONTAINERD_SOCK" ]]; then
  for task in $(ctr_k8s tasks list --quiet 2>/dev/null); do
    ctr_k8s tasks kill --all --signal SIGKILL "$task" >/dev/null 2>&1
  done
  sleep 1
  for task in $(ctr_k8s tasks list --quiet 2>/dev/null); do ctr_k8s tasks delete --force "$task" >/dev/null 2>&1; done
fi
for name in kube-proxy coredns kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
  stop_process "$name"
done
bash "$(dirname "$0")/docker.sh" stop
# Whatever still runs from the run folder: container shims, dockerd's containerd.
pkill -9 -f -- "$CLUSTER_RUN/" 2>/dev/null
sleep 0.5

# Pod network namespaces: those with an address on the pod network.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  if ip netns exec "$ns" ip -4 -o addr show 2>/dev/null | grep -q " ${BRIDGE_IP%.*}\."; then
    ip netns delete "$ns"
  fi
done
rm -rf /var/lib/cni/results/voiceagent-pods-* 2>/dev/null
# Mounts under the run folder: kubelet's volumes, containerd's snapshots.
awk -v folder="$CLUSTER_RUN/" 'index($2, folder) == 1 {print $2}' /proc/mounts | sort -r |
  while read -r mount; do umount "$mount" 2>/dev/null || umount -l "$mount"; done
bash "$(dirname "$0")/network.sh" down
exit 0
