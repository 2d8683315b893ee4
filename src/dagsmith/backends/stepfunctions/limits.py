"""Size limits AWS enforces on what a state hands to a service, checked at compile time.

moto enforces none of these; AWS refuses the request when the state runs (a run that fails
after hours, at the step that hits it). Each is bounded here from the state as emitted, with
every run-time value at its largest, and a step that could exceed one is a positioned error.

- ECS RunTask: "A total of 8192 characters are allowed for overrides. This limit includes the
  JSON formatting characters of the override structure."
  (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html, `overrides`).
  AWS Batch jobs run as ECS tasks and fail with "Container Overrides length must be at most
  8192" (reported in github.com/Netflix/metaflow/issues/977): the same bound applies to them.
- Task tokens are 1 to 2,048 characters (SendTaskSuccess `taskToken`:
  https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskSuccess.html); each
  callback task's token is in its environment override.
- Execution names are 1 to 80 characters (StartExecution `name`:
  https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html): the run id.
- SageMaker CreateTrainingJob `Environment`: at most 100 entries, keys up to 512 characters
  matching [a-zA-Z_][a-zA-Z0-9_]*, values up to 512 characters
  (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html).

The run's params, unbounded, never go into an environment: tasks read them from the store
(asl.PARAMS_KEY); what remains is bounded by the template's parameters (the bucket name's 63
characters, StorePrefix's MaxLength) and the spec's own names and values.
"""

from __future__ import annotations

import json
import re

from ...ir import IR
from ...runtime import environment as E
from ..plan import Plan, Task
from ..problems import Problem, error, step_path
from . import asl
from .callback import ITEM_ENV, SECRET_REFS_ENV, TOKEN_ENV
from .cfn import STORE_PREFIX_MAX

OVERRIDES_MAX = 8192
TOKEN_MAX = 2048
EXECUTION_NAME_MAX = 80
BUCKET_MAX = 63
SAGEMAKER_ENV_COUNT_MAX = 100
SAGEMAKER_ENV_KEY_MAX = 512
SAGEMAKER_ENV_VALUE_MAX = 512
SAGEMAKER_ENV_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
LARGEST_ITEM = {"start": 10**15, "stop": 10**15}  # a Map item: one range of the fan-out


def concrete(text: str) -> str:
    """A value of the definition with the template's parameters at their longest."""
    return text.replace(asl.sub("ArtifactBucket"), "b" * BUCKET_MAX).replace(asl.sub("StorePrefix"), "p" * STORE_PREFIX_MAX)


def largest_trigger(ir: IR) -> dict:
    """The largest DAGSMITH_TRIGGER the template's new-data rules give (cfn.triggers)."""
    return {"sources": [max((t["source"] for t in ir.triggers.get("on_new_data") or []), key=len, default="")],
            "at": "2000-01-01T00:00:00Z"}


def largest_value(name: str, ir: IR) -> str:
    """The longest value a run gives the environment variable `name` of a state."""
    run_id = "r" * EXECUTION_NAME_MAX
    if name == E.RUN_ID:
        return run_id
    if name == E.RUN_DATE:
        return "2000-01-01"
    if name == E.PARAMS_URI:
        return concrete(f"s3://{asl.sub('ArtifactBucket')}/{asl.sub('StorePrefix')}/{asl.PARAMS_KEY.format(run_id)}")
    if name == TOKEN_ENV:
        return "t" * TOKEN_MAX
    if name == ITEM_ENV:
        return json.dumps(LARGEST_ITEM, separators=(",", ":"))
    if name == E.TRIGGER:
        return json.dumps(largest_trigger(ir), separators=(",", ":"))
    raise ValueError(f"no bound for the run-time value of {name}")  # a new variable needs its bound here


def override_size(state: dict, ir: IR) -> int:
    """The characters of a container task's overrides as the service receives them (JSON), at
    their largest; the same for ECS's containerOverrides and Batch's."""
    parameters = state["Parameters"]
    given = parameters["Overrides"]["ContainerOverrides"][0] if "Overrides" in parameters else parameters["ContainerOverrides"]
    override = {key[:1].lower() + key[1:]: value for key, value in given.items() if key != "Environment"}
    override["command"] = [concrete(arg) for arg in override.pop("command", [])]
    override["environment"] = [{"name": e["Name"], "value": concrete(e["Value"]) if "Value" in e else largest_value(e["Name"], ir)}
                               for e in given.get("Environment", [])]
    body = {"containerOverrides": [override]} if "Overrides" in parameters else override
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False))


def where(plan: Plan, task: Task) -> tuple:
    """The spec position of a task: its step's, a fan-out's for its listing, the trigger's for admission."""
    if task.step is not None:
        return step_path(task.step)
    mapped = [t for t in plan.tasks if t.maps_over == task.id]
    if mapped and mapped[0].step is not None:
        return step_path(mapped[0].step)
    return ("triggers", "on_new_data")


def container_states(plan: Plan, settings: asl.Settings):
    """(task, state) for every container task the machine can start, as asl emits them."""
    for task in plan.tasks:
        if task.step is not None and asl.distributed_training(task.step):
            continue
        if task.kind == "admit":
            yield task, asl.container_task(task, settings)
            continue
        mapped = [t for t in plan.tasks if t.maps_over == task.id]
        if mapped:  # a fan-out's listing: its ranges go to S3 or into the state
            yield task, asl.container_task(task, settings, ranges_to_s3=asl.is_distributed(plan, mapped[0], settings))
        else:
            yield task, asl.container_task(task, settings, item=bool(task.maps_over))


def check(plan: Plan, settings: asl.Settings) -> list[Problem]:
    problems = []
    for task, state in container_states(plan, settings):
        size = override_size(state, plan.ir)
        if size > OVERRIDES_MAX:
            service = "Batch" if settings.compute == "batch" else "ECS"
            problems.append(error(where(plan, task), f"task {task.id!r}: its {service} container overrides (command and run "
                                  f"environment, the task token included) can reach {size:,} characters; AWS allows "
                                  f"{OVERRIDES_MAX:,}: shorten the step's name or the store's prefix"))
    for task in plan.tasks:
        if task.step is not None and asl.distributed_training(task.step):
            problems += training_environment_problems(task, plan.ir)
    return problems


def training_environment_problems(task: Task, ir: IR) -> list[Problem]:
    """SageMaker's Environment limits, for a distributed training step's job."""
    step, problems = task.step, []
    env = asl.training_environment(task)
    if len(env) > SAGEMAKER_ENV_COUNT_MAX:
        problems.append(error(step_path(step, "env"), f"the training job would have {len(env)} environment variables "
                              f"(the step's env, its secrets by name and the run's values); SageMaker allows {SAGEMAKER_ENV_COUNT_MAX}"))
    for key, value in env.items():
        name = key[:-2] if key.endswith(".$") else key
        origin = step_path(step, "env", name) if name in (step.env or {}) else step_path(step, "secrets") if name == SECRET_REFS_ENV else step_path(step)
        if len(name) > SAGEMAKER_ENV_KEY_MAX or not SAGEMAKER_ENV_KEY.fullmatch(name):
            problems.append(error(origin, f"{name[:60]!r}: SageMaker takes environment variable names of at most "
                                  f"{SAGEMAKER_ENV_KEY_MAX} characters matching [a-zA-Z_][a-zA-Z0-9_]*"))
            continue
        text = largest_value(name, ir) if key.endswith(".$") else concrete(value)
        if len(text) > SAGEMAKER_ENV_VALUE_MAX:
            what = ("the secrets' and connections' names (passed by name in DAGSMITH_SECRET_REFS, fetched when the job "
                    "starts) come to" if name == SECRET_REFS_ENV else f"the value of {name} can be")
            problems.append(error(origin, f"{what} {len(text):,} characters in the training job's environment; "
                                  f"SageMaker allows {SAGEMAKER_ENV_VALUE_MAX} per value"))
    return problems
