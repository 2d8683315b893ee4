"""A stand-in for the Kubeflow training operator (v1.9), for tests: there is no cluster here.

`run_training_job(manifest, env, cwd, timeout)` does, with local processes, what the operator
does with pods for the PyTorchJob and MPIJob that backends/kubernetes.py `training_job` builds,
and returns the `status` the operator would write on the job, so an Argo `resource` template's
successCondition / failureCondition (`training_job_conditions`) can be evaluated on it
(interpreter.condition, as Argo does).

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
  Success (pytorchjob_controller.go:383-401 UpdateJobStatus): every Master replica succeeded;
  then the pods still running go as cleanPodPolicy says (job.go:122-136 CleanUpResources ->
  DeletePodsAndServices, job.go:43-69: None keeps them, Running/All delete them) and each
  type's `active` is counted as `succeeded` (job.go:131-135).
- Failure: only `runPolicy.backoffLimit: 0` with restartPolicy Never is implemented (what
  kubernetes.training_job writes; anything else is refused). Then the FIRST failed pod fails the
  job in ReconcileJobs before the replicas are reconciled (job.go:192-247, v1.9.0): every pod is
  deleted (job.go:225: the status is not Failed yet, so cleanPodPolicy does not apply), the
  condition Failed is appended (`Running` set to False: pkg/util/status.go:103-149) and
  `replicaStatuses` are NOT updated: they stay as the previous reconcile wrote them (pods
  `active`, none `failed`), and no later reconcile touches them (job.go:122-144). So does
  `runPolicy.activeDeadlineSeconds` (job.go:211-247).
- MPIJob (pkg/controller.v1/mpi/mpijob_controller.go, v1 API of the training operator): the
  operator mounts a ConfigMap at /etc/mpi with the hostfile (`<job>-worker-<i>
  slots=<slotsPerWorker>` per worker, newConfigMap :1227-1249) and kubexec.sh (`kubectl exec
  $POD -- /bin/sh -c "$*"`), sets OMPI_MCA_plm_rsh_agent=/etc/mpi/kubexec.sh and
  OMPI_MCA_orte_default_hostfile=/etc/mpi/hostfile in the launcher (:1085-1093), and runs
  `sleep 365d` in a worker without a command (:942-944). Here: the same hostfile with the same
  pod names, a kubexec.sh that runs `/bin/sh -c "$*"` as a process "in" the named worker pod
  (its container's environment; an unknown pod fails as kubectl's NotFound does), the /etc/mpi
  paths of the launcher's command and environment mapped to a local folder standing in for the
  mount. The launcher runs its own command: `mpirun` reaches the workers through the rsh agent;
  `horovodrun` checks every hostfile host over ssh first (horovod 0.28.1 runner/launch.py:58-105,
  655) and fails, as there is no sshd in the workers. A worker container with a command of its
  own is refused. Success: the Launcher succeeded (mpijob_controller.go:415-430).
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


def _reconcile(pods: list[_Pod], timeout: float, deadline_seconds: float | None, succeeded) -> tuple[str, dict]:
    """The operator's reconcile loop over the pods, until the job is finished: ("Succeeded",
    counts) once `succeeded(counts)` holds; ("Failed", counts written before the first failure)
    at the first failed pod; ("DeadlineExceeded", those counts) past activeDeadlineSeconds. Only
    a success counts what it sees (see the module docstring)."""
    started = time.monotonic()
    written: dict = {}  # replicaStatuses as the last reconcile wrote them: the one creating the pods saw them active
    for pod in pods:
        written.setdefault(pod.replica, {"active": 0})["active"] += 1
    while True:
        seen = _count(pods)
        if any(entry.get("failed") for entry in seen.values()):
            return "Failed", written
        if succeeded(seen):
            return "Succeeded", seen
        elapsed = time.monotonic() - started
        if deadline_seconds is not None and elapsed > deadline_seconds:
            return "DeadlineExceeded", written
        if elapsed > timeout:
            raise TimeoutError(f"the training job did not finish within {timeout:g}s (the harness's timeout); "
                               "still running: " + ", ".join(p.name for p in pods if p.poll() is None))
        written = seen
        time.sleep(0.1)


def _finish(outcome: str, pods: list[_Pod], clean_pod_policy: str) -> None:
    """What happens to the pods when the job is finished: a failed job's are all deleted
    (job.go:216-227); a succeeded job's still running go unless cleanPodPolicy is None
    (job.go:43-69). A pod left running runs to its own end, as on a cluster."""
    if outcome != "Succeeded" or clean_pod_policy in ("Running", "All"):
        for pod in pods:
            pod.stop()
        return
    for pod in pods:
        pod.proc.wait()


def _condition(kind: str, type_: str, status: str, message: str, reason: str | None = None) -> dict:
    now = _now()
    return {"type": type_, "status": status, "reason": reason or f"{kind}{type_}", "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}


def _status(kind: str, name: str, counts: dict, outcome: str, started: str) -> dict:
    """conditions in the operator's order (status.go:103-149: appended; Running set to False when
    the job ends), replicaStatuses, times."""
    conditions = [_condition(kind, "Created", "True", f"{kind} {name} is created."),
                  _condition(kind, "Running", "False", f"{kind} {name} is running.")]
    if outcome == "Succeeded":
        counts = {rtype: {"succeeded": entry.get("succeeded", 0) + entry.get("active", 0)} if entry.get("active") else entry
                  for rtype, entry in counts.items()}  # job.go:131-135
        counts = {rtype: {k: v for k, v in entry.items() if v} for rtype, entry in counts.items()}
        conditions.append(_condition(kind, "Succeeded", "True", f"{kind} {name} is successfully completed."))
    elif outcome == "DeadlineExceeded":
        conditions.append(_condition(kind, "Failed", "True", f"Job {name} has failed because it was active longer than specified deadline",
                                     reason=f"{kind}Failed"))
    else:
        conditions.append(_condition(kind, "Failed", "True", f"Job {name} has failed because it has reached the specified backoff limit",
                                     reason=f"{kind}Failed"))
    return {"conditions": conditions, "replicaStatuses": counts, "startTime": started, "completionTime": _now()}


def _count(pods: list[_Pod]) -> dict:
    """replicaStatuses from the pods: active (running), succeeded, failed per replica type."""
    counts: dict = {}
    for pod in pods:
        entry = counts.setdefault(pod.replica, {})
        code = pod.poll()
        key = "active" if code is None else "succeeded" if code == 0 else "failed"
        entry[key] = entry.get(key, 0) + 1
    return counts


def _run_policy(kind: str, spec: dict) -> str:
    """The runPolicy this stand-in implements: backoffLimit 0; the cleanPodPolicy (default None)."""
    run_policy = spec.get("runPolicy") or {}
    if run_policy.get("backoffLimit") != 0:
        raise UnsupportedManifest(f"{kind}: only runPolicy.backoffLimit 0 is implemented (a failed pod fails the job)")
    return run_policy.get("cleanPodPolicy") or "None"


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
    clean_pod_policy = _run_policy("PyTorchJob", spec)
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
        masters = int(replicas["Master"].get("replicas", 1))
        outcome, counts = _reconcile(pods, timeout, _deadline(spec), lambda seen: seen.get("Master", {}).get("succeeded", 0) == masters)
        _report_failures(pods)
        _finish(outcome, pods, clean_pod_policy)
    finally:
        for pod in pods:
            pod.stop()
    for replica in replicas:
        counts.setdefault(replica, {})
    return _status("PyTorchJob", name, counts, outcome, started)


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
    if any(r.get("restartPolicy", "OnFailure") != "Never" for r in replicas.values()):
        raise UnsupportedManifest("MPIJob: only restartPolicy Never is implemented (no pod restarts here)")
    clean_pod_policy = _run_policy("MPIJob", spec)
    mount = logs / "etc-mpi"
    where = f"{name}-launcher"
    launcher_env = {**base_environment(env), **_container_env(launcher, env, where)}
    operator_env = mpi_mount(mount, name, int(spec.get("slotsPerWorker") or 1), int(replicas["Worker"].get("replicas", 1)),
                             {**base_environment(env), **_container_env(worker, env, f"{name}-worker")}, cwd)
    local = lambda a: str(mount) + a[len(MPI_MOUNT):] if a == MPI_MOUNT or a.startswith(MPI_MOUNT + "/") else a  # noqa: E731
    argv = [local(a) for a in _argv(launcher, where)]
    process_env = {**{k: local(v) for k, v in launcher_env.items()}, **operator_env}
    pods = []
    try:
        pods.append(_Pod(where, "Launcher", argv, process_env, cwd, logs))
        started = _now()
        outcome, counts = _reconcile(pods, timeout, _deadline(spec), lambda seen: bool(seen.get("Launcher", {}).get("succeeded")))
        _report_failures(pods)
        _finish(outcome, pods, clean_pod_policy)
    finally:
        for pod in pods:
            pod.stop()
    counts.setdefault("Launcher", {})
    counts["Worker"] = {}  # the idle workers' pods: not run as processes here (kubexec.sh runs what mpirun starts in them)
    return _status("MPIJob", name, counts, outcome, started)


def mpi_mount(mount: Path, job: str, slots: int, workers: int, worker_env: dict, cwd: Path) -> dict:
    """The operator's /etc/mpi for job `job` in folder `mount` (hostfile, kubexec.sh), one
    script per worker pod standing in for `kubectl exec POD -- /bin/sh -c "$*"` in that pod
    (its container's environment, the image's working directory); returns the environment the
    operator gives the launcher, pointing at them (mpijob_controller.go:1085-1093, 1227-1249)."""
    import shlex

    mount.mkdir(parents=True)
    pods = mount / "pods"
    pods.mkdir()
    names = [f"{job}-worker-{i}" for i in range(workers)]
    (mount / "hostfile").write_text("".join(f"{n} slots={slots}\n" for n in names), encoding="utf-8")
    exports = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(worker_env.items()))
    for pod_name in names:
        (pods / pod_name).write_text(f"cd {shlex.quote(str(cwd))} && exec env -i {exports} /bin/sh -c \"$1\"\n", encoding="utf-8")
    kubexec = mount / "kubexec.sh"
    kubexec.write_text(f"""#!/bin/sh
POD_NAME=$1
shift
if [ ! -f {shlex.quote(str(pods))}/"$POD_NAME" ]; then echo "Error from server (NotFound): pods \\"$POD_NAME\\" not found" >&2; exit 1; fi
exec /bin/sh {shlex.quote(str(pods))}/"$POD_NAME" "$*"
""", encoding="utf-8")
    kubexec.chmod(0o755)
    return {"OMPI_MCA_plm_rsh_agent": str(kubexec), "OMPI_MCA_orte_default_hostfile": str(mount / "hostfile")}


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
