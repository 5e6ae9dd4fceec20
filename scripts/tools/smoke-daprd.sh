#!/usr/bin/env bash
# Smoke test for the cached daprd: two self-hosted sidecars on loopback, one in front of
# a tiny HTTP app, service invocation from the other one, a Redis state store, then
# everything is stopped.
#
#   scripts/tools/smoke-daprd.sh          # exit 0 = daprd works here
#
# The setup here is the one the Dapr tests reuse:
#   * self-hosted mode, no placement and no scheduler (no --placement-host-address /
#     --scheduler-host-address: actors, reminders and jobs stay off, everything else works);
#   * name resolution: the sqlite resolver (one shared database file per test), chosen in a
#     Configuration resource. mDNS is not usable: loopback has no multicast here and mDNS
#     would otherwise announce on the external interface;
#   * DAPR_HOST_IP=127.0.0.1, so each sidecar registers a loopback address (by default it
#     registers the address of the interface that routes outwards);
#   * every listener bound to 127.0.0.1 on a free port picked up front.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DAPRD="${DAPRD:-$("$here/install-daprd.sh" | tail -n1)}"
REDIS_SERVER="${REDIS_SERVER:-$("$here/install-redis.sh" | tail -n1)}"
WAIT_SECS="${SMOKE_WAIT_SECS:-60}"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/smoke-daprd.XXXXXX")"
pids=()
stop_all() {
  local p deadline
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  deadline=$((SECONDS + 15))
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
# SMOKE_KEEP=1 keeps the logs and configs for inspection.
cleanup() { stop_all; if [[ "${SMOKE_KEEP:-0}" == 1 ]]; then echo "smoke-daprd: kept $tmp" >&2; else rm -rf "$tmp"; fi; }
trap cleanup EXIT
fail() {
  echo "smoke-daprd: FAIL: $*" >&2
  for f in "$tmp"/*.log; do [[ -f $f ]] && { echo "--- $f" >&2; tail -n 40 "$f" >&2; }; done
  exit 1
}
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# N distinct free loopback ports (all held open together, so no duplicates).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r app_port redis_port a_http a_grpc a_int a_metrics b_http b_grpc b_int b_metrics <<<"$(free_ports 10)"

# Redis for the state store component, persistence off, loopback only.
"$REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids+=($!)

# The app behind sidecar B: python's http.server serving a token file.
token="dapr-smoke-$$-$RANDOM"
mkdir -p "$tmp/www" "$tmp/resources"
echo "$token" >"$tmp/www/token.txt"
python3 -u -m http.server "$app_port" --bind 127.0.0.1 --directory "$tmp/www" >"$tmp/app.log" 2>&1 &
pids+=($!)

# Resources: a Redis state store, so component loading is exercised too.
cat >"$tmp/resources/statestore.yaml" <<YAML
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: smoke-state
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    value: "127.0.0.1:$redis_port"
  - name: redisPassword
    value: ""
YAML
cat >"$tmp/config.yaml" <<YAML
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: smoke
spec:
  nameResolution:
    component: sqlite
    version: v1
    configuration:
      connectionString: "$tmp/nameresolution.db"
YAML

# start_daprd NAME APP_ID HTTP GRPC INTERNAL METRICS [extra flags...]
start_daprd() {
  local name=$1 app_id=$2 http=$3 grpc=$4 internal=$5 metrics=$6
  shift 6
  DAPR_HOST_IP=127.0.0.1 "$DAPRD" \
    --mode standalone \
    --app-id "$app_id" \
    --dapr-listen-addresses 127.0.0.1 \
    --dapr-http-port "$http" \
    --dapr-grpc-port "$grpc" \
    --dapr-internal-grpc-port "$internal" \
    --dapr-internal-grpc-listen-address 127.0.0.1 \
    --metrics-port "$metrics" \
    --metrics-listen-address 127.0.0.1 \
    --resources-path "$tmp/resources" \
    --config "$tmp/config.yaml" \
    --dapr-graceful-shutdown-seconds 2 \
    --log-level info \
    "$@" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
}

status_is() { # status_is CODE URL [curl args...]
  local want=$1 url=$2; shift 2
  [[ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$@" "$url" || true)" == "$want" ]]
}

redis_up() { [[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" == PONG ]]; }
wait_for "$WAIT_SECS" redis_up || fail "redis-server did not start"

start=$SECONDS
start_daprd daprd-b smoke-b "$b_http" "$b_grpc" "$b_int" "$b_metrics" --app-port "$app_port" --app-protocol http
start_daprd daprd-a smoke-a "$a_http" "$a_grpc" "$a_int" "$a_metrics"

wait_for "$WAIT_SECS" status_is 204 "http://127.0.0.1:$a_http/v1.0/healthz/outbound" || fail "daprd A never became outbound-ready"
wait_for "$WAIT_SECS" status_is 204 "http://127.0.0.1:$b_http/v1.0/healthz/outbound" || fail "daprd B never became outbound-ready"
wait_for "$WAIT_SECS" status_is 204 "http://127.0.0.1:$b_http/v1.0/healthz" || fail "daprd B never reported its app healthy"
echo "smoke-daprd: both sidecars ready after $((SECONDS - start))s" >&2

# Invocation through A to the app behind B, both URL forms.
# Both sidecars registered themselves in the shared sqlite registry at loopback addresses.
registered="$(python3 - "$tmp/nameresolution.db" <<'PY'
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT app_id, address FROM hosts ORDER BY app_id").fetchall()
print(" ".join(f"{a}={addr}" for a, addr in rows))
PY
)"
[[ "$registered" == "smoke-a=127.0.0.1:$a_int smoke-b=127.0.0.1:$b_int" ]] \
  || fail "unexpected name resolution registrations: '$registered'"

check_body() { # check_body WHAT URL [curl args...]
  local what=$1 url=$2 code; shift 2
  code="$(curl -s -m 10 -o "$tmp/body" -w '%{http_code}' "$@" "$url" || true)"
  [[ "$code" == 200 && "$(cat "$tmp/body")" == "$token" ]] \
    || fail "$what: HTTP $code, body '$(head -c 300 "$tmp/body")'"
}
check_body "invoke via /v1.0/invoke" "http://127.0.0.1:$a_http/v1.0/invoke/smoke-b/method/token.txt"
check_body "invoke via dapr-app-id header" "http://127.0.0.1:$a_http/token.txt" -H "dapr-app-id: smoke-b"
# An unknown app id must fail (so the success above really went through name resolution).
status_is 200 "http://127.0.0.1:$a_http/v1.0/invoke/no-such-app/method/token.txt" \
  && fail "invoking an unknown app id succeeded"

# State through the Redis component: save, read back with its ETag, a stale ETag is refused.
state="http://127.0.0.1:$a_http/v1.0/state/smoke-state"
status_is 204 "$state" -X POST -H 'content-type: application/json' \
  -d "[{\"key\":\"k\",\"value\":\"$token\"}]" || fail "state save failed"
[[ "$(curl -s -m 5 -D "$tmp/headers" "$state/k")" == "\"$token\"" ]] || fail "state read back differs"
etag="$(tr -d '\r' <"$tmp/headers" | sed -n 's/^[Ee][Tt]ag: *//p')"
[[ -n "$etag" ]] || fail "no ETag on the state read"
status_is 204 "$state" -X POST -H 'content-type: application/json' \
  -d "[{\"key\":\"k\",\"value\":\"v2\",\"etag\":\"$etag\",\"options\":{\"concurrency\":\"first-write\"}}]" \
  || fail "state save with the current ETag failed"
status_is 409 "$state" -X POST -H 'content-type: application/json' \
  -d "[{\"key\":\"k\",\"value\":\"v3\",\"etag\":\"$etag\",\"options\":{\"concurrency\":\"first-write\"}}]" \
  || fail "state save with a stale ETag was not refused with 409"

version="$("$DAPRD" --version | tail -n1)"
stop_all
echo "smoke-daprd: OK (daprd $version; A http 127.0.0.1:$a_http -> B internal 127.0.0.1:$b_int -> app 127.0.0.1:$app_port; sqlite name resolution; redis state store with ETag checks)"
