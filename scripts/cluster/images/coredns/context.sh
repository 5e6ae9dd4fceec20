#!/usr/bin/env bash
# Build context of the CoreDNS image: the binary scripts/tools/install-coredns.sh builds and caches.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
bin=$("$root/scripts/tools/install-coredns.sh" | tail -n1)
cp "$bin" "$ctx/coredns"
echo "localhost/agent-mesh/coredns:v$("$bin" -version | sed -n 's/^CoreDNS-//p')"
