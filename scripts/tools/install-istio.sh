#!/usr/bin/env bash
# Build Istio's binaries from the istio.io/istio Go module (Istio 1.30 line) into the agent-mesh tool cache.
# Idempotent: with the cache warm it only checks that each binary runs.
#
#   scripts/tools/install-istio.sh [COMMAND...]   last stdout line: the directory holding the binaries
#   scripts/tools/install-istio.sh --source       the istio.io/istio module's source directory (charts, bootstrap
#                                                 template), downloaded into the Go module cache if needed
#
# COMMAND is any of istioctl, pilot-discovery, pilot-agent (the sidecar and gateway agent), istio-cni (the CNI
# plugin) and install-cni (the CNI node agent); default: all five. scripts/tools/install-istioctl.sh and the
# cluster's Istio images (scripts/cluster/images/istio-*) build through this script.
#
# Why a wrapper module (scripts/tools/istio-build/go.mod) instead of `go install istio.io/istio/...@<version>`:
#  - Istio's git tags (e.g. 1.30.3) have no "v", so the proxy knows Istio commits only as pseudo-versions; the
#    proxy reachable here refuses the 1.30.3 tag commit (56df41f63e51) and serves one release-1.30 branch commit,
#    9739e10eb9d7 (2026-08-26, VERSION file 1.30, after 1.30.3).
#  - That commit's go.mod names unreleased pseudo-versions of istio.io/api, istio.io/client-go and
#    go-control-plane which the proxy refuses too; the wrapper raises them to released versions it serves
#    (istio.io/api v1.30.8, ...). Its go.sum pins every module by hash.
#  - pilot-discovery needs github.com/agentgateway/agentgateway/api, which this proxy refuses (403) for every
#    version Istio names. Where that happens, and only then, the build runs in a temporary copy of the wrapper with
#    `replace` pointing at an unmodified upstream copy of the module under $AGENT_MESH_GO_MODULES (default
#    <repo>/../shared/go-modules, laid out as <module>@<version>/); the copy is used only when its content hashes
#    to the h1: sum the wrapper's go.sum (and Istio's own) records for that version. Where the proxy serves the
#    module, the build is the plain one.
#
# Cache: ${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}/istio-<istio pseudo-version>-<go.mod/go.sum hash>/
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
wrapper="$here/istio-build"
ISTIO_MODULE_VERSION="$(awk '$1=="istio.io/istio"{print $2}' "$wrapper/go.mod")"
ISTIO_RELEASE_LINE="1.30"
GO_MODULES="${AGENT_MESH_GO_MODULES:-$root/../shared/go-modules}"
key="$(cat "$wrapper/go.mod" "$wrapper/go.sum" | sha256sum | cut -c1-12)"
CACHE="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST="$CACHE/istio-$ISTIO_MODULE_VERSION-$key"

log() { echo "install-istio: $*" >&2; }

if [[ "${1:-}" == --source ]]; then
  dir=$(cd "$wrapper" && GOFLAGS=-mod=readonly go mod download -json "istio.io/istio@$ISTIO_MODULE_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -n "$dir" && -f "$dir/VERSION" ]] || { log "istio.io/istio@$ISTIO_MODULE_VERSION could not be downloaded"; exit 1; }
  echo "$dir"
  exit 0
fi

declare -A PACKAGE=(
  [istioctl]=istio.io/istio/istioctl/cmd/istioctl
  [pilot-discovery]=istio.io/istio/pilot/cmd/pilot-discovery
  [pilot-agent]=istio.io/istio/pilot/cmd/pilot-agent
  [istio-cni]=istio.io/istio/cni/cmd/istio-cni
  [install-cni]=istio.io/istio/cni/cmd/install-cni
)
commands=("$@")
[[ ${#commands[@]} -gt 0 ]] || commands=(istioctl pilot-discovery pilot-agent istio-cni install-cni)
for cmd in "${commands[@]}"; do
  [[ -n "${PACKAGE[$cmd]:-}" ]] || { log "unknown command '$cmd' (one of: ${!PACKAGE[*]})"; exit 2; }
done

# runs BINARY: the built binary starts and reports its version (the CNI plugin speaks the CNI protocol instead).
runs() {
  local bin="$DEST/$1"
  [[ -x "$bin" ]] || return 1
  case $1 in
    istioctl) "$bin" version --remote=false ;;
    istio-cni) CNI_COMMAND=VERSION "$bin" </dev/null | grep -q '"cniVersion"' ;;
    *) "$bin" version -s ;;
  esac >/dev/null 2>&1
}

missing() {
  local cmd
  for cmd in "${commands[@]}"; do runs "$cmd" || echo "$cmd"; done
}

todo=$(missing)
if [[ -z "$todo" ]]; then
  echo "$DEST"
  exit 0
fi

command -v go >/dev/null || { log "go is required"; exit 1; }
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock -w 1800 9 || { log "timed out waiting for another build in $DEST"; exit 1; }
todo=$(missing)   # another process may have built them while this one waited
if [[ -z "$todo" ]]; then
  echo "$DEST"
  exit 0
fi

tmp="$(mktemp -d "$DEST/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# h1_of_dir DIR MODULE@VERSION: the go.sum "h1:" hash of a module's files (golang.org/x/mod/sumdb/dirhash Hash1:
# sha256 over the sorted "<sha256>  <module>@<version>/<file>" lines). SHA256SUMS is the copy's provenance note,
# not part of the module.
h1_of_dir() {
  local dir=$1 prefix=$2 file
  (
    cd "$dir"
    find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r file; do
      printf '%s  %s/%s\n' "$(sha256sum "$file" | cut -c1-64)" "$prefix" "$file"
    done
  ) | sha256sum | cut -c1-64 | tr 'a-f' 'A-F' | basenc --base16 -d | base64
}

# Modules the proxy refuses: build in a copy of the wrapper that replaces each with its verified local copy.
build_dir="$wrapper"
if [[ -d "$GO_MODULES" ]]; then
  while IFS= read -r gomod; do
    dir=$(dirname "$gomod")
    rel=${dir#"$GO_MODULES"/}
    module=${rel%@*}
    version=${rel##*@}
    [[ "$rel" == *@* ]] || continue
    # Only a module at the version this build selects, and only when the proxy will not serve it.
    selected=$(cd "$wrapper" && GOFLAGS=-mod=readonly go list -e -m -f '{{.Version}}' "$module" 2>/dev/null) || continue
    [[ "$selected" == "$version" ]] || continue
    if (cd "$wrapper" && GOFLAGS=-mod=readonly go mod download "$module@$version" >/dev/null 2>&1); then
      continue
    fi
    want=$(awk -v m="$module" -v v="$version" '$1 == m && $2 == v { print $3 }' "$wrapper/go.sum")
    got="h1:$(h1_of_dir "$dir" "$module@$version")"
    if [[ "$got" != "$want" ]]; then
      log "$dir does not hash to go.sum's ${want:-<no entry>} (got $got): not using it"
      exit 1
    fi
    if [[ "$build_dir" == "$wrapper" ]]; then
      build_dir="$tmp/wrapper"
      mkdir -p "$build_dir"
      cp "$wrapper/go.mod" "$wrapper/go.sum" "$build_dir/"
    fi
    log "the module proxy refuses $module@$version: using the verified copy in $dir"
    (cd "$build_dir" && go mod edit -replace "$module@$version=$dir")
  done < <(find "$GO_MODULES" -name go.mod -path '*@*' 2>/dev/null | sort)
fi

rev="${ISTIO_MODULE_VERSION##*-}"
pkg=istio.io/istio/pkg/version
ver="${ISTIO_RELEASE_LINE}-dev+${rev}"
ldflags="-s -w -X $pkg.buildVersion=$ver -X $pkg.buildGitRevision=$rev -X $pkg.buildStatus=Clean"
ldflags+=" -X $pkg.buildTag=$ver -X $pkg.buildOS=$(go env GOOS) -X $pkg.buildArch=$(go env GOARCH)"

packages=()
for cmd in $todo; do packages+=("${PACKAGE[$cmd]}"); done
log "building $(echo "$todo" | tr '\n' ' ')from istio.io/istio@$ISTIO_MODULE_VERSION (minutes on 2 cores; about one more with a warm Go build cache)"
started=$SECONDS
# Build into a temp dir and move into place so an interrupted build leaves no half binary.
(
  cd "$build_dir"
  GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${packages[@]}"
) >&2 || {
  log "go build failed; a module the proxy refuses (403) needs an unmodified copy under AGENT_MESH_GO_MODULES ($GO_MODULES)"
  exit 1
}
for cmd in $todo; do
  mv -f "$tmp/$cmd" "$DEST/$cmd"
  runs "$cmd" || { log "$DEST/$cmd was built but does not run"; exit 1; }
done
log "built in $((SECONDS - started))s: $DEST"
echo "$DEST"
