#!/usr/bin/env bash
# Write a skeleton of the Cargo workspace at SRC into DEST: the root manifest, Cargo.lock, every member's
# Cargo.toml, and a one-line placeholder for every target `cargo metadata` lists (libraries, binaries, tests,
# benches, build scripts). Building the skeleton compiles exactly the dependencies, so the Dockerfile can cache
# them in a layer that only a manifest change invalidates, whatever members the workspace gains later.
#
# Timestamps are reset to the epoch: the skeleton is then byte-identical while no manifest changes, which is what
# keeps the builder's COPY of it cached. Needs cargo; no network (--offline, --no-deps).
#
# Usage: cargo-skeleton.sh SRC DEST
set -euo pipefail

src=$(cd "${1:?usage: cargo-skeleton.sh SRC DEST}" && pwd)
dest=${2:?usage: cargo-skeleton.sh SRC DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

cd "$src"
cp Cargo.toml Cargo.lock "$dest/"
find . -path ./target -prune -o -name Cargo.toml -print | while read -r manifest; do
  mkdir -p "$dest/$(dirname "$manifest")"
  cp "$manifest" "$dest/$manifest"
done
cargo metadata --format-version 1 --no-deps --offline --manifest-path "$src/Cargo.toml" \
  | grep -o '"src_path":"[^"]*"' | cut -d'"' -f4 \
  | while read -r target; do
      rel=${target#"$src"/}
      mkdir -p "$dest/$(dirname "$rel")"
      echo 'fn main() {}' >"$dest/$rel"
    done
find "$dest" -exec touch -h -d @0 {} +
