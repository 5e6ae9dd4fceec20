#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then lints, unit/route/cross-service tests, and
# every area check under scripts/ci/ (compatibility with FastAPI, containers, manifests, ...). scripts/ci/lib/ holds
# what the checks source; it is not a check.
# Ends with one line per step (TAP-style: ok / not ok, with its seconds) and the total, so a run's time is read
# from its log without arithmetic.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n== %s\n' "$*"; }
results=()   # "ok|not ok <seconds> <step>"
timed() {    # timed NAME COMMAND...: runs a step, records its outcome and duration; false if it failed
  local name=$1 t=$SECONDS
  shift
  step "$name"
  if "$@"; then results+=("ok $((SECONDS - t)) $name"); return 0; fi
  results+=("not-ok $((SECONDS - t)) $name")
  return 1
}
summary() {
  local i=0 line outcome seconds name
  printf '\n1..%d\n' "${#results[@]}"
  for line in "${results[@]}"; do
    i=$((i + 1))
    read -r outcome seconds name <<<"$line"
    printf '%s %d - %s (%d s)\n' "${outcome/not-ok/not ok}" "$i" "$name" "$seconds"
  done
  echo "# total $SECONDS s"
}
trap summary EXIT
trap 'exit 130' INT TERM   # the EXIT trap runs on these too: the summary, and the shared cluster's down below

timed "setup" bash scripts/setup.sh
# A fresh machine gets rustup from setup.sh; its PATH change must reach this shell too.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:/usr/local/go/bin:$PATH"

timed "cargo fmt --check" cargo fmt --all --check
timed "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
timed "cargo test" cargo test --workspace --locked

failed=()
check() {   # check SCRIPT [PREFIX...]: runs an area check as a step, PREFIX before it
  local script=$1 started=$SECONDS
  shift
  if timed "$script" "$@" bash "$script"; then
    echo "-- $script passed in $((SECONDS - started)) s"
  else
    echo "-- $script FAILED after $((SECONDS - started)) s"
    failed+=("$script")
  fi
}

# The cluster checks share one cluster (scripts/ci/lib/shared-cluster.sh): one `up --istio --dapr` and one `down`
# instead of one of each per check; each check deletes its namespaces when it ends. They run one after another and
# alone (no other check beside them): they assert on rollouts under load, which 2 busy cores can fail. With
# KUBECONFIG set by the caller they run against that cluster instead, as each does on its own.
cluster_checks=(scripts/ci/cluster.sh scripts/ci/*-cluster.sh)
shared=""
# shellcheck source=/dev/null  # written by shared-cluster.sh up
with_shared() { (set -a && . "$shared/env" && exec "$@"); }
shared_down() {   # the shared cluster down (once), also when a check or this script stops early
  [ -n "$shared" ] || return 0
  timed "cluster down: the machine as it was before up" bash scripts/ci/lib/shared-cluster.sh down "$shared" \
    || failed+=("cluster down")
  rm -rf "$shared"
  shared=""
}
trap 'shared_down; summary' EXIT
if [ -n "${KUBECONFIG:-}" ]; then
  for script in "${cluster_checks[@]}"; do check "$script"; done
else
  export AGENT_MESH_CLUSTER=${AGENT_MESH_CLUSTER:-ci}
  shared=$(mktemp -d)
  if timed "cluster up --istio --dapr (instance $AGENT_MESH_CLUSTER, for the cluster checks)" \
    bash scripts/ci/lib/shared-cluster.sh up "$shared"; then
    for script in "${cluster_checks[@]}"; do check "$script" with_shared; done
  else
    failed+=("cluster up")
    for script in "${cluster_checks[@]}"; do results+=("not-ok 0 $script (not run: no cluster)"); failed+=("$script"); done
  fi
  shared_down
fi

# These three only validate files and compare answers of processes on free loopback ports, within generous
# readiness bounds; none asserts on time or load. Their work is mostly single-threaded (Python validators, uvicorn
# start-ups, Prometheus), so they run side by side on the cores, each with its output kept and printed whole when it
# ends, in this order: one at a time they took 81 + 66 + 42 s (2026-12-02). The checks that time rollouts, drains
# and attacks (cluster, compose, dapr, hardening) stay alone.
side_by_side=(scripts/ci/manifests.sh scripts/ci/fastapi-compat.sh scripts/ci/observability.sh)
for script in scripts/ci/*.sh; do
  [[ " ${cluster_checks[*]} ${side_by_side[*]} " == *" $script "* ]] || check "$script"
done
run_side_by_side() {   # the side_by_side checks at once; their outputs and outcomes in list order
  local dir script i=0 pids=() started=$SECONDS
  dir=$(mktemp -d)
  step "side by side: ${side_by_side[*]}"
  for script in "${side_by_side[@]}"; do
    ( t=$SECONDS; bash "$script" >"$dir/$i.log" 2>&1; echo "$? $((SECONDS - t))" >"$dir/$i.rc" ) &
    pids+=($!)
    i=$((i + 1))
  done
  wait "${pids[@]}" || true
  i=0
  for script in "${side_by_side[@]}"; do
    local rc=1 seconds=$((SECONDS - started))
    [ -f "$dir/$i.rc" ] && read -r rc seconds <"$dir/$i.rc"
    step "$script (ran side by side)"
    cat "$dir/$i.log"
    if [ "$rc" = 0 ]; then
      results+=("ok $seconds $script (side by side)")
      echo "-- $script passed in $seconds s"
    else
      results+=("not-ok $seconds $script (side by side)")
      echo "-- $script FAILED after $seconds s"
      failed+=("$script")
    fi
    i=$((i + 1))
  done
  rm -rf "$dir"
  echo "-- side by side: ${#side_by_side[@]} checks in $((SECONDS - started)) s"
}
run_side_by_side

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nfailed checks: %s\n' "${failed[*]}"
  exit 1
fi
echo
echo "all checks passed"
