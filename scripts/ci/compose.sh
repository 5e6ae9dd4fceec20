#!/usr/bin/env bash
# Containers area check (exit 0 = pass): lint the Dockerfile and docker-compose.yml, hold the compose file to the
# project's rules, then run the end-to-end check (scripts/e2e-compose.sh) on a real engine.
#
# Each linter is first shown a planted error and must reject it, so a linter that silently checks nothing fails here.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/container-engine.sh
source scripts/lib/container-engine.sh

started=$SECONDS
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
not_ok() { failed=$((failed + 1)); echo "FAIL - $*"; }
step() { printf '\n-- %s\n' "$*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "tools"
hadolint=$(scripts/tools/install-hadolint.sh | tail -1)
check_jsonschema=$(scripts/tools/install-check-jsonschema.sh | tail -1)
engine_setup "$root"   # docker compose (and, on this machine, the engine the e2e step uses)

step "hadolint (failure threshold: warning)"
printf 'FROM debian\nRUN apt-get update && apt-get install -y curl\n' >"$tmp/Dockerfile.planted"
if "$hadolint" --failure-threshold warning "$tmp/Dockerfile.planted" >/dev/null 2>&1; then
  not_ok "hadolint accepted a planted bad Dockerfile (untagged FROM, unpinned apt packages)"
else
  ok "hadolint rejects a planted bad Dockerfile"
fi
if "$hadolint" --failure-threshold warning Dockerfile; then ok "hadolint Dockerfile"; else not_ok "hadolint Dockerfile"; fi

step "docker compose config -q (Compose v2)"
# A misplaced key (restart_policy belongs under deploy:), which both the schema and compose must reject.
printf 'services:\n  data:\n    image: x\n    restart_policy: always\n' >"$tmp/compose.planted.yml"
if docker compose -f "$tmp/compose.planted.yml" config -q >/dev/null 2>&1; then
  not_ok "docker compose config accepted a planted bad compose file"
else
  ok "docker compose config rejects a planted bad compose file"
fi
if docker compose config -q; then ok "docker compose config -q"; else not_ok "docker compose config -q"; fi

step "compose-spec JSON schema (check-jsonschema --builtin-schema vendor.compose-spec)"
if "$check_jsonschema" --builtin-schema vendor.compose-spec "$tmp/compose.planted.yml" >/dev/null 2>&1; then
  not_ok "the compose-spec schema accepted a planted bad compose file"
else
  ok "the compose-spec schema rejects a planted bad compose file"
fi
if "$check_jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml; then ok "compose-spec schema"
else not_ok "compose-spec schema"; fi

step "builder skeleton (scripts/cargo-skeleton.sh, the Dockerfile's planner stage)"
# The user's build path cannot run here (no Rust image); at least prove its planner step turns this workspace into
# a skeleton cargo loads with the same members, so the dependency layer can build.
members() { cargo metadata --format-version 1 --no-deps --offline --manifest-path "$1" | jq -c '[.packages[].name] | sort'; }
if bash scripts/cargo-skeleton.sh "$root" "$tmp/skeleton" && want=$(members Cargo.toml) \
  && got=$(members "$tmp/skeleton/Cargo.toml") && [ "$got" = "$want" ]; then
  ok "skeleton loads as the same workspace: $got"
else
  not_ok "skeleton of the workspace does not load as the same workspace (${got:-error} vs ${want:-error})"
fi

step "compose file rules (issue 5)"
# The resolved model with the defaults a user gets (no AGENT_* set).
config=$(env -u AGENT_PORT -u AGENT_PUBLISH_ADDR -u AGENT_BINARIES docker compose config --format json)
rule() {
  local what=$1 filter=$2
  if jq -e "$filter" >/dev/null <<<"$config"; then ok "$what"; else not_ok "$what"; fi
}
if grep -qE '^version:' docker-compose.yml; then not_ok "no version: key"; else ok "no version: key"; fi
rule "services are exactly data and recommendation" '.services | keys == ["data", "recommendation"]'
rule "only recommendation is published, on 8000 -> 8000" \
  '(.services.data.ports // []) == [] and (.services.recommendation.ports | length == 1
    and .[0].target == 8000 and .[0].published == "8000")'
rule "images agent-mesh/<agent>:0.1.0 built from the one Dockerfile, target per agent" \
  '[.services | to_entries[] | .value.image == "agent-mesh/\(.key):0.1.0" and .value.build.target == .key
    and .value.build.dockerfile == "Dockerfile"] | all'
rule "builds from source by default (BINARIES=builder)" '[.services[].build.args.BINARIES == "builder"] | all'
rule "recommendation in direct mode, data at http://data:8000" \
  '.services.recommendation.environment.DATA_MODE == "direct"
    and .services.recommendation.environment.DATA_URL == "http://data:8000"'
rule "recommendation waits for data to be healthy" \
  '.services.recommendation.depends_on.data.condition == "service_healthy"'
rule "healthcheck runs the binary's own probe" \
  '[.services[].healthcheck.test == ["CMD", "/usr/local/bin/agent", "healthcheck"]] | all'
rule "read_only, cap_drop ALL, no-new-privileges" \
  '[.services[] | .read_only == true and .cap_drop == ["ALL"] and .security_opt == ["no-new-privileges:true"]] | all'
rule "restart policy and memory limit" \
  '[.services[] | (.restart | IN("unless-stopped", "always", "on-failure"))
    and (.deploy.resources.limits.memory | tonumber > 0)] | all'
rule "stop grace period longer than SHUTDOWN_DELAY + DRAIN_TIMEOUT (10 s)" \
  '[.services[].stop_grace_period | test("^[0-9]+s$") and (rtrimstr("s") | tonumber > 10)] | all'

lint_seconds=$((SECONDS - started))
echo
echo "compose lint: $passed passed, $failed failed (${lint_seconds}s)"
[ "$failed" = 0 ] || exit 1

step "end to end (scripts/e2e-compose.sh)"
bash scripts/e2e-compose.sh
echo "compose check: lint ${lint_seconds}s, total $((SECONDS - started))s"
