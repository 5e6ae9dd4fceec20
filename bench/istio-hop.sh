#!/usr/bin/env bash
# Latency one Istio mesh hop adds (issue 12), measured through a live cluster under bounded load: the same agent
# (recommendation's image and settings, answering GET /healthz, which calls nothing) reached by a Fortio client
#   plain  with neither side in the mesh: a client pod and a copy of recommendation in a namespace without injection
#   mesh   sidecar to sidecar: a meshed client pod in `agents` to the real recommendation, over mTLS, through the
#          client's outbound and the server's inbound Envoy
# Modes alternate round by round (the machine is shared); each round is BENCH_QPS requests/s over BENCH_CONNECTIONS
# connections for BENCH_SECONDS. Printed per round and as the median over rounds; nothing is asserted.
#
#   KUBECONFIG=... bench/istio-hop.sh        on a cluster with Istio and `kubectl apply -k istio/` done (for example
#                                            scripts/ci/istio-cluster.sh's, or `scripts/cluster.sh up --istio`)
#
# Settings (environment): KUBECONFIG (required), CLUSTER_KUBECTL (default: the kubectl
# scripts/tools/install-kubernetes.sh builds), CLUSTER_PROBE_IMAGE (a Fortio image; default: Fortio's image name
# scripts/cluster.sh import fortio gives), BENCH_ROUNDS (3), BENCH_SECONDS (20), BENCH_QPS (100),
# BENCH_CONNECTIONS (2). The last stdout line is
#   istio-hop: p50 <plain> -> <mesh> ms (+<added>), p99 <plain> -> <mesh> ms (+<added>)
# It creates the namespace istio-bench and the pod agents/bench-client, and deletes both when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${KUBECONFIG:?set KUBECONFIG to a cluster with Istio and istio/ applied}"
ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-20}
QPS=${BENCH_QPS:-100}
CONNECTIONS=${BENCH_CONNECTIONS:-2}
NS=agents
BENCH_NS=istio-bench
KUBECTL=${CLUSTER_KUBECTL:-}
[ -n "$KUBECTL" ] || KUBECTL="$(scripts/tools/install-kubernetes.sh | tail -n1)/kubectl"
# shellcheck disable=SC2016 # the pattern matches a literal ${FORTIO_VERSION:-...}
fortio_version=$(sed -n 's/^FORTIO_VERSION="\${FORTIO_VERSION:-\(.*\)}"$/\1/p' scripts/tools/install-fortio.sh)
PROBE_IMAGE=${CLUSTER_PROBE_IMAGE:-localhost/agent-mesh/fortio:$fortio_version}
k() { "$KUBECTL" "$@"; }
log() { echo "istio-hop: $*" >&2; }

k -n "$NS" get deployment recommendation >/dev/null || { log "no deployment $NS/recommendation: kubectl apply -k istio/ first"; exit 1; }
k get namespace "$BENCH_NS" >/dev/null 2>&1 && { log "namespace $BENCH_NS exists: another run, or a leftover (kubectl delete namespace $BENCH_NS)"; exit 1; }
tmp=$(mktemp -d)
cleanup() {
  k delete namespace "$BENCH_NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  k -n "$NS" delete pod bench-client serviceaccount/bench-client --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

client() {   # client NS NAME: a Fortio pod with its own service account (restricted Pod Security profile)
  k -n "$1" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: $2}
automountServiceAccountToken: false
---
apiVersion: v1
kind: Pod
metadata: {name: $2, labels: {app: $2}}
spec:
  serviceAccountName: $2
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: fortio
      image: $PROBE_IMAGE
      imagePullPolicy: IfNotPresent
      resources: {requests: {cpu: 50m, memory: 32Mi}}
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
EOF
}

k create namespace "$BENCH_NS" >/dev/null
client "$BENCH_NS" client-plain
client "$NS" bench-client
# recommendation's Deployment as users apply it, minus the mesh: its own labels, no annotations (so no injection
# settings), the namespace's default service account
k -n "$NS" get deployment recommendation -o json | jq --arg ns "$BENCH_NS" '
  {apiVersion, kind, metadata: {name: "rec-plain", namespace: $ns},
   spec: (.spec | .replicas = 1 | .selector.matchLabels = {app: "rec-plain"}
     | .template.metadata = {labels: {app: "rec-plain"}} | .template.spec.serviceAccountName = "default")}' \
  | k apply -f - >/dev/null
k -n "$BENCH_NS" expose deployment rec-plain --port 8000 --target-port 8000 >/dev/null
k -n "$BENCH_NS" rollout status deployment/rec-plain --timeout=120s >/dev/null
k -n "$BENCH_NS" wait --for=condition=Ready pod/client-plain --timeout=90s >/dev/null
k -n "$NS" wait --for=condition=Ready pod/bench-client --timeout=120s >/dev/null
[ -z "$(k -n "$BENCH_NS" get pods -o jsonpath='{.items[*].spec.containers[?(@.name=="istio-proxy")].name}{.items[*].spec.initContainers[?(@.name=="istio-proxy")].name}')" ] \
  || { log "the plain side got a sidecar: namespace $BENCH_NS must not be injected"; exit 1; }

run() {   # run NS POD URL OUT [SECONDS]: one bounded load, Fortio's JSON result in OUT
  k -n "$1" exec "$2" -c fortio -- fortio load -quiet -json - -qps "$QPS" -c "$CONNECTIONS" -t "${5:-$SECONDS_PER_RUN}s" \
    -timeout 5s "$3" >"$4" 2>"$4.err" || { log "fortio failed: $(tail -3 "$4.err")"; exit 1; }
}
summary() {   # summary OUT: "<p50 ms> <p99 ms> <requests> <non-200>"
  jq -r '[(.DurationHistogram.Percentiles[] | select(.Percentile == 50) | .Value * 1000),
          (.DurationHistogram.Percentiles[] | select(.Percentile == 99) | .Value * 1000),
          ([.RetCodes[]] | add), ([.RetCodes | to_entries[] | select(.key != "200") | .value] | add // 0)]
         | map(. * 1000 | round / 1000 | tostring) | join(" ")' "$1"
}
plain_url="http://rec-plain.$BENCH_NS.svc.cluster.local:8000/healthz"
mesh_url="http://recommendation.$NS.svc.cluster.local:8000/healthz"
# a short warm-up of both paths (connections, Envoy's first requests), not counted
run "$BENCH_NS" client-plain "$plain_url" "$tmp/warm-plain" 3
run "$NS" bench-client "$mesh_url" "$tmp/warm-mesh" 3
echo "round mode  p50_ms  p99_ms  requests  non_200   ($QPS req/s, $CONNECTIONS connections, ${SECONDS_PER_RUN} s)"
for round in $(seq "$ROUNDS"); do
  run "$BENCH_NS" client-plain "$plain_url" "$tmp/plain-$round"
  echo "$round     plain $(summary "$tmp/plain-$round")" | tee -a "$tmp/plain.tsv"
  run "$NS" bench-client "$mesh_url" "$tmp/mesh-$round"
  echo "$round     mesh  $(summary "$tmp/mesh-$round")" | tee -a "$tmp/mesh.tsv"
done
failures=$(cat "$tmp/plain.tsv" "$tmp/mesh.tsv" | awk '{ s += $6 } END { print s + 0 }')
[ "$failures" = 0 ] || log "$failures requests were not answered 200: the figures include them"
median() { awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
p50p=$(median "$tmp/plain.tsv" 3); p50m=$(median "$tmp/mesh.tsv" 3)
p99p=$(median "$tmp/plain.tsv" 4); p99m=$(median "$tmp/mesh.tsv" 4)
awk -v a="$p50p" -v b="$p50m" -v c="$p99p" -v d="$p99m" \
  'BEGIN { printf "istio-hop: p50 %.2f -> %.2f ms (+%.2f), p99 %.2f -> %.2f ms (+%.2f)\n", a, b, b - a, c, d, d - c }'
