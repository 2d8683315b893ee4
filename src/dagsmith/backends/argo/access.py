"""What a cluster needs before the pipeline runs, least privilege, as ONE manifest a cluster
admin applies (`kubectl apply -f <name>.prerequisites.yaml`; a `v1 List`): the service accounts,
a Role and RoleBinding per account, and, with `on_new_data`, the Argo Events EventBus.

  <name>-steps        the workflow's pods: `workflowtaskresults` create/patch (how the v4
                      executor reports outputs: argo-workflows v4.0.5 docs/workflow-rbac.md:17-28);
                      with distributed training, the training jobs of its resource templates
                      (kubeflow.org pytorchjobs / mpijobs: create, get, delete). It can NOT create
                      Workflows.
  <name>-sensor       the Sensor: its argoWorkflow trigger runs `argo -n NS submit FILE`
                      (argo-events v1.9.11 pkg/sensors/triggers/argo-workflow/argo-workflow.go:160),
                      which reads the WorkflowTemplate (workflowtemplates get) and creates the
                      Workflow (workflows create, list).
  <name>-eventsource  the EventSource's pod: no Kubernetes API access (the webhook's token
                      Secret is mounted into its pod by the controller; SQS is an AWS permission:
                      sqs:GetQueueUrl, ReceiveMessage, DeleteMessage, through IRSA).
  EventBus `default`  what an EventSource and a Sensor use unless they name another
                      (argo-events v1.9.11 pkg/apis/events/v1alpha1/const.go:152), JetStream
                      version `latest` (a version of the controller's default configuration:
                      manifests/install.yaml:338).

A service account named in backends.argo (service_account, sensor_service_account,
event_source_service_account) is the user's own: it gets the Role binding, not a ServiceAccount.
"""

from __future__ import annotations

from ... import naming
from .. import kubernetes
from ..plan import Plan
from .workflow import MANAGED_BY, Settings

RBAC = "rbac.authorization.k8s.io/v1"
STEP_RULES = [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}]
TRAINING_RESOURCES = {"torch": "pytorchjobs", "horovod": "mpijobs"}
SENSOR_RULES = [
    {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create", "list"]},
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtemplates"], "verbs": ["get"]},
]
SQS_ACTIONS = ("sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage")


def training_resources(plan: Plan) -> list[str]:
    """The kubeflow.org resources the workflow's resource templates create."""
    found = set()
    for task in plan.tasks:
        if task.kind == "step" and kubernetes.is_distributed(task.step):
            found.add(TRAINING_RESOURCES[(task.step.config["distributed"].get("framework") or "torch")])
    return sorted(found)


def step_rules(plan: Plan) -> list[dict]:
    rules = [dict(rule) for rule in STEP_RULES]
    if training_resources(plan):
        rules.append({"apiGroups": ["kubeflow.org"], "resources": training_resources(plan), "verbs": ["create", "get", "delete"]})
    return rules


def prerequisites(plan: Plan, settings: Settings) -> dict:
    """The manifest (a `v1 List`) of everything above that this pipeline needs."""
    name = plan.name
    accounts = [(settings.step_account(name), settings.service_account is None, step_rules(plan))]
    if plan.on_new_data:
        accounts.append((settings.sensor_account(name), settings.sensor_service_account is None, SENSOR_RULES))
        accounts.append((settings.event_source_account(name), settings.event_source_service_account is None, None))
    items = []
    for account, ours, rules in accounts:
        if ours:
            items.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(account, settings)})
        if rules:
            items.append({"apiVersion": RBAC, "kind": "Role", "metadata": _meta(account, settings), "rules": rules})
            items.append({"apiVersion": RBAC, "kind": "RoleBinding", "metadata": _meta(account, settings),
                          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                          "subjects": [{"kind": "ServiceAccount", "name": account, **({"namespace": settings.namespace} if settings.namespace else {})}]})
    if plan.on_new_data:
        items.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "EventBus", "metadata": _meta("default", settings),
                      "spec": {"jetstream": {"version": "latest"}}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _meta(name: str, settings: Settings) -> dict:
    return {"name": naming.k8s_name(name, 253), "labels": dict(MANAGED_BY),
            **({"namespace": settings.namespace} if settings.namespace else {})}
