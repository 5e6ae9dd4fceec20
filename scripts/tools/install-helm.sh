#!/usr/bin/env bash
# Build Helm 3 from its Go module and cache it outside the repo. The cluster's Dapr add-on installs Dapr with it,
# from the chart inside the github.com/dapr/dapr module, exactly as docs/tutorial.md tells users to.
#
#   scripts/tools/install-helm.sh       # last stdout line: path of the static helm binary
#
# Why a build: only package registries are reachable here, and the Go module proxy serves Helm's source. The
# build is upstream's Makefile's (CGO off, version, commit and the Kubernetes version of its client-go stamped
# in); helm's go.mod has no replace directive, so `go install module@version` resolves exactly its go.sum.
#
# Why 3.19.5: the newest Helm 3 release built against Kubernetes 1.34's client libraries (k8s.io/* v0.34), the
# minor the cluster runs; Dapr 1.18's documentation asks for Helm 3.
#
# Settings (env):
#   HELM_VERSION       release to build (default below)
#   AGENT_MESH_CACHE   cache root (default $HOME/.cache/agent-mesh)
# Cache: <cache>/helm-<version>/helm. Cold: a few minutes on 2 cores (nice); warm: < 1 s.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-3.19.5}"
HELM_VERSION="${HELM_VERSION#v}"
CACHE="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST="$CACHE/helm-$HELM_VERSION"
BIN="$DEST/helm"
MOD=helm.sh/helm/v3

log() { echo "install-helm: $*" >&2; }
is_good() { [[ -x "$BIN" ]] && [[ "$("$BIN" version --template '{{.Version}}' 2>/dev/null)" == "v$HELM_VERSION" ]]; }

if is_good; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock -w "${HELM_BUILD_LOCK_WAIT:-3600}" 9 || { log "timed out waiting for another build"; exit 1; }
if is_good; then
  echo "$BIN"
  exit 0
fi

export GOWORK=off GOFLAGS="-buildvcs=false" CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
info="$(go mod download -json "$MOD@v$HELM_VERSION")"
src="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
commit="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)".*/\1/p' | head -n1)"
# As the Makefile: the Kubernetes version helm assumes without a cluster (helm template) is 1.<client-go minor>.
client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$src/go.mod")"
minor="$(cut -d. -f2 <<<"${client_go#v}")"
ldflags="-s -w -X $MOD/internal/version.version=v$HELM_VERSION -X $MOD/internal/version.gitTreeState=clean"
ldflags+=" -X $MOD/internal/version.gitCommit=${commit:-unknown}"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X $MOD/$pkg.k8sVersionMajor=1 -X $MOD/$pkg.k8sVersionMinor=$minor"
done
tmp="$(mktemp -d "$DEST/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "building helm $HELM_VERSION (client-go $client_go)"
start=$SECONDS
GOBIN="$tmp" nice -n "${HELM_BUILD_NICE:-10}" go install -trimpath -ldflags "$ldflags" "$MOD/cmd/helm@v$HELM_VERSION" >&2
mv -f "$tmp/helm" "$BIN"
log "built in $((SECONDS - start))s"
is_good || { log "the built binary does not report v$HELM_VERSION: $("$BIN" version 2>&1)"; exit 1; }
echo "$BIN"
