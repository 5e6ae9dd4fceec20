# shellcheck shell=bash
# Sourced by the cluster checks (scripts/ci/cluster.sh, scripts/ci/*-cluster.sh), not a check itself (test.sh runs
# scripts/ci/*.sh only): the step headings with the seconds each step took, and the namespaces' teardown between
# checks that share one cluster.
#
# Needs: the caller's `k` function (kubectl) and $started (SECONDS when the check began).
# shellcheck disable=SC2154  # started is the caller's

step_name="" step_began=0 step_times=()
# step TITLE: a step's heading, with the seconds since the check began; the step before it ends here and its
# duration is kept for step_report.
step() {
  step_done
  step_name=$* step_began=$SECONDS
  printf '\n-- %s  [at %d s]\n' "$*" "$((SECONDS - started))"
}
step_done() { [ -z "$step_name" ] || step_times+=("$(printf '%4d s  %s' "$((SECONDS - step_began))" "${step_name:0:90}")"); step_name=""; }
# step_report: the seconds of every step, for the check's closing lines (where the next cut of the run's time is)
step_report() {
  step_done
  echo "   seconds per step:"
  printf '     %s\n' "${step_times[@]}"
}

# drop_namespaces SECONDS NS...: delete the namespaces without waiting out their pods' grace periods (the checks
# that needed a graceful shutdown are over), then wait until they are gone, at most SECONDS; false if one is
# still there. A data pod under Dapr takes up to ~55 s to stop gracefully (k8s/dapr/patch-data.yaml); the next
# check, or the next deploy into the same namespace, needs the namespace absent.
drop_namespaces() {
  local bound=$1 ns deadline
  shift
  deadline=$((SECONDS + bound))
  k delete namespace "$@" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  for ns in "$@"; do k -n "$ns" delete pods --all --grace-period=0 --force >/dev/null 2>&1 || true; done
  for ns in "$@"; do
    while k get namespace "$ns" >/dev/null 2>&1; do
      [ "$SECONDS" -lt "$deadline" ] || return 1
      sleep 0.5
    done
  done
}
