"""A stand-in for a SageMaker training job of several instances, for tests: there is no AWS here.

`run_sagemaker_job(argv, instance_count, env, cwd, timeout)` runs `instance_count` local
processes, each as one instance of the job running the same container command `argv`
(AlgorithmSpecification.ContainerEntrypoint), and returns the job's exit code: 0 when every
instance exited 0, else the first failing instance's code (in host order). As SageMaker does,
each instance finds its cluster in /opt/ml/input/config/resourceconfig.json:

    {"current_host": "<this host>", "hosts": [<every host>], "network_interface_name": ...,
     "current_group_name": "homogeneousCluster", "current_instance_type": ..., "instance_groups": [...]}

Here each instance gets its own such file, named by $DAGSMITH_SAGEMAKER_RESOURCECONFIG (the
runtime's override of that path, runtime/cluster.py). SageMaker names hosts algo-1 ... algo-N and
resolves them in its network; nothing resolves those names here, so the hosts are the loopback
addresses 127.0.0.1 ... 127.0.0.N (every one reaches this machine) and the interface is `lo`.
The rendezvous port is the runtime's default (29500) there; here a free port, in
$DAGSMITH_MASTER_PORT, unless `env` gives one. TRAINING_JOB_NAME is set as SageMaker sets it.

The environment of every instance: this process's (without launcher variables of its own),
then `env` (the job's Environment); the running Python's bin folder first on PATH.
`timeout` is this harness's limit (as StoppingCondition.MaxRuntimeInSeconds): past it every
instance is stopped and TimeoutError is raised. A failed instance's output goes to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DAGSMITH_CLUSTER",
                 "DAGSMITH_SAGEMAKER_RESOURCECONFIG", "DAGSMITH_MASTER_PORT")
LAUNCHER_PREFIXES = ("PET_", "HOROVOD_", "OMPI_", "PMI_", "SM_")
JOB_NAME = "local-sagemaker-job"
LOG_TAIL = 40


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hosts(instance_count: int) -> list[str]:
    return [f"127.0.0.{i}" for i in range(1, instance_count + 1)]


def resource_config(current: str, every: list[str]) -> dict:
    return {"current_host": current, "current_instance_type": "ml.local", "current_group_name": "homogeneousCluster",
            "hosts": list(every), "network_interface_name": "lo",
            "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.local",
                                 "hosts": list(every)}]}


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


def run_sagemaker_job(argv: list[str], instance_count: int, env: dict, cwd: Path, timeout: float) -> int:
    """Run `argv` on `instance_count` local "instances" of one SageMaker training job; the job's
    exit code (0: every instance succeeded)."""
    if instance_count < 1:
        raise ValueError(f"instance_count must be at least 1, got {instance_count}")
    every = hosts(instance_count)
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith(LAUNCHER_PREFIXES)}
    base.update({k: str(v) for k, v in env.items()})
    base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
    base.setdefault("DAGSMITH_MASTER_PORT", str(free_port()))
    base.update({"TRAINING_JOB_NAME": JOB_NAME, "PYTHONUNBUFFERED": "1"})
    with tempfile.TemporaryDirectory(prefix="sagemaker-") as folder:
        procs: list[tuple[str, subprocess.Popen, Path]] = []
        try:
            for host in every:
                config = Path(folder) / host / "resourceconfig.json"
                config.parent.mkdir(parents=True)
                config.write_text(json.dumps(resource_config(host, every)), encoding="utf-8")
                log = Path(folder) / host / "output.log"
                with open(log, "wb") as out:
                    proc = subprocess.Popen([str(a) for a in argv], cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**base, "DAGSMITH_SAGEMAKER_RESOURCECONFIG": str(config)})
                procs.append((host, proc, log))
            started = time.monotonic()
            while any(proc.poll() is None for _, proc, _ in procs):
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"the SageMaker job did not finish within {timeout:g}s (the harness's timeout)")
                time.sleep(0.1)
        finally:
            for _, proc, _ in procs:
                _stop(proc)
        codes = [(host, proc.returncode, log) for host, proc, log in procs]
        for host, code, log in codes:
            if code != 0:
                lines = log.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
                print(f"--- instance {host} exited with {code}; its last output:\n" + "\n".join(lines[-LOG_TAIL:]),
                      file=sys.stderr)
        return next((code for _, code, _ in codes if code != 0), 0)
