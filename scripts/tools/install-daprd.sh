#!/usr/bin/env bash
# Build Dapr's commands from the Go module proxy and cache them outside the repo: the sidecar (daprd) and, when
# named, the Kubernetes control plane (operator, sentry, placement, scheduler, injector), all from one wrapper
# module at one version.
#
#   scripts/tools/install-daprd.sh                    # daprd; prints its path on the last stdout line
#   scripts/tools/install-daprd.sh operator sentry    # the named commands; prints one path per line, in order
#   scripts/tools/install-daprd.sh --source           # the github.com/dapr/dapr module's source directory (charts,
#                                                     # CRDs) at the same version, downloaded into the Go module cache
#
# Why a build and not a download: on this project's machines only package registries are
# reachable, and the Go module proxy serves dapr's source. We build it the way upstream's
# Makefile does (CGO off, the "allcomponents" flavour for every binary, version stamped into
# pkg/buildinfo) from a throw-away wrapper module that requires github.com/dapr/dapr and repeats
# its replace directives (replace only applies in the main module, so without them the build
# would resolve different, unpatched forks). Every command shares that wrapper and the Go build
# cache, so the control plane costs a few minutes (3.5 on a busy machine) once daprd is built.
#
# Settings (env):
#   DAPR_VERSION       release to build (default below; must be served by the Go proxy)
#   AGENT_MESH_CACHE   cache root (default $HOME/.cache/agent-mesh)
#   DAPR_BUILD_TAGS    Go build tags (default allcomponents: the sqlite name resolver the
#                      self-hosted tests use is only in that flavour)
# Cache: <cache>/daprd-<version>/<command> (the directory is named after the sidecar, which it held first).
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
MOD="github.com/dapr/dapr"

log() { echo "install-daprd: $*" >&2; }

# `go mod download -json` of dapr at DAPR_VERSION: the module lands in the Go module cache (verified against the
# checksum database), and the JSON names its directory ("Dir") and commit ("Hash"). Run outside any module so
# nothing's go.mod or go.sum is touched.
download_module() {
  (cd / && GOWORK=off go mod download -json "$MOD@v$DAPR_VERSION")
}
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" | head -n1; }

if [[ "${1:-}" == --source ]]; then
  command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
  src_dir="$(download_module | json_field Dir)"
  [[ -n "$src_dir" && -f "$src_dir/go.mod" ]] || { log "$MOD@v$DAPR_VERSION could not be downloaded"; exit 1; }
  echo "$src_dir"
  exit 0
fi

commands=("$@")
[[ ${#commands[@]} -gt 0 ]] || commands=(daprd)
for cmd in "${commands[@]}"; do
  case $cmd in
    daprd | operator | sentry | placement | scheduler | injector) ;;
    *) log "unknown command '$cmd' (daprd, operator, sentry, placement, scheduler, injector)"; exit 2 ;;
  esac
done

# A cached binary counts when it is the named command of dapr at this version, built with these tags (the
# control plane has no --version flag; the Go build info records all three).
is_good() {
  local bin="$DEST_DIR/$1" info
  [[ -x "$bin" ]] || return 1
  command -v go >/dev/null || { [[ $1 == daprd && "$("$bin" --version 2>/dev/null | tail -n1)" == "$DAPR_VERSION" ]]; return; }
  info="$(go version -m "$bin" 2>/dev/null)" || return 1
  grep -qP "^\tpath\t$MOD/cmd/$1\$" <<<"$info" \
    && grep -qP "^\tmod\t$MOD\tv$DAPR_VERSION\t" <<<"$info" \
    && grep -qP "^\tbuild\t-tags=$DAPR_BUILD_TAGS\$" <<<"$info"
}

missing() {
  local cmd
  for cmd in "${commands[@]}"; do is_good "$cmd" || echo "$cmd"; done
}

print_paths() {
  local cmd
  for cmd in "${commands[@]}"; do echo "$DEST_DIR/$cmd"; done
}

if [[ -z "$(missing)" ]]; then
  print_paths
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$DEST_DIR"

# One builder at a time per version: parallel test jobs on a fresh machine must not start
# two 20-minute builds. The second one waits for the lock and then finds the binaries.
exec 9>"$DEST_DIR/.lock"
if ! flock -w "${DAPR_BUILD_LOCK_WAIT:-3600}" 9; then
  log "timed out waiting for another build of dapr $DAPR_VERSION"; exit 1
fi
mapfile -t todo < <(missing)
if [[ ${#todo[@]} -eq 0 ]]; then
  print_paths
  exit 0
fi

# Use the local toolchain when it is new enough; otherwise let go fetch the one dapr's
# go directive asks for (the proxy serves toolchains as golang.org/toolchain).
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false"
export GOWORK=off

log "fetching $MOD@v$DAPR_VERSION from the module proxy"
info_json="$(download_module)"
src_dir="$(json_field Dir <<<"$info_json")"
commit="$(json_field Hash <<<"$info_json")"
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
pkgs=()
for cmd in "${todo[@]}"; do pkgs+=("$MOD/cmd/$cmd"); done
log "resolving the dependency graph of ${todo[*]} (go $go_directive, toolchain $(go env GOVERSION))"
for pkg in "${pkgs[@]}"; do go get "$pkg@v$DAPR_VERSION" >&2; done

ldflags="-s -w"
ldflags+=" -X $MOD/pkg/buildinfo.version=$DAPR_VERSION"
ldflags+=" -X $MOD/pkg/buildinfo.gitversion=v$DAPR_VERSION"
[[ -n "$commit" ]] && ldflags+=" -X $MOD/pkg/buildinfo.gitcommit=$commit"

out="$(mktemp -d "$DEST_DIR/.build.XXXXXX")"
trap 'rm -rf "$out"' EXIT
log "building ${todo[*]} $DAPR_VERSION (tags: $DAPR_BUILD_TAGS); this is slow on a cold cache"
start=$SECONDS
nice -n "${DAPR_BUILD_NICE:-10}" go build -trimpath -tags "$DAPR_BUILD_TAGS" -ldflags "$ldflags" \
  -o "$out/" "${pkgs[@]}" >&2
for cmd in "${todo[@]}"; do mv -f "$out/$cmd" "$DEST_DIR/$cmd"; done
log "built ${todo[*]} in $((SECONDS - start))s"

for cmd in "${todo[@]}"; do
  is_good "$cmd" || { log "$DEST_DIR/$cmd is not $MOD/cmd/$cmd v$DAPR_VERSION ($DAPR_BUILD_TAGS)"; exit 1; }
done
print_paths
