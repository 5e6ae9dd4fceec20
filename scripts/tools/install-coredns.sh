#!/usr/bin/env bash
# Build CoreDNS (the cluster DNS of scripts/cluster.sh) from its Go module and cache it outside the repo.
#
#   scripts/tools/install-coredns.sh      # last stdout line: path of the static coredns binary
#
# Why a build: only package registries are reachable here, and the Go module proxy serves CoreDNS's source.
# `go install module@version` builds it as upstream's Makefile does (CGO off, the plugin set of its plugin.cfg,
# GitCommit stamped); CoreDNS's go.mod has no replace directive, so no wrapper module is needed.
#
# Why 1.14.7: kubeadm 1.34 pairs Kubernetes with CoreDNS 1.12.1, which the module proxy here does not serve; the
# oldest line it serves is 1.14, and 1.14.7 is that line's newest patch release.
#
# Settings (env):
#   COREDNS_VERSION    release to build (default below)
#   AGENT_MESH_CACHE   cache root (default $HOME/.cache/agent-mesh)
# Cache: <cache>/coredns-<version>/coredns. Cold: about 3 minutes on 2 cores (nice); warm: < 1 s.
set -euo pipefail

COREDNS_VERSION="${COREDNS_VERSION:-1.14.7}"
COREDNS_VERSION="${COREDNS_VERSION#v}"
CACHE="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST="$CACHE/coredns-$COREDNS_VERSION"
BIN="$DEST/coredns"
MOD=github.com/coredns/coredns

log() { echo "install-coredns: $*" >&2; }
is_good() { [[ -x "$BIN" ]] && "$BIN" -version 2>/dev/null | grep -x "CoreDNS-$COREDNS_VERSION" >/dev/null; }

if is_good; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock -w "${COREDNS_BUILD_LOCK_WAIT:-3600}" 9 || { log "timed out waiting for another build"; exit 1; }
if is_good; then
  echo "$BIN"
  exit 0
fi

export GOWORK=off GOFLAGS="-buildvcs=false" CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
info="$(go mod download -json "$MOD@v$COREDNS_VERSION")"
commit="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)".*/\1/p' | head -n1)"
tmp="$(mktemp -d "$DEST/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "building coredns $COREDNS_VERSION (about 3 minutes on 2 cores on a cold cache)"
start=$SECONDS
GOBIN="$tmp" nice -n "${COREDNS_BUILD_NICE:-10}" go install -trimpath \
  -ldflags "-s -w -X $MOD/coremain.GitCommit=${commit:-unknown}" "$MOD@v$COREDNS_VERSION" >&2
mv -f "$tmp/coredns" "$BIN"
log "built in $((SECONDS - start))s"
is_good || { log "the built binary does not report CoreDNS-$COREDNS_VERSION"; exit 1; }
echo "$BIN"
