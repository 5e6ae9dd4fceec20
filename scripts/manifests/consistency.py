#!/usr/bin/env python3
"""Cross-file consistency of the rendered manifests, the agents' code and compose.

Each check below encodes a fact that no schema validator sees because it spans two
objects or two files. Input: the repository root and the rendered output of each
kustomize entry point (name=path pairs).

The agents' routes come from the OpenAPI document each one serves at /openapi.json (`<agent> openapi` prints it
without serving; scripts/ci/manifests.sh runs it): paths with their methods, path templates (`/users/{user_id}`)
included. Besides the probes, ports and Dapr settings, they are checked against the access policies:
  * every path an Istio AuthorizationPolicy or a Dapr Configuration's accessControl names (with its methods) is
    served by an agent the policy applies to; Istio's exact/prefix/suffix/presence forms and Dapr's `*`/`**`
    segments are matched against the templates;
  * on an agent an Istio ALLOW policy guards, every route is allowed by some rule, or named in the policy's
    `agent-mesh/closed-routes` annotation ("METHOD /path, ..."), or is one the mesh lets through without the policy
    (the probe, scrape and Dapr health paths: Istio sends those to the sidecar agent's port, daprd calls over
    localhost);
  * where both guard an agent, Istio and Dapr open the same routes to the same callers.

Usage: consistency.py --repo ROOT --openapi AGENT=OPENAPI.json ... NAME=RENDERED.yaml ...
Exit 0 when every check holds; each failure is printed as `FAIL [entry point] message`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
from dataclasses import dataclass, field

import yaml

# libyaml's parser when PyYAML has it (the wheels do): the Istio CRD file is large.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

AGENTS = ("data", "recommendation")
AGENT_PORT_DEFAULT = 8000
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
HTTP_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")
CLOSED_ROUTES = "agent-mesh/closed-routes"


def parse_duration(text) -> float:
    """Seconds in a Go/humantime duration such as 2s, 500ms or 1m30s."""
    text = str(text).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


# ------------------------------------------------------------------------------ routes


class Routes:
    """What one agent serves: path template -> methods, from its OpenAPI document, plus /openapi.json itself
    (where the document was read from; FastAPI does not list it either)."""

    def __init__(self, agent: str, document: dict):
        self.agent = agent
        self.templates: dict[str, set[str]] = {}
        for path, item in (document.get("paths") or {}).items():
            methods = {m.upper() for m in (item or {}) if m.upper() in HTTP_METHODS}
            if methods:
                self.templates[path] = methods
        self.templates.setdefault("/openapi.json", set()).add("GET")

    def operations(self):
        return sorted((m, t) for t, ms in self.templates.items() for m in ms)

    def serves(self, path: str, method: str = "GET") -> bool:
        """Whether a concrete request path (a probe's, say) reaches a route with this method."""
        return any(method in ms and template_regex(t).fullmatch(path) for t, ms in self.templates.items())

    def describe(self) -> str:
        return ", ".join(f"{'|'.join(sorted(ms))} {t}" for t, ms in sorted(self.templates.items()))


def load_openapi(agent: str, path: str) -> Routes:
    with open(path, encoding="utf-8") as fh:
        document = json.load(fh)
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3."):
        raise ValueError(f"{path} is not an OpenAPI 3 document")
    routes = Routes(agent, document)
    if len(routes.templates) < 2:
        raise ValueError(f"{path} lists no paths")
    return routes


def template_tokens(template: str):
    """`/users/{id}/x` -> ["/users/", None, "/x"]: literal text, None for a parameter (one non-empty segment)."""
    tokens = []
    for literal, param in re.findall(r"([^{]*)(\{[^}]*\})?", template):
        if literal:
            tokens.append(literal)
        if param:
            tokens.append(None)
    return tokens


def template_regex(template: str):
    return re.compile("".join("[^/]+" if t is None else re.escape(t) for t in template_tokens(template)))


def _is_prefix_of_instance(tokens, text: str) -> bool:
    """Whether `text` is a prefix of some path the template tokens describe."""
    if not text:
        return True
    if not tokens:
        return False
    head, rest = tokens[0], tokens[1:]
    if head is not None:
        if len(text) <= len(head):
            return head.startswith(text)
        return text.startswith(head) and _is_prefix_of_instance(rest, text[len(head):])
    # A parameter: one or more characters other than "/"; text may end inside it.
    for n in range(1, len(text) + 1):
        if text[n - 1] == "/":
            break
        if n == len(text) or _is_prefix_of_instance(rest, text[n:]):
            return True
    return False


def _reverse_tokens(tokens):
    return [None if t is None else t[::-1] for t in reversed(tokens)]


def istio_overlaps(pattern: str, template: str) -> bool:
    """Whether an Istio path pattern (exact, "prefix*", "*suffix" or "*") matches some path of the template."""
    tokens = template_tokens(template)
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return _is_prefix_of_instance(tokens, pattern[:-1])
    if pattern.startswith("*"):
        return _is_prefix_of_instance(_reverse_tokens(tokens), pattern[1:][::-1])
    return bool(template_regex(template).fullmatch(pattern))


def istio_covers(pattern: str, template: str) -> bool:
    """Whether an Istio path pattern matches every path of the template."""
    tokens = template_tokens(template)
    head = tokens[0] if tokens and tokens[0] is not None else ""
    tail = tokens[-1] if tokens and tokens[-1] is not None else ""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return head.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return tail.endswith(pattern[1:])
    return tokens == [template] and pattern == template


def _dapr_segments(text: str):
    text = text if text.startswith("/") else "/" + text
    return text.lower().split("/")[1:]


def _dapr_match(pattern: str, template: str, every: bool) -> bool:
    """Dapr accessControl operation names against a template, by path segment, case-insensitively (HTTP): `*` is
    one segment, `**` one or more, other `*` globs within a segment (pkg/config/acl_trie.go). `every`: whether
    the pattern matches every path of the template rather than some."""
    pat, tpl = _dapr_segments(pattern), _dapr_segments(template)
    for i, p in enumerate(pat):
        if p == "**":
            return len(tpl) > i
        if i >= len(tpl):
            return False
        t = tpl[i]
        if t.startswith("{") and t.endswith("}"):
            if every and set(p) != {"*"}:
                return False
        elif p != "*" and not fnmatch.fnmatchcase(t, p):
            return False
    return len(pat) == len(tpl)


def method_matches(methods, method: str) -> bool:
    return not methods or "*" in methods or method in {m.upper() for m in methods}


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


def check_agents(r: Render, routes: dict[str, Routes], compose_images: dict | None):
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
            if not routes[app].serves(str(get.get("path"))):
                r.fail(
                    f"Deployment/{dname}: {probe} path {get.get('path')!r} is not a GET route of the {app} agent "
                    f"(its OpenAPI document: {routes[app].describe()})"
                )
            if get.get("port") not in ("http", port):
                r.fail(f"Deployment/{dname}: {probe} port {get.get('port')!r} is not the http port")
        ann = pod_template(d)["metadata"].get("annotations", {})
        if ann.get("prometheus.io/port") not in (str(port), None):
            r.fail(f"Deployment/{dname}: prometheus.io/port {ann.get('prometheus.io/port')} != PORT {port}")
        for key in ("prometheus.io/path", "dapr.io/app-health-check-path"):
            if ann.get(key) and not routes[app].serves(ann[key]):
                r.fail(f"Deployment/{dname}: {key} {ann[key]!r} is not a GET route of the {app} agent "
                       f"(its OpenAPI document: {routes[app].describe()})")
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


def _agent_deployments(r: Render) -> dict[str, list]:
    found: dict[str, list] = {}
    for d in r.kind("Deployment"):
        app = pod_template(d)["metadata"].get("labels", {}).get("app")
        if app in AGENTS:
            found.setdefault(app, []).append(d)
    return found


def _passes_policy_by(r: Render, app: str, deploys) -> set[str]:
    """Paths of `app` the mesh calls without going through its access policies: the kubelet's probes and
    Prometheus' scrapes (Istio's injector sends both to the sidecar agent's port), and daprd's health checks
    (over localhost, past Envoy's inbound capture)."""
    paths = set()
    for d in deploys:
        c = agent_container(d) or {}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path"):
                paths.add(get["path"])
        ann = pod_template(d)["metadata"].get("annotations", {})
        for key in ("prometheus.io/path", "dapr.io/app-health-check-path"):
            if ann.get(key):
                paths.add(ann[key])
    return paths


def _parse_closed(text: str):
    """`agent-mesh/closed-routes`: "METHOD /path, METHOD /path"."""
    out = []
    for item in filter(None, (i.strip() for i in str(text).split(","))):
        method, _, path = item.partition(" ")
        out.append((method.upper(), path.strip(), item))
    return out


def check_access(r: Render, routes: dict[str, Routes], namespace: str):
    """The agents' routes against the Istio AuthorizationPolicies and Dapr accessControl that name them (see the
    module docs)."""
    deploys = _agent_deployments(r)
    in_render = sorted(deploys) or list(AGENTS)  # a resource-only entry point applies to whichever agents run

    def targets(selector: dict):
        if not selector:
            return in_render
        if deploys:
            return [a for a in in_render if any(selects(selector, pod_template(d)["metadata"].get("labels", {})) for d in deploys[a])]
        return [a for a in in_render if selector.get("app") in (None, a)]

    # Istio: who may call which route, per guarded agent.
    istio_allowed: dict[str, dict[tuple, set]] = {}
    closed: dict[str, set] = {}
    for ap in r.kind("AuthorizationPolicy", "security.istio.io/"):
        aname = ap["metadata"]["name"]
        spec = ap.get("spec") or {}
        action = spec.get("action", "ALLOW")
        apps = targets((spec.get("selector") or {}).get("matchLabels") or {})
        served = [(a, m, t) for a in apps for m, t in routes[a].operations()]
        for rule in spec.get("rules") or []:
            callers = set()
            for frm in rule.get("from") or [{}]:
                principals = (frm.get("source") or {}).get("principals")
                callers |= {p.rsplit("/", 1)[-1] for p in principals} if principals else {"*"}
            for to in rule.get("to") or [{}]:
                op = to.get("operation") or {}
                methods = op.get("methods") or []
                for key in ("paths", "notPaths"):
                    for pattern in op.get(key) or []:
                        if not any(method_matches(methods, m) and istio_overlaps(pattern, t) for _, m, t in served):
                            r.fail(f"AuthorizationPolicy/{aname}: {key} {pattern!r} ({'|'.join(methods) or 'any method'}) "
                                   f"is no route of {', '.join(apps) or 'any agent'} "
                                   f"({'; '.join(f'{a}: {routes[a].describe()}' for a in apps)})")
                if action != "ALLOW":
                    continue
                for a, m, t in served:
                    if not method_matches(methods, m):
                        continue
                    if op.get("paths") and not any(istio_covers(p, t) for p in op["paths"]):
                        continue
                    if any(istio_overlaps(p, t) for p in op.get("notPaths") or []):
                        continue
                    istio_allowed.setdefault(a, {}).setdefault((m, t), set()).update(callers)
        if action == "ALLOW":
            for a in apps:
                istio_allowed.setdefault(a, {})
        for method, path, item in _parse_closed((ap["metadata"].get("annotations") or {}).get(CLOSED_ROUTES, "")):
            hits = [(a, m, t) for a, m, t in served if m == method and (t == path or template_regex(t).fullmatch(path))]
            if not hits:
                r.fail(f"AuthorizationPolicy/{aname}: {CLOSED_ROUTES} names {item!r}, which is no route of "
                       f"{', '.join(apps) or 'any agent'}")
            for a, m, t in hits:
                closed.setdefault(a, set()).add((m, t))
    for a, allowed in sorted(istio_allowed.items()):
        exempt = _passes_policy_by(r, a, deploys.get(a, []))
        for m, t in routes[a].operations():
            if (m, t) in closed.get(a, set()):
                if (m, t) in allowed:
                    r.fail(f"{m} {t} of {a} is allowed by an AuthorizationPolicy and also named in {CLOSED_ROUTES}")
                continue
            if (m, t) in allowed or (m == "GET" and any(template_regex(t).fullmatch(p) for p in exempt)):
                continue
            r.fail(f"{m} {t} of the {a} agent is allowed by no rule of its ALLOW AuthorizationPolicy, so nothing in "
                   f"the mesh can reach it: allow it for its callers, or name it in the policy's {CLOSED_ROUTES} "
                   f"annotation if that is meant")

    # Dapr: operations named by accessControl, and what each caller may invoke.
    dapr_allowed: dict[str, dict[str, set]] = {}  # app -> caller app-id -> operations
    for cfg in r.kind("Configuration", "dapr.io/"):
        acl = (cfg.get("spec") or {}).get("accessControl")
        if not acl:
            continue
        cname = cfg["metadata"]["name"]
        users = [a for a in in_render if not deploys or any(
            pod_template(d)["metadata"].get("annotations", {}).get("dapr.io/config") == cname for d in deploys[a])]
        policies = acl.get("policies") or []
        default = acl.get("defaultAction") or ("deny" if policies else "allow")
        for pol in policies:
            for op in pol.get("operations") or []:
                verbs = op.get("httpVerb") or ["*"]
                if not any(method_matches(verbs, m) and _dapr_match(op["name"], t, every=False)
                           for a in users for m, t in routes[a].operations()):
                    r.fail(f"Configuration/{cname}: accessControl operation {op['name']!r} "
                           f"({'|'.join(verbs)}) for caller {pol.get('appId')!r} is no route of "
                           f"{', '.join(users) or 'any agent'}")
        for a in users:
            for pol in policies:
                if pol.get("namespace") not in (None, namespace):
                    continue
                ops = set()
                for m, t in routes[a].operations():
                    action = pol.get("defaultAction") or default
                    for op in pol.get("operations") or []:
                        if _dapr_match(op["name"], t, every=True):
                            verbs = [v.upper() for v in op.get("httpVerb") or []]
                            if m in verbs or "*" in verbs:
                                action = op.get("action", action)
                            break
                    if str(action).lower() == "allow":
                        ops.add((m, t))
                dapr_allowed.setdefault(a, {})[pol["appId"]] = ops

    # Both guard the same agent: the same callers get the same routes.
    for a in sorted(set(istio_allowed) & set(dapr_allowed)):
        exempt = _passes_policy_by(r, a, deploys.get(a, []))
        sa_of = {pod_template(d)["metadata"].get("annotations", {}).get("dapr.io/app-id"):
                 pod_template(d)["spec"].get("serviceAccountName") for ds in deploys.values() for d in ds}
        for app_id, dapr_ops in sorted(dapr_allowed[a].items()):
            sa = sa_of.get(app_id)
            if sa is None:
                continue
            istio_ops = {op for op, callers in istio_allowed[a].items() if sa in callers or "*" in callers}
            for m, t in sorted(istio_ops ^ dapr_ops):
                if m == "GET" and any(template_regex(t).fullmatch(p) for p in exempt):
                    continue
                yes, no = ("Istio", "Dapr's accessControl") if (m, t) in istio_ops else ("Dapr's accessControl", "Istio")
                r.fail(f"{m} {t} of the {a} agent: {yes} lets {app_id} (ServiceAccount {sa}) call it, {no} does not")
    return bool(istio_allowed or dapr_allowed)


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
    parser.add_argument("--openapi", action="append", default=[], metavar="AGENT=FILE",
                        help="the OpenAPI document an agent serves at /openapi.json (`<agent> openapi` prints it); "
                             "one per agent")
    parser.add_argument("renders", nargs="+", help="NAME=PATH of a rendered entry point")
    args = parser.parse_args(argv)

    documents = dict(spec.partition("=")[::2] for spec in args.openapi)
    if sorted(documents) != sorted(AGENTS):
        parser.error(f"give --openapi AGENT=FILE for exactly the agents {list(AGENTS)} (got {sorted(documents)})")
    try:
        routes = {a: load_openapi(a, documents[a]) for a in AGENTS}
    except (OSError, ValueError) as exc:
        print(f"FAIL cannot read the agents' OpenAPI documents: {exc}")
        return 1
    for a in AGENTS:
        print(f"consistency: {a} routes from its /openapi.json: {routes[a].describe()}")
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
            check_agents(r, routes, images)
            check_network_policies(r)
        dapr = check_dapr(r)
        istio = check_istio(r, namespace)
        access = check_access(r, routes, namespace)
        for note in r.notes:
            print(f"  [{name}] {note}")
        errors.extend(f"[{name}] {e}" for e in r.errors)
        print(f"consistency: [{name}] {len(r.docs)} objects; dapr={'yes' if dapr else 'no'} istio={'yes' if istio else 'no'} access policies={'yes' if access else 'no'}; {len(r.errors)} problems")
    for e in errors:
        print(f"FAIL {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
