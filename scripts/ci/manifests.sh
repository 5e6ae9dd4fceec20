#!/usr/bin/env bash
# Check entry point for the Kubernetes / Istio / Dapr manifests (issue 6). Offline; exit 0 = pass.
#
#  1. installs (or finds cached) kustomize, istioctl, checkov, the Python validators and the upstream
#     Istio and Dapr CRDs with scripts/tools/install-*.sh, and checks that the CRDs reject the
#     known-bad resources of scripts/manifests/testdata/invalid-crs.yaml;
#  2. scripts/manifests/run_checks.py: renders every kustomize entry point and runs
#     kubernetes-validate --strict (Kubernetes 1.32), the CRD schema + CEL validator,
#     istioctl validate/analyze, checkov and the cross-file consistency test;
#  3. scripts/manifests/test_planted_errors.py (pytest): plants one error per validator in a
#     copy of the manifests and asserts that validator fails.
#
# Environment:
#   CRD_DIR            CRDs to validate against (default: Istio's and Dapr's from the Go modules at the
#                      versions scripts/tools/install-istio.sh and install-daprd.sh pin, extracted by
#                      scripts/tools/install-crds.sh); point it at `kubectl get crd -o yaml` output to
#                      check against a cluster
#   AGENT_MESH_CACHE   tool cache (default ~/.cache/agent-mesh)
#   OPENAPI_DIR        directory holding data.json and recommendation.json, the agents' OpenAPI documents
#                      (default: built from this checkout with cargo and printed by `<agent> openapi`)
#   MANIFESTS_SELFTEST set to 0 to skip step 3
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
started=$SECONDS

echo "== manifests: tools"
t=$SECONDS
if [[ -z "${CRD_DIR:-}" ]]; then
  CRD_DIR="$(scripts/tools/install-crds.sh | tail -n 1)"
elif [[ ! -d "$CRD_DIR" ]]; then
  echo "manifests: CRD directory $CRD_DIR not found" >&2
  exit 1
fi
CRD_DIR="$(cd "$CRD_DIR" && pwd)"
export CRD_DIR
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

# The schema step below proves nothing if the CRDs accept anything (an empty or partial CRD_DIR, a lax schema):
# each known-bad resource, one of every kind the manifests use, must be rejected by its CRD.
echo "== manifests: the CRDs reject known-bad resources"
"$VALIDATORS_VENV/bin/python" scripts/manifests/validate_crs.py --crd-dir "$CRD_DIR" --expect-invalid \
  scripts/manifests/testdata/invalid-crs.yaml | grep -v '^  rejected as expected: ' \
  || { echo "== manifests: FAIL: the CRDs in $CRD_DIR let a known-bad resource through" >&2; exit 1; }

out="$(mktemp -d "${TMPDIR:-/tmp}/agent-mesh-manifests.XXXXXX")"
trap 'rm -rf "$out"' EXIT

# The consistency test reads the agents' routes from the OpenAPI documents they serve at /openapi.json;
# `<agent> openapi` prints it without serving. The binaries are the ones `cargo test --workspace` builds (a
# `cargo build -p <agent>` would resolve other features and compile everything a second time), so after the test
# suite this costs cargo's freshness check only.
if [[ -z "${OPENAPI_DIR:-}" ]]; then
  echo "== manifests: the agents' OpenAPI documents"
  t=$SECONDS
  OPENAPI_DIR="$out/openapi"
  mkdir -p "$OPENAPI_DIR"
  nice -n 10 cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$out/cargo.json"
  for agent in data recommendation; do
    bin="$("$VALIDATORS_VENV/bin/python" - "$agent" "$out/cargo.json" <<'PY'
import json, sys
agent, path = sys.argv[1], sys.argv[2]
for line in open(path, encoding="utf-8"):
    msg = json.loads(line)
    target = msg.get("target") or {}
    if msg.get("reason") == "compiler-artifact" and target.get("kind") == ["bin"] and target.get("name") == agent \
            and not msg["profile"]["test"]:
        print(msg["executable"])
PY
)"
    [[ -x "$bin" ]] || { echo "manifests: cargo built no $agent binary" >&2; exit 1; }
    "$bin" openapi >"$OPENAPI_DIR/$agent.json"
  done
  echo "read in $((SECONDS - t))s"
fi
OPENAPI_DIR="$(cd "$OPENAPI_DIR" && pwd)"
export OPENAPI_DIR

echo "== manifests: validators"
t=$SECONDS
status=0
"$VALIDATORS_VENV/bin/python" scripts/manifests/run_checks.py --repo "$root" --out "$out/checks" || status=1
echo "validators took $((SECONDS - t))s"

if [[ "${MANIFESTS_SELFTEST:-1}" != 0 ]]; then
  echo "== manifests: planted-error self-test"
  t=$SECONDS
  # One worker per core (pytest-xdist): the 44 cases are independent (each plants its error in its own copy of the
  # tree) and spend their time in the validators' processes, so they split across cores; one at a time took 93 s.
  "$VALIDATORS_VENV/bin/python" -m pytest -q -p no:cacheprovider --numprocesses auto \
    --basetemp "$out/selftest" scripts/manifests/test_planted_errors.py || status=1
  echo "self-test took $((SECONDS - t))s"
fi

echo "== manifests: $([[ $status == 0 ]] && echo PASS || echo FAIL) in $((SECONDS - started))s"
exit "$status"
