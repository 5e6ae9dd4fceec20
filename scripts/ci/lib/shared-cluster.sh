#!/usr/bin/env bash
# One cluster for all the cluster checks of a scripts/test.sh run (not a check itself: test.sh runs scripts/ci/*.sh
# only). Each cluster check brings up an instance of its own when run alone; run one after another they would
# start three (about 3.5 min of `up` and `down`), so test.sh starts one with every add-on they need and hands it to
# them the way they accept any cluster (KUBECONFIG, CLUSTER_NODE_EXEC, CLUSTER_PROBE_IMAGE). Each check deletes
# its namespaces when it ends, so the next starts clean (they refuse to start when one is left over).
#
#   scripts/ci/lib/shared-cluster.sh up STATE     the machine's snapshot (scripts/ci/lib/host-snapshot.sh), then
#                                                 scripts/cluster.sh up --istio --dapr; STATE/env holds what the
#                                                 checks need (export lines)
#   scripts/ci/lib/shared-cluster.sh down STATE   scripts/cluster.sh down, and the machine compared with the
#                                                 snapshot: down must leave it as it was (the proof
#                                                 scripts/ci/cluster.sh gives when it runs its own instance)
#
# The instance is AGENT_MESH_CLUSTER (test.sh's default: ci); an instance of that name already running is refused,
# never shared or taken down. Exit 0 only when every line is ok.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
# shellcheck source=scripts/ci/lib/host-snapshot.sh
. scripts/ci/lib/host-snapshot.sh

command=${1:-} state=${2:-}
{ [ -n "$state" ] && [ -d "$state" ]; } || { echo "usage: $0 up|down STATE-DIRECTORY" >&2; exit 2; }
failed=0
ok() { echo "ok   - $*"; }
not_ok() { failed=$((failed + 1)); echo "FAIL - $*"; }
note() { echo "     . $*"; }

case $command in
  up)
    if scripts/cluster.sh status >/dev/null 2>&1; then
      not_ok "cluster instance ${AGENT_MESH_CLUSTER:-cluster} runs already (another run's?): not shared, not taken down"
      exit 1
    fi
    host_prerequisites "$root"
    host_snapshot >"$state/host-before"
    t=$SECONDS
    # (eval "$(...)" would swallow a failed up)
    up_env=$(scripts/cluster.sh up --istio --dapr) || { not_ok "scripts/cluster.sh up --istio --dapr failed"; exit 1; }
    ok "scripts/cluster.sh up --istio --dapr (instance ${AGENT_MESH_CLUSTER:-cluster}) in $((SECONDS - t)) s"
    t=$SECONDS
    probe_image=$(scripts/cluster.sh import fortio | tail -n1) || { not_ok "scripts/cluster.sh import fortio failed"; exit 1; }
    note "probe image $probe_image imported in $((SECONDS - t)) s"
    {
      echo "$up_env"
      printf 'export AGENT_MESH_CLUSTER=%q\n' "${AGENT_MESH_CLUSTER:-cluster}"
      printf 'export CLUSTER_NODE_EXEC=%q\n' "$root/scripts/cluster.sh exec"
      printf 'export CLUSTER_PROBE_IMAGE=%q\n' "$probe_image"
    } >"$state/env"
    ;;
  down)
    [ -f "$state/host-before" ] || { not_ok "no snapshot from before up in $state"; exit 1; }
    down_as_before "$state/host-before" "$state"
    ;;
  *) echo "usage: $0 up|down STATE-DIRECTORY" >&2; exit 2 ;;
esac
[ "$failed" = 0 ]
