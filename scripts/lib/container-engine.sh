# shellcheck shell=bash
# Sourced by the container scripts: make `docker` and `docker compose` reach a container engine.
#
#   engine_setup ROOT   ROOT is the repo root. Afterwards ENGINE is `docker` or `podman`, and DOCKER_HOST etc. are
#                       exported when the engine needed them.
#
# Order: a Docker engine the docker CLI already reaches (a user's machine, Docker Desktop, or a DOCKER_HOST that is
# already exported); else this project's machine script ../shared/tools/container-engine beside the repo root, or
# CONTAINER_ENGINE_SCRIPT (podman + Compose v2 behind a Docker-compatible socket, for machines without Docker). On podman it also fixes two things this machine needs:
#   - cgroup v1 with a cgroup v2 hierarchy beside it ("hybrid"): crun refuses to start containers there, runc
#     does not, so podman is configured to use runc (before its API service starts);
#   - no systemd: podman schedules HEALTHCHECKs with systemd timers, so without systemd a container never leaves
#     "starting" and `depends_on: service_healthy` / `--wait` never finish. engine_health_pump_start runs the
#     containers' own healthchecks on a schedule instead (scripts/lib/podman-health-pump.sh).

ENGINE=""
ENGINE_HEALTH_PUMP_PID=""

engine_log() { echo "container-engine: $*" >&2; }

# True when `docker` reaches an engine within a few seconds.
engine_reachable() {
  timeout 10 docker info >/dev/null 2>&1
}

# cgroup v1 with controllers also bound in the v2 hierarchy beside it: crun 1.8 refuses that layout.
engine_cgroup_hybrid() {
  [ ! -f /sys/fs/cgroup/cgroup.controllers ] && grep -q . /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null
}

# Before the podman API service starts: pick runc where crun cannot run containers.
engine_podman_runtime_prepare() {
  engine_cgroup_hybrid || return 0
  local conf=/etc/containers/containers.conf.d/50-agent-mesh-runtime.conf
  [ -f "$conf" ] && command -v runc >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    engine_log "cgroup hybrid mode needs podman on runc; run as root or configure $conf by hand"
    return 0
  fi
  if ! command -v runc >/dev/null; then
    engine_log "installing runc (crun cannot start containers with this machine's hybrid cgroups)"
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runc >&2
  fi
  mkdir -p "$(dirname "$conf")"
  printf '# agent-mesh: crun refuses hybrid cgroup v1/v2 hosts; runc runs there.\n[engine]\nruntime = "runc"\n' >"$conf"
  engine_log "podman configured to use runc ($conf)"
}

engine_setup() {
  local root=$1
  local machine_script="${CONTAINER_ENGINE_SCRIPT:-$root/../shared/tools/container-engine}"
  command -v docker >/dev/null || { engine_log "no docker CLI found: install Docker (CLI and compose plugin)"; return 1; }

  if engine_reachable; then
    :
  elif [ -x "$machine_script" ]; then
    engine_podman_runtime_prepare
    local exports
    exports=$("$machine_script") || { engine_log "$machine_script failed"; return 1; }
    eval "$exports"
    export DOCKER_HOST DOCKER_BUILDKIT COMPOSE_BAKE
    engine_reachable || { engine_log "engine set up by $machine_script does not answer"; return 1; }
  else
    engine_log "no container engine: start Docker (with the compose plugin), or set DOCKER_HOST"
    return 1
  fi
  docker compose version >/dev/null 2>&1 || { engine_log "docker compose (v2 plugin) is missing"; return 1; }

  if docker version --format '{{range .Server.Components}}{{.Name}};{{end}}' 2>/dev/null | grep -qi podman; then
    ENGINE=podman
    local runtime
    runtime=$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null || true)
    if engine_cgroup_hybrid && [ "$runtime" = crun ]; then
      engine_log "the podman API service runs containers with crun, which fails on this machine's hybrid cgroups;"
      engine_log "it was started before runc was configured: stop that podman service and run this again"
      return 1
    fi
  else
    ENGINE=docker
  fi
  engine_log "engine: $ENGINE ($(docker version --format '{{.Server.Version}}' 2>/dev/null)), $(docker compose version --short 2>/dev/null | sed 's/^/compose /')"
}

# engine_build_agents PROJECT: build both agents' images through docker-compose.yml as compose project PROJECT, with
# AGENT_BINARIES and AGENT_REVISION from the environment (scripts/build-static.sh first when prebuilt). Sets
# ENGINE_BUILD_FLAGS to the flags it passed.
engine_build_agents() {
  local project=$1 before="" leftovers
  ENGINE_BUILD_FLAGS=""
  if [ "$ENGINE" = podman ]; then
    # buildah (podman 4.x) reuses a cached LABEL step after the ARG it expands changed, which would keep a stale
    # revision label; a build without cache is cheap on the prebuilt path (it only copies files).
    ENGINE_BUILD_FLAGS="--no-cache"
    before=$(engine_untagged_images)
  fi
  # shellcheck disable=SC2086
  timeout 1800 docker compose -p "$project" build $ENGINE_BUILD_FLAGS >&2 || return 1
  if [ "$ENGINE" = podman ]; then
    # Without cache, the intermediate stage images this build left (and the images its tags replaced) serve nothing.
    leftovers=$(comm -13 <(echo "$before") <(engine_untagged_images))
    # shellcheck disable=SC2086
    [ -z "$leftovers" ] || docker rmi $leftovers >/dev/null 2>&1 || true
  fi
}

engine_untagged_images() {
  docker images -a --no-trunc --format '{{.ID}} {{.Repository}}' | awk '$2 == "<none>" { print $1 }' | sort -u
}

# podman without systemd never runs healthchecks by itself; run them for one compose project until stopped.
engine_health_pump_start() {
  local project=$1 root=$2
  [ "$ENGINE" = podman ] || return 0
  [ -d /run/systemd/system ] && return 0
  command -v podman >/dev/null || { engine_log "podman CLI missing: cannot drive healthchecks"; return 1; }
  "$root/scripts/lib/podman-health-pump.sh" "$project" "${HEALTH_PUMP_MAX_SECONDS:-1200}" &
  ENGINE_HEALTH_PUMP_PID=$!
  engine_log "no systemd: healthchecks of project $project driven by pid $ENGINE_HEALTH_PUMP_PID"
}

engine_health_pump_stop() {
  [ -n "$ENGINE_HEALTH_PUMP_PID" ] || return 0
  kill "$ENGINE_HEALTH_PUMP_PID" 2>/dev/null || true
  wait "$ENGINE_HEALTH_PUMP_PID" 2>/dev/null || true
  ENGINE_HEALTH_PUMP_PID=""
}
