#!/usr/bin/env bash
# Check entry point for the Kubernetes / Istio / Dapr manifests (issue 6). Offline; exit 0 = pass.
#
#  1. installs (or finds cached) kustomize, istioctl, checkov and the Python validators
#     with scripts/tools/install-*.sh;
#  2. scripts/manifests/run_checks.py: renders every kustomize entry point and runs
#     kubernetes-validate --strict (Kubernetes 1.32), the CRD schema + CEL validator,
#     istioctl validate/analyze, checkov and the cross-file consistency test;
#  3. scripts/manifests/test_planted_errors.py (pytest): plants one error per validator in a
#     copy of the manifests and asserts that validator fails.
#
# Environment:
#   CRD_DIR            upstream CRDs (default: ../shared/schemas/crds next to the repo root);
#                      point it at `kubectl get crd -o yaml` output to check against a cluster
#   AGENT_MESH_CACHE   tool cache (default ~/.cache/agent-mesh)
#   ROUTES_FROM        directory holding the agents' crates, if not this repository
#   MANIFESTS_SELFTEST set to 0 to skip step 3
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
started=$SECONDS

CRD_DIR="${CRD_DIR:-$root/../shared/schemas/crds}"
if [[ ! -d "$CRD_DIR" ]]; then
  echo "manifests: CRD directory $CRD_DIR not found (set CRD_DIR)" >&2
  exit 1
fi
CRD_DIR="$(cd "$CRD_DIR" && pwd)"
export CRD_DIR

echo "== manifests: tools"
t=$SECONDS
KUSTOMIZE="$(scripts/tools/install-kustomize.sh | tail -n 1)"
ISTIOCTL="$(scripts/tools/install-istioctl.sh | tail -n 1)"
CHECKOV="$(scripts/tools/install-checkov.sh | tail -n 1)"
VALIDATORS_VENV="$(scripts/tools/install-validators.sh | tail -n 1)"
export KUSTOMIZE ISTIOCTL CHECKOV VALIDATORS_VENV
echo "kustomize:  $KUSTOMIZE"
echo "istioctl:   $ISTIOCTL"
echo "checkov:    $CHECKOV"
echo "validators: $VALIDATORS_VENV"
echo "CRD_DIR:    $CRD_DIR"
echo "tools ready in $((SECONDS - t))s"

out="$(mktemp -d "${TMPDIR:-/tmp}/agent-mesh-manifests.XXXXXX")"
trap 'rm -rf "$out"' EXIT

echo "== manifests: validators"
t=$SECONDS
status=0
"$VALIDATORS_VENV/bin/python" scripts/manifests/run_checks.py --repo "$root" --out "$out/checks" || status=1
echo "validators took $((SECONDS - t))s"

if [[ "${MANIFESTS_SELFTEST:-1}" != 0 ]]; then
  echo "== manifests: planted-error self-test"
  t=$SECONDS
  "$VALIDATORS_VENV/bin/python" -m pytest -q -p no:cacheprovider \
    --basetemp "$out/selftest" scripts/manifests/test_planted_errors.py || status=1
  echo "self-test took $((SECONDS - t))s"
fi

echo "== manifests: $([[ $status == 0 ]] && echo PASS || echo FAIL) in $((SECONDS - started))s"
exit "$status"
