"""Where a distributed train step runs: its own local workers, or ONE rank of a cluster that a
launcher started (docs/distributed.md, "Across nodes").

When an orchestrator's operator starts the workers (a Kubeflow PyTorchJob, horovodrun under an
MPIJob, a SageMaker training job of several instances), every worker runs the same
`dagsmith step IR TRAIN_STEP` command. `detect()` reads the launcher's environment and says
which rank this process is; the train step then trains its shard as that rank instead of
launching local workers (distributed.py).

The contract, in the order `detect()` looks (the first that matches wins):

1. `DAGSMITH_CLUSTER` forces a kind: `local` (never a cluster: launch local workers, even with
   the variables below set), `torch`, `horovod` or `sagemaker` (that kind's variables must be
   there; an error says which are missing). Unset or empty: detect.
2. SageMaker: `SM_HOSTS` (JSON list) and `SM_CURRENT_HOST`, or the file
   `$DAGSMITH_SAGEMAKER_RESOURCECONFIG` (default /opt/ml/input/config/resourceconfig.json,
   which SageMaker writes into every instance: {"current_host", "hosts",
   "network_interface_name"}). rank = index of the current host in sorted(hosts),
   world size = len(hosts), master = sorted(hosts)[0], port `$DAGSMITH_MASTER_PORT` (default
   29500). GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME default to network_interface_name.
3. Horovod (horovodrun, or mpirun under an MPIJob launcher): `HOROVOD_RANK` + `HOROVOD_SIZE`
   (horovodrun's gloo mode), else `OMPI_COMM_WORLD_RANK` + `OMPI_COMM_WORLD_SIZE` (Open MPI),
   else `PMI_RANK` + `PMI_SIZE` (MPICH / Intel MPI). hvd.init() forms the group itself.
4. torch.distributed's env:// (a Kubeflow PyTorchJob, torchrun): `RANK`, `WORLD_SIZE`,
   `MASTER_ADDR`, `MASTER_PORT`; the PyTorchJob's `PET_NODE_RANK`, `PET_NNODES`,
   `PET_MASTER_ADDR`, `PET_MASTER_PORT` stand in for a missing one. `LOCAL_RANK` (default 0)
   picks the GPU.

Nothing here imports torch or horovod.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .context import StepFailed

CLUSTER = "DAGSMITH_CLUSTER"
RESOURCECONFIG = "DAGSMITH_SAGEMAKER_RESOURCECONFIG"
DEFAULT_RESOURCECONFIG = "/opt/ml/input/config/resourceconfig.json"
MASTER_PORT = "DAGSMITH_MASTER_PORT"
DEFAULT_MASTER_PORT = 29500
KINDS = ("local", "torch", "horovod", "sagemaker")

# (rank, size) variable pairs that say "horovod (or MPI) started this process", in order
HOROVOD_VARS = (("HOROVOD_RANK", "HOROVOD_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                ("PMI_RANK", "PMI_SIZE"))
TORCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
PET_VARS = {"RANK": "PET_NODE_RANK", "WORLD_SIZE": "PET_NNODES", "MASTER_ADDR": "PET_MASTER_ADDR",
            "MASTER_PORT": "PET_MASTER_PORT"}


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in a launched cluster."""

    kind: str  # "torch" (env://: PyTorchJob, torchrun) | "horovod" (horovodrun / mpirun) | "sagemaker"
    rank: int
    world_size: int
    local_rank: int = 0
    master_addr: str | None = None  # torch and sagemaker: the rendezvous host (rank 0's)
    master_port: int | None = None
    interface: str | None = None  # sagemaker: the network interface name
    source: str = ""  # where it was read from, for messages and notes

    def torch_env(self) -> dict[str, str]:
        """The env:// variables torch.distributed.init_process_group reads for this rank."""
        env = {"MASTER_ADDR": str(self.master_addr), "MASTER_PORT": str(self.master_port), "RANK": str(self.rank),
               "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": str(self.local_rank)}
        if self.interface:
            env["GLOO_SOCKET_IFNAME"] = self.interface
            env["NCCL_SOCKET_IFNAME"] = self.interface
        return env


def _int(environ, name: str, text: str | None = None) -> int:
    text = environ.get(name) if text is None else text
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        raise StepFailed(f"distributed training: ${name} must be a whole number, got {text!r}") from None


def _check(cluster: Cluster) -> Cluster:
    if cluster.world_size < 1 or not 0 <= cluster.rank < cluster.world_size:
        raise StepFailed(f"distributed training: rank {cluster.rank} is not within a world of {cluster.world_size} "
                         f"({cluster.source})")
    return cluster


def _port(environ) -> int:
    return _int(environ, MASTER_PORT) if environ.get(MASTER_PORT) else DEFAULT_MASTER_PORT


# --- SageMaker -------------------------------------------------------------------------------------

def resourceconfig_path(environ=os.environ) -> Path:
    return Path(environ.get(RESOURCECONFIG) or DEFAULT_RESOURCECONFIG)


def _sagemaker(environ, required: bool) -> Cluster | None:
    if environ.get("SM_HOSTS") and environ.get("SM_CURRENT_HOST"):
        try:
            hosts = json.loads(environ["SM_HOSTS"])
        except ValueError:
            raise StepFailed(f"distributed training: $SM_HOSTS is not a JSON list: {environ['SM_HOSTS'][:80]!r}") from None
        current, interface, source = environ["SM_CURRENT_HOST"], environ.get("SM_NETWORK_INTERFACE_NAME"), "$SM_HOSTS, $SM_CURRENT_HOST"
    else:
        path = resourceconfig_path(environ)
        if not path.is_file():
            if required:
                raise StepFailed(f"${CLUSTER} is sagemaker, and neither $SM_HOSTS/$SM_CURRENT_HOST nor {path} "
                                 f"(${RESOURCECONFIG}) is there")
            return None
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            hosts, current = config["hosts"], config["current_host"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StepFailed(f"distributed training: {path} is not a SageMaker resource config "
                             f"({type(exc).__name__}: {exc})") from None
        interface, source = config.get("network_interface_name"), str(path)
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise StepFailed(f"distributed training: the SageMaker hosts must be a list of host names, got {hosts!r} ({source})")
    ordered = sorted(hosts)
    if current not in ordered:
        raise StepFailed(f"distributed training: the current host {current!r} is not one of the hosts {ordered} ({source})")
    return _check(Cluster(kind="sagemaker", rank=ordered.index(current), world_size=len(ordered),
                          master_addr=ordered[0], master_port=_port(environ), interface=interface or None,
                          source=f"SageMaker ({source})"))


# --- horovod / MPI ----------------------------------------------------------------------------------

def _horovod(environ, required: bool) -> Cluster | None:
    for rank_var, size_var in HOROVOD_VARS:
        if environ.get(rank_var) and environ.get(size_var):
            local = next((environ[v] for v in ("HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
                          if environ.get(v)), "0")
            return _check(Cluster(kind="horovod", rank=_int(environ, rank_var), world_size=_int(environ, size_var),
                                  local_rank=_int(environ, "LOCAL_RANK", local), source=f"${rank_var}, ${size_var}"))
    if required:
        raise StepFailed(f"${CLUSTER} is horovod, and none of " + ", ".join(f"${r}/${s}" for r, s in HOROVOD_VARS)
                         + " is set (run the step under horovodrun or mpirun)")
    return None


# --- torch env:// -----------------------------------------------------------------------------------

def _torch(environ, required: bool) -> Cluster | None:
    values = {name: environ.get(name) or environ.get(PET_VARS[name]) for name in TORCH_VARS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        # a rendezvous address without the rest is a broken launch, not "no cluster"
        if required or values["MASTER_ADDR"] or values["MASTER_PORT"]:
            raise StepFailed(f"distributed training: ${', $'.join(missing)} not set: a launched rank needs "
                             f"{', '.join(TORCH_VARS)} (a PyTorchJob sets them)")
        return None
    used = [name if environ.get(name) else PET_VARS[name] for name in TORCH_VARS]
    return _check(Cluster(kind="torch", rank=_int(environ, used[0]), world_size=_int(environ, used[1]),
                          local_rank=_int(environ, "LOCAL_RANK", environ.get("LOCAL_RANK") or "0"),
                          master_addr=values["MASTER_ADDR"], master_port=_int(environ, used[3]),
                          source="$" + ", $".join(used)))


def detect(environ=os.environ) -> Cluster | None:
    """This process's rank in a launched cluster, or None: launch local workers."""
    forced = (environ.get(CLUSTER) or "").strip().lower()
    if forced and forced not in KINDS:
        raise StepFailed(f"${CLUSTER} is {forced!r}: use one of {', '.join(KINDS)} (or leave it unset to detect)")
    if forced == "local":
        return None
    if forced:
        return {"sagemaker": _sagemaker, "horovod": _horovod, "torch": _torch}[forced](environ, True)
    return _sagemaker(environ, False) or _horovod(environ, False) or _torch(environ, False)
