#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine (idempotent; run as root or with sudo available).
# Tools that must be built or downloaded are cached under ${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the checks use; installed only when one is missing, so a warm machine skips apt entirely.
apt_packages=(build-essential pkg-config python3 python3-venv python3-pip curl ca-certificates)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust: the toolchain pinned by rust-toolchain.toml, with rustfmt and clippy.
if ! command -v cargo >/dev/null; then
  echo "setup: installing rustup (https://rustup.rs)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done

# Go builds istioctl and daprd from the Go module proxy. Debian's golang-go is older than those modules ask for;
# with GOTOOLCHAIN=auto (the default) go fetches the toolchain they name from the same proxy.
export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null; then
  echo "setup: installing golang-go"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends golang-go
fi

for extra in "$root"/scripts/setup.d/*.sh; do
  [ -e "$extra" ] || continue
  bash "$extra"
done
echo "setup: done"
