#!/usr/bin/env bash
# The local mesh: the istio/ resources translated to Envoy bootstraps and enforced by real Envoy 1.40 sidecars in
# front of the real agents (retries, timeouts, outlier ejection, canary split, faults, mTLS, authorization, trace
# headers). Installs Envoy into the cache (scripts/tools/install-envoy.sh) unless AGENT_MESH_ENVOY names one.
# Set AGENT_MESH_ISTIO_DIR to run the same tests against a changed copy of istio/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
AGENT_MESH_ENVOY="${AGENT_MESH_ENVOY:-$(bash scripts/tools/install-envoy.sh | tail -n1)}"
export AGENT_MESH_ENVOY
"$AGENT_MESH_ENVOY" --version
# The tests spawn the agent binaries; `cargo test -p mesh` alone does not build other packages' binaries.
nice cargo build --locked -p data -p recommendation
nice cargo test --locked -p mesh
