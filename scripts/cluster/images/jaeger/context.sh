#!/usr/bin/env bash
# Build context of the Jaeger image: the static binary scripts/tools/install-jaeger.sh builds and caches.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
bin=$("$root/scripts/tools/install-jaeger.sh" | tail -n1)
cp "$bin" "$ctx/jaeger"
echo "localhost/agent-mesh/jaeger:$("$bin" version 2>/dev/null | jq -r '.gitVersion | ltrimstr("v")')"
