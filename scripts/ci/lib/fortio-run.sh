# shellcheck shell=bash
# Sourced by the cluster checks (scripts/ci/cluster.sh, scripts/ci/*-cluster.sh), not a check itself (test.sh runs scripts/ci/*.sh only).
#
# A load that ends when the check says so instead of after a fixed window: the probe pods run `fortio server` (the
# Fortio image's default command, scripts/cluster/images/fortio), whose REST API runs a load synchronously
# (/fortio/rest/run answers with the same JSON result as `fortio load -json -`) and stops it on request
# (/fortio/rest/stop; the stopped run still answers with everything it measured). A rolling-restart check can then
# end its load a few seconds after the last old pod is gone, where a fixed window had to be long enough for the
# slowest rollout and ran on for half a minute or more on a typical one. The run's duration stays bounded by
# MAX_SECONDS; a run that reached it before it was stopped is reported by load_stop so the check can fail it.
#
# The REST runner counts errors from the first request on (AllowInitialErrors), as `fortio load -allow-initial-errors`.
#
# Needs: the caller's `k` function (kubectl), and $tmp (a directory).
# shellcheck disable=SC2154,SC2034  # tmp is the caller's; load_pid, load_ran, load_ended_at are for the caller

# load_start NS POD NAME MAX_SECONDS URL QPS CONNECTIONS TIMEOUT: in the background, a load from the Fortio server in
# POD's container `fortio` to URL; the JSON result goes to $tmp/NAME.json once load_stop ended it. Sets load_pid.
load_start() {
  local ns=$1 pod=$2 name=$3 max=$4 url=$5 qps=$6 connections=$7 timeout=$8
  load_max=$max
  # The client waits out the whole bounded run, and a bit more.
  k -n "$ns" exec "$pod" -c fortio -- fortio curl -stdclient -timeout "$((max + 30))s" \
    -payload "{\"url\":\"$url\",\"qps\":\"$qps\",\"c\":\"$connections\",\"t\":\"${max}s\",\"timeout\":\"$timeout\"}" \
    "http://localhost:8080/fortio/rest/run" >"$tmp/$name.json" 2>"$tmp/$name.err" &
  load_pid=$!
}

# load_stop NS POD NAME: stops the load load_start began and waits for its result. Sets load_ran (the seconds it
# ran, Fortio's ActualDuration) and load_ended_at (when it ended, epoch seconds: Fortio's StartTime + load_ran; the
# probe pod's clock is the node's). Returns 1 when the load ended on its own at MAX_SECONDS before the stop (too short
# for what it had to cover), 2 when there is no result (load_ran then says why).
load_stop() {
  local ns=$1 pod=$2 name=$3 ran start
  k -n "$ns" exec "$pod" -c fortio -- fortio curl -stdclient "http://localhost:8080/fortio/rest/stop?wait=on" \
    >"$tmp/$name.stop" 2>&1 || true
  wait "$load_pid" || true
  ran=$(jq -r '.ActualDuration / 1e9' "$tmp/$name.json" 2>/dev/null) || ran=""
  start=$(jq -r '.StartTime' "$tmp/$name.json" 2>/dev/null) || start=""
  load_ended_at=$(date -d "$start" +%s.%N 2>/dev/null | awk -v r="$ran" '{ printf "%.3f", $1 + r }')
  if ! [[ $ran =~ ^[0-9.]+$ ]] || [ -z "$load_ended_at" ]; then
    load_ran="no result: $(tail -c 300 "$tmp/$name.json") $(tail -3 "$tmp/$name.err")"
    return 2
  fi
  load_ran=$(printf '%.1f' "$ran")
  # Stopped before the bound: the result covers what the check wanted. Not: the bound ended the load first.
  awk -v r="$ran" -v m="$load_max" 'BEGIN { exit !(r < m - 0.5) }'
}

# fortio_latency FILE: "p50 <ms>, p99 <ms>, <n> requests, <errors> not 200" from a Fortio JSON result (load or run)
fortio_latency() {
  jq -r '[(.DurationHistogram.Percentiles[] | select(.Percentile == 50) | .Value * 1000),
          (.DurationHistogram.Percentiles[] | select(.Percentile == 99) | .Value * 1000),
          .DurationHistogram.Count, (.DurationHistogram.Count - (.RetCodes["200"] // 0))]
         | "p50 \(.[0] * 100 | round / 100) ms, p99 \(.[1] * 100 | round / 100) ms, \(.[2]) requests, \(.[3]) not 200"' "$1"
}
