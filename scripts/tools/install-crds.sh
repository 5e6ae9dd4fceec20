#!/usr/bin/env bash
# The upstream Istio and Dapr CustomResourceDefinitions the manifest check validates against, taken from the Go
# modules the project already builds from, at the versions it pins:
#   Istio  istio.io/istio at the pseudo-version of scripts/tools/istio-build/go.mod (install-istio.sh --source):
#          manifests/charts/base/files/crd-all.gen.yaml, the file Istio's base chart installs;
#   Dapr   github.com/dapr/dapr at install-daprd.sh's DAPR_VERSION (install-daprd.sh --source):
#          charts/dapr/crds/*.yaml, the files Dapr's chart installs.
# Nothing is built: each module is downloaded into the Go module cache (the Istio and Dapr builds need it there
# anyway) and its CRD files are copied into the tool cache, keyed by version. Idempotent: with the cache warm it
# only checks the copies against the checksums written when they were made.
#
# Last stdout line: a directory holding exactly the pinned sets, as `istio/` and `dapr/` (links to the per-version
# entries), to be used as CRD_DIR.
#
# Cache: ${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}/crds/
#   istio-<istio pseudo-version>/   crd-all.gen.yaml, SHA256SUMS, SOURCE
#   dapr-<dapr version>/            *.yaml, SHA256SUMS, SOURCE
#   istio-<...>_dapr-<...>/         istio -> ../istio-<...>, dapr -> ../dapr-<...>  (printed)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
ROOT="$CACHE/crds"

log() { echo "install-crds: $*" >&2; }

# complete DIR: the copies in DIR are whole and unchanged (SHA256SUMS is written last, after every file).
complete() {
  [[ -s "$1/SHA256SUMS" && -s "$1/SOURCE" ]] && (cd "$1" && sha256sum --check --quiet --strict SHA256SUMS >/dev/null 2>&1)
}

# extract NAME SOURCE_DIR SUBDIR GLOB: copies SOURCE_DIR/SUBDIR/GLOB into $ROOT/NAME unless already there; prints
# the entry's directory. A lock keeps concurrent runs from copying over each other.
extract() {
  local name=$1 src=$2 subdir=$3 pattern=$4 dest="$ROOT/$1" tmp file
  if complete "$dest"; then
    echo "$dest"
    return 0
  fi
  mkdir -p "$ROOT"
  exec 9>"$ROOT/.$name.lock"
  flock -w 600 9 || { log "timed out waiting for another copy of $name"; return 1; }
  if ! complete "$dest"; then
    shopt -s nullglob
    local files=("$src/$subdir"/$pattern)
    shopt -u nullglob
    [[ ${#files[@]} -gt 0 ]] || { log "no CRDs at $src/$subdir/$pattern"; return 1; }
    tmp="$(mktemp -d "$ROOT/.$name.XXXXXX")"
    chmod 0755 "$tmp"
    for file in "${files[@]}"; do
      grep -q '^kind: CustomResourceDefinition' "$file" || { log "$file holds no CustomResourceDefinition"; rm -rf "$tmp"; return 1; }
      install -m 0644 "$file" "$tmp/"
    done
    echo "${src##*/}/$subdir" >"$tmp/SOURCE"
    (cd "$tmp" && sha256sum -- *.yaml >SHA256SUMS)
    rm -rf "$dest"
    mv "$tmp" "$dest"
    log "copied ${#files[@]} file(s) from ${src##*/}/$subdir into $dest"
  fi
  exec 9>&-
  echo "$dest"
}

istio_src="$("$here/install-istio.sh" --source | tail -n1)"
dapr_src="$("$here/install-daprd.sh" --source | tail -n1)"
# Module directories are named <module>@<version>.
istio_version="${istio_src##*@}"
dapr_version="${dapr_src##*@}"
istio_dir="$(extract "istio-$istio_version" "$istio_src" manifests/charts/base/files crd-all.gen.yaml)"
dapr_dir="$(extract "dapr-$dapr_version" "$dapr_src" charts/dapr/crds '*.yaml')"

set_dir="$ROOT/istio-${istio_version}_dapr-${dapr_version}"
if [[ "$(readlink "$set_dir/istio" 2>/dev/null)" != "../${istio_dir##*/}" \
  || "$(readlink "$set_dir/dapr" 2>/dev/null)" != "../${dapr_dir##*/}" ]]; then
  mkdir -p "$set_dir"
  ln -sfn "../${istio_dir##*/}" "$set_dir/istio"
  ln -sfn "../${dapr_dir##*/}" "$set_dir/dapr"
fi
echo "$set_dir"
