"""The CloudFormation template of a Step Functions pipeline, as a plain dict.

What differs per account is a Parameter (bucket and store prefix, ECS cluster / subnets /
security groups or the Batch job queue, each image, the SageMaker instance type, the buckets
watched for new data). The state machine's definition is embedded with `Fn::Sub`: it refers to
those parameters and to the template's own resources by `${Name}`; any other `${` is escaped.

IAM, least privilege: the state machine's role may run exactly this template's task/job
definitions (and pass their roles), start its own child executions (Distributed Map), read the
ranges files it wrote, use its lock table and create its training jobs; the tasks' role may
read and write the store, read the pipeline's S3 sources, and send task results (SendTask* take
no resource type: "*", the token is the capability); the execution role may read exactly the
named secrets. Every policy is linted with AWS's IAM definitions in the tests (parliament).
"""

from __future__ import annotations

import hashlib
import math
import re

from ... import cron, references
from ...ir import Step
from ...runtime.sources import connection_env
from ..plan import Plan, Task, watched_key
from .asl import CONNECTION_SECRET, CONTAINER, PARAMS_KEY, distributed_training, secret_refs, static_env

# Fargate's CPU units and, per CPU, the memory (MiB) allowed: (min, max, step)
FARGATE = [(256, 512, 2048, 1024), (512, 1024, 4096, 1024), (1024, 2048, 8192, 1024), (2048, 4096, 16384, 1024),
           (4096, 8192, 30720, 1024), (8192, 16384, 61440, 4096), (16384, 32768, 122880, 8192)]
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)")
_MEMORY_UNITS = {"": 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "K": 1000 / 2**20, "k": 1000 / 2**20,
                 "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}
SYNTHETIC_RESOURCES = {"cpu": "0.25", "memory": "512Mi"}
ECR_IMAGE = re.compile(r"([0-9]{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")
# on_new_data on S3: the object whose arrival starts a run (Spark, Hadoop and Glue jobs write it
# last); `backends.stepfunctions.new_data_marker` names another, or null for every object
NEW_DATA_MARKER = "_SUCCESS"
STORE_PREFIX_PATTERN = "^[^/]+(/[^/]+)*$"  # StorePrefix: segments joined by single '/'
STORE_PREFIX_MAX = 200  # StorePrefix's MaxLength: the store's paths in every task's environment stay bounded


def cpu_units(value) -> int:
    text = str(value)
    if text.endswith("m"):
        return math.ceil(float(text[:-1]) * 1024 / 1000)
    return math.ceil(float(text) * 1024)


def memory_mib(value) -> int:
    match = _QUANTITY.fullmatch(str(value))
    if not match or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"not a memory quantity: {value!r}")
    return math.ceil(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])


def fargate_size(resources: dict) -> tuple[int, int]:
    """The smallest Fargate (cpu units, memory MiB) that holds `resources` (cpu, memory)."""
    cpu = cpu_units(resources.get("cpu", "0.25"))
    memory = memory_mib(resources.get("memory", "512Mi"))
    for units, low, high, step in FARGATE:
        if units >= cpu and high >= memory:
            return units, max(low, low + math.ceil(max(0, memory - low) / step) * step)
    raise ValueError(f"cpu {resources.get('cpu')} / memory {resources.get('memory')} exceed Fargate's largest task (16 vCPU, 120 GiB)")


def logical_id(prefix: str, name: str) -> str:
    """A CloudFormation logical id (alphanumeric) for a task id: readable and unique."""
    words = re.split(r"[^A-Za-z0-9]+", name)
    readable = "".join(w[:1].upper() + w[1:] for w in words)[:40]
    return f"{prefix}{readable}{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def image_param(image: str | None) -> str:
    return "DefaultImage" if not image else "Image" + hashlib.sha256(image.encode()).hexdigest()[:8]


def s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix


S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def source_read_scope(uri: str) -> tuple[str, str]:
    """(bucket, key prefix) of what an S3 source's step may read, for an IAM Resource
    `arn:aws:s3:::BUCKET/PREFIX*`: the key up to its first wildcard or reference (a run's value
    fills that in), `$${` read as the literal `${` it stands for, and each literal `$` written
    `${$}`, since IAM reads `${...}` in a Resource as a policy variable
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html#policy-vars-specialchars).
    The bucket holds no reference (StepFunctionsBackend.check refuses one)."""
    bucket, prefix = s3_parts(uri)
    reference = next(references.references(prefix), None)
    if reference is not None:
        prefix = prefix[:reference.start]
    literal = references.substitute(prefix, lambda name: "")  # no reference is left: only $${ -> ${
    literal = re.sub(r"[*?\[].*$", "", literal)  # up to the first wildcard
    return bucket, literal.replace("$", "${$}")


def arn(service: str, rest: str) -> dict:
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{rest}"}


def task_step(plan: Plan, task: Task) -> Step | None:
    return task.step if task.step is not None else (plan.ir.steps[0] if plan.ir.steps else None)


SCHEDULE_EXPRESSION_MAX = 256  # AWS::Scheduler::Schedule ScheduleExpression: 1 to 256 characters
_EB_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # EventBridge's 1-7


def cron_expression(expr: str) -> str:
    """A cron of the spec (dagsmith.cron) as EventBridge Scheduler's cron(min hour dom month dow
    year), matching the same times: each field is written from the values it matches, in the
    forms the cron reference documents (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cron-expressions.html,
    the same syntax as https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html#cron-based):
    `*`, a value, `a-b`, a list with `,`, and `a/n` (from a, every n, to the field's end) where
    the field takes `/`; the day of the week takes none, so it is a list of SUN-SAT (EventBridge
    counts 1 = SUN, cron 0 = SUN: names cannot be shifted wrong). One of the day fields is `?`:
    EventBridge takes one; a cron that sets both (a day matches either) is refused, unless one of
    them matches every day (then every day does); so is one longer than a schedule takes."""
    schedule = cron.parse(expr)
    minute, hour, dom, month, dow = schedule.values
    fields = cron.FIELDS
    every_day = len(dom) == fields[cron.DAY_OF_MONTH].size or len(dow) == 7
    if schedule.day_of_month_set and schedule.day_of_week_set and not every_day:
        raise ValueError(f"{expr!r} sets both the day of the month and of the week (cron runs on a day that matches either): "
                         "EventBridge takes only one of them; set the other to '*'")
    if schedule.day_of_month_set and schedule.day_of_week_set:
        days = ("*", "?")  # one of the two matches every day
    elif schedule.day_of_week_set and len(dow) < 7:
        days = ("?", _eb_days(dow))
    else:  # every day of the week: the day of the month decides
        days = (_eb_field(dom, fields[cron.DAY_OF_MONTH]), "?")
    text = f"cron({_eb_field(minute, fields[cron.MINUTE])} {_eb_field(hour, fields[cron.HOUR])} {days[0]} " \
           f"{_eb_field(month, fields[cron.MONTH])} {days[1]} *)"
    if len(text) > SCHEDULE_EXPRESSION_MAX:
        raise ValueError(f"{expr!r} becomes an EventBridge expression of {len(text)} characters, longer than the "
                         f"{SCHEDULE_EXPRESSION_MAX} a schedule takes: use ranges or steps")
    return text


def _eb_field(values: frozenset, field: cron.Field) -> str:
    if len(values) == field.size:
        return "*"
    ordered = sorted(values)
    if len(ordered) >= 2:  # a/n: a, a+n, ... up to the field's end
        first, step = ordered[0], ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(first, field.last + 1, step)):
            return f"{first}/{step}"
    return ",".join(cron.runs(ordered))


def _eb_days(days: frozenset) -> str:
    """Days of the week (cron's 0 = Sunday) as EventBridge's names, in its order (SUN first)."""
    return ",".join(cron.runs(sorted(days), lambda day: _EB_DAYS[day]))


class TemplateBuilder:
    def __init__(self, plan: Plan, options: dict, machine_name: str, definition_text: str, task_ref: dict):
        self.plan = plan
        self.options = options
        self.compute = options.get("compute", "ecs")
        self.machine = machine_name
        self.definition_text = definition_text
        self.task_ref = task_ref
        self.parameters: dict = {}
        self.conditions: dict = {}
        self.resources: dict = {}

    # --- parameters ---------------------------------------------------------------------------

    def param(self, name: str, description: str, default: str | None = None, **extra) -> None:
        given = (self.options.get("parameters") or {}).get(name)
        body = {"Type": "String", "Description": description, **extra}
        if given is not None:
            body["Default"] = str(given)
        elif default is not None:
            body["Default"] = default
        self.parameters[name] = body

    def store_parts(self) -> tuple[str | None, str]:
        store = self.options.get("store")
        if store:
            bucket, prefix = s3_parts(store.rstrip("/"))
            return bucket, prefix.strip("/")
        return None, "dagsmith"

    def build(self) -> dict:
        plan = self.plan
        bucket, prefix = self.store_parts()
        self.param("ArtifactBucket", "S3 bucket of the run store (artifacts, the IR, fan-out ranges)", bucket,
                   AllowedPattern="^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
        # no empty segment: keys are `${StorePrefix}/<key>`, and the runtime reads the store `s3://b/p/` as `s3://b/p`
        self.param("StorePrefix", "Key prefix of the run store in ArtifactBucket (no leading, trailing or double '/')", prefix,
                   MaxLength=STORE_PREFIX_MAX, AllowedPattern=STORE_PREFIX_PATTERN)
        if self.compute == "ecs":
            self.param("Cluster", "ECS cluster (name or ARN) the tasks run in (Fargate)", "default")
            self.param("Subnets", "Subnet ids for the tasks, comma-separated", AllowedPattern="^subnet-[0-9a-zA-Z]+(,subnet-[0-9a-zA-Z]+)*$")
            self.param("SecurityGroups", "Security group ids for the tasks, comma-separated", AllowedPattern="^sg-[0-9a-zA-Z]+(,sg-[0-9a-zA-Z]+)*$")
            self.param("AssignPublicIp", "Give tasks a public IP (to pull images without a NAT gateway)", "DISABLED",
                       AllowedValues=["ENABLED", "DISABLED"])
        else:
            self.param("JobQueue", "AWS Batch job queue (name) the jobs run in")
        images = sorted({task_step(plan, t).image if task_step(plan, t) else None for t in plan.tasks}, key=lambda i: i or "")
        for image in images:
            self.param(image_param(image), f"Container image {'for steps without one' if not image else image}", image)
        if any(distributed_training(t.step) for t in plan.tasks if t.step):
            self.param("TrainingInstanceType", "SageMaker instance type of distributed training (one per worker)",
                       "ml.g5.xlarge" if any(self.gpus(t.step) for t in plan.tasks if t.step) else "ml.m5.xlarge")
        self.resources["LogGroup"] = {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": f"/dagsmith/{self.machine}", "RetentionInDays": 30}}
        self.roles()
        for task in plan.tasks:
            if task.step is not None and distributed_training(task.step):
                continue
            if self.compute == "ecs":
                self.task_definition(task)
            else:
                self.job_definition(task)
        if plan.admission:
            self.resources["LockTable"] = {"Type": "AWS::DynamoDB::Table", "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pipeline", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pipeline", "KeyType": "HASH"}]}}
        self.state_machine()
        self.triggers()
        return {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"dagsmith pipeline {plan.name}: state machine, task definitions, roles and triggers",
            "Parameters": self.parameters,
            **({"Conditions": self.conditions} if self.conditions else {}),
            "Resources": self.resources,
            "Outputs": {
                "StateMachineArn": {"Description": "The pipeline's state machine", "Value": {"Ref": "StateMachine"}},
                "StoreUri": {"Description": "The run store", "Value": {"Fn::Sub": "s3://${ArtifactBucket}/${StorePrefix}"}},
            },
        }

    @staticmethod
    def gpus(step: Step | None) -> int:
        if step is None:
            return 0
        distributed = (step.config or {}).get("distributed") if step.kind == "train" else None
        return int((distributed or {}).get("gpus_per_worker") or step.resources.get("gpu") or 0)

    # --- roles ----------------------------------------------------------------------------

    def store_statements(self) -> list[dict]:
        return [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArtifactBucket}/${StorePrefix}/*"}},
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArtifactBucket}"},
             "Condition": {"StringLike": {"s3:prefix": [{"Fn::Sub": "${StorePrefix}/*"}, {"Fn::Sub": "${StorePrefix}"}]}}},
        ]

    def source_statements(self) -> list[dict]:
        out = []
        for step in self.plan.ir.steps:
            uri = (step.config or {}).get("uri") if step.kind == "source" else None
            if uri and uri.startswith("s3://"):
                bucket, keys = source_read_scope(uri)
                out.append({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{bucket}/{keys}*"})
                out.append({"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{bucket}"})
        return out

    def machine_arn(self) -> dict:
        return arn("states", f"stateMachine:{self.machine}")

    def roles(self) -> None:
        task_statements = self.store_statements() + self.source_statements() + [
            # SendTask* take no resource type (the Service Authorization Reference for Step Functions:
            # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsstepfunctions.html):
            # a policy naming the state machine's ARN matches nothing and the callback is denied. The
            # task token is the capability: only the task that received it can use it.
            {"Effect": "Allow", "Action": ["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"],
             "Resource": "*"},
        ]
        self.resources["TaskRole"] = role("ecs-tasks.amazonaws.com", "task-results", task_statements)
        secrets = sorted({name for step in self.plan.ir.steps for name in step.secrets}
                         | {CONNECTION_SECRET.format(c) for step in self.plan.ir.steps for c in step.connections})
        execution = [{"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                      "Resource": {"Fn::Sub": "${LogGroup.Arn}"}}] + self.image_pull_statements()
        if secrets:
            execution.append({"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                              "Resource": [arn("secretsmanager", f"secret:{name}-*") for name in secrets]})
        self.resources["ExecutionRole"] = role("ecs-tasks.amazonaws.com", "pull-and-log", execution)
        if any(distributed_training(t.step) for t in self.plan.tasks if t.step):
            self.resources["SageMakerRole"] = role("sagemaker.amazonaws.com", "training", self.store_statements() + self.source_statements() + [
                {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                 "Resource": arn("logs", "log-group:/aws/sagemaker/TrainingJobs:*")},
                *self.image_pull_statements(),
                {"Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*"},  # no resource type
            ] + self.training_secret_statements())

    def training_secret_statements(self) -> list[dict]:
        """The training jobs' secrets and connections, fetched by name when the container starts
        (asl.training_environment): exactly those, nothing else."""
        names = sorted({name for t in self.plan.tasks if t.step is not None and distributed_training(t.step)
                        for name in secret_refs(t.step).values()})
        if not names:
            return []
        return [{"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                 "Resource": [arn("secretsmanager", f"secret:{name}-*") for name in names]}]

    def image_pull_statements(self) -> list[dict]:
        """ECR pulls: the token (no resource type), the layers from this account's repositories and
        from the ECR repositories the spec's images name (another account's, when they do)."""
        repositories = [{"Fn::Sub": "arn:${AWS::Partition}:ecr:*:${AWS::AccountId}:repository/*"}]
        for image in sorted({t.step.image for t in self.plan.tasks if t.step is not None and t.step.image}):
            match = ECR_IMAGE.match(image)
            if match:
                account, region, repository = match.groups()
                repositories.append({"Fn::Sub": f"arn:${{AWS::Partition}}:ecr:{region}:{account}:repository/{repository}"})
        unique = list({str(r): r for r in repositories}.values())
        return [{"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
                {"Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                 "Resource": unique}]

    def machine_statements(self) -> list[dict]:
        plan, out = self.plan, []
        container_tasks = [t for t in plan.tasks if not (t.step is not None and distributed_training(t.step))]
        refs = [{"Ref": self.task_ref[t.id]} for t in container_tasks]
        if self.compute == "ecs":
            out.append({"Effect": "Allow", "Action": ["ecs:RunTask"], "Resource": refs})
            out.append({"Effect": "Allow", "Action": ["iam:PassRole"],
                        "Resource": [{"Fn::GetAtt": ["TaskRole", "Arn"]}, {"Fn::GetAtt": ["ExecutionRole", "Arn"]}],
                        "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}})
        else:
            # SubmitJob is authorized on the job definition, the queue AND the new job (job/*): the
            # Service Authorization Reference for AWS Batch lists all three as required resource types
            out.append({"Effect": "Allow", "Action": ["batch:SubmitJob"],
                        "Resource": refs + [arn("batch", "job-queue/${JobQueue}"), arn("batch", "job/*")]})
        if any(distributed_training(t.step) for t in plan.tasks if t.step):
            out += [
                {"Effect": "Allow", "Action": ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                                               "sagemaker:AddTags"], "Resource": arn("sagemaker", "training-job/*")},
                {"Effect": "Allow", "Action": ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                 "Resource": arn("events", "rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule")},
                {"Effect": "Allow", "Action": ["iam:PassRole"], "Resource": {"Fn::GetAtt": ["SageMakerRole", "Arn"]},
                 "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
            ]
        out.append({"Effect": "Allow", "Action": ["s3:PutObject"],  # "Store run values": the run's params
                    "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArtifactBucket}/${StorePrefix}/" + PARAMS_KEY.format("*")}})
        if plan.admission:
            out.append({"Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"], "Resource": {"Fn::GetAtt": ["LockTable", "Arn"]}})
        if '"DISTRIBUTED"' in self.definition_text:
            out += [
                {"Effect": "Allow", "Action": ["states:StartExecution"], "Resource": self.machine_arn()},
                {"Effect": "Allow", "Action": ["states:DescribeExecution", "states:StopExecution"],
                 "Resource": arn("states", f"execution:{self.machine}/*")},
                {"Effect": "Allow", "Action": ["s3:GetObject"],
                 "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArtifactBucket}/${StorePrefix}/runs/*/stepfunctions/*"}},
            ]
        return out

    # --- compute ----------------------------------------------------------------------------

    def resources_of(self, task: Task) -> dict:
        return dict(task.step.resources) if task.kind == "step" and task.step and task.step.resources else dict(SYNTHETIC_RESOURCES)

    def secrets_of(self, task: Task) -> list[dict]:
        step = task.step if task.kind == "step" else None
        if step is None:
            return []
        out = [{"Name": name, "ValueFrom": arn("secretsmanager", f"secret:{name}")} for name in step.secrets]
        out += [{"Name": connection_env(c), "ValueFrom": arn("secretsmanager", f"secret:{CONNECTION_SECRET.format(c)}")} for c in step.connections]
        return out

    def static_env(self, task: Task) -> list[dict]:
        """The step's `env` in its container's definition (asl.static_env: references are filled
        in by the runtime when the step starts)."""
        step = task.step if task.kind == "step" else None
        # a value with '${' is the plan's code package under the store (asl.static_env keeps no
        # spec value holding one): CloudFormation fills in its bucket and prefix
        return [{"Name": name, "Value": {"Fn::Sub": value} if "${" in value else value}
                for name, value in static_env(step, self.plan.code).items()]

    def logging(self, task: Task) -> dict:
        return {"LogDriver": "awslogs", "Options": {"awslogs-group": {"Ref": "LogGroup"}, "awslogs-region": {"Ref": "AWS::Region"},
                                                    "awslogs-stream-prefix": re.sub(r"[^A-Za-z0-9_-]", "-", task.id)[:100]}}

    def task_definition(self, task: Task) -> None:
        cpu, memory = fargate_size(self.resources_of(task))
        container = {
            "Name": CONTAINER,
            "Image": {"Ref": image_param(task_step(self.plan, task).image if task_step(self.plan, task) else None)},
            "Essential": True,
            "LogConfiguration": self.logging(task),
        }
        if self.static_env(task):
            container["Environment"] = self.static_env(task)
        if self.secrets_of(task):
            container["Secrets"] = self.secrets_of(task)
        self.resources[self.task_ref[task.id]] = {"Type": "AWS::ECS::TaskDefinition", "Properties": {
            "Family": f"{self.machine}-{re.sub(r'[^A-Za-z0-9_-]', '-', task.id)}"[:255],
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": str(cpu),
            "Memory": str(memory),
            "ExecutionRoleArn": {"Fn::GetAtt": ["ExecutionRole", "Arn"]},
            "TaskRoleArn": {"Fn::GetAtt": ["TaskRole", "Arn"]},
            "ContainerDefinitions": [container],
        }}

    def job_definition(self, task: Task) -> None:
        resources = self.resources_of(task)
        gpus = self.gpus(task.step) if task.kind == "step" else 0
        if gpus:  # GPUs need an EC2 compute environment; Fargate has none
            requirements = [{"Type": "VCPU", "Value": str(max(1, math.ceil(cpu_units(resources.get("cpu", 1)) / 1024)))},
                            {"Type": "MEMORY", "Value": str(memory_mib(resources.get("memory", "2Gi")))},
                            {"Type": "GPU", "Value": str(gpus)}]
        else:
            cpu, memory = fargate_size(resources)
            requirements = [{"Type": "VCPU", "Value": f"{cpu / 1024:g}"}, {"Type": "MEMORY", "Value": str(memory)}]
        container = {
            "Image": {"Ref": image_param(task_step(self.plan, task).image if task_step(self.plan, task) else None)},
            "ResourceRequirements": requirements,
            "ExecutionRoleArn": {"Fn::GetAtt": ["ExecutionRole", "Arn"]},
            "JobRoleArn": {"Fn::GetAtt": ["TaskRole", "Arn"]},
            "LogConfiguration": self.logging(task),
        }
        if not gpus:
            container["FargatePlatformConfiguration"] = {"PlatformVersion": "LATEST"}
            container["NetworkConfiguration"] = {"AssignPublicIp": "DISABLED"}
        if self.static_env(task):
            container["Environment"] = self.static_env(task)
        if self.secrets_of(task):
            container["Secrets"] = self.secrets_of(task)
        properties = {"Type": "container", "PlatformCapabilities": ["EC2" if gpus else "FARGATE"], "ContainerProperties": container,
                      "RetryStrategy": {"Attempts": 1}}  # retries are the state's (Retry): Batch must not start a second copy
        step = task.step if task.kind == "step" else None
        if step is not None and step.timeout:
            properties["Timeout"] = {"AttemptDurationSeconds": max(60, int(step.timeout))}
        self.resources[self.task_ref[task.id]] = {"Type": "AWS::Batch::JobDefinition", "Properties": properties}

    # --- the state machine and its triggers -----------------------------------------------------

    def state_machine(self) -> None:
        role_arn = self.options.get("role_arn")
        if not role_arn:
            self.resources["StateMachineRole"] = role("states.amazonaws.com", "run-pipeline", self.machine_statements())
        self.resources["StateMachine"] = {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
            "StateMachineName": self.machine,
            "StateMachineType": "STANDARD",
            "RoleArn": role_arn or {"Fn::GetAtt": ["StateMachineRole", "Arn"]},
            "DefinitionString": {"Fn::Sub": self.definition_text},
        }}

    def starter_role(self, logical: str, service: str) -> None:
        self.resources[logical] = role(service, "start-pipeline", [
            {"Effect": "Allow", "Action": ["states:StartExecution"], "Resource": {"Ref": "StateMachine"}}])

    def triggers(self) -> None:
        plan = self.plan
        if plan.schedule:
            self.starter_role("SchedulerRole", "scheduler.amazonaws.com")
            self.resources["Schedule"] = {"Type": "AWS::Scheduler::Schedule", "Properties": {
                "Description": f"dagsmith pipeline {plan.name}: {plan.schedule}",
                "ScheduleExpression": cron_expression(plan.schedule),
                "ScheduleExpressionTimezone": "UTC",
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "Target": {"Arn": {"Ref": "StateMachine"}, "RoleArn": {"Fn::GetAtt": ["SchedulerRole", "Arn"]},
                           "Input": '{"run_date": "<aws.scheduler.scheduled-time>"}'},
            }}
        if plan.on_new_data:
            self.starter_role("EventsRole", "events.amazonaws.com")
        for trigger in plan.on_new_data:
            source = trigger["source"]
            uri = trigger.get("uri") or ""
            bucket, prefix = s3_parts(uri) if uri.startswith("s3://") else ("", "")
            param = logical_id("DataBucket", source)
            self.param(param, f"Bucket whose Object Created events (EventBridge notifications on) start a run for new data in {source}", bucket)
            condition = logical_id("Watch", source)
            self.conditions[condition] = {"Fn::Not": [{"Fn::Equals": [{"Ref": param}, ""]}]}
            detail: dict = {"bucket": {"name": [{"Ref": param}]}}
            keys = new_data_keys(prefix, self.options.get("new_data_marker", NEW_DATA_MARKER))
            if keys:
                detail["object"] = {"key": keys}
            self.resources[logical_id("NewData", source)] = {"Type": "AWS::Events::Rule", "Condition": condition, "Properties": {
                "Description": f"new data in {source}: start a run (min_interval holds in the run's admission)",
                "EventPattern": {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": detail},
                "Targets": [{"Id": "pipeline", "Arn": {"Ref": "StateMachine"}, "RoleArn": {"Fn::GetAtt": ["EventsRole", "Arn"]},
                             "InputTransformer": {"InputPathsMap": {"time": "$.time"},
                                                  "InputTemplate": '{"trigger": {"sources": ["' + source + '"], "at": <time>}}'}}],
            }}


def new_data_keys(key_pattern: str, marker: str | None) -> list[dict]:
    """The rule's filter on the object's key: a source that is ONE object (no wildcard, a file
    name) arrives as that object; otherwise the marker object under the source's prefix, so ONE
    arrival of data (a multi-file drop and its marker) starts ONE execution, not one per file;
    without a marker (null), every object under the prefix does. EventBridge's wildcard matching
    ('*' any characters, '\\*' a literal one:
    https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html)."""
    prefix, one_object = watched_key(key_pattern)
    if one_object:
        return [prefix]  # one object: it is the arrival (an exact match)
    if not marker:
        return [{"prefix": prefix}] if prefix else []

    def literal(text: str) -> str:
        return text.replace("\\", "\\\\").replace("*", "\\*")

    under = [{"wildcard": literal(prefix) + "*/" + literal(marker)}]
    if not prefix or prefix.endswith("/"):  # the marker directly in the source's folder
        under.insert(0, {"wildcard": literal(prefix) + literal(marker)})
    return under


def role(service: str, policy: str, statements: list[dict]) -> dict:
    return {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]},
        "Policies": [{"PolicyName": policy, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
    }}
