"""`on_new_data` as Argo Events resources: an EventSource that hears new data land and a Sensor
that submits the WorkflowTemplate for it (with the source, the event's time and the new object's
key as workflow parameters). `min_interval` is not the Sensor's business: the plan's admission
task decides in the workflow, with its state in the store, so it holds across Sensor restarts.

What is emitted per source (also said by a compile warning and in docs/backends/argo.md):
  with `queue` (an SQS queue URL that receives the bucket's object-created notifications)
      -> an SQS event (jsonBody), the key read from the S3 notification (Records[0].s3.object.key)
  without one -> a webhook event at /<pipeline>/<source> on port 12000 (POST {"key": ...}): Argo
      Events cannot listen to an S3 bucket itself, so whatever sees the data land (an S3 → SNS
      HTTP subscription, an EventBridge API destination, a CI job) must call it.

Hera's models build both (imported only when a spec has on_new_data: they cost ~0.3 s to
import); only the Sensor's inline Workflow (`source.resource`, which Argo Events
takes as an object while Hera types it as `{value: <base64>}`) is put in after serialization.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ... import naming
from .workflow import NAME_LIMIT, TRIGGER_AT, TRIGGER_KEY, TRIGGER_SOURCE, Settings, dump, metadata, submitted_workflow
from ..plan import Plan

WEBHOOK_PORT = "12000"
# Hera's Argo Events models have no apiVersion/kind fields: they are added to the dumped data
KIND = {kind: {"apiVersion": "argoproj.io/v1alpha1", "kind": kind} for kind in ("EventSource", "Sensor")}
# https://sqs.REGION.amazonaws.com/ACCOUNT/NAME (also the legacy REGION.queue.amazonaws.com form)
_QUEUE_URL = re.compile(r"https://(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?/([0-9]{12})/([A-Za-z0-9_-]{1,80}(?:\.fifo)?)", re.ASCII)


@dataclass(frozen=True)
class Queue:
    region: str
    account: str
    name: str


def parse_queue(url: str) -> Queue | None:
    match = _QUEUE_URL.fullmatch(url)
    if not match:
        return None
    return Queue(match.group(1) or match.group(2), match.group(3), match.group(4))


def event_source_name(pipeline: str) -> str:
    return naming.k8s_name(pipeline, NAME_LIMIT)


def sensor_name(pipeline: str) -> str:
    return naming.k8s_name(pipeline, NAME_LIMIT)


def event_name(source: str) -> str:
    return naming.k8s_name(source)


def webhook_endpoint(pipeline: str, source: str) -> str:
    return f"/{naming.k8s_name(pipeline)}/{event_name(source)}"


def event_source(plan: Plan, settings: Settings) -> dict:
    """The EventSource as a dict: Hera types SQS's waitTimeSeconds as text and nests the webhook
    under `webhookContext`, where Argo Events takes an integer and the fields inline (its
    schema), so those two are written as data after the model's metadata."""
    from hera.events import models as ev

    sqs, webhook = {}, {}
    name = event_source_name(plan.name)
    for trigger in plan.on_new_data:
        event = event_name(trigger["source"])
        queue = parse_queue(trigger["queue"]) if trigger.get("queue") else None
        if queue:
            sqs[event] = {"jsonBody": True, "queue": queue.name, "queueAccountId": queue.account, "region": queue.region, "waitTimeSeconds": 20}
        else:
            # the Service Argo Events makes for an EventSource: <name>-eventsource-svc
            host = f"{name}-eventsource-svc" + (f".{settings.namespace}" if settings.namespace else "")
            webhook[event] = {"endpoint": webhook_endpoint(plan.name, trigger["source"]), "method": "POST", "port": WEBHOOK_PORT,
                              "url": f"http://{host}:{WEBHOOK_PORT}"}
    out = {**KIND["EventSource"], **dump(ev.EventSource(metadata=_meta(plan, name, settings)))}
    out["spec"] = {key: value for key, value in (("sqs", sqs), ("webhook", webhook)) if value}
    return out


def sensor(plan: Plan, settings: Settings) -> dict:
    """The Sensor as a dict (see the module's note on `source.resource`)."""
    from hera.events import models as ev

    triggers, workflows, dependencies = [], [], []
    for index, trigger in enumerate(plan.on_new_data):
        source = trigger["source"]
        name = event_name(source)
        dependencies.append(ev.EventDependency(name=name, event_source_name=event_source_name(plan.name), event_name=name))
        key = "body.Records.0.s3.object.key" if trigger.get("queue") else "body.key"
        triggers.append(ev.Trigger(
            template=ev.TriggerTemplate(
                name=name, conditions=name,
                argo_workflow=ev.ArgoWorkflowTrigger(operation="submit", source=ev.ArtifactLocation(resource=ev.K8SResource())),
            ),
            parameters=[
                ev.TriggerParameter(src=ev.TriggerParameterSource(dependency_name=name, context_key="time"), dest="spec.arguments.parameters.1.value"),
                ev.TriggerParameter(src=ev.TriggerParameterSource(dependency_name=name, data_key=key, value=""), dest="spec.arguments.parameters.2.value"),
            ],
        ))
        # parameters 0..2 in this order: the dests above index into them
        workflows.append(submitted_workflow(plan, [(TRIGGER_SOURCE, source), (TRIGGER_AT, ""), (TRIGGER_KEY, "")]))
    template = ev.Template(service_account_name=settings.service_account) if settings.service_account else None
    doc = ev.Sensor(metadata=_meta(plan, sensor_name(plan.name), settings),
                    spec=ev.SensorSpec(dependencies=dependencies, triggers=triggers, template=template))
    out = {**KIND["Sensor"], **dump(doc)}
    for trigger, workflow in zip(out["spec"]["triggers"], workflows):
        trigger["template"]["argoWorkflow"]["source"]["resource"] = dump(workflow)
    return out


def _meta(plan: Plan, name: str, settings: Settings):
    from hera.events.models.io.k8s.apimachinery.pkg.apis.meta.v1 import ObjectMeta

    meta = metadata(plan.ir, name, settings)
    return ObjectMeta(name=meta.name, namespace=meta.namespace, labels=meta.labels, annotations=meta.annotations)
