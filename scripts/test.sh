#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then lints, unit/route/cross-service tests, and
# every area check under scripts/ci/ (compatibility with FastAPI, containers, manifests, ...).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n== %s\n' "$*"; }

step "setup"
bash scripts/setup.sh
# A fresh machine gets rustup from setup.sh; its PATH change must reach this shell too.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:/usr/local/go/bin:$PATH"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

failed=()
for check in scripts/ci/*.sh; do
  step "$check"
  started=$SECONDS
  if bash "$check"; then
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
