#!/usr/bin/env bash
# Build istioctl (Istio 1.30 line) from the Go module proxy into the agent-mesh tool cache, through
# scripts/tools/install-istio.sh (which explains the pinned version and the wrapper module). Idempotent: with the
# cache warm it only checks the binary runs.
#
# Last stdout line: path of the istioctl binary.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$("$here/install-istio.sh" istioctl | tail -n1)"
echo "$dir/istioctl"
