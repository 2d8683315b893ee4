"""The execution plan as Argo Workflows resources, built with Hera's typed models: a
WorkflowTemplate (the pipeline) and, for `schedule`, a CronWorkflow that submits it.

Mapping of the plan (docs/backends/argo.md):
  task                  -> a DAG task and a container template running its step command in the
                           step's image (`dagsmith step|ranges|admit`, the IR read from the store)
  upstream              -> `depends: "a && b"` (Argo: a.Succeeded || a.Skipped || a.Daemoned), so a
                           failed task leaves everything downstream Omitted and the workflow Failed;
                           `failFast: false`: independent branches still run after a failure, as on
                           the local runner, Airflow and Step Functions (Argo's default is true)
  fan-out               -> ONE task with `withParam` over the ranges its `dagsmith-ranges-*` task
                           writes as an output parameter; with max_parallel, a DAG template of that
                           one task with `parallelism`
  gate / admission      -> the command writes one word (`--status`) read as an output parameter;
                           every task of the scope runs `when` it is "succeeded" / "admit", so a
                           "no" leaves them Skipped and the workflow Succeeded; each such task also
                           `depends` on `<decider>.Succeeded` (and a fan-out on `<ranges>.Succeeded`),
                           so no `when`/`withParam` ever reads the output of a Skipped task (what Argo
                           does then differs by version: docs/backends/argo.md)
  retries, retry_delay, timeout -> retryStrategy (limit, policy Always, backoff), activeDeadlineSeconds
  run id / date / params -> {{workflow.name}}, the creation date in UTC (an expression: the controller
                           formats creationTimestamp.* in its own time zone), workflow parameters
                           (DAGSMITH_PARAM_<NAME>: Argo parameters are text, typed by the runtime)
  store                 -> the workflow parameter `dagsmith-store`; pods read the IR under it too, so
                           `-p dagsmith-store=...` moves the run's data and the IR it reads (and the
                           code package, DAGSMITH_CODE, when the spec folder's code is shipped)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .hera_models import models as m

from ... import naming
from ...paramtext import to_text
from ...runtime import environment as E
from .. import kubernetes
from ..plan import ADMIT_TASK, Plan, Task

API_VERSION = "argoproj.io/v1alpha1"
ENTRYPOINT = "main"
OUT = "/tmp/dagsmith"  # a pod's own folder for what its output parameters read
STATUS_PATH, RANGES_PATH = f"{OUT}/status", f"{OUT}/ranges.json"
NOT_RUN = "not-run"  # a decider's status when it wrote none
STORE_PARAM = "dagsmith-store"
TRIGGER_SOURCE, TRIGGER_AT = "dagsmith-trigger-source", "dagsmith-trigger-at"
TASK_ANNOTATION = "dagsmith.dev/task"  # which plan task a template runs (for people and tools)
MANAGED_BY = {"app.kubernetes.io/managed-by": "dagsmith"}
# The run date in UTC. `{{workflow.creationTimestamp.Y}}` etc. are formatted in the controller's
# local time zone (operator.go:640-642 formats CreationTimestamp.Time, which metav1.Time decodes
# into time.Local), so a controller outside UTC would date runs near midnight a day off. The
# creation time as Unix seconds (`.s`, operator.go:644) is zone-free; sprig's dateInZone formats it
# in UTC (expression tags: util/template/expression_template.go, sprig in util/expr/env/env.go:28).
# Double quotes: a training job's manifest is YAML text, where a single quote would be doubled.
RUN_DATE = '{{=sprig.dateInZone("2006-01-02", int(workflow.creationTimestamp.s), "UTC")}}'
SYNTHETIC_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {}}
ADMIT_DEADLINE = 300  # seconds for one admission decision (a hold exits at once)
NAME_LIMIT, CRON_NAME_LIMIT = 63, 52  # a CronWorkflow's runs append "-" and 10 digits
ITEMS_LIMIT = 200  # `spec.templates` and `dag.tasks` carry maxItems: 200 in the CRDs Argo 4 installs (manifests/base/crds/full)


@dataclass(frozen=True)
class Settings:
    """`backends.argo`, with the defaults applied."""

    namespace: str | None
    service_account: str | None
    store: str
    pod_gc: str
    ttl: dict  # seconds_after_success / _failure / _completion
    max_fanout_pods: int
    image_pull_policy: str | None
    sensor_service_account: str | None = None
    event_source_service_account: str | None = None
    webhook_secret: str | None = None

    @classmethod
    def of(cls, options: dict) -> "Settings":
        ttl = options.get("ttl") or {}
        return cls(
            namespace=options.get("namespace"),
            service_account=options.get("service_account"),
            store=(options.get("store") or "").rstrip("/"),
            pod_gc=options.get("pod_gc", "OnPodSuccess"),
            ttl={"seconds_after_success": ttl.get("after_success", 86400), "seconds_after_failure": ttl.get("after_failure", 7 * 86400),
                 "seconds_after_completion": ttl.get("after_completion")},
            max_fanout_pods=int(options.get("max_fanout_pods", 1000)),
            image_pull_policy=options.get("image_pull_policy"),
            sensor_service_account=options.get("sensor_service_account"),
            event_source_service_account=options.get("event_source_service_account"),
            webhook_secret=options.get("webhook_secret"),
        )

    # Three service accounts, each with only what it needs (access.py writes their Roles): the
    # workflow's pods must not be able to create Workflows, which the Sensor's can.
    def step_account(self, pipeline: str) -> str:
        return self.service_account or naming.k8s_name(f"{pipeline}-steps", 253)

    def sensor_account(self, pipeline: str) -> str:
        return self.sensor_service_account or naming.k8s_name(f"{pipeline}-sensor", 253)

    def event_source_account(self, pipeline: str) -> str:
        return self.event_source_service_account or naming.k8s_name(f"{pipeline}-eventsource", 253)


def template_name(pipeline: str) -> str:
    return naming.k8s_name(pipeline, NAME_LIMIT)


def cron_name(pipeline: str) -> str:
    return naming.k8s_name(pipeline, CRON_NAME_LIMIT)


def task_name(task_id: str) -> str:
    return naming.k8s_name(task_id)


def items_template_name(task_id: str) -> str:
    """The DAG template that bounds a fan-out's parallelism (only with max_parallel)."""
    return naming.k8s_name(f"{task_id}-items")


def generated_names(plan: Plan) -> list[tuple[str, str, Task | None]]:
    """(Argo name, what it names, its task) for every template of the WorkflowTemplate: they must differ."""
    out = [(ENTRYPOINT, "the DAG template", None)]
    for task in plan.tasks:
        out.append((task_name(task.id), f"task {task.id!r}", task))
        if _parallelism(task):
            out.append((items_template_name(task.id), f"the item template of {task.id!r}", task))
    return out


def ir_location(settings: Settings, plan_ir) -> str:
    """Where `dagsmith deploy` puts the IR: in the configured store, named by the spec's hash."""
    return f"{settings.store}/{ir_key(plan_ir)}"


def ir_key(plan_ir) -> str:
    return f"ir/{plan_ir.name}-{(plan_ir.pipeline.get('spec_hash') or '')[:12]}.ir.json"


def run_ir_location(plan_ir) -> str:
    """Where pods read the IR: under the run's store (the workflow parameter), so a run submitted
    with `-p dagsmith-store=...` reads the IR there, beside its data."""
    return f"{{{{workflow.parameters.{STORE_PARAM}}}}}/{ir_key(plan_ir)}"


# --- the WorkflowTemplate ----------------------------------------------------------------------


def workflow_template(plan: Plan, settings: Settings) -> m.WorkflowTemplate:
    ir = plan.ir
    templates = [m.Template(name=ENTRYPOINT, dag=m.DAGTemplate(tasks=[_dag_task(plan, task) for task in plan.tasks], fail_fast=False))]
    for task in plan.tasks:
        if _parallelism(task):
            templates.append(_items_template(task))
        templates.append(_task_template(plan, task, settings))
    spec = m.WorkflowSpec(
        entrypoint=ENTRYPOINT,
        arguments=m.Arguments(parameters=_parameters(plan, settings)),
        service_account_name=settings.step_account(ir.name),
        pod_gc=m.PodGC(strategy=settings.pod_gc),
        ttl_strategy=m.TTLStrategy(**{k: v for k, v in settings.ttl.items() if v is not None}),
        templates=templates,
    )
    return m.WorkflowTemplate(api_version=API_VERSION, kind="WorkflowTemplate", metadata=metadata(ir, template_name(ir.name), settings), spec=spec)


def cron_workflow(plan: Plan, settings: Settings) -> m.CronWorkflow:
    """Runs the WorkflowTemplate on `schedule` (UTC), one at a time (Airflow's max_active_runs=1)."""
    ir = plan.ir
    return m.CronWorkflow(
        api_version=API_VERSION, kind="CronWorkflow", metadata=metadata(ir, cron_name(ir.name), settings),
        spec=m.CronWorkflowSpec(
            schedules=[plan.schedule_written], timezone="UTC", concurrency_policy="Forbid",
            workflow_spec=m.WorkflowSpec(workflow_template_ref=m.WorkflowTemplateRef(name=template_name(ir.name))),
        ),
    )


def submitted_workflow(plan: Plan, parameters: list[tuple[str, str]]) -> m.Workflow:
    """A Workflow of the WorkflowTemplate with these arguments (what a Sensor submits)."""
    return m.Workflow(
        api_version=API_VERSION, kind="Workflow",
        metadata=m.ObjectMeta(generate_name=naming.k8s_name(plan.name, NAME_LIMIT - 6) + "-", labels=dict(MANAGED_BY)),
        spec=m.WorkflowSpec(
            workflow_template_ref=m.WorkflowTemplateRef(name=template_name(plan.name)),
            arguments=m.Arguments(parameters=[m.Parameter(name=name, value=value) for name, value in parameters]),
        ),
    )


# A spec's own text (descriptions) in an Argo resource. Argo's controller marshals a workflow's
# spec to JSON and substitutes every `{{...}}` in it, parameter descriptions included
# (workflow/controller/operator.go:4694-4706 substituteGlobalVariables -> util/template/replace.go:41-50,
# argo-workflows f016ad89, v4.1.0-rc2+80): util/template/template.go:15-31 parses the text with
# fasttemplate and the tags "{{" / "}}", which finds each tag as the FIRST "{{" (bytes.Index) up to
# the next "}}", and fails the whole text when a "{{" has no "}}" (valyala/fasttemplate v1.2.2
# template.go:250-262); an unknown tag is written back, a known one replaced
# (util/template/simple_template.go:17-54), `{{=...}}` evaluated (kind.go:22-29). So no "{{" of a
# spec may survive in any form: a ZERO WIDTH SPACE goes after each "{" followed by a "{" (or by a
# zero width space, so the text reads back exactly: tests/backend_argo/test_argo_text.py). The text
# looks the same and holds no tag, whatever surrounds it (in JSON it is a quoted string). Metadata
# is not substituted today, but the pipeline's description there gets the same treatment.
INERT_MARK = "\u200b"
_BRACE_BEFORE = re.compile("\\{(?=[{\u200b])")


def inert(text: str) -> str:
    """`text` with no "{{" left for Argo to read as a variable, looking the same."""
    return _BRACE_BEFORE.sub("{" + INERT_MARK, text)


def metadata(ir, name: str, settings: Settings) -> m.ObjectMeta:
    annotations = {"dagsmith.dev/spec-hash": ir.pipeline.get("spec_hash") or ""}
    if ir.pipeline.get("description"):
        annotations["workflows.argoproj.io/description"] = inert(ir.pipeline["description"])
    return m.ObjectMeta(name=name, namespace=settings.namespace, annotations=annotations,
                        labels={**MANAGED_BY, "dagsmith.dev/pipeline": naming.k8s_name(ir.name)})


def _parameters(plan: Plan, settings: Settings) -> list[m.Parameter]:
    out = []
    for p in plan.params:
        value = None if p.required else to_text(p.default)
        enum = [to_text(v) for v in p.enum] if p.enum else None
        description = p.description
        if (value and "{{" in value) or any("{{" in v for v in enum or ()):
            # Argo substitutes '{{' in a workflow's arguments: such a default stays in the IR
            # (the runtime reads this marker as "the spec's default"); the enum is checked there too
            value, enum = E.PARAM_SPEC_DEFAULT, None
            description = (description + " " if description else "") + "(default: the spec's, which Argo would substitute)"
        out.append(m.Parameter(name=p.name, value=value, description=inert(description) if description else None, enum=enum))
    out.append(m.Parameter(name=STORE_PARAM, value=settings.store, description="The run's artifact store (s3://bucket/prefix)."))
    if plan.on_new_data:
        out += [
            m.Parameter(name=TRIGGER_SOURCE, value="", description="on_new_data: the source whose new data started the run (set by the Sensor)."),
            m.Parameter(name=TRIGGER_AT, value="", description="on_new_data: when the data landed (set by the Sensor)."),
        ]
    return out


# --- the DAG -----------------------------------------------------------------------------------


def _dag_task(plan: Plan, task: Task) -> m.DAGTask:
    name = task_name(task.id)
    depends = _depends(plan, task)
    arguments = with_param = None
    template = name
    if task.maps_over:
        ranges = f"{{{{tasks.{task_name(task.maps_over)}.outputs.parameters.ranges}}}}"
        if _parallelism(task):
            template = items_template_name(task.id)
            arguments = m.Arguments(parameters=[m.Parameter(name="ranges", value=ranges)])
        else:
            with_param = ranges
            arguments = m.Arguments(parameters=[m.Parameter(name="item", value="{{item}}")])
    return m.DAGTask(name=name, template=template, depends=depends, when=_when(plan, task), with_param=with_param, arguments=arguments)


def _deciders(plan: Plan, task: Task) -> list[Task]:
    return [decider for decider in plan.tasks if task.id in decider.skips]


def _depends(plan: Plan, task: Task) -> str | None:
    """Its upstreams (bare: Succeeded or Skipped), and `X.Succeeded` for every task whose output
    it reads (the deciders of its `when`, the ranges of its `withParam`): when X was Skipped
    (an outer decider said no) the task is Omitted before its `when` is evaluated, so it never
    reads a Skipped task's output (v4.0.2-4.0.3 requeue such a task for ever; v4.0.4+ read '':
    workflow/controller/dag.go:706-722 at v4.0.5)."""
    read = [decider.id for decider in _deciders(plan, task)] + ([task.maps_over] if task.maps_over else [])
    terms = [task_name(up) + (".Succeeded" if up in read else "") for up in task.upstream]
    terms += [f"{task_name(up)}.Succeeded" for up in read if up not in task.upstream]
    return " && ".join(terms) or None


def _when(plan: Plan, task: Task) -> str | None:
    """Run only if every decider whose scope holds this task said yes (each is Succeeded by then:
    _depends)."""
    conditions = []
    for decider in _deciders(plan, task):
        yes = "admit" if decider.id == ADMIT_TASK else "succeeded"
        conditions.append(f"'{{{{tasks.{task_name(decider.id)}.outputs.parameters.status}}}}' == '{yes}'")
    return " && ".join(conditions) or None


def _parallelism(task: Task) -> int | None:
    if task.maps_over and task.step.fanout and task.step.fanout.max_parallel:
        return int(task.step.fanout.max_parallel)
    return None


def _items_template(task: Task) -> m.Template:
    """A fan-out under max_parallel: one task over the ranges, at most N pods at a time."""
    name = task_name(task.id)
    return m.Template(
        name=items_template_name(task.id), parallelism=_parallelism(task),
        inputs=m.Inputs(parameters=[m.Parameter(name="ranges")]),
        dag=m.DAGTemplate(tasks=[m.DAGTask(name=name, template=name, with_param="{{inputs.parameters.ranges}}",
                                           arguments=m.Arguments(parameters=[m.Parameter(name="item", value="{{item}}")]))]),
    )


# --- containers --------------------------------------------------------------------------------


def _task_template(plan: Plan, task: Task, settings: Settings) -> m.Template:
    step = task.step
    command, outputs = _command(plan, task)
    inputs = m.Inputs(parameters=[m.Parameter(name="item")]) if task.maps_over else None
    if task.kind == "step" and kubernetes.is_distributed(step):
        return _training_job_template(plan, task, settings, command, inputs)
    resources = kubernetes.pod_resources(step) if task.kind == "step" else SYNTHETIC_RESOURCES
    container = m.Container(
        image=_image(plan, task), image_pull_policy=settings.image_pull_policy,
        command=command[:1], args=command[1:], env=_env(plan, task), resources=_resources(resources),
    )
    return m.Template(
        name=task_name(task.id), metadata=m.Metadata(annotations={TASK_ANNOTATION: task.id}),
        inputs=inputs, outputs=m.Outputs(parameters=outputs) if outputs else None, container=container,
        retry_strategy=_retry(task, plan), active_deadline_seconds=_deadline(plan, task),
    )


def _training_job_template(plan: Plan, task: Task, settings: Settings, command: list[str], inputs) -> m.Template:
    """Distributed training: a `resource` template creating a Kubeflow PyTorchJob (torch) or
    MPIJob (horovod) whose pods each run the step command as one rank (the runtime forms the
    process group from the operator's environment); Argo waits for the job's own status. The
    job is named by Kubernetes (generateName: one per run and per item) and owned by the
    workflow, so it goes when the workflow does."""
    import yaml

    env = [dump(e) for e in _env(plan, task)]
    job = kubernetes.training_job(task.step, name="", image=_image(plan, task), argv=command, env=env, namespace=None)
    job["metadata"] = {"generateName": naming.k8s_name(task.id, 40) + "-", "labels": dict(MANAGED_BY)}
    success, failure = kubernetes.training_job_conditions(job["kind"])
    manifest = yaml.safe_dump(job, sort_keys=False, default_flow_style=False, width=1 << 16)
    return m.Template(
        name=task_name(task.id), metadata=m.Metadata(annotations={TASK_ANNOTATION: task.id}), inputs=inputs,
        resource=m.ResourceTemplate(action="create", manifest=manifest, set_owner_reference=True,
                                    success_condition=success, failure_condition=failure),
        retry_strategy=_retry(task), active_deadline_seconds=_deadline(plan, task),
    )


def _command(plan: Plan, task: Task) -> tuple[list[str], list[m.Parameter]]:
    """The task's command line and the output parameters it writes (gates and admission: one
    word at STATUS_PATH, exiting 0 either way; ranges: the JSON list at RANGES_PATH)."""
    ir = run_ir_location(plan.ir)
    if task.kind == "ranges":
        return task.command.argv(ir, outcome=RANGES_PATH), [_output("ranges", RANGES_PATH, "[]")]
    if task.decides:
        command = replace(task.command, skip_exit_code=None)  # a "no" is an outcome, not an exit code
        return command.argv(ir, status=STATUS_PATH), [_output("status", STATUS_PATH, NOT_RUN)]  # admit: holds by exit code (_retry)
    return task.command.argv(ir, item="{{inputs.parameters.item}}" if task.maps_over else None), []


def _output(name: str, path: str, default: str) -> m.Parameter:
    return m.Parameter(name=name, value_from=m.ValueFrom(path=path, default=default))


def _image(plan: Plan, task: Task) -> str | None:
    """A step's image; a synthetic task runs in its step's, the admission in the first step's
    (every step image has dagsmith in it)."""
    step = task.step or plan.ir.steps[0]
    return step.image


def _env(plan: Plan, task: Task) -> list[m.EnvVar]:
    env = [m.EnvVar(name=E.RUN_ID, value="{{workflow.name}}"), m.EnvVar(name=E.RUN_DATE, value=RUN_DATE)]
    env += [m.EnvVar(name=E.PARAM_PREFIX + p.name, value=f"{{{{workflow.parameters.{p.name}}}}}") for p in plan.params]
    if task.kind == "admit":
        trigger = '{"sources": ["{{workflow.parameters.%s}}"], "at": "{{workflow.parameters.%s}}"}' % (TRIGGER_SOURCE, TRIGGER_AT)
        env.append(m.EnvVar(name=E.TRIGGER, value=trigger))
    if task.step is not None and task.kind == "step":
        # the step's `env`: what Argo would not substitute ('{{') and Kubernetes would not expand
        # ('$') is in the spec; the runtime sets every value (references filled in) as the step starts
        env += [m.EnvVar(name=name, value=value) for name, value in kubernetes.pod_env(task.step, lambda value: "{{" not in value, plan.code).items()]
        env += [m.EnvVar(name=ref.env, value_from=m.EnvVarSource(secret_key_ref=m.SecretKeySelector(name=ref.secret, key=ref.key)))
                for ref in kubernetes.secret_refs(task.step)]
    return env


def _resources(resources: dict) -> m.ResourceRequirements | None:
    requests = {k: m.Quantity(v) for k, v in sorted(resources.get("requests", {}).items())}
    limits = {k: m.Quantity(v) for k, v in sorted(resources.get("limits", {}).items())}
    if not requests and not limits:
        return None
    return m.ResourceRequirements(requests=requests or None, limits=limits or None)


def _retry(task: Task, plan: Plan | None = None) -> m.RetryStrategy | None:
    if task.kind == "admit":
        return _admission_retry(plan)
    if not task.step or not task.step.retries:
        return None
    step = task.step
    return m.RetryStrategy(limit=_int_or_string(step.retries), retry_policy="Always",
                           backoff=m.Backoff(duration=f"{int(step.retry_delay)}s") if step.retry_delay else None)


def _admission_retry(plan: Plan) -> m.RetryStrategy:
    """A held run is held by retries, not in a pod: `dagsmith admit` decides and exits
    HOLD_EXIT_CODE, and the controller starts it again after a backoff (doubling from a
    sixtieth of the shortest interval, 1 s..60 s, up to a 24th of the longest, so a held run starts
    at most ~4% of its interval late), as long as the longest interval + 1 h. Nothing is kept in
    the pod, so an evicted pod (status Error) is retried too and loses nothing: the trigger is
    in the workflow's parameters, the state in the store. The expression is ANDed with the
    policy (Always) after each failed attempt; `lastRetry.exitCode` is the last attempt's exit
    code as text (argo-workflows v4.0.5 docs/retries.md:29-118; workflow/controller/operator.go:
    1025-1098 backoff and cap, 1141-1150 expression, 2050-2066 its variables)."""
    intervals = [seconds for seconds in plan.admission.intervals.values() if seconds] or [60]
    base = min(60, max(1, -(-min(intervals) // 60)))
    cap = min(3600, max(base, -(-max(intervals) // 24)))
    limit = -(-(max(intervals) + 3600) // cap) + 8  # the doublings up to the cap, then the interval + 1 h at the cap
    return m.RetryStrategy(
        limit=_int_or_string(limit), retry_policy="Always",
        expression=f'asInt(lastRetry.exitCode) == {E.HOLD_EXIT_CODE} || lastRetry.status == "Error"',
        backoff=m.Backoff(duration=f"{base}s", factor=_int_or_string(2), cap=f"{cap}s"),
    )


def _deadline(plan: Plan, task: Task) -> m.IntOrString | None:
    if task.kind == "admit":  # one decision: a read and a conditional write of the store
        return _int_or_string(ADMIT_DEADLINE)
    if task.kind == "step" and task.step.timeout:
        return _int_or_string(task.step.timeout)
    return None


def _int_or_string(number) -> m.IntOrString:
    """Argo's schema types IntOrString as a string (its Go type reads both): written as text."""
    return m.IntOrString(str(int(number)))


def dump(model) -> dict:
    """A Hera model as the plain data Kubernetes reads (field aliases, nothing unset)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")
