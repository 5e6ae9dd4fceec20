#!/usr/bin/env bash
# Cluster area check (issue 11): the agents on a real Kubernetes cluster, deployed the ways users deploy them.
#
#   scripts/ci/cluster.sh                          brings this machine's cluster up (scripts/cluster.sh), runs the
#                                                  checks, and tears down what it started (proving down leaves the
#                                                  machine as it was)
#   KUBECONFIG=~/.kube/config scripts/ci/cluster.sh   the same checks against any cluster (kind, a cloud one)
#
#  1. the tutorial's command, verbatim from the README: both Deployments Available; /recommend through the Service
#     (from the node, from a pod, through kubectl port-forward) returns exactly the seed contract
#  2. `kubectl apply -k k8s/`, and every kustomize entry point accepted by the real API server (server-side dry run)
#     with the upstream Istio and Dapr CRDs installed; a privileged pod in `agents` is rejected by Pod Security and a
#     VirtualService breaking a CEL rule of its CRD by the API server
#  3. rolling restart of data, then of recommendation, under load through the Service (wrk from the node): every
#     request answered 2xx
#  4. a data pod killed hard, then data scaled to 0 and back: recommendation answers 503 JSON fast, recovers by
#     itself, is never restarted
#  5. data scaled to 3: recommendation's calls reach every replica (per-pod counts from /metrics)
#  6. NetworkPolicy: whether the cluster enforces k8s/networkpolicy.yaml (default deny), proven from probe pods
# Figure: p50/p99 of /recommend direct (100 req/s from a pod, as scripts/ci/dapr-cluster.sh measures it through Dapr).
# They run in the order 1, 3, 4, 5, 2, 6: the policies `apply -k` brings would cut off the client pod of 1-5.
#
# Another cluster needs the images loaded under the names the manifests use (agent-mesh/data:0.1.0,
# agent-mesh/recommendation:0.1.0) and the probe image (scripts/cluster.sh import fortio prints its name; build it
# with scripts/cluster/images/fortio), and no namespace `agents` or `agent-mesh-probe` (the checks create and delete
# them). Steps that need a node (3, and "from the node" in 1) run through CLUSTER_NODE_EXEC (a command prefix that
# runs a command where Service addresses answer, with curl and wrk installed); without it they are reported as
# skipped, never as passed.
#
# Environment: KUBECONFIG, CLUSTER_NODE_EXEC, CLUSTER_KUBECTL (default: the kubectl scripts/tools/install-kubernetes.sh
# builds), CLUSTER_PROBE_IMAGE (default localhost/agent-mesh/fortio:1.68.2), CLUSTER_FIGURE_SECONDS (the direct-path
# latency window, default 20), CLUSTER_LOAD_SECONDS (bound of the
# load around each rollout, default 90; it stops 5 s after the old pods are gone where wrk runs below this shell), AGENT_MESH_CACHE.
# Last line: "cluster: N passed, M failed, K skipped"; exit 0 only when nothing failed.
# `[ test ] && ok ... || not_ok ...` is used as if-then-else throughout: ok only echoes and cannot fail.
# shellcheck disable=SC2015
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=scripts/ci/lib/host-snapshot.sh
. scripts/ci/lib/host-snapshot.sh
# shellcheck source=scripts/ci/lib/fortio-run.sh
. scripts/ci/lib/fortio-run.sh
# shellcheck source=scripts/ci/lib/steps.sh
. scripts/ci/lib/steps.sh

CONTRACT='{"recommendation":"Based on data","data":{"processed_data":"some_insights"}}'
NS=agents
PROBE_NS=agent-mesh-probe
LOAD_SECONDS=${CLUSTER_LOAD_SECONDS:-90}
FIGURE_SECONDS=${CLUSTER_FIGURE_SECONDS:-20}
MAX_503_SECONDS=1

started=$SECONDS
passed=0
failed=0
skipped=0
notes=()
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
not_ok() { failed=$((failed + 1)); echo "FAIL - $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP - $*"; }
note() { notes+=("$*"); echo "     . $*"; }
log() { echo "ci/cluster: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

tmp=$(mktemp -d)
own=0
background=()

KUBECTL=${CLUSTER_KUBECTL:-}
[ -n "$KUBECTL" ] || KUBECTL="$(scripts/tools/install-kubernetes.sh | tail -n1)/kubectl"
k() { "$KUBECTL" "$@"; }
kn() { "$KUBECTL" -n "$NS" "$@"; }

diagnostics() {
  echo "---- diagnostics"
  k get nodes -o wide 2>&1 | head -5 || true
  k get pods -A -o wide 2>&1 | head -40 || true
  k get events -A --sort-by=.lastTimestamp 2>&1 | tail -25 || true
  local pod
  for pod in $(kn get pods -o name 2>/dev/null | head -6); do
    echo "---- logs $pod"
    kn logs "$pod" --tail=15 2>&1 || true
  done
}

finish() {
  local rc=$? pid
  set +e
  exec 1>&3 2>&4   # the report goes to the script's own output, whatever redirection was active at exit
  for pid in "${background[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  { [ "$rc" != 0 ] || [ "$failed" != 0 ]; } && diagnostics
  if [ "$own" = 1 ]; then
    step "down: scripts/cluster.sh down leaves the machine as it was"
    down_as_before "$tmp/host-before" "$tmp"
  else
    step "cleanup: namespaces $NS and $PROBE_NS deleted (the next check on this cluster needs them absent)"
    drop_namespaces 120 "$NS" "$PROBE_NS" || not_ok "namespaces $NS / $PROBE_NS still there 120 s after their deletion"
  fi
  rm -rf "$tmp"
  [ "$rc" = 0 ] || not_ok "the check script stopped early (exit $rc)"
  echo
  printf '%s\n' "${notes[@]/#/   }"
  step_report
  echo "   check duration $((SECONDS - started)) s"
  echo "cluster: $passed passed, $failed failed, $skipped skipped"
  [ "$failed" = 0 ] && exit 0 || exit 1
}
exec 3>&1 4>&2
trap finish EXIT

# --- the cluster --------------------------------------------------------------------------------------------------
step "cluster"
node=()
if [ -z "${KUBECONFIG:-}" ]; then
  own=1
  scripts/cluster.sh status >/dev/null 2>&1 && { log "a cluster runs already: run scripts/cluster.sh down first, or set KUBECONFIG to check it"; exit 1; }
  host_prerequisites "$root"
  host_snapshot >"$tmp/host-before"
  t=$SECONDS
  eval "$(scripts/cluster.sh up)"
  note "cluster up $((SECONDS - t)) s"
  node=(scripts/cluster.sh exec)
  t=$SECONDS
  PROBE_IMAGE=$(scripts/cluster.sh import fortio | tail -n1)
  note "probe image $PROBE_IMAGE imported in $((SECONDS - t)) s"
else
  [ -n "${CLUSTER_NODE_EXEC:-}" ] && read -r -a node <<<"$CLUSTER_NODE_EXEC"
  PROBE_IMAGE=${CLUSTER_PROBE_IMAGE:-localhost/agent-mesh/fortio:1.68.2}
  for ns in "$NS" "$PROBE_NS"; do
    k get namespace "$ns" >/dev/null 2>&1 && { log "namespace $ns exists in this cluster; the checks need it absent"; exit 1; }
  done
fi
k version -o json | jq -r '"server \(.serverVersion.gitVersion), client \(.clientVersion.gitVersion)"' | sed 's/^/     . /'
k wait --for=condition=Ready node --all --timeout=60s >/dev/null && ok "every node Ready" || not_ok "nodes not Ready"
# descendant PID NAME: the process id of PID or the first process below it named NAME (none: empty)
descendant() {
  local child
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] && { echo "$1"; return; }
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    descendant "$child" "$2" | grep . && return
  done
  return 0
}
# node_get PATH-AND-QUERY [curl args]: GET from the node through recommendation's Service address.
rec_ip=""
node_get() {
  local path=$1
  shift
  "${node[@]}" curl -sS -m 5 "$@" "http://$rec_ip:8000$path"
}

# probe_pod NS NAME: a Fortio pod NAME (label app=NAME) in NS, an HTTP client inside the cluster that meets the
# restricted Pod Security profile; returns when it is Ready.
probe_pod() {
  local ns=$1 name=$2
  k -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  labels: {app: $name}
spec:
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: fortio
      image: $PROBE_IMAGE
      imagePullPolicy: IfNotPresent
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
EOF
  k -n "$ns" wait --for=condition=Ready "pod/$name" --timeout=60s >/dev/null
}
# probe_get NS POD URL: the HTTP status fortio got (000 when it got none); the body in $tmp/probe-body. fortio curl
# writes the body to stdout, the status line and headers to stderr.
probe_get() {
  local code
  timeout 20 "$KUBECTL" -n "$1" exec "$2" -- fortio curl -timeout 3s "$3" >"$tmp/probe-body" 2>"$tmp/probe-err" || true
  code=$(sed -n 's/^HTTP\/1\.[01] \([0-9][0-9][0-9]\).*/\1/p' "$tmp/probe-err" | sed -n 1p)
  echo "${code:-000}"
}

# served APP ROUTE: "<pod> <requests served on ROUTE>" for each running pod of APP, from its /metrics (through the
# API server's pod proxy, so it works on any cluster).
served() {
  local pod
  for pod in $(kn get pods -l "app=$1" --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}'); do
    echo "$pod $(k get --request-timeout=10s --raw "/api/v1/namespaces/$NS/pods/$pod:8000/proxy/metrics" \
      | awk -v r="route=\"$2\"" 'index($0, "http_server_requests_total{") == 1 && index($0, r) { s += $NF } END { print s + 0 }')"
  done | sort
}

# data_outcomes: "<outcome> <count>" of recommendation's data calls, summed over its running pods.
data_outcomes() {
  local pod
  for pod in $(kn get pods -l app=recommendation --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}'); do
    k get --request-timeout=10s --raw "/api/v1/namespaces/$NS/pods/$pod:8000/proxy/metrics"
  done | sed -n 's/^data_calls_total{.*outcome="\([a-z_]*\)".*} \([0-9]*\)$/\1 \2/p' \
    | awk '{ s[$1] += $2 } END { for (o in s) print o, s[o] }' | sort
}

# wait_routed APP ROUTE: until every replica of APP has answered a request sent to its Service from the client pod.
# An Available Deployment is not yet a routed one: the endpoints reach kube-proxy (or the CNI) a moment later, and
# until then calls fail or miss the new replicas.
wait_routed() {
  local app=$1 route=$2 replicas deadline=$((SECONDS + 60))
  replicas=$(kn get deployment "$app" -o jsonpath='{.spec.replicas}')
  served "$app" "$route" >"$tmp/routed-before"
  while :; do
    probe_get "$NS" client "http://$app.$NS.svc.cluster.local:8000$route" >/dev/null
    served "$app" "$route" >"$tmp/routed-now"
    if [ "$(join "$tmp/routed-before" "$tmp/routed-now" | awk '$3 > $2' | wc -l)" = "$replicas" ]; then
      return 0
    fi
    [ "$SECONDS" -lt "$deadline" ] || { log "$app: not every replica answered through the Service in 60 s"; return 1; }
  done
}

# --- 1. the tutorial's way -------------------------------------------------------------------------------------------
step "1. the tutorial: kubectl apply -f k8s/namespace.yaml -f k8s/recommendation.yaml -f k8s/data.yaml"
tutorial=$(grep -m1 -E '^kubectl apply -f k8s/namespace\.yaml' README.md | sed 's/[[:space:]]*#.*//')
[ -n "$tutorial" ] || { not_ok "the README has no 'kubectl apply -f k8s/namespace.yaml ...' line"; exit 1; }
read -r -a tutorial_args <<<"${tutorial#kubectl }"
t=$SECONDS
k "${tutorial_args[@]}" | sed 's/^/     /'
if kn wait --for=condition=Available deployment/data deployment/recommendation --timeout=180s >/dev/null; then
  ok "README's '$tutorial': both Deployments Available in $((SECONDS - t)) s"
else
  not_ok "Deployments not Available within 180 s of '$tutorial'"
  exit 1
fi
rec_ip=$(kn get service recommendation -o jsonpath='{.spec.clusterIP}')
# The client pod (Fortio) the checks send in-cluster requests from; it meets the namespace's restricted profile.
probe_pod "$NS" client
t=$SECONDS
wait_routed data /data && wait_routed recommendation /recommend \
  && ok "every replica of data and recommendation answers through its Service ($((SECONDS - t)) s after Available)" \
  || not_ok "the Services do not reach every replica"

if [ ${#node[@]} -gt 0 ]; then
  out=$(node_get /recommend -w '\n%{http_code} %{content_type}') || true
  [ "$out" = "$CONTRACT"$'\n'"200 application/json" ] \
    && ok "from the node: GET http://$rec_ip:8000/recommend -> 200 application/json $CONTRACT" \
    || not_ok "from the node: GET /recommend -> $(tr '\n' ' ' <<<"$out")"
else
  skip "from the node: no CLUSTER_NODE_EXEC given"
fi

code=$(probe_get "$NS" client "http://recommendation.$NS.svc.cluster.local:8000/recommend")
[ "$code" = 200 ] && [ "$(cat "$tmp/probe-body")" = "$CONTRACT" ] \
  && ok "from a pod, by DNS name: GET http://recommendation.$NS.svc.cluster.local:8000/recommend -> 200 contract" \
  || not_ok "from a pod: /recommend -> $code $(cat "$tmp/probe-body")"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kn port-forward service/recommendation "$port:8000" >"$tmp/port-forward.log" 2>&1 &
background+=($!)
deadline=$((SECONDS + 30))
until grep -q '^Forwarding from' "$tmp/port-forward.log" || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.2; done
out=$(curl -sS -m 5 -w '\n%{http_code} %{content_type}' "http://127.0.0.1:$port/recommend" 2>&1) || true
[ "$out" = "$CONTRACT"$'\n'"200 application/json" ] \
  && ok "kubectl port-forward service/recommendation: curl localhost:$port/recommend -> 200 contract" \
  || not_ok "through port-forward: /recommend -> $(tr '\n' ' ' <<<"$out") ($(tr '\n' ' ' <"$tmp/port-forward.log"))"
# Without a node to run on, the later checks keep using this port-forward.
if [ ${#node[@]} -gt 0 ]; then
  kill "${background[-1]}" 2>/dev/null || true
  wait "${background[-1]}" 2>/dev/null || true
  unset 'background[-1]'
fi
# rec_get PATH [curl args]: GET recommendation through its Service from the node, else through the port-forward.
rec_get() {
  local path=$1
  shift
  if [ ${#node[@]} -gt 0 ]; then node_get "$path" "$@"; else curl -sS -m 5 "$@" "http://127.0.0.1:$port$path"; fi
}

# --- figures: the direct path ----------------------------------------------------------------------------------------
step "figures: /recommend direct (k8s/), the baseline for scripts/ci/dapr-cluster.sh's figure through Dapr"
# The same load as dapr-cluster.sh's latency window (100 req/s, 4 connections, from a pod through the Service), on
# the deployment that is up here anyway.
if kn exec client -- fortio load -quiet -timeout 5s -qps 100 -c 4 -t "${FIGURE_SECONDS}s" -json - \
  "http://recommendation.$NS.svc.cluster.local:8000/recommend" >"$tmp/direct.json" 2>"$tmp/direct.err"; then
  note "direct (k8s/), 100 req/s for $FIGURE_SECONDS s from a pod: $(fortio_latency "$tmp/direct.json")"
else
  not_ok "fortio load on the plain variant failed: $(tail -3 "$tmp/direct.err")"
fi

# --- 3. rolling restarts under load --------------------------------------------------------------------------------
step "3. rolling restart under load (wrk through the Service, from the node)"
if [ ${#node[@]} -eq 0 ]; then
  skip "rolling restarts under load: no CLUSTER_NODE_EXEC to run wrk on"
else
  for deployment in data recommendation; do
    old_pods=$(kn get pods -l "app=$deployment" -o name | tr '\n' ' ')
    data_outcomes >"$tmp/outcomes-before"
    # wrk: a fixed window of keep-alive load, no retries, every socket error counted.
    "${node[@]}" stdbuf -oL wrk -t1 -c8 -d"${LOAD_SECONDS}s" --timeout 5s "http://$rec_ip:8000/recommend" \
      >"$tmp/wrk-$deployment.txt" 2>&1 &
    load_pid=$!
    background+=("$load_pid")
    load_started=$(now)
    deadline=$((SECONDS + 10))
    until grep -q '^Running' "$tmp/wrk-$deployment.txt" || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.1; done
    t=$(now)
    kn rollout restart "deployment/$deployment" >/dev/null
    kn rollout status "deployment/$deployment" --timeout=120s >/dev/null || not_ok "rollout of $deployment did not finish in 120 s"
    # The rollout reports success once the new pods are available; the old ones still drain (SHUTDOWN_DELAY,
    # DRAIN_TIMEOUT) and must be gone while the load still runs.
    # shellcheck disable=SC2086
    kn wait --for=delete $old_pods --timeout=60s >/dev/null 2>&1 || not_ok "old $deployment pods still there 60 s after the rollout"
    drained=$(now)
    # The load goes on 5 s past the last old pod, then stops: wrk ends early on SIGINT and still reports what it
    # measured. It is reachable when it runs below this shell (scripts/cluster.sh exec, or a CLUSTER_NODE_EXEC
    # that execs locally); otherwise it runs its whole window.
    sleep 5
    wrk_pid=$(descendant "$load_pid" wrk)
    [ -z "$wrk_pid" ] || kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$load_pid" || true
    unset 'background[-1]'
    ran=$(sed -n 's/^ *[0-9]* requests in \([0-9.]*\)\(m\{0,1\}s\).*/\1 \2/p' "$tmp/wrk-$deployment.txt" \
      | awk '{ print ($2 == "ms") ? $1 / 1000 : $1 }')
    note "rollout restart $deployment: new pods available and old pods gone after $(elapsed "$t" "$drained") s (load ran ${ran:-?} s)"
    if [ -n "$ran" ] && lt "$(elapsed "$load_started" "$drained")" "$ran"; then
      ok "the load (${ran} s, at most ${LOAD_SECONDS} s) covered the whole rollout of $deployment"
    else
      not_ok "the rollout of $deployment outlasted the load (${ran:-?} s, at most ${LOAD_SECONDS} s): raise CLUSTER_LOAD_SECONDS"
    fi
    requests=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$tmp/wrk-$deployment.txt")
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$tmp/wrk-$deployment.txt")
    socket=$(sed -n 's/^ *Socket errors: *\(.*\)$/\1/p' "$tmp/wrk-$deployment.txt")
    errors=$(awk -F'[ ,]+' '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i } END { print s + 0 }' <<<"$socket")
    note "restart $deployment under load: ${requests:-?} requests, ${non2xx:-0} non-2xx, socket errors: ${socket:-none}"
    if [ -n "$requests" ] && [ "$requests" -gt 0 ] && [ "${non2xx:-0}" = 0 ] && [ "$errors" = 0 ]; then
      ok "rollout restart $deployment under load: $requests requests, all 2xx, no connection errors"
    else
      not_ok "rollout restart $deployment under load: ${requests:-?} requests, ${non2xx:-0} non-2xx, socket errors: ${socket:-none}"
      sed 's/^/       /' "$tmp/wrk-$deployment.txt"
    fi
    # How recommendation's calls to data ended meanwhile (only while its pods survive: the data rollout).
    if [ "$deployment" = data ]; then
      data_outcomes >"$tmp/outcomes-after"
      outcomes=$(join -a2 "$tmp/outcomes-before" "$tmp/outcomes-after" \
        | awk 'NF == 2 { $3 = $2; $2 = 0 } $3 > $2 && $1 != "ok" { printf "%s %d, ", $1, $3 - $2 }')
      note "  recommendation's failed data calls meanwhile (data_calls_total by outcome): ${outcomes:-none}"
    fi
  done
fi

# --- 4. data killed hard -------------------------------------------------------------------------------------------
step "4. a data pod killed hard (--grace-period=0 --force)"
wait_count() {   # wait_count APP N: until exactly N pods of APP exist (terminating ones included)
  local deadline=$((SECONDS + 90))
  until [ "$(kn get pods -l "app=$1" -o name | wc -l)" = "$2" ]; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
rec_state() { kn get pods -l app=recommendation -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount} {end}'; }
# poll_recommend SECONDS STOP...: GET /recommend every 0.1 s from the node (or the port-forward), logging
# "<s since start> <status> <time_total> <body>" to $tmp/poll.log, until the command STOP succeeds after an answer
# (it sees last_status). Sets seen503, slow503 (503s taking MAX_503_SECONDS or more), bad (anything but the 200
# contract or a 503 with a JSON detail), max503, and stopped (seconds until STOP succeeded; empty if it never did).
poll_recommend() {
  local seconds=$1 start out body took deadline
  shift
  start=$(now)
  deadline=$((SECONDS + seconds))
  seen503=0 slow503=0 bad=0 max503=0 stopped="" last_status=""
  : >"$tmp/poll.log"
  while [ "$SECONDS" -lt "$deadline" ]; do
    out=$(rec_get /recommend -w '\n%{http_code} %{time_total}' 2>&1) || true
    last_status=${out##*$'\n'}
    body=${out%$'\n'*}
    took=${last_status#* }
    last_status=${last_status% *}
    echo "$(elapsed "$start" "$(now)") $last_status $took $body" >>"$tmp/poll.log"
    if [ "$last_status" = 503 ]; then
      seen503=$((seen503 + 1))
      jq -e '.detail | type == "string" and length > 0' <<<"$body" >/dev/null 2>&1 || bad=$((bad + 1))
      lt "$took" "$MAX_503_SECONDS" || slow503=$((slow503 + 1))
      lt "$max503" "$took" && max503=$took
    elif [ "$last_status" != 200 ] || [ "$body" != "$CONTRACT" ]; then
      bad=$((bad + 1))
    fi
    if "$@"; then stopped=$(elapsed "$start" "$(now)"); return 0; fi
    sleep 0.1
  done
}
data_ready() { [ "$(kn get pods -l app=data -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}')" = True ]; }
# After a 200: the only data pod is the replacement, it is Ready, and it has served recommendation's calls.
replacement_serving() {
  [ "$last_status" = 200 ] && data_ready \
    && [ "$(kn get pods -l app=data -o jsonpath='{.items[0].metadata.name}')" != "$victim" ] \
    && [ "$(served data /data | awk '{ print $2 }')" -gt 0 ]
}
twenty_503() { [ "$seen503" -ge 20 ]; }
recovered_200() { [ "$last_status" = 200 ]; }

kn scale deployment/data --replicas=1 >/dev/null
kn rollout status deployment/data --timeout=120s >/dev/null
wait_count data 1 || not_ok "data did not scale down to 1 pod"
rec_before=$(rec_state)
victim=$(kn get pods -l app=data -o jsonpath='{.items[0].metadata.name}')
kn delete pod "$victim" --grace-period=0 --force >/dev/null 2>&1
# The kubelet still gives the killed container its minimum grace (2 s), and recommendation's pooled connections
# may reach it meanwhile; the replacement must be Ready and have answered before data counts as recovered.
poll_recommend 90 replacement_serving
recovered=$stopped
note "data pod killed: $seen503 answers 503 (slowest ${max503} s) until the replacement answered, ${recovered:-never} s after the kill"
[ "$bad" = 0 ] && ok "data killed: every answer was the contract or a 503 with a JSON detail ($seen503 x 503)" \
  || { not_ok "data killed: $bad answers neither 200 contract nor 503 JSON"; tail -20 "$tmp/poll.log" | sed 's/^/       /'; }
[ "$slow503" = 0 ] && ok "data killed: every 503 within ${MAX_503_SECONDS} s (slowest ${max503} s)" \
  || not_ok "data killed: $slow503 of $seen503 answers 503 took ${MAX_503_SECONDS} s or more"
[ -n "$recovered" ] && ok "recovered by itself: the replacement pod Ready and serving recommendation's calls ${recovered} s after the kill" \
  || { not_ok "no recovery within 90 s of the kill"; tail -20 "$tmp/poll.log" | sed 's/^/       /'; }

# With no data pod at all there is no race with a dying one: recommendation must answer 503 JSON fast, every time.
kn scale deployment/data --replicas=0 >/dev/null
wait_count data 0 || not_ok "data did not scale to 0"
poll_recommend 30 twenty_503
[ "$seen503" -ge 20 ] && [ "$bad" = 0 ] && [ "$slow503" = 0 ] \
  && ok "no data pod: $seen503 answers, all 503 with a JSON detail, slowest ${max503} s" \
  || { not_ok "no data pod: $seen503 x 503, $bad other, $slow503 slow"; tail -10 "$tmp/poll.log" | sed 's/^/       /'; }
kn scale deployment/data --replicas=1 >/dev/null
poll_recommend 90 recovered_200
[ -n "$stopped" ] && [ "$bad" = 0 ] && ok "data back: /recommend 200 again ${stopped} s after scaling to 1 (meanwhile $seen503 x 503)" \
  || not_ok "no 200 within 90 s of scaling data back to 1"
[ "$(rec_state)" = "$rec_before" ] && ok "recommendation pods not restarted ($rec_before)" \
  || not_ok "recommendation pods changed: before '$rec_before', after '$(rec_state)'"

# --- 5. data scaled to 3 -------------------------------------------------------------------------------------------
step "5. data scaled to 3: recommendation's calls spread over the replicas"
kn scale deployment/data --replicas=3 >/dev/null
kn rollout status deployment/data --timeout=120s >/dev/null && wait_count data 3 \
  && ok "data scaled to 3 replicas, all available" || not_ok "data did not reach 3 available replicas"
wait_routed data /data || not_ok "the third data replica gets no requests through the Service"
served data /data >"$tmp/counts-before"
# 32 concurrent requests: each recommendation pod opens many connections to data's Service, and kube-proxy spreads
# connections (not requests) over the endpoints.
if [ ${#node[@]} -gt 0 ]; then
  "${node[@]}" wrk -t1 -c32 -d5s --timeout 5s "http://$rec_ip:8000/recommend" >"$tmp/wrk-spread.txt" 2>&1 || true
else
  wrk -t1 -c32 -d5s --timeout 5s "http://127.0.0.1:$port/recommend" >"$tmp/wrk-spread.txt" 2>&1 || true
fi
served data /data >"$tmp/counts-after"
join "$tmp/counts-before" "$tmp/counts-after" | awk '{ print $1, $3 - $2 }' >"$tmp/spread"
total=$(awk '{ s += $2 } END { print s + 0 }' "$tmp/spread")
note "calls per data pod during 5 s of load: $(awk -v t="$total" '{ printf "%s %d (%.0f%%); ", $1, $2, t ? 100 * $2 / t : 0 }' "$tmp/spread")"
if [ "$(wc -l <"$tmp/spread")" = 3 ] && [ "$total" -gt 0 ] \
  && awk -v t="$total" '$2 < 0.05 * t { exit 1 }' "$tmp/spread"; then
  ok "each of the 3 data pods served at least 5 % of $total calls"
else
  not_ok "calls not spread over 3 data pods (total $total): $(tr '\n' ';' <"$tmp/spread")"
fi

# --- 2. kustomize and every entry point on the real API server -------------------------------------------------------
step "2. kubectl apply -k k8s/, and every entry point accepted by the API server"
out=$(k apply -k k8s/ 2>&1) && ok "kubectl apply -k k8s/ ($(grep -c . <<<"$out") objects)" || not_ok "kubectl apply -k k8s/: $out"
kn wait --for=condition=Available deployment/data deployment/recommendation --timeout=120s >/dev/null \
  && ok "after apply -k: both Deployments Available" || not_ok "after apply -k: Deployments not Available"

# The upstream CRDs, from the Go modules at the versions the project pins (Istio's wrapper module, daprd's).
istio_dir=$(scripts/tools/install-istio.sh --source | tail -n1)
# shellcheck disable=SC2016 # the pattern matches a literal ${DAPR_VERSION:-...}
dapr_version=$(sed -n 's/^DAPR_VERSION="\${DAPR_VERSION:-\(.*\)}"$/\1/p' scripts/tools/install-daprd.sh)
dapr_dir=$(GOWORK=off go mod download -json "github.com/dapr/dapr@v$dapr_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
crd_files=("$istio_dir/manifests/charts/base/files/crd-all.gen.yaml" "$dapr_dir"/charts/dapr/crds/*.yaml)
installed=0
for file in "${crd_files[@]}"; do
  [ -f "$file" ] || { not_ok "CRD file $file missing"; continue; }
  # Only the CRDs this cluster lacks: another cluster's own Istio or Dapr CRDs are left as they are.
  while read -r crd; do
    [ -z "$crd" ] || k get crd "$crd" >/dev/null 2>&1 || installed=$((installed + 1))
  done < <(awk '/^kind: CustomResourceDefinition/ { c = 1 } c && /^  name:/ { print $2; c = 0 }' "$file")
  k create -f "$file" >/dev/null 2>"$tmp/crd.err" || true
  if grep -v 'AlreadyExists' "$tmp/crd.err" | grep . >/dev/null; then not_ok "creating CRDs from $file: $(head -3 "$tmp/crd.err")"; fi
done
k wait --for=condition=Established crd --all --timeout=60s >/dev/null \
  && ok "Istio ($(basename "$istio_dir")) and Dapr $dapr_version CRDs established ($installed installed by this check)" \
  || not_ok "CRDs not established"

entry_points=()
while read -r file; do
  grep -q '^kind: Component' "$file" || entry_points+=("$(dirname "$file")")
done < <(find k8s istio dapr deploy -name kustomization.yaml | sort)
for ep in "${entry_points[@]}"; do
  if out=$(k apply -k "$ep" --server-side --dry-run=server 2>&1); then
    ok "server-side dry run: kubectl apply -k $ep ($(grep -c . <<<"$out") objects)"
  else
    not_ok "server-side dry run of $ep: $(grep -v ' (server dry run)$' <<<"$out" | head -5)"
  fi
done
for example in istio/examples/*.yaml; do
  out=$(k apply -f "$example" --server-side --dry-run=server 2>&1) && ok "server-side dry run: $example" \
    || not_ok "server-side dry run of $example: $out"
done

# Admission is live: Pod Security (restricted on the namespace) rejects a privileged container, and an Istio
# resource its CRD's schema forbids is rejected by the API server itself (no Istio webhook runs here).
planted_pod="apiVersion: v1
kind: Pod
metadata: {name: planted-privileged, namespace: $NS}
spec:
  containers:
    - name: c
      image: agent-mesh/data:0.1.0
      securityContext: {privileged: true}"
if out=$(k apply --dry-run=server -f - <<<"$planted_pod" 2>&1); then
  not_ok "a privileged pod in $NS was accepted: $out"
elif grep -q 'violates PodSecurity "restricted' <<<"$out"; then
  ok "a privileged pod in $NS is rejected: $(grep -o 'violates PodSecurity "[^"]*"' <<<"$out")"
else
  not_ok "a privileged pod was rejected for another reason: $out"
fi
planted_vs="apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: planted-invalid, namespace: $NS}
spec:
  hosts: [data]
  http:
    - route:
        - destination: {host: data}
      timeout: 0.5ms"
if out=$(k apply --dry-run=server -f - <<<"$planted_vs" 2>&1); then
  not_ok "a VirtualService with a 0.5 ms timeout was accepted (the CRD's CEL rule wants > 1 ms)"
elif grep -q 'must be a valid duration greater than 1ms' <<<"$out"; then
  ok "a VirtualService with a 0.5 ms timeout is rejected by its CRD's CEL rule: $(grep -o 'spec.http\[0\].timeout.*' <<<"$out")"
else
  not_ok "the planted VirtualService was rejected for another reason: $out"
fi

# --- 6. NetworkPolicy ------------------------------------------------------------------------------------------------
step "6. NetworkPolicy: k8s/networkpolicy.yaml on live pods"
k create namespace "$PROBE_NS" >/dev/null
k label namespace "$PROBE_NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
probe_pod "$PROBE_NS" outsider
out=$(rec_get /recommend) && [ "$out" = "$CONTRACT" ] \
  && ok "allowed path under the policies: /recommend (recommendation -> data) -> 200 contract" \
  || not_ok "allowed path under the policies: /recommend -> $out"
# Three paths the policies deny. A policy engine programs its rules asynchronously (for the new probe pods too): the
# paths share one bounded moment to become denied.
denied() {   # denied NS POD URL: true when the probe gets no HTTP answer
  [ "$(probe_get "$1" "$2" "$3")" = 000 ]
}
paths=("$PROBE_NS outsider http://recommendation.$NS.svc.cluster.local:8000/recommend"
  "$PROBE_NS outsider http://data.$NS.svc.cluster.local:8000/data"
  "$NS client http://recommendation.$NS.svc.cluster.local:8000/recommend")
enforced=0 open=0 evidence=()
deadline=$((SECONDS + 15))
for path in "${paths[@]}"; do
  read -r pns pod url <<<"$path"
  until denied "$pns" "$pod" "$url" || [ "$SECONDS" -ge "$deadline" ]; do sleep 1; done
  if denied "$pns" "$pod" "$url"; then
    enforced=$((enforced + 1))
    ok "denied by policy: $pod ($pns) -> $url"
  else
    open=$((open + 1))
    evidence+=("$pod ($pns) -> $url answered $(probe_get "$pns" "$pod" "$url")")
  fi
done
if [ "$open" = 0 ]; then
  note "NetworkPolicy enforced: default deny proven on $enforced paths"
elif [ "$enforced" = 0 ]; then
  skip "NetworkPolicy not enforced by this cluster's network plugin: accepted by the API server (check 2), but every path it denies is open: ${evidence[*]}"
  note "NetworkPolicy: validated, not enforced (${evidence[*]})"
else
  not_ok "NetworkPolicy partly enforced: open paths: ${evidence[*]}"
fi
