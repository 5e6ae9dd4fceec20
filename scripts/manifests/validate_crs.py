#!/usr/bin/env python3
"""Validate custom resources (Istio, Dapr, ...) against their CustomResourceDefinitions.

What the Kubernetes API server would do with `kubectl apply --validate=strict`, offline:

* find the CRD for each resource's group/version/kind (the version must be served);
* validate the object against the version's structural OpenAPI v3 schema, with unknown
  fields rejected: the API server silently prunes unknown fields unless asked for strict
  field validation, so `additionalProperties: false` is added to every object schema that
  lists `properties` and does not say `x-kubernetes-preserve-unknown-fields`;
* `metadata` is checked against a strict ObjectMeta subset (name/namespace syntax,
  string maps for labels and annotations);
* evaluate the CRD's CEL rules (`x-kubernetes-validations`) with cel-python, including
  the Kubernetes/cel-go extension functions the Istio and Dapr CRDs use (`substring`,
  `url(...).getScheme()`...). Transition rules (those using `oldSelf`) need an old object
  and are reported as not evaluated, as is any rule whose evaluation raises an error
  from a missing function.

Any resource whose apiVersion has a dotted group that is not a Kubernetes built-in
group and has no CRD in the directory is an error: nothing is left unvalidated.

Usage: validate_crs.py --crd-dir DIR [--report-unevaluated] FILE...
Exit 0 when every custom resource is valid.

       validate_crs.py --crd-dir DIR --expect-invalid FILE...
The negative check: exit 0 when every custom resource in the files is rejected by its CRD (scripts/ci/manifests.sh
runs it on scripts/manifests/testdata/invalid-crs.yaml, so a CRD directory that catches nothing cannot pass).
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field

import celpy
import celpy.celtypes as ct
import jsonschema
import yaml

# libyaml's parser when PyYAML has it (the wheels do): the Istio CRD file is large.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Groups served by Kubernetes itself; kubernetes-validate checks those.
BUILTIN_GROUP_SUFFIXES = (".k8s.io",)
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "extensions"}

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

OBJECT_META_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
        },
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}


def is_builtin(api_version: str) -> bool:
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return group in BUILTIN_GROUPS or group.endswith(BUILTIN_GROUP_SUFFIXES)


# --------------------------------------------------------------------------- schemas


def strict_schema(node, path="#"):
    """Copy a structural schema into JSON Schema that rejects unknown fields.

    Only the structural skeleton (properties / items / additionalProperties) is walked:
    allOf/anyOf/oneOf/not branches carry value validations over the same fields and must
    not be closed, or they would reject the sibling fields the skeleton declares.
    """
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: strict_schema(v, f"{path}/{k}") for k, v in value.items()}
        elif key == "items":
            out[key] = strict_schema(value, f"{path}[]")
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = strict_schema(value, f"{path}{{}}")
        elif key in ("x-kubernetes-validations",):
            continue  # evaluated separately with CEL
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = out.get("anyOf", []) + [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        out["additionalProperties"] = False
    return out


@dataclass
class CrdVersion:
    crd_name: str
    source: str
    schema: dict
    _validator: object = None

    def validator(self):
        """JSON Schema validator of the strict schema, built on first use."""
        if self._validator is None:
            strict = strict_schema(self.schema)
            strict.setdefault("properties", {})
            strict["properties"]["apiVersion"] = {"type": "string"}
            strict["properties"]["kind"] = {"type": "string"}
            strict["properties"]["metadata"] = OBJECT_META_SCHEMA
            strict["additionalProperties"] = False
            self._validator = jsonschema.Draft7Validator(strict)
        return self._validator


def load_crds(crd_dir: str) -> dict[tuple[str, str, str], CrdVersion]:
    files = sorted(
        glob.glob(os.path.join(crd_dir, "**", "*.yaml"), recursive=True)
        + glob.glob(os.path.join(crd_dir, "**", "*.yml"), recursive=True)
        + glob.glob(os.path.join(crd_dir, "**", "*.json"), recursive=True)
    )
    index: dict[tuple[str, str, str], CrdVersion] = {}
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for doc in yaml.load_all(fh, Loader=SafeLoader):
                for crd in _crd_items(doc):
                    spec = crd["spec"]
                    group, kind = spec["group"], spec["names"]["kind"]
                    for ver in spec.get("versions", []):
                        if not ver.get("served", False):
                            continue
                        schema = (ver.get("schema") or {}).get("openAPIV3Schema")
                        if schema is None:
                            continue
                        index[(group, ver["name"], kind)] = CrdVersion(crd["metadata"]["name"], path, schema)
    return index


def _crd_items(doc):
    if not isinstance(doc, dict):
        return
    if doc.get("kind") == "CustomResourceDefinition":
        yield doc
    elif doc.get("kind") == "List" or "items" in doc and doc.get("apiVersion") == "v1":
        for item in doc.get("items") or []:
            yield from _crd_items(item)


# ----------------------------------------------------------------------------- CEL


class UrlValue:
    def __init__(self, parsed):
        self.parsed = parsed


def _cel_url(value):
    text = str(value)
    parsed = urllib.parse.urlsplit(text)
    # Kubernetes' url(): an absolute URI or an absolute path, else an error.
    if not (parsed.scheme or text.startswith("/")):
        return celpy.CELEvalError(f"url: {text!r} is not an absolute URI or absolute path")
    return UrlValue(parsed)


def _url_part(fn):
    def inner(u):
        if not isinstance(u, UrlValue):
            return celpy.CELEvalError("url accessor applied to a non-URL")
        return ct.StringType(fn(u.parsed))

    return inner


def _cel_substring(s, start, end=None):
    text = str(s)
    start = int(start)
    end = len(text) if end is None else int(end)
    if start < 0 or end > len(text) or start > end:
        return celpy.CELEvalError(f"substring({start}, {end}) out of range for {text!r}")
    return ct.StringType(text[start:end])


def _cel_index_of(s, sub, offset=0):
    return ct.IntType(str(s).find(str(sub), int(offset)))


CEL_FUNCTIONS = {
    # cel-go strings extension, enabled in Kubernetes CRD validation.
    "substring": _cel_substring,
    "indexOf": _cel_index_of,
    "lowerAscii": lambda s: ct.StringType(str(s).lower()),
    "upperAscii": lambda s: ct.StringType(str(s).upper()),
    "trim": lambda s: ct.StringType(str(s).strip()),
    # Kubernetes URL library.
    "url": _cel_url,
    "isURL": lambda s: ct.BoolType(bool(urllib.parse.urlsplit(str(s)).scheme) or str(s).startswith("/")),
    "getScheme": _url_part(lambda p: p.scheme),
    "getHost": _url_part(lambda p: p.netloc.rsplit("@", 1)[-1]),
    "getHostname": _url_part(lambda p: p.hostname or ""),
    "getPort": _url_part(lambda p: str(p.port) if p.port else ""),
    "getEscapedPath": _url_part(lambda p: p.path),
    "getQuery": None,  # deliberately unsupported: returns a map of lists; report instead
}
CEL_FUNCTIONS = {k: v for k, v in CEL_FUNCTIONS.items() if v is not None}

GO_DURATION = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))*$")


@dataclass
class CelStats:
    evaluated: int = 0
    passed: int = 0
    unevaluated: list = field(default_factory=list)


class CelRunner:
    def __init__(self):
        self.env = celpy.Environment()
        self.programs = {}

    def program(self, rule):
        if rule not in self.programs:
            self.programs[rule] = self.env.program(self.env.compile(rule), functions=CEL_FUNCTIONS)
        return self.programs[rule]

    def evaluate(self, rule, value):
        return self.program(rule).evaluate({"self": celpy.json_to_cel(value)})


def walk_cel(schema, value, path, runner, stats, errors):
    """Evaluate x-kubernetes-validations wherever the object has a value."""
    if value is None or not isinstance(schema, dict):
        return
    for validation in schema.get("x-kubernetes-validations") or []:
        rule = validation["rule"]
        if re.search(r"\boldSelf\b", rule):
            stats.unevaluated.append((path, rule, "transition rule (needs the old object)"))
            continue
        try:
            result = runner.evaluate(rule, value)
        except celpy.CELEvalError as exc:
            result = exc  # judged below: a rule that errors rejects the object, as in Kubernetes
        except Exception as exc:  # a failure inside cel-python itself
            stats.unevaluated.append((path, rule, f"cel-python: {type(exc).__name__}: {exc}"[:300]))
            continue
        if isinstance(result, celpy.CELEvalError):
            msg = str(result.args[0]) if result.args else str(result)
            if "undeclared reference" in msg or "no such overload" in msg.lower():
                stats.unevaluated.append((path, rule, f"unsupported in cel-python: {msg[:120]}"))
                continue
            errors.append(f"{path}: CEL rule {rule!r} failed to evaluate: {msg[:200]}")
            stats.evaluated += 1
            continue
        stats.evaluated += 1
        if bool(result):
            stats.passed += 1
        else:
            message = validation.get("message") or f"failed rule: {rule}"
            errors.append(f"{path}: {message} (CEL: {rule})")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                walk_cel(sub, value[key], f"{path}.{key}", runner, stats, errors)
        add = schema.get("additionalProperties")
        if isinstance(add, dict):
            known = set((schema.get("properties") or {}).keys())
            for key, sub_value in value.items():
                if key not in known:
                    walk_cel(add, sub_value, f"{path}[{key!r}]", runner, stats, errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            walk_cel(schema["items"], item, f"{path}[{i}]", runner, stats, errors)


def check_durations(schema, value, path, errors):
    """Kubernetes rejects `duration`-format strings Go cannot parse; JSON Schema ignores the format."""
    if value is None or not isinstance(schema, dict):
        return
    if schema.get("format") == "duration" and isinstance(value, str) and not GO_DURATION.match(value):
        errors.append(f"{path}: {value!r} is not a duration")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                check_durations(sub, value[key], f"{path}.{key}", errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            check_durations(schema["items"], item, f"{path}[{i}]", errors)


# ------------------------------------------------------------------------------ main


def iter_docs(paths):
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for index, doc in enumerate(yaml.load_all(fh, Loader=SafeLoader)):
                if doc is not None:
                    yield path, index, doc


def validate(paths, crd_dir, rejected=None):
    """Errors of every custom resource in `paths`; `rejected`, when given, collects the resources that had a CRD
    and failed against it (for --expect-invalid)."""
    crds = load_crds(crd_dir)
    if not crds:
        return [f"no CustomResourceDefinitions found under {crd_dir}"], CelStats(), 0
    runner = CelRunner()
    stats = CelStats()
    errors: list[str] = []
    checked = 0
    for path, index, doc in iter_docs(paths):
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        if not api_version or not kind:
            errors.append(f"{path}#{index}: missing apiVersion or kind")
            continue
        if is_builtin(api_version):
            continue
        name = (doc.get("metadata") or {}).get("name", "?")
        where = f"{path}#{index} {kind}/{name}"
        group, _, version = api_version.rpartition("/")
        crd = crds.get((group, version, kind))
        if crd is None:
            errors.append(f"{where}: no served CRD for {api_version} {kind} in {crd_dir}")
            continue
        checked += 1
        before = len(errors)
        for err in sorted(crd.validator().iter_errors(doc), key=lambda e: list(e.absolute_path)):
            loc = ".".join(str(p) for p in err.absolute_path) or "<root>"
            errors.append(f"{where}: {loc}: {err.message}")
        check_durations(crd.schema, doc, where, errors)
        walk_cel(crd.schema, doc, where, runner, stats, errors)
        if rejected is not None and len(errors) > before:
            rejected.add(where)
    return errors, stats, checked


def expect_invalid(paths, crd_dir):
    """The negative check: every custom resource in `paths` is a known-bad one, and each must be rejected by its
    CRD. A resource without a CRD does not count as rejected: the point is that the CRDs catch the fault."""
    rejected: set[str] = set()
    errors, _, _ = validate(paths, crd_dir, rejected)
    wheres = [f"{p}#{i} {d.get('kind')}/{(d.get('metadata') or {}).get('name', '?')}"
              for p, i, d in iter_docs(paths) if not is_builtin(d.get("apiVersion", ""))]
    accepted = [w for w in wheres if w not in rejected]
    for err in errors:
        print(f"  rejected as expected: {err}")
    for where in accepted:
        print(f"FAIL {where}: a known-bad resource was not rejected by a CRD in {crd_dir}")
    print(f"validate_crs --expect-invalid: {len(wheres) - len(accepted)} of {len(wheres)} known-bad resources rejected")
    return 1 if accepted or not wheres else 0


CEL_MACROS = {"has", "all", "exists", "exists_one", "map", "filter"}


def audit_cel(crd_dir):
    """List every CEL rule in the CRDs and whether this validator can evaluate it."""
    runner = CelRunner()
    known = set(CEL_MACROS) | set(CEL_FUNCTIONS) | set(celpy.evaluation.base_functions)
    rules = {}

    def walk(node, where):
        if isinstance(node, dict):
            for v in node.get("x-kubernetes-validations") or []:
                rules.setdefault(v["rule"], set()).add(where)
            for value in node.values():
                walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for (group, version, kind), crd in sorted(load_crds(crd_dir).items()):
        walk(crd.schema, f"{kind}.{group}/{version}")
    unsupported = 0
    for rule, kinds in sorted(rules.items()):
        reason = ""
        if re.search(r"\boldSelf\b", rule):
            reason = "transition rule (needs the old object)"
        else:
            try:
                runner.program(rule)
            except Exception as exc:
                reason = f"does not compile in cel-python: {exc}"
            called = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", rule))
            missing = sorted(called - known)
            if missing and not reason:
                reason = "functions not available: " + ", ".join(missing)
        if reason:
            unsupported += 1
            print(f"NOT EVALUATED ({reason}): {rule!r} in {', '.join(sorted(kinds))}")
    print(f"audit: {len(rules)} distinct CEL rules in {crd_dir}; {len(rules) - unsupported} evaluable, {unsupported} not")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crd-dir", required=True)
    parser.add_argument("--report-unevaluated", action="store_true", help="list CEL rules that were not evaluated")
    parser.add_argument("--audit-cel", action="store_true", help="list the CRDs' CEL rules this tool cannot evaluate")
    parser.add_argument("--expect-invalid", action="store_true",
                        help="negative check: every custom resource in FILE is known-bad and must be rejected")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.crd_dir):
        print(f"validate_crs: CRD directory {args.crd_dir} does not exist", file=sys.stderr)
        return 2
    if args.audit_cel:
        return audit_cel(args.crd_dir)
    if not args.files:
        parser.error("no files to validate")
    if args.expect_invalid:
        return expect_invalid(args.files, args.crd_dir)
    errors, stats, checked = validate(args.files, args.crd_dir)
    for err in errors:
        print(f"FAIL {err}")
    print(
        f"validate_crs: {checked} custom resources checked against CRDs in {args.crd_dir}; "
        f"CEL rules evaluated {stats.evaluated} (passed {stats.passed}), not evaluated {len(stats.unevaluated)}"
    )
    if args.report_unevaluated or stats.unevaluated:
        for path, rule, why in sorted(set(stats.unevaluated)):
            print(f"  CEL not evaluated at {path}: {rule!r}: {why}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
