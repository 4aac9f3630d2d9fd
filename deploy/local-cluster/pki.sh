#!/usr/bin/env bash
# A fresh certificate authority and the certificates and kubeconfigs of one cluster run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
mkdir -p "$PKI"
cd "$PKI"

openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
  -subj /CN=voiceagent-local-cluster-ca 2>/dev/null

# certificate NAME SUBJECT [SUBJECT_ALT_NAMES]: a client certificate, or a server one
# (which is a client one too) when alternative names are given.
certificate() {
  local name="$1" subject="$2" sans="${3:-}"
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject" 2>/dev/null
  {
    echo basicConstraints=CA:FALSE
    echo keyUsage=digitalSignature,keyEncipherment
    if [[ -n "$sans" ]]; then
      echo extendedKeyUsage=serverAuth,clientAuth
      echo "subjectAltName=$sans"
    else
      echo extendedKeyUsage=clientAuth
    fi
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

certificate apiserver /CN=kube-apiserver \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP,IP:$BRIDGE_IP"
certificate admin /O=system:masters/CN=admin
certificate apiserver-kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client
certificate controller-manager /CN=system:kube-controller-manager
certificate scheduler /CN=system:kube-scheduler
certificate kube-proxy /CN=system:kube-proxy
certificate node-client "/O=system:nodes/CN=system:node:$NODE_NAME"
certificate kubelet "/CN=$NODE_NAME" "DNS:$NODE_NAME,IP:$BRIDGE_IP"
openssl genrsa -out service-accounts.key 2048 2>/dev/null
openssl rsa -in service-accounts.key -pubout -out service-accounts.pub 2>/dev/null

# kubeconfig NAME CERTIFICATE
kubeconfig() {
  cat >"$1.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster: {server: "https://$BRIDGE_IP:6443", certificate-authority: $PKI/ca.crt}
users:
  - name: $1
    user: {client-certificate: $PKI/$2.crt, client-key: $PKI/$2.key}
contexts:
  - name: local
    context: {cluster: local, user: $1}
current-context: local
YAML
}
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kube-proxy kube-proxy
kubeconfig kubelet node-client
