"""Argo Workflows backend: the execution plan as the resources a team `kubectl apply`s.

    <name>.workflow-template.yaml   the pipeline (argo submit --from workflowtemplate/<name>)
    <name>.cron-workflow.yaml       with `schedule`
    <name>.event-source.yaml        with `on_new_data` (Argo Events)
    <name>.sensor.yaml              with `on_new_data`: submits the WorkflowTemplate
    <name>.prerequisites.yaml       what a cluster admin applies first (access.py): service
                                    accounts, Roles, RoleBindings (least privilege), the EventBus
    <name>.ir.json                  the IR, which pods read from the store (`dagsmith deploy` puts it there)
    code/<sha256>.json              the spec folder's Python modules, when steps name them (backends/code.py;
                                    `dagsmith deploy` puts it in the store, pods get it as DAGSMITH_CODE)

How the plan maps to Argo is in workflow.py, the triggers in events.py, the deploy
through the Argo Server in deploy.py; this module checks what Argo cannot take (every
problem at once, at its spec position) and writes the files.
"""

from __future__ import annotations

import yaml

from ...ir import IR
from .. import code, kubernetes
from . import access, events, workflow
from .workflow import Settings
from ..plan import Plan, build_plan
from ..problems import Capabilities, Problem, check_capabilities, error, raise_errors, step_path, warning

OPTIONS = ("backends", "argo")
CAPABILITIES = Capabilities("argo", "Argo Workflows", runs_images=True, shared_disk=False, options_path=OPTIONS)
POD_GC = ("OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess")
OBJECT_LIMIT = 1024 * 1024  # etcd takes ~1.5 MB per object; Argo recommends staying under 1 MB
PARAMETER_LIMIT = 256 * 1024  # an output parameter travels in a pod annotation (256 KB)
PREREQUISITES = "prerequisites"
RANGE_BYTES = len('{"start":9999999999,"stop":9999999999},')  # one range in the listing, at most


class ArgoBackend:
    name = "argo"
    default_output = "build/argo"

    def plan(self, ir: IR, options: dict, output_dir: str | None = None, spec_dir: str | None = None, package=None) -> Plan:
        settings = Settings.of(options)
        return build_plan(ir, store=f"{{{{workflow.parameters.{workflow.STORE_PARAM}}}}}", max_ranges=settings.max_fanout_pods,
                          ir_uri=workflow.ir_location(settings, ir), output_dir=output_dir, spec_dir=spec_dir,
                          code_key=package.key if package else None)

    def emit(self, ir: IR, options: dict, output_dir: str | None = None, spec_dir: str | None = None) -> dict[str, str]:
        raise_errors(self.name, self.check(ir, options))
        package = code.package(ir, CAPABILITIES, options, spec_dir, output_dir)
        files = self.files(self.plan(ir, options, output_dir, spec_dir, package), Settings.of(options))
        self.check_size(files)
        if package:
            files[package.key] = package.text
        return files

    def check_code(self, ir: IR, options: dict, spec_dir: str | None) -> list[Problem]:
        """Referenced user code the pods will not get (backends/code.py): warnings."""
        return code.problems(ir, CAPABILITIES, options, spec_dir)

    def files(self, plan: Plan, settings: Settings) -> dict[str, str]:
        out = {f"{plan.name}.workflow-template.yaml": to_yaml(workflow.dump(workflow.workflow_template(plan, settings)))}
        if plan.schedule:
            out[f"{plan.name}.cron-workflow.yaml"] = to_yaml(workflow.dump(workflow.cron_workflow(plan, settings)))
        if plan.on_new_data:
            out[f"{plan.name}.event-source.yaml"] = to_yaml(events.event_source(plan, settings))
            out[f"{plan.name}.sensor.yaml"] = to_yaml(events.sensor(plan, settings))
        out[f"{plan.name}.{PREREQUISITES}.yaml"] = to_yaml(access.prerequisites(plan, settings))
        out[plan.ir_file] = plan.ir.dumps()
        return out

    def documents(self, files: dict[str, str]) -> list[dict]:
        """The Kubernetes resources among `files`, in the order they are applied (the
        prerequisites are a cluster admin's, applied with kubectl: the Argo Server takes none)."""
        order = ("workflow-template", "cron-workflow", "event-source", "sensor")
        names = sorted((n for n in files if n.endswith(".yaml") and n.rsplit(".", 2)[-2] in order), key=lambda n: order.index(n.rsplit(".", 2)[-2]))
        return [yaml.safe_load(files[name]) for name in names]

    @staticmethod
    def to_yaml(doc: dict) -> str:
        return to_yaml(doc)

    def deploy(self, ir: IR, options: dict, request, spec_dir: str | None = None) -> list[str]:
        from .deploy import deploy

        return deploy(self, ir, options, request, spec_dir)

    # --- what Argo cannot take ------------------------------------------------------------

    def check(self, ir: IR, options: dict) -> list[Problem]:
        settings = Settings.of(options)
        problems = check_capabilities(ir, CAPABILITIES, options.get("store"))
        problems += code.option_problems(CAPABILITIES, options)
        problems += kubernetes.check(ir, settings.namespace, OPTIONS)
        for key in ("service_account", "sensor_service_account", "event_source_service_account", "webhook_secret"):
            value = options.get(key)
            if value and workflow.naming.k8s_name(value, 253) != value:
                problems.append(error(OPTIONS + (key,), f"{value!r} is not a Kubernetes name (lowercase letters, digits, '-')"))
        if ir.triggers.get("on_new_data") and settings.sensor_account(ir.name) == settings.step_account(ir.name):
            problems.append(error(OPTIONS + ("sensor_service_account",), f"the Sensor and the workflow's pods both run as {settings.step_account(ir.name)!r}: "
                                  "the Sensor's account may create Workflows, which a step's pod must not: give them different accounts"))
        if settings.pod_gc not in POD_GC:
            problems.append(error(OPTIONS + ("pod_gc",), f"{settings.pod_gc!r} is not an Argo podGC strategy ({', '.join(POD_GC)})"))
        if settings.max_fanout_pods < 1 or settings.max_fanout_pods * RANGE_BYTES > PARAMETER_LIMIT:
            problems.append(error(OPTIONS + ("max_fanout_pods",), f"must be 1..{PARAMETER_LIMIT // RANGE_BYTES}: the list of ranges is an output "
                                  f"parameter, which Argo keeps under {PARAMETER_LIMIT // 1024} KB"))
        problems += _templated(ir, options)
        problems += _names(ir, options)
        problems += _item_limits(ir)
        problems += _triggers(ir, settings)
        return list(dict.fromkeys(problems))

    def check_size(self, files: dict[str, str]) -> None:
        """Each resource under OBJECT_LIMIT (what etcd and the Argo Server take)."""
        too_big = [(name, len(text.encode("utf-8"))) for name, text in files.items() if name.endswith(".yaml") and len(text.encode("utf-8")) > OBJECT_LIMIT]
        raise_errors(self.name, [error(("steps",), f"{name} would be {size:,} bytes: a Kubernetes object must stay under {OBJECT_LIMIT:,} "
                                             "(etcd's limit): split the pipeline, or make many steps one fan-out") for name, size in too_big])


def _templated(ir: IR, options: dict) -> list[Problem]:
    """Argo substitutes `{{...}}` in every field of a template it runs: a spec value holding one
    would be read as a variable (or fail the workflow), so it is refused here. (Parameters are
    not: a default holding '{{' stays in the IR, see workflow._parameters.)"""
    values = [(OPTIONS + (key,), options.get(key) or "") for key in ("store", "namespace", "service_account", "image_pull_policy")]
    values += [(step_path(step, "image"), step.image or "") for step in ir.steps]
    return [error(path, f"{value[:60]!r}: Argo reads '{{{{' in a workflow as a variable, so it cannot appear here")
            for path, value in values if "{{" in value]


def _names(ir: IR, options: dict) -> list[Problem]:
    """Generated names that would collide (each would overwrite the other) are errors."""
    plan = build_plan(ir, store="s3://x", max_ranges=1)
    seen: dict[str, str] = {}
    problems = []
    for name, what, task in workflow.generated_names(plan):
        if name in seen:
            path = step_path(task.step) if task is not None and task.step is not None else ("steps",)
            problems.append(error(path, f"{what} and {seen[name]} both become the Argo template {name!r}: rename one"))
        seen.setdefault(name, what)
    return problems


def _item_limits(ir: IR) -> list[Problem]:
    """The CRDs Argo 4 installs cap `spec.templates` and a DAG's `tasks` at 200 items each
    (tests/schemas/argo-workflows-v4.1.2-full-crd-*.yaml, maxItems: 200): the API server would
    refuse the WorkflowTemplate. One error, at the first step whose template is past the limit."""
    plan = build_plan(ir, store="s3://x", max_ranges=1)
    names = workflow.generated_names(plan)  # the entrypoint's DAG template first, then the tasks'
    if len(names) <= workflow.ITEMS_LIMIT and len(plan.tasks) <= workflow.ITEMS_LIMIT:
        return []
    task = next((t for _, _, t in names[workflow.ITEMS_LIMIT:] if t is not None and t.step is not None), None)
    path = step_path(task.step) if task is not None else ("steps",)
    return [error(path, f"the pipeline becomes {len(plan.tasks)} Argo DAG tasks in {len(names)} templates, and Argo 4 takes at most "
                        f"{workflow.ITEMS_LIMIT} of each (maxItems in its CRDs); this step is past the limit: make similar steps "
                        "one fan-out (a sweep or partitions), or split the pipeline")]


def _triggers(ir: IR, settings: Settings) -> list[Problem]:
    problems = []
    for index, trigger in enumerate(ir.triggers.get("on_new_data") or []):
        path = ("triggers", "on_new_data", index)
        if trigger.get("queue"):
            if events.parse_queue(trigger["queue"]) is None:
                problems.append(error(path + ("queue",), f"{trigger['queue'][:80]!r} is not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"))
        else:
            url = events.webhook_url(ir.name, trigger["source"], settings.namespace)
            secret = events.webhook_secret(ir.name, settings)
            problems.append(warning(path, f"no queue: Argo Events cannot listen to a bucket itself, so the EventSource gets a webhook at {url} "
                                          f"(POST {{\"key\": ...}} to it when data lands, with 'Authorization: Bearer <token>'; the token is key "
                                          f"'{events.WEBHOOK_TOKEN_KEY}' of the Secret '{secret}', which you create: kubectl create secret generic "
                                          f"{secret} --from-literal={events.WEBHOOK_TOKEN_KEY}=$(openssl rand -hex 32)); to start runs from the bucket's own "
                                          "notifications, set queue: an SQS queue URL that receives them"))
    return problems


_FIRST = ("apiVersion", "kind", "name", "metadata", "spec")  # then the rest, alphabetical


def _ordered(value):
    """Kubernetes' usual reading order: apiVersion, kind, metadata, spec; a name before what it
    names; everything else sorted (the models' own order is alphabetical anyway)."""
    if isinstance(value, dict):
        keys = [k for k in _FIRST if k in value] + sorted(k for k in value if k not in _FIRST)
        return {k: _ordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, text: str):
    # `'{{tasks.gate...}}' == 'succeeded'` reads better in double quotes than with '' escapes
    style = '"' if "'" in text and '"' not in text and "\n" not in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(doc: dict) -> str:
    """Block YAML, one field per line, no line folding; strings quoted only when YAML needs it."""
    return yaml.dump(_ordered(doc), Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)
