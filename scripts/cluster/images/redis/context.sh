#!/usr/bin/env bash
# Build context of the Redis image: Debian's redis-server (scripts/tools/install-redis.sh) and redis-cli, plus the
# shared libraries and dynamic loader they resolve on this machine, under rootfs/ at their own paths.
#
# The reference is the one k8s/dapr/redis.yaml names (Docker Hub's redis:7.4.2-alpine), as the cluster imports the
# agents' images under the names the manifests use, so `kubectl apply -k deploy/dapr` runs unchanged with
# `imagePullPolicy: IfNotPresent`. What runs is Debian's Redis 7.0.15, which speaks the same protocol to Dapr's
# Redis components; the Dapr cluster check reports the version that answered.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
server=$("$root/scripts/tools/install-redis.sh" | tail -n1)
cli=$(dirname "$server")/redis-cli
[ -x "$cli" ] || { echo "redis: no redis-cli next to $server" >&2; exit 1; }
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/data"
cp -L "$server" "$ctx/rootfs/usr/bin/redis-server"
cp -L "$cli" "$ctx/rootfs/usr/bin/redis-cli"
# Every library either program resolves (ldd prints "name => /path (addr)" or "/path (addr)"), and the loader.
for bin in "$server" "$cli"; do ldd "$bin"; done \
  | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && NF == 2 { print $1 }' | sort -u \
  | while read -r lib; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
  done
echo "docker.io/library/redis:7.4.2-alpine"
