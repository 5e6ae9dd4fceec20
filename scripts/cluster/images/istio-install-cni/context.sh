#!/usr/bin/env bash
# Build context of Istio's CNI node agent image, in the layout of the module's cni/deployments/kubernetes/
# Dockerfile.install-cni: install-cni (the node agent, which copies the plugin to the node and chains it into the
# node's CNI configuration) and the istio-cni plugin at /opt/cni/bin, both from scripts/tools/install-istio.sh.
# Like upstream's iptables base image it carries iptables (Debian's, legacy and nft, with the libraries and
# extensions they load): the agent's repair controller rewrites the redirection of a pod that started before the
# plugin was in place, from inside this container.
#   context.sh DIR     fills DIR; last stdout line: the image reference
set -euo pipefail
ctx=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
# shellcheck source=scripts/lib/rootfs.sh
source "$root/scripts/lib/rootfs.sh"
bin=$("$root/scripts/tools/install-istio.sh" install-cni istio-cni | tail -n1)
rootfs="$ctx/rootfs"
install -D -m 0755 "$bin/install-cni" "$rootfs/usr/local/bin/install-cni"
install -D -m 0755 "$bin/istio-cni" "$rootfs/opt/cni/bin/istio-cni"
for multi in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi; do
  [ -x "$multi" ] || { echo "istio-install-cni: $multi is missing (Debian package iptables)" >&2; exit 1; }
done
rootfs_add "$rootfs" /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi
ext=$(dirname "$(readlink -f "$(ldd /usr/sbin/xtables-nft-multi | grep -o '/[^ ]*libxtables[^ ]*')")")/xtables
# shellcheck disable=SC2046 # one argument per extension file
rootfs_add "$rootfs" $(find "$ext" -name '*.so')
for tool in iptables ip6tables; do
  for suffix in "" -save -restore; do
    ln -s xtables-nft-multi "$rootfs/usr/sbin/$tool-nft$suffix"
    ln -s xtables-legacy-multi "$rootfs/usr/sbin/$tool-legacy$suffix"
    ln -s xtables-nft-multi "$rootfs/usr/sbin/$tool$suffix"
  done
done
echo "localhost/agent-mesh/istio/install-cni:$("$bin/install-cni" version -s 2>/dev/null | sed "s/.*: //" | tr + -)"
