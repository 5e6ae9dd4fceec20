#!/usr/bin/env bash
# Istio add-on (scripts/cluster.sh up --istio): istiod, the ingress and egress gateways and the Istio CNI node agent,
# from the images this repository builds (scripts/cluster/images/istio-*), and Jaeger as the tracing backend
# (jaeger.yaml; scripts/cluster/images/jaeger), installed with the settings of
# istio/install/istio-operator.yaml through `istioctl manifest generate` (the same charts `istioctl install` uses;
# it cannot pull images here) and the cluster's overlay cluster.yaml. Returns once istiod, the CNI agent, both
# gateways and Jaeger are Ready and istiod's injection webhook injects a sidecar.
#
# The CNI node agent works on the node's files: it copies the istio-cni plugin into the node's CNI binary directory,
# chains it into the node's CNI configuration, and keeps the plugin's kubeconfig and sockets in a run directory.
# All three are the cluster's own directories under its state directory (CLUSTER_DIR, which down removes), never
# /opt/cni, /etc/cni or /var/run/istio-cni on this machine; the run directory is mounted at the same path in the
# agent's container because the plugin, which the container runtime runs on the node, reads the path the agent
# wrote into the plugin configuration.
# Environment (from cluster.sh): KUBECONFIG, KUBECTL, CLUSTER_DIR, CLUSTER_CNI_BIN_DIR, CLUSTER_CNI_CONF_DIR,
# CLUSTER_IMAGE_ISTIO_PILOT, CLUSTER_IMAGE_ISTIO_PROXYV2, CLUSTER_IMAGE_ISTIO_INSTALL_CNI, CLUSTER_IMAGE_JAEGER.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../../.." && pwd)
log() { echo "istio: $*" >&2; }
k() { "$KUBECTL" "$@"; }
started=$SECONDS

istioctl=$("$root/scripts/tools/install-istioctl.sh" | tail -n1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# (ambient's netns directory is mounted only with ambient on; it points under the run directory all the same)
run_dir="$CLUSTER_DIR/istio-cni"

"$istioctl" manifest generate -f "$root/istio/install/istio-operator.yaml" -f "$here/cluster.yaml" \
  --set "values.pilot.image=$CLUSTER_IMAGE_ISTIO_PILOT" \
  --set "values.global.proxy.image=$CLUSTER_IMAGE_ISTIO_PROXYV2" \
  --set "values.global.proxy_init.image=$CLUSTER_IMAGE_ISTIO_PROXYV2" \
  --set "values.cni.image=$CLUSTER_IMAGE_ISTIO_INSTALL_CNI" \
  --set "values.cni.cniBinDir=$CLUSTER_CNI_BIN_DIR" \
  --set "values.cni.cniConfDir=$CLUSTER_CNI_CONF_DIR" \
  --set "values.cni.cniNetnsDir=$run_dir/netns" \
  --set "values.cni.env.CNI_AGENT_RUN_DIR=$run_dir" >"$tmp/generated.yaml"
# The chart mounts the run directory from the fixed host path /var/run/istio-cni (its only two occurrences: the
# hostPath and the mountPath); both become the cluster's own directory.
[ "$(grep -c '/var/run/istio-cni$' "$tmp/generated.yaml")" = 2 ] \
  || { log "the generated CNI DaemonSet does not mount /var/run/istio-cni as expected"; exit 1; }
sed "s|/var/run/istio-cni\$|$run_dir|" "$tmp/generated.yaml" >"$tmp/istio.yaml"
# CRDs first (and established), so every object that names one is accepted; then everything else.
python3 - "$tmp/istio.yaml" "$tmp/crds.yaml" "$tmp/rest.yaml" <<'PY'
import sys
docs = [d for d in open(sys.argv[1]).read().split("\n---\n") if d.strip()]
crds = [d for d in docs if "\nkind: CustomResourceDefinition\n" in "\n" + d + "\n"]
rest = [d for d in docs if d not in crds]
open(sys.argv[2], "w").write("\n---\n".join(crds) + "\n")
open(sys.argv[3], "w").write("\n---\n".join(rest) + "\n")
PY
k create namespace istio-system --dry-run=client -o yaml | k apply -f - >/dev/null
k apply --server-side --force-conflicts -f "$tmp/crds.yaml" >/dev/null
k wait --for condition=established --timeout=60s -f "$tmp/crds.yaml" >/dev/null
k apply --server-side --force-conflicts -f "$tmp/rest.yaml" >/dev/null
log "applied $(grep -c '^kind:' "$tmp/istio.yaml") objects ($(grep -c '^kind: CustomResourceDefinition' "$tmp/istio.yaml") CRDs)"

sed "s|@@IMAGE@@|$CLUSTER_IMAGE_JAEGER|" "$here/jaeger.yaml" | k apply -f - >/dev/null

k -n istio-system rollout status daemonset/istio-cni-node --timeout=120s >&2
k -n istio-system rollout status deployment/istiod --timeout=180s >&2
k -n istio-system rollout status deployment/istio-ingressgateway --timeout=120s >&2
k -n istio-system rollout status deployment/istio-egressgateway --timeout=120s >&2
k -n istio-system rollout status deployment/jaeger --timeout=120s >&2

# The webhook is live once istiod has written its CA into the webhook configuration and answers: a server-side
# dry run of a pod that asks for injection must come back with the istio-proxy container.
probe() {
  k -n default create --dry-run=server -o jsonpath='{range .spec.initContainers[*]}{.name}{" "}{end}{range .spec.containers[*]}{.name}{" "}{end}' \
    -f - <<'POD'
apiVersion: v1
kind: Pod
metadata:
  generateName: istio-injection-probe-
  labels: {sidecar.istio.io/inject: "true"}
spec:
  containers:
    - {name: app, image: localhost/agent-mesh/istio-injection-probe:none}
POD
}
deadline=$((SECONDS + 60))
until containers=$(probe 2>/dev/null) && [[ " $containers " == *" istio-proxy "* ]]; do
  [ "$SECONDS" -lt "$deadline" ] || { log "istiod's injection webhook does not inject (containers: '${containers:-}')"; exit 1; }
  sleep 1
done
log "control plane ready in $((SECONDS - started))s: injected containers of a probe pod: $containers"
