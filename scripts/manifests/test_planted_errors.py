"""Each manifest validator must fail on a planted error.

Every test copies the repository (without .git and build output) to a temporary
directory, plants exactly one error by an exact text replacement (the test itself fails
if the text to replace is missing, so a drifting manifest cannot turn a test into a
no-op), runs one step of run_checks.py on the copy and asserts that the step fails with
the expected message. The unmodified tree passing the same steps is what
scripts/ci/manifests.sh checks just before this.

Needs the environment scripts/ci/manifests.sh exports: KUSTOMIZE, ISTIOCTL, CHECKOV,
VALIDATORS_VENV, CRD_DIR, OPENAPI_DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import run_checks  # noqa: E402

TOOLS = run_checks.tools_from_env()
CRD_DIR = os.environ.get("CRD_DIR", "")

OPENAPI_DIR = os.environ.get("OPENAPI_DIR", "")

pytestmark = pytest.mark.skipif(
    len(TOOLS) < 4 or not os.path.isdir(CRD_DIR) or not os.path.isdir(OPENAPI_DIR),
    reason="run through scripts/ci/manifests.sh, which installs the tools and sets CRD_DIR and OPENAPI_DIR",
)


@pytest.fixture
def repo(tmp_path):
    dest = tmp_path / "repo"
    shutil.copytree(
        REPO,
        dest,
        ignore=shutil.ignore_patterns(".git", "target", "node_modules", "__pycache__", ".venv"),
    )
    return dest


def plant(repo, rel, old, new):
    path = repo / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{rel} no longer contains {old!r}; update this test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def step_errors(repo, tmp_path, step, openapi_dir=None):
    results = run_checks.run_steps(str(repo), str(tmp_path / "out"), [step], CRD_DIR, TOOLS, quiet=True,
                                   openapi_dir=openapi_dir)
    if step != "render":
        assert not results["render"], f"render failed, so {step} was not reached: {results['render']}"
    return results[step]


def assert_fails(errors, *needles):
    assert errors, "the validator accepted the planted error"
    text = "\n".join(errors)
    for needle in needles:
        assert needle in text, f"expected {needle!r} in:\n{text}"


# ---------------------------------------------------------------------------- render


def test_render_fails_on_missing_resource(repo, tmp_path):
    plant(repo, "k8s/kustomization.yaml", "  - networkpolicy.yaml\n", "  - networkpolicy.yaml\n  - missing.yaml\n")
    assert_fails(step_errors(repo, tmp_path, "render"), "kustomize build k8s", "missing.yaml")


def test_render_fails_on_unused_component(repo, tmp_path):
    (repo / "k8s" / "orphan").mkdir()
    (repo / "k8s" / "orphan" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n", encoding="utf-8"
    )
    assert_fails(step_errors(repo, tmp_path, "render"), "k8s/orphan/ is used by no entry point")


# --------------------------------------------------------------------------- kubeval


def test_kubeval_rejects_unknown_field(repo, tmp_path):
    plant(
        repo,
        "k8s/data.yaml",
        "          imagePullPolicy: IfNotPresent\n",
        "          imagePullPolicy: IfNotPresent\n          imagePulPolicy: Always\n",
    )
    assert_fails(step_errors(repo, tmp_path, "kubeval"), "imagePulPolicy")


def test_kubeval_rejects_core_kind_without_schema(repo, tmp_path):
    plant(repo, "k8s/recommendation.yaml", "apiVersion: policy/v1\nkind: PodDisruptionBudget", "apiVersion: policy/v1beta3\nkind: PodDisruptionBudget")
    assert_fails(step_errors(repo, tmp_path, "kubeval"), "PodDisruptionBudget")


# ------------------------------------------------------------------------------ crds


def test_crds_reject_unknown_istio_field(repo, tmp_path):
    plant(repo, "istio/destinationrule-data.yaml", "      consecutive5xxErrors: 5\n", "      consecutive5xxErrors: 5\n      consecutive5xxError: 5\n")
    assert_fails(step_errors(repo, tmp_path, "crds"), "consecutive5xxError", "unexpected")


def test_crds_evaluate_cel_rules(repo, tmp_path):
    # Schema-valid (a string), rejected only by the CRD's CEL rule duration(self) >= 1ms.
    plant(repo, "istio/virtualservice-data.yaml", "perTryTimeout: 2s", "perTryTimeout: 0s")
    assert_fails(step_errors(repo, tmp_path, "crds"), "perTryTimeout", "CEL")


def test_crds_reject_wrong_type_in_dapr_resource(repo, tmp_path):
    plant(repo, "dapr/resiliency.yaml", "maxRetries: 2", "maxRetries: two")
    assert_fails(step_errors(repo, tmp_path, "crds"), "maxRetries", "not of type 'integer'")


def test_crds_reject_unknown_dapr_field(repo, tmp_path):
    plant(repo, "dapr/statestore.yaml", "  type: state.redis\n", "  type: state.redis\n  typo: true\n")
    assert_fails(step_errors(repo, tmp_path, "crds"), "typo")


def test_crds_reject_custom_resource_without_crd(repo, tmp_path):
    plant(repo, "istio/telemetry.yaml", "kind: Telemetry", "kind: Telemetries")
    assert_fails(step_errors(repo, tmp_path, "crds"), "no served CRD", "Telemetries")


# -------------------------------------------------------------------------- istioctl


def test_istioctl_validate_rejects_bad_retry_condition(repo, tmp_path):
    # A plain string to the CRD schema; istioctl knows Envoy's retry conditions.
    plant(repo, "istio/virtualservice-data.yaml", "retryOn: 5xx,connect-failure,reset", "retryOn: 5xx,connect-failure,sometimes")
    assert_fails(step_errors(repo, tmp_path, "istioctl"), "istioctl validate")


def test_istioctl_analyze_finds_missing_subset(repo, tmp_path):
    plant(repo, "istio/virtualservice-data.yaml", "subset: v1", "subset: v9")
    assert_fails(step_errors(repo, tmp_path, "istioctl"), "istioctl analyze", "v9")


# --------------------------------------------------------------------------- checkov


def test_checkov_flags_writable_root_filesystem(repo, tmp_path):
    plant(repo, "k8s/data.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
    assert_fails(step_errors(repo, tmp_path, "checkov"), "CKV_K8S_22")


def test_checkov_skip_needs_a_reason(repo, tmp_path):
    plant(repo, "scripts/manifests/checkov-skips.txt", "CKV_K8S_15  # ", "CKV_K8S_15\n# ")
    assert_fails(step_errors(repo, tmp_path, "checkov"), "CKV_K8S_15 has no reason")


def test_checkov_checks_dockerfiles_when_present(repo, tmp_path):
    (repo / "data").mkdir(exist_ok=True)
    # Several faults at once (latest tag, ADD of a URL, root as the last USER), so the test
    # keeps failing even if a reasoned skip is later added for one of them.
    (repo / "data" / "Dockerfile.planted").write_text(
        "FROM debian:latest\nADD https://example.invalid/app.tar.gz /app/\nUSER root\nCMD [\"/app/run\"]\n",
        encoding="utf-8",
    )
    assert_fails(step_errors(repo, tmp_path, "checkov"), "checkov dockerfile")


# ----------------------------------------------------------------------- consistency

CONSISTENCY_PLANTS = [
    ("service-selector", "k8s/data.yaml", "  selector:\n    app: data\n", "  selector:\n    app: datum\n", "Service/data selector"),
    ("target-port", "k8s/data.yaml", "      targetPort: http\n", "      targetPort: metrics\n", "targetPort 'metrics'"),
    ("port-vs-env", "k8s/recommendation.yaml", "            - name: PORT\n              value: \"8000\"", "            - name: PORT\n              value: \"8080\"", "containerPort 8000 != PORT 8080"),
    ("probe-path", "k8s/data.yaml", "path: /readyz", "path: /ready", "readinessProbe path '/ready'"),
    ("principal-sa", "istio/authorizationpolicy-data.yaml", "ns/agents/sa/recommendation", "ns/agents/sa/recommender", "ServiceAccount 'recommender'"),
    ("principal-ns", "istio/authorizationpolicy-data.yaml", "ns/agents/sa/recommendation", "ns/default/sa/recommendation", "names namespace 'default'"),
    ("dapr-app-id", "k8s/dapr/patch-recommendation.yaml", "- name: DATA_APP_ID\n              value: data", "- name: DATA_APP_ID\n              value: datastore", "DATA_APP_ID 'datastore'"),
    ("dapr-scope", "dapr/statestore.yaml", "scopes:\n  - recommendation", "scopes:\n  - recommender", "scope 'recommender'"),
    ("dapr-grace", "k8s/dapr/patch-sidecar.yaml", "block-shutdown-duration: 15s", "block-shutdown-duration: 25s", "block-shutdown-duration (25s) + graceful-shutdown-seconds"),
    ("dapr-builtin-secret-store", "k8s/dapr/patch-sidecar.yaml", "dapr.io/disable-builtin-k8s-secret-store: \"true\"", "dapr.io/disable-builtin-k8s-secret-store: \"false\"", "built-in kubernetes secret store cannot start"),
    ("dapr-k8s-secret-store-token", "k8s/dapr/patch-data.yaml", "dapr.io/volume-mounts: daprd-kube-api-access:", "dapr.io/volume-mounts: other-volume:", "whose daprd has no Kubernetes API token"),
    ("vs-subset", "istio/destinationrule-data.yaml", "    - name: v1\n", "    - name: v1-old\n", "subset 'v1'"),
    ("vs-host", "istio/virtualservice-data.yaml", "  hosts:\n    - data.agents.svc.cluster.local", "  hosts:\n    - dato.agents.svc.cluster.local", "host 'dato.agents.svc.cluster.local'"),
    ("canary-weights", "istio/canary/virtualservice-recommendation.yaml", "weight: 10", "weight: 20", "add up to 110"),
    ("istio-retries", "istio/patch-recommendation.yaml", "- name: DATA_RETRIES\n              value: \"0\"", "- name: DATA_RETRIES\n              value: \"2\"", "DATA_RETRIES must be 0 where Envoy retries"),
    ("istio-timeout", "istio/virtualservice-data.yaml", "      timeout: 6s\n", "      timeout: 9s\n", "is not above VirtualService/data timeout 9s"),
    ("hold-proxy", "istio/patch-data.yaml", "holdApplicationUntilProxyStarts\": true", "holdApplicationUntilProxyStarts\": false", "holdApplicationUntilProxyStarts"),
    ("envoy-drain", "istio/patch-data.yaml", "\"terminationDrainDuration\": \"20s\"", "\"terminationDrainDuration\": \"5s\"", "terminationDrainDuration (5.0s)"),
    ("default-deny", "k8s/networkpolicy.yaml", "  name: default-deny\n  namespace: agents\nspec:\n  podSelector: {}", "  name: default-deny\n  namespace: agents\nspec:\n  podSelector:\n    matchLabels:\n      app: redis", "no default-deny NetworkPolicy"),
    ("seed-pair", "k8s/data.yaml", "kind: PodDisruptionBudget\nmetadata:\n  name: data", "kind: PodDisruptionBudget\nmetadata:\n  name: data-pdb", "k8s/data.yaml lacks PodDisruptionBudget/data"),
    ("image-name", "k8s/recommendation.yaml", "image: agent-mesh/recommendation:0.1.0", "image: agent-mesh/recommendation:latest", "is not agent-mesh/recommendation:<pinned tag>"),
]


@pytest.mark.parametrize("rel,old,new,needle", [p[1:] for p in CONSISTENCY_PLANTS], ids=[p[0] for p in CONSISTENCY_PLANTS])
def test_consistency_catches(repo, tmp_path, rel, old, new, needle):
    plant(repo, rel, old, new)
    assert_fails(step_errors(repo, tmp_path, "consistency"), needle)


def test_consistency_compares_images_with_compose(repo, tmp_path):
    for name in ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml"):
        if (repo / name).exists():
            (repo / name).unlink()
    (repo / "docker-compose.yml").write_text(
        "services:\n  data-agent:\n    image: agent-mesh/data:0.2.0\n  recommendation:\n    image: agent-mesh/recommendation:0.1.0\n",
        encoding="utf-8",
    )
    assert_fails(step_errors(repo, tmp_path, "consistency"), "differs from compose's ['agent-mesh/data:0.2.0']")


@pytest.fixture
def openapi(tmp_path):
    """Copies of the agents' OpenAPI documents to plant routes in: (directory, {agent: document})."""
    dest = tmp_path / "openapi"
    dest.mkdir()
    docs = {}
    for agent in run_checks.AGENTS:
        with open(os.path.join(OPENAPI_DIR, agent + ".json"), encoding="utf-8") as fh:
            docs[agent] = json.load(fh)
    return dest, docs


def consistency_with(repo, tmp_path, openapi):
    dest, docs = openapi
    for agent, doc in docs.items():
        (dest / f"{agent}.json").write_text(json.dumps(doc), encoding="utf-8")
    return step_errors(repo, tmp_path, "consistency", openapi_dir=str(dest))


def test_consistency_takes_routes_from_openapi(repo, tmp_path, openapi):
    # Without /readyz in data's document, data's readiness probe names no route.
    del openapi[1]["data"]["paths"]["/readyz"]
    assert_fails(consistency_with(repo, tmp_path, openapi), "Deployment/data: readinessProbe path '/readyz' is not a GET route")


def test_consistency_refuses_a_policy_path_no_agent_serves(repo, tmp_path, openapi):
    plant(repo, "istio/authorizationpolicy-data.yaml", 'paths: ["/data", ', 'paths: ["/data", "/datum", ')
    assert_fails(consistency_with(repo, tmp_path, openapi), "AuthorizationPolicy/data: paths '/datum' (GET) is no route of data")


def test_consistency_refuses_a_policy_method_the_path_is_not_served_with(repo, tmp_path, openapi):
    plant(repo, "istio/authorizationpolicy-data.yaml", 'methods: ["GET"]', 'methods: ["POST"]')
    assert_fails(consistency_with(repo, tmp_path, openapi), "paths '/data' (POST) is no route of data")


def test_consistency_refuses_a_dapr_operation_no_agent_serves(repo, tmp_path, openapi):
    plant(repo, "dapr/configuration.yaml", "- name: /data\n", "- name: /datum\n")
    assert_fails(consistency_with(repo, tmp_path, openapi), "accessControl operation '/datum' (GET) for caller 'recommendation' is no route")


def test_consistency_refuses_a_stale_closed_route(repo, tmp_path, openapi):
    plant(repo, "istio/authorizationpolicy-data.yaml", "closed-routes: PUT /data,", "closed-routes: PUT /datum,")
    assert_fails(consistency_with(repo, tmp_path, openapi), "names 'PUT /datum', which is no route of data",
                 "PUT /data of the data agent is allowed by no rule")


REPORT = {"get": {"responses": {"200": {"description": "a report"}}}}


def test_consistency_refuses_a_route_its_policy_does_not_open(repo, tmp_path, openapi):
    # A new route on data (as /openapi.json would list it) that no rule of data's ALLOW policy names.
    openapi[1]["data"]["paths"]["/reports/{report}"] = REPORT
    assert_fails(consistency_with(repo, tmp_path, openapi), "GET /reports/{report} of the data agent is allowed by no rule")


def test_consistency_matches_templates_to_policy_globs_and_compares_istio_with_dapr(repo, tmp_path, openapi):
    openapi[1]["data"]["paths"]["/reports/{report}"] = REPORT
    # Istio opens it to recommendation with a prefix glob; Dapr does not, which the Istio+Dapr variant reports.
    plant(repo, "istio/authorizationpolicy-data.yaml", 'paths: ["/data", ', 'paths: ["/data", "/reports/*", ')
    errors = consistency_with(repo, tmp_path, openapi)
    assert_fails(errors, "[deploy-istio-dapr] GET /reports/{report} of the data agent: Istio lets recommendation "
                 "(ServiceAccount recommendation) call it, Dapr's accessControl does not")
    assert not [e for e in errors if "allowed by no rule" in e or "is no route" in e], errors
    # Dapr opening it too (one segment wildcard) makes the manifests consistent again.
    plant(repo, "dapr/configuration.yaml", "- name: /data\n", "- name: /reports/*\n            httpVerb: [\"GET\"]\n            action: allow\n          - name: /data\n")
    assert consistency_with(repo, tmp_path, openapi) == []


def test_route_patterns():
    import consistency as c

    assert c.istio_overlaps("/insights/users/alice", "/insights/users/{user}")
    assert not c.istio_overlaps("/insights/users/alice/x", "/insights/users/{user}")
    assert c.istio_overlaps("/insights/users/*", "/insights/users/{user}")
    assert c.istio_covers("/insights/users/*", "/insights/users/{user}")
    assert c.istio_overlaps("/insights/users/al*", "/insights/users/{user}")
    assert not c.istio_covers("/insights/users/al*", "/insights/users/{user}")
    assert c.istio_overlaps("*/preferences", "/users/{user_id}/preferences")
    assert c.istio_covers("*/preferences", "/users/{user_id}/preferences")
    assert not c.istio_overlaps("/items*", "/insights/users/{user}")
    assert not c.istio_covers("/insights/users/alice", "/insights/users/{user}")
    assert c.istio_covers("/data", "/data") and not c.istio_overlaps("/data", "/data/x")
    assert c._dapr_match("/insights/users/*", "/insights/users/{user}", every=True)
    assert c._dapr_match("/insights/**", "/insights/users/{user}", every=True)
    assert not c._dapr_match("/insights/*", "/insights/users/{user}", every=False)
    assert c._dapr_match("/Data", "/data", every=True)
    assert c._dapr_match("/insights/users/alice", "/insights/users/{user}", every=False)
    assert not c._dapr_match("/insights/users/alice", "/insights/users/{user}", every=True)
