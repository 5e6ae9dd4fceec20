#!/usr/bin/env bash
# Build both agents as static musl binaries on the host and stage them, with Debian's CA roots, in
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
# The Mozilla roots as Debian's ca-certificates ships them, not the host's merged bundle: that one also holds any CA
# added locally (a proxy's, a company's), which has no place in an image. CA_BUNDLE picks another file.
mozilla_roots=/usr/share/ca-certificates/mozilla
ca_bundle=${CA_BUNDLE:-}
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
if [ -z "$ca_bundle" ]; then
  compgen -G "$mozilla_roots/*.crt" >/dev/null || die "no $mozilla_roots (apt-get install -y ca-certificates, or set CA_BUNDLE)"
fi
[ -z "$ca_bundle" ] || [ -s "$ca_bundle" ] || die "CA_BUNDLE=$ca_bundle is missing or empty"

log "cargo build --release --target $target (nice)"
CC_x86_64_unknown_linux_musl=musl-gcc \
  nice -n 10 cargo build --release --locked --target "$target" -p data -p recommendation >&2

mkdir -p "$stage"
for bin in data recommendation; do
  src="${CARGO_TARGET_DIR:-target}/$target/release/$bin"
  # A static binary has no program interpreter; a dynamic one would not start in a scratch image.
  if LC_ALL=C readelf -l "$src" | grep -q 'Requesting program interpreter'; then
    die "$src is dynamically linked"
  fi
  cp -f "$src" "$stage/$bin"
done
if [ -n "$ca_bundle" ]; then
  cp -f "$ca_bundle" "$stage/ca-certificates.crt"
else
  # Each file is one PEM certificate; join them with the newline a file may lack at its end.
  for crt in "$mozilla_roots"/*.crt; do cat "$crt"; echo; done | grep -v '^$' >"$stage/ca-certificates.crt.tmp"
  mv -f "$stage/ca-certificates.crt.tmp" "$stage/ca-certificates.crt"
fi
log "staged in $stage: $(du -k "$stage"/* | awk '{ sub(".*/", "", $2); printf "%s %s KiB; ", $2, $1 }')"
echo "$stage"
