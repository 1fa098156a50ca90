"""Validate rendered Kubernetes manifests offline, one line per document.

Built-in kinds go through kubernetes-validate's strict schemas for a pinned Kubernetes version
(unknown fields rejected). Custom resources go through the openAPIV3Schema of their CRD vendored in
crds/, made strict: every object schema that lists `properties` and does not preserve unknown
fields gets `additionalProperties: false`, as the API server prunes (drops) such fields silently.
Their metadata goes through the strict ObjectMeta schema. A KEDA prometheus trigger's metadata is a
free string map in the CRD, so its keys are checked against the ones KEDA's scaler reads.

usage: validate.py --crds DIR [--kubernetes-version 1.32.0] NAME=RENDERED.yaml ...
"""

import argparse
import copy
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import referencing
import yaml

# The metadata keys KEDA v2.17.3's prometheus scaler reads (pkg/scalers/prometheus_scaler.go:
# the `keda:"name=…, order=triggerMetadata"` tags, and authModes from
# pkg/scalers/authentication/authentication_types.go). Anything else is ignored by KEDA.
KEDA_PROMETHEUS_METADATA = {
    "serverAddress", "query", "queryParameters", "threshold", "activationThreshold", "namespace",
    "customHeaders", "ignoreNullValues", "unsafeSsl", "awsRegion", "timeout", "authModes",
}


def strict(node, in_combinator=False):
    """A copy of an OpenAPI v3 schema that refuses unknown fields (and honours `nullable`)."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties") and isinstance(value, dict):
            out[key] = {name: strict(schema) for name, schema in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            # Branches constrain the object they sit in; closing them would refuse its other fields.
            out[key] = [strict(branch, in_combinator=True) for branch in value]
        elif key == "not":
            out[key] = strict(value, in_combinator=True)
        else:
            out[key] = value  # defaults, enums, examples: values, not schemas
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in out and not in_combinator and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_crds(directory):
    """(group, version, kind) -> (strict schema, note) for every served version in DIR/*.yaml."""
    schemas = {}
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if not version.get("served", False):
                    continue
                schema = strict(version["schema"]["openAPIV3Schema"])
                # Metadata is checked on its own, against ObjectMeta.
                schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                note = "deprecated: " + version.get("deprecationWarning", "") if version.get("deprecated") else ""
                schemas[(spec["group"], version["name"], spec["names"]["kind"])] = (schema, f"{path.name}", note)
    if not schemas:
        raise SystemExit(f"validate.py: no CustomResourceDefinition found in {directory}")
    return schemas


def object_meta_validator(version):
    """A validator of metadata against the strict ObjectMeta of kubernetes-validate's schemas."""
    available = [v for v in kubernetes_validate.utils.all_versions()
                 if kubernetes_validate.utils.major_minor(v) <= kubernetes_validate.utils.major_minor(version)]
    if not available:
        raise SystemExit(f"validate.py: kubernetes-validate has no schemas for Kubernetes {version}")
    folder = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{available[-1]}-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry = referencing.Registry().with_resource(definitions["$id"], referencing.Resource.from_contents(definitions))
    schema = {"$ref": definitions["$id"] + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def where(error):
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "(top)"


def check_keda(doc):
    """Problems the ScaledObject CRD cannot see: misspelt prometheus trigger metadata keys."""
    problems = []
    for i, trigger in enumerate(doc.get("spec", {}).get("triggers", []) or []):
        if trigger.get("type") != "prometheus":
            continue
        for key in sorted(set(trigger.get("metadata", {})) - KEDA_PROMETHEUS_METADATA):
            problems.append(f"spec.triggers[{i}].metadata.{key}: not a prometheus scaler setting "
                            f"(KEDA reads {', '.join(sorted(KEDA_PROMETHEUS_METADATA))})")
    return problems


def validate_document(doc, crds, meta, version):
    """(how it was checked, [problems])."""
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    group, _, ver = api_version.rpartition("/")
    if (group, ver, kind) in crds:
        schema, source, note = crds[(group, ver, kind)]
        problems = [f"{where(e)}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
        problems += [f"metadata{'.' + where(e) if e.absolute_path else ''}: {e.message}"
                     for e in meta.iter_errors(doc.get("metadata", {}))]
        if kind == "ScaledObject":
            problems += check_keda(doc)
        how = f"CRD {source}" + (f" ({note})" if note else "")
        return how, problems
    if any(g == group and k == kind for g, _, k in crds):
        served = sorted(v for g, v, k in crds if g == group and k == kind)
        return "CRD", [f"apiVersion {api_version}: the vendored CRD serves only {', '.join(served)}"]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"kubernetes {version} strict", [f"{where(error)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return "none", [f"no schema for {kind} {api_version}: not a Kubernetes {version} kind, and no CRD in crds/ defines it"]
    return f"kubernetes {version} strict", []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crds", required=True, help="folder of vendored CustomResourceDefinitions")
    parser.add_argument("--kubernetes-version", default="1.32.0")
    parser.add_argument("rendered", nargs="+", metavar="NAME=FILE", help="a rendered kustomization and its output")
    args = parser.parse_args()
    crds = load_crds(args.crds)
    meta = object_meta_validator(args.kubernetes_version)
    failures = checked = 0
    for pair in args.rendered:
        name, _, file = pair.partition("=")
        file = file or name
        try:
            docs = [d for d in yaml.safe_load_all(pathlib.Path(file).read_text()) if d is not None]
        except (OSError, yaml.YAMLError) as error:
            print(f"FAIL  {name}: cannot read {file}: {error}")
            failures += 1
            continue
        for doc in docs:
            ident = f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
            how, problems = validate_document(copy.deepcopy(doc), crds, meta, args.kubernetes_version)
            checked += 1
            if problems:
                failures += 1
                for problem in problems:
                    print(f"FAIL  {name}  {ident}  [{how}]  {problem}")
            else:
                print(f"ok    {name}  {ident}  [{how}]")
    print(f"validate.py: {checked} documents, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
