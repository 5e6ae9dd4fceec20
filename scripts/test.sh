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

timed "setup" bash scripts/setup.sh
# A fresh machine gets rustup from setup.sh; its PATH change must reach this shell too.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:/usr/local/go/bin:$PATH"

timed "cargo fmt --check" cargo fmt --all --check
timed "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
timed "cargo test" cargo test --workspace --locked

failed=()
for check in scripts/ci/*.sh; do
  started=$SECONDS
  if timed "$check" bash "$check"; then
    echo "-- $check passed in $((SECONDS - started)) s"
  else
    echo "-- $check FAILED after $((SECONDS - started)) s"
    failed+=("$check")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nfailed checks: %s\n' "${failed[*]}"
  exit 1
fi
echo
echo "all checks passed"
