#!/usr/bin/env bash
# Cluster DNS add-on (always installed by scripts/cluster.sh up): apply coredns.yaml, wait until the Deployment is
# available and the kube-dns Service answers from the node.
# Environment (from cluster.sh): KUBECONFIG, KUBECTL, CLUSTER_SH, CLUSTER_DNS_IP, CLUSTER_DOMAIN, CLUSTER_IMAGE_COREDNS.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sed -e "s|@@IMAGE@@|$CLUSTER_IMAGE_COREDNS|" -e "s|@@DNS_IP@@|$CLUSTER_DNS_IP|" \
  -e "s|@@CLUSTER_DOMAIN@@|$CLUSTER_DOMAIN|" "$here/coredns.yaml" | "$KUBECTL" apply -f - >&2
if ! "$KUBECTL" -n kube-system rollout status deployment/coredns --timeout=120s >&2; then
  "$KUBECTL" -n kube-system get pods -l k8s-app=kube-dns -o wide >&2
  "$KUBECTL" -n kube-system get events --sort-by=.lastTimestamp 2>&1 | tail -n 8 >&2
  exit 1
fi
# Through the Service, from the node: the answer for the API server's Service must be its cluster IP.
want=$("$KUBECTL" -n default get service kubernetes -o jsonpath='{.spec.clusterIP}')
deadline=$((SECONDS + 30))
until got=$("$CLUSTER_SH" exec dig +time=1 +tries=1 +short "@$CLUSTER_DNS_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN" A) \
  && [ "$got" = "$want" ]; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "coredns: kubernetes.default did not resolve to $want (got '${got:-}')" >&2; exit 1; }
  sleep 0.5
done
echo "coredns: kubernetes.default.svc.$CLUSTER_DOMAIN -> $got" >&2
