#!/usr/bin/env bash
# Build the Dapr sidecar (daprd) from the Go module proxy and cache it outside the repo.
#
#   scripts/tools/install-daprd.sh        # prints the daprd path on its last stdout line
#
# Why a build and not a download: on this project's machines only package registries are
# reachable, and the Go module proxy serves dapr's source. We build it the way upstream's
# Makefile does (CGO off, the "allcomponents" flavour, version stamped into pkg/buildinfo)
# from a throw-away wrapper module that requires github.com/dapr/dapr and repeats its
# replace directives (replace only applies in the main module, so without them the build
# would resolve different, unpatched forks).
#
# Settings (env):
#   DAPR_VERSION       release to build (default below; must be served by the Go proxy)
#   AGENT_MESH_CACHE   cache root (default $HOME/.cache/agent-mesh)
#   DAPR_BUILD_TAGS    Go build tags (default allcomponents: the sqlite name resolver the
#                      self-hosted tests use is only in that flavour)
# A cold build takes tens of minutes on 2 cores; it runs under nice. A warm run returns at once.
set -euo pipefail

# 1.18.2, not 1.18.3: the proxy serves dapr v1.18.3 itself but not the
# github.com/dapr/durabletask-go v0.12.4 it requires (403 "This module version is not available"),
# while every module v1.18.2 needs is served.
DAPR_VERSION="${DAPR_VERSION:-1.18.2}"
DAPR_VERSION="${DAPR_VERSION#v}"
DAPR_BUILD_TAGS="${DAPR_BUILD_TAGS:-allcomponents}"
CACHE_ROOT="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST_DIR="$CACHE_ROOT/daprd-$DAPR_VERSION"
BIN="$DEST_DIR/daprd"

log() { echo "install-daprd: $*" >&2; }

is_good() {
  [[ -x "$BIN" ]] && [[ "$("$BIN" --version 2>/dev/null | tail -n1)" == "$DAPR_VERSION" ]]
}

if is_good; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$DEST_DIR"

# One builder at a time per version: parallel test jobs on a fresh machine must not start
# two 20-minute builds. The second one waits for the lock and then finds the binary.
exec 9>"$DEST_DIR/.lock"
if ! flock -w "${DAPR_BUILD_LOCK_WAIT:-3600}" 9; then
  log "timed out waiting for another build of daprd $DAPR_VERSION"; exit 1
fi
if is_good; then
  echo "$BIN"
  exit 0
fi

MOD="github.com/dapr/dapr"
# Use the local toolchain when it is new enough; otherwise let go fetch the one dapr's
# go directive asks for (the proxy serves toolchains as golang.org/toolchain).
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false"

log "fetching $MOD@v$DAPR_VERSION from the module proxy"
info_json="$(go mod download -json "$MOD@v$DAPR_VERSION")"
src_dir="$(printf '%s\n' "$info_json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
commit="$(printf '%s\n' "$info_json" | sed -n 's/^[[:space:]]*"Hash": "\(.*\)",\{0,1\}$/\1/p' | head -n1)"
[[ -f "$src_dir/go.mod" ]] || { log "no go.mod for $MOD@v$DAPR_VERSION in the module cache"; exit 1; }
go_directive="$(awk '$1 == "go" { print $2; exit }' "$src_dir/go.mod")"

work="$DEST_DIR/wrapper"
rm -rf "$work"
mkdir -p "$work"
{
  echo "module agent-mesh.local/daprd-build"
  echo
  echo "go $go_directive"
  echo
  echo "require $MOD v$DAPR_VERSION"
  echo
  # Every replace directive of dapr's go.mod, both the block form and the one-line form,
  # skipping commented-out lines and local (path) replacements.
  awk '
    /^[[:space:]]*\/\// { next }
    /^replace[[:space:]]*\($/ { inblock = 1; print; next }
    inblock && /^\)/ { inblock = 0; print; next }
    inblock { if ($0 !~ /=>[[:space:]]*\.\.?\//) print; next }
    /^replace[[:space:]]/ { if ($0 !~ /=>[[:space:]]*\.\.?\//) print }
  ' "$src_dir/go.mod"
} >"$work/go.mod"
# dapr's go.sum vouches for exactly the versions its go.mod selects; starting from it avoids
# re-verifying hundreds of modules against the checksum database.
cp "$src_dir/go.sum" "$work/go.sum"
chmod u+w "$work/go.sum"

cd "$work"
log "resolving the dependency graph (go $go_directive, toolchain $(go env GOVERSION))"
go get "$MOD/cmd/daprd@v$DAPR_VERSION" >&2

ldflags="-s -w"
ldflags+=" -X $MOD/pkg/buildinfo.version=$DAPR_VERSION"
ldflags+=" -X $MOD/pkg/buildinfo.gitversion=v$DAPR_VERSION"
[[ -n "$commit" ]] && ldflags+=" -X $MOD/pkg/buildinfo.gitcommit=$commit"

log "building daprd $DAPR_VERSION (tags: $DAPR_BUILD_TAGS); this is slow on a cold cache"
start=$SECONDS
nice -n "${DAPR_BUILD_NICE:-10}" go build -trimpath -tags "$DAPR_BUILD_TAGS" -ldflags "$ldflags" \
  -o "$BIN.tmp" "$MOD/cmd/daprd" >&2
mv -f "$BIN.tmp" "$BIN"
log "built in $((SECONDS - start))s"

if ! is_good; then
  log "the built binary does not report version $DAPR_VERSION: $("$BIN" --version 2>&1 | tail -n1)"
  exit 1
fi
echo "$BIN"
