#!/usr/bin/env bash
# Build the standalone kustomize from the Go module proxy into the agent-mesh tool cache.
# v5.5.0 is the kustomize that kubectl 1.32 embeds, so `kubectl apply -k` on a 1.32
# client renders exactly what CI validated. Idempotent; warm cache = a version check.
# Last stdout line: path of the kustomize binary.
set -euo pipefail

KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.5.0}"
CACHE="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST="$CACHE/kustomize-$KUSTOMIZE_VERSION"
BIN="$DEST/kustomize"

if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "install-kustomize: go is required" >&2; exit 1; }
mkdir -p "$DEST"
tmp="$(mktemp -d "$DEST/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "install-kustomize: building sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
GOBIN="$tmp" GOFLAGS="-buildvcs=false" CGO_ENABLED=0 \
  nice -n 10 go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kustomize/api/provenance.version=$KUSTOMIZE_VERSION" \
  "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
mv -f "$tmp/kustomize" "$BIN"
"$BIN" version >&2
echo "$BIN"
