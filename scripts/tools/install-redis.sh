#!/usr/bin/env bash
# Install Redis from Debian's packages (the Dapr state store and pub/sub broker in tests).
#
#   scripts/tools/install-redis.sh        # prints the redis-server path on its last stdout line
#
# Debian's package is the only source reachable here (no container registry). The package
# also enables a system redis service on 6379; tests do not use it: each test starts its own
# redis-server on a free loopback port with persistence off
# (redis-server --port N --bind 127.0.0.1 --save '' --appendonly no).
# Idempotent: when redis-server is already on PATH it only prints the path.
set -euo pipefail

log() { echo "install-redis: $*" >&2; }

find_redis() {
  command -v redis-server 2>/dev/null || { [[ -x /usr/bin/redis-server ]] && echo /usr/bin/redis-server; } || true
}

bin="$(find_redis)"
if [[ -z "$bin" ]]; then
  [[ "$(id -u)" -eq 0 ]] || { log "needs root for apt-get (or install redis-server yourself)"; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  # Keep the package from starting a daemon where no init system runs it anyway (CI
  # containers): policy-rc.d 101 = "action forbidden", honoured by invoke-rc.d.
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  trap 'if [[ $created_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
  # The package lists may be missing or stale on a fresh machine; refresh only if the
  # package is unknown or the install fails.
  if ! apt-cache show redis-server >/dev/null 2>&1; then
    log "apt-get update"
    timeout 600 apt-get update -qq >&2
  fi
  log "apt-get install redis-server"
  if ! timeout 900 apt-get install -y -qq --no-install-recommends redis-server >&2; then
    log "install failed; refreshing package lists and retrying once"
    timeout 600 apt-get update -qq >&2
    timeout 900 apt-get install -y -qq --no-install-recommends redis-server >&2
  fi
  bin="$(find_redis)"
fi

[[ -n "$bin" ]] || { log "redis-server not found after install"; exit 1; }
"$bin" --version >&2
echo "$bin"
