#!/usr/bin/env bash
# Run the HEALTHCHECKs of one compose project's running containers every second, for podman without systemd.
#
# podman schedules healthchecks with systemd timers; where systemd is not PID 1 nothing runs them, health stays
# "starting", and compose's `depends_on: condition: service_healthy` and `up --wait` never finish. This drives the
# containers' own healthcheck commands (`podman healthcheck run`), which record results exactly as the timers would.
# Not needed with Docker, or with podman under systemd.
#
# Usage: podman-health-pump.sh PROJECT [MAX_SECONDS]   (stops by itself after MAX_SECONDS, default 1200,
#        or when the process that started it is gone)
set -uo pipefail

project=${1:?usage: podman-health-pump.sh PROJECT [MAX_SECONDS]}
max_seconds=${2:-1200}
parent=$PPID
deadline=$((SECONDS + max_seconds))

# The parent is gone when this process has been re-parented (to init or a subreaper), whatever became of its pid.
parent_alive() { [ "$(ps -o ppid= -p $$ | tr -d ' ')" = "$parent" ]; }

while [ "$SECONDS" -lt "$deadline" ] && parent_alive; do
  for id in $(podman ps --filter "label=com.docker.compose.project=$project" --format '{{.ID}}' 2>/dev/null); do
    # Each check is bounded by the container's healthcheck timeout; run them side by side so one slow container
    # does not delay the others.
    podman healthcheck run "$id" >/dev/null 2>&1 &
  done
  wait
  sleep 1
done
