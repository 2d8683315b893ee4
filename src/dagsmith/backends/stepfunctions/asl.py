"""The state machine (Amazon States Language) of an execution plan, as a plain dict.

Shape (docs/backends/stepfunctions.md has the why):

    Run values        input {params?, run_date?, trigger?} -> $.run (defaults merged in)
    [Admission]       Lock (DynamoDB, with a lease) -> Admit task -> Unlock -> hold: Wait, again
                      | covered: Succeed "skipped"
    the steps         nested as the graph is (shape.py): steps in sequence one after the other,
                      independent parts in a Parallel "Parallel <n>" (one branch per part, given
                      {run, status}); a part that is not series-parallel is cut between layers.
                      Each step's states:
                        Check <step>   a Choice on its upstream steps' states: any failed/not_run
                                       -> "not_run", any skipped/gated -> "skipped", else run
                        Run <step>     the task (ECS RunTask / Batch SubmitJob (AWS SDK) .waitForTaskToken,
                                       or SageMaker createTrainingJob.sync for distributed training)
                        List <step> -> Map <step>   a fan-out: its ranges, then an inline Map or a
                                       Distributed Map (ItemReader from S3) over them
                        Gate <step>    a Choice on the gate's outcome: "gated" or "succeeded"
                        Caught <step>  Catch: the step "failed" with its error
                      each ends with the step's state (a string) at $.status.s<i> (i: the step's
                      index in the IR), or, a branch's only step, as the branch's output; a branch
                      of several steps ends with a Pass giving what it wrote; a Parallel's result
                      is at $.status.P<n> = {b<branch>: ...}. Builder.path reads a state there.
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
from ..plan import Plan, Task, container_env
from .callback import ITEM_ENV, SECRET_REFS_ENV, TOKEN_ENV
from .shape import Par, Seq, Shape, shape, steps_of

CONNECTION_SECRET = "dagsmith/conn/{}"  # the Secrets Manager name of connection NAME

CONTAINER = "dagsmith"  # the container's name in every task definition / job definition
WRAPPER = ["python", "-m", "dagsmith.backends.stepfunctions.callback"]
HEARTBEAT_SECONDS = 600  # the wrapper beats every 60 s; an image pull must fit in here too
INLINE_MAP_MAX = 40  # the inline Map's concurrency limit, and the most items it runs here
HISTORY_LIMIT = 25_000
MAX_DEFINITION_BYTES = 1_048_576
NAME_LIMIT = 80
ADMIT_TIMEOUT_SECONDS = 900  # the Admit task's TimeoutSeconds: a live admission ends within it
LOCK_LEASE_SECONDS = 1800  # the admission lock's lease: longer than an admission, its unlock included
LOCK_POLL_SECONDS = 15  # a held lock is read again this often (the lease is counted in polls)
# DynamoDB errors worth a retry (the DynamoDB API reference's error list, the service-side ones)
DYNAMODB_TRANSIENT = ("ProvisionedThroughputExceededException", "RequestLimitExceeded", "ThrottlingException",
                      "InternalServerErrorException", "InternalServerError", "ServiceUnavailable")
# History events, counted on moto's interpreter (benchmarks/stepfunctions.py) and rounded up:
EVENTS_PER_TASK = 8  # entered, scheduled, started, submitted, succeeded/failed, exited (+ retries)
EVENTS_PER_BRANCH = 6  # the Choice and Pass states around a task
EVENTS_PER_LAYER = 6  # a Parallel's own events
EVENTS_PER_PASS = 2  # entered, exited: the Pass that ends a branch of several steps
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
    lease_seconds: int = LOCK_LEASE_SECONDS  # the admission lock's lease
    code: str | None = None  # Plan.code: the code package under the store (DAGSMITH_CODE)
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
    parallels, branch_ends = shape_counts(graph_shape(plan))
    total += EVENTS_PER_LAYER * parallels + EVENTS_PER_PASS * branch_ends
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


def static_env(step: Step | None, code: str | None = None) -> dict[str, str]:
    """The step's `env` values written into its container's definition (plan.container_env): those
    without '${' (the definition is embedded with Fn::Sub). The runtime sets every value,
    references filled in with the run's values, when the step starts. `code`: Plan.code, the code
    package under the store (`s3://${ArtifactBucket}/${StorePrefix}/code/...`, filled in by Fn::Sub)."""
    return container_env(step, lambda value: "${" not in value, code) if step is not None else {}


def secret_refs(step: Step) -> dict:
    """A step's secrets and connections as {environment variable: Secrets Manager secret name}."""
    refs = {name: name for name in step.secrets}
    refs.update({connection_env(c): CONNECTION_SECRET.format(c) for c in step.connections})
    return dict(sorted(refs.items()))


def training_environment(task: Task, code: str | None = None) -> dict:
    """The training job's Environment: the run's values (from the state's input), the step's own
    `env`, and its secrets and connections BY NAME in DAGSMITH_SECRET_REFS (SageMaker has no
    secret references in Environment: the callback wrapper fetches them from Secrets Manager when
    the container starts, so no secret value is ever written into the job's description)."""
    env = {item["Name"] + ".$": item["Value.$"] for item in environment(task, token=False, item=False)}
    env.update(static_env(task.step, code))
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
    env = training_environment(task, settings.code)
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


def graph_shape(plan: Plan) -> Shape | None:
    """The nesting of the step graph into sequences and Parallels (shape.py)."""
    return shape([s.id for s in plan.ir.steps], {s.id: s.depends_on for s in plan.ir.steps})


def shape_counts(node: Shape | None) -> tuple[int, int]:
    """(Parallel states, branches of several steps: each ends with a Pass) of a shape."""
    if node is None or isinstance(node, str):
        return 0, 0
    parallels = int(isinstance(node, Par))
    ends = sum(1 for part in node.parts if isinstance(part, Seq)) if isinstance(node, Par) else 0
    for part in node.parts:
        more = shape_counts(part)
        parallels, ends = parallels + more[0], ends + more[1]
    return parallels, ends


class Builder:
    def __init__(self, plan: Plan, settings: Settings):
        self.plan = plan
        self.settings = settings
        self.shape = graph_shape(plan)
        self.key = {step.id: f"s{index}" for index, step in enumerate(plan.ir.steps)}  # its state at $.status.<key>
        self.where: dict[str, tuple] = {}  # step id -> (its scope: ((parallel, branch), ...), its key or None)
        self.numbers: dict = {}  # Par -> its number, in the order written
        self.produced: dict[tuple, list] = {}  # scope -> the keys its states write under $.status
        self._number(self.shape)

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
        first_step = self.first_name(self.shape) if self.shape is not None else "Summary"
        after_values = self.fixed("Admission") if plan.admission else first_step
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
            states.update(self.admission(first_step))
        graph: dict = {}
        if self.shape is not None:
            self.emit(self.shape, (), graph, "Summary")
        states.update(graph)
        states.update(self.summary())
        return {
            "Comment": f"dagsmith pipeline {plan.name}",
            "StartAt": start,
            "States": states,
        }

    # --- admission (min_interval) -----------------------------------------------------------

    def admission(self, first_step: str) -> dict:
        """min_interval's admission, one execution at a time behind a DynamoDB lock with a lease.

        The lock item is {pipeline, holder, taken_at}; `holder` is unique to each taking (the
        execution and the time it entered "Admission"). A lock held by someone else is read every
        LOCK_POLL_SECONDS: gone -> Lock again; if the SAME holder is still there after a whole
        lease of polls, it is stale (its execution was stopped between Lock and Unlock: a live one
        unlocks well within the lease, the Admit task being bounded by ADMIT_TIMEOUT_SECONDS) and
        is taken over by a put conditional on that holder: the lease of Amazon's DynamoDB lock
        client, which needs no clock arithmetic (JSONPath intrinsics have none: `now + lease`
        cannot be computed in the state machine).
        Unlock deletes only its own holder's item. Every DynamoDB call retries throttling with
        full jitter, and any other failure ends in "Admission failed" (the lease frees the lock)."""
        task = self.plan.task("dagsmith-admit")
        admit = container_task(task, self.settings)
        admit.pop("Retry", None)
        admit["ResultPath"] = "$.admission"
        states: dict = {}
        lock, unlock, wait = self.fixed("Lock admission"), self.fixed("Unlock admission"), self.fixed("Hold for min_interval")
        run_admit, failed_unlock = self.fixed("Admit"), self.fixed("Unlock after failure")
        failed = self.fixed("Admission failed")
        states["Admission"] = {"Type": "Pass", "Comment": "min_interval: one admission at a time (the lock), one run per interval",
                               **({"Parameters": {"holder.$": "States.Format('{} {}', $$.Execution.Id, $$.State.EnteredTime)"},
                                   "ResultPath": "$.lock"} if self.settings.locking else {}),
                               "Next": lock if self.settings.locking else run_admit}
        if self.settings.locking:
            read, check, take = self.fixed("Read admission lock"), self.fixed("Check admission lock"), self.fixed("Take over stale admission lock")
            first_seen, seen_again, poll = self.fixed("Lock holder seen"), self.fixed("Same lock holder"), self.fixed("Wait for the lock")
            every = max(1, min(LOCK_POLL_SECONDS, int(self.settings.lease_seconds)))
            polls = -(-int(self.settings.lease_seconds) // every)  # a whole lease of polls, at least
            table, key = sub("LockTable"), {"pipeline": {"S": self.plan.name}}
            item = {**key, "holder": {"S.$": "$.lock.holder"}, "taken_at": {"S.$": "$$.State.EnteredTime"}}
            # DynamoDB's retryable errors, as Step Functions names them ("DynamoDB.<exception>")
            transient = [{"ErrorEquals": [f"DynamoDB.{e}" for e in DYNAMODB_TRANSIENT], "IntervalSeconds": 1, "MaxAttempts": 6,
                          "BackoffRate": 2.0, "MaxDelaySeconds": 30, "JitterStrategy": "FULL"}]
            held = {"ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"], "ResultPath": None, "Next": read}
            give_up = {"ErrorEquals": ["States.ALL"], "ResultPath": "$.admission_error", "Next": failed}
            states[lock] = {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Parameters": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pipeline)"},
                "ResultPath": None,
                "Retry": [{"ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"], "IntervalSeconds": 1, "MaxAttempts": 3,
                           "BackoffRate": 2.0, "JitterStrategy": "FULL"}] + transient,
                "Catch": [held, give_up],
                "Next": run_admit,
            }
            states[read] = {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:getItem",
                "Parameters": {"TableName": table, "Key": key, "ConsistentRead": True},
                "ResultPath": "$.now",
                "Retry": transient,
                "Catch": [give_up],
                "Next": check,
            }
            # the same holder after a whole lease of polls is stale; a new holder starts the count again
            same = [{"Variable": "$.seen.holder", "IsPresent": True}, {"Variable": "$.now.Item.holder.S", "StringEqualsPath": "$.seen.holder"}]
            states[check] = {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.now.Item.holder.S", "IsPresent": False, "Next": lock},  # unlocked since
                    {"And": same + [{"Variable": "$.seen.polls", "NumericGreaterThanEquals": polls}], "Next": take},
                    {"And": same, "Next": seen_again},
                ],
                "Default": first_seen,
            }
            states[first_seen] = {"Type": "Pass", "Parameters": {"holder.$": "$.now.Item.holder.S", "polls": 1}, "ResultPath": "$.seen",
                                  "Next": poll}
            states[seen_again] = {"Type": "Pass", "Parameters": {"holder.$": "$.seen.holder", "polls.$": "States.MathAdd($.seen.polls, 1)"},
                                  "ResultPath": "$.seen", "Next": poll}
            states[poll] = {"Type": "Wait", "Seconds": every, "Next": read}
            states[take] = {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Comment": "the holder seen for a whole lease is still there: its execution is gone",
                "Parameters": {"TableName": table, "Item": item,
                               "ConditionExpression": "attribute_not_exists(pipeline) OR holder = :seen",
                               "ExpressionAttributeValues": {":seen": {"S.$": "$.seen.holder"}}},
                "ResultPath": None,
                "Retry": transient,
                "Catch": [held, give_up],  # taken or renewed meanwhile: a live holder, read it again
                "Next": run_admit,
            }
        admit["Next"] = unlock if self.settings.locking else "Check admission"
        admit["TimeoutSeconds"] = ADMIT_TIMEOUT_SECONDS
        admit["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.admission_error", "Next": failed_unlock if self.settings.locking else failed}]
        states[run_admit] = admit
        if self.settings.locking:
            release = {"Type": "Task", "Resource": "arn:aws:states:::dynamodb:deleteItem",
                       "Parameters": {"TableName": sub("LockTable"), "Key": {"pipeline": {"S": self.plan.name}},
                                      "ConditionExpression": "holder = :me", "ExpressionAttributeValues": {":me": {"S.$": "$.lock.holder"}}},
                       "ResultPath": None, "Retry": transient}
            # not ours any more (taken over after a lease) or DynamoDB failing: the lease frees it
            states[unlock] = {**release, "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "Check admission"}],
                              "Next": self.fixed("Check admission")}
            states[failed_unlock] = {**release, "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": failed}], "Next": failed}
        else:
            self.fixed("Check admission")
        states["Check admission"] = {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.admission.action", "StringEquals": "admit", "Next": first_step},
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
        states[failed] = {"Type": "Fail", "Error": "dagsmith.AdmissionFailed", "Cause": "dagsmith admit failed: see the execution history"}
        return states

    # --- the graph: sequences and Parallels (shape.py) ---------------------------------------

    def _number(self, node) -> None:
        """Number the Parallels in the order they are written (the state names and $.status keys)."""
        if isinstance(node, Par):
            self.numbers[node] = len(self.numbers) + 1
        for part in getattr(node, "parts", ()):
            self._number(part)

    def first_name(self, node) -> str:
        """The name of the first state of a part of the shape."""
        if isinstance(node, Seq):
            return self.first_name(node.parts[0])
        if isinstance(node, Par):
            return f"Parallel {self.numbers[node]}"
        step = self.plan.task(node).step
        return state_name("Check" if step.depends_on else "List" if self.plan.task(node).maps_over else "Run", node)

    def path(self, step_id: str, scope: tuple) -> str:
        """The JSONPath of a finished step's state, read from a state in `scope`: a branch's input
        has its enclosing scopes' $.status, and a Parallel's result is at $.status.P<n>.b<branch>."""
        where, key = self.where[step_id]
        common = 0
        while common < min(len(where), len(scope)) and where[common] == scope[common]:
            common += 1
        return "$.status" + "".join(f".P{n}.b{i}" for n, i in where[common:]) + (f".{key}" if key else "")

    def emit(self, node, scope: tuple, states: dict, next_state: str) -> None:
        """Write the states of a part of the shape, run in `scope`, continuing at `next_state`."""
        if isinstance(node, str):
            self.where[node] = (scope, self.key[node])
            self.produced.setdefault(scope, []).append(self.key[node])
            states.update(self.branch(self.plan.task(node).step, scope, next_state=next_state, key=self.key[node])["States"])
            return
        if isinstance(node, Seq):
            for index, part in enumerate(node.parts):
                self.emit(part, scope, states, self.first_name(node.parts[index + 1]) if index + 1 < len(node.parts) else next_state)
            return
        number = self.numbers[node]
        name = self.fixed(f"Parallel {number}")
        branches = []
        for index, part in enumerate(node.parts):
            inner = scope + ((number, index),)
            if isinstance(part, str):  # one step: the branch's output is its state (a string)
                self.where[part] = (inner, None)
                branches.append(self.branch(self.plan.task(part).step, inner))
                continue
            end = self.fixed(f"Parallel {number} branch {index} done")
            branch_states: dict = {}
            self.emit(part, inner, branch_states, end)
            # the branch's output: what its own states wrote (not the $.status it was given)
            branch_states[end] = {"Type": "Pass", "Parameters": {f"{key}.$": f"$.status.{key}" for key in self.produced[inner]}, "End": True}
            branches.append({"StartAt": self.first_name(part), "States": branch_states})
        self.produced.setdefault(scope, []).append(f"P{number}")
        states[name] = {
            "Type": "Parallel",
            "Comment": ", ".join(steps_of(node))[:200],
            "Parameters": {"run.$": "$.run", "status.$": "$.status"},
            "Branches": branches,
            # named, not indexed: moto's interpreter reads `$.a[1].b` as a list, AWS as the value
            "ResultSelector": {f"b{index}.$": f"$[{index}]" for index in range(len(branches))},
            "ResultPath": f"$.status.P{number}",
            "Next": next_state,
        }

    # --- one step's states ------------------------------------------------------------------

    def branch(self, step: Step, scope: tuple, next_state: str | None = None, key: str | None = None) -> dict:
        """The states of one step. Each ends with the step's state (a string): the branch's output
        (next_state None), or written at $.status.<key>, then next_state."""

        def ending(state: str) -> dict:
            if next_state is None:
                return {"Type": "Pass", "Result": state, "End": True}
            return {"Type": "Pass", "Result": state, "ResultPath": f"$.status.{key}", "Next": next_state}

        plan, task = self.plan, self.plan.task(step.id)
        states: dict = {}
        caught = self.name("Caught", step.id)
        catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": caught}]
        done = self.name("Done", step.id)
        states[done] = ending("succeeded")
        states[caught] = {**ending("failed"), "Comment": "the error is in the history (the Catch)"}
        if task.decides:
            run_next = self.name("Gate", step.id)
            gated = self.name("Gated", step.id)
            states[run_next] = {
                "Type": "Choice",
                "Choices": [{"Variable": "$.outcome.status", "StringEquals": "skip", "Next": gated}],
                "Default": done,
            }
            states[gated] = ending("gated")
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
        ups = [self.path(up, scope) for up in step.depends_on]
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
        states[not_run] = ending("not_run")
        states[skipped] = ending("skipped")
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
        steps = {f"{step.id}.$": self.path(step.id, ()) for step in self.plan.ir.steps}
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
