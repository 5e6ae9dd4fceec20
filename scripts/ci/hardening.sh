#!/usr/bin/env bash
# Hardening area check (exit 0 = pass): the outside attack on the agents of issue 14 (findings F1-F10), rerun
# black-box against release builds, with a pass/fail line per finding and the figures each attack measured.
#
#   - the binaries attacked are the static release builds the images ship (scripts/build-static.sh, which the
#     compose check builds too, so in CI this costs no second release build); AGENT_BIN_DIR=<dir> attacks others,
#     e.g. AGENT_BIN_DIR=target/release after `cargo build --release`;
#   - the attacks are the #[ignore]d tests of tests/tests/hardening.rs, one per finding, each run on its own so a
#     hang or failure in one does not hide the others (bounded by ATTACK_TIMEOUT, default 180 s each);
#   - needs nothing beyond the Rust toolchain and, for the default binaries, musl-gcc (scripts/setup.d/compose.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
attack_timeout=${ATTACK_TIMEOUT:-180}

step() { printf '\n-- %s\n' "$*"; }

step "binaries"
if [ -n "${AGENT_BIN_DIR:-}" ]; then
  bin_dir=$(cd "$AGENT_BIN_DIR" && pwd)
else
  bin_dir=$(bash scripts/build-static.sh | tail -1)
fi
for bin in data recommendation; do
  [ -x "$bin_dir/$bin" ] || { echo "FAIL - $bin_dir/$bin is missing"; exit 1; }
done
echo "attacking $bin_dir/{data,recommendation}"

step "attack suite (tests/tests/hardening.rs)"
nice cargo test --workspace --locked --test hardening --no-run 2>&1 | tail -1
tests=$(cargo test --workspace --locked -q --test hardening -- --ignored --list 2>/dev/null | sed -n 's/: test$//p')
[ -n "$tests" ] || { echo "FAIL - no attacks found"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
summary=()
failed=0
for test in $tests; do
  finding=$(echo "$test" | sed -E 's/^f0*([0-9]+)_.*/F\1/')
  step "$finding: $test"
  started=$SECONDS
  if AGENT_BIN_DIR="$bin_dir" timeout "$attack_timeout" cargo test --workspace --locked -q --test hardening -- \
    --ignored --exact "$test" --nocapture >"$tmp/$test.log" 2>&1; then
    verdict=pass
  else
    verdict=FAIL
    failed=$((failed + 1))
  fi
  # libtest prints "test <name> ... " without a newline, so the first figures line may follow it.
  sed -n 's/.*figures /  /p' "$tmp/$test.log"
  if [ "$verdict" = FAIL ]; then
    echo "  --- output of the failed attack:"
    grep -v 'figures ' "$tmp/$test.log" | tail -40 | sed 's/^/  | /'
  fi
  summary+=("$(printf '%-4s %-4s %4ss  %s' "$finding" "$verdict" "$((SECONDS - started))" "$test")")
done

step "summary (binaries: $bin_dir)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -gt 0 ]; then
  echo "$failed finding(s) reproduced"
  exit 1
fi
echo "every finding holds"
