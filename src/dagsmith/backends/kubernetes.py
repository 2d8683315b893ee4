"""What every backend that runs steps as Kubernetes pods shares (Airflow's kubernetes mode, Argo).

- Pod resources: cpu/memory requests and `nvidia.com/gpu` limits (GPUs cannot be overcommitted,
  so Kubernetes takes them as limits).
- Distributed training runs its `workers` as processes in ONE pod (runtime/distributed.py), so
  the pod asks for what all of them need: `resources` are per worker, and each worker gets
  `gpus_per_worker` GPUs (docs/distributed.md). A `resources.gpu` that disagrees is a warning.
- Secrets and connections as Secret refs: secret NAME is the Secret `k8s_name(NAME)` with the
  key NAME; connection NAME is the Secret `dagsmith-conn-<k8s_name(NAME)>` with the key `uri`,
  both set as the environment variables the runtime reads (NAME, DAGSMITH_CONN_<NAME>).
- Name rules: DNS-1123 labels (naming.k8s_name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import naming
from ..ir import IR, Step
from ..runtime.sources import connection_env
from .problems import Problem, error, step_path, warning

_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)")


@dataclass(frozen=True)
class SecretRef:
    env: str  # the variable the step reads
    secret: str  # the Kubernetes Secret's name
    key: str  # the key inside it


def workers(step: Step) -> tuple[int, int]:
    """(workers, gpus per worker) of a distributed training step; (1, resources.gpu) otherwise."""
    distributed = (step.config or {}).get("distributed") if step.kind == "train" else None
    if distributed:
        return int(distributed.get("workers") or 1), int(distributed.get("gpus_per_worker") or 0)
    return 1, int(step.resources.get("gpu") or 0)


def pod_resources(step: Step) -> dict:
    """{"requests": {cpu, memory}, "limits": {"nvidia.com/gpu"}} for the step's one pod."""
    count, gpus = workers(step)
    requests = {key: scale(str(step.resources[key]), count) for key in ("cpu", "memory") if key in step.resources}
    limits = {"nvidia.com/gpu": str(gpus * count)} if gpus else {}
    return {"requests": requests, "limits": limits}


def scale(quantity: str, factor: int) -> str:
    """A Kubernetes quantity times a whole number, in its own unit ("2Gi" x 4 = "8Gi")."""
    if factor == 1:
        return quantity
    match = _QUANTITY.fullmatch(quantity)
    if not match:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, unit = match.groups()
    value = float(number) * factor
    return f"{int(value) if value.is_integer() else round(value, 6)}{unit}"


def secret_refs(step: Step) -> list[SecretRef]:
    return [SecretRef(name, naming.k8s_name(name), name) for name in step.secrets] + [
        SecretRef(connection_env(c), naming.k8s_name(f"dagsmith-conn-{c}"), "uri") for c in step.connections
    ]


def check(ir: IR, namespace: str | None, options_path: tuple) -> list[Problem]:
    problems: list[Problem] = []
    if namespace and naming.k8s_name(namespace) != namespace:
        problems.append(error(options_path + ("namespace",), f"{namespace!r} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"))
    for step in ir.steps:
        distributed = (step.config or {}).get("distributed") if step.kind == "train" else None
        if not distributed:
            continue
        given, per_worker = step.resources.get("gpu"), int(distributed.get("gpus_per_worker") or 0)
        if given is not None and int(given) != per_worker:
            problems.append(warning(
                step_path(step, "resources", "gpu"),
                f"resources.gpu ({given}) and distributed.gpus_per_worker ({per_worker}) disagree: each of the "
                f"{distributed.get('workers')} workers gets gpus_per_worker, so the pod asks for {pod_resources(step)['limits'].get('nvidia.com/gpu', '0')} GPUs",
            ))
    return problems
