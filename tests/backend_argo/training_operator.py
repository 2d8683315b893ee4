"""A stand-in for the Kubeflow training operator (v1.9), for tests: there is no cluster here.

`run_training_job(manifest, env, cwd, timeout)` does, with local processes, what the operator
does with pods for the PyTorchJob and MPIJob that backends/kubernetes.py `training_job` builds,
and returns the `status` the operator would write on the job, so an Argo `resource` template's
successCondition / failureCondition (`training_job_conditions`) can be evaluated on it.

What it does, as the operator's source does it (github.com/kubeflow/training-operator, v1.9.0):

- The manifest must pass the CRD's schema strictly (schemas.py): the API server would refuse it.
- Every replica has exactly ONE container (more is refused: nothing here needs them); its
  `command` + `args` run as a local process in `cwd`, with the environment: this process's
  (without launcher variables of its own: RANK, WORLD_SIZE, MASTER_*, PET_*, HOROVOD_*,
  OMPI_*, PMI_*, SM_*, DAGSMITH_CLUSTER), then `env`, then the container's `env` (a `valueFrom`
  is refused unless `env` gives that name's value: no Secrets here), then what the operator
  adds. The Python that runs this harness comes first on PATH (the image's `dagsmith`,
  `horovodrun`).
- PyTorchJob (pkg/controller.v1/pytorch/envvar.go, master.go): the container named `pytorch`
  must be there. Each pod gets PYTHONUNBUFFERED=1, MASTER_ADDR and PET_MASTER_ADDR (the master's
  service there; 127.0.0.1 here), MASTER_PORT and PET_MASTER_PORT (the container port
  `pytorchjob-port` there; a free local port here, since tests run side by side), WORLD_SIZE =
  replicas x nprocPerNode (1 unless an integer), RANK and PET_NODE_RANK (Master 0, Worker i ->
  i + 1), PET_NPROC_PER_NODE (nprocPerNode, default "auto"), PET_NNODES (replicas).
  Status (pytorchjob_controller.go UpdateJobStatus): Succeeded when every Master replica
  succeeded; with restartPolicy Never, Failed when a replica failed; `replicaStatuses` count
  each type's succeeded / failed pods.
- MPIJob (pkg/controller.v1/mpi/mpijob_controller.go): the operator mounts a ConfigMap at
  /etc/mpi with the hostfile (`<job>-worker-<i> slots=<slotsPerWorker>` per worker) and sets
  OMPI_MCA_orte_default_hostfile in the launcher; worker pods idle (`sleep 365d`) until the
  launcher's mpirun reaches them with kubectl exec. Here the hostfile lists the same number of
  slots on this machine (`localhost slots=<workers x slotsPerWorker>`), a path under
  /etc/mpi/ in the launcher's command is read from a local folder standing in for the mount,
  and no worker process is started: the launcher (horovodrun) starts the ranks here, as it
  does on the workers there. A worker container with a command of its own is refused. Status
  (updateMPIJobStatus): the Launcher's succeeded / failed (1) decides the job.
- `runPolicy.activeDeadlineSeconds`: past it the processes are stopped and the job is Failed
  with reason DeadlineExceeded (the operator deletes the pods: their counts stay as they were).
- `timeout` is this harness's own limit: past it every process is stopped and TimeoutError is
  raised (the operator has no such limit).

The output of a replica that failed is printed to stderr (pytest shows it with the failure).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend_argo import schemas

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DAGSMITH_CLUSTER",
                 "DAGSMITH_SAGEMAKER_RESOURCECONFIG", "DAGSMITH_MASTER_PORT")
LAUNCHER_PREFIXES = ("PET_", "HOROVOD_", "OMPI_", "PMI_", "SM_")
MPI_MOUNT = "/etc/mpi"
LOG_TAIL = 40


class UnsupportedManifest(ValueError):
    """A manifest this stand-in does not implement (so it cannot pass what the operator would not)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def base_environment(env: dict) -> dict:
    """This process's environment without launcher variables of its own, then `env`; the
    running Python's bin folder first on PATH."""
    out = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith(LAUNCHER_PREFIXES)}
    out.update({k: str(v) for k, v in env.items()})
    out["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), out.get("PATH", "")])
    return out


def _container(kind: str, replica: str, spec: dict) -> dict:
    pod = ((spec.get("template") or {}).get("spec")) or {}
    containers = pod.get("containers") or []
    if len(containers) != 1:
        raise UnsupportedManifest(f"{kind} {replica}: {len(containers)} containers; this stand-in runs exactly one per replica")
    unsupported = sorted(set(pod) - {"containers"})
    if unsupported:
        raise UnsupportedManifest(f"{kind} {replica}: pod fields {unsupported} are not implemented here")
    return containers[0]


def _container_env(container: dict, env: dict, where: str) -> dict:
    out = {}
    for item in container.get("env") or []:
        if "value" in item:
            out[item["name"]] = str(item["value"])
        elif "valueFrom" in item:
            if item["name"] not in env:
                raise UnsupportedManifest(f"{where}: env {item['name']} comes from {json.dumps(item['valueFrom'])}, which "
                                          "cannot be read here: give its value in `env`")
            out[item["name"]] = str(env[item["name"]])
        else:
            out[item["name"]] = ""
    return out


def _argv(container: dict, where: str) -> list[str]:
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    if not argv:
        raise UnsupportedManifest(f"{where}: no command: the image's entrypoint cannot be run here")
    return argv


class _Pod:
    def __init__(self, name: str, replica: str, argv: list[str], env: dict, cwd: Path, logs: Path):
        self.name, self.replica = name, replica
        self.log = logs / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def poll(self):
        return self.proc.poll()

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def tail(self) -> str:
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL:])


def _wait(pods: list[_Pod], timeout: float, deadline_seconds: float | None) -> bool:
    """Wait for every process; False when runPolicy.activeDeadlineSeconds passed (all stopped)."""
    started = time.monotonic()
    try:
        while any(p.poll() is None for p in pods):
            elapsed = time.monotonic() - started
            if deadline_seconds is not None and elapsed > deadline_seconds:
                for pod in pods:
                    pod.stop()
                return False
            if elapsed > timeout:
                raise TimeoutError(f"the training job did not finish within {timeout:g}s (the harness's timeout); "
                                   "still running: " + ", ".join(p.name for p in pods if p.poll() is None))
            time.sleep(0.1)
        return True
    finally:
        for pod in pods:
            pod.stop()


def _condition(kind: str, type_: str, status: str, message: str) -> dict:
    now = _now()
    return {"type": type_, "status": status, "reason": f"{kind}{type_}", "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}


def _status(kind: str, name: str, counts: dict, outcome: str | None, started: str, deadline: bool) -> dict:
    conditions = [_condition(kind, "Created", "True", f"{kind} {name} is created."),
                  _condition(kind, "Running", "False", f"{kind} {name} is running.")]
    if deadline:
        failed = _condition(kind, "Failed", "True", f"{kind} {name} is active more than its activeDeadlineSeconds")
        failed["reason"] = "DeadlineExceeded"
        conditions.append(failed)
    elif outcome == "Succeeded":
        conditions.append(_condition(kind, "Succeeded", "True", f"{kind} {name} is successfully completed."))
    elif outcome == "Failed":
        conditions.append(_condition(kind, "Failed", "True", f"{kind} {name} has failed"))
    status = {"conditions": conditions, "replicaStatuses": counts, "startTime": started}
    if deadline or outcome:
        status["completionTime"] = _now()
    return status


def _count(pods: list[_Pod]) -> dict:
    counts: dict = {}
    for pod in pods:
        entry = counts.setdefault(pod.replica, {})
        code = pod.poll()
        if code == 0:
            entry["succeeded"] = entry.get("succeeded", 0) + 1
        elif code is not None:
            entry["failed"] = entry.get("failed", 0) + 1
    return counts


def _report_failures(pods: list[_Pod]) -> None:
    for pod in pods:
        if pod.poll() not in (0, None):
            print(f"--- {pod.name} exited with {pod.poll()}; its last output:\n{pod.tail()}", file=sys.stderr)


def _deadline(spec: dict) -> float | None:
    value = (spec.get("runPolicy") or {}).get("activeDeadlineSeconds")
    return float(value) if value else None


def _pytorchjob(manifest: dict, env: dict, cwd: Path, timeout: float, logs: Path) -> dict:
    name, spec = manifest["metadata"].get("name", "job"), manifest["spec"]
    unsupported = sorted(set(spec) - {"pytorchReplicaSpecs", "runPolicy", "nprocPerNode"})
    if unsupported:
        raise UnsupportedManifest(f"PyTorchJob: spec fields {unsupported} are not implemented here")
    replicas = spec["pytorchReplicaSpecs"]
    if set(replicas) - {"Master", "Worker"} or "Master" not in replicas:
        raise UnsupportedManifest(f"PyTorchJob: replica types {sorted(replicas)}: this stand-in runs a Master (+ Workers)")
    if any(r.get("restartPolicy", "OnFailure") != "Never" for r in replicas.values()):
        raise UnsupportedManifest("PyTorchJob: only restartPolicy Never is implemented (no pod restarts here)")
    nproc = spec.get("nprocPerNode", "auto")
    per_node = int(nproc) if str(nproc).isdigit() else 1
    total = sum(int(r.get("replicas", 1)) for r in replicas.values())
    port = free_port()
    base = base_environment(env)
    pods = []
    try:
        for replica in ("Master", "Worker"):
            if replica not in replicas:
                continue
            container = _container("PyTorchJob", replica, replicas[replica])
            if container.get("name") != "pytorch":
                raise UnsupportedManifest(f"PyTorchJob {replica}: the container must be named 'pytorch' (the operator "
                                          f"reads its port), got {container.get('name')!r}")
            for index in range(int(replicas[replica].get("replicas", 1))):
                rank = index + 1 if replica == "Worker" else index
                where = f"{name}-{replica.lower()}-{index}"
                process_env = {**base, **_container_env(container, env, where), "PYTHONUNBUFFERED": "1",
                               "MASTER_PORT": str(port), "PET_MASTER_PORT": str(port), "MASTER_ADDR": "127.0.0.1",
                               "PET_MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": str(total * per_node),
                               "RANK": str(rank), "PET_NODE_RANK": str(rank), "PET_NPROC_PER_NODE": str(nproc),
                               "PET_NNODES": str(total)}
                pods.append(_Pod(where, replica, _argv(container, where), process_env, cwd, logs))
        started = _now()
        finished = _wait(pods, timeout, _deadline(spec))
    finally:
        for pod in pods:
            pod.stop()
    counts = _count(pods)
    _report_failures(pods)
    masters = int(replicas["Master"].get("replicas", 1))
    outcome = None
    if counts.get("Master", {}).get("succeeded", 0) == masters:
        outcome = "Succeeded"
    elif any(entry.get("failed") for entry in counts.values()):
        outcome = "Failed"
    for replica in replicas:
        counts.setdefault(replica, {})
    return _status("PyTorchJob", name, counts, outcome, started, not finished)


def _mpijob(manifest: dict, env: dict, cwd: Path, timeout: float, logs: Path) -> dict:
    name, spec = manifest["metadata"].get("name", "job"), manifest["spec"]
    unsupported = sorted(set(spec) - {"mpiReplicaSpecs", "runPolicy", "slotsPerWorker", "mainContainer"})
    if unsupported:
        raise UnsupportedManifest(f"MPIJob: spec fields {unsupported} are not implemented here")
    replicas = spec["mpiReplicaSpecs"]
    if set(replicas) != {"Launcher", "Worker"}:
        raise UnsupportedManifest(f"MPIJob: replica types {sorted(replicas)}: this stand-in runs a Launcher over Workers")
    if int(replicas["Launcher"].get("replicas", 1)) != 1:
        raise UnsupportedManifest("MPIJob: exactly one Launcher")
    worker = _container("MPIJob", "Worker", replicas["Worker"])
    if worker.get("command") or worker.get("args"):
        raise UnsupportedManifest("MPIJob Worker: a command of its own is not implemented here (the operator's workers idle "
                                  "until the launcher reaches them)")
    launcher = _container("MPIJob", "Launcher", replicas["Launcher"])
    slots = int(spec.get("slotsPerWorker") or 1)
    workers = int(replicas["Worker"].get("replicas", 1))
    mount = logs / "etc-mpi"
    mount.mkdir()
    (mount / "hostfile").write_text(f"localhost slots={workers * slots}\n", encoding="utf-8")
    where = f"{name}-launcher"
    argv = [str(mount) + a[len(MPI_MOUNT):] if a == MPI_MOUNT or a.startswith(MPI_MOUNT + "/") else a
            for a in _argv(launcher, where)]
    process_env = {**base_environment(env), **_container_env(launcher, env, where),
                   "OMPI_MCA_orte_default_hostfile": str(mount / "hostfile")}
    pods = []
    try:
        pods.append(_Pod(where, "Launcher", argv, process_env, cwd, logs))
        started = _now()
        finished = _wait(pods, timeout, _deadline(spec))
    finally:
        for pod in pods:
            pod.stop()
    counts = _count(pods)
    _report_failures(pods)
    launched = counts.get("Launcher", {})
    outcome = "Succeeded" if launched.get("succeeded") else "Failed" if launched.get("failed") else None
    counts.setdefault("Launcher", {})
    counts["Worker"] = {}  # idle pods, deleted when the launcher finished (cleanPodPolicy Running)
    return _status("MPIJob", name, counts, outcome, started, not finished)


def run_training_job(manifest: dict, env: dict, cwd: Path, timeout: float) -> dict:
    """Run the PyTorchJob or MPIJob `manifest` as the training operator would, with local
    processes in `cwd`; returns the job's `status` (replicaStatuses, conditions, times)."""
    kind = manifest.get("kind")
    if kind not in ("PyTorchJob", "MPIJob"):
        raise UnsupportedManifest(f"kind {kind!r}: the training operator stand-in runs PyTorchJob and MPIJob")
    schemas.check(manifest)
    with tempfile.TemporaryDirectory(prefix="training-operator-") as folder:
        run = _pytorchjob if kind == "PyTorchJob" else _mpijob
        return run(manifest, env, Path(cwd), timeout, Path(folder))


def condition_holds(condition: str, status: dict) -> bool:
    """An Argo resource condition (`a.b.c > 0`, requirements joined by commas, all must hold;
    operators = == != > <) on `{"status": status}`, as Argo evaluates it with gjson paths; a
    missing path does not hold. For tests of the conditions training_job_conditions writes."""
    import re

    document = {"status": status}
    for requirement in condition.split(","):
        match = re.fullmatch(r"\s*([\w.-]+)\s*(==|=|!=|>|<)\s*([\w.-]+)\s*", requirement)
        if not match:
            raise UnsupportedManifest(f"condition {requirement!r} is not implemented here")
        path, op, expected = match.groups()
        value = document
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        if op in (">", "<"):
            if not isinstance(value, int) or (value <= int(expected) if op == ">" else value >= int(expected)):
                return False
        elif (str(value) == expected) == (op == "!="):
            return False
    return True
