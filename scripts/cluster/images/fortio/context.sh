#!/usr/bin/env bash
# Build context of the Fortio image: the binary scripts/tools/install-fortio.sh builds and caches.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
bin=$("$root/scripts/tools/install-fortio.sh" | tail -n1)
cp "$bin" "$ctx/fortio"
echo "localhost/agent-mesh/fortio:$("$bin" version | head -n1)"
