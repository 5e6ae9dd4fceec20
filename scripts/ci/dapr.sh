#!/usr/bin/env bash
# Dapr area check (exit 0 = pass): the agents with real daprd sidecars and a real Redis on loopback
# (tests/tests/dapr.rs, #[ignore]d in plain `cargo test`), through scripts/dapr-test.sh, which installs daprd and
# redis-server into the cache first.
set -euo pipefail
exec bash "$(dirname "$0")/../dapr-test.sh"
