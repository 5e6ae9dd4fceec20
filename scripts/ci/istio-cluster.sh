#!/usr/bin/env bash
# Istio area check (issue 12): istio/ enforced by the real istiod and Envoy sidecars on live pods.
#
#   scripts/ci/istio-cluster.sh                      brings up this machine's cluster instance "istio" with the Istio
#                                                    add-on (scripts/cluster.sh up --istio), runs the checks, and takes
#                                                    the instance down again
#   KUBECONFIG=~/.kube/config scripts/ci/istio-cluster.sh   the same checks against any cluster with Istio 1.30
#                                                    installed from istio/install/istio-operator.yaml
#
#  1. kubectl apply -k istio/: sidecars injected by istiod's webhook (CNI, no NET_ADMIN), every pod Ready, every
#     sidecar's Envoy accepted every update istiod sent; GET /recommend through the ingress gateway = seed contract
#  2. mTLS STRICT: plaintext to data from a pod outside the mesh gets no answer; recommendation's sidecar holds the
#     SPIFFE identity spiffe://cluster.local/ns/agents/sa/recommendation, checks data's, and data's sidecar
#     requires a client certificate and counts the handshakes
#  3. AuthorizationPolicy: a meshed pod with another service account gets 403 from data; recommendation gets 200
#  4. retries and timeouts: data failing (FAULT_STATUS) is tried 1 + attempts times per call; data slow
#     (FAULT_DELAY) is cut at perTryTimeout per try and at the route timeout overall
#  5. outlier detection: a failing third data replica is ejected (Envoy stats), callers see no error, and it gets no
#     traffic afterwards (recommendation's own breakers closed first: an earlier check may have left them open)
#  6. canary (deploy/istio-canary): through the gateway, v1/v2 shares within binomial tolerance of the weights, counted
#     by the pods that answered and by the x-recommendation-version header the canary's routes set
#  7. istio/examples/fault-*.yaml applied and removed: abort and delay shares as declared, none after removal
#  8. trace context: one trace id across the gateway, recommendation and data (spans in the tracing backend)
#  9. rolling restart of data and of recommendation under load, with native sidecars (Kubernetes >= 1.33) and with classic ones: failed
#     requests reported, goal 0
# Figures: control-plane memory (istiod) and one sidecar's, the latency one mesh hop adds (p50/p99, one short round
# of bench/istio-hop.sh), printed as notes.
#
# Environment: KUBECONFIG, CLUSTER_KUBECTL (default: the kubectl scripts/tools/install-kubernetes.sh builds),
# CLUSTER_PROBE_IMAGE (a Fortio image, default: scripts/cluster.sh import fortio), ISTIO_LOAD_SECONDS (bound of the
# load around each rollout, default 120: the load ends 5 s after the rollout's old pods are gone), ISTIO_CHECKS (the
# checks to run after check 1, in order, repeats allowed, e.g. "4 5 5 5"; default all: see the end of the script),
# AGENT_MESH_CACHE.
# Last line: "istio-cluster: N passed, M failed, K skipped"; exit 0 only when nothing failed.
# `[ test ] && ok ... || not_ok ...` is used as if-then-else throughout: ok only echoes and cannot fail. The checks
# are functions called by name from ISTIO_CHECKS (SC2317: shellcheck cannot see those calls).
# shellcheck disable=SC2015,SC2317
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=scripts/ci/lib/fortio-run.sh
. scripts/ci/lib/fortio-run.sh
# shellcheck source=scripts/ci/lib/steps.sh
. scripts/ci/lib/steps.sh

CONTRACT='{"recommendation":"Based on data","data":{"processed_data":"some_insights"}}'
NS=agents
PROBE_NS=istio-probe
INSTANCE=istio
LOAD_SECONDS=${ISTIO_LOAD_SECONDS:-120}
REC_SPIFFE=spiffe://cluster.local/ns/$NS/sa/recommendation
DATA_SPIFFE=spiffe://cluster.local/ns/$NS/sa/data

started=$SECONDS
passed=0
failed=0
skipped=0
notes=()
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
not_ok() { failed=$((failed + 1)); echo "FAIL - $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP - $*"; }
note() { notes+=("$*"); echo "     . $*"; }
log() { echo "ci/istio-cluster: $*" >&2; }
# within K N P: true when K successes of N trials are within 4 standard deviations of N*P (a false alarm about
# once in 16 000 runs).
within() { awk -v k="$1" -v n="$2" -v p="$3" 'BEGIN { m = n * p; s = sqrt(n * p * (1 - p)); exit !(k >= m - 4 * s && k <= m + 4 * s) }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

tmp=$(mktemp -d)
own=0
background=()

KUBECTL=${CLUSTER_KUBECTL:-}
[ -n "$KUBECTL" ] || KUBECTL="$(scripts/tools/install-kubernetes.sh | tail -n1)/kubectl"
k() { "$KUBECTL" "$@"; }
kn() { "$KUBECTL" -n "$NS" "$@"; }
cluster() { AGENT_MESH_CLUSTER=$INSTANCE scripts/cluster.sh "$@"; }

diagnostics() {
  echo "---- diagnostics"
  k get pods -A -o wide 2>&1 | head -40 || true
  k get events -A --sort-by=.lastTimestamp 2>&1 | tail -25 || true
  local pod
  for pod in $(kn get pods -o name 2>/dev/null | head -6); do
    echo "---- logs $pod (istio-proxy)"
    kn logs "$pod" -c istio-proxy --tail=10 2>&1 || true
  done
  echo "---- logs istiod"
  k -n istio-system logs deployment/istiod --tail=20 2>&1 || true
}

finish() {
  local rc=$? pid
  set +e
  step_done
  for pid in "${background[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  { [ "$rc" != 0 ] || [ "$failed" != 0 ]; } && diagnostics
  if [ "$own" = 1 ]; then
    step "down: the instance $INSTANCE"
    local t=$SECONDS
    if cluster down; then ok "scripts/cluster.sh down ($INSTANCE) in $((SECONDS - t)) s"; else not_ok "scripts/cluster.sh down ($INSTANCE) reported leftovers"; fi
    step_done
  else
    k delete namespace "$NS" "$PROBE_NS" --ignore-not-found --wait=false >/dev/null 2>&1
  fi
  rm -rf "$tmp"
  [ "$rc" = 0 ] || not_ok "the check script stopped early (exit $rc)"
  echo
  printf '%s\n' "${notes[@]/#/   }"
  step_report
  echo "   check duration $((SECONDS - started)) s"
  echo "istio-cluster: $passed passed, $failed failed, $skipped skipped"
  [ "$failed" = 0 ] && exit 0 || exit 1
}
trap finish EXIT

# --- helpers -----------------------------------------------------------------------------------------------------------

# probe_pod NS NAME SERVICEACCOUNT [ANNOTATION...]: a Fortio pod (HTTP client and load generator); in a namespace with
# injection it gets a sidecar like any workload.
probe_pod() {
  local ns=$1 name=$2 sa=$3
  shift 3
  local annotations="{}"
  [ $# -gt 0 ] && annotations="{$(printf '%s, ' "$@" | sed 's/, $//')}"
  # A service account the manifests already made (a probe with an agent's identity) is used as it is.
  local account="apiVersion: v1
kind: ServiceAccount
metadata: {name: $sa}
automountServiceAccountToken: false
---"
  k -n "$ns" get serviceaccount "$sa" >/dev/null 2>&1 && account=""
  k -n "$ns" apply -f - >/dev/null <<EOF
$account
apiVersion: v1
kind: Pod
metadata:
  name: $name
  labels: {app: $name}
  annotations: $annotations
spec:
  serviceAccountName: $sa
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: fortio
      image: $PROBE_IMAGE
      imagePullPolicy: IfNotPresent
      resources:
        requests: {cpu: 50m, memory: 32Mi}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
EOF
}

# fetch NS POD URL [fortio curl args]: "<status>" of one request (000 when no HTTP answer); body in $tmp/body,
# response headers in $tmp/headers. Fortio's raw client prints a 200's status line and headers on stderr (among its
# log lines) and its body on stdout, any other answer's status line, headers and body on stdout.
fetch() {
  local ns=$1 pod=$2 url=$3
  shift 3
  k -n "$ns" exec "$pod" -c fortio -- fortio curl -timeout 12s "$@" "$url" >"$tmp/out" 2>"$tmp/err" || true
  if [ "$(head -c 7 "$tmp/out")" = "HTTP/1." ]; then
    awk '/^\r?$/ { exit } { print }' "$tmp/out" | tr -d '\r' >"$tmp/headers"
    awk 'body { print } /^\r?$/ { body = 1 }' "$tmp/out" >"$tmp/body"
  else
    awk '/^HTTP\/1\.[01] / { h = 1 } h && /^\r?$/ { exit } h { print }' "$tmp/err" | tr -d '\r' >"$tmp/headers"
    cp "$tmp/out" "$tmp/body"
  fi
  sed -n 's/^HTTP\/1\.[01] \([0-9][0-9][0-9]\).*/\1/p' "$tmp/headers" | head -1 | grep . || echo 000
}

# load NS POD NAME URL FORTIO-ARGS...: fortio load from POD, its JSON result in $tmp/NAME.json
# ($fortio_log: Fortio's logging flag, -quiet unless the caller wants its log, e.g. -loglevel=Warning for a line per
# failed call)
load() {
  local ns=$1 pod=$2 name=$3 url=$4
  shift 4
  k -n "$ns" exec "$pod" -c fortio -- fortio load "${fortio_log:--quiet}" -json - "$@" "$url" >"$tmp/$name.json" 2>"$tmp/$name.err" || true
  jq -e .RetCodes "$tmp/$name.json" >/dev/null 2>&1 || { log "fortio load $name failed: $(tail -3 "$tmp/$name.err")"; echo '{"RetCodes":{}}' >"$tmp/$name.json"; }
}
codes() { jq -r '.RetCodes | to_entries | map("\(.key)x\(.value)") | join(" ")' "$tmp/$1.json"; }
count() { jq -r --arg c "$2" '.RetCodes[$c] // 0' "$tmp/$1.json"; }
total() { jq -r '[.RetCodes[]] | add // 0' "$tmp/$1.json"; }
pct() { jq -r --arg p "$2" '.DurationHistogram.Percentiles[] | select(.Percentile == ($p | tonumber)) | .Value * 1000 | . * 100 | round / 100' "$tmp/$1.json"; }

# agent_request NS POD ARGS...: `pilot-agent request ARGS` in the pod's istio-proxy container, without the log lines
# pilot-agent writes to stdout before the answer (timestamped, e.g. "...Z\twarn\tOS CA Cert could not be found").
agent_request() {
  k -n "$1" exec "$2" -c istio-proxy -- pilot-agent request "${@:3}" 2>/dev/null \
    | { grep -Ev '^[0-9]{4}[-/][0-9]{2}[-/][0-9]{2}[T ][0-9:.]+Z?[[:space:]]' || true; }
}
# envoy NS POD PATH: GET PATH from the pod's Envoy admin API (through pilot-agent, in the istio-proxy container).
envoy() { agent_request "$1" "$2" GET "$3"; }
# envoy_stat NS POD NAME: the value of one Envoy counter or gauge (0 when Envoy has not used it yet).
# Istio ends its stat prefixes with ";" (for its tag extraction: cluster.inbound|8000||;.upstream_rq_total), which
# the names here leave out.
envoy_stat() { envoy "$1" "$2" "stats?usedonly" | awk -F': ' -v n="$3" '{ k = $1; gsub(/;/, "", k) } k == n { v = $2 } END { print v + 0 }'; }
# app_metric NS POD ROUTE: requests the agent in POD counted for ROUTE: its own metrics as pilot-agent merges them
# with Envoy's on :15020/stats/prometheus (what Prometheus scrapes in the mesh), read inside the pod.
app_metric() {
  agent_request "$1" "$2" --debug-port 15020 GET stats/prometheus \
    | awk -v r="route=\"$3\"" '/^http_server_requests_total\{/ && index($0, r) { s += $NF } END { print s + 0 }'
}
pods() { kn get pods -l "$1" --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}'; }
# settled CMD...: CMD's output once it holds still across more than a second, at most 10 s. The agents render
# /metrics at most once a second, so a count read right after a load may miss its last requests.
settled() {
  local now previous deadline=$((SECONDS + 10))
  previous=$("$@")
  while :; do
    sleep 1.2
    now=$("$@")
    [ "$now" = "$previous" ] || [ "$SECONDS" -ge "$deadline" ] && break
    previous=$now
  done
  echo "$now"
}
# data_seen [SELECTOR]: GET /data requests all data pods (or those SELECTOR picks) counted, settled
data_seen_now() {
  local pod s=0
  for pod in $(pods "${1:-app=data}"); do s=$((s + $(app_metric "$NS" "$pod" /data))); done
  echo "$s"
}
data_seen() { settled data_seen_now "$@"; }
rec_stat() {   # rec_stat NAME: the sum of one Envoy stat over recommendation's sidecars
  local pod s=0
  for pod in $(pods app=recommendation); do s=$((s + $(envoy_stat "$NS" "$pod" "$1"))); done
  echo "$s"
}
rollout() {   # rollout DEPLOYMENT: wait until its new pods are Ready and its old pods are gone
  kn rollout status "deployment/$1" --timeout=180s >/dev/null || return 1
  local deadline=$((SECONDS + 90))
  until [ "$(kn get pods -l "app=${1%-*}" -o json | jq '[.items[] | select(.metadata.deletionTimestamp)] | length')" = 0 ]; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
# route_has TEXT: every recommendation sidecar's routes mention TEXT (istiod pushed the change); route_lacks TEXT.
# (grep reads all its input: with grep -q, the writer's SIGPIPE would fail the pipeline under pipefail)
route_has() { for p in $(pods app=recommendation); do envoy "$NS" "$p" "config_dump?resource=dynamic_route_configs" | grep -F "$1" >/dev/null || return 1; done; }
route_lacks() { for p in $(pods app=recommendation); do ! envoy "$NS" "$p" "config_dump?resource=dynamic_route_configs" | grep -F "$1" >/dev/null || return 1; done; }
# await CMD...: until CMD succeeds, at most 30 s
await() { local deadline=$((SECONDS + 30)); until "$@"; do [ "$SECONDS" -lt "$deadline" ] || return 1; sleep 0.5; done; }
# set_data_env NAME=VALUE... | -NAME...: change data's environment and wait for the new pods
set_data_env() { kn set env deployment/data "$@" >/dev/null && rollout data; }
# the Envoy stat prefix of recommendation's sidecar's cluster for data's v1 subset (virtualservice-data.yaml's route)
data_cluster="cluster.outbound|8000|v1|data.$NS.svc.cluster.local"
# breakers_closed: one call through the gateway (an open breaker lets a probe through after DATA_BREAKER_COOLDOWN),
# then true when every recommendation pod reports its breaker closed (data_circuit_state 0)
breaker_state() { agent_request "$NS" "$1" --debug-port 15020 GET stats/prometheus | awk '/^data_circuit_state[ {]/ { v = $NF } END { print v + 0 }'; }
breakers_closed() {
  fetch "$PROBE_NS" outsider "$gateway/recommend" >/dev/null
  local p
  for p in $(pods app=recommendation); do [ "$(breaker_state "$p")" = 0 ] || return 1; done
}
# rec_snapshot: per recommendation pod, lines "POD KIND NAME VALUE" of what locates a failed call to data: its
# sidecar's counters for data's cluster (requests, 5xx, retries and why they stopped, per-try and route timeouts,
# connections torn down, outlier ejections), the sidecar's view of each data endpoint (requests, errors, health), and
# the agent's own data calls by outcome, retries, stale answers and breaker state.
rec_snapshot() {
  local p
  for p in $(pods app=recommendation); do
    envoy "$NS" "$p" "stats?usedonly" | awk -F': ' -v p="$p" -v c="$data_cluster." '
      { k = $1; gsub(/;/, "", k) }
      index(k, c) == 1 { k = substr(k, length(c) + 1) }
      k ~ /^(upstream_rq_(retry|5xx|500|503|504|per_try_timeout|timeout|total|pending_overflow)|upstream_cx_destroy|upstream_cx_connect_fail|outlier_detection\.)/ { print p, "envoy", k, $2 }'
    envoy "$NS" "$p" clusters | awk -F'::' -v p="$p" -v c="outbound|8000|v1|data.$NS.svc.cluster.local" \
      '$1 == c && $3 ~ /^(rq_total|rq_error|rq_success|rq_timeout|health_flags)$/ { print p, "host", $2 "." $3, $4 }'
    agent_request "$NS" "$p" --debug-port 15020 GET stats/prometheus \
      | awk -v p="$p" '/^(data_calls_total|data_call_retries_total|data_stale_answers_total|data_circuit_state)[ {]/ { print p, "agent", $1, $NF }'
  done
}
# outlier_evidence SINCE: where check 5's failed calls came from, printed when there were any: the status codes of
# every batch, Fortio's line for each failed call, what changed in rec_snapshot since the batches began, the retry
# policy istiod sent for data's route, and the access log lines other than 200 of recommendation's and the caller's
# sidecars and the agent's warnings since SINCE.
outlier_evidence() {
  local since=$1 p
  echo "---- check 5 evidence: status codes by batch"
  cat "$tmp/outlier-batches"
  echo "---- Fortio's log of the failed calls"
  grep -Ei 'code|error|fail' "$tmp/outlier-fortio.log" | head -40 || true
  echo "---- recommendation: before -> after the batches (changed values only)"
  rec_snapshot >"$tmp/outlier-after"
  awk 'NR == FNR { b[$1 " " $2 " " $3] = $4; next } { k = $1 " " $2 " " $3 } b[k] != $4 { print k, (k in b ? b[k] : "-"), "->", $4 }' \
    "$tmp/outlier-before" "$tmp/outlier-after"
  echo "---- the retry policy of data's route in recommendation's sidecar (from istiod)"
  envoy "$NS" "$(pods app=recommendation | cut -d' ' -f1)" "config_dump?resource=dynamic_route_configs" \
    | jq -c --arg c "outbound|8000|v1|data.$NS.svc.cluster.local" '.. | objects | select(.route?.cluster? == $c) | {name, retry_policy: .route.retry_policy, timeout: .route.timeout}' 2>&1 | head -5
  for p in $(pods app=recommendation) intruder; do
    echo "---- $p: istio-proxy access log since $since, answers other than 200"
    kn logs "$p" -c istio-proxy --since-time="$since" 2>&1 | grep -E '^\[' | grep -Ev '" 200 ' | head -30 || true
  done
  for p in $(pods app=recommendation); do
    echo "---- $p: the agent's warnings since $since"
    kn logs "$p" -c recommendation --since-time="$since" 2>&1 | grep -Ei 'warn|error' | head -20 || true
  done
}

# --- the cluster -------------------------------------------------------------------------------------------------------
step "cluster"
if [ -z "${KUBECONFIG:-}" ]; then
  own=1
  cluster status >/dev/null 2>&1 && { log "the instance $INSTANCE runs already: run AGENT_MESH_CLUSTER=$INSTANCE scripts/cluster.sh down first, or set KUBECONFIG to check it"; exit 1; }
  t=$SECONDS
  # (eval "$(...)" would swallow a failed up)
  up_env=$(cluster up --istio) || { not_ok "scripts/cluster.sh up --istio ($INSTANCE) failed"; exit 1; }
  eval "$up_env"
  note "cluster instance $INSTANCE up with Istio in $((SECONDS - t)) s (control plane: see the add-on's timing above)"
  PROBE_IMAGE=$(cluster import fortio | tail -n1)
else
  # shellcheck disable=SC2016 # the pattern matches a literal ${FORTIO_VERSION:-...}
  fortio_version=$(sed -n 's/^FORTIO_VERSION="\${FORTIO_VERSION:-\(.*\)}"$/\1/p' scripts/tools/install-fortio.sh)
  PROBE_IMAGE=${CLUSTER_PROBE_IMAGE:-localhost/agent-mesh/fortio:$fortio_version}
  for ns in "$NS" "$PROBE_NS"; do
    k get namespace "$ns" >/dev/null 2>&1 && { log "namespace $ns exists in this cluster; the checks need it absent"; exit 1; }
  done
fi
k version -o json | jq -r '"server \(.serverVersion.gitVersion), client \(.clientVersion.gitVersion)"' | sed 's/^/     . /'
server_minor=$(k version -o json | jq -r '.serverVersion.minor | sub("[^0-9].*"; "") | tonumber')
k -n istio-system rollout status deployment/istiod --timeout=60s >/dev/null && ok "istiod Ready" || { not_ok "istiod not Ready"; exit 1; }
gateway=http://istio-ingressgateway.istio-system.svc.cluster.local

# --- 1. injection, readiness, the gateway ------------------------------------------------------------------------------
check_1() {
step "1. kubectl apply -k istio/: sidecars injected by istiod, pods Ready, /recommend through the ingress gateway"
t=$SECONDS
k apply -k istio/ >"$tmp/apply.txt" && ok "kubectl apply -k istio/ ($(grep -c . "$tmp/apply.txt") objects)" \
  || { not_ok "kubectl apply -k istio/: $(cat "$tmp/apply.txt")"; exit 1; }
if kn wait --for=condition=Available deployment/data deployment/recommendation --timeout=240s >/dev/null; then
  ok "data and recommendation Available $((SECONDS - t)) s after apply"
else
  not_ok "Deployments not Available within 240 s"; exit 1
fi
# Every agent pod: injected (istiod's status annotation), the proxy as a native sidecar on Kubernetes >= 1.33 (an
# init container that keeps running) or as a container before, the CNI's validation instead of the NET_ADMIN
# istio-init container, and Ready.
kn get pods -l 'app in (data,recommendation)' -o json >"$tmp/pods.json"
jq -r '.items[] | [.metadata.name,
    (.metadata.annotations["sidecar.istio.io/status"] // "" | length > 0),
    ([.spec.initContainers[]? | select(.name == "istio-proxy" and .restartPolicy == "Always")] | length == 1),
    ([.spec.containers[] | select(.name == "istio-proxy")] | length == 1),
    ([.spec.initContainers[]? | .name] | index("istio-validation") != null),
    ([.spec.initContainers[]? | .name] | index("istio-init") != null),
    ([.status.conditions[] | select(.type == "Ready" and .status == "True")] | length == 1)] | @tsv' \
  "$tmp/pods.json" >"$tmp/inject.tsv"
want_native=false
[ "$server_minor" -ge 33 ] && want_native=true
bad=$(awk -v native="$want_native" '!($2 == "true" && ((native == "true" && $3 == "true" && $4 == "false") || (native == "false" && $3 == "false" && $4 == "true")) && $5 == "true" && $6 == "false" && $7 == "true") { print $1 }' "$tmp/inject.tsv")
[ -z "$bad" ] && [ -s "$tmp/inject.tsv" ] \
  && ok "$(wc -l <"$tmp/inject.tsv") agent pods injected by istiod ($([ "$want_native" = true ] && echo "native sidecar" || echo "sidecar container")), istio-validation (CNI) and no istio-init, all Ready" \
  || { not_ok "pods not injected as expected: $(tr '\n' ' ' <<<"$bad")"; cat "$tmp/inject.tsv"; }
# Upstream Envoy accepted everything istiod sent: no rejected listener, cluster or route update, nothing warming.
rejected=""
for pod in $(pods 'app in (data,recommendation)'); do
  envoy "$NS" "$pod" stats >"$tmp/stats-$pod"
  r=$(awk -F': ' '/update_rejected: / { s += $2 } END { print s + 0 }' "$tmp/stats-$pod")
  a=$(awk -F': ' '/^listener_manager\.lds\.update_success: / { print $2 }' "$tmp/stats-$pod")
  [ "$r" = 0 ] && [ "${a:-0}" -gt 0 ] || rejected+="$pod(rejected $r, lds updates ${a:-0}) "
done
[ -z "$rejected" ] && ok "every sidecar's Envoy accepted every CDS/LDS/RDS/EDS update from istiod (update_rejected 0)" \
  || not_ok "Envoy rejected istiod's configuration: $rejected"

k create namespace "$PROBE_NS" >/dev/null
probe_pod "$PROBE_NS" outsider outsider                 # no sidecar: outside the mesh
probe_pod "$NS" intruder intruder                        # meshed, with an identity the AuthorizationPolicy does not name
probe_pod "$NS" as-recommendation recommendation       # meshed, with recommendation's identity (not selected by its Service)
k -n "$PROBE_NS" wait --for=condition=Ready pod/outsider --timeout=90s >/dev/null
kn wait --for=condition=Ready pod/intruder --timeout=120s >/dev/null
kn wait --for=condition=Ready pod/as-recommendation --timeout=120s >/dev/null

code=$(fetch "$PROBE_NS" outsider "$gateway/recommend")
[ "$code" = 200 ] && [ "$(cat "$tmp/body")" = "$CONTRACT" ] \
  && ok "through the ingress gateway: GET $gateway/recommend -> 200 $CONTRACT" \
  || not_ok "through the ingress gateway: GET /recommend -> $code $(cat "$tmp/body")"
code=$(fetch "$PROBE_NS" outsider "$gateway/data")
[ "$code" = 404 ] && ok "the gateway exposes nothing else: GET /data -> 404" || not_ok "GET $gateway/data -> $code"
code=$(fetch "$PROBE_NS" outsider "$gateway/recommend" -X POST)
[ "$code" = 404 ] && ok "the gateway routes only GET /recommend: POST -> 404" || not_ok "POST $gateway/recommend -> $code"
}

# --- 2. mTLS STRICT ----------------------------------------------------------------------------------------------------
check_2() {
step "2. mTLS STRICT: plaintext refused, the recommendation -> data hop authenticated by SPIFFE identities"
data_pods=$(pods app=data)
rec_pod=$(pods app=recommendation | cut -d' ' -f1)
# connections data's sidecars accepted on their inbound listener (15006), those without a matching filter chain
# (plaintext, under STRICT) included: Envoy counts those as no_filter_chain_match, not in downstream_cx_total
inbound_cx() {
  local p s=0
  for p in $data_pods; do
    s=$((s + $(envoy_stat "$NS" "$p" listener.0.0.0.0_15006.downstream_cx_total) + $(envoy_stat "$NS" "$p" listener.0.0.0.0_15006.no_filter_chain_match)))
  done
  echo "$s"
}
before=$(inbound_cx)
code=$(fetch "$PROBE_NS" outsider "http://data.$NS.svc.cluster.local:8000/data")
after=$(inbound_cx)
if [ "$code" = 000 ] && [ "$after" -gt "$before" ]; then
  ok "plaintext GET data:8000/data from outside the mesh reached data's sidecar, which closed it unanswered (no filter chain of its inbound listener takes plaintext)"
elif [ "$code" = 000 ]; then
  skip "plaintext to data got no answer, but not from data's sidecar (a NetworkPolicy dropped it first): STRICT not observable this way"
else
  not_ok "plaintext GET data:8000/data from outside the mesh -> $code $(cat "$tmp/body")"
fi
envoy "$NS" "$rec_pod" certs >"$tmp/certs.json"
jq -e --arg id "$REC_SPIFFE" '[.. | objects | .uri? // empty] | index($id) != null' "$tmp/certs.json" >/dev/null \
  && ok "recommendation's sidecar holds a workload certificate for $REC_SPIFFE (Envoy /certs)" \
  || not_ok "recommendation's workload certificate: $(jq -c '[.. | objects | .uri? // empty]' "$tmp/certs.json")"
envoy "$NS" "$rec_pod" "config_dump?resource=dynamic_active_clusters" >"$tmp/clusters.json"
jq -e --arg id "$DATA_SPIFFE" '[.. | objects | select(.name? // "" | test("^outbound\\|8000\\|v1\\|data\\.")) | tostring | contains($id)] | any' \
  "$tmp/clusters.json" >/dev/null \
  && ok "recommendation's sidecar connects to data's v1 subset with TLS and accepts only $DATA_SPIFFE" \
  || not_ok "recommendation's cluster for data does not check $DATA_SPIFFE"
data_pod=${data_pods%% *}
envoy "$NS" "$data_pod" "config_dump?resource=dynamic_listeners" >"$tmp/listeners.json"
jq -e '[.. | objects | select(has("require_client_certificate")) | .require_client_certificate] | length > 0 and all' \
  "$tmp/listeners.json" >/dev/null \
  && ok "data's sidecar requires a client certificate on every TLS filter chain of its inbound listener" \
  || not_ok "data's inbound listener does not require client certificates"
handshakes() { local p s=0; for p in $data_pods; do s=$((s + $(envoy_stat "$NS" "$p" listener.0.0.0.0_15006.ssl.handshake))); done; echo "$s"; }
h0=$(handshakes)
load "$NS" intruder mtls "http://recommendation.$NS.svc.cluster.local:8000/recommend" -n 20 -c 2 -qps 0 -timeout 10s -H "Connection: close"
h1=$(handshakes)
[ "$(count mtls 200)" = 20 ] && [ "$h1" -gt "$h0" ] \
  && ok "20 x /recommend: 200, and data's sidecars completed $((h1 - h0)) more TLS handshakes" \
  || not_ok "mTLS traffic: $(codes mtls), data's TLS handshakes $h0 -> $h1"
}

# --- 3. AuthorizationPolicy --------------------------------------------------------------------------------------------
check_3() {
step "3. AuthorizationPolicy: only recommendation's identity may GET /data"
data_pods=$(pods app=data)
denied_before=$(for p in $data_pods; do envoy_stat "$NS" "$p" http.inbound_0.0.0.0_8000.rbac.denied; done | awk '{ s += $1 } END { print s + 0 }')
code=$(fetch "$NS" intruder "http://data.$NS.svc.cluster.local:8000/data")
denied_after=$(for p in $data_pods; do envoy_stat "$NS" "$p" http.inbound_0.0.0.0_8000.rbac.denied; done | awk '{ s += $1 } END { print s + 0 }')
[ "$code" = 403 ] && [ "$denied_after" -gt "$denied_before" ] \
  && ok "a meshed pod with service account 'intruder' (mTLS, another identity): GET /data -> 403 '$(cat "$tmp/body")', counted by data's RBAC filter" \
  || not_ok "intruder GET /data -> $code $(cat "$tmp/body") (rbac.denied $denied_before -> $denied_after)"
code=$(fetch "$NS" intruder "http://recommendation.$NS.svc.cluster.local:8000/recommend")
[ "$code" = 200 ] && [ "$(cat "$tmp/body")" = "$CONTRACT" ] \
  && ok "recommendation (service account recommendation) GETs /data for the same pod: /recommend -> 200 contract" \
  || not_ok "intruder GET /recommend -> $code $(cat "$tmp/body")"
# What the policy opens to recommendation's identity and what its agent-mesh/closed-routes annotation says it leaves
# closed, asked of data's sidecar with that identity: the personal path's route answers, every closed one is 403.
code=$(fetch "$NS" as-recommendation "http://data.$NS.svc.cluster.local:8000/insights/users/u1?limit=5")
[ "$code" = 200 ] && ok "recommendation's identity: GET /insights/users/u1 -> 200 (the personal path's route)" \
  || not_ok "recommendation's identity: GET /insights/users/u1 -> $code $(head -c 200 "$tmp/body")"
closed=$(sed -n 's|^ *agent-mesh/closed-routes: *||p' istio/authorizationpolicy-data.yaml)
refused="" open_routes=0
while read -r method path; do
  path=${path/\{id\}/i1}
  code=$(fetch "$NS" as-recommendation "http://data.$NS.svc.cluster.local:8000$path" -X "$method")
  if [ "$code" = 403 ]; then refused+="$method $path, "; else
    open_routes=$((open_routes + 1))
    not_ok "recommendation's identity: $method $path -> $code, want 403 (closed by istio/authorizationpolicy-data.yaml)"
  fi
done < <(tr ',' '\n' <<<"$closed" | sed 's/^ *//; /^$/d')
[ -n "$refused" ] && [ "$open_routes" = 0 ] \
  && ok "recommendation's identity: every route the policy names closed -> 403 (${refused%, })" \
  || [ "$open_routes" != 0 ] || not_ok "no closed routes read from istio/authorizationpolicy-data.yaml ('$closed')"
}

# --- 8. trace context --------------------------------------------------------------------------------------------------
check_8() {
step "8. trace context: one trace id across the gateway, recommendation and data"
# A client's traceparent (sampled) and x-client-trace-id (which makes the gateway trace this request whatever its
# sampling rate): the gateway continues the client's trace, and the tracing decision travels in x-request-id, which
# the agents propagate, so every sidecar on the way reports its span. Jaeger must then hold one trace with the
# gateway's, recommendation's and data's spans, chained parent to child.
trace_id=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
client_span=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
code=$(fetch "$PROBE_NS" outsider "$gateway/recommend" -H "traceparent: 00-$trace_id-$client_span-01" -H "x-client-trace-id: $trace_id")
[ "$code" = 200 ] || not_ok "traced request through the gateway -> $code"
tracing=http://tracing.istio-system.svc.cluster.local
services=""
# Jaeger names a sidecar's service <app>.<namespace> (the gateway: istio-ingressgateway.istio-system)
traced() { [[ " $services " == *" istio-ingressgateway.istio-system "* && " $services " == *" recommendation.$NS "* && " $services " == *" data.$NS "* ]]; }
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
  # Jaeger answers chunked: Go's client (-stdclient) decodes it and prints the body only
  k -n "$PROBE_NS" exec outsider -c fortio -- fortio curl -stdclient -timeout 12s "$tracing/api/traces/$trace_id" >"$tmp/body" 2>/dev/null || true
  services=$(jq -r '[.data[0] as $t | $t.spans[] | $t.processes[.processID].serviceName] | unique | join(" ")' "$tmp/body" 2>/dev/null || true)
  traced && break
  sleep 1
done
cp "$tmp/body" "$tmp/trace.json"
spans=$(jq -r '.data[0].spans | length' "$tmp/trace.json" 2>/dev/null || echo 0)
if traced; then
  ok "trace $trace_id in Jaeger: $spans spans from $services"
else
  not_ok "trace $trace_id: spans from '${services:-nothing}' ($(head -c 300 "$tmp/trace.json"))"
fi
# One chain: every span but the first has its parent in the trace, and the first one's parent is the client's span.
jq -e --arg client "$client_span" '.data[0].spans as $s | ($s | map(.spanID)) as $ids
  | [$s[] | [.references[]? | select(.refType == "CHILD_OF") | .spanID] | first // ""]
  | (map(select(. == $client)) | length) == 1 and (map(select(. != $client)) | all(. as $p | $ids | index($p) != null))' \
  "$tmp/trace.json" >/dev/null 2>&1 \
  && ok "the spans form one chain below the client's span $client_span (each span's parent is in the trace)" \
  || not_ok "the spans do not chain: $(jq -c '[.data[0].spans[] | {op: .operationName, id: .spanID, parent: ([.references[]? | .spanID] | first)}]' "$tmp/trace.json" 2>/dev/null | head -c 600)"
}

# --- 4. retries and timeouts -------------------------------------------------------------------------------------------
check_4() {
step "4. retries and per-try/overall timeouts of virtualservice-data.yaml"
attempts=$(kn get virtualservice data -o jsonpath='{.spec.http[0].retries.attempts}')
per_try=$(kn get virtualservice data -o jsonpath='{.spec.http[0].retries.perTryTimeout}')
route_timeout=$(kn get virtualservice data -o jsonpath='{.spec.http[0].timeout}')
note "VirtualService data: attempts $attempts, perTryTimeout $per_try, timeout $route_timeout"
# attempts data's sidecars forwarded to the agent (counted when they start, so cut-off tries count too)
data_attempts() { local p s=0; for p in $(pods app=data); do s=$((s + $(envoy_stat "$NS" "$p" 'cluster.inbound|8000||.upstream_rq_total'))); done; echo "$s"; }

set_data_env FAULT_STATUS=503 && ok "data set to answer 503 (FAULT_STATUS=503), new pods Ready" || not_ok "data did not roll out with FAULT_STATUS"
calls=10
# Calls recommendation's sidecar forwarded to data: its requests to the data cluster less its retries. Fewer than
# $calls when the agent's own breaker opened (DATA_BREAKER_THRESHOLD consecutive failures of one pod): those calls
# are answered 503 at once without calling data, as they should.
forwarded() { echo $(($(rec_stat "$data_cluster.upstream_rq_total") - $(rec_stat "$data_cluster.upstream_rq_retry"))); }
a0=$(data_attempts); r0=$(rec_stat "$data_cluster.upstream_rq_retry"); f0=$(forwarded)
load "$NS" intruder retries "http://recommendation.$NS.svc.cluster.local:8000/recommend" -n "$calls" -c 1 -qps 0 -timeout 15s
a1=$(data_attempts); r1=$(rec_stat "$data_cluster.upstream_rq_retry"); f1=$(forwarded)
fwd=$((f1 - f0))
[ "$(count retries 200)" = 0 ] && [ "$(total retries)" = "$calls" ] \
  && ok "$calls x /recommend while data fails: none succeeds ($(codes retries)); $fwd reached data's route, the rest met recommendation's open breaker" \
  || not_ok "while data fails: $(codes retries)"
[ "$fwd" -gt 0 ] && [ $((a1 - a0)) = $((fwd * (attempts + 1))) ] && [ $((r1 - r0)) = $((fwd * attempts)) ] \
  && ok "data saw $((a1 - a0)) attempts for the $fwd calls routed to it: 1 + $attempts retries each, as the VirtualService says (Envoy: $((r1 - r0)) retries)" \
  || not_ok "data saw $((a1 - a0)) attempts and Envoy retried $((r1 - r0)) times for $fwd routed calls, expected $((fwd * (attempts + 1))) and $((fwd * attempts))"

set_data_env FAULT_STATUS- FAULT_DELAY=3s && ok "data set to answer after 3 s (FAULT_DELAY), new pods Ready" || not_ok "data did not roll out with FAULT_DELAY"
a0=$(data_attempts); p0=$(rec_stat "$data_cluster.upstream_rq_per_try_timeout"); o0=$(rec_stat "$data_cluster.upstream_rq_timeout")
load "$NS" intruder timeouts "http://recommendation.$NS.svc.cluster.local:8000/recommend" -n 1 -c 1 -qps 0 -timeout 15s
a1=$(data_attempts); p1=$(rec_stat "$data_cluster.upstream_rq_per_try_timeout"); o1=$(rec_stat "$data_cluster.upstream_rq_timeout")
took=$(jq -r '.DurationHistogram.Max' "$tmp/timeouts.json")
per_try_s=${per_try%s}
route_s=${route_timeout%s}
tries=$(awk -v r="$route_s" -v p="$per_try_s" 'BEGIN { t = int(r / p); if (t * p < r) t++; print t }')
[ "$(count timeouts 200)" = 0 ] && ge "$took" "$route_s" && ! ge "$took" "$((route_s + 1))" \
  && ok "data slower than perTryTimeout: /recommend failed ($(codes timeouts)) after ${took} s, the route timeout ($route_timeout)" \
  || not_ok "data slow: $(codes timeouts) after ${took} s, expected a failure after the route timeout $route_timeout"
[ $((a1 - a0)) = "$tries" ] && [ $((p1 - p0)) = $((tries - 1)) ] && [ $((o1 - o0)) = 1 ] \
  && ok "$tries tries of $per_try each fit in $route_timeout: data saw $((a1 - a0)), Envoy counted $((p1 - p0)) per-try timeouts and 1 route timeout" \
  || not_ok "tries: data saw $((a1 - a0)) (expected $tries), per-try timeouts $((p1 - p0)), route timeouts $((o1 - o0))"
set_data_env FAULT_DELAY- || not_ok "data did not roll back to healthy"
}

# --- 5. outlier detection ----------------------------------------------------------------------------------------------
check_5() {
step "5. outlier detection: a failing data replica is ejected, traffic moves to the healthy ones"
consecutive=$(kn get destinationrule data -o jsonpath='{.spec.trafficPolicy.outlierDetection.consecutive5xxErrors}')
# Recommendation's breakers closed first, while data is healthy: this check is about what the mesh does, and it counts
# every caller-visible error against it. Check 4 makes data fail and leaves the breakers open; an open breaker stays
# open after its cool-down until the next call, which becomes its half-open probe, and while that probe is in flight
# the breaker refuses every other call at once with 503 (recommendation/src/breaker.rs: one probe at a time, by
# design). The calls below come two at a time, so one of the first two could meet such a pod and get that 503: CI
# failed 2 runs in 5 with "1 of 40 calls failed", and ISTIO_CHECKS="4 5 4 5 4 5 4 5" reproduced it 3 times in 4, each
# time a 503 answered by recommendation itself in 0.03 ms (its sidecar's access log: via_upstream),
# data_calls_total{outcome="circuit_open"} +1, data_circuit_state 2 before the calls (docs/istio-cluster.md).
await breakers_closed || not_ok "recommendation's breakers did not close before check 5 (data healthy)"
# A third replica of data that always answers 500: the same pod template, its own Deployment, so it joins the
# Service and the v1 subset.
kn get deployment data -o json | jq '
  {apiVersion, kind, metadata: {name: "data-faulty", namespace: .metadata.namespace, labels: .metadata.labels},
   spec: (.spec | .replicas = 1 | .selector.matchLabels["agent-mesh.test/faulty"] = "true"
     | .template.metadata.labels["agent-mesh.test/faulty"] = "true"
     | .template.spec.containers[0].env += [{name: "FAULT_STATUS", value: "500"}])}' | kn apply -f - >/dev/null
rollout data-faulty || not_ok "data-faulty did not become Ready"
faulty=$(pods agent-mesh.test/faulty=true)
# Both recommendation sidecars must know the third endpoint before the test means anything.
sees_three() {
  local p
  for p in $(pods app=recommendation); do
    [ "$(envoy "$NS" "$p" clusters | grep -c "^outbound|8000|v1|data\.$NS\.svc\.cluster\.local::[0-9.]*:8000::health_flags::healthy")" = 3 ] || return 1
  done
}
await sees_three || not_ok "recommendation's sidecars never saw 3 healthy data endpoints"
ejected() { for p in $(pods app=recommendation); do [ "$(envoy_stat "$NS" "$p" "$data_cluster.outlier_detection.ejections_active")" -ge 1 ] || return 1; done; }
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
rec_snapshot >"$tmp/outlier-before"
sent=0 errors=0 batch=0
echo '{"RetCodes":{}}' >"$tmp/outlier-all.json"
: >"$tmp/outlier-batches" && : >"$tmp/outlier-fortio.log"
while ! ejected && [ "$sent" -lt 600 ]; do
  batch=$((batch + 1))
  # Fortio's log (not -quiet) names each failed call's status and time
  fortio_log=-loglevel=Warning load "$NS" intruder outlier "http://recommendation.$NS.svc.cluster.local:8000/recommend" -n 20 -c 2 -qps 0 -timeout 10s
  sent=$((sent + $(total outlier)))
  errors=$((errors + $(total outlier) - $(count outlier 200)))
  echo "batch $batch: $(codes outlier)" >>"$tmp/outlier-batches"
  sed "s/^/batch $batch: /" "$tmp/outlier.err" >>"$tmp/outlier-fortio.log"
  jq -s '{RetCodes: (.[0].RetCodes as $a | .[1].RetCodes | reduce to_entries[] as $e ($a; .[$e.key] += $e.value))}' \
    "$tmp/outlier-all.json" "$tmp/outlier.json" >"$tmp/outlier-sum.json" && mv "$tmp/outlier-sum.json" "$tmp/outlier-all.json"
done
ej=$(rec_stat "$data_cluster.outlier_detection.ejections_enforced_consecutive_5xx")
ejected && ok "the failing replica was ejected by every recommendation sidecar after $sent calls (ejections_enforced_consecutive_5xx $ej, after $consecutive consecutive 5xx each)" \
  || not_ok "no ejection after $sent calls (ejections_enforced_consecutive_5xx $ej)"
if [ "$errors" = 0 ]; then
  ok "callers saw no error meanwhile: the retries went to the healthy replicas ($(codes outlier-all) in $batch batches)"
else
  not_ok "$errors of $sent calls failed while the faulty replica was in the pool ($(codes outlier-all) in $batch batches)"
  outlier_evidence "$since"
fi
f0=$(envoy_stat "$NS" "$faulty" 'cluster.inbound|8000||.upstream_rq_total')
h0=$(data_seen 'app=data,!agent-mesh.test/faulty')
load "$NS" intruder moved "http://recommendation.$NS.svc.cluster.local:8000/recommend" -n 200 -c 4 -qps 0 -timeout 10s
f1=$(envoy_stat "$NS" "$faulty" 'cluster.inbound|8000||.upstream_rq_total')
h1=$(data_seen 'app=data,!agent-mesh.test/faulty')
[ "$(count moved 200)" = 200 ] && [ "$f1" = "$f0" ] && [ $((h1 - h0)) = 200 ] \
  && ok "200 more calls: all 200, the ejected replica got none, the healthy ones served all $((h1 - h0))" \
  || not_ok "after ejection: $(codes moved); the ejected replica got $((f1 - f0)), the healthy ones $((h1 - h0))"
kn delete deployment data-faulty --wait=false >/dev/null
kn wait --for=delete pod -l agent-mesh.test/faulty=true --timeout=90s >/dev/null 2>&1 || not_ok "data-faulty's pod outlived its Deployment by 90 s"
}

# --- 7. fault injection examples ---------------------------------------------------------------------------------------
check_7() {
step "7. istio/examples/fault-*.yaml: declared abort and delay shares, nothing once removed"

# Envoy's fault filter runs in recommendation's sidecar, on the outbound HCM of port 8000 (recommendation calls
# nothing else on 8000): its counters say how many calls it saw and how many it aborted or delayed. What the client
# sees also holds recommendation's own breaker: after DATA_BREAKER_THRESHOLD consecutive failures a pod answers 503
# at once for a while without calling data, so such calls never reach the filter.
fault_stat() { rec_stat "http.outbound_0.0.0.0_8000.$1"; }
await breakers_closed || not_ok "recommendation's breakers are open before the fault examples"
abort_pct=$(awk '/abort:/ { a = 1 } a && /value:/ { print $2; exit }' istio/examples/fault-abort.yaml)
abort_status=$(awk '/httpStatus:/ { print $2; exit }' istio/examples/fault-abort.yaml)
k apply -f istio/examples/fault-abort.yaml >/dev/null
await route_has '"abort"' || not_ok "the abort fault never reached recommendation's sidecars"
n=1000
d0=$(data_seen); s0=$(fault_stat downstream_rq_total); x0=$(fault_stat fault.aborts_injected)
load "$PROBE_NS" outsider abort "$gateway/recommend" -n "$n" -c 8 -qps 200 -timeout 15s
d1=$(data_seen); s1=$(fault_stat downstream_rq_total); x1=$(fault_stat fault.aborts_injected)
seen=$((s1 - s0)) aborted=$((x1 - x0))
[ "$seen" -ge $((n / 4)) ] && within "$aborted" "$seen" "$(awk -v p="$abort_pct" 'BEGIN { print p / 100 }')" \
  && ok "fault-abort.yaml ($abort_pct % x $abort_status): recommendation's sidecars aborted $aborted of the $seen data calls they saw, within binomial tolerance ($n calls through the gateway: $(codes abort))" \
  || not_ok "fault-abort.yaml: $aborted of $seen data calls aborted, expected about $abort_pct % ($n calls through the gateway: $(codes abort))"
[ $((d1 - d0)) = $((seen - aborted)) ] && [ "$(count abort 200)" = $((seen - aborted)) ] \
  && ok "the aborted calls never reached data: data served $((d1 - d0)) = the calls not aborted = the calls answered 200" \
  || not_ok "data served $((d1 - d0)), calls not aborted $((seen - aborted)), calls answered 200 $(count abort 200)"
[ $((n - seen)) = "$(count abort 503)" ] \
  && ok "the $((n - seen)) calls that never reached the filter met recommendation's open breaker (503 at once)" \
  || not_ok "$((n - seen)) calls did not reach the filter, but $(count abort 503) were answered 503"

delay_pct=$(awk '/delay:/ { a = 1 } a && /value:/ { print $2; exit }' istio/examples/fault-delay.yaml)
delay=$(awk '/fixedDelay:/ { print $2; exit }' istio/examples/fault-delay.yaml)
agent_timeout=$(kn get deployment recommendation -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="DATA_TIMEOUT")].value}')
k apply -f istio/examples/fault-delay.yaml >/dev/null
await route_has '"fixed_delay"' || not_ok "the delay fault never reached recommendation's sidecars"
n=200
s0=$(fault_stat downstream_rq_total); x0=$(fault_stat fault.delays_injected)
load "$PROBE_NS" outsider delay "$gateway/recommend" -n "$n" -c 50 -qps 0 -timeout 15s
s1=$(fault_stat downstream_rq_total); x1=$(fault_stat fault.delays_injected)
seen=$((s1 - s0)) delayed=$((x1 - x0))
# calls in the duration buckets from the one that holds DATA_TIMEOUT up (Fortio's buckets are wide there: 5-7.5 s),
# and the lower bound of those buckets
slow=$(jq --argjson t "${agent_timeout%s}" '[.DurationHistogram.Data[] | select(.End > $t) | .Count] | add // 0' "$tmp/delay.json")
slow_from=$(jq --argjson t "${agent_timeout%s}" '[.DurationHistogram.Data[] | select(.End > $t) | .Start] | min // 0' "$tmp/delay.json")
[ "$seen" -ge $((n / 4)) ] && within "$delayed" "$seen" "$(awk -v p="$delay_pct" 'BEGIN { print p / 100 }')" \
  && ok "fault-delay.yaml ($delay_pct % x $delay): recommendation's sidecars delayed $delayed of the $seen data calls they saw, within binomial tolerance ($n calls through the gateway: $(codes delay))" \
  || not_ok "fault-delay.yaml: $delayed of $seen data calls delayed, expected about $delay_pct % ($n calls through the gateway: $(codes delay))"
[ "$(count delay 504)" = "$delayed" ] && [ "$slow" = "$delayed" ] && [ "$(count delay 200)" = $((seen - delayed)) ] \
  && ok "each delayed call ended in 504 when recommendation's DATA_TIMEOUT ($agent_timeout, shorter than the $delay delay) ran out: $delayed x 504, $slow calls took $slow_from s or more; the other $((seen - delayed)) 200" \
  || not_ok "delayed $delayed: 504 $(count delay 504), $slow calls took $slow_from s or more, 200 $(count delay 200) (expected $((seen - delayed)))"
[ $((n - seen)) = "$(count delay 503)" ] \
  && ok "the $((n - seen)) calls that never reached the filter met recommendation's open breaker (503 at once)" \
  || not_ok "$((n - seen)) calls did not reach the filter, but $(count delay 503) were answered 503"

k apply -f istio/virtualservice-data.yaml >/dev/null
await route_lacks 'envoy.filters.http.fault' || not_ok "the faults were not removed from recommendation's sidecars"
# The delays opened recommendation's breakers: measured once they are closed again.
await breakers_closed || not_ok "recommendation's breakers stayed open after the faults were removed"
load "$PROBE_NS" outsider nofault "$gateway/recommend" -n 300 -c 8 -qps 200 -timeout 15s
[ "$(count nofault 200)" = 300 ] && ok "faults removed (virtualservice-data.yaml re-applied): 300 of 300 calls 200" \
  || not_ok "after removing the faults: $(codes nofault)"
}

# --- 6. canary -----------------------------------------------------------------------------------------------------------
check_6() {
step "6. canary (deploy/istio-canary): the 90/10 split through the ingress gateway"
k apply -k deploy/istio-canary >/dev/null && ok "kubectl apply -k deploy/istio-canary" || not_ok "kubectl apply -k deploy/istio-canary"
kn wait --for=condition=Available deployment/recommendation-v2 --timeout=180s >/dev/null \
  && ok "recommendation-v2 Available" || not_ok "recommendation-v2 not Available"
weight_v2=$(kn get virtualservice recommendation-ingress -o json | jq '[.spec.http[0].route[] | select(.destination.subset == "v2") | .weight] | add')
gw_pod=$(k -n istio-system get pods -l istio=ingressgateway -o jsonpath='{.items[0].metadata.name}')
gateway_has_v2() { envoy istio-system "$gw_pod" clusters | grep -E "^outbound\|8000\|v2\|recommendation\.$NS\.svc\.cluster\.local::.*health_flags::healthy" >/dev/null; }
await gateway_has_v2 \
  || not_ok "the gateway never got a healthy v2 endpoint"
# per-version counts from each recommendation pod's own /metrics: which pod answered is what the split is about
rec_counts() {
  local v p s
  for v in v1 v2; do
    s=0
    for p in $(pods "app=recommendation,version=$v"); do s=$((s + $(app_metric "$NS" "$p" /recommend))); done
    echo "$v $s"
  done
}
settled rec_counts >"$tmp/canary-before"
n=1000
load "$PROBE_NS" outsider canary "$gateway/recommend" -n "$n" -c 8 -qps 200 -timeout 15s
settled rec_counts >"$tmp/canary-after"
v1=$(( $(awk '$1 == "v1" { print $2 }' "$tmp/canary-after") - $(awk '$1 == "v1" { print $2 }' "$tmp/canary-before") ))
v2=$(( $(awk '$1 == "v2" { print $2 }' "$tmp/canary-after") - $(awk '$1 == "v2" { print $2 }' "$tmp/canary-before") ))
[ "$(count canary 200)" = "$n" ] && [ $((v1 + v2)) = "$n" ] \
  && within "$v2" "$n" "$(awk -v w="$weight_v2" 'BEGIN { print w / 100 }')" \
  && ok "$n calls through the gateway: v1 pods served $v1, v2 pods $v2 (weight $weight_v2 %), within binomial tolerance" \
  || not_ok "canary split: $(codes canary); v1 pods $v1, v2 pods $v2, expected about $weight_v2 % on v2"
# The per-answer checks below read each answer's headers and body, 400 requests one by one. A `kubectl exec` per
# request cost about half a second each (over 3 min in all); a port-forward to the gateway's Service carries them in
# a few seconds. Same gateway, same routes (the Host header is the one the pods use), another client.
k -n istio-system port-forward svc/istio-ingressgateway :80 >"$tmp/gw-forward" 2>&1 &
background+=($!)
deadline=$((SECONDS + 30))
until grep -q '^Forwarding from 127.0.0.1:' "$tmp/gw-forward" || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.1; done
gw_local=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$tmp/gw-forward" | head -1)
[ -n "$gw_local" ] || log "port-forward to the ingress gateway: $(cat "$tmp/gw-forward")"
gw_get() {   # gw_get PATH: "<status>" of one GET through the gateway; headers in $tmp/headers, body in $tmp/body
  curl -sS -m 15 -H "Host: ${gateway#http://}" -D "$tmp/headers" -o "$tmp/body" -w '%{http_code}' \
    "http://127.0.0.1:${gw_local:-0}$1" 2>/dev/null || echo 000
}
# The response says which version answered: the canary's routes set x-recommendation-version (istio/canary/).
: >"$tmp/versions"
for _ in $(seq 200); do
  gw_get /recommend >/dev/null
  awk -F': ' 'tolower($1) == "x-recommendation-version" { print $2 }' "$tmp/headers" | tr -d '\r' >>"$tmp/versions"
done
h2=$(grep -cx v2 "$tmp/versions" || true)
h1=$(grep -cx v1 "$tmp/versions" || true)
[ $((h1 + h2)) = 200 ] && within "$h2" 200 "$(awk -v w="$weight_v2" 'BEGIN { print w / 100 }')" \
  && ok "200 answers through the gateway name their version in x-recommendation-version: v1 $h1, v2 $h2, within binomial tolerance" \
  || not_ok "x-recommendation-version in 200 answers: $(sort "$tmp/versions" | uniq -c | tr '\n' ' ')"
# The body names the model that answered (issue 16: "model": "v1" | "v2", MODEL=v2 set by the canary's patch), and
# it is the model of the version the canary's routes say answered (x-recommendation-version).
: >"$tmp/models"
for _ in $(seq 200); do
  code=$(gw_get "/recommend?user=u1&limit=5")
  model=$(jq -r 'if (.items | length) == 5 then .model else "bad-items" end' "$tmp/body" 2>/dev/null || echo not-json)
  version=$(awk -F': ' 'tolower($1) == "x-recommendation-version" { print $2 }' "$tmp/headers" | tr -d '\r')
  echo "$code $model $version" >>"$tmp/models"
done
m2=$(grep -cx '200 v2 v2' "$tmp/models" || true)
m1=$(grep -cx '200 v1 v1' "$tmp/models" || true)
[ $((m1 + m2)) = 200 ] && within "$m2" 200 "$(awk -v w="$weight_v2" 'BEGIN { print w / 100 }')" \
  && ok "200 answers to /recommend?user=u1&limit=5 name their model, that of the version that answered: v1 $m1, v2 $m2, within binomial tolerance" \
  || not_ok "\"model\" in 200 answers (status model version): $(sort "$tmp/models" | uniq -c | tr '\n' ' ')"
kill "${background[-1]}" 2>/dev/null; wait "${background[-1]}" 2>/dev/null || true
unset 'background[-1]'
}

# --- 9. rolling restarts under load --------------------------------------------------------------------------------------
check_9() {
step "9. rolling restart under load, sidecars and all"
# restart_under_load DEPLOYMENT LABEL: restart while a load (100 req/s, 8 connections) runs against recommendation
# from a meshed pod: from 3 s before the restart until 5 s after its last old pod is gone, when it is stopped
# (scripts/ci/lib/fortio-run.sh), at the latest after LOAD_SECONDS; a load that reached that bound first fails.
restart_under_load() {
  local deployment=$1 label=$2 old
  # the Deployment's own pods (its selector: recommendation's leaves the canary's v2 pods out)
  old=$(kn get pods -l "$(kn get deployment "$deployment" -o json | jq -r '.spec.selector.matchLabels | to_entries | map("\(.key)=\(.value)") | join(",")')" -o name | tr '\n' ' ')
  load_start "$NS" intruder "roll-$label" "$LOAD_SECONDS" "http://recommendation.$NS.svc.cluster.local:8000/recommend" 100 8 10s
  background+=("$load_pid")
  sleep 3   # a few seconds of steady state before the restart
  local t=$SECONDS
  kn rollout restart "deployment/$deployment" >/dev/null
  rollout "$deployment" || not_ok "$label: the rollout did not finish"
  local took=$((SECONDS - t))
  # shellcheck disable=SC2086
  kn wait --for=delete $old --timeout=60s >/dev/null 2>&1 || true
  sleep 5   # the load goes on 5 s past the last old pod (a window, not a readiness wait)
  load_stop "$NS" intruder "roll-$label" \
    || not_ok "$label: the load ended (after ${load_ran:-?} s) before the rollout was done + 5 s (raise ISTIO_LOAD_SECONDS, now $LOAD_SECONDS)"
  unset 'background[-1]'
  jq -e .RetCodes "$tmp/roll-$label.json" >/dev/null 2>&1 || echo '{"RetCodes":{}}' >"$tmp/roll-$label.json"
  local n ok200
  n=$(total "roll-$label"); ok200=$(count "roll-$label" 200)
  note "$label: $n requests in ${load_ran:-?} s, $((n - ok200)) failed ($(codes "roll-$label")); rollout took ${took} s"
  [ "$n" -gt 0 ] && [ "$ok200" = "$n" ] && ok "$label: $n requests, all 200" \
    || not_ok "$label: $((n - ok200)) of $n requests failed ($(codes "roll-$label"))"
}
mode=$([ "$want_native" = true ] && echo "native sidecars" || echo "sidecar containers")
restart_under_load data "restart data ($mode)"
restart_under_load recommendation "restart recommendation v1 ($mode)"
if [ "$want_native" = true ]; then
  # The classic layout Kubernetes < 1.33 gets, forced with Istio's annotation: the sidecar is a container that gets
  # SIGTERM together with the agent, so its drain must outlast the agent's.
  for d in data recommendation; do
    kn patch deployment "$d" --type merge -p '{"spec":{"template":{"metadata":{"annotations":{"sidecar.istio.io/nativeSidecar":"false"}}}}}' >/dev/null
    rollout "$d" || not_ok "$d did not roll out with classic sidecars"
  done
  classic=$(kn get pods -l app=data -o json | jq '[.items[] | [.spec.containers[].name] | index("istio-proxy") != null] | all')
  [ "$classic" = true ] && ok "classic sidecars (sidecar.istio.io/nativeSidecar: \"false\"): istio-proxy is a container" \
    || not_ok "the annotation did not give classic sidecars"
  restart_under_load data "restart data (classic sidecars)"
  restart_under_load recommendation "restart recommendation v1 (classic sidecars)"
fi
}

# --- figures -------------------------------------------------------------------------------------------------------------
check_figures() {
step "figures"
node_names=$(k get nodes -o jsonpath='{.items[*].metadata.name}')
for node in $node_names; do k get --raw "/api/v1/nodes/$node/proxy/stats/summary"; done | jq -s '[.[].pods[]]' >"$tmp/summary.json"
mib() { jq -r --arg ns "$1" --arg pod "$2" --arg c "$3" \
  '[.[] | select(.podRef.namespace == $ns and (.podRef.name | startswith($pod))) | .containers[] | select(.name == $c) | .memory.workingSetBytes] | first // 0 | . / 1048576 | . * 10 | round / 10' "$tmp/summary.json"; }
note "memory (kubelet summary, working set): istiod $(mib istio-system istiod- discovery) MiB, one sidecar (istio-proxy in a data pod) $(mib "$NS" data- istio-proxy) MiB, the ingress gateway $(mib istio-system istio-ingressgateway- istio-proxy) MiB, the data agent next to it $(mib "$NS" data- data) MiB"

# One mesh hop, from the benchmark script (one short round: the figure of the run, not a benchmark; run
# bench/istio-hop.sh with more rounds for that).
if CLUSTER_KUBECTL=$KUBECTL CLUSTER_PROBE_IMAGE=$PROBE_IMAGE BENCH_ROUNDS=1 BENCH_SECONDS=15 bench/istio-hop.sh >"$tmp/hop.txt" 2>&1; then
  note "$(tail -n1 "$tmp/hop.txt") (bench/istio-hop.sh, 1 round of 15 s at 100 requests/s)"
  ok "latency of one mesh hop measured (bench/istio-hop.sh)"
else
  not_ok "bench/istio-hop.sh failed: $(tail -n3 "$tmp/hop.txt" | tr '\n' ' ')"
fi
}

# --- the checks, in order --------------------------------------------------------------------------------------------
# ISTIO_CHECKS (default: all, "2 3 8 4 5 7 6 9 figures") picks the checks that run after check 1, which applies
# istio/ and starts the probe pods every other check calls from; they run in the order given and may repeat, e.g.
# ISTIO_CHECKS="4 5 5 5" runs check 5 three times after check 4, on one cluster. Each check leaves data healthy (no
# fault, faulty replica or example left applied), though not recommendation's breakers closed (4 opens them; 5 and
# 7, which count caller errors, wait for them to close); 6 adds the canary and 9 leaves classic sidecars: keep those
# last. A check left out is reported as skipped.
all_checks="2 3 8 4 5 7 6 9 figures"
checks=${ISTIO_CHECKS:-$all_checks}
for c in $checks; do
  [[ " $all_checks " == *" $c "* ]] || { log "ISTIO_CHECKS: no check '$c' (the checks: 1, always run, then $all_checks)"; exit 2; }
done
check_1
for c in $checks; do "check_$c"; done
step_done
for c in $all_checks; do
  [[ " $checks " == *" $c "* ]] || skip "check $c left out (ISTIO_CHECKS=\"$checks\")"
done
