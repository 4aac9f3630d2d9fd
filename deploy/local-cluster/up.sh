#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, from nothing but the package registries:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet with containerd
# and runc, a CNI bridge, CoreDNS and kube-proxy, all as host processes, with the
# project's images loaded. Leaves KUBECONFIG at $CLUSTER_RUN/pki/admin.kubeconfig.
# down.sh stops it all and restores the host; up.sh runs it first, and on failure.
#
# Needs root, Debian (apt) and Go. Prints `phase seconds` lines on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"

[[ "$(id -u)" == 0 ]] || die "needs root (network namespaces, iptables, containerd)"
phase_start=$SECONDS
phase() { echo "$1 $((SECONDS - phase_start))"; phase_start=$SECONDS; }

install_prerequisites() {
  bash "$root/scripts/install-system-packages.sh"
  bash "$root/scripts/install-system-packages.sh" --check || die "Debian packages are missing"
  bash "$root/scripts/install-tools.sh" kube-apiserver kube-controller-manager kube-scheduler \
    kubelet kube-proxy kubectl coredns helm
}

start_containerd() {
  mkdir -p "$CLUSTER_RUN/containerd" "$CLUSTER_RUN/cni/net.d"
  cat >"$CLUSTER_RUN/containerd/config.toml" <<TOML
version = 2
root = "$CLUSTER_RUN/containerd/root"
state = "$CLUSTER_RUN/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Containers may not lower their OOM score here (the pause container asks for -998).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_RUN/cni/net.d"
TOML
  cat >"$CLUSTER_RUN/cni/net.d/10-pods.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "voiceagent-pods", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "${BRIDGE_IP%.*}.10"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$CLUSTER_RUN/cni/ipam"}},
  {"type": "loopback"}]}
JSON
  start_process containerd /usr/bin/containerd --config "$CLUSTER_RUN/containerd/config.toml"
  wait_for 30 containerd ctr --address "$CONTAINERD_SOCK" version
  # One stream for all images: the layers they share travel once.
  docker_cmd save "$PAUSE_IMAGE" voiceagent-{state,context,agent,mongo-standin,livekit}:e2e |
    ctr --address "$CONTAINERD_SOCK" --namespace k8s.io images import - >/dev/null
}

start_control_plane() {
  local etcd_url=http://127.0.0.1:23790
  start_process etcd /usr/bin/etcd --name local --data-dir "$CLUSTER_RUN/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster local=http://127.0.0.1:23800 --listen-metrics-urls http://127.0.0.1:23810
  wait_for 30 etcd curl -sf "$etcd_url/health"
  start_process kube-apiserver "$TOOLS/kube-apiserver" --etcd-servers="$etcd_url" \
    --bind-address="$BRIDGE_IP" --advertise-address="$BRIDGE_IP" --secure-port=6443 \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --service-account-key-file="$PKI/service-accounts.pub" \
    --service-account-signing-key-file="$PKI/service-accounts.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP
  wait_for 120 kube-apiserver kubectl get --raw /readyz
  start_process kube-controller-manager "$TOOLS/kube-controller-manager" \
    --kubeconfig="$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/service-accounts.key" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR"
  start_process kube-scheduler "$TOOLS/kube-scheduler" --kubeconfig="$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig="$PKI/scheduler.kubeconfig" \
    --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false
}

# CoreDNS answers cluster names on the bridge address; kube-proxy programs Services.
start_cluster_network() {
  cat >"$CLUSTER_RUN/Corefile" <<COREFILE
.:53 {
    bind $BRIDGE_IP
    errors
    ready 127.0.0.1:18181
    health 127.0.0.1:18080
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG local
        pods insecure
    }
    cache 30
    loadbalance
}
COREFILE
  start_process coredns "$TOOLS/coredns" -conf "$CLUSTER_RUN/Corefile"
  start_process kube-proxy "$TOOLS/kube-proxy" --kubeconfig="$PKI/kube-proxy.kubeconfig" \
    --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --hostname-override="$NODE_NAME" \
    --bind-address=127.0.0.1 --metrics-bind-address=127.0.0.1:10249 \
    --healthz-bind-address=127.0.0.1:10256 --conntrack-max-per-core=0
  wait_for 60 CoreDNS curl -sf http://127.0.0.1:18181/ready
}

start_kubelet() {
  mkdir -p "$CLUSTER_RUN/kubelet"
  cat >"$CLUSTER_RUN/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $BRIDGE_IP
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$BRIDGE_IP]
# Pods get cluster DNS only: no search domains or servers of the host.
resolvConf: ""
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
  start_process kubelet "$TOOLS/kubelet" --config="$CLUSTER_RUN/kubelet/config.yaml" \
    --kubeconfig="$PKI/kubelet.kubeconfig" --root-dir="$CLUSTER_RUN/kubelet/root" \
    --node-ip="$BRIDGE_IP" --hostname-override="$NODE_NAME"
  wait_for 120 "node $NODE_NAME Ready" \
    sh -c "'$TOOLS/kubectl' get node '$NODE_NAME' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
}

# No dynamic provisioner: PersistentVolumes on host folders, claimed in any order.
create_volumes() {
  local i
  for i in 1 2 3 4; do
    mkdir -p "$CLUSTER_RUN/volumes/$i" && chmod 1777 "$CLUSTER_RUN/volumes/$i"
    kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-$i}
spec:
  capacity: {storage: 5Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $CLUSTER_RUN/volumes/$i, type: Directory}
YAML
  done
}

bash "$here/down.sh"
trap 'status=$?; ((status)) && { log "cleaning up after the failure (logs: $CLUSTER_RUN)"; bash "$here/down.sh"; }; exit $status' EXIT
rm -rf --one-file-system "$CLUSTER_RUN"
mkdir -p "$CLUSTER_RUN"
install_prerequisites
phase prerequisites
bash "$here/images.sh"
phase images
bash "$here/network.sh" up
bash "$here/pki.sh"
start_containerd
phase containerd
start_control_plane
phase control_plane
start_cluster_network
start_kubelet
create_volumes
wait_for 60 "the default ServiceAccount" kubectl get serviceaccount default
phase node
