#!/usr/bin/env bash
# Prerequisites of scripts/cluster.sh and scripts/ci/cluster.sh, run by scripts/setup.sh (idempotent; a warm machine
# skips apt). Debian packages, the parts of the one-node cluster that are not built from Go modules:
#   containerd                    the container runtime (CRI) the kubelet drives (1.6 on bookworm)
#   runc                          the OCI runtime under it (crun refuses this machine's hybrid cgroups)
#   containernetworking-plugins   the CNI plugins (bridge, host-local, portmap, loopback) in /usr/lib/cni
#   iptables conntrack            kube-proxy's data plane and its conntrack cleanup
#   bind9-dnsutils                dig: the checks ask cluster DNS through its Service address
# Kubernetes itself and CoreDNS are built from their Go modules on first use (scripts/tools/install-kubernetes.sh,
# install-coredns.sh); the images the cluster runs are built by scripts/cluster.sh.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in containerd runc containernetworking-plugins iptables conntrack bind9-dnsutils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.d/cluster: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
