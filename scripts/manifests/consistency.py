#!/usr/bin/env python3
"""Cross-file consistency of the rendered manifests, the agents' code and compose.

Each check below encodes a fact that no schema validator sees because it spans two
objects or two files. Input: the repository root and the rendered output of each
kustomize entry point (name=path pairs).

Usage: consistency.py --repo ROOT [--routes-from DIR] NAME=RENDERED.yaml ...
Exit 0 when every check holds; each failure is printed as `FAIL [entry point] message`.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
from dataclasses import dataclass, field

import yaml

# libyaml's parser when PyYAML has it (the wheels do): the Istio CRD file is large.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

AGENTS = ("data", "recommendation")
AGENT_PORT_DEFAULT = 8000
# The contract's route list (CONTRACT.md), used only while the Rust sources are absent.
CONTRACT_ROUTES = {
    "shared": {"/healthz", "/readyz", "/openapi.json", "/docs", "/metrics"},
    "data": {"/data"},
    "recommendation": {"/recommend"},
}
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text) -> float:
    """Seconds in a Go/humantime duration such as 2s, 500ms or 1m30s."""
    text = str(text).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


# ------------------------------------------------------------------------------ routes


def agent_routes(source_root: str):
    """Routes per agent from `.route("...")` calls in the Rust sources.

    Returns (routes, origin) where origin says whether the code or the contract's
    fallback list was used.
    """
    found = {}
    for crate in ("shared",) + AGENTS:
        paths = glob.glob(os.path.join(source_root, crate, "src", "**", "*.rs"), recursive=True)
        routes = set()
        for path in paths:
            with open(path, encoding="utf-8") as fh:
                routes.update(re.findall(r"\.route\(\s*\"([^\"]+)\"", fh.read()))
        found[crate] = routes
    if any(found[a] for a in AGENTS) or found["shared"]:
        return {a: found[a] | found["shared"] for a in AGENTS}, "code"
    return {a: CONTRACT_ROUTES[a] | CONTRACT_ROUTES["shared"] for a in AGENTS}, "contract"


# ------------------------------------------------------------------------------- model


@dataclass
class Render:
    name: str
    docs: list
    errors: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def kind(self, kind, api_prefix=None):
        return [
            d for d in self.docs
            if d.get("kind") == kind and (api_prefix is None or d.get("apiVersion", "").startswith(api_prefix))
        ]

    def get(self, kind, name):
        for d in self.kind(kind):
            if d["metadata"]["name"] == name:
                return d
        return None

    def fail(self, msg):
        self.errors.append(msg)


def load_render(name, path):
    with open(path, encoding="utf-8") as fh:
        docs = [d for d in yaml.load_all(fh, Loader=SafeLoader) if d]
    return Render(name, docs)


def pod_template(deploy):
    return deploy["spec"]["template"]


def containers(deploy):
    return pod_template(deploy)["spec"].get("containers", [])


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", []) if "value" in e}


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def agent_container(deploy):
    app = pod_template(deploy)["metadata"].get("labels", {}).get("app")
    for c in containers(deploy):
        if c["name"] == app:
            return c
    return None


# ------------------------------------------------------------------------------ checks


def check_namespace(r: Render, namespace: str):
    for d in r.docs:
        if d.get("kind") in ("Namespace",):
            continue
        ns = d.get("metadata", {}).get("namespace")
        if ns != namespace:
            r.fail(f"{d['kind']}/{d['metadata'].get('name')} is in namespace {ns!r}, expected {namespace!r}")


def check_services(r: Render):
    deploys = r.kind("Deployment")
    for svc in r.kind("Service"):
        name = svc["metadata"]["name"]
        selector = svc["spec"].get("selector") or {}
        targets = [d for d in deploys if selects(selector, pod_template(d)["metadata"].get("labels", {}))]
        if not targets:
            r.fail(f"Service/{name} selector {selector} matches no Deployment's pod labels")
            continue
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for d in targets:
                ports = [p for c in containers(d) for p in c.get("ports", [])]
                match = [
                    p for p in ports
                    if (isinstance(target, str) and p.get("name") == target)
                    or (isinstance(target, int) and p.get("containerPort") == target)
                ]
                if not match:
                    r.fail(f"Service/{name} targetPort {target!r} is no container port of Deployment/{d['metadata']['name']}")
        if name in AGENTS:
            nums = [p["port"] for p in svc["spec"].get("ports", [])]
            if AGENT_PORT_DEFAULT not in nums:
                r.fail(f"Service/{name} does not expose port {AGENT_PORT_DEFAULT} (contract)")
    for d in deploys:
        labels = pod_template(d)["metadata"].get("labels", {})
        sel = d["spec"]["selector"].get("matchLabels", {})
        if not selects(sel, labels):
            r.fail(f"Deployment/{d['metadata']['name']} selector {sel} does not match its pod labels {labels}")
        if not any(selects(s["spec"].get("selector") or {}, labels) for s in r.kind("Service")):
            r.fail(f"Deployment/{d['metadata']['name']} pods are selected by no Service")
        for key in ("app", "version"):
            if key not in labels:
                r.fail(f"Deployment/{d['metadata']['name']} pod template lacks the {key!r} label")
        sa = pod_template(d)["spec"].get("serviceAccountName")
        if not sa or not r.get("ServiceAccount", sa):
            r.fail(f"Deployment/{d['metadata']['name']} uses ServiceAccount {sa!r}, which is not defined")
    for pdb in r.kind("PodDisruptionBudget"):
        sel = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(selects(sel, pod_template(d)["metadata"].get("labels", {})) for d in deploys):
            r.fail(f"PodDisruptionBudget/{pdb['metadata']['name']} selects no Deployment's pods")


def check_agents(r: Render, routes: dict, route_origin: str, compose_images: dict | None):
    for d in r.kind("Deployment"):
        labels = pod_template(d)["metadata"].get("labels", {})
        app = labels.get("app")
        if app not in AGENTS:
            continue
        dname = d["metadata"]["name"]
        c = agent_container(d)
        if c is None:
            r.fail(f"Deployment/{dname}: no container named {app!r}")
            continue
        env = env_of(c)
        port = int(env.get("PORT", AGENT_PORT_DEFAULT))
        http_ports = [p for p in c.get("ports", []) if p.get("name") == "http"]
        if not http_ports:
            r.fail(f"Deployment/{dname}: container has no port named 'http'")
        for p in http_ports:
            if p["containerPort"] != port:
                r.fail(f"Deployment/{dname}: containerPort {p['containerPort']} != PORT {port}")
        # Image names and tags.
        image = c.get("image", "")
        repo, _, tag = image.rpartition(":")
        if repo != f"agent-mesh/{app}" or not tag or tag == "latest":
            r.fail(f"Deployment/{dname}: image {image!r} is not agent-mesh/{app}:<pinned tag>")
        if compose_images is not None:
            want = compose_images.get(app) or set()
            if not want:
                r.fail(f"Deployment/{dname}: compose builds no agent-mesh/{app} image")
            elif image not in want:
                r.fail(f"Deployment/{dname}: image {image!r} differs from compose's {sorted(want)}")
        # Probes point at real routes on the http port.
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = c.get(probe)
            if not spec:
                r.fail(f"Deployment/{dname}: no {probe}")
                continue
            get = spec.get("httpGet")
            if not get:
                r.fail(f"Deployment/{dname}: {probe} is not an HTTP probe")
                continue
            if get.get("path") not in routes[app]:
                r.fail(
                    f"Deployment/{dname}: {probe} path {get.get('path')!r} is not a route of the {app} agent "
                    f"(routes from {route_origin}: {sorted(routes[app])})"
                )
            if get.get("port") not in ("http", port):
                r.fail(f"Deployment/{dname}: {probe} port {get.get('port')!r} is not the http port")
        ann = pod_template(d)["metadata"].get("annotations", {})
        if ann.get("prometheus.io/port") not in (str(port), None):
            r.fail(f"Deployment/{dname}: prometheus.io/port {ann.get('prometheus.io/port')} != PORT {port}")
        mpath = ann.get("prometheus.io/path")
        if mpath and mpath not in routes[app]:
            # /metrics is announced by the contract as "later"; say so loudly, do not fail.
            r.notes.append(f"WARNING Deployment/{dname}: prometheus.io/path {mpath!r} is not (yet) a route of {app}")
        # Shutdown budget.
        grace = pod_template(d)["spec"].get("terminationGracePeriodSeconds", 30)
        try:
            budget = parse_duration(env.get("SHUTDOWN_DELAY", "0s")) + parse_duration(env.get("DRAIN_TIMEOUT", "10s"))
        except ValueError as exc:
            r.fail(f"Deployment/{dname}: {exc}")
            budget = 0
        if not grace > budget:
            r.fail(f"Deployment/{dname}: terminationGracePeriodSeconds {grace} is not above SHUTDOWN_DELAY+DRAIN_TIMEOUT ({budget}s)")
        if app == "recommendation":
            check_recommendation_env(r, dname, env)


def check_recommendation_env(r: Render, dname, env):
    url = env.get("DATA_URL", "http://data:8000")
    m = re.match(r"^http://([^/:]+)(?::(\d+))?/?$", url)
    if not m:
        r.fail(f"Deployment/{dname}: DATA_URL {url!r} is not http://host:port")
    else:
        host, port = m.group(1), int(m.group(2) or 80)
        svc = r.get("Service", host.split(".")[0])
        if svc is None:
            r.fail(f"Deployment/{dname}: DATA_URL host {host!r} is no Service")
        elif port not in [p["port"] for p in svc["spec"]["ports"]]:
            r.fail(f"Deployment/{dname}: DATA_URL port {port} is not a port of Service/{svc['metadata']['name']}")


SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def daprd_has_api_token(deploy) -> bool:
    """Whether the injected daprd of this Deployment's pods can reach the Kubernetes API: the pod mounts the
    ServiceAccount token (the default), or hands daprd a volume at the token's path (dapr.io/volume-mounts)."""
    spec = pod_template(deploy)["spec"]
    if spec.get("automountServiceAccountToken", True):
        return True
    ann = pod_template(deploy)["metadata"].get("annotations", {})
    mounts = [m.strip().split(":") for m in ann.get("dapr.io/volume-mounts", "").split(",") if m.strip()]
    volumes = {v["name"] for v in spec.get("volumes") or []}
    return any(len(m) == 2 and m[1].rstrip("/") == SA_TOKEN_DIR and m[0] in volumes for m in mounts)


def check_dapr(r: Render):
    deploys = {d["metadata"]["name"]: d for d in r.kind("Deployment")}
    app_ids = {}
    for name, d in deploys.items():
        ann = pod_template(d)["metadata"].get("annotations", {})
        if ann.get("dapr.io/enabled") != "true":
            continue
        app_id = ann.get("dapr.io/app-id")
        if not app_id:
            r.fail(f"Deployment/{name}: dapr.io/enabled without dapr.io/app-id")
            continue
        app_ids[app_id] = d
        c = agent_container(d)
        port = int(env_of(c).get("PORT", AGENT_PORT_DEFAULT)) if c else AGENT_PORT_DEFAULT
        if ann.get("dapr.io/app-port") != str(port):
            r.fail(f"Deployment/{name}: dapr.io/app-port {ann.get('dapr.io/app-port')} != PORT {port}")
        grace = pod_template(d)["spec"].get("terminationGracePeriodSeconds", 30)
        gss = ann.get("dapr.io/graceful-shutdown-seconds")
        block = parse_duration(ann.get("dapr.io/block-shutdown-duration", "0s"))
        if gss is None or block + int(gss) > grace:
            r.fail(f"Deployment/{name}: dapr.io/block-shutdown-duration ({block:g}s) + graceful-shutdown-seconds "
                   f"({gss}) must be set and <= terminationGracePeriodSeconds {grace}")
        if not daprd_has_api_token(d) and ann.get("dapr.io/disable-builtin-k8s-secret-store") != "true":
            r.fail(f"Deployment/{name}: daprd has no Kubernetes API token here, so its built-in kubernetes secret "
                   "store cannot start and daprd exits: set dapr.io/disable-builtin-k8s-secret-store: \"true\"")
        config = ann.get("dapr.io/config")
        if config and not r.get("Configuration", config):
            r.fail(f"Deployment/{name}: dapr.io/config {config!r} names no Configuration")
        if ann.get("dapr.io/enable-app-health-check") != "true":
            r.fail(f"Deployment/{name}: dapr.io/enable-app-health-check is not \"true\"")
    if not app_ids:
        return False
    for d in r.kind("Deployment"):
        if pod_template(d)["metadata"].get("labels", {}).get("app") != "recommendation":
            continue
        ann = pod_template(d)["metadata"].get("annotations", {})
        if ann.get("dapr.io/enabled") != "true":
            r.fail(f"Deployment/{d['metadata']['name']}: Dapr variant without the Dapr sidecar")
            continue
        env = env_of(agent_container(d))
        if env.get("DATA_MODE", "auto") not in ("dapr", "auto"):
            r.fail(f"Deployment/{d['metadata']['name']}: DATA_MODE {env.get('DATA_MODE')!r} under Dapr (want dapr or auto)")
        target = env.get("DATA_APP_ID", "data")
        if target not in app_ids:
            r.fail(f"Deployment/{d['metadata']['name']}: DATA_APP_ID {target!r} is no Dapr app-id ({sorted(app_ids)})")
        for res in r.kind("Resiliency"):
            spec = res["spec"]
            tgt = (spec.get("targets", {}).get("apps") or {}).get(target)
            if tgt is None:
                r.fail(f"Resiliency/{res['metadata']['name']}: no target for app {target!r}")
                continue
            if env.get("DATA_RETRIES", "2") != "0":
                r.fail(f"Deployment/{d['metadata']['name']}: DATA_RETRIES must be 0 when Dapr retries (Resiliency)")
            pol = spec.get("policies", {})
            try:
                per_try = parse_duration(pol.get("timeouts", {})[tgt["timeout"]])
                retry = pol.get("retries", {})[tgt["retry"]]
                worst = (retry.get("maxRetries", 0) + 1) * per_try + retry.get("maxRetries", 0) * parse_duration(retry.get("duration", "0s"))
                if not parse_duration(env.get("DATA_TIMEOUT", "2s")) > worst:
                    r.fail(f"Deployment/{d['metadata']['name']}: DATA_TIMEOUT {env.get('DATA_TIMEOUT')} is not above the Dapr retry worst case {worst:.1f}s")
            except (KeyError, ValueError) as exc:
                r.fail(f"Resiliency/{res['metadata']['name']}: cannot work out the worst-case time: {exc}")
            for kind_key in ("timeout", "retry", "circuitBreaker"):
                ref = tgt.get(kind_key)
                section = {"timeout": "timeouts", "retry": "retries", "circuitBreaker": "circuitBreakers"}[kind_key]
                if ref and ref not in pol.get(section, {}):
                    r.fail(f"Resiliency/{res['metadata']['name']}: {kind_key} {ref!r} is not defined in policies.{section}")
    for kind in ("Component", "Resiliency", "Subscription"):
        for obj in r.kind(kind, "dapr.io/"):
            for scope in obj.get("scopes") or []:
                if scope not in app_ids:
                    r.fail(f"{kind}/{obj['metadata']['name']}: scope {scope!r} is no Dapr app-id ({sorted(app_ids)})")
    for comp in r.kind("Component", "dapr.io/"):
        if comp["spec"].get("type") == "secretstores.kubernetes":
            for scope in comp.get("scopes") or sorted(app_ids):
                if scope in app_ids and not daprd_has_api_token(app_ids[scope]):
                    r.fail(f"Component/{comp['metadata']['name']}: secretstores.kubernetes for app {scope!r}, whose "
                           "daprd has no Kubernetes API token (automountServiceAccountToken false, no dapr.io/volume-mounts of one)")
        for item in comp["spec"].get("metadata") or []:
            if item.get("name") == "redisHost":
                host = str(item.get("value", "")).split(":")[0].split(".")[0]
                if not r.get("Service", host):
                    r.fail(f"Component/{comp['metadata']['name']}: redisHost {item.get('value')!r} is no Service here")
    return True


def _svc_for_host(r: Render, host: str, namespace: str):
    """The Service an Istio host names: short name, name.ns, or the cluster FQDN."""
    parts = host.split(".")
    if len(parts) == 1 or (len(parts) >= 2 and parts[1] == namespace and (len(parts) == 2 or parts[2:] == ["svc", "cluster", "local"])):
        return r.get("Service", parts[0])
    return None


def check_istio(r: Render, namespace: str):
    vss = r.kind("VirtualService", "networking.istio.io/")
    drs = r.kind("DestinationRule", "networking.istio.io/")
    if not (vss or drs or r.kind("PeerAuthentication") or r.kind("AuthorizationPolicy")):
        return False
    deploys = r.kind("Deployment")
    subsets = {}
    for dr in drs:
        svc = _svc_for_host(r, dr["spec"]["host"], namespace)
        if svc is None:
            r.fail(f"DestinationRule/{dr['metadata']['name']}: host {dr['spec']['host']!r} is no Service")
            continue
        for sub in dr["spec"].get("subsets", []):
            subsets.setdefault(svc["metadata"]["name"], set()).add(sub["name"])
            labels = dict(svc["spec"].get("selector", {}), **sub.get("labels", {}))
            if not any(selects(labels, pod_template(d)["metadata"].get("labels", {})) for d in deploys):
                r.fail(f"DestinationRule/{dr['metadata']['name']}: subset {sub['name']} ({labels}) selects no pods")
    gateways = {g["metadata"]["name"] for g in r.kind("Gateway", "networking.istio.io/")}
    for vs in vss:
        vname = vs["metadata"]["name"]
        gws = vs["spec"].get("gateways") or []
        for gw in gws:
            if gw != "mesh" and gw.split("/")[-1] not in gateways:
                r.fail(f"VirtualService/{vname}: gateway {gw!r} is not defined")
        for host in vs["spec"].get("hosts", []):
            if host == "*" and gws and "mesh" not in gws:
                continue
            if _svc_for_host(r, host, namespace) is None:
                r.fail(f"VirtualService/{vname}: host {host!r} is no Service in {namespace}")
        for route in vs["spec"].get("http", []):
            dests = route.get("route", [])
            if len(dests) > 1 and sum(d.get("weight", 0) for d in dests) != 100:
                r.fail(f"VirtualService/{vname}: route weights add up to {sum(d.get('weight', 0) for d in dests)}, not 100")
            for dest in dests:
                dd = dest["destination"]
                svc = _svc_for_host(r, dd["host"], namespace)
                if svc is None:
                    r.fail(f"VirtualService/{vname}: destination host {dd['host']!r} is no Service")
                    continue
                sname = svc["metadata"]["name"]
                if "port" in dd and dd["port"]["number"] not in [p["port"] for p in svc["spec"]["ports"]]:
                    r.fail(f"VirtualService/{vname}: destination port {dd['port']['number']} is no port of Service/{sname}")
                if "subset" in dd and dd["subset"] not in subsets.get(sname, set()):
                    r.fail(f"VirtualService/{vname}: subset {dd['subset']!r} of {sname} is defined by no DestinationRule")
    # Policies that name identities.
    for ap in r.kind("AuthorizationPolicy", "security.istio.io/"):
        aname = ap["metadata"]["name"]
        sel = (ap["spec"].get("selector") or {}).get("matchLabels", {})
        if sel and not any(selects(sel, pod_template(d)["metadata"].get("labels", {})) for d in deploys):
            r.fail(f"AuthorizationPolicy/{aname}: selector {sel} selects no pods")
        for rule in ap["spec"].get("rules", []):
            for frm in rule.get("from", []):
                for principal in frm.get("source", {}).get("principals", []):
                    m = re.fullmatch(r"cluster\.local/ns/([^/]+)/sa/([^/]+)", principal)
                    if not m:
                        r.fail(f"AuthorizationPolicy/{aname}: principal {principal!r} is not cluster.local/ns/<ns>/sa/<sa>")
                        continue
                    ns, sa = m.groups()
                    if ns != namespace:
                        r.fail(f"AuthorizationPolicy/{aname}: principal {principal!r} names namespace {ns!r}, resources are in {namespace!r}")
                    if not r.get("ServiceAccount", sa):
                        r.fail(f"AuthorizationPolicy/{aname}: principal {principal!r} names ServiceAccount {sa!r}, which is not defined")
                    elif not any(pod_template(d)["spec"].get("serviceAccountName") == sa for d in deploys):
                        r.fail(f"AuthorizationPolicy/{aname}: no Deployment runs as ServiceAccount {sa!r}")
    # Sidecar settings of the Istio variant.
    ns_obj = r.get("Namespace", namespace)
    if ns_obj is not None and ns_obj["metadata"].get("labels", {}).get("istio-injection") != "enabled":
        r.fail(f"Namespace/{namespace}: Istio variant without the istio-injection=enabled label")
    data_vs = [
        vs for vs in vss
        if any(_svc_for_host(r, h, namespace) is not None and _svc_for_host(r, h, namespace)["metadata"]["name"] == "data"
               for h in vs["spec"].get("hosts", []))
    ]
    for d in deploys:
        labels = pod_template(d)["metadata"].get("labels", {})
        if labels.get("app") not in AGENTS:
            continue
        cfg = pod_template(d)["metadata"].get("annotations", {}).get("proxy.istio.io/config", "")
        if not re.search(r"[\"']?holdApplicationUntilProxyStarts[\"']?\s*:\s*true", cfg):
            r.fail(f"Deployment/{d['metadata']['name']}: proxy.istio.io/config lacks holdApplicationUntilProxyStarts: true")
        # Without native sidecars (Kubernetes < 1.33) Envoy gets SIGTERM with the app and must drain until the app is
        # done, within the grace period (scripts/ci/istio-cluster.sh check 9 proves it on live pods).
        env = env_of(agent_container(d))
        app_drain = parse_duration(env.get("SHUTDOWN_DELAY", "0s")) + parse_duration(env.get("DRAIN_TIMEOUT", "10s"))
        m = re.search(r"[\"']?terminationDrainDuration[\"']?\s*:\s*[\"']([^\"']+)[\"']", cfg)
        envoy_drain = parse_duration(m.group(1)) if m else 5.0
        grace = pod_template(d)["spec"].get("terminationGracePeriodSeconds", 30)
        # The other way to outlive the app: pilot-agent keeps Envoy until its last connection closes (deploy/istio-dapr,
        # where daprd's own drain also needs Envoy), bounded by the grace period.
        exits_on_idle = re.search(r"[\"']?EXIT_ON_ZERO_ACTIVE_CONNECTIONS[\"']?\s*:\s*[\"']true[\"']", cfg)
        if not exits_on_idle and not app_drain < envoy_drain < grace:
            r.fail(f"Deployment/{d['metadata']['name']}: Envoy's terminationDrainDuration ({envoy_drain}s) must lie between "
                   f"SHUTDOWN_DELAY+DRAIN_TIMEOUT ({app_drain}s) and terminationGracePeriodSeconds ({grace}s)")
        ann = pod_template(d)["metadata"].get("annotations", {})
        # Through Dapr the call leaves as daprd's gRPC to data's daprd, which the data VirtualService does not
        # match (deploy/istio-dapr even keeps Envoy off that port): Dapr's Resiliency bounds it (check_dapr).
        via_dapr = env.get("DATA_MODE", "auto") == "dapr" or (
            env.get("DATA_MODE", "auto") == "auto" and ann.get("dapr.io/enabled") == "true")
        if labels.get("app") == "recommendation" and data_vs and not via_dapr:
            if env.get("DATA_RETRIES", "2") != "0":
                r.fail(f"Deployment/{d['metadata']['name']}: DATA_RETRIES must be 0 where Envoy retries (VirtualService/{data_vs[0]['metadata']['name']})")
            for vs in data_vs:
                for route in vs["spec"].get("http", []):
                    if "timeout" in route and not parse_duration(env.get("DATA_TIMEOUT", "2s")) > parse_duration(route["timeout"]):
                        r.fail(f"Deployment/{d['metadata']['name']}: DATA_TIMEOUT {env.get('DATA_TIMEOUT')} is not above VirtualService/{vs['metadata']['name']} timeout {route['timeout']}")
    return True


def check_network_policies(r: Render):
    nps = r.kind("NetworkPolicy")
    if not any(np["spec"].get("podSelector") == {} and set(np["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not np["spec"].get("ingress") and not np["spec"].get("egress") for np in nps):
        r.fail("no default-deny NetworkPolicy (empty podSelector, Ingress+Egress, no rules)")

    def allows(direction, pod_app, peer_app, port):
        for np in nps:
            if direction not in np["spec"].get("policyTypes", []):
                continue
            sel = np["spec"].get("podSelector", {})
            if not _label_selector_matches(sel, {"app": pod_app}):
                continue
            for rule in np["spec"].get("ingress" if direction == "Ingress" else "egress", []):
                peers = rule.get("from" if direction == "Ingress" else "to", [])
                ports = [p.get("port") for p in rule.get("ports", [])]
                peer_ok = any("namespaceSelector" not in p and _label_selector_matches(p.get("podSelector", {}), {"app": peer_app}) for p in peers)
                if peer_ok and (not ports or port in ports):
                    return True
        return False

    if not allows("Egress", "recommendation", "data", 8000) or not allows("Ingress", "data", "recommendation", 8000):
        r.fail("NetworkPolicies do not let recommendation reach data on 8000 (egress and ingress)")
    dns = any(
        "Egress" in np["spec"].get("policyTypes", []) and np["spec"].get("podSelector") == {}
        and any(53 in [p.get("port") for p in rule.get("ports", [])] for rule in np["spec"].get("egress", []))
        for np in nps
    )
    if not dns:
        r.fail("no NetworkPolicy allows DNS egress (port 53) for every pod")
    scrape = any(
        "Ingress" in np["spec"].get("policyTypes", [])
        and any(8000 in [p.get("port") for p in rule.get("ports", [])] and any("namespaceSelector" in p for p in rule.get("from", []))
                for rule in np["spec"].get("ingress", []))
        and _label_selector_matches(np["spec"].get("podSelector", {}), {"app": "data"})
        for np in nps
    )
    if not scrape:
        r.fail("no NetworkPolicy lets Prometheus scrape the agents on 8000")


def _label_selector_matches(sel: dict, labels: dict) -> bool:
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in sel.get("matchExpressions") or []:
        val = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and val not in expr.get("values", []):
            return False
        if op == "NotIn" and val in expr.get("values", []):
            return False
        if op == "Exists" and expr["key"] not in labels:
            return False
        if op == "DoesNotExist" and expr["key"] in labels:
            return False
    return True


def compose_images(repo: str):
    """Images compose builds for each agent, found by image name (agent-mesh/<agent>:<tag>)
    whatever the compose service is called; None when the repo has no compose file."""
    for name in ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml"):
        path = os.path.join(repo, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                doc = yaml.load(fh, Loader=SafeLoader) or {}
            images = {app: set() for app in AGENTS}
            for svc in (doc.get("services") or {}).values():
                image = str((svc or {}).get("image") or "")
                for app in AGENTS:
                    if image.startswith(f"agent-mesh/{app}:"):
                        images[app].add(image)
            return images, path
    return None, None


def check_seed_pair(repo: str, errors: list):
    """`kubectl apply -f k8s/recommendation.yaml -f k8s/data.yaml` must stay complete."""
    for app in AGENTS:
        path = os.path.join(repo, "k8s", f"{app}.yaml")
        if not os.path.exists(path):
            errors.append(f"[seed pair] {path} is missing")
            continue
        with open(path, encoding="utf-8") as fh:
            kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.load_all(fh, Loader=SafeLoader) if d}
        for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"):
            if (kind, app) not in kinds:
                errors.append(f"[seed pair] k8s/{app}.yaml lacks {kind}/{app}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--routes-from", help="directory with the agents' Rust crates (default: --repo)")
    parser.add_argument("renders", nargs="+", help="NAME=PATH of a rendered entry point")
    args = parser.parse_args(argv)

    routes, origin = agent_routes(args.routes_from or args.repo)
    if origin == "contract":
        banner = "!" * 78
        print(banner)
        print("WARNING: no `.route(\"...\")` found in data/src, recommendation/src or shared/src;")
        print("WARNING: probe paths are checked against the CONTRACT.md route list instead:")
        for app in AGENTS:
            print(f"WARNING:   {app}: {sorted(routes[app])}")
        print(banner)
    else:
        print(f"consistency: routes read from the Rust sources: " + "; ".join(f"{a}: {sorted(routes[a])}" for a in AGENTS))
    images, compose_path = compose_images(args.repo)
    if images is None:
        print("consistency: no docker-compose.yml/compose.yaml in the repo; image names checked against the contract only")
    else:
        print(f"consistency: agent images in {os.path.basename(compose_path)}: " + "; ".join(f"{a}: {sorted(images[a])}" for a in AGENTS))

    errors: list[str] = []
    check_seed_pair(args.repo, errors)
    namespace = None
    ns_path = os.path.join(args.repo, "k8s", "namespace.yaml")
    if os.path.exists(ns_path):
        with open(ns_path, encoding="utf-8") as fh:
            namespace = next((d["metadata"]["name"] for d in yaml.load_all(fh, Loader=SafeLoader) if d and d.get("kind") == "Namespace"), None)
    if not namespace:
        errors.append("k8s/namespace.yaml defines no Namespace")
        namespace = "agents"

    for spec in args.renders:
        name, _, path = spec.partition("=")
        r = load_render(name, path)
        if not r.kind("Deployment"):
            r.notes.append("no Deployments (resource-only entry point)")
        else:
            check_namespace(r, namespace)
            check_services(r)
            check_agents(r, routes, origin, images)
            check_network_policies(r)
        dapr = check_dapr(r)
        istio = check_istio(r, namespace)
        for note in r.notes:
            print(f"  [{name}] {note}")
        errors.extend(f"[{name}] {e}" for e in r.errors)
        print(f"consistency: [{name}] {len(r.docs)} objects; dapr={'yes' if dapr else 'no'} istio={'yes' if istio else 'no'}; {len(r.errors)} problems")
    for e in errors:
        print(f"FAIL {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
