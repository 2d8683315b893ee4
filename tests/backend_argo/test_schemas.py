"""The strict validators of schemas.py: a valid document of each kind passes, a misspelled key
fails naming its path (kubeconform --strict), and every example's emitted documents pass."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from backend_argo import schemas

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent.name for p in (REPO / "examples").glob("*/pipeline.yaml"))

WORKFLOW = yaml.safe_load("""
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: hello-, namespace: ml, labels: {a: b}}
spec:
  entrypoint: main
  serviceAccountName: runner
  podGC: {strategy: OnPodSuccess}
  ttlStrategy: {secondsAfterSuccess: 60}
  arguments:
    parameters: [{name: who, value: world, enum: [world, you], description: whom to greet}]
  templates:
  - name: main
    parallelism: 2
    dag:
      tasks:
      - {name: a, template: say}
      - {name: b, template: say, depends: a, when: "'{{tasks.a.outputs.parameters.out}}' == 'x'",
         arguments: {parameters: [{name: msg, value: '{{item}}'}]}, withParam: '[1, 2]'}
  - name: say
    metadata: {annotations: {dagsmith.dev/task: say}}
    inputs: {parameters: [{name: msg, default: hi}]}
    outputs: {parameters: [{name: out, valueFrom: {path: /tmp/out, default: none}}]}
    retryStrategy: {limit: '2', retryPolicy: Always, backoff: {duration: 5s, factor: '2', maxDuration: 1m}}
    activeDeadlineSeconds: 3600
    container:
      image: busybox
      imagePullPolicy: IfNotPresent
      command: [echo]
      args: ['{{inputs.parameters.msg}}']
      env:
      - {name: A, value: '1'}
      - {name: B, valueFrom: {secretKeyRef: {name: s, key: k}}}
      resources: {requests: {cpu: 100m, memory: 1Gi}, limits: {cpu: 1}}
""")

PYTORCHJOB = yaml.safe_load("""
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: train}
spec:
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      restartPolicy: OnFailure
      template:
        spec:
          containers:
          - {name: pytorch, image: x, command: [dagsmith], args: [step], resources: {limits: {nvidia.com/gpu: 1}}}
    Worker:
      replicas: 2
      restartPolicy: OnFailure
      template:
        spec:
          containers: [{name: pytorch, image: x, command: [dagsmith]}]
""")

MPIJOB = yaml.safe_load("""
apiVersion: kubeflow.org/v1
kind: MPIJob
metadata: {name: train}
spec:
  slotsPerWorker: 1
  mpiReplicaSpecs:
    Launcher:
      replicas: 1
      template: {spec: {containers: [{name: mpi, image: x, command: [horovodrun]}]}}
    Worker:
      replicas: 2
      template: {spec: {containers: [{name: mpi, image: x}]}}
""")

SENSOR = yaml.safe_load("""
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: s}
spec:
  dependencies: [{name: d, eventSourceName: es, eventName: e}]
  triggers:
  - template:
      name: t
      argoWorkflow:
        operation: submit
        source:
          resource:
            apiVersion: argoproj.io/v1alpha1
            kind: Workflow
            metadata: {generateName: p-}
            spec: {workflowTemplateRef: {name: p}, arguments: {parameters: [{name: k, value: ''}]}}
    parameters:
    - src: {dependencyName: d, dataKey: body.key, value: ''}
      dest: spec.arguments.parameters.0.value
""")

EVENTSOURCE = yaml.safe_load("""
apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {name: es}
spec:
  sqs: {e: {queue: q, region: eu-west-1, jsonBody: true, waitTimeSeconds: 20}}
""")

CRON = {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "metadata": {"name": "c"},
        "spec": {"schedules": ["0 3 * * 1"], "timezone": "UTC", "concurrencyPolicy": "Forbid",
                 "startingDeadlineSeconds": 60, "workflowSpec": {"workflowTemplateRef": {"name": "p"}}}}


def template(kind: str) -> dict:
    if kind == "WorkflowTemplate":
        doc = copy.deepcopy(WORKFLOW)
        doc["kind"] = kind
        doc["metadata"] = {"name": "hello"}
        return doc
    return copy.deepcopy({"Workflow": WORKFLOW, "CronWorkflow": CRON, "Sensor": SENSOR, "EventSource": EVENTSOURCE,
                          "PyTorchJob": PYTORCHJOB, "MPIJob": MPIJOB, **PREREQUISITES,
                          "List": {"apiVersion": "v1", "kind": "List", "items": list(PREREQUISITES.values())}}[kind])


PREREQUISITES = {
    "EventBus": {"apiVersion": "argoproj.io/v1alpha1", "kind": "EventBus", "metadata": {"name": "default"}, "spec": {"jetstream": {"version": "latest"}}},
    "ServiceAccount": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"}},
    "Role": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
             "rules": [{"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create"]}]},
    "RoleBinding": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "r"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "s"}]},
}


@pytest.mark.parametrize("kind", schemas.KINDS)
def test_a_valid_document_of_each_kind_passes(kind):
    assert schemas.errors(template(kind)) == []


# (kind, where to put the misspelled key, the path the error must name)
MISSPELLED = [
    ("Workflow", lambda d: d["spec"].__setitem__("entryPoint", "main"), ".spec: "),
    ("Workflow", lambda d: d["spec"]["templates"][1]["container"].__setitem__("imagePulPolicy", "Always"), ".spec.templates[1].container: "),
    ("Workflow", lambda d: d["spec"]["templates"][0]["dag"]["tasks"][1].__setitem__("depend", "a"), ".spec.templates[0].dag.tasks[1]: "),
    ("Workflow", lambda d: d["spec"]["templates"][1]["outputs"]["parameters"][0]["valueFrom"].__setitem__("defualt", "x"),
     ".spec.templates[1].outputs.parameters[0].valueFrom: "),
    ("Workflow", lambda d: d["spec"]["templates"][1]["container"]["env"][1]["valueFrom"]["secretKeyRef"].__setitem__("keys", "k"),
     ".spec.templates[1].container.env[1].valueFrom.secretKeyRef: "),
    ("Workflow", lambda d: d["metadata"].__setitem__("label", {}), ".metadata: "),
    ("WorkflowTemplate", lambda d: d["spec"]["templates"][1]["retryStrategy"].__setitem__("limits", 2), ".spec.templates[1].retryStrategy: "),
    ("CronWorkflow", lambda d: d["spec"].__setitem__("schedul", "x"), ".spec: "),
    ("EventSource", lambda d: d["spec"]["sqs"]["e"].__setitem__("queueName", "q"), ".spec.sqs.e: "),
    ("Sensor", lambda d: d["spec"]["triggers"][0]["parameters"][0]["src"].__setitem__("datakey", "x"), ".spec.triggers[0].parameters[0].src: "),
    # the Workflow a Sensor submits is checked as a Workflow (argo-events types it as any object)
    ("Sensor", lambda d: d["spec"]["triggers"][0]["template"]["argoWorkflow"]["source"]["resource"]["spec"].__setitem__("workflowTemplate", {}),
     ".spec.triggers[0].template.argoWorkflow.source.resource.spec: "),
    ("PyTorchJob", lambda d: d["spec"]["pytorchReplicaSpecs"]["Worker"].__setitem__("replica", 2), ".spec.pytorchReplicaSpecs.Worker: "),
    ("PyTorchJob", lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0].__setitem__("cmd", []),
     ".spec.pytorchReplicaSpecs.Master.template.spec.containers[0]: "),
    ("MPIJob", lambda d: d["spec"].__setitem__("slotsPerWorkers", 1), ".spec: "),
]


@pytest.mark.parametrize("kind, mutate, path", MISSPELLED, ids=[f"{k}-{p.strip(': ')}" for k, _, p in MISSPELLED])
def test_a_misspelled_key_fails_naming_its_path(kind, mutate, path):
    doc = template(kind)
    mutate(doc)
    found = schemas.errors(doc)
    assert len(found) == 1 and found[0].startswith(path) and "was unexpected" in found[0], found
    with pytest.raises(schemas.SchemaError, match="was unexpected"):
        schemas.check(doc)


def test_wrong_types_and_values_fail():
    doc = template("Workflow")
    doc["spec"]["templates"][1]["container"]["command"] = "echo"  # a list of strings
    doc["spec"]["templates"][1]["activeDeadlineSeconds"] = True  # IntOrString: an integer or a string
    doc["spec"]["templates"][1]["container"]["resources"]["requests"]["cpu"] = {"n": 1}  # a Quantity
    del doc["spec"]["templates"][0]["dag"]["tasks"][0]["name"]  # required
    found = schemas.errors(doc)
    assert sorted({f.split(":")[0] for f in found}) == [  # the full CRD names the same paths
        ".spec.templates[0].dag.tasks[0]", ".spec.templates[1].activeDeadlineSeconds",
        ".spec.templates[1].container.command", ".spec.templates[1].container.resources.requests.cpu"], found
    job = template("PyTorchJob")
    job["apiVersion"] = "kubeflow.org/v2"  # another version is another schema
    assert [f.split(":")[0] for f in schemas.errors(job)] == [".apiVersion"]
    assert schemas.errors({"kind": "Pod"}) == [".kind: 'Pod' is not one of " + str(list(schemas.KINDS))]


def test_int_or_string_and_quantity_take_what_kubernetes_takes():
    """Widened from the Argo file's `string` to Kubernetes' own reading (schemas.py docstring)."""
    for deadline, cpu in (("3600", "1"), (3600, 1)):
        doc = template("Workflow")
        doc["spec"]["templates"][1]["activeDeadlineSeconds"] = deadline
        doc["spec"]["templates"][1]["container"]["resources"]["limits"]["cpu"] = cpu
        assert schemas.errors(doc) == []
    # a Workflow is a custom resource: its full CRD types a Quantity as an integer or a string
    # (x-kubernetes-int-or-string), so the API server refuses 0.5 there (dagsmith writes "500m")
    doc["spec"]["templates"][1]["container"]["resources"]["limits"]["cpu"] = 0.5
    (found,) = schemas.errors(doc)
    assert found.startswith(".spec.templates[1].container.resources.limits.cpu: 0.5") and found.endswith("(full CRD)"), found


def test_the_full_crds_limits_and_cel_rules_are_checked():
    doc = template("Workflow")
    task = doc["spec"]["templates"][0]["dag"]["tasks"][0]
    doc["spec"]["templates"][0]["dag"]["tasks"] = [dict(task, name=f"t{i}") for i in range(201)]
    (found,) = schemas.errors(doc)
    assert found.startswith(".spec.templates[0].dag.tasks: ") and "is too long (full CRD)" in found, found
    doc = template("Workflow")
    doc["spec"]["templates"][0]["dag"]["tasks"][0]["dependencies"] = ["x"]
    doc["spec"]["templates"][0]["dag"]["tasks"][0]["depends"] = "x"
    found = schemas.errors(doc)
    assert any(f.startswith(".spec.templates[0].dag.tasks[0]: ") and f.endswith("(full CRD rule)") for f in found), found


def test_a_resource_manifest_for_a_training_job_is_checked_against_its_crd():
    doc = template("Workflow")
    job = template("MPIJob")
    doc["spec"]["templates"].append({"name": "job", "resource": {"action": "create", "setOwnerReference": True,
                                     "manifest": yaml.safe_dump(job), "successCondition": "status.replicaStatuses.Launcher.succeeded > 0"}})
    assert schemas.errors(doc) == []
    job["spec"]["mpiReplicaSpecs"]["Launcher"]["replicaz"] = 1
    doc["spec"]["templates"][-1]["resource"]["manifest"] = yaml.safe_dump(job)
    (found,) = schemas.errors(doc)
    assert found.startswith(".spec.templates[2].resource.manifest.spec.mpiReplicaSpecs.Launcher: ") and "'replicaz'" in found


def test_validators_are_built_once():
    assert schemas.validator("Workflow") is schemas.validator("Workflow")


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_emits_strictly_valid_documents(example):
    from dagsmith.backends import get
    from dagsmith.compiler import compile_spec
    from dagsmith.spec import load_spec

    ir = compile_spec(load_spec(str(REPO / "examples" / example / "pipeline.yaml")))
    files = get("argo").emit(ir, ir.backends.get("argo", {}))
    texts = [text for name, text in sorted(files.items()) if name.endswith(".yaml")]
    assert any(name.endswith(".workflow-template.yaml") for name in files)
    documents = schemas.check_all(texts)
    assert {d["kind"] for d in documents} <= set(schemas.KINDS)
