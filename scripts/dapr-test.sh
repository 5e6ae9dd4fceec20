#!/usr/bin/env bash
# The agents with real Dapr sidecars: daprd (built once from the Go module proxy into the cache) and Debian's
# redis-server, both installed by scripts/tools, then tests/tests/dapr.rs against the agent binaries.
# Exit 0 = invocation, tokens, secrets, state, pub/sub (SUCCESS/RETRY/DROP) and resiliency all work.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

AGENT_MESH_DAPRD=$(bash scripts/tools/install-daprd.sh | tail -n1)
AGENT_MESH_REDIS_SERVER=$(bash scripts/tools/install-redis.sh | tail -n1)
export AGENT_MESH_DAPRD AGENT_MESH_REDIS_SERVER

# The tests run the agent binaries: build them first (cargo test alone does not rebuild binaries of other
# packages).
nice cargo build --locked --bins
# The Dapr tests are #[ignore]d so that plain `cargo test` needs no installers; here they all run, one at a time:
# eight meshes (16 daprd, 16 agents, 8 Redis) starting at once on two cores failed two CI runs of 2026-12-02, once
# on a listener port another process took between the harness picking it and the agent binding it, once on a
# name-resolution renewal that came late. One at a time: 17 s instead of 10 s, 5 of 5 runs passed.
nice cargo test --locked -p agent-tests --test dapr -- --ignored --test-threads=1
