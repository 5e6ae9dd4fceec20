#!/usr/bin/env bash
# Build context of the Redis image: Debian's redis-server (scripts/tools/install-redis.sh) and redis-cli, plus the
# shared libraries and dynamic loader they resolve on this machine, under rootfs/ at their own paths.
#
# The reference is the one k8s/dapr/redis.yaml names, Docker Hub's redis:<version>-bookworm, so that
# `kubectl apply -k deploy/dapr` runs unchanged with `imagePullPolicy: IfNotPresent` (as the cluster imports the
# agents' images under the names the manifests use). The name is only taken when it tells the truth about what
# runs: the Redis version of the manifest's tag must be the version of Debian's redis-server here, on bookworm.
# Otherwise this fails, and the manifest (or the machine) has to change. The packaging differs from Docker Hub's
# (Debian's build of the same release, no entrypoint script); docs/cluster.md says so.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
die() { echo "redis image: $*" >&2; exit 1; }
server=$("$root/scripts/tools/install-redis.sh" | tail -n1)
cli=$(dirname "$server")/redis-cli
[ -x "$cli" ] || die "no redis-cli next to $server"

manifest=$root/k8s/dapr/redis.yaml
image=$(awk '$1 == "image:" { print $2; exit }' "$manifest")
[[ $image =~ ^redis:([0-9]+\.[0-9]+\.[0-9]+)-bookworm$ ]] || die "$manifest names '$image'; expected redis:<version>-bookworm"
want=${BASH_REMATCH[1]}
have=$("$server" --version | sed -n 's/.* v=\([0-9.]*\) .*/\1/p')
codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
if [ "$have" != "$want" ] || [ "$codename" != bookworm ]; then
  die "$manifest names $image, but this machine has Redis $have on ${codename:-unknown}: the image would carry a false name"
fi

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
echo "docker.io/library/$image"
