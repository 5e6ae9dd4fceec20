#!/usr/bin/env bash
# Builds both agents and runs them on this machine: recommendation on :8000 (as in the tutorial), data on :8001.
# Ctrl-C stops both (each drains gracefully).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v cargo >/dev/null || { echo "cargo not found: run scripts/setup.sh first (installs Rust)" >&2; exit 1; }
cargo build --release --locked -p data -p recommendation
export LOG_FORMAT=${LOG_FORMAT:-text}
PORT=${DATA_PORT:-8001} "${CARGO_TARGET_DIR:-target}/release/data" &
data_pid=$!
trap 'kill -TERM "$data_pid" "${reco_pid:-}" 2>/dev/null; wait' EXIT INT TERM
PORT=${PORT:-8000} DATA_MODE=direct DATA_URL="http://127.0.0.1:${DATA_PORT:-8001}" "${CARGO_TARGET_DIR:-target}/release/recommendation" &
reco_pid=$!
wait -n "$data_pid" "$reco_pid"
