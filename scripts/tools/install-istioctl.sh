#!/usr/bin/env bash
# Build istioctl (Istio 1.30 line) from the Go module proxy into the agent-mesh tool
# cache. Idempotent: with the cache warm it only checks the binary runs.
#
# Why a wrapper module (scripts/tools/istioctl-build/go.mod) instead of
# `go install istio.io/istio/istioctl/cmd/istioctl@<version>`:
#  - Istio's git tags (e.g. 1.30.3) have no "v", so the proxy knows Istio commits only
#    as pseudo-versions; the proxy reachable here refuses the 1.30.3 tag commit
#    (56df41f63e51) and serves one release-1.30 branch commit, 9739e10eb9d7
#    (2026-08-26, VERSION file 1.30, after 1.30.3).
#  - That commit's go.mod names unreleased pseudo-versions of istio.io/api,
#    istio.io/client-go and go-control-plane which the proxy refuses too; the wrapper
#    raises them to released versions it serves (istio.io/api v1.30.8, ...).
# The wrapper's go.sum pins every module by hash.
#
# Cache: ${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}/istioctl-<istio pseudo-version>-<go.mod hash>/
# Last stdout line: path of the istioctl binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wrapper="$here/istioctl-build"
ISTIO_MODULE_VERSION="$(awk '$1=="istio.io/istio"{print $2}' "$wrapper/go.mod")"
ISTIO_RELEASE_LINE="1.30"
key="$(cat "$wrapper/go.mod" "$wrapper/go.sum" | sha256sum | cut -c1-12)"
CACHE="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST="$CACHE/istioctl-$ISTIO_MODULE_VERSION-$key"
BIN="$DEST/istioctl"

if [[ -x "$BIN" ]] && "$BIN" version --remote=false >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "install-istioctl: go is required" >&2; exit 1; }
mkdir -p "$DEST"
tmp="$(mktemp -d "$DEST/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

rev="${ISTIO_MODULE_VERSION##*-}"
pkg=istio.io/istio/pkg/version
ver="${ISTIO_RELEASE_LINE}-dev+${rev}"
ldflags="-s -w -X $pkg.buildVersion=$ver -X $pkg.buildGitRevision=$rev -X $pkg.buildStatus=Clean"
ldflags+=" -X $pkg.buildTag=$ver -X $pkg.buildOS=$(go env GOOS) -X $pkg.buildArch=$(go env GOARCH)"

echo "install-istioctl: building istioctl from istio.io/istio@$ISTIO_MODULE_VERSION (several minutes on 2 cores)" >&2
# Build into a temp dir and move into place so an interrupted build leaves no half binary.
(
  cd "$wrapper"
  GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/istioctl" istio.io/istio/istioctl/cmd/istioctl
) >&2
mv -f "$tmp/istioctl" "$BIN"
"$BIN" version --remote=false >&2
echo "$BIN"
