#!/usr/bin/env bash
# Build context of the Dapr image: the six binaries scripts/tools/install-daprd.sh builds and caches, and Debian's
# CA bundle.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
mapfile -t bins < <("$root/scripts/tools/install-daprd.sh" daprd operator sentry placement scheduler injector)
cp "${bins[@]}" "$ctx/"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
echo "localhost/agent-mesh/dapr:$("${bins[0]}" --version | tail -n1)"
