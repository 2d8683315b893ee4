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

import copy
import re
from dataclasses import dataclass

from .. import naming
from ..ir import IR, Step
from ..runtime.sources import connection_env
from .plan import container_env
from .problems import Problem, error, step_path, warning

_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)")


@dataclass(frozen=True)
class SecretRef:
    env: str  # the variable the step reads
    secret: str  # the Kubernetes Secret's name
    key: str  # the key inside it


def is_distributed(step: Step) -> bool:
    """A train step with `training.distributed`: its workers are ranks of one training job."""
    return step.kind == "train" and bool((step.config or {}).get("distributed"))


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


def pod_env(step: Step, writable=lambda value: True, code: str | None = None) -> dict[str, str]:
    """The step's `env` values a pod's container gets in its spec (plan.container_env): those
    without a `$`, since Kubernetes expands `$(NAME)` in an env value and reads `$$` as `$`
    (core/v1 EnvVar.value: "Variable references $(VAR_NAME) are expanded using the previously
    defined environment variables in the container ... Double $$ are reduced to a single $",
    https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#environment-variables).
    The others are set by the runtime when the step starts, as everywhere. `code`: Plan.code."""
    return container_env(step, lambda value: "$" not in value and writable(value), code)


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


# --- distributed training across nodes: Kubeflow training operator (v1.9) jobs -------------------
#
# A `training.distributed` step can also run as a training-operator job whose pods are the workers
# (docs/distributed.md, "Across nodes"): every worker runs the step command once, as one rank, and
# the runtime forms the group from what the operator sets (runtime/cluster.py).
#
# - framework torch -> PyTorchJob: Master (1) + Worker (workers - 1), container `pytorch` (the
#   operator reads the port `pytorchjob-port` of that container, and sets MASTER_ADDR (the master
#   pod's service), MASTER_PORT, RANK (Master 0, Worker i -> i + 1), WORLD_SIZE (replicas x
#   nprocPerNode; nprocPerNode is "1": one rank per pod), PET_* likewise).
# - framework horovod -> MPIJob (kubeflow.org/v1, the training operator's): Launcher (1) running
#   `mpirun` over Worker (workers) pods, one slot each, as the operator's own example does
#   (examples/mpi/tensorflow-mnist.yaml at v1.9.0). The operator gives the launcher the hostfile
#   (`<job>-worker-<i> slots=1`) and OMPI_MCA_plm_rsh_agent=/etc/mpi/kubexec.sh, and runs `sleep`
#   in the workers (pkg/controller.v1/mpi/mpijob_controller.go:942-943, 1085-1093, 1227-1249):
#   there is no sshd, so mpirun reaches them through `kubectl exec`. horovodrun cannot start there:
#   it checks every host of its --hostfile over ssh first. mpirun passes the job's environment to
#   the ranks with `-x NAME`; horovod in the image must be built with MPI (HOROVOD_WITH_MPI=1).
#
# restartPolicy Never on every replica, runPolicy.backoffLimit 0: a rank that restarts cannot rejoin
# a running group, so a failure fails the job and retries belong to the orchestrator (Argo's
# retryStrategy creates a new job; generateName). On the first failed pod the operator marks the job
# Failed and stops updating it (pkg/controller.v1/common/job.go:192-247: replicaStatuses stay as
# they were, the failed pod is never counted), so the failure can only be read in
# `status.conditions` (training_job_conditions). cleanPodPolicy Running: then the operator deletes
# the pods still running (job.go:225), so a failed job holds no GPU while a retry starts another.

TRAINING_API_VERSION = "kubeflow.org/v1"
PYTORCH_CONTAINER = "pytorch"  # the operator finds the master port on the container of this name
PYTORCH_PORT_NAME, PYTORCH_PORT = "pytorchjob-port", 23456  # the operator's defaults
MPI_CONTAINER = "mpi"
MPI_HOSTFILE = "/etc/mpi/hostfile"  # written by the operator into the launcher
MPI_LAUNCHER_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}}


def _replica_resources(step: Step) -> dict:
    """One worker's requests (cpu, memory) and GPU limit (gpus_per_worker)."""
    _, gpus = workers(step)
    requests = {key: str(step.resources[key]) for key in ("cpu", "memory") if key in step.resources}
    resources = {}
    if requests:
        resources["requests"] = requests
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    return resources


def _container(name: str, image: str, command: list[str] | None, env: list[dict], resources: dict,
               ports: list | None = None) -> dict:
    container = {"name": name, "image": image}
    if command:
        container["command"] = [str(part) for part in command]
    if env:
        container["env"] = [dict(item) for item in env]
    if ports:
        container["ports"] = ports
    if resources:
        container["resources"] = resources
    return container


def _replica(count: int, container: dict) -> dict:
    """A replica spec with its own copy of the container (no shared objects: no YAML anchors)."""
    return {"replicas": count, "restartPolicy": "Never", "template": {"spec": {"containers": [copy.deepcopy(container)]}}}


def mpi_launcher_command(count: int, argv: list[str], env_names: list[str] = ()) -> list[str]:
    """What the MPIJob's launcher runs: mpirun with the operator's hostfile and rsh agent (from its
    environment), one rank per slot, the flags of the operator's example, each of `env_names`
    passed on to the ranks (`-x`), each rank running the step command (runtime/cluster.py reads
    Open MPI's OMPI_COMM_WORLD_RANK / _SIZE)."""
    exported = [part for name in dict.fromkeys(["PATH", "LD_LIBRARY_PATH", *env_names]) for part in ("-x", name)]
    return ["mpirun", "-np", str(count), "--allow-run-as-root", "-bind-to", "none", "-map-by", "slot", *exported,
            *[str(part) for part in argv]]


def training_job(step: Step, *, name: str, image: str, argv: list[str], env: list[dict], namespace: str | None) -> dict:
    """The Kubeflow PyTorchJob (framework torch) or MPIJob (framework horovod) that runs the
    distributed train step `step` with its `workers` as pods; `argv` is the step command each
    rank runs, `env` the container env (Kubernetes EnvVar dicts, values or secretKeyRefs)."""
    distributed = (step.config or {}).get("distributed") if step.kind == "train" else None
    if not distributed:
        raise ValueError(f"step {step.id!r} is not a distributed train step")
    framework = distributed.get("framework") or "torch"
    count, _ = workers(step)
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    run_policy = {"backoffLimit": 0}
    if step.timeout:
        run_policy["activeDeadlineSeconds"] = int(step.timeout)
    resources = _replica_resources(step)
    if framework == "torch":
        container = _container(PYTORCH_CONTAINER, image, argv, env, resources,
                               [{"name": PYTORCH_PORT_NAME, "containerPort": PYTORCH_PORT, "protocol": "TCP"}])
        replicas = {"Master": _replica(1, container)}
        if count > 1:
            replicas["Worker"] = _replica(count - 1, container)
        # cleanPodPolicy Running: once a replica failed the job is Failed and the ranks still running
        # (stuck in a collective, holding GPUs) are deleted (see the notes above)
        spec = {"nprocPerNode": "1", "runPolicy": {**run_policy, "cleanPodPolicy": "Running"}, "pytorchReplicaSpecs": replicas}
        return {"apiVersion": TRAINING_API_VERSION, "kind": "PyTorchJob", "metadata": metadata, "spec": spec}
    if framework == "horovod":
        launcher = _container(MPI_CONTAINER, image, mpi_launcher_command(count, argv, [item["name"] for item in env]), env,
                              MPI_LAUNCHER_RESOURCES)
        worker = _container(MPI_CONTAINER, image, None, env, resources)  # the operator runs `sleep 365d` in it
        spec = {
            "slotsPerWorker": 1,
            "mainContainer": MPI_CONTAINER,
            # cleanPodPolicy Running: the idle workers go when the launcher has finished
            "runPolicy": {**run_policy, "cleanPodPolicy": "Running"},
            "mpiReplicaSpecs": {"Launcher": _replica(1, launcher), "Worker": _replica(count, worker)},
        }
        return {"apiVersion": TRAINING_API_VERSION, "kind": "MPIJob", "metadata": metadata, "spec": spec}
    raise ValueError(f"training.distributed.framework {framework!r} has no training job (torch | horovod)")


def training_job_conditions(kind: str) -> tuple[str, str]:
    """(successCondition, failureCondition) of an Argo `resource` template creating a job of
    `kind`, over the status the operator writes.

    Argo reads each condition as a Kubernetes label selector whose keys are gjson paths
    (workflow/executor/resource.go:176-216 at v4.0.5): a key must be a label key (letters, digits,
    `-_.`), so a gjson query (`conditions.#(type=="Failed")`) cannot be written, but an array
    index can; the requirements of the failure condition hold if ANY does, those of the success
    condition if ALL do (matchConditions, resource.go:273-298).

    The operator appends conditions in order and never after Failed (pkg/util/status.go:103-124 at
    v1.9.0): `Created` first, then `Running` unless the job failed before running, then `Failed`
    (index 1 or 2: Restarting does not happen under restartPolicy Never). Failure is read there,
    since the replica counts freeze at the first failed pod (job.go:192-247). Success: the
    PyTorchJob's Master / the MPIJob's Launcher succeeded (counted in the same update that marks
    the job Succeeded)."""
    replica = {"PyTorchJob": "Master", "MPIJob": "Launcher"}.get(kind)
    if replica is None:
        raise ValueError(f"no training job conditions for kind {kind!r} (PyTorchJob | MPIJob)")
    return (f"status.replicaStatuses.{replica}.succeeded > 0",
            "status.conditions.1.type == Failed, status.conditions.2.type == Failed")
