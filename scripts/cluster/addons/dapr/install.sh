#!/usr/bin/env bash
# Dapr add-on (scripts/cluster.sh up --dapr): Dapr's control plane (operator, sentry, placement, scheduler, sidecar
# injector) installed with Helm from the chart in the github.com/dapr/dapr module, at the version of the image
# scripts/cluster/images/dapr built, with the values users get from docs/tutorial.md (deploy/dapr/helm-values.yaml).
# Returns once every control-plane pod is Ready and the injector answers its webhook.
#
# Local to this cluster, and only here:
#  - the chart is packaged from the module with its release version (upstream's release workflow does the same
#    with `helm package`); users install the published dapr/dapr chart;
#  - every image of the chart is the one locally built image, as upstream's own ONLY_DAPR_IMAGE deployment does;
#  - the scheduler keeps its etcd in memory (dapr_scheduler.cluster.inMemoryStorage, as upstream's Makefile offers
#    for development clusters): this cluster has no storage provisioner for the chart's PersistentVolumeClaim.
# The Redis image (scripts/cluster/images/redis) is imported for k8s/dapr/redis.yaml; nothing is installed for it.
#
# Environment (from cluster.sh): KUBECONFIG, KUBECTL, CLUSTER_IMAGE_DAPR.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../../.." && pwd)
log() { echo "dapr: $*" >&2; }
started=$SECONDS

image=$CLUSTER_IMAGE_DAPR                 # localhost/agent-mesh/dapr:<version>
version=${image##*:}
registry=${image%/*}
name=${image##*/}
name=${name%:*}
helm=$("$root/scripts/tools/install-helm.sh" | tail -n1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
module=$(cd "$work" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/dapr/dapr@v$version" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -f "$module/charts/dapr/Chart.yaml" ] || { log "no chart in github.com/dapr/dapr@v$version ($module)"; exit 1; }

"$helm" package "$module/charts/dapr" --version "$version" --app-version "$version" --destination "$work" >&2
chart="$work/dapr-$version.tgz"

sets=(--set-string "global.registry=$registry" --set-string "global.tag=$version"
  --set "dapr_scheduler.cluster.inMemoryStorage=true")
for component in dapr_operator dapr_placement dapr_sentry dapr_scheduler dapr_sidecar_injector; do
  sets+=(--set-string "$component.image.name=$name")
done
sets+=(--set-string "dapr_sidecar_injector.injectorImage.name=$name")

log "helm upgrade --install dapr (chart $version from the module, -f deploy/dapr/helm-values.yaml, image $image)"
"$helm" upgrade --install dapr "$chart" --namespace dapr-system --create-namespace \
  -f "$root/deploy/dapr/helm-values.yaml" "${sets[@]}" --wait --timeout 300s >&2
"$KUBECTL" -n dapr-system wait --for=condition=Ready pod --all --timeout=120s >&2

# The injector must answer: a server-side dry run of an annotated pod comes back with the daprd container. The
# injector patches only pods that controllers create (its list of allowed service accounts: the ReplicaSet
# controller and the like) or members of system:masters; this cluster's admin is neither (kubeadm's admin.conf is
# in kubeadm:cluster-admins), so the probe pod is created as the ReplicaSet controller would create it.
deadline=$((SECONDS + 60))
injected() {   # the dry run's pod, read whole (grep -q on a pipe fails under pipefail when it stops reading early)
  local pod
  pod=$("$KUBECTL" -n default run dapr-injector-probe --image="$image" --restart=Never --dry-run=server -o json \
    --as=system:serviceaccount:kube-system:replicaset-controller \
    --annotations=dapr.io/enabled=true --annotations=dapr.io/app-id=probe -- /daprd --version 2>/dev/null) || return 1
  grep -q '"name": "daprd"' <<<"$pod"
}
until injected; do
  [ "$SECONDS" -lt "$deadline" ] || { log "the sidecar injector did not inject daprd within 60 s"; exit 1; }
  sleep 1
done
log "control plane Ready and injecting in $((SECONDS - started)) s"
