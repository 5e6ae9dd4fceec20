#!/usr/bin/env bash
# Build context of the pause image: Kubernetes' own build/pause/linux/pause.c, taken from the k8s.io/kubernetes
# module at the release scripts/tools/install-kubernetes.sh builds and compiled as upstream's Makefile does
# (-Os -static, stripped). musl-gcc (Debian musl-tools) when present, else gcc; either gives a static binary.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$root/scripts/tools/kubernetes-build/go.mod")
src=$(cd "$root/scripts/tools/kubernetes-build" && GOWORK=off GOFLAGS=-mod=readonly go mod download -json "k8s.io/kubernetes@$version" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
tag=$(sed -n 's/^TAG ?= *//p' "$src/build/pause/Makefile")
if [ -z "$tag" ] || [ ! -f "$src/build/pause/linux/pause.c" ]; then echo "pause: no build/pause in $src" >&2; exit 1; fi
cc=gcc
command -v musl-gcc >/dev/null && cc=musl-gcc
"$cc" -Os -Wall -Werror -static "-DVERSION=v$tag-kubernetes-$version" -o "$ctx/pause" "$src/build/pause/linux/pause.c"
strip "$ctx/pause"
echo "localhost/agent-mesh/pause:$tag"
