"""Strict validation of what the Argo backend emits, against the upstream schemas in
tests/schemas/ (copied from the upstream projects; see its README.md):

- Workflow, WorkflowTemplate, CronWorkflow: argo-workflows-v4.0.5.schema.json (what Hera 7.1
  models), AND the full CRDs Argo 4 installs (argo-workflows-v4.1.2-full-crd-*.yaml, the API
  server's own check): their openAPIV3Schema with its limits (`maxItems: 200` on templates and
  DAG tasks, ...) and every `x-kubernetes-validations` CEL rule, evaluated with cel-python (rules
  on `oldSelf`, which only apply to updates, are not evaluated: the tests only create)
- EventSource, Sensor, EventBus: argo-events-v1.9.11.schema.json
- the prerequisites (a `v1 List` of ServiceAccount, Role, RoleBinding, EventBus): each item by its
  kind, the Kubernetes types from the definitions the argo-events file carries (io.k8s.api.*), and
  its apiVersion must be the one Kubernetes serves that kind at (v1, rbac.authorization.k8s.io/v1)
- PyTorchJob, MPIJob (kubeflow.org/v1): the training operator's CRDs, openAPIV3Schema

"Strict" is kubeconform's `--strict`: the Argo schemas do not forbid unknown fields, so before
validating, every object schema that lists `properties` and says nothing about
`additionalProperties` gets `additionalProperties: false`: a misspelled key fails. In a CRD, a
node marked `x-kubernetes-preserve-unknown-fields: true` keeps unknown fields (that is what the
API server does with it).

Two Kubernetes types are declared narrower in the Argo Workflows file than the API server reads
them: `io.k8s.apimachinery.pkg.util.intstr.IntOrString` is `{"type": "string"}` there, but
Kubernetes (and the argo-events file of the same project) reads an integer or a string; and
`io.k8s.apimachinery.pkg.api.resource.Quantity` is `{"type": "string"}`, but the API server reads
`cpu: 1` as well as `cpu: "1"`. Both are widened to what Kubernetes accepts, and no further: a
boolean or an object still fails there. Nothing else is changed.

Validators are built once per kind (a few ms per check afterwards) and cached.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"  # vendored, with provenance: tests/schemas/README.md
WORKFLOWS_FILE = "argo-workflows-v4.0.5.schema.json"
EVENTS_FILE = "argo-events-v1.9.11.schema.json"
CRD_FILES = {"PyTorchJob": "kubeflow-pytorchjob-v1.9.0.crd.yaml", "MPIJob": "kubeflow-mpijob-v1.9.0.crd.yaml"}
FULL_CRD_FILES = {"Workflow": "argo-workflows-v4.1.2-full-crd-workflows.yaml",
                  "WorkflowTemplate": "argo-workflows-v4.1.2-full-crd-workflowtemplates.yaml",
                  "CronWorkflow": "argo-workflows-v4.1.2-full-crd-cronworkflows.yaml"}

ARGO_KINDS = {  # kind -> (schema file, definition)
    "Workflow": (WORKFLOWS_FILE, "io.argoproj.workflow.v1alpha1.Workflow"),
    "WorkflowTemplate": (WORKFLOWS_FILE, "io.argoproj.workflow.v1alpha1.WorkflowTemplate"),
    "CronWorkflow": (WORKFLOWS_FILE, "io.argoproj.workflow.v1alpha1.CronWorkflow"),
    "EventSource": (EVENTS_FILE, "io.argoproj.events.v1alpha1.EventSource"),
    "Sensor": (EVENTS_FILE, "io.argoproj.events.v1alpha1.Sensor"),
    "EventBus": (EVENTS_FILE, "io.argoproj.events.v1alpha1.EventBus"),
    "ServiceAccount": (EVENTS_FILE, "io.k8s.api.core.v1.ServiceAccount"),
    "Role": (EVENTS_FILE, "io.k8s.api.rbac.v1.Role"),
    "RoleBinding": (EVENTS_FILE, "io.k8s.api.rbac.v1.RoleBinding"),
}
# the group/version the API server serves each kind at (a Role under another apiVersion is not one)
API_VERSIONS = {"ServiceAccount": "v1", "Role": "rbac.authorization.k8s.io/v1", "RoleBinding": "rbac.authorization.k8s.io/v1",
                "EventBus": "argoproj.io/v1alpha1", "EventSource": "argoproj.io/v1alpha1", "Sensor": "argoproj.io/v1alpha1",
                "Workflow": "argoproj.io/v1alpha1", "WorkflowTemplate": "argoproj.io/v1alpha1", "CronWorkflow": "argoproj.io/v1alpha1"}
KINDS = (*ARGO_KINDS, *CRD_FILES, "List")

# What the Kubernetes API server accepts for these two types (see the module docstring)
K8S_WIDENED = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": ["integer", "string"], "format": "int-or-string"},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": ["string", "number"]},
}


class SchemaError(AssertionError):
    """A document the schema rejects; the message lists every error with its path."""


def strict(node, *, crd: bool = False):
    """A copy of the schema `node` in which every object schema with `properties` and no
    `additionalProperties` of its own forbids unknown keys (kubeconform --strict)."""
    if isinstance(node, list):
        return [strict(child, crd=crd) for child in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value, crd=crd) if key not in ("enum", "const", "default", "example") else value
           for key, value in node.items()}
    if "properties" in node and isinstance(node["properties"], dict) and "additionalProperties" not in node:
        if not (crd and node.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
    return out


@cache
def _schema_file(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


@cache
def _strict_document(name: str) -> dict:
    """The whole schema file, strict, without its top-level `oneOf` (one kind is chosen by `$ref`)."""
    document = copy.deepcopy(_schema_file(name))
    document.pop("oneOf", None)
    document["definitions"] = {key: strict(value) for key, value in document["definitions"].items()}
    for key, value in K8S_WIDENED.items():
        if key in document["definitions"]:
            document["definitions"][key] = {**{k: v for k, v in document["definitions"][key].items() if k == "description"}, **value}
    return document


@cache
def validator(kind: str):
    """The strict validator of `kind` (built once)."""
    if kind in ARGO_KINDS:
        name, definition = ARGO_KINDS[kind]
        document = dict(_strict_document(name))
        document["$ref"] = f"#/definitions/{definition}"
        document.pop("type", None)
        cls = jsonschema.Draft202012Validator if "2020-12" in document.get("$schema", "") else jsonschema.Draft7Validator
        cls.check_schema(document)
        return cls(document)
    if kind in CRD_FILES:
        return jsonschema.Draft7Validator(_crd_schema(CRD_FILES[kind]))
    raise SchemaError(f"no schema for kind {kind!r} (known: {', '.join(KINDS)})")


@cache
def _crd_schema(file: str) -> dict:
    """A CRD's storage version's openAPIV3Schema, strict, routed by its apiVersion and kind."""
    crd = yaml.load((SCHEMAS / file).read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema = strict(version["schema"]["openAPIV3Schema"], crd=True)
    # the API server routes by apiVersion and kind: a document of another group/version/kind is not this one
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "spec"})
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


@cache
def full_crd_validator(kind: str):
    return jsonschema.Draft7Validator(_crd_schema(FULL_CRD_FILES[kind]))


@cache
def _cel_program(rule: str):
    import celpy

    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def cel_errors(schema: dict, value, path: str = "") -> list[str]:
    """Every `x-kubernetes-validations` rule of `schema` and its sub-schemas, evaluated on the
    matching part of `value` as `self` (the API server does the same on create). A rule naming
    `oldSelf` is a transition rule (updates only) and is skipped."""
    import celpy

    found = []
    for rule in schema.get("x-kubernetes-validations") or ():
        if "oldSelf" in rule["rule"]:
            continue
        try:
            holds = _cel_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as exc:
            found.append(f"{path or '(document)'}: CEL rule {rule['rule']!r} could not be evaluated: {exc}")
            continue
        if not bool(holds):
            found.append(f"{path or '(document)'}: {rule.get('message') or 'failed rule: ' + rule['rule']}")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, item in value.items():
            sub = properties.get(key, schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else None)
            if sub:
                found += cel_errors(sub, item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += cel_errors(schema["items"], item, f"{path}[{index}]")
    return found


def full_crd_errors(document: dict, kind: str) -> list[str]:
    """What the API server with Argo 4's full CRD would refuse: schema (with maxItems) and CEL rules."""
    found = [f"{_path(e)}: {e.message} (full CRD)" for e in full_crd_validator(kind).iter_errors(document)]
    return found + [f"{message} (full CRD rule)" for message in cel_errors(_crd_schema(FULL_CRD_FILES[kind]), document)]


def _path(error) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path) or "(document)"


def errors(document: dict, kind: str | None = None) -> list[str]:
    """Every error of `document` (of its own `kind` unless given) as 'path: message', sorted by
    path; embedded documents are checked too: the Workflow a Sensor submits, and the manifest of
    a resource template when it is a PyTorchJob or an MPIJob."""
    if not isinstance(document, dict):
        return [f"(document): not a mapping but {type(document).__name__}"]
    kind = kind or document.get("kind")
    if kind == "List":  # kubectl's List: each item is its own document
        if document.get("apiVersion") != "v1" or set(document) - {"apiVersion", "kind", "items", "metadata"} or not isinstance(document.get("items"), list):
            return [f"(document): a List is {{apiVersion: v1, kind: List, items: [...]}}, got keys {sorted(document)}"]
        return [f".items[{index}]{message}" for index, item in enumerate(document["items"]) for message in errors(item)]
    found = sorted(
        (f"{_path(e)}: {e.message}" for e in validator(kind).iter_errors(document)) if kind in KINDS
        else [f".kind: {kind!r} is not one of {list(KINDS)}"]
    )
    if kind in API_VERSIONS and document.get("apiVersion") != API_VERSIONS[kind]:
        found.append(f".apiVersion: {document.get('apiVersion')!r} is not {API_VERSIONS[kind]!r}, where Kubernetes serves {kind}")
    if kind == "Sensor":
        for index, trigger in enumerate((document.get("spec") or {}).get("triggers") or []):
            template = trigger.get("template") or {}
            for way in ("argoWorkflow", "k8s"):
                resource = ((template.get(way) or {}).get("source") or {}).get("resource")
                if isinstance(resource, dict):
                    prefix = f".spec.triggers[{index}].template.{way}.source.resource"
                    found += [prefix + message for message in errors(resource)]
    if kind in FULL_CRD_FILES:  # what both find is said once
        found += [e for e in full_crd_errors(document, kind) if e.rsplit(" (full CRD", 1)[0] not in found]
    if kind in ("Workflow", "WorkflowTemplate", "CronWorkflow"):
        spec = document.get("spec") or {}
        spec = spec.get("workflowSpec", spec) if kind == "CronWorkflow" else spec
        for index, template in enumerate(spec.get("templates") or []):
            manifest = (template.get("resource") or {}).get("manifest")
            if isinstance(manifest, str):
                try:
                    embedded = yaml.safe_load(manifest)
                except yaml.YAMLError as exc:
                    found.append(f".spec.templates[{index}].resource.manifest: not YAML: {exc}")
                    continue
                if isinstance(embedded, dict) and embedded.get("kind") in CRD_FILES:
                    prefix = f".spec.templates[{index}].resource.manifest"
                    found += [prefix + message for message in errors(embedded)]
    return found


def check(document: dict, kind: str | None = None) -> None:
    """Raise SchemaError listing every error, if any."""
    found = errors(document, kind)
    if found:
        name = (document.get("metadata") or {}).get("name") if isinstance(document, dict) else None
        raise SchemaError(f"{kind or document.get('kind')} {name!r} is not valid:\n  " + "\n  ".join(found))


def check_all(texts) -> list[dict]:
    """Parse each YAML text (one document each, as the backend writes them) and check it; the
    parsed documents."""
    documents = [yaml.safe_load(text) for text in texts]
    for document in documents:
        check(document)
    return documents
