#!/usr/bin/env bash
# Build Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, kubeadm)
# and etcd from the k8s.io/kubernetes Go module and cache it outside the repo.
#
#   scripts/tools/install-kubernetes.sh     # last stdout line: a directory with one link per program
#
# What is built: one multi-call binary, `kube`, from the wrapper module in scripts/tools/kubernetes-build/ (its
# main.go does what each component's own main does, chosen by the name it runs as; etcd is the etcd server module
# k8s.io/kubernetes itself requires, i.e. the release this Kubernetes is tested with). The wrapper requires
# k8s.io/kubernetes at the release below and replaces each staging module (k8s.io/api, k8s.io/client-go, ...) with
# its published release v0.<minor>.<patch>: the module zip omits staging/, which upstream's go.mod points at. Its
# go.sum pins every module by hash. The version is stamped the way upstream's hack/lib/version.sh does, so
# `kubectl version`, the node's kubelet version and the API server's /version report the real release.
#
# Why 1.34: the newest line whose kubelet still starts on cgroup v1 by default (failCgroupV1 defaults to false
# up to 1.34) and that still works with the CRI of Debian bookworm's containerd 1.6; see docs/cluster.md.
#
# Settings (env):
#   AGENT_MESH_CACHE   cache root (default $HOME/.cache/agent-mesh)
# Cache: <cache>/kubernetes-<version>-<hash of the wrapper>/{kube,bin/}. Cold: several minutes on 2 cores (nice);
# warm: < 1 s. A lock serialises concurrent installs of the same build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wrapper="$here/kubernetes-build"
KUBERNETES_VERSION="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$wrapper/go.mod")"
PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm etcd)
key="$(cat "$wrapper/go.mod" "$wrapper/go.sum" "$wrapper/main.go" | sha256sum | cut -c1-12)"
CACHE="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}"
DEST="$CACHE/kubernetes-$KUBERNETES_VERSION-$key"
BIN="$DEST/kube"

log() { echo "install-kubernetes: $*" >&2; }

is_good() {
  [[ -x "$BIN" ]] && [[ "$("$BIN" kubectl version --client -o json 2>/dev/null \
    | sed -n 's/.*"gitVersion": "\(.*\)",/\1/p')" == "$KUBERNETES_VERSION" ]]
}

# One link per program in bin/, named as the program: the binary runs the program it is started as.
link_and_print() {
  local program
  mkdir -p "$DEST/bin"
  for program in "${PROGRAMS[@]}"; do [[ "$(readlink "$DEST/bin/$program")" == ../kube ]] || ln -sfn ../kube "$DEST/bin/$program"; done
  echo "$DEST/bin"
}

if is_good; then
  link_and_print
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock -w "${KUBERNETES_BUILD_LOCK_WAIT:-3600}" 9 || { log "timed out waiting for another build"; exit 1; }
if is_good; then
  link_and_print
  exit 0
fi

export GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"

# The release's date and, when the module proxy reports it, its commit (Origin.Hash), for the version stamp.
info="$(cd "$wrapper" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION")"
commit="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)".*/\1/p' | head -n1)"
build_date="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Time": "\(.*\)",\{0,1\}$/\1/p' | head -n1)"
[[ -n "$build_date" ]] || build_date="1970-01-01T00:00:00Z"
minor="${KUBERNETES_VERSION#v*.}"
minor="${minor%%.*}"
major="${KUBERNETES_VERSION#v}"
major="${major%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit=${commit:-unknown} -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

tmp="$(mktemp -d "$DEST/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "building ${PROGRAMS[*]} $KUBERNETES_VERSION as one binary (several minutes on 2 cores on a cold cache)"
start=$SECONDS
(cd "$wrapper" && nice -n "${KUBERNETES_BUILD_NICE:-10}" go build -trimpath -ldflags "$ldflags" -o "$tmp/kube" .) >&2
mv -f "$tmp/kube" "$BIN"
log "built in $((SECONDS - start))s: $(du -m "$BIN" | cut -f1) MB"
is_good || { log "the built kubectl does not report $KUBERNETES_VERSION"; exit 1; }
link_and_print
