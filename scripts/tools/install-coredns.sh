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
# Cache: <cache>/coredns-<version>/coredns. Cold: about 6 min of CPU (5.5 min on 2 busy cores); warm: < 1 s.
set -euo pipefail
# shellcheck source=scripts/tools/lib/go-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/go-install.sh"

COREDNS_VERSION="${COREDNS_VERSION:-1.14.7}"
COREDNS_VERSION="${COREDNS_VERSION#v}"
MOD=github.com/coredns/coredns

is_good() { [[ -x "$1" ]] && "$1" -version 2>/dev/null | grep -x "CoreDNS-$COREDNS_VERSION" >/dev/null; }
# The release's commit, stamped as upstream's Makefile does, when the module proxy reports it (Origin.Hash;
# the proxy here does not, and the binary then says "unknown").
commit_ldflags() {
  local commit
  commit=$(go mod download -json "$MOD@v$COREDNS_VERSION" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)".*/\1/p' | sed -n 1p)
  echo "-X $MOD/coremain.GitCommit=${commit:-unknown}"
}

go_install_cached coredns "$COREDNS_VERSION" "$MOD" is_good commit_ldflags
