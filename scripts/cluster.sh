#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, made only of upstream projects (docs/cluster.md).
#
#   scripts/cluster.sh up [--istio] [--dapr]  start the cluster, or complete it (idempotent); waits until the node
#                                             is Ready and cluster DNS answers; the agents' images are loaded.
#                                             stdout is one line: export KUBECONFIG=<path>  (eval "$(... up)")
#   scripts/cluster.sh down                   stop everything it started and leave the machine as it was
#   scripts/cluster.sh status                 what runs, and anything left over (exit 0 running, 3 stopped, 1 broken)
#   scripts/cluster.sh load                   rebuild the agents' images and import them into the node
#   scripts/cluster.sh import RECIPE...       build (cached) and import images of scripts/cluster/images/RECIPE;
#                                             prints each image's reference
#   scripts/cluster.sh exec CMD [ARG...]      run a command on the node (in its network namespace)
#
# The parts: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl built
# from k8s.io/kubernetes (scripts/tools/install-kubernetes.sh); containerd, runc, the CNI plugins and iptables from
# Debian; CoreDNS from its Go module, as a pod. Every image the cluster runs is built here (scripts/cluster/images/)
# and imported into containerd; nothing is pulled.
#
# Isolation: the node's network is a network namespace this script creates (bound to <dir>/netns, not in
# /run/netns) and joined to the host by one veth pair. Every component runs in it as a plain process (PID files in
# <dir>/run, logs in <dir>/logs), so the API server's port, kube-proxy's and the CNI's iptables rules, the bridge
# and the pods' addresses exist only there: nothing collides with the host, and deleting the namespace deletes them.
# The namespace has no default route: pods reach each other, Services and the API server, and nothing else; cluster
# DNS answers cluster names only. Mounts (kubelet volumes, container root filesystems, pod network namespaces) stay
# under <dir>, cgroups under /<cgroup root> in each hierarchy; `down` removes both and restores the kernel settings
# the kubelet changes.
#
# Add-ons: scripts/cluster/addons/<name>/ (see its README.md); coredns always, istio with --istio, dapr with --dapr.
#
# Settings (env):
#   AGENT_MESH_CLUSTER       instance name (default cluster): several clusters can run at once, each with its own
#                            name; every command acts on the named one. 1 to 11 lower-case letters and digits.
#   AGENT_MESH_CLUSTER_DIR   state directory (default /var/lib/agent-mesh/<instance>); removed by down
#   AGENT_MESH_CACHE         built tools and image archives (default $HOME/.cache/agent-mesh)
#   CLUSTER_NODE_NAME        node name (default agent-mesh)
#   CLUSTER_HOST_IP / CLUSTER_NODE_IP   the veth pair's addresses, a /30 (default 10.250.0.1 / 10.250.0.2 for the
#                            instance `cluster`, 10.250.N.1 / 10.250.N.2 for others, N derived from the name)
#   CLUSTER_POD_CIDR         default 10.244.0.0/16 (the node gets a /24 of it)
#   CLUSTER_SERVICE_CIDR     default 10.96.0.0/16; cluster DNS at CLUSTER_DNS_IP (default 10.96.0.10)
#   CLUSTER_WAIT_SECONDS     bound of each wait in up (default 120)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_SH="$ROOT/scripts/cluster.sh"
CACHE=${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}
INSTANCE=${AGENT_MESH_CLUSTER:-cluster}
# The name goes into a link name (15 bytes at most: "am-" + name + "0") and a cgroup name.
[[ $INSTANCE =~ ^[a-z0-9]{1,11}$ ]] || {
  echo "cluster: AGENT_MESH_CLUSTER=$INSTANCE: use 1 to 11 lower-case letters and digits" >&2
  exit 2
}
DIR=${AGENT_MESH_CLUSTER_DIR:-/var/lib/agent-mesh/$INSTANCE}
# The machine-wide record of what down restores once the last cluster is gone (see record_host).
HOST_RECORD="$(dirname "$DIR")/host-before"
NODE=${CLUSTER_NODE_NAME:-agent-mesh}
# Each instance its own /30 on the host: 10.250.0.0/30 for the default one, 10.250.N.0/30 (N in 1..254, from the
# name) for others; ensure_netns refuses a range the host already routes, so a clash is reported, never shared.
if [ "$INSTANCE" = cluster ]; then subnet_index=0; else subnet_index=$(($(cksum <<<"$INSTANCE" | cut -d' ' -f1) % 254 + 1)); fi
HOST_IP=${CLUSTER_HOST_IP:-10.250.$subnet_index.1}
NODE_IP=${CLUSTER_NODE_IP:-10.250.$subnet_index.2}
POD_CIDR=${CLUSTER_POD_CIDR:-10.244.0.0/16}
SERVICE_CIDR=${CLUSTER_SERVICE_CIDR:-10.96.0.0/16}
DNS_IP=${CLUSTER_DNS_IP:-10.96.0.10}
DOMAIN=cluster.local
WAIT=${CLUSTER_WAIT_SECONDS:-120}
HOST_LINK="am-${INSTANCE}0"          # the host's end of the veth pair (the node's end is eth0 in the namespace)
NODE_LINK="am-${INSTANCE}1"          # the node's end until it is moved into the namespace and renamed eth0
CGROUP_NAME="agent-mesh-$INSTANCE"   # kubelet's cgroupRoot: pods live under /<this>/kubepods in every hierarchy

NETNS="$DIR/netns"
PKI="$DIR/pki"
KCONF="$DIR/kubeconfig"
CONF="$DIR/config"
RUN="$DIR/run"
LOGS="$DIR/logs"
CONTAINERD_SOCK="$DIR/containerd/containerd.sock"
KUBECONFIG_PATH="$KCONF/admin.conf"
ADDONS="$ROOT/scripts/cluster/addons"
IMAGES="$ROOT/scripts/cluster/images"
# Start order; down stops the kubelet first (so it restarts nothing) and the rest in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)
# Kernel settings the kubelet sets for itself (pkg/kubelet/cm setupKernelTunables): global, not per namespace.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes)
# Host paths the node's programs create when they are missing, whatever their configured directories (kubelet:
# /var/log/containers, and /var/lib/kubelet/device-plugins, its device manager's socket directory, a constant in
# k8s.io/kubelet's deviceplugin API; containerd's shims: /run/containerd/s, a constant in containerd 1.6's
# runtime/v2/shim; libcni's result cache: /var/lib/cni; iptables: /run/xtables.lock).
# And the state directory's parent, when up had to create it.
HOST_PATHS=(/var/log/containers /var/lib/kubelet /run/containerd /var/lib/cni /run/xtables.lock "$(dirname "$DIR")")

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }
as_root() { [ "$(id -u)" = 0 ] || die "must run as root (network namespace, mounts, cgroups)"; }
node_exec() { nsenter --net="$NETNS" -- "$@"; }
netns_up() { [ "$(findmnt -rno FSTYPE --mountpoint "$NETNS" 2>/dev/null)" = nsfs ]; }

# wait_for SECONDS WHAT CMD...: run CMD until it succeeds; fail with WHAT after SECONDS.
wait_for() {
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { log "timed out after ${seconds}s waiting for $what"; return 1; }
    sleep 0.5
  done
}

# wait_healthy NAME SECONDS WHAT CMD...: wait_for, but give up at once, with the end of its log, when the component
# NAME has exited.
wait_healthy() {
  local name=$1 seconds=$2 what=$3 deadline
  shift 3
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then
      tail -n 15 "$LOGS/$name.log" >&2
      die "$name exited (log: $LOGS/$name.log)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${seconds}s waiting for $what (log: $LOGS/$name.log)"
    sleep 0.5
  done
}

# --- processes ------------------------------------------------------------------------------------------------------

pid_of() { cat "$RUN/$1.pid" 2>/dev/null || true; }

# A PID file only counts while its process is the one we started: every component's command line names a path under
# $DIR (with the slash, so that instance `a` never claims the processes of instance `ab`).
alive() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -F "$DIR/" >/dev/null
}

# start NAME CMD...: start CMD on the node, detached (own session, stdin closed, output to logs/NAME.log), unless
# it already runs. The PID is written by the process itself before it execs CMD, so the file holds CMD's PID.
start() {
  local name=$1
  shift
  alive "$name" && return 0
  rm -f "$RUN/$name.pid"
  log "starting $name"
  # shellcheck disable=SC2016 # $$, $1 and $@ belong to the inner sh
  setsid -f sh -c 'echo $$ >"$1"; ns=$2; shift 2; exec nsenter --net="$ns" -- "$@"' sh "$RUN/$name.pid" "$NETNS" "$@" \
    </dev/null >>"$LOGS/$name.log" 2>&1
  wait_for 10 "$name to start" test -s "$RUN/$name.pid"
}

# stop NAME...: SIGTERM, then SIGKILL after STOP_SECONDS (15; down, which deletes all state, waits 5); all named
# components in parallel.
STOP_SECONDS=15
stop() {
  local name pids=() names=() pid deadline i
  for name in "$@"; do
    if alive "$name"; then
      pids+=("$(pid_of "$name")")
      names+=("$name")
    fi
  done
  [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$((SECONDS + STOP_SECONDS))
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    while [ -d "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if [ -d "/proc/$pid" ]; then
      log "${names[$i]} (pid $pid) still running ${STOP_SECONDS} s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for name in "$@"; do rm -f "$RUN/$name.pid"; done
}

# Every process that belongs to the cluster: members of the node's network namespace (the components, containerd's
# shims) and of the pods' cgroups (the containers, in their own namespaces).
cluster_pids() {
  local ns_inode pid
  if netns_up; then
    ns_inode=$(stat -L -c %i "$NETNS")
    for pid in /proc/[0-9]*; do
      [ "$(readlink "$pid/ns/net" 2>/dev/null)" = "net:[$ns_inode]" ] && echo "${pid#/proc/}"
    done
  fi
  find /sys/fs/cgroup/*/"$CGROUP_NAME" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

# --- host snapshot: what down restores ------------------------------------------------------------------------------

# record_host: before anything is created, note what down must restore. Kernel settings and host paths are shared by
# every cluster on the machine, so the first cluster to come up writes the machine's record ($HOST_RECORD, beside
# the state directories) and the last one to go down restores it; each cluster also marks its own state directory.
record_host() {
  if [ ! -f "$HOST_RECORD" ] && [ -z "$(other_clusters)" ]; then
    local key path before
    before=$(
      for key in "${KUBELET_SYSCTLS[@]}"; do echo "sysctl $key $(sysctl -n "$key")"; done
      for path in "${HOST_PATHS[@]}"; do if [ -e "$path" ]; then echo "existed $path"; else echo "absent $path"; fi; done
    )
    mkdir -p "$(dirname "$HOST_RECORD")"
    echo "$before" >"$HOST_RECORD.tmp"
    mv "$HOST_RECORD.tmp" "$HOST_RECORD"
  fi
  if [ ! -f "$DIR/host-before" ]; then
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    echo "recorded in $HOST_RECORD" >"$DIR/host-before"
  fi
  mkdir -p "$RUN" "$LOGS"
}

# other_clusters: the state directories of the other clusters on this machine (beside ours).
other_clusters() {
  local marker
  for marker in "$(dirname "$DIR")"/*/host-before; do
    [ -f "$marker" ] && [ "$(dirname "$marker")" != "$DIR" ] && dirname "$marker"
  done
  return 0
}

# forget_cluster: after the state directory is gone, remove what the node left outside it: the kubelet's links to
# this cluster's pod logs and libcni's cached results of its pods (pod network and loopback; each names its network
# namespace, which lived under $DIR).
forget_cluster() {
  local file
  find /var/log/containers -maxdepth 1 -type l -lname "$DIR/*" -delete 2>/dev/null || true
  for file in /var/lib/cni/results/*; do
    if [ -f "$file" ] && grep -qF "$DIR/" "$file"; then rm -f "$file"; fi
  done
}

# remove_dead_shim_sockets: the sockets of the shims down killed. containerd 1.6 puts them under /run/containerd/s
# whatever its state directory, and a killed shim cannot remove its own. Called only once no cluster runs: shims
# live in their node's network namespace, where the host's `ss` cannot see their listeners. A socket nobody on the
# host listens on is then dead, whoever made it (a host containerd's live shims listen in the host's namespace).
remove_dead_shim_sockets() {
  local sockets=() listening file
  for file in /run/containerd/s/*; do [ -S "$file" ] && sockets+=("$file"); done
  [ "${#sockets[@]}" -gt 0 ] || return 0
  # The sockets are listed before the listeners, so one made in between is not taken for dead.
  listening=$(ss -xlnH 2>/dev/null) || { log "ss failed: dead shim sockets left in /run/containerd/s"; return 0; }
  listening=$(awk '{ print $5 }' <<<"$listening")
  for file in "${sockets[@]}"; do
    grep -qxF "$file" <<<"$listening" || rm -f "$file"
  done
}

# restore_host: once the last cluster is gone, put back what record_host noted: the kernel settings, and no host
# path a cluster created. While another cluster runs, its kubelet still needs them; it restores them when it goes.
restore_host() {
  [ -f "$HOST_RECORD" ] && [ -z "$(other_clusters)" ] || return 0
  local before kind key value path
  before=$(cat "$HOST_RECORD")
  rm -f "$HOST_RECORD"
  remove_dead_shim_sockets
  while read -r kind key value; do
    [ "$kind" = sysctl ] || continue
    [ "$(sysctl -n "$key")" = "$value" ] || sysctl -qw "$key=$value"
  done <<<"$before"
  # Only what the record names as absent before the first up: a record without a line for a path (written by an
  # older version of this script) leaves that path alone.
  for path in "${HOST_PATHS[@]}"; do
    grep -qx "absent $path" <<<"$before" || continue
    case $path in
      /run/xtables.lock) rm -f "$path" ;;
      *)
        # The kubelet's device manager leaves its socket and checkpoint behind; no kubelet runs any more.
        if [ "$path" = /var/lib/kubelet ]; then
          rm -f "$path/device-plugins/kubelet.sock" "$path/device-plugins/kubelet_internal_checkpoint"
        fi
        if [ -d "$path" ]; then find "$path" -depth -type d -empty -delete 2>/dev/null || true; fi
        ;;
    esac
  done
}

# --- network ----------------------------------------------------------------------------------------------------------

ensure_netns() {
  if netns_up; then
    ip link show "$HOST_LINK" >/dev/null 2>&1 || die "$NETNS exists but $HOST_LINK is gone: run down, then up"
    return 0
  fi
  # The addresses must be free on the host, or traffic meant for the node would go elsewhere.
  local cidr
  for cidr in "$HOST_IP/30" "$POD_CIDR" "$SERVICE_CIDR"; do
    if ip -4 route show to match "${cidr%/*}" | grep -v "^default" | grep . >/dev/null; then
      die "the host already routes $cidr ($(ip -4 route show to match "${cidr%/*}" | grep -v '^default' | head -1)); set CLUSTER_* to free ranges"
    fi
  done
  log "network namespace $NETNS, veth $HOST_LINK ($HOST_IP) <-> eth0 ($NODE_IP)"
  touch "$NETNS"
  unshare --net="$NETNS" true
  ip link add "$HOST_LINK" type veth peer name "$NODE_LINK"
  ip link set "$NODE_LINK" netns "$NETNS"
  ip addr add "$HOST_IP/30" dev "$HOST_LINK"
  ip link set "$HOST_LINK" up
  node_exec ip link set lo up
  node_exec ip link set "$NODE_LINK" name eth0
  node_exec ip addr add "$NODE_IP/30" dev eth0
  node_exec ip link set eth0 up
  # Connections the node itself opens to a Service address need a route to exist before kube-proxy's DNAT; eth0 is
  # as good as any, and the host behind it forwards nothing (no default route: nothing leaves the namespace).
  node_exec ip route add "$SERVICE_CIDR" dev eth0
  # Per-namespace settings: routing between pods, and bridged pod-to-pod traffic through iptables (Services).
  node_exec sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
}

# The node's CNI binary directory is its own: links to Debian's plugins, so that an add-on installing a chained plugin
# (Istio's CNI agent copies istio-cni there) writes under the state directory, never into /usr/lib/cni.
ensure_cni_bin() {
  local plugin
  mkdir -p "$CNI_BIN"
  for plugin in "$CNI_PLUGINS"/*; do
    [ -e "$CNI_BIN/${plugin##*/}" ] || ln -s "$plugin" "$CNI_BIN/${plugin##*/}"
  done
}

write_cni_config() {
  local subnet=$1 file="$DIR/cni/net.d/10-agent-mesh.conflist"
  [ -f "$file" ] && return 0
  log "CNI: bridge cni0, pods in $subnet"
  mkdir -p "$DIR/cni/net.d" "$DIR/cni/ipam"
  # No ipMasq: nothing leaves the node, so pod addresses never need rewriting.
  cat >"$file.tmp" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "agent-mesh",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$subnet"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  mv "$file.tmp" "$file"
}

# --- certificates, kubeconfigs, configuration files -------------------------------------------------------------------

ensure_pki() {
  [ -f "$KCONF/kube-proxy.conf" ] && return 0
  log "certificates and kubeconfigs (kubeadm init phase certs/kubeconfig)"
  mkdir -p "$PKI" "$KCONF" "$CONF"
  cat >"$CONF/kubeadm.yaml" <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: $NODE_IP
  bindPort: 6443
nodeRegistration:
  name: $NODE
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: $NODE
kubernetesVersion: $KUBERNETES_VERSION
certificatesDir: $PKI
controlPlaneEndpoint: $NODE_IP:6443
networking:
  dnsDomain: $DOMAIN
  podSubnet: $POD_CIDR
  serviceSubnet: $SERVICE_CIDR
apiServer:
  certSANs: [$NODE_IP, 127.0.0.1, localhost]
etcd:
  local:
    dataDir: $DIR/etcd
EOF
  "$KBIN/kubeadm" init phase certs all --config "$CONF/kubeadm.yaml" >&2
  "$KBIN/kubeadm" init phase kubeconfig all --config "$CONF/kubeadm.yaml" --kubeconfig-dir "$KCONF" >&2
  "$KBIN/kubeadm" kubeconfig user --config "$CONF/kubeadm.yaml" --client-name system:kube-proxy \
    >"$KCONF/kube-proxy.conf.tmp"
  mv "$KCONF/kube-proxy.conf.tmp" "$KCONF/kube-proxy.conf"
}

# config FILE COMPONENT: write stdin to $CONF/FILE when it differs; a running COMPONENT is then stopped, so up starts
# it again with the new file (kube-proxy watches its file and exits by itself on a change).
config() {
  local file="$CONF/$1" component=$2
  cat >"$file.tmp"
  if cmp -s "$file.tmp" "$file"; then
    rm -f "$file.tmp"
    return 0
  fi
  mv "$file.tmp" "$file"
  if alive "$component"; then
    log "$1 changed: restarting $component"
    stop "$component"
  fi
}

write_configs() {
  mkdir -p "$CONF" "$DIR/containerd" "$DIR/kubelet" "$DIR/pod-logs"
  config containerd.toml containerd <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # runc cannot lower oom_score_adj without CAP_SYS_RESOURCE, which this machine withholds.
  restrict_oom_score_adj = true
  # The pods' network namespaces are bind-mounted under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
        # runc's own state (default /run/containerd/runc) with the rest of the cluster's.
        Root = "$DIR/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$DIR/cni/net.d"
EOF
  config kubelet.yaml kubelet <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
# cgroup v1 (hybrid) without systemd: this release still runs there when told to.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_NAME
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$DNS_IP]
clusterDomain: $DOMAIN
# No host resolvers in pods: cluster DNS answers cluster names, nothing resolves outside.
resolvConf: ""
podLogsDir: $DIR/pod-logs
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
failSwapOn: false
rotateCertificates: false
# Absolute eviction thresholds: the percentages by default (10 % / 15 % free) put a node on a big, shared disk
# under DiskPressure while gigabytes are free. No image garbage collection: nothing here can be pulled again.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1Gi
  imagefs.available: 1Gi
  nodefs.inodesFree: 5%
  imagefs.inodesFree: 5%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  config kube-proxy.yaml kube-proxy <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $KCONF/kube-proxy.conf
hostnameOverride: $NODE
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [primary]
# Leave the host's conntrack table size alone (a global setting); timeouts are per namespace and stay as they are.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# The kubelet checks that its cgroupRoot exists in every hierarchy it uses; cpuset needs its CPUs and memory nodes.
ensure_cgroups() {
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [ "$(stat -f -c %T "$hierarchy")" = cgroupfs ] || continue   # v1 hierarchies only (not unified)
    mkdir -p "$hierarchy$CGROUP_NAME"
  done
  local cpuset=/sys/fs/cgroup/cpuset/$CGROUP_NAME
  if [ -d "$cpuset" ] && [ -z "$(cat "$cpuset/cpuset.cpus")" ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"$cpuset/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"$cpuset/cpuset.mems"
  fi
}

# --- images -----------------------------------------------------------------------------------------------------------

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

engine_ready=0
engine() {
  [ "$engine_ready" = 1 ] && return 0
  # shellcheck source=scripts/lib/container-engine.sh
  source "$ROOT/scripts/lib/container-engine.sh"
  engine_setup "$ROOT" || die "a container engine is needed to build images"
  engine_ready=1
}

# build_image RECIPE: build scripts/cluster/images/RECIPE into an archive cached by the hash of its build context
# (so the engine runs only when a binary or the Containerfile changed); sets IMAGE_REF and IMAGE_ARCHIVE.
build_image() {
  local recipe=$1 ctx key
  ctx=$(mktemp -d)
  IMAGE_REF=$(bash "$IMAGES/$recipe/context.sh" "$ctx" | tail -n1)
  cp "$IMAGES/$recipe/Containerfile" "$ctx/Containerfile"
  key=$( (cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$IMAGE_REF") | sha256sum | cut -c1-16)
  IMAGE_ARCHIVE="$CACHE/cluster-images/$recipe-$key.tar"
  if [ ! -s "$IMAGE_ARCHIVE" ]; then
    engine
    log "building image $IMAGE_REF (scripts/cluster/images/$recipe)"
    mkdir -p "$CACHE/cluster-images"
    docker build -q -t "$IMAGE_REF" -f "$ctx/Containerfile" "$ctx" >/dev/null
    docker save -o "$IMAGE_ARCHIVE.tmp" "$IMAGE_REF"
    mv "$IMAGE_ARCHIVE.tmp" "$IMAGE_ARCHIVE"
    find "$CACHE/cluster-images" -name "$recipe-*.tar" ! -name "$recipe-$key.tar" -delete
  fi
  rm -rf "$ctx"
}

# import_recipe RECIPE: build (cached) and import; exports CLUSTER_IMAGE_<RECIPE> for add-ons.
import_recipe() {
  local recipe=$1 var
  build_image "$recipe"
  if ! ctr_ images ls -q | grep -x "$IMAGE_REF" >/dev/null; then
    ctr_ images import "$IMAGE_ARCHIVE" >/dev/null
    ctr_ images ls -q | grep -x "$IMAGE_REF" >/dev/null || die "importing $IMAGE_ARCHIVE did not produce $IMAGE_REF"
  fi
  var="CLUSTER_IMAGE_$(echo "$recipe" | tr '[:lower:]-' '[:upper:]_')"
  export "$var=$IMAGE_REF"
}

# The agents' images as the project's Dockerfile builds them on the offline path (BINARIES=prebuilt), named as the
# manifests name them (agent-mesh/<agent>:0.1.0, i.e. docker.io/agent-mesh/<agent>:0.1.0 to containerd).
load_agents() {
  engine
  log "building the agents' images (scripts/build-static.sh, then docker-compose.yml's build with BINARIES=prebuilt)"
  local build_log="$LOGS/agents-build.log"
  if ! { "$ROOT/scripts/build-static.sh" >/dev/null \
    && AGENT_BINARIES=prebuilt AGENT_REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown) \
      engine_build_agents agent-mesh-cluster; } 2>"$build_log"; then
    tail -n 30 "$build_log" >&2
    die "building the agents' images failed (log: $build_log)"
  fi
  local agent archive
  archive=$(mktemp)
  for agent in data recommendation; do
    docker save -o "$archive" "agent-mesh/$agent:0.1.0"
    ctr_ images import "$archive" >/dev/null
    # The archive names the image docker.io/agent-mesh/... (Docker, compose on podman) or localhost/agent-mesh/...
    # (podman's rule for short names); Kubernetes asks for the docker.io one.
    if ! ctr_ images ls -q | grep -x "docker.io/agent-mesh/$agent:0.1.0" >/dev/null; then
      ctr_ images tag --force "localhost/agent-mesh/$agent:0.1.0" "docker.io/agent-mesh/$agent:0.1.0" >/dev/null
      ctr_ images rm "localhost/agent-mesh/$agent:0.1.0" >/dev/null
    fi
  done
  rm -f "$archive"
  log "imported docker.io/agent-mesh/data:0.1.0 and docker.io/agent-mesh/recommendation:0.1.0"
}

# --- up ---------------------------------------------------------------------------------------------------------------

tools() {
  local path
  path=$("$ROOT/scripts/tools/install-kubernetes.sh" | tail -n1)
  KBIN=$path
  KUBECTL="$KBIN/kubectl"
  KUBERNETES_VERSION=$("$KUBECTL" version --client -o json | sed -n 's/.*"gitVersion": "\(.*\)",/\1/p')
  CNI_PLUGINS=/usr/lib/cni
  CNI_BIN=$DIR/cni/bin
  local missing=()
  for path in containerd ctr runc iptables ip6tables dig nsenter findmnt ss; do
    command -v "$path" >/dev/null || missing+=("$path")
  done
  [ -x "$CNI_PLUGINS/bridge" ] || missing+=("$CNI_PLUGINS/bridge")
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run scripts/setup.sh (scripts/setup.d/cluster.sh)"
}

kubectl_() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
# node_pod_cidr: print the node's pod CIDR; false until it has one.
node_pod_cidr() { kubectl_ get node "$NODE" -o jsonpath='{.spec.podCIDR}' 2>/dev/null | grep .; }

up() {
  local addons=(coredns) flag
  for flag in "$@"; do
    case $flag in
      --istio | --dapr)
        local addon=${flag#--}
        [ -x "$ADDONS/$addon/install.sh" ] \
          || die "$flag: the $addon add-on is not part of this cluster yet (scripts/cluster/addons/$addon/ is missing); nothing was started"
        addons+=("$addon")
        ;;
      *) die "up: unknown option $flag (usage: up [--istio] [--dapr])" ;;
    esac
  done
  as_root
  local started=$SECONDS
  tools
  if [ -f "$DIR/host-before" ] && ! netns_up; then
    log "state from an earlier cluster whose network namespace is gone (a reboot?): cleaning up first"
    down
  fi
  record_host
  ln -sfn "$KBIN" "$DIR/bin"   # status, and anyone, finds this cluster's kubectl here
  build_image pause
  PAUSE_IMAGE=$IMAGE_REF
  ensure_netns
  ensure_pki
  write_configs
  ensure_cni_bin

  local pki=$PKI
  start etcd "$KBIN/etcd" --name="$NODE" --data-dir="$DIR/etcd" \
    --listen-client-urls=https://127.0.0.1:2379 --advertise-client-urls=https://127.0.0.1:2379 \
    --listen-peer-urls=https://127.0.0.1:2380 --initial-advertise-peer-urls=https://127.0.0.1:2380 \
    --initial-cluster="$NODE=https://127.0.0.1:2380" --listen-metrics-urls=http://127.0.0.1:2381 \
    --client-cert-auth=true --trusted-ca-file="$pki/etcd/ca.crt" \
    --cert-file="$pki/etcd/server.crt" --key-file="$pki/etcd/server.key" \
    --peer-client-cert-auth=true --peer-trusted-ca-file="$pki/etcd/ca.crt" \
    --peer-cert-file="$pki/etcd/peer.crt" --peer-key-file="$pki/etcd/peer.key" \
    --snapshot-count=10000
  wait_healthy etcd "$WAIT" "etcd /health" node_exec curl -fsS http://127.0.0.1:2381/health

  start kube-apiserver "$KBIN/kube-apiserver" --advertise-address="$NODE_IP" --secure-port=6443 \
    --cert-dir="$DIR/apiserver" --allow-privileged=true --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --client-ca-file="$pki/ca.crt" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --etcd-servers=https://127.0.0.1:2379 --etcd-cafile="$pki/etcd/ca.crt" \
    --etcd-certfile="$pki/apiserver-etcd-client.crt" --etcd-keyfile="$pki/apiserver-etcd-client.key" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" --kubelet-preferred-address-types=InternalIP \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User \
    --service-account-issuer="https://kubernetes.default.svc.$DOMAIN" \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR"
  wait_healthy kube-apiserver "$WAIT" "kube-apiserver /readyz" curl -fsS --cacert "$pki/ca.crt" "https://$NODE_IP:6443/readyz"
  # As kubeadm init does: admin.conf's group gets cluster-admin, granted with the super-admin (system:masters) one.
  "$KUBECTL" --kubeconfig "$KCONF/super-admin.conf" create clusterrolebinding kubeadm:cluster-admins \
    --clusterrole=cluster-admin --group=kubeadm:cluster-admins --dry-run=client -o yaml \
    | "$KUBECTL" --kubeconfig "$KCONF/super-admin.conf" apply -f - >/dev/null

  start kube-controller-manager "$KBIN/kube-controller-manager" --bind-address=127.0.0.1 --leader-elect=false \
    --kubeconfig="$KCONF/controller-manager.conf" --authentication-kubeconfig="$KCONF/controller-manager.conf" \
    --authorization-kubeconfig="$KCONF/controller-manager.conf" --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-account-private-key-file="$pki/sa.key" --use-service-account-credentials=true \
    --cluster-name="$NODE" --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" \
    --service-cluster-ip-range="$SERVICE_CIDR"
  start kube-scheduler "$KBIN/kube-scheduler" --bind-address=127.0.0.1 --leader-elect=false \
    --kubeconfig="$KCONF/scheduler.conf" --authentication-kubeconfig="$KCONF/scheduler.conf" \
    --authorization-kubeconfig="$KCONF/scheduler.conf"

  start containerd containerd --config "$CONF/containerd.toml"
  wait_healthy containerd 30 "containerd" ctr --address "$CONTAINERD_SOCK" version
  import_recipe pause

  ensure_cgroups
  start kubelet "$KBIN/kubelet" --config="$CONF/kubelet.yaml" --kubeconfig="$KCONF/kubelet.conf" \
    --root-dir="$DIR/kubelet" --cert-dir="$DIR/kubelet/pki" --node-ip="$NODE_IP" --hostname-override="$NODE"
  start kube-proxy "$KBIN/kube-proxy" --config="$CONF/kube-proxy.yaml"

  # The controller-manager gives the node its share of the pod range; the CNI configuration is written with it.
  wait_healthy kubelet "$WAIT" "node $NODE to register and get a pod CIDR" node_pod_cidr
  write_cni_config "$(node_pod_cidr)"
  kubectl_ wait --for=condition=Ready "node/$NODE" --timeout="${WAIT}s" >/dev/null \
    || die "node $NODE is not Ready: see $LOGS/kubelet.log and $LOGS/containerd.log"
  log "node $NODE Ready after $((SECONDS - started))s"

  export KUBECONFIG=$KUBECONFIG_PATH KUBECTL CLUSTER_SH CLUSTER_DNS_IP=$DNS_IP CLUSTER_DOMAIN=$DOMAIN \
    CLUSTER_DIR=$DIR CLUSTER_CNI_BIN_DIR=$CNI_BIN CLUSTER_CNI_CONF_DIR=$DIR/cni/net.d
  load_agents
  local recipe
  for addon in "${addons[@]}"; do
    if [ -f "$ADDONS/$addon/images" ]; then
      while read -r recipe; do
        [ -n "$recipe" ] && import_recipe "$recipe"
      done <"$ADDONS/$addon/images"
    fi
    log "add-on $addon"
    "$ADDONS/$addon/install.sh" || die "add-on $addon failed"
  done
  log "cluster up in $((SECONDS - started))s ($KUBERNETES_VERSION, node $NODE, add-ons: ${addons[*]})"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

# --- down -------------------------------------------------------------------------------------------------------------

down() {
  as_root
  local started=$SECONDS
  if [ ! -e "$DIR" ]; then
    log "no state in $DIR"
    leftovers
    return
  fi
  # The kubelet first, so it restarts nothing; then every container, while containerd still runs.
  stop kubelet
  if alive containerd; then
    local task
    for task in $(ctr_ tasks ls -q 2>/dev/null); do
      timeout 10 ctr_ tasks kill --signal SIGKILL "$task" >/dev/null 2>&1 || true
    done
    for task in $(ctr_ tasks ls -q 2>/dev/null); do
      timeout 10 ctr_ tasks delete --force "$task" >/dev/null 2>&1 || true
    done
  fi
  # The rest is deleted with the state, so there is nothing to wait for: a short grace, then SIGKILL.
  STOP_SECONDS=5
  stop kube-proxy kube-scheduler kube-controller-manager kube-apiserver
  stop etcd containerd
  # Whatever is left (shims, container processes of a crashed containerd) by PID, until nothing is.
  local pids deadline=$((SECONDS + 15))
  while pids=$(cluster_pids | sort -u) && [ -n "$pids" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { log "processes left: $(echo "$pids" | tr '\n' ' ')"; break; }
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  done
  # Mounts under the state directory, deepest first (the netns binding is one of them).
  local mount
  while read -r mount; do
    umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || log "cannot unmount $mount"
  done < <(findmnt -rn -o TARGET | awk -v d="$DIR/" 'index($0 "/", d) == 1' | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-)
  # The veth pair goes with the namespace; make sure.
  ip link show "$HOST_LINK" >/dev/null 2>&1 && ip link del "$HOST_LINK"
  # cgroups, leaves first.
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/"$CGROUP_NAME"; do
    if [ -d "$hierarchy" ]; then find "$hierarchy" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
  rm -rf "$DIR"
  forget_cluster
  restore_host
  log "down in $((SECONDS - started))s"
  leftovers && return 0
  return 1
}

# leftovers: print what of a cluster remains on the machine; true when nothing does.
leftovers() {
  local found=0 hierarchy mount
  netns_up && { log "left: network namespace $NETNS"; found=1; }
  ip link show "$HOST_LINK" >/dev/null 2>&1 && { log "left: link $HOST_LINK"; found=1; }
  for hierarchy in /sys/fs/cgroup/*/"$CGROUP_NAME"; do
    [ -d "$hierarchy" ] && { log "left: cgroup $hierarchy"; found=1; }
  done
  mount=$(findmnt -rn -o TARGET | awk -v d="$DIR/" 'index($0 "/", d) == 1 && n++ < 3')
  [ -n "$mount" ] && { log "left: mounts under $DIR: $mount"; found=1; }
  [ -n "$(cluster_pids)" ] && { log "left: processes $(cluster_pids | tr '\n' ' ')"; found=1; }
  [ -e "$DIR" ] && { log "left: $DIR"; found=1; }
  [ "$found" = 0 ]
}

# --- status -----------------------------------------------------------------------------------------------------------

status() {
  if [ ! -e "$DIR" ]; then
    if leftovers; then echo "stopped (nothing on this machine)"; return 3; fi
    echo "stopped, with leftovers (see above): run down"
    return 1
  fi
  local name running=0 dead=0
  for name in "${COMPONENTS[@]}"; do
    if alive "$name"; then
      printf '%-24s running (pid %s)\n' "$name" "$(pid_of "$name")"
      running=$((running + 1))
    else
      printf '%-24s not running\n' "$name"
      dead=$((dead + 1))
    fi
  done
  echo "state: $DIR (logs in $DIR/logs)"
  # Proportional set size: the shared pages of the one kube binary are counted once, not once per component.
  local pid pss=0 count=0 kb
  for pid in $(cluster_pids | sort -u); do
    kb=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
    [ -n "$kb" ] || continue
    pss=$((pss + kb))
    count=$((count + 1))
  done
  echo "memory: $((pss / 1024)) MiB (PSS of $count processes: components, shims, containers)"
  if alive kube-apiserver; then
    KUBECTL=$DIR/bin/kubectl
    kubectl_ get nodes -o wide 2>&1 || true
    kubectl_ get pods -A 2>&1 || true
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
  fi
  [ "$dead" = 0 ] && return 0
  [ "$running" = 0 ] && { echo "stopped: state left in $DIR; run up to start it again or down to remove it"; return 3; }
  echo "degraded: $dead component(s) not running; run up to restart them, or down"
  return 1
}

# --- main -------------------------------------------------------------------------------------------------------------

usage() { awk 'NR > 1 && /^# The parts/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$CLUSTER_SH" >&2; }

# One cluster per machine: up, down, load and import run under this lock. flock -o holds it in the flock process and
# closes it for the command, so the daemons up starts (and podman's API service) never inherit it.
lock() {
  [ -z "${CLUSTER_SH_LOCKED:-}" ] || return 0
  mkdir -p "$CACHE"
  local rc=0
  CLUSTER_SH_LOCKED=1 flock -o -w 600 -E 75 "$CACHE/cluster.lock" bash "$CLUSTER_SH" "$@" || rc=$?
  [ "$rc" != 75 ] || die "another cluster.sh up/down/load/import held $CACHE/cluster.lock for 600 s"
  exit "$rc"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  up) lock up "$@"; up "$@" ;;
  down) lock down; down ;;
  status) status ;;
  load)
    lock load
    as_root
    tools
    alive containerd || die "the cluster is not running (scripts/cluster.sh up)"
    load_agents
    ;;
  import)
    [ $# -gt 0 ] || die "import: which image recipe (scripts/cluster/images/)?"
    lock import "$@"
    as_root
    alive containerd || die "the cluster is not running (scripts/cluster.sh up)"
    for recipe in "$@"; do
      [ -f "$IMAGES/$recipe/Containerfile" ] || die "import: no image recipe $IMAGES/$recipe"
      import_recipe "$recipe"
      echo "$IMAGE_REF"
    done
    ;;
  exec)
    [ $# -gt 0 ] || die "exec: which command?"
    netns_up || die "the cluster is not running (scripts/cluster.sh up)"
    exec nsenter --net="$NETNS" -- "$@"
    ;;
  -h | --help | help) usage ;;
  *) usage; exit 2 ;;
esac
