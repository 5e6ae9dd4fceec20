# shellcheck shell=bash
# Shared by the installers of Go programs that build with `go install module@version` (no wrapper module needed:
# install-coredns.sh, install-fortio.sh). Source it, then call
#   go_install_cached NAME VERSION PACKAGE CHECK [LDFLAGS_FN]
# NAME      the program: cached as ${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}/NAME-VERSION/NAME
# PACKAGE   import path of the main package, installed at @vVERSION (CGO off, -trimpath, -s -w, under nice)
# CHECK     a command that succeeds when its argument (a binary path) is the wanted build
# LDFLAGS_FN  optional command printing more -ldflags; run only when a build is needed
# Prints the binary's path as the last stdout line. A lock serialises concurrent installs of the same version.
go_install_cached() {
  local name=$1 version=$2 package=$3 check=$4 ldflags_fn=${5:-}
  local dest="${AGENT_MESH_CACHE:-$HOME/.cache/agent-mesh}/$name-$version"
  local bin="$dest/$name" ldflags="-s -w" tmp start
  if "$check" "$bin"; then
    echo "$bin"
    return 0
  fi
  command -v go >/dev/null || { echo "install-$name: go is not on PATH" >&2; return 1; }
  mkdir -p "$dest"
  exec 9>"$dest/.lock"
  flock -w 3600 9 || { echo "install-$name: timed out waiting for another build" >&2; return 1; }
  if "$check" "$bin"; then
    echo "$bin"
    return 0
  fi
  export GOWORK=off GOFLAGS="-buildvcs=false" CGO_ENABLED=0
  export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
  [ -z "$ldflags_fn" ] || ldflags+=" $("$ldflags_fn")"
  tmp=$(mktemp -d "$dest/.build.XXXXXX")
  echo "install-$name: building $package@v$version" >&2
  start=$SECONDS
  if ! GOBIN="$tmp" nice -n "${GO_INSTALL_NICE:-10}" go install -trimpath -ldflags "$ldflags" "$package@v$version" >&2; then
    rm -rf "$tmp"
    return 1
  fi
  mv -f "$tmp/$name" "$bin"
  rm -rf "$tmp"
  echo "install-$name: built in $((SECONDS - start))s" >&2
  "$check" "$bin" || { echo "install-$name: the built binary is not version $version" >&2; return 1; }
  echo "$bin"
}
