#!/usr/bin/env bash
# Build both agents as static musl binaries on the host and stage them, with the host's CA bundle, in
# target/prebuilt/ for the Dockerfile's `prebuilt` stage (BINARIES=prebuilt).
#
# This is the offline path for machines that cannot pull the Rust builder image; a user's
# `docker compose up --build` builds inside the image instead and never needs this script.
#
# Needs: rustup target x86_64-unknown-linux-musl and musl-gcc (Debian: musl-tools), because ring compiles C.
# Prints the staging directory on its last stdout line.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=x86_64-unknown-linux-musl
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
stage="$root/target/prebuilt"

log() { echo "build-static: $*" >&2; }
die() { log "$*"; exit 1; }

cd "$root"   # rust-toolchain.toml here picks the toolchain the target must belong to
[ "$(uname -m)" = x86_64 ] || die "the offline path is for x86_64 hosts; elsewhere build with BINARIES=builder"
command -v musl-gcc >/dev/null || die "musl-gcc not found: apt-get install -y musl-tools"
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  log "adding Rust target $target"
  rustup target add "$target" >&2
fi
[ -s "$ca_bundle" ] || die "no CA bundle at $ca_bundle (apt-get install -y ca-certificates, or set CA_BUNDLE)"

log "cargo build --release --target $target (nice)"
CC_x86_64_unknown_linux_musl=musl-gcc \
  nice -n 10 cargo build --release --locked --target "$target" -p data -p recommendation >&2

mkdir -p "$stage"
for bin in data recommendation; do
  src="target/$target/release/$bin"
  # A static binary has no program interpreter; a dynamic one would not start in a scratch image.
  if LC_ALL=C readelf -l "$src" | grep -q 'Requesting program interpreter'; then
    die "$src is dynamically linked"
  fi
  cp -f "$src" "$stage/$bin"
done
cp -f "$ca_bundle" "$stage/ca-certificates.crt"
log "staged in $stage: $(du -k "$stage"/* | awk '{ sub(".*/", "", $2); printf "%s %s KiB; ", $2, $1 }')"
echo "$stage"
