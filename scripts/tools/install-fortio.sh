#!/usr/bin/env bash
# Build Fortio (Istio's HTTP load and client tool) from its Go module and cache it outside the repo. The cluster
# checks run it in a client pod (scripts/cluster/images/fortio): requests from inside the cluster, from any
# namespace, on any cluster the checks are pointed at.
#
#   scripts/tools/install-fortio.sh     # last stdout line: path of the static fortio binary
#
# Why 1.68.2: every later release requires grol.io/grol, which the Go module proxy here refuses (403).
#
# Settings (env):
#   FORTIO_VERSION     release to build (default below)
#   AGENT_MESH_CACHE   cache root (default $HOME/.cache/agent-mesh)
# Cache: <cache>/fortio-<version>/fortio. Cold: about a minute on 2 cores (nice); warm: < 1 s.
set -euo pipefail

FORTIO_VERSION="${FORTIO_VERSION:-1.68.2}"
FORTIO_VERSION="${FORTIO_VERSION#v}"
CACHE="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST="$CACHE/fortio-$FORTIO_VERSION"
BIN="$DEST/fortio"

log() { echo "install-fortio: $*" >&2; }
is_good() { [[ -x "$BIN" ]] && [[ "$("$BIN" version 2>/dev/null | head -n1)" == "$FORTIO_VERSION" ]]; }

if is_good; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock -w "${FORTIO_BUILD_LOCK_WAIT:-3600}" 9 || { log "timed out waiting for another build"; exit 1; }
if is_good; then
  echo "$BIN"
  exit 0
fi

export GOWORK=off GOFLAGS="-buildvcs=false" CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
tmp="$(mktemp -d "$DEST/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "building fortio $FORTIO_VERSION"
start=$SECONDS
# Fortio reads its version from the module's build info, which `go install module@version` records.
GOBIN="$tmp" nice -n "${FORTIO_BUILD_NICE:-10}" go install -trimpath -ldflags "-s -w" "fortio.org/fortio@v$FORTIO_VERSION" >&2
mv -f "$tmp/fortio" "$BIN"
log "built in $((SECONDS - start))s"
is_good || { log "the built binary does not report version $FORTIO_VERSION: $("$BIN" version 2>&1 | head -n1)"; exit 1; }
echo "$BIN"
