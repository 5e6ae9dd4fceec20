#!/usr/bin/env python3
"""Run every manifest validator over a repository tree (scripts/ci/manifests.sh calls this).

Steps (each independent; all run, the exit code says whether all passed):
  render       kustomize build of every kustomization.yaml entry point (kind Kustomization, except a part
               that another kustomization includes from its own subdirectory);
               every kustomize Component must be used by some entry point
  kubeval      kubernetes-validate --strict for Kubernetes 1.32 on every core-kind object
  crds         Istio/Dapr custom resources against the CRDs in CRD_DIR (validate_crs.py)
  istioctl     istioctl validate + istioctl analyze --use-kube=false on the Istio entry points
               and examples; istioctl manifest generate on istio/install/istio-operator.yaml
  checkov      checkov (kubernetes, and dockerfile when a Dockerfile exists), skip list from
               scripts/manifests/checkov-skips.txt
  consistency  cross-file facts (consistency.py)

Tools come from the environment: KUSTOMIZE, ISTIOCTL, CHECKOV, VALIDATORS_VENV, CRD_DIR
(scripts/ci/manifests.sh sets them from scripts/tools/install-*.sh), and OPENAPI_DIR: <agent>.json, the OpenAPI
document each agent serves (manifests.sh has the agents print them).

Usage: run_checks.py --repo ROOT --out DIR [--steps a,b,...]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

import yaml

# libyaml's parser when PyYAML has it (the wheels do): the Istio CRD file is large.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = ("render", "kubeval", "crds", "istioctl", "checkov", "consistency")
AGENTS = ("data", "recommendation")
KUBERNETES_VERSION = "1.32.0"
SKIP_DIRS = {".git", "target", "node_modules", ".venv", "venv", "__pycache__"}
ISTIO_GROUPS = ("networking.istio.io/", "security.istio.io/", "telemetry.istio.io/", "extensions.istio.io/")


@dataclass
class Ctx:
    repo: str
    out: str
    crd_dir: str
    tools: dict
    openapi_dir: str = ""
    renders: dict = field(default_factory=dict)  # entry point name -> rendered file
    log: list = field(default_factory=list)

    def say(self, msg):
        print(msg, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def slug(rel: str) -> str:
    return rel.strip("/").replace("/", "-") or "root"


def load_docs(path):
    with open(path, encoding="utf-8") as fh:
        return [d for d in yaml.load_all(fh, Loader=SafeLoader) if d]


def is_core(doc) -> bool:
    api = doc.get("apiVersion", "")
    group = api.rsplit("/", 1)[0] if "/" in api else ""
    return group in ("", "apps", "batch", "policy", "autoscaling") or group.endswith(".k8s.io")


def kustomizations(repo):
    found = []
    for root, dirs, files in os.walk(repo):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
            if name in files:
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as fh:
                    doc = yaml.load(fh, Loader=SafeLoader) or {}
                found.append((os.path.relpath(root, repo), doc))
    return found


# ------------------------------------------------------------------------------ steps


def step_render(ctx: Ctx) -> list[str]:
    errors = []
    kz = kustomizations(ctx.repo)
    if not kz:
        return ["no kustomization.yaml found"]
    used_components = set()
    components = set()
    # A kustomization that another one includes from one of its own subdirectories is a part of that one (e.g.
    # deploy/istio-canary/v2, the v2 Deployment of the canary), validated through it rather than on its own.
    parts = set()
    for rel, doc in kz:
        for res in doc.get("resources") or []:
            sub = os.path.normpath(os.path.join(rel, res))
            if sub.startswith(os.path.normpath(rel) + os.sep) or (rel == "." and not sub.startswith("..")):
                parts.add(sub)
    os.makedirs(os.path.join(ctx.out, "render"), exist_ok=True)
    for rel, doc in kz:
        if doc.get("kind") == "Component":
            components.add(os.path.normpath(rel))
            continue
        if os.path.normpath(rel) in parts:
            ctx.say(f"  {rel}/ is a part of {os.path.dirname(os.path.normpath(rel))}/, rendered with it")
            continue
        for comp in doc.get("components") or []:
            used_components.add(os.path.normpath(os.path.join(rel, comp)))
        target = os.path.join(ctx.out, "render", slug(rel) + ".yaml")
        res = run([ctx.tools["KUSTOMIZE"], "build", os.path.join(ctx.repo, rel), "-o", target])
        if res.returncode != 0:
            errors.append(f"kustomize build {rel}: {res.stderr.strip()}")
            continue
        ctx.renders[slug(rel)] = target
        ctx.say(f"  rendered {rel}/ -> {len(load_docs(target))} objects")
    for comp in sorted(components - used_components):
        errors.append(f"kustomize Component {comp}/ is used by no entry point, so nothing renders or validates it")
    return errors


def extra_istio_files(ctx):
    return sorted(glob.glob(os.path.join(ctx.repo, "istio", "examples", "*.yaml")))


def step_kubeval(ctx: Ctx) -> list[str]:
    errors = []
    core_dir = os.path.join(ctx.out, "core")
    os.makedirs(core_dir, exist_ok=True)
    files = []
    for name, path in ctx.renders.items():
        docs = [d for d in load_docs(path) if is_core(d)]
        if not docs:
            continue
        target = os.path.join(core_dir, name + ".yaml")
        with open(target, "w", encoding="utf-8") as fh:
            yaml.safe_dump_all(docs, fh, sort_keys=False)
        files.append(target)
    if not files:
        return ["no core-kind objects rendered"]
    exe = os.path.join(ctx.tools["VALIDATORS_VENV"], "bin", "kubernetes-validate")
    res = run([exe, "-k", KUBERNETES_VERSION, "--strict", *files])
    out = res.stdout + res.stderr
    passed = len(re.findall(r"^INFO .* passed", out, re.M))
    for line in out.splitlines():
        if not line.startswith("INFO"):
            errors.append(line)
    if res.returncode != 0 and not errors:
        errors.append(f"kubernetes-validate exited {res.returncode}")
    ctx.say(f"  kubernetes-validate {KUBERNETES_VERSION} --strict: {passed} objects passed")
    return errors


def step_crds(ctx: Ctx) -> list[str]:
    files = list(ctx.renders.values()) + extra_istio_files(ctx)
    py = os.path.join(ctx.tools["VALIDATORS_VENV"], "bin", "python")
    res = run([py, os.path.join(HERE, "validate_crs.py"), "--crd-dir", ctx.crd_dir, *files])
    for line in res.stdout.splitlines():
        if not line.startswith("FAIL"):
            ctx.say("  " + line)
    errors = [line[5:] for line in res.stdout.splitlines() if line.startswith("FAIL")]
    if res.returncode != 0 and not errors:
        errors.append(f"validate_crs.py exited {res.returncode}: {res.stderr.strip()[-2000:]}")
    return errors


def step_istioctl(ctx: Ctx) -> list[str]:
    errors = []
    istioctl = ctx.tools["ISTIOCTL"]
    targets = []
    for name, path in sorted(ctx.renders.items()):
        if any(d.get("apiVersion", "").startswith(ISTIO_GROUPS) for d in load_docs(path)):
            targets.append((name, path))
    if not targets:
        return ["no rendered entry point contains Istio resources"]
    for name, path in targets:
        res = run([istioctl, "validate", "-f", path])
        if res.returncode != 0:
            errors.append(f"istioctl validate {name}: {(res.stdout + res.stderr).strip()}")
        res = run([istioctl, "analyze", "--use-kube=false", "--all-namespaces", "--failure-threshold", "Info", path])
        text = (res.stdout + res.stderr).strip()
        if res.returncode != 0:
            errors.append(f"istioctl analyze {name}: {text}")
        else:
            ctx.say(f"  istioctl validate + analyze {name}: {text.splitlines()[-1] if text else 'ok'}")
    # The fault-injection examples replace the `data` VirtualService of the istio/ entry point.
    base = ctx.renders.get("istio")
    for example in extra_istio_files(ctx):
        rel = os.path.relpath(example, ctx.repo)
        res = run([istioctl, "validate", "-f", example])
        if res.returncode != 0:
            errors.append(f"istioctl validate {rel}: {(res.stdout + res.stderr).strip()}")
            continue
        if base:
            replaced = {(d["kind"], d["metadata"]["name"]) for d in load_docs(example)}
            docs = [d for d in load_docs(base) if (d["kind"], d["metadata"]["name"]) not in replaced] + load_docs(example)
            combo = os.path.join(ctx.out, "render", "example-" + os.path.basename(example))
            with open(combo, "w", encoding="utf-8") as fh:
                yaml.safe_dump_all(docs, fh, sort_keys=False)
            res = run([istioctl, "analyze", "--use-kube=false", "--all-namespaces", "--failure-threshold", "Info", combo])
            if res.returncode != 0:
                errors.append(f"istioctl analyze istio/ with {rel}: {(res.stdout + res.stderr).strip()}")
        ctx.say(f"  istioctl validate + analyze {rel}: ok")
    operator = os.path.join(ctx.repo, "istio", "install", "istio-operator.yaml")
    if os.path.exists(operator):
        res = run([istioctl, "manifest", "generate", "-f", operator])
        if res.returncode != 0:
            errors.append(f"istioctl manifest generate -f istio/install/istio-operator.yaml: {res.stderr.strip()[-3000:]}")
        else:
            ctx.say(f"  istioctl manifest generate istio/install/istio-operator.yaml: {res.stdout.count(chr(10) + 'kind: ')} objects")
    return errors


def read_skips(path) -> tuple[list[str], list[str]]:
    ids, errors = [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            check, _, reason = line.partition("#")
            check = check.strip()
            if not re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check):
                errors.append(f"{path}:{n}: {check!r} is not a checkov check id")
            elif not reason.strip():
                errors.append(f"{path}:{n}: skip of {check} has no reason")
            else:
                ids.append(check)
    return ids, errors


def step_checkov(ctx: Ctx) -> list[str]:
    skips, errors = read_skips(os.path.join(ctx.repo, "scripts", "manifests", "checkov-skips.txt"))
    if errors:
        return errors  # an unexplained skip list is a failure by itself; fix it first
    checkov = ctx.tools["CHECKOV"]
    kdir = os.path.join(ctx.out, "checkov")
    os.makedirs(kdir, exist_ok=True)
    for name, path in ctx.renders.items():
        with open(path, encoding="utf-8") as src, open(os.path.join(kdir, name + ".yaml"), "w", encoding="utf-8") as dst:
            dst.write(src.read())
    common = ["--skip-download", "--compact", "--quiet"]
    if skips:
        common += ["--skip-check", ",".join(skips)]
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
    res = run([checkov, "-d", kdir, "--framework", "kubernetes", *common], env=env)
    summary = re.findall(r"Passed checks: \d+, Failed checks: \d+, Skipped checks: \d+", res.stdout)
    if res.returncode != 0 or not summary:
        errors.append(f"checkov kubernetes: {res.stdout.strip()[-6000:]} {res.stderr.strip()[-1000:]}")
    ctx.say(f"  checkov kubernetes ({len(ctx.renders)} renders): {summary[0] if summary else 'no summary'}; skipped ids: {','.join(skips) or 'none'}")
    dockerfiles = []
    for root, dirs, files in os.walk(ctx.repo):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        dockerfiles += [os.path.join(root, f) for f in files if f == "Dockerfile" or f.startswith("Dockerfile.") or f.endswith(".Dockerfile")]
    if dockerfiles:
        args = []
        for f in sorted(dockerfiles):
            args += ["-f", f]
        res = run([checkov, *args, "--framework", "dockerfile", *common], env=env)
        summary = re.findall(r"Passed checks: \d+, Failed checks: \d+, Skipped checks: \d+", res.stdout)
        if res.returncode != 0:
            errors.append(f"checkov dockerfile: {res.stdout.strip()[-6000:]}")
        ctx.say(f"  checkov dockerfile ({len(dockerfiles)} files): {summary[0] if summary else 'no summary'}")
    else:
        ctx.say("  checkov dockerfile: no Dockerfile in the repository, nothing to check")
    return errors


def step_consistency(ctx: Ctx) -> list[str]:
    py = os.path.join(ctx.tools["VALIDATORS_VENV"], "bin", "python")
    cmd = [py, os.path.join(HERE, "consistency.py"), "--repo", ctx.repo]
    cmd += [f"--openapi={agent}={os.path.join(ctx.openapi_dir, agent + '.json')}" for agent in AGENTS]
    cmd += [f"{n}={p}" for n, p in sorted(ctx.renders.items())]
    res = run(cmd)
    for line in res.stdout.splitlines():
        if not line.startswith("FAIL"):
            ctx.say("  " + line)
    errors = [line[5:] for line in res.stdout.splitlines() if line.startswith("FAIL")]
    if res.returncode != 0 and not errors:
        errors.append(f"consistency.py exited {res.returncode}: {res.stderr.strip()[-2000:]}")
    return errors


STEP_FUNCS = {
    "render": step_render,
    "kubeval": step_kubeval,
    "crds": step_crds,
    "istioctl": step_istioctl,
    "checkov": step_checkov,
    "consistency": step_consistency,
}


def tools_from_env():
    tools = {}
    for key in ("KUSTOMIZE", "ISTIOCTL", "CHECKOV", "VALIDATORS_VENV"):
        if os.environ.get(key):
            tools[key] = os.environ[key]
    return tools


def run_steps(repo, out, steps, crd_dir, tools, quiet=False, openapi_dir=None) -> dict[str, list[str]]:
    """Run the given steps (render always first); returns step -> list of failures."""
    openapi_dir = openapi_dir or os.environ.get("OPENAPI_DIR", "")
    ctx = Ctx(repo=os.path.abspath(repo), out=out, crd_dir=crd_dir, tools=tools, openapi_dir=openapi_dir)
    if quiet:
        ctx.say = lambda msg: None
    results = {}
    wanted = ["render"] + [s for s in steps if s != "render"]
    for step in wanted:
        started = time.monotonic()
        errors = STEP_FUNCS[step](ctx)
        results[step] = errors
        ctx.say(f"{'PASS' if not errors else 'FAIL'} {step} ({time.monotonic() - started:.1f}s)")
        for err in errors:
            ctx.say(f"  FAIL {step}: {err}")
        if step == "render" and not ctx.renders:
            break
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", default=",".join(STEPS))
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; known: {STEPS}")
    crd_dir = os.environ.get("CRD_DIR", "")
    tools = tools_from_env()
    missing = {"render": ["KUSTOMIZE"], "kubeval": ["VALIDATORS_VENV"], "crds": ["VALIDATORS_VENV"],
               "istioctl": ["ISTIOCTL"], "checkov": ["CHECKOV"], "consistency": ["VALIDATORS_VENV"]}
    lacking = sorted({t for s in steps + ["render"] for t in missing[s] if t not in tools})
    if "crds" in steps and not crd_dir:
        lacking.append("CRD_DIR")
    if "consistency" in steps and not os.environ.get("OPENAPI_DIR"):
        lacking.append("OPENAPI_DIR")
    if lacking:
        parser.error(f"set {', '.join(lacking)} (scripts/ci/manifests.sh does)")
    results = run_steps(args.repo, args.out, steps, crd_dir, tools)
    failed = [s for s, errs in results.items() if errs]
    print(f"manifests: {len(results) - len(failed)} passed, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
