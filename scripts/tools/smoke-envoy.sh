#!/usr/bin/env bash
# Smoke test for the cached Envoy: validate a static bootstrap, run it in front of a
# loopback HTTP server, send one request through it, stop everything.
#
#   scripts/tools/smoke-envoy.sh          # exit 0 = envoy works here
#
# Shows the conventions the mesh tests use: --concurrency 1 --disable-hot-restart, admin
# and listener on port 0 (the admin address comes back through --admin-address-path, the
# listener's through admin /listeners?format=json), readiness through admin /ready.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENVOY="${ENVOY:-$("$here/install-envoy.sh" | tail -n1)}"
WAIT_SECS="${SMOKE_WAIT_SECS:-30}"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/smoke-envoy.XXXXXX")"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "smoke-envoy: FAIL: $*" >&2; for f in "$tmp"/*.log; do [[ -f $f ]] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done; exit 1; }

# wait_for SECONDS COMMAND...: poll COMMAND until it succeeds, bounded.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# 1. Upstream: python's http.server on an OS-chosen loopback port, serving a token file.
token="envoy-smoke-$$-$RANDOM"
mkdir "$tmp/www"
echo "$token" >"$tmp/www/token.txt"
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$tmp/www" >"$tmp/upstream.log" 2>&1 &
pids+=($!)
upstream_port() { sed -n 's/.* port \([0-9][0-9]*\) .*/\1/p' "$tmp/upstream.log" | head -n1; }
have_upstream_port() { [[ -n "$(upstream_port)" ]]; }
wait_for "$WAIT_SECS" have_upstream_port || fail "upstream did not start"
up_port="$(upstream_port)"

# 2. Static bootstrap: one listener (port 0) routing everything to the upstream.
cat >"$tmp/envoy.yaml" <<YAML
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
static_resources:
  listeners:
  - name: smoke_ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: smoke
          route_config:
            name: smoke_route
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: smoke_upstream }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: smoke_upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: smoke_upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: $up_port }
YAML

# 3. Config validation mode must accept it (and reject a broken one).
"$ENVOY" --mode validate -c "$tmp/envoy.yaml" --disable-hot-restart >"$tmp/validate.log" 2>&1 \
  || fail "envoy --mode validate rejected the bootstrap"
sed 's/smoke_upstream }/no_such_cluster }/' "$tmp/envoy.yaml" >"$tmp/broken.yaml"
if "$ENVOY" --mode validate -c "$tmp/broken.yaml" --disable-hot-restart >"$tmp/validate-broken.out" 2>&1; then
  fail "envoy --mode validate accepted a route to an unknown cluster"
fi
grep -q "unknown cluster 'no_such_cluster'" "$tmp/validate-broken.out" \
  || fail "envoy --mode validate rejected the broken bootstrap for another reason: $(tail -n1 "$tmp/validate-broken.out")"

# 4. Run it.
"$ENVOY" -c "$tmp/envoy.yaml" --concurrency 1 --disable-hot-restart \
  --admin-address-path "$tmp/admin-address" --log-level warn >"$tmp/envoy.log" 2>&1 &
envoy_pid=$!
pids+=("$envoy_pid")
wait_for "$WAIT_SECS" test -s "$tmp/admin-address" || fail "no admin address written"
admin="$(cat "$tmp/admin-address")"
ready() { [[ "$(curl -s -m 2 "http://$admin/ready" || true)" == LIVE* ]]; }
wait_for "$WAIT_SECS" ready || fail "admin /ready never said LIVE"

listener_port="$(curl -s -m 5 "http://$admin/listeners?format=json" | python3 -c '
import json, sys
for st in json.load(sys.stdin).get("listener_statuses", []):
    if st["name"] == "smoke_ingress":
        print(st["local_address"]["socket_address"]["port_value"])
')"
[[ "$listener_port" =~ ^[0-9]+$ && "$listener_port" -ne 0 ]] || fail "could not read the listener port: '$listener_port'"

code="$(curl -s -m 5 -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$listener_port/token.txt" || true)"
[[ "$code" == 200 && "$(cat "$tmp/body")" == "$token" ]] \
  || fail "unexpected answer through envoy: HTTP $code, body '$(head -c 200 "$tmp/body")'"
# The request must have been counted by the proxy, not served some other way.
stat="$(curl -s -m 5 "http://$admin/stats?filter=^cluster\.smoke_upstream\.upstream_rq_200$")"
[[ "$stat" == *": 1" ]] || fail "envoy stats do not show the proxied request: $stat"

echo "smoke-envoy: OK ($("$ENVOY" --version | sed -n 's/.*version: //p'); admin $admin; listener 127.0.0.1:$listener_port -> 127.0.0.1:$up_port)"
