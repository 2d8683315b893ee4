"""The state machine (Amazon States Language) of an execution plan, as a plain dict.

Shape (docs/backends/stepfunctions.md has the why):

    Run values        input {params?, run_date?, trigger?} -> $.run (defaults merged in)
    [Admission]       Lock (DynamoDB) -> Admit task -> Unlock -> hold: Wait, again | covered: Succeed "skipped"
    Layer 1..n        one Parallel per depth of the step graph, one branch per step:
                        Check <step>   a Choice on its upstream steps' states: any failed/not_run
                                       -> "not_run", any skipped/gated -> "skipped", else run
                        Run <step>     the task (ECS RunTask / Batch SubmitJob (AWS SDK) .waitForTaskToken,
                                       or SageMaker createTrainingJob.sync for distributed training)
                        List <step> -> Map <step>   a fan-out: its ranges, then an inline Map or a
                                       Distributed Map (ItemReader from S3) over them
                        Gate <step>    a Choice on the gate's outcome: "gated" or "succeeded"
                        Caught <step>  Catch: the step "failed" with its error
                      each branch ends with its step's state (a string); the layer's results are
                      at $.status.L<k>[i]
    Summary           $.steps: step id -> state; a failed step -> the Fail state naming it, a
                      gated run -> {"status": "gated", ...}, else {"status": "succeeded", ...}

Every value a task needs at run time comes in through the container's environment (JSONPath
`Value.$`), never pasted into a command line: commands are the plan's static argv.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from ... import naming
from ...ir import Step
from ...runtime import environment as E
from ...runtime.sources import connection_env
from ..plan import Plan, Task
from .callback import ITEM_ENV, SECRET_REFS_ENV, TOKEN_ENV

CONNECTION_SECRET = "dagsmith/conn/{}"  # the Secrets Manager name of connection NAME

CONTAINER = "dagsmith"  # the container's name in every task definition / job definition
WRAPPER = ["python", "-m", "dagsmith.backends.stepfunctions.callback"]
HEARTBEAT_SECONDS = 600  # the wrapper beats every 60 s; an image pull must fit in here too
INLINE_MAP_MAX = 40  # the inline Map's concurrency limit, and the most items it runs here
HISTORY_LIMIT = 25_000
MAX_DEFINITION_BYTES = 1_048_576
NAME_LIMIT = 80
# History events, counted on moto's interpreter (benchmarks/stepfunctions.py) and rounded up:
EVENTS_PER_TASK = 8  # entered, scheduled, started, submitted, succeeded/failed, exited (+ retries)
EVENTS_PER_BRANCH = 6  # the Choice and Pass states around a task
EVENTS_PER_LAYER = 6  # a Parallel's own events
EVENTS_PER_ITERATION = 2 + EVENTS_PER_TASK  # an inline Map iteration: started, succeeded + its task
EVENTS_FIXED = 46  # run values (the params written to the store), admission, summary
# The run's params are written once to the store ("Store run values") and every task reads them
# from there (DAGSMITH_PARAMS_URI): as a value they could outgrow ECS's 8,192-character overrides
# and SageMaker's 512-character environment values (docs/backends/stepfunctions.md, "Limits").
PARAMS_KEY = "runs/{}/stepfunctions/params.json"  # under the store; {} is the run id
# Batch has no optimized Wait for Callback ("AWS Batch: Request Response, Run a Job (.sync), Wait
# for Callback: Not supported": https://docs.aws.amazon.com/step-functions/latest/dg/integrate-optimized.html);
# the AWS SDK integration has it ("Over two hundred services: Request Response, Wait for Callback").
# It keeps the one callback contract of ECS (a gate's "skip", the ranges and the admission come back
# as the task's output; the heartbeat catches a job that dies without a word): docs/backends/
# stepfunctions.md, "Integration patterns".
BATCH_RESOURCE = "arn:aws:states:::aws-sdk:batch:submitJob.waitForTaskToken"
ECS_RESOURCE = "arn:aws:states:::ecs:runTask.waitForTaskToken"


class NameCollision(ValueError):
    pass


@dataclass
class Settings:
    compute: str  # "ecs" | "batch"
    inline_limit: int  # Map items up to which an inline Map runs
    ir_uri: str
    task_ref: dict  # task id -> the CloudFormation logical id of its task/job definition
    image_param: dict  # task id -> the template parameter holding its image (SageMaker)
    locking: bool = True  # admission behind a DynamoDB lock (the template has the table)
    names: dict = field(default_factory=dict)  # state name -> who took it (collision check)


def sub(name: str) -> str:
    """A CloudFormation Fn::Sub reference, resolved when the stack is deployed."""
    return "${" + name + "}"


def state_name(prefix: str, task_id: str) -> str:
    return naming.sfn_state_name(f"{prefix} {task_id}", NAME_LIMIT)


def map_label(task_id: str) -> str:
    """A Distributed Map's Label: at most 40 letters, digits, '-' and '_'."""
    text = re.sub(r"[^A-Za-z0-9_-]", "-", task_id)
    if len(text) <= 40:
        return text
    return text[:31] + "-" + hashlib.sha256(task_id.encode()).hexdigest()[:8]


def map_items_bound(plan: Plan, task: Task) -> int:
    """The most Map items (ranges) the fan-out of `task` can have in a run."""
    size = task.step.fanout.size
    return plan.max_ranges if size is None else max(1, min(size, plan.max_ranges))


def is_distributed(plan: Plan, task: Task, settings: Settings) -> bool:
    return map_items_bound(plan, task) > settings.inline_limit


def distributed_training(step: Step) -> bool:
    return step.kind == "train" and bool((step.config or {}).get("distributed")) and step.fanout is None


def history_bound(plan: Plan, settings: Settings) -> int:
    """An upper bound on the parent execution's history events (child executions of a
    Distributed Map keep their own histories: only the Map's own events count here)."""
    total = EVENTS_FIXED
    layers = layer_of(plan)
    total += EVENTS_PER_LAYER * (max(layers.values(), default=0) + 1)
    for task in plan.tasks:
        attempts = 1 + int(task.step.retries if task.step else 0)
        total += EVENTS_PER_BRANCH + EVENTS_PER_TASK * attempts
        if task.maps_over and not is_distributed(plan, task, settings):
            total += EVENTS_PER_ITERATION * attempts * map_items_bound(plan, task)
        elif task.maps_over:
            total += 2 * EVENTS_PER_TASK  # MapRunStarted / MapRunSucceeded and the Map's own
    return total


# --- the run environment ------------------------------------------------------------------


def environment(task: Task, *, token: bool, item: bool) -> list[dict]:
    """The container's run environment (runtime/environment.py), from the state's input."""
    env = [
        {"Name": E.RUN_ID, "Value.$": "$.run.id"},
        {"Name": E.RUN_DATE, "Value.$": "$.run.run_date"},
        {"Name": E.PARAMS_URI, "Value.$": params_uri()},
    ]
    if task.kind == "admit":
        env.append({"Name": E.TRIGGER, "Value.$": "States.JsonToString($.run.trigger)"})
    if token:
        env.append({"Name": TOKEN_ENV, "Value.$": "$$.Task.Token"})
    if item:
        env.append({"Name": ITEM_ENV, "Value.$": "$.item"})
    return env


def params_uri() -> str:
    """The JSONPath intrinsic naming this run's params object in the store."""
    return f"States.Format('s3://{sub('ArtifactBucket')}/{sub('StorePrefix')}/{PARAMS_KEY}', $.run.id)"


def store_params() -> dict:
    """The Task state writing the run's params to the store, once, before any task reads them."""
    return {
        "Type": "Task",
        "Comment": "the run's params, read by every task from the store (DAGSMITH_PARAMS_URI)",
        "Resource": "arn:aws:states:::aws-sdk:s3:putObject",
        "Parameters": {
            "Bucket": sub("ArtifactBucket"),
            "Key.$": f"States.Format('{sub('StorePrefix')}/{PARAMS_KEY}', $.run.id)",
            "Body.$": "States.JsonToString($.run.params)",
            "ContentType": "application/json",
        },
        "ResultPath": None,
        "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2.0}],
    }


def command(task: Task, settings: Settings, *, ranges_to_s3: bool = False) -> list[str]:
    return WRAPPER + (["--ranges-to-s3"] if ranges_to_s3 else []) + ["--"] + task.command.prefix(settings.ir_uri)


def retry_and_timeout(step: Step | None) -> dict:
    out: dict = {}
    if step is not None and step.retries > 0:
        out["Retry"] = [{"ErrorEquals": ["States.ALL"], "MaxAttempts": int(step.retries),
                         "IntervalSeconds": max(1, int(step.retry_delay)), "BackoffRate": 1.0}]
    timeout = int(step.timeout) if step is not None and step.timeout else None
    if timeout:
        out["TimeoutSeconds"] = timeout
    if timeout is None or timeout > HEARTBEAT_SECONDS:
        out["HeartbeatSeconds"] = HEARTBEAT_SECONDS
    return out


def container_task(task: Task, settings: Settings, *, item: bool = False, ranges_to_s3: bool = False) -> dict:
    """A Task state running the plan's command in the task's container, waiting for its callback."""
    argv = command(task, settings, ranges_to_s3=ranges_to_s3)
    env = environment(task, token=True, item=item)
    ref = sub(settings.task_ref[task.id])
    if settings.compute == "batch":
        state = {
            "Type": "Task",
            "Resource": BATCH_RESOURCE,
            "Parameters": {
                "JobName": naming.airflow_id(task.id, 128),
                "JobQueue": sub("JobQueue"),
                "JobDefinition": ref,
                "ContainerOverrides": {"Command": argv, "Environment": env},
            },
        }
    else:
        state = {
            "Type": "Task",
            "Resource": ECS_RESOURCE,
            "Parameters": {
                "Cluster": sub("Cluster"),
                "LaunchType": "FARGATE",
                "TaskDefinition": ref,
                "NetworkConfiguration": {"AwsvpcConfiguration": {
                    "Subnets.$": f"States.StringSplit('{sub('Subnets')}', ',')",
                    "SecurityGroups.$": f"States.StringSplit('{sub('SecurityGroups')}', ',')",
                    "AssignPublicIp": sub("AssignPublicIp"),
                }},
                "Overrides": {"ContainerOverrides": [{"Name": CONTAINER, "Command": argv, "Environment": env}]},
            },
        }
    state.update(retry_and_timeout(task.step if task.kind == "step" else None))
    return state


def secret_refs(step: Step) -> dict:
    """A step's secrets and connections as {environment variable: Secrets Manager secret name}."""
    refs = {name: name for name in step.secrets}
    refs.update({connection_env(c): CONNECTION_SECRET.format(c) for c in step.connections})
    return dict(sorted(refs.items()))


def training_environment(task: Task) -> dict:
    """The training job's Environment: the run's values (from the state's input), the step's own
    `env`, and its secrets and connections BY NAME in DAGSMITH_SECRET_REFS (SageMaker has no
    secret references in Environment: the callback wrapper fetches them from Secrets Manager when
    the container starts, so no secret value is ever written into the job's description)."""
    env = {item["Name"] + ".$": item["Value.$"] for item in environment(task, token=False, item=False)}
    env.update({str(k): str(v) for k, v in sorted((task.step.env or {}).items())})
    refs = secret_refs(task.step)
    if refs:
        env[SECRET_REFS_ENV] = json.dumps(refs, sort_keys=True, separators=(",", ":"))
    return env


def training_job(task: Task, settings: Settings) -> dict:
    """Distributed training: a SageMaker training job of `workers` instances, each running the
    step command in the step's image (the runtime forms the process group from SageMaker's
    cluster environment); `.sync` waits for the job, its status is the result."""
    step = task.step
    workers = int(step.config["distributed"].get("workers") or 1)
    env = training_environment(task)
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::sagemaker:createTrainingJob.sync",
        "Parameters": {
            # at most 63 characters: a short prefix and the execution-unique UUID
            "TrainingJobName.$": f"States.Format('{naming.k8s_name(step.id, 26)}-{{}}', States.UUID())",
            "RoleArn": sub("SageMakerRole.Arn"),
            "AlgorithmSpecification": {
                "TrainingImage": sub(settings.image_param[task.id]),
                "TrainingInputMode": "File",
                "ContainerEntrypoint": command(task, settings),
            },
            "ResourceConfig": {"InstanceCount": workers, "InstanceType": sub("TrainingInstanceType"), "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": int(step.timeout or 86_400)},
            "OutputDataConfig": {"S3OutputPath": f"s3://{sub('ArtifactBucket')}/{sub('StorePrefix')}/sagemaker/"},
            "Environment": env,
        },
    }
    state.update({k: v for k, v in retry_and_timeout(step).items() if k == "Retry"})
    return state


# --- the graph ----------------------------------------------------------------------------


def layer_of(plan: Plan) -> dict[str, int]:
    """IR step id -> its depth (longest path from a root): the Parallel layer it runs in."""
    depth: dict[str, int] = {}
    for step in plan.ir.steps:
        depth[step.id] = 1 + max((depth[up] for up in step.depends_on), default=-1)
    return depth


class Builder:
    def __init__(self, plan: Plan, settings: Settings):
        self.plan = plan
        self.settings = settings
        self.layers = layer_of(plan)
        self.position: dict[str, str] = {}  # step id -> JSONPath of its state

    def name(self, prefix: str, task_id: str) -> str:
        name = state_name(prefix, task_id)
        owner = (prefix, task_id)
        if self.settings.names.setdefault(name, owner) != owner:
            taken = self.settings.names[name]
            raise NameCollision(f"state names collide: {' '.join(taken)!r} and {prefix} {task_id!r} both become {name!r}")
        return name

    def fixed(self, name: str) -> str:
        """A state of the machine's own: names with a space, which no derived name has."""
        if self.settings.names.setdefault(name, ("", name)) != ("", name):
            raise NameCollision(f"state name {name!r} is taken")
        return name

    def definition(self) -> dict:
        plan = self.plan
        states: dict = {}
        start = self.fixed("Run values")
        states[start] = {
            "Type": "Pass",
            "Comment": "the run's values: input params, run_date, trigger over their defaults",
            "Parameters": {"defaults": {"params": {}, "trigger": {}}, "input.$": "$"},
            "Next": self.fixed("Check run date"),
        }
        states["Check run date"] = {
            "Type": "Choice",
            "Choices": [{"Variable": "$.input.run_date", "IsPresent": True, "Next": self.fixed("Run date from input")}],
            "Default": self.fixed("Run date from start time"),
        }
        first_layer = self.fixed("Layer 0") if plan.ir.steps else "Summary"
        after_values = self.fixed("Admission") if plan.admission else first_layer
        for name, date in (("Run date from input", "$.input.run_date"), ("Run date from start time", "$$.Execution.StartTime")):
            states[name] = {
                "Type": "Pass",
                "Parameters": {
                    "run": {
                        "id.$": "$$.Execution.Name",
                        "run_date.$": f"States.ArrayGetItem(States.StringSplit({date}, 'T'), 0)",
                        "merged.$": "States.JsonMerge($.defaults, $.input, false)",
                    },
                    "status": {},
                },
                "Next": self.fixed("Run values merged"),
            }
        states["Run values merged"] = {
            "Type": "Pass",
            "Parameters": {
                "run": {"id.$": "$.run.id", "run_date.$": "$.run.run_date", "params.$": "$.run.merged.params", "trigger.$": "$.run.merged.trigger"},
                "status": {},
            },
            "Next": self.fixed("Store run values"),
        }
        states["Store run values"] = {**store_params(), "Next": after_values}
        if plan.admission:
            states.update(self.admission(first_layer))
        depth = max(self.layers.values(), default=-1)
        for k in range(depth + 1):
            steps = [s for s in plan.ir.steps if self.layers[s.id] == k]
            name = f"Layer {k}"
            if k:
                self.fixed(name)
            for index, step in enumerate(steps):
                self.position[step.id] = f"$.status.L{k}[{index}]"
            states[name] = {
                "Type": "Parallel",
                "Comment": ", ".join(s.id for s in steps)[:200],
                "Branches": [self.branch(step) for step in steps],
                "ResultPath": f"$.status.L{k}",
                "Next": self.fixed(f"Layer {k + 1}") if k < depth else self.fixed("Summary"),
            }
        states.update(self.summary())
        return {
            "Comment": f"dagsmith pipeline {plan.name}",
            "StartAt": start,
            "States": states,
        }

    # --- admission (min_interval) -----------------------------------------------------------

    def admission(self, first_layer: str) -> dict:
        task = self.plan.task("dagsmith-admit")
        admit = container_task(task, self.settings)
        admit.pop("Retry", None)
        admit["ResultPath"] = "$.admission"
        states: dict = {}
        lock, unlock, wait = self.fixed("Lock admission"), self.fixed("Unlock admission"), self.fixed("Hold for min_interval")
        run_admit, failed_unlock = self.fixed("Admit"), self.fixed("Unlock after failure")
        states["Admission"] = {"Type": "Pass", "Comment": "min_interval: one admission at a time (the lock), one run per interval",
                            "Next": lock if self.settings.locking else run_admit}
        if self.settings.locking:
            states[lock] = {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Parameters": {
                    "TableName": sub("LockTable"),
                    "Item": {"pipeline": {"S": self.plan.name}, "holder": {"S.$": "$$.Execution.Id"}},
                    "ConditionExpression": "attribute_not_exists(pipeline)",
                },
                "ResultPath": None,
                "Retry": [{"ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"], "IntervalSeconds": 2, "MaxAttempts": 30, "BackoffRate": 1.5, "MaxDelaySeconds": 60}],
                "Next": run_admit,
            }
        admit["Next"] = unlock if self.settings.locking else "Check admission"
        admit["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.admission_error", "Next": failed_unlock if self.settings.locking else self.fixed("Admission failed")}]
        states[run_admit] = admit
        if self.settings.locking:
            release = {"Type": "Task", "Resource": "arn:aws:states:::dynamodb:deleteItem",
                       "Parameters": {"TableName": sub("LockTable"), "Key": {"pipeline": {"S": self.plan.name}}}, "ResultPath": None}
            states[unlock] = {**release, "Next": self.fixed("Check admission")}
            states[failed_unlock] = {**release, "Next": self.fixed("Admission failed")}
        else:
            self.fixed("Check admission")
        states["Check admission"] = {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.admission.action", "StringEquals": "admit", "Next": first_layer},
                {"Variable": "$.admission.action", "StringEquals": "hold", "Next": wait},
            ],
            "Default": self.fixed("Covered"),
        }
        states[wait] = {"Type": "Wait", "SecondsPath": "$.admission.wait_seconds", "Next": "Admission"}
        states["Covered"] = {
            "Type": "Pass",
            "Comment": "min_interval: an earlier run read this data; nothing to do",
            "Parameters": {"status": "skipped", "run_id.$": "$.run.id", "reason": "min_interval: an earlier run read this data"},
            "Next": self.fixed("Skipped run"),
        }
        states["Skipped run"] = {"Type": "Succeed"}
        states["Admission failed"] = {"Type": "Fail", "Error": "dagsmith.AdmissionFailed", "Cause": "dagsmith admit failed: see the execution history"}
        return states

    # --- one step's branch ------------------------------------------------------------------

    def branch(self, step: Step) -> dict:
        plan, task = self.plan, self.plan.task(step.id)
        states: dict = {}
        caught = self.name("Caught", step.id)
        catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": caught}]
        done = self.name("Done", step.id)
        states[done] = {"Type": "Pass", "Result": "succeeded", "End": True}
        states[caught] = {"Type": "Pass", "Comment": "the error is in the history (the Catch)", "Result": "failed", "End": True}
        if task.decides:
            run_next = self.name("Gate", step.id)
            gated = self.name("Gated", step.id)
            states[run_next] = {
                "Type": "Choice",
                "Choices": [{"Variable": "$.outcome.status", "StringEquals": "skip", "Next": gated}],
                "Default": done,
            }
            states[gated] = {"Type": "Pass", "Result": "gated", "End": True}
            result = {"ResultSelector": {"status.$": "$.status"}, "ResultPath": "$.outcome"}
        else:
            run_next = done
            result = {"ResultPath": None}
        if task.maps_over:
            listing = plan.task(task.maps_over)
            distributed = is_distributed(plan, task, self.settings)
            first = self.name("List", step.id)
            mapper = self.name("Map", step.id)
            list_state = container_task(listing, self.settings, ranges_to_s3=distributed)
            list_state.update(ResultPath="$.fan", Next=mapper, Catch=catch)
            states[first] = list_state
            states[mapper] = self.map_state(task, distributed, catch, run_next)
        elif distributed_training(step):
            first = self.name("Run", step.id)
            states[first] = {**training_job(task, self.settings), "ResultPath": None, "Catch": catch, "Next": run_next}
        else:
            first = self.name("Run", step.id)
            states[first] = {**container_task(task, self.settings), **result, "Catch": catch, "Next": run_next}
        ups = [self.position[up] for up in step.depends_on]
        if not ups:
            return {"StartAt": first, "States": states}
        check = self.name("Check", step.id)
        not_run, skipped = self.name("Not run", step.id), self.name("Skipped", step.id)
        states[check] = {
            "Type": "Choice",
            "Choices": [
                {"Or": [{"Variable": p, "StringEquals": s} for p in ups for s in ("failed", "not_run")], "Next": not_run},
                {"Or": [{"Variable": p, "StringEquals": s} for p in ups for s in ("skipped", "gated")], "Next": skipped},
            ],
            "Default": first,
        }
        states[not_run] = {"Type": "Pass", "Result": "not_run", "End": True}
        states[skipped] = {"Type": "Pass", "Result": "skipped", "End": True}
        return {"StartAt": check, "States": states}

    def map_state(self, task: Task, distributed: bool, catch: list, next_state: str) -> dict:
        fan = task.step.fanout
        inner = self.name("Run", task.id)
        item_task = container_task(task, self.settings, item=True)
        item_task.update(OutputPath=None, End=True)  # each item's output is {}: 10,000 of them fit the 256 KB
        state: dict = {
            "Type": "Map",
            "Comment": (f"{fan.size} items" if fan.size is not None else "items found at run time")
                       + f" in at most {self.plan.max_ranges} ranges",
            "ItemSelector": {"item.$": "States.JsonToString($$.Map.Item.Value)", "run.$": "$.run"},
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"} if distributed else {"Mode": "INLINE"},
                "StartAt": inner,
                "States": {inner: item_task},
            },
            "ResultPath": None,
            "Catch": catch,
            "Next": next_state,
        }
        if distributed:
            state["ItemReader"] = {
                "Resource": "arn:aws:states:::s3:getObject",
                "ReaderConfig": {"InputType": "JSON"},
                "Parameters": {"Bucket.$": "$.fan.bucket", "Key.$": "$.fan.key"},
            }
            state["Label"] = map_label(task.id)
        else:
            state["ItemsPath"] = "$.fan.ranges"
        limit = INLINE_MAP_MAX if not distributed else 10_000
        state["MaxConcurrency"] = min(int(fan.max_parallel), limit) if fan.max_parallel else (0 if distributed else INLINE_MAP_MAX)
        if state["MaxConcurrency"] == 0:
            state["MaxConcurrency"] = 1000  # a Distributed Map's default would be 10,000 at once
        return state

    # --- the end --------------------------------------------------------------------------

    def summary(self) -> dict:
        steps = {f"{sid}.$": path for sid, path in self.position.items()}
        for name in ("Summary", "Outcome", "Succeeded run", "Gated run", "Done"):
            self.fixed(name)
        states: dict = {
            "Summary": {
                "Type": "Pass",
                "Parameters": {"run_id.$": "$.run.id", "run_date.$": "$.run.run_date", "steps": steps},
                "Next": "Outcome",
            },
        }
        choices = []
        for step in self.plan.ir.steps:
            fail = self.name("Failed", step.id)
            choices.append({"Variable": self._path("$.steps", step.id), "StringEquals": "failed", "Next": fail})
            validation = step.kind == "validate"
            states[fail] = {
                "Type": "Fail",
                "Error": "dagsmith.ValidationFailed" if validation else "dagsmith.StepFailed",
                "Cause": (f"validation {step.id!r} failed (on_failure: fail): what depends on it did not run"
                          if validation else f"step {step.id!r} failed: see its error in the execution history"),
            }
        gates = [step.id for step in self.plan.ir.steps if step.kind == "gate"]
        for gate in gates:
            choices.append({"Variable": self._path("$.steps", gate), "StringEquals": "gated", "Next": "Gated run"})
        states["Outcome"] = {"Type": "Choice", "Choices": choices, "Default": "Succeeded run"} if choices else {
            "Type": "Pass", "Next": "Succeeded run"}
        if gates:
            states["Gated run"] = {
                "Type": "Pass",
                "Comment": "a gate did not pass: what follows it was skipped; the run succeeded, gated",
                "Parameters": {"status": "gated", "run_id.$": "$.run_id", "run_date.$": "$.run_date", "steps.$": "$.steps"},
                "Next": "Done",
            }
        states["Succeeded run"] = {
            "Type": "Pass",
            "Parameters": {"status": "succeeded", "run_id.$": "$.run_id", "run_date.$": "$.run_date", "steps.$": "$.steps"},
            "Next": "Done",
        }
        states["Done"] = {"Type": "Succeed"}
        return states

    @staticmethod
    def _path(root: str, key: str) -> str:
        return f"{root}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"{root}['{key}']"


def build(plan: Plan, settings: Settings) -> dict:
    return Builder(plan, settings).definition()


def dumps(definition: dict) -> str:
    """The definition's JSON text: keys in the order written (States read top to bottom),
    every string escaped by JSON, so no spec text can break out of its value."""
    return json.dumps(definition, indent=2, ensure_ascii=False) + "\n"
