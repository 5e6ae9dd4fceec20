#!/usr/bin/env bash
# Prerequisites of scripts/ci/observability.sh and bench/run.sh (idempotent; a warm machine skips apt):
#   prometheus   Debian's package: promtool (checks the scrape config and live /metrics) and the Prometheus server
#                (scrapes both agents in the check and evaluates the dashboard's queries)
#   wrk          the HTTP load generator bench/run.sh drives /recommend with (not needed by CI)
# The package only installs binaries here: nothing starts Prometheus as a service without systemd.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in prometheus wrk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.d/observability: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
