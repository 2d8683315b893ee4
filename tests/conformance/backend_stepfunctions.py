"""AWS Step Functions on moto (>= 5.2.5): `dagsmith compile --target stepfunctions`, the template
deployed into moto's CloudFormation by dagsmith's own deploy (a change set), the state machine
started there and run by moto's interpreter (`execute_state_machine`).

moto's ECS and Batch run no containers, so a TEST-ONLY HOOK stands in for them: when the
interpreter calls ecs:runTask / batch:submitJob (the AWS SDK integration's, which dagsmith uses
for Batch, and the optimized one's), the hook checks the task (job) definition
exists in moto, then runs the container's command (the ASL's Command override: the callback
wrapper around the plan's `dagsmith ...` command) as a local process with the container's
environment (the definition's static env + the override's, task token included), in the spec's
folder (the image's working directory), with OMP_NUM_THREADS = the task's vCPUs. The process
sends its result with SendTaskSuccess / SendTaskFailure to moto's server, as a container would to
AWS. The hook also refuses what AWS refuses and moto accepts (the rules above the worker, each
citing its AWS page): a Task Resource whose integration pattern the service does not support
(the state machine is not created, as CreateStateMachine answers on AWS), and container
overrides over 8,192 characters (the task fails, as RunTask answers). Everything else (Parallel, Choice, Map, Distributed Map with its ItemReader from S3, Retry,
Catch, the callbacks, the DynamoDB lock) is moto's interpreter.

Task instances (Outcome.instances) come from the execution itself: a Distributed Map's child
executions (its map run, found by the Map's Label), an inline Map's iterations (its
MapIterationStarted events); a fan-out compiled as a Distributed Map that succeeded without a
map run is an error here, so the scenario over the map limit proves the distributed path ran. A
FAILED execution must end in the Fail state naming a failed step (dagsmith.ValidationFailed for
a validation): the failing-validation scenario proves the execution "fails naming it".

moto runs in ONE worker process of this adapter (mock_aws patches botocore process-wide, so the
pytest process and the other lanes stay untouched) with a moto server thread the task processes
reach (AWS_ENDPOINT_URL). Three moto gaps are bridged in the hook, the harness or the input, not the backend:
moto's interpreter does not convert ECS/Batch parameters to boto's casing (so the hook reads
them itself), its CloudFormation creates state machines where its interpreter does not look
(the harness points it at the interpreter's backend), and its `$$.Execution.StartTime` is a datetime object its intrinsics cannot read
(so every run passes `run_date`; the scenario's, else today's UTC date, which is what the
state machine takes from the start time on AWS).
"""

from __future__ import annotations

import atexit
import datetime as dt
import importlib.util
import json
import multiprocessing
import os
import re
import sys
import time
import traceback
import uuid
from pathlib import Path

from dagsmith.backends.stepfunctions import asl

from .adapters import Adapter, Outcome, StoreView, combine, read_ir

BIN = Path(sys.executable).parent
REGION = "us-east-1"
BUCKET = "dagsmith-conformance"
STATES = {"succeeded": "succeeded", "gated": "succeeded", "skipped": "skipped", "not_run": "not_run", "failed": "failed"}
PARAMETERS = {"Subnets": "subnet-0a1b2c", "SecurityGroups": "sg-0a1b2c", "Cluster": "conformance", "JobQueue": "conformance",
              "DefaultImage": "dagsmith:conformance"}  # the scenarios set no image: the hook runs this checkout


# --- what AWS refuses and moto accepts: the hook's rules ----------------------------------------

# Which integration patterns each service supports in a STANDARD workflow, as AWS's table lists
# them ("Optimized integrations in Step Functions" and "AWS SDK integrations in Step Functions",
# https://docs.aws.amazon.com/step-functions/latest/dg/integrate-optimized.html): "" is Request
# Response, ".sync" Run a Job, ".waitForTaskToken" Wait for Callback. AWS refuses a definition
# whose Task names a pair marked "Not supported" (CreateStateMachine: InvalidDefinition,
# SCHEMA_VALIDATION_FAILED); moto's interpreter accepts it and runs it. Services dagsmith does not
# use are listed too, so the table is the page's, not a list of what we emit.
INTEGRATIONS = {
    "apigateway": {"", ".waitForTaskToken"},
    "athena": {"", ".sync"},
    "batch": {"", ".sync"},  # "AWS Batch | Standard & Express | Standard | Not supported"
    "bedrock": {"", ".sync", ".waitForTaskToken"},
    "codebuild": {"", ".sync"},
    "dynamodb": {""},
    "ecs": {"", ".sync", ".waitForTaskToken"},
    "eks": {"", ".sync", ".waitForTaskToken"},
    "elasticmapreduce": {"", ".sync"},
    "emr-containers": {"", ".sync"},
    "emr-serverless": {"", ".sync"},
    "events": {"", ".waitForTaskToken"},
    "glue": {"", ".sync"},
    "databrew": {"", ".sync"},
    "lambda": {"", ".waitForTaskToken"},
    "mediaconvert": {"", ".sync"},
    "sagemaker": {"", ".sync"},
    "sns": {"", ".waitForTaskToken"},
    "sqs": {"", ".waitForTaskToken"},
    "states": {"", ".sync", ".sync:2", ".waitForTaskToken"},
    "aws-sdk": {"", ".waitForTaskToken"},  # "Over two hundred services | Standard & Express | Not supported | Standard"
}
_RESOURCE = re.compile(r"arn:aws:states:::(aws-sdk:)?([a-z0-9-]+):([A-Za-z0-9]+)((?:\.sync(?::2)?)|\.waitForTaskToken)?")

# Request size limits AWS enforces and moto does not (each with the page that states it):
OVERRIDES_MAX = 8192  # ECS RunTask `overrides`, "This limit includes the JSON formatting characters of the override
# structure": https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html (Batch jobs run as ECS
# tasks and fail with "Container Overrides length must be at most 8192": github.com/Netflix/metaflow/issues/977)
TOKEN_MAX = 2048  # SendTaskSuccess `taskToken`: https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskSuccess.html
# CreateTrainingJob `Environment`: at most 100 entries, keys and values up to 512 characters, keys [a-zA-Z_][a-zA-Z0-9_]*:
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html
SAGEMAKER_ENV_COUNT_MAX, SAGEMAKER_ENV_KEY_MAX, SAGEMAKER_ENV_VALUE_MAX = 100, 512, 512


def integration_problem(resource: str) -> str | None:
    """Why AWS refuses a Task's Resource, or None (a Lambda function's ARN is not an integration)."""
    if not resource.startswith("arn:aws:states:::"):
        return None
    match = _RESOURCE.fullmatch(resource)
    if not match:
        return f"{resource}: not an integration's Resource"
    sdk, service, _action, pattern = match.groups()
    service = "aws-sdk" if sdk else service
    if service not in INTEGRATIONS:
        return f"{resource}: no optimized integration for {service!r} (use arn:aws:states:::aws-sdk:{service}:...)"
    if (pattern or "") not in INTEGRATIONS[service]:
        return f"{resource}: {service} does not support the {pattern} integration pattern"
    return None


def definition_problems(definition: dict) -> list[str]:
    """Every Task's Resource the table refuses, Parallel branches and Map processors included."""
    out = []
    for state in definition.get("States", {}).values():
        if state.get("Type") == "Task":
            problem = integration_problem(state.get("Resource", ""))
            if problem:
                out.append(problem)
        inner = state.get("Branches", []) + [state[k] for k in ("ItemProcessor", "Iterator") if k in state]
        for machine in inner:
            out += definition_problems(machine)
    return out


def overrides_problem(override: dict) -> str | None:
    """ECS's / Batch's refusal of a container override: its JSON (service casing) too long."""
    size = len(json.dumps(override, separators=(",", ":"), ensure_ascii=False))
    if size > OVERRIDES_MAX:
        return f"Container Overrides length must be at most {OVERRIDES_MAX} (got {size})"
    return None


def training_environment_problems(environment: dict) -> list[str]:
    """SageMaker CreateTrainingJob's refusals of an Environment (ValidationException)."""
    out = []
    if len(environment) > SAGEMAKER_ENV_COUNT_MAX:
        out.append(f"Environment: {len(environment)} entries, at most {SAGEMAKER_ENV_COUNT_MAX}")
    for key, value in environment.items():
        if len(key) > SAGEMAKER_ENV_KEY_MAX or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", key):
            out.append(f"Environment key {key[:40]!r}: at most {SAGEMAKER_ENV_KEY_MAX} of [a-zA-Z_][a-zA-Z0-9_]*")
        if len(str(value)) > SAGEMAKER_ENV_VALUE_MAX:
            out.append(f"Environment value of {key}: {len(str(value))} characters, at most {SAGEMAKER_ENV_VALUE_MAX}")
    return out


def refuse(code: str, message: str):
    """The error a service answers with, as boto raises it (moto's interpreter fails the Task with it)."""
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "hook"}},
                       "RunTask")


# --- the worker (moto lives here) ---------------------------------------------------------------


class Worker:
    def __init__(self, log_dir: str):
        self.log_dir = Path(log_dir)
        self.roots: dict = {}  # state machine name -> the folder its tasks run in
        self.processes: list = []

    def start(self) -> None:
        import logging

        from moto import mock_aws
        from moto.server import ThreadedMotoServer

        logging.getLogger("moto").setLevel(logging.CRITICAL)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self.mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self.mock.start()
        install_hook(self)
        # moto's CloudFormation creates state machines in its plain backend, while executions run in
        # the interpreter's (parser) backend: point the CloudFormation hooks at the latter
        from moto.stepfunctions import models as sfn_models
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        sfn_models.stepfunctions_backends = stepfunctions_parser_backends
        import boto3

        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        boto3.client("ecs", region_name=REGION).create_cluster(clusterName=PARAMETERS["Cluster"])

    def deploy(self, ir_file: str, stack: str, prefix: str, root: str, options: dict | None = None, spec_dir: str | None = None) -> dict:
        """Deploy the compiled IR as `dagsmith deploy` does (`spec_dir`: the spec's folder, whose code
        deploy packages and puts in the store); the tasks run in `root` (the image's working folder)."""
        from dagsmith.backends import DeployRequest
        from dagsmith.backends.stepfunctions.backend import StepFunctionsBackend
        from dagsmith.ir import IR

        ir = IR.loads(Path(ir_file).read_text(encoding="utf-8"))
        base = dict(ir.backends.get("stepfunctions") or {})
        base.update(options or {})
        base["parameters"] = {**PARAMETERS, "ArtifactBucket": BUCKET, "StorePrefix": prefix, **(base.get("parameters") or {})}
        base.pop("role_arn", None)  # the template's own role (moto checks no permissions either way)
        import dagsmith.backends.stepfunctions.deploy as deploy_module

        backend = StepFunctionsBackend()
        lines = deploy_module.deploy(backend, ir, base, DeployRequest(stack_name=stack, region=REGION), poll=0.05, spec_dir=spec_dir)
        import boto3

        machines = boto3.client("stepfunctions", region_name=REGION).list_state_machines()["stateMachines"]
        (machine,) = [m["stateMachineArn"] for m in machines if m["name"] == (options or {}).get("state_machine_name", stack)]
        self.roots[machine.rsplit(":", 1)[-1]] = root
        plan = backend.plan(ir, base)
        return {"lines": lines, "machine": machine, "history_bound": asl.history_bound(plan, backend.settings(plan, base))}

    def create_machine(self, name: str, definition: str) -> str:
        """CreateStateMachine straight from a definition (the hook's refusals, without a template)."""
        import boto3

        sfn = boto3.client("stepfunctions", region_name=REGION)
        return sfn.create_state_machine(name=name, definition=definition, roleArn=f"arn:aws:iam::123456789012:role/{name}")["stateMachineArn"]

    def view(self, store: str, run_id: str, ir: dict) -> dict:
        view = StoreView(store, run_id, ir)
        return {"metrics": view.metrics(), "gates": view.gates(), "validation": view.validation(), "rows": view.rows(),
                "items": view.items(), "deployed": view.deployed(), "tables": view.tables()}

    def run(self, machine: str, execution_input: dict, name: str, timeout: float = 900) -> dict:
        return self.run_many(machine, [execution_input], [name], timeout)[0]

    def run_many(self, machine: str, inputs: list, names: list, timeout: float = 900) -> list:
        """Start the executions at once (a burst of triggers), then wait for each."""
        import boto3

        sfn = boto3.client("stepfunctions", region_name=REGION)
        self.running = machine.rsplit(":", 1)[-1]
        arns = [sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(execution_input))["executionArn"]
                for execution_input, name in zip(inputs, names)]
        return [self._wait(sfn, arn, name, timeout) for arn, name in zip(arns, names)]

    def start_many(self, machine: str, inputs: list, names: list) -> list:
        """Start the executions and return their ARNs at once (wait_many waits for them)."""
        import boto3

        sfn = boto3.client("stepfunctions", region_name=REGION)
        self.running = machine.rsplit(":", 1)[-1]
        return [sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(execution_input))["executionArn"]
                for execution_input, name in zip(inputs, names)]

    def wait_many(self, arns: list, names: list, timeout: float = 900) -> list:
        import boto3

        sfn = boto3.client("stepfunctions", region_name=REGION)
        return [self._wait(sfn, arn, name, timeout) for arn, name in zip(arns, names)]

    def lock_item(self, stack: str, pipeline: str, put: dict | None = None) -> dict | None:
        """The admission lock's item in the stack's LockTable (after writing `put`, if given)."""
        import boto3

        table = boto3.client("cloudformation", region_name=REGION).describe_stack_resource(
            StackName=stack, LogicalResourceId="LockTable")["StackResourceDetail"]["PhysicalResourceId"]
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        if put is not None:
            dynamodb.put_item(TableName=table, Item={k: {"S": v} for k, v in put.items()})
        item = dynamodb.get_item(TableName=table, Key={"pipeline": {"S": pipeline}}, ConsistentRead=True).get("Item")
        return {k: v["S"] for k, v in item.items()} if item else None

    def _wait(self, sfn, arn: str, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            described = sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {name} still RUNNING after {timeout}s")
            time.sleep(0.2)
        events = []
        token = None
        while True:
            page = sfn.get_execution_history(executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {}))
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                break
        summary = None
        for event in events:
            details = event.get("stateExitedEventDetails") or {}
            if details.get("name") == "Summary":
                summary = json.loads(details["output"])
        failure = [e.get("executionFailedEventDetails") for e in events if e["type"] == "ExecutionFailed"]
        iterations: dict = {}  # inline Map state name -> iterations started
        for event in events:
            if event["type"] == "MapIterationStarted":
                state = event["mapIterationStartedEventDetails"]["name"]
                iterations[state] = iterations.get(state, 0) + 1
        map_runs = {}  # Distributed Map label -> its child executions (the task instances)
        for listed in sfn.list_map_runs(executionArn=arn).get("mapRuns", []):
            described = sfn.describe_map_run(mapRunArn=listed["mapRunArn"])
            label = listed["mapRunArn"].rsplit("/", 1)[-1].rsplit(":", 1)[0]
            map_runs[label] = {"executions": described["executionCounts"]["total"], "items": described["itemCounts"]["total"],
                               "status": described["status"]}
        return {
            "status": described["status"],
            "output": json.loads(described["output"]) if described.get("output") else None,
            "summary": summary,
            "failure": failure[0] if failure else None,
            "events": len(events),
            "types": sorted({e["type"] for e in events}),
            "entered": sorted({e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e}),
            "iterations": iterations,
            "map_runs": map_runs,
            "name": name,
        }


def install_hook(worker: Worker) -> None:
    """ecs:runTask / batch:submitJob: the container's command as a local process (see the module)."""
    import subprocess

    from moto.stepfunctions.parser import models as parser_models
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_aws_sdk as aws_sdk
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_batch as batch
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_ecs as ecs

    def launch(definition_env: dict, command: list[str], overrides: list[dict], machine: str, vcpus: int) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSMITH_", "AWS_"))}
        environ.update(definition_env)
        environ.update({item["Name"]: item["Value"] for item in overrides})
        environ.update(AWS_ENDPOINT_URL=worker.url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                       AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                       OMP_NUM_THREADS=str(max(1, vcpus)))
        root = worker.roots[machine]
        log = open(worker.log_dir / "tasks.log", "ab")
        worker.processes.append(subprocess.Popen(command, cwd=root, env=environ, stdout=log, stderr=log))

    def machine_of(env) -> str:
        return worker.running  # one execution at a time in this worker (its child executions included)

    def ecs_task(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        import boto3

        params = normalised_parameters
        problem = overrides_problem(lower_keys(params.get("Overrides", {})))
        if problem:
            raise refuse("InvalidParameterException", problem)
        described = boto3.client("ecs", region_name=REGION).describe_task_definition(taskDefinition=params["TaskDefinition"])["taskDefinition"]
        (container,) = [c for c in described["containerDefinitions"] if c["name"] == params["Overrides"]["ContainerOverrides"][0]["Name"]]
        override = params["Overrides"]["ContainerOverrides"][0]
        launch({e["name"]: e["value"] for e in container.get("environment", [])}, override["Command"], override.get("Environment", []),
               machine_of(env), int(described.get("cpu") or 1024) // 1024)
        task_arn = f"arn:aws:ecs:{REGION}:123456789012:task/{params['Cluster']}/{uuid.uuid4().hex}"
        env.stack.append({"Tasks": [{"TaskArn": task_arn, "ClusterArn": params["Cluster"], "LastStatus": "PROVISIONING"}]})

    def batch_job(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        import boto3

        params = normalised_parameters
        problem = overrides_problem(lower_keys(params.get("ContainerOverrides", {})))
        if problem:  # Batch accepts the job, then the job FAILS with this reason (the ECS task is refused)
            raise refuse("ClientException", problem)
        (described,) = boto3.client("batch", region_name=REGION).describe_job_definitions(jobDefinitions=[params["JobDefinition"]])["jobDefinitions"]
        container = described["containerProperties"]
        vcpu = next((float(r["value"]) for r in container.get("resourceRequirements", []) if r["type"] == "VCPU"), 1.0)
        override = params["ContainerOverrides"]
        launch({e["name"]: e["value"] for e in container.get("environment", [])}, override["Command"], override.get("Environment", []),
               machine_of(env), int(vcpu))
        env.stack.append({"JobId": uuid.uuid4().hex, "JobName": params["JobName"]})

    sdk_call = aws_sdk.StateTaskServiceAwsSdk._eval_service_task

    def sdk_task(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        # arn:aws:states:::aws-sdk:batch:submitJob(.waitForTaskToken): the SDK's own parameter names
        # (PascalCase of the API's), as the optimized integration's; the rest is moto's call
        if self.resource.api_name == "batch" and self.resource.api_action.lower() == "submitjob":
            return batch_job(self, env, resource_runtime_part, normalised_parameters, state_credentials)
        return sdk_call(self, env, resource_runtime_part, normalised_parameters, state_credentials)

    validate = parser_models.StepFunctionsParserBackend._validate_definition

    def validate_definition(definition: str):
        validate(definition=definition)
        problems = definition_problems(json.loads(definition))
        if problems:  # as CreateStateMachine / UpdateStateMachine answer on AWS
            raise parser_models.InvalidDefinition("SCHEMA_VALIDATION_FAILED: " + "; ".join(problems))

    ecs.StateTaskServiceEcs._eval_service_task = ecs_task
    batch.StateTaskServiceBatch._eval_service_task = batch_job
    aws_sdk.StateTaskServiceAwsSdk._eval_service_task = sdk_task
    parser_models.StepFunctionsParserBackend._validate_definition = staticmethod(validate_definition)


def lower_keys(value):
    """A request's Parameters in the service's own JSON casing (containerOverrides, name, ...)."""
    if isinstance(value, dict):
        return {k[:1].lower() + k[1:]: lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lower_keys(v) for v in value]
    return value


def serve(conn, log_dir: str) -> None:
    with open(Path(log_dir) / "worker.log", "ab", buffering=0) as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    worker = Worker(log_dir)
    try:
        worker.start()
        conn.send(("ok", worker.url))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        request = conn.recv()
        if request is None:
            return
        op, kwargs = request
        try:
            conn.send(("ok", getattr(worker, op)(**kwargs)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


class MotoStepFunctions:
    """A moto worker process: start(), call("deploy"|"run", ...), stop()."""

    def __init__(self):
        self.process = None

    def start(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child, str(self.log_dir)), name="conformance-stepfunctions", daemon=True)
        self.process.start()
        child.close()
        kind, got = self.conn.recv()
        assert kind == "ok", got
        self.url = got
        atexit.register(self.stop)

    def call(self, op: str, timeout: float = 1200, **kwargs):
        self.conn.send((op, kwargs))
        if not self.conn.poll(timeout):
            raise TimeoutError(f"the moto worker did not answer {op} within {timeout}s (log: {self.log_dir})")
        kind, got = self.conn.recv()
        assert kind == "ok", f"moto worker {op} raised (logs in {self.log_dir}):\n{got[-4000:]}"
        return got

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)
        self.process = None


def all_states(definition: dict) -> dict:
    """Every state of a definition by name, those inside Parallel branches and Map processors too."""
    out = {}
    for name, state in definition["States"].items():
        out[name] = state
        for inner in state.get("Branches", []) + ([state["ItemProcessor"]] if "ItemProcessor" in state else []):
            out.update(all_states(inner))
    return out


def compile_spec(spec: Path, out: Path, env: str | None) -> Path:
    import subprocess

    argv = [str(BIN / "dagsmith"), "compile", str(spec), "--target", "stepfunctions", "-o", str(out)]
    if env:
        argv += ["--env", env]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=spec.parent)
    assert result.returncode == 0, f"dagsmith compile --target stepfunctions failed:\n{result.stderr[-3000:]}"
    (ir_file,) = out.glob("*.ir.json")
    return ir_file


class StepFunctionsAdapter(Adapter):
    name = "stepfunctions"
    slow = True

    def __init__(self):
        self.moto = MotoStepFunctions()
        self.count = 0

    def unavailable(self) -> str | None:
        for module in ("moto", "boto3", "antlr4"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed: pip install 'dagsmith[test]'"
        return None

    def map_limit_options(self, limit: int) -> dict:
        # at most `limit` task instances, and an inline Map of one item at most, so that the
        # scenario's fan-out runs through the Distributed Map path (ItemReader from S3)
        return {"max_map_length": limit, "inline_map_limit": 1}

    def start(self, workspace: Path) -> None:
        self.moto.start(Path(workspace) / "moto-logs")

    def stop(self) -> None:
        self.moto.stop()

    def prepare(self, spec: Path, *, env: str | None, workdir: Path):
        ir_file = compile_spec(spec, Path(workdir) / "stepfunctions", env)
        self.count += 1
        stack = f"conformance-{self.count}"
        deployed = self.moto.call("deploy", ir_file=str(ir_file), stack=stack, prefix=f"runs-{self.count}", root=str(Path(spec).parent),
                                  options={"state_machine_name": stack}, spec_dir=str(Path(spec).parent))
        ir = read_ir(ir_file)
        states = all_states(json.loads(next(Path(ir_file).parent.glob("*.asl.json")).read_text(encoding="utf-8")))
        distributed = [s["id"] for s in ir["steps"] if s.get("fanout")
                       and states[asl.state_name("Map", s["id"])]["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"]
        return {"ir": ir, "machine": deployed["machine"], "prefix": f"runs-{self.count}", "root": Path(spec).parent, "distributed": distributed,
                "history_bound": deployed["history_bound"]}

    def run(self, handle, *, params: dict, run_date: str | None, workdir: Path) -> Outcome:
        run_date = run_date or dt.datetime.now(dt.timezone.utc).date().isoformat()
        execution_input = {"params": dict(params), "run_date": run_date}
        name = f"run-{uuid.uuid4().hex[:12]}"
        got = self.moto.call("run", machine=handle["machine"], execution_input=execution_input, name=name)
        summary = got["output"] or got["summary"]
        assert summary is not None, f"the execution ended before its summary: {got}"
        ir = handle["ir"]
        states = summary["steps"]
        store = f"s3://{BUCKET}/{handle['prefix']}"
        view = self.moto.call("view", store=store, run_id=summary["run_id"], ir=ir)
        status = {"SUCCEEDED": (got["output"] or {}).get("status", "succeeded"), "FAILED": "failed"}.get(got["status"], got["status"])
        instances = {}  # step id -> task instances: a fan-out's Map iterations or child executions, else one task
        for step in ir["steps"]:
            if not step.get("fanout"):
                instances[step["id"]] = 1
            elif asl.map_label(step["id"]) in got["map_runs"]:  # a Distributed Map: one child execution per range
                instances[step["id"]] = got["map_runs"][asl.map_label(step["id"])]["executions"]
            else:
                instances[step["id"]] = got["iterations"].get(asl.state_name("Map", step["id"]), 0)
        for step in handle["distributed"]:  # compiled as a Distributed Map: it must have run as one
            assert states.get(step) != "succeeded" or asl.map_label(step) in got["map_runs"], (
                f"{step} succeeded without a map run: {got['map_runs']}")
        # the compile-time bound on the parent's history events (asl.history_bound) holds here
        assert got["events"] <= handle["history_bound"], f"{got['events']} history events, over the bound {handle['history_bound']}"
        if got["status"] == "FAILED":  # the Fail state names the failed step, or the validation and says so
            kinds = {s["id"]: s["kind"] for s in ir["steps"]}
            failure = got["failure"] or {}
            named = [sid for sid, state in states.items() if state == "failed" and f"{sid!r}" in failure.get("cause", "")]
            assert named and failure.get("error") == ("dagsmith.ValidationFailed" if kinds[named[0]] == "validate" else "dagsmith.StepFailed"), (
                f"the execution failed without naming its failed step: {failure}, {states}")
        return Outcome(
            backend=self.name,
            status=status,
            steps={s["id"]: combine([STATES.get(states.get(s["id"]), str(states.get(s["id"])))]) for s in ir["steps"]},
            metrics=view["metrics"],
            gates=view["gates"],
            validation=view["validation"],
            rows=view["rows"],
            items=view["items"],
            deployed=view["deployed"],
            tables=view["tables"],
            run_id=summary["run_id"],
            run_date=summary["run_date"],
            root=Path(handle["root"]),
            instances=instances,
            native={**states, "execution": got["status"], "failure": got["failure"], "events": got["events"], "map_runs": got["map_runs"],
                    "logs": str(self.moto.log_dir)},
        )


ADAPTER = StepFunctionsAdapter()
