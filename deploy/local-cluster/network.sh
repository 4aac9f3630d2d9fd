#!/usr/bin/env bash
# The pod network on the host, and putting the host back as it was:
#   network.sh up     bridge, sysctls and forwarding rules (saving what they replace)
#   network.sh down   restore the saved iptables rules and sysctls, remove the bridge
# Pods reach each other, Services and this host's bridge address; nothing they send is
# forwarded off the machine (no masquerade, and a reject rule for anything leaving the
# bridge).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
saved="$CLUSTER_STATE/host"
sysctls=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables)

up() {
  [[ -e "$saved" ]] && die "$saved exists: run network.sh down first"
  mkdir -p "$saved"
  iptables-save >"$saved/iptables"
  ip6tables-save >"$saved/ip6tables"
  for name in "${sysctls[@]}"; do sysctl -n "$name" >"$saved/$name"; done

  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Forwarding between pods and to Service addresses; bridged traffic through iptables so
  # kube-proxy's rules apply to pod-to-Service traffic on the same bridge.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  iptables -N VOICEAGENT-PODS
  iptables -A VOICEAGENT-PODS -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  iptables -A VOICEAGENT-PODS -i "$BRIDGE" -j REJECT --reject-with icmp-net-prohibited
  iptables -A VOICEAGENT-PODS -o "$BRIDGE" -j REJECT --reject-with icmp-net-prohibited
  iptables -I FORWARD 1 -j VOICEAGENT-PODS
}

# restore iptables|ip6tables FILE: the tables as saved; a table that did not exist then
# (kube-proxy's nat rules on a host without any, say) is emptied, its policies ACCEPT.
restore() {
  local command="$1" file="$2" table
  {
    cat "$file"
    for table in $("$command-save" | sed -n 's/^\*//p'); do
      grep -qx "\*$table" "$file" && continue
      echo "*$table"
      "$command-save" -t "$table" | awk '/^:/ && $2 != "-" {print $1 " ACCEPT [0:0]"}'
      echo COMMIT
    done
  } | "$command-restore"
}

down() {
  if [[ -d "$saved" ]]; then
    restore iptables "$saved/iptables"
    restore ip6tables "$saved/ip6tables"
    for name in "${sysctls[@]}"; do sysctl -qw "$name=$(cat "$saved/$name")"; done
    rm -rf "$saved"
  fi
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE"; fi
}

"$@"
