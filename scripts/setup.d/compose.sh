#!/usr/bin/env bash
# Prerequisites of scripts/ci/compose.sh, run by scripts/setup.sh (idempotent; a warm machine skips apt and rustup):
#   musl-tools   musl-gcc, for the host-built static binaries of the offline image path (ring compiles C)
#   jq           the compose checks read `docker compose config` and curl answers with it
#   the x86_64-unknown-linux-musl target of the toolchain in rust-toolchain.toml
# The container engine itself (podman + Compose v2, or a real Docker) is set up by scripts/lib/container-engine.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in musl-tools jq; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.d/compose: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cd "$root"
target=x86_64-unknown-linux-musl
if [ "$(uname -m)" = x86_64 ] && ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "setup.d/compose: rustup target add $target"
  rustup target add "$target"
fi
