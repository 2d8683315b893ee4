"""`on_new_data` as Argo Events (v1.9) resources: an EventSource that hears new data land and a
Sensor that submits the WorkflowTemplate for it (with the source and the event's time as workflow
parameters; never the new object's key, which no task reads: Argo substitutes `{{...}}` in a
workflow's arguments, so a key chosen by whoever can write to the bucket, with an unclosed `{{`,
would fail the run, and a `{{...}}` in it could name a live variable). `min_interval` is not the Sensor's business: the plan's
admission task decides in the workflow, with its state in the store, so it holds across Sensor
restarts.

What is emitted per source (also said by a compile warning and in docs/backends/argo.md):
  with `queue` (an SQS queue URL that receives the bucket's object-created notifications)
      -> an SQS event (jsonBody); the Sensor's data filter drops what is not an object-created
         record of the source's bucket and key (S3's `s3:TestEvent`, other buckets' notifications
         on a shared queue, `t.csv.bak` for a source `t.csv`)
  without one -> a webhook event at /<pipeline>/<source> on port 12000 (a POST with
      `Authorization: Bearer <token>`), reached through the Service the EventSource's
      `spec.service` makes Argo Events create: Argo Events cannot listen to an S3 bucket itself,
      so whatever sees the data land (an S3 -> SNS HTTP subscription, an EventBridge API
      destination, a CI job) must call it.

Both are written as plain data (no Hera: `hera.events` costs ~0.7 s to import, carries a second
copy of every Argo Workflows model, and disagrees with Argo Events' own schema in places); the
tests check them strictly against the vendored Argo Events v1.9.11 schema. Only the Sensor's
inline Workflow comes from Hera's Workflows models (workflow.submitted_workflow).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ... import naming
from .workflow import NAME_LIMIT, TRIGGER_AT, TRIGGER_SOURCE, Settings, dump, metadata, submitted_workflow
from ..plan import Plan, new_object

API_VERSION = "argoproj.io/v1alpha1"
WEBHOOK_PORT = "12000"
WEBHOOK_TOKEN_KEY = "token"  # the key of the webhook's Secret that holds its bearer token
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


def webhook_service(pipeline: str, namespace: str | None) -> str:
    """The Service Argo Events makes for an EventSource with `spec.service`:
    `<eventsource-name>-eventsource-svc` (argo-events v1.9.11 pkg/reconciler/eventsource/resource.go:437;
    none without `spec.service.ports`: resource.go:425-430)."""
    return f"{event_source_name(pipeline)}-eventsource-svc" + (f".{namespace}" if namespace else "")


def webhook_url(pipeline: str, source: str, namespace: str | None) -> str:
    return f"http://{webhook_service(pipeline, namespace)}:{WEBHOOK_PORT}{webhook_endpoint(pipeline, source)}"


def webhook_secret(pipeline: str, settings: Settings) -> str:
    """The Secret holding the webhook's bearer token (key `token`): backends.argo.webhook_secret,
    else <pipeline>-webhook-token."""
    return settings.webhook_secret or naming.k8s_name(f"{pipeline}-webhook-token", 253)


def event_source(plan: Plan, settings: Settings) -> dict:
    """The EventSource: SQS events for sources with a queue, webhook events (with a Service and a
    bearer token) for the others."""
    sqs, webhook = {}, {}
    name = event_source_name(plan.name)
    for trigger in plan.on_new_data:
        event = event_name(trigger["source"])
        queue = parse_queue(trigger["queue"]) if trigger.get("queue") else None
        if queue:
            sqs[event] = {"jsonBody": True, "queue": queue.name, "queueAccountId": queue.account, "region": queue.region, "waitTimeSeconds": 20}
        else:
            # authSecret: the server answers 401 unless `Authorization: Bearer <the Secret's value>`
            # (argo-events v1.9.11 pkg/eventsources/common/webhook/webhook.go:138-151)
            webhook[event] = {"endpoint": webhook_endpoint(plan.name, trigger["source"]), "method": "POST", "port": WEBHOOK_PORT,
                              "url": f"http://{webhook_service(plan.name, settings.namespace)}:{WEBHOOK_PORT}",
                              "authSecret": {"name": webhook_secret(plan.name, settings), "key": WEBHOOK_TOKEN_KEY}}
    spec: dict = {key: value for key, value in (("sqs", sqs), ("webhook", webhook)) if value}
    if webhook:  # without spec.service Argo Events creates no Service: the webhook is unreachable
        port = int(WEBHOOK_PORT)
        spec["service"] = {"ports": [{"name": "webhook", "port": port, "targetPort": port}]}
    spec["template"] = {"serviceAccountName": settings.event_source_account(plan.name)}
    return {"apiVersion": API_VERSION, "kind": "EventSource", "metadata": _meta(plan, name, settings), "spec": spec}


def sqs_filters(trigger: dict) -> list[dict]:
    """The Sensor's data filter for an SQS source: an object-created record (S3's `s3:TestEvent`
    has no Records and fails it), of the source's bucket, and when its uri is s3:// of its key:
    exactly the key of a source that is one object, else under its prefix (plan.new_object, as
    Step Functions' rule). Argo Events reads each string `value` as a Go regular expression that
    may match anywhere in the text at the gjson `path` (`regexp.Match`, so `^...$` for the whole
    text; RE2's `$` is the end of the text), a missing path fails the filter, and filters are ANDed
    (argo-events v1.9.11 pkg/sensors/dependencies/filter.go:219-228, 360-390)."""
    filters = [{"path": "body.Records.0.eventName", "type": "string", "value": ["^ObjectCreated:"]}]
    new = new_object(trigger.get("uri"))
    if new.bucket is not None:
        filters.append({"path": "body.Records.0.s3.bucket.name", "type": "string", "value": [f"^{re.escape(new.bucket)}$"]})
    if new.key:
        key = "^" + re.escape(new.key) + ("$" if new.exact else "")
        filters.append({"path": "body.Records.0.s3.object.key", "type": "string", "value": [key]})
    return filters


def sensor(plan: Plan, settings: Settings) -> dict:
    """The Sensor: one dependency and one trigger per source, run as its own service account
    (it may create Workflows; the workflow's pods may not)."""
    triggers, dependencies = [], []
    for trigger in plan.on_new_data:
        source = trigger["source"]
        name = event_name(source)
        dependency = {"name": name, "eventSourceName": event_source_name(plan.name), "eventName": name}
        if trigger.get("queue"):
            dependency["filters"] = {"data": sqs_filters(trigger)}
        dependencies.append(dependency)
        # parameters 0..1 in this order: the dest below indexes into them. Only the event's time is
        # taken from the event, its context's, which the EventSource sets from its own clock
        # (argo-events v1.9.11 pkg/eventsources/eventing.go:568 event.SetTime(time.Now())): never
        # the sender's data, which Argo would substitute `{{...}}` in
        workflow = dump(submitted_workflow(plan, [(TRIGGER_SOURCE, source), (TRIGGER_AT, "")]))
        triggers.append({
            "template": {"name": name, "conditions": name, "argoWorkflow": {"operation": "submit", "source": {"resource": workflow}}},
            "parameters": [
                {"src": {"dependencyName": name, "contextKey": "time"}, "dest": "spec.arguments.parameters.1.value"},
            ],
        })
    spec = {"dependencies": dependencies, "triggers": triggers, "template": {"serviceAccountName": settings.sensor_account(plan.name)}}
    return {"apiVersion": API_VERSION, "kind": "Sensor", "metadata": _meta(plan, sensor_name(plan.name), settings), "spec": spec}


def _meta(plan: Plan, name: str, settings: Settings) -> dict:
    return dump(metadata(plan.ir, name, settings))
