#!/usr/bin/env bash
# Build Fortio (Istio's HTTP load and client tool) from its Go module and cache it outside the repo. The cluster
# checks run it in a client pod (scripts/cluster/images/fortio): requests from inside the cluster, from any
# namespace, on any cluster the checks are pointed at.
#
#   scripts/tools/install-fortio.sh     # last stdout line: path of the static fortio binary
#
# Why 1.68.2: every later release requires grol.io/grol, which the Go module proxy here refuses (403).
# Fortio reads its version from the module's build info, which `go install module@version` records.
#
# Settings (env):
#   FORTIO_VERSION     release to build (default below)
#   AGENT_MESH_CACHE   cache root (default $HOME/.cache/agent-mesh)
# Cache: <cache>/fortio-<version>/fortio. Cold: about 30 s; warm: < 1 s.
set -euo pipefail
# shellcheck source=scripts/tools/lib/go-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/go-install.sh"

FORTIO_VERSION="${FORTIO_VERSION:-1.68.2}"
FORTIO_VERSION="${FORTIO_VERSION#v}"

is_good() { [[ -x "$1" ]] && [[ "$("$1" version 2>/dev/null | sed -n 1p)" == "$FORTIO_VERSION" ]]; }

go_install_cached fortio "$FORTIO_VERSION" fortio.org/fortio is_good
