# shellcheck shell=bash
# Sourced by scripts/ci/cluster.sh and scripts/ci/lib/shared-cluster.sh, not a check itself (test.sh runs
# scripts/ci/*.sh only): what a cluster could leave on this machine, for the before/after comparison that proves
# `scripts/cluster.sh down` leaves the machine as it was.
#
# Needs: the caller's `note` function (without_other_clusters reports what it left out of the comparison).

# host_prerequisites ROOT: sets up, before the snapshot, what `scripts/cluster.sh up` would otherwise install on
# its first use: the container engine (on a new machine the podman package brings
# /etc/cni/net.d/87-podman-bridge.conflist). What an installation puts on the machine is not what a cluster left, and
# the first run on a new machine would otherwise report it as such. Without an engine it only notes so: `up` needs
# one only when an image is not cached, and says so itself.
host_prerequisites() {
  # shellcheck source=scripts/lib/container-engine.sh
  . "$1/scripts/lib/container-engine.sh"
  engine_setup "$1" || note "no container engine set up before the snapshot: an engine installed by up would show as a difference"
}

# What a cluster could leave on this machine, for the before/after comparison of `down`. podman's own networks
# (netavark, other checks' containers) are not the cluster's and are left out. (A filter that leaves nothing is not
# an error, hence no pipefail here.)
host_snapshot() {
  set +o pipefail
  local hierarchy
  echo "## links"; ip -o link show | awk -F': ' '{ print $2 }' | sed 's/@.*//' | grep -v -E '^(veth|podman)' | sort
  echo "## addresses"; ip -o addr show | awk '{ print $2, $4 }' | grep -v -E '^(veth|podman)' | sort
  echo "## routes"; ip route show table all | grep -v -E 'dev (veth|podman)' | sort
  for tool in iptables-save ip6tables-save; do
    echo "## $tool"
    "$tool" 2>/dev/null | grep -v -E '^#|NETAVARK|netavark|podman' | sed 's/\[[0-9]*:[0-9]*\]//' | sort
  done
  echo "## mounts"; findmnt -rn -o TARGET,FSTYPE | grep -v -E '/containers/storage/|/run/netns/netns-|/run/containers/' | sort
  echo "## cgroups"
  for hierarchy in /sys/fs/cgroup/*/; do find "$hierarchy" -maxdepth 1 -mindepth 1 -type d; done | sort
  echo "## sysctls"
  sysctl vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys \
    kernel.keys.root_maxbytes net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.netfilter.nf_conntrack_max \
    net.ipv4.conf.all.route_localnet 2>/dev/null
  # Which AGENT_MESH_CLUSTER instances exist now, so without_other_clusters can tell theirs from this one's.
  echo "## clusters"; find /var/lib/agent-mesh -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort
  echo "## paths"
  ls -d /var/log/containers /var/log/pods /run/containerd /var/lib/cni /run/xtables.lock /var/lib/kubelet \
    /etc/kubernetes /etc/cni /opt/cni /opt/containerd /var/lib/containerd /run/netns /var/run/kubernetes \
    /var/lib/agent-mesh 2>/dev/null || true   # ls fails for the paths that do not exist
  set -o pipefail
}

# without_other_clusters FILE...: drop from host snapshots what belongs to other clusters (AGENT_MESH_CLUSTER
# instances) that ran beside this one: their links, addresses, routes, mounts, cgroups and state directories. The
# kernel settings and shared paths are the last cluster's to restore, so with another cluster about they are left
# out of the comparison, and the note says so.
without_other_clusters() {
  local own=/var/lib/agent-mesh/${AGENT_MESH_CLUSTER:-cluster} others name pattern file
  others=$(awk '/^## clusters/ { on = 1; next } /^## / { on = 0 } on' "$@" | sort -u | grep -vx "$own" || true)
  [ -n "$others" ] || return 0
  pattern=""
  for name in $others; do
    name=${name##*/}
    pattern+="${pattern:+|}am-${name}[01]|agent-mesh-${name}\b|/var/lib/agent-mesh/${name}\b"
  done
  for file in "$@"; do
    awk '/^## (sysctls|clusters|paths)/ { skip = 1; print; next } /^## / { skip = 0 } !skip' "$file" \
      | grep -v -E "$pattern" >"$file.own" || true
    mv "$file.own" "$file"
  done
  note "other clusters ran meanwhile ($(tr '\n' ' ' <<<"$others")): kernel settings and shared paths not compared"
}

# down_as_before BEFORE DIR: `scripts/cluster.sh down` of the instance AGENT_MESH_CLUSTER names, then the machine
# compared with the snapshot BEFORE taken before its `up` (the snapshot after and the difference go to DIR). Reports
# through the caller's ok / not_ok / note.
down_as_before() {
  local before=$1 dir=$2 t=$SECONDS
  if scripts/cluster.sh down; then ok "scripts/cluster.sh down (instance ${AGENT_MESH_CLUSTER:-cluster})"; else not_ok "scripts/cluster.sh down reported leftovers"; fi
  note "down $((SECONDS - t)) s"
  host_snapshot >"$dir/host-after"
  without_other_clusters "$before" "$dir/host-after"
  if diff "$before" "$dir/host-after" >"$dir/host-diff"; then
    ok "the machine is as it was before up (links, addresses, routes, iptables, ip6tables, mounts, cgroups, sysctls, paths)"
  else
    not_ok "the machine differs after down:"; sed 's/^/       /' "$dir/host-diff" | head -30
  fi
}
