#!/usr/bin/env bash
# Build context of istiod's image, in the layout of the module's pilot/docker/Dockerfile.pilot: pilot-discovery
# (scripts/tools/install-istio.sh), a static binary.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
bin=$("$root/scripts/tools/install-istio.sh" pilot-discovery | tail -n1)
install -D -m 0755 "$bin/pilot-discovery" "$ctx/rootfs/usr/local/bin/pilot-discovery"
echo "localhost/agent-mesh/istio/pilot:$("$bin/pilot-discovery" version -s | sed "s/.*: //" | tr + -)"
