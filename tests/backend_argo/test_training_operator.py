"""Distributed training as a Kubeflow training-operator job (backends/kubernetes.py training_job).

There is no Kubernetes cluster here: training_operator.py stands in for the training operator
(v1.9) and runs every replica's container command as a REAL local process with the environment
the operator gives it. The ranks are `dagsmith step IR train` processes that form their process
group from that environment (runtime/cluster.py); the job's status is evaluated with the Argo
resource conditions of training_job_conditions, as Argo evaluates them (interpreter.condition).
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from backend_argo import schemas
from backend_argo.interpreter import Invalid, condition
from backend_argo.training_operator import UnsupportedManifest, mpi_mount, run_training_job
from dagsmith.backends.kubernetes import training_job, training_job_conditions
from dagsmith.ir import Step
from dagsmith.runtime import make_context, run_step
from dagsmith.runtime.distributed import horovod_available
from dagsmith.runtime.store import LocalStore

RUN = {"DAGSMITH_RUN_ID": "r1", "DAGSMITH_RUN_DATE": "2024-06-03"}
PARAMS = "{hidden_layers: [16], epochs: 6, lr: 0.01, batch_size: 32, seed: 3}"
ESTIMATOR = f"{{estimator: dagsmith.estimators.TorchMLPClassifier, params: {PARAMS}}}"

ENTRYPOINTS = """
import os
from pathlib import Path

import torch.distributed as dist


def fail_on_rank_1(train, test, params, context):
    (Path(params["report_dir"]) / f"pid-{context.rank}.txt").write_text(str(os.getpid()))
    if context.rank == 1:
        raise ValueError("bad shard on rank 1")
    dist.barrier()  # rank 1 never comes: gloo reports its closed connection
    return None
"""


def rows(n: int = 320, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    y = (a + 0.5 * b - 0.25 * c + rng.normal(scale=0.3, size=n) > 0).astype(int)
    return pd.DataFrame({"a": a, "b": b, "c": c, "plan": rng.choice(["x", "y"], size=n), "y": y})


def spec(model: str, distributed: str) -> str:
    return textwrap.dedent(f"""
    dagsmith: 1
    pipeline: {{name: dist}}
    sources:
      rows: {{type: csv, uri: data/rows.csv}}
    training:
      inputs: [rows]
      target: y
      split: {{test_size: 0.25, seed: 1}}
      model: {model}
      distributed: {distributed}
    evaluation:
      metrics: [accuracy, roc_auc]
    """)


class Project:
    """A compiled spec (IR file) and a LocalStore holding its source table for run r1."""

    def __init__(self, folder: Path, text: str, table: pd.DataFrame):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from dagsmith.compiler import compile_spec
        from dagsmith.spec import load_spec

        folder.mkdir(parents=True, exist_ok=True)
        self.root = folder
        (folder / "pipeline.yaml").write_text(text, encoding="utf-8")
        self.ir = compile_spec(load_spec(folder / "pipeline.yaml"))
        self.ir_file = folder / "pipeline.ir.json"
        self.ir_file.write_text(self.ir.dumps(), encoding="utf-8")
        self.store = LocalStore(folder / "store")
        staging = self.store.stage(self.store.step_key("r1", "rows"))
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), staging.path("table.parquet"))
        self.store.commit(staging)
        self.train = next(s for s in self.ir.steps if s.kind == "train")

    def argv(self) -> list[str]:
        return ["dagsmith", "step", str(self.ir_file), self.train.id, "--store", str(self.store.root)]

    def env(self) -> list[dict]:
        return [{"name": k, "value": v} for k, v in {**RUN, "DAGSMITH_ROOT": str(self.root)}.items()]

    def read(self, name: str):
        path = self.store.root / self.store.step_key("r1", self.train.id) / name
        return json.loads(path.read_text()) if name.endswith(".json") else path

    def run_in_one_pod(self) -> dict:
        """The existing single-pod distributed run: the step launches its workers locally."""
        ctx = make_context(self.ir, self.train.id, self.store, None, environ={**RUN, "DAGSMITH_ROOT": str(self.root)})
        return run_step(ctx)


def job_for(project: Project, name: str = "train-job") -> dict:
    manifest = training_job(project.train, name=name, image="dagsmith:test", argv=project.argv(), env=project.env(),
                            namespace="ml")
    schemas.check(manifest)
    return manifest


def outcome(manifest: dict, status: dict, conditions: tuple[str, str] | None = None) -> str:
    """What Argo's resource template makes of the job's final status: "running" means it would
    poll for ever (the operator never writes the job again)."""
    success, failure = conditions or training_job_conditions(manifest["kind"])
    document = {**manifest, "status": status}
    if condition(document, failure, "failureCondition", any_of=True):  # Argo checks the failure condition first
        return "failed"
    return "succeeded" if condition(document, success, "successCondition") else "running"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


# --- the manifests --------------------------------------------------------------------------------

def train_step(framework: str, workers: int, gpus: int = 0, resources=None, timeout=None) -> Step:
    return Step(id="train", kind="train", resources=resources or {}, timeout=timeout,
                config={"distributed": {"framework": framework, "workers": workers, "gpus_per_worker": gpus}})


ARGV = ["dagsmith", "step", "s3://b/p/ir.json", "train", "--store", "s3://b/p"]
ENV = [{"name": "DAGSMITH_RUN_ID", "value": "{{workflow.name}}"},
       {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "TOKEN"}}}]


@pytest.mark.parametrize("workers", [1, 3])
def test_pytorchjob_manifest(workers):
    step = train_step("torch", workers, gpus=2, resources={"cpu": 4, "memory": "16Gi"}, timeout=7200)
    job = training_job(step, name="t-train", image="img:1", argv=ARGV, env=ENV, namespace="ml")
    schemas.check(job)  # strict: additionalProperties false wherever the CRD lists properties
    assert (job["apiVersion"], job["kind"], job["metadata"]) == ("kubeflow.org/v1", "PyTorchJob", {"name": "t-train", "namespace": "ml"})
    spec = job["spec"]
    assert spec["nprocPerNode"] == "1"  # WORLD_SIZE = replicas: one rank per pod
    assert spec["runPolicy"] == {"backoffLimit": 0, "activeDeadlineSeconds": 7200, "cleanPodPolicy": "Running"}
    replicas = spec["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert (replicas.get("Worker") or {}).get("replicas", 0) == workers - 1
    for replica in replicas.values():
        assert replica["restartPolicy"] == "Never"
        (container,) = replica["template"]["spec"]["containers"]
        assert container["name"] == "pytorch" and container["image"] == "img:1" and container["command"] == ARGV
        assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"}]
        assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": "2"}}
        assert container["env"] == ENV
    text = yaml.safe_dump(job)
    assert "&id" not in text  # no shared objects: plain, deterministic YAML
    assert job == training_job(step, name="t-train", image="img:1", argv=ARGV, env=ENV, namespace="ml")
    assert training_job_conditions("PyTorchJob") == ("status.replicaStatuses.Master.succeeded > 0",
                                                     "status.conditions.1.type == Failed, status.conditions.2.type == Failed")


def test_mpijob_manifest():
    step = train_step("horovod", 3, gpus=1, resources={"cpu": "2", "memory": "8Gi"})
    job = training_job(step, name="t-train", image="img:1", argv=ARGV, env=ENV, namespace=None)
    schemas.check(job)
    assert job["kind"] == "MPIJob" and job["metadata"] == {"name": "t-train"}
    spec = job["spec"]
    assert spec["slotsPerWorker"] == 1 and spec["mainContainer"] == "mpi"
    assert spec["runPolicy"] == {"backoffLimit": 0, "cleanPodPolicy": "Running"}
    launcher, worker = spec["mpiReplicaSpecs"]["Launcher"], spec["mpiReplicaSpecs"]["Worker"]
    assert launcher["replicas"] == 1 and worker["replicas"] == 3
    (lc,) = launcher["template"]["spec"]["containers"]
    # mpirun as the operator's example (examples/mpi/tensorflow-mnist.yaml), the job's env passed to the ranks
    assert lc["command"] == ["mpirun", "-np", "3", "--allow-run-as-root", "-bind-to", "none", "-map-by", "slot",
                             "-x", "PATH", "-x", "LD_LIBRARY_PATH", "-x", "DAGSMITH_RUN_ID", "-x", "TOKEN", *ARGV]
    assert "nvidia.com/gpu" not in json.dumps(lc["resources"])
    (wc,) = worker["template"]["spec"]["containers"]
    assert "command" not in wc and wc["resources"]["limits"] == {"nvidia.com/gpu": "1"} and wc["env"] == ENV
    assert training_job_conditions("MPIJob") == ("status.replicaStatuses.Launcher.succeeded > 0",
                                                 "status.conditions.1.type == Failed, status.conditions.2.type == Failed")


def test_manifest_errors_and_strictness():
    with pytest.raises(ValueError, match="not a distributed train step"):
        training_job(Step(id="t", kind="train"), name="x", image="i", argv=ARGV, env=[], namespace=None)
    with pytest.raises(ValueError, match="no training job conditions"):
        training_job_conditions("TFJob")
    job = training_job(train_step("torch", 2), name="x", image="i", argv=ARGV, env=[], namespace=None)
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["cmd"] = ["x"]
    with pytest.raises(schemas.SchemaError, match="cmd"):
        schemas.check(job)


def test_the_harness_refuses_what_it_does_not_implement(tmp_path):
    job = training_job(train_step("torch", 2), name="x", image="i", argv=ARGV, env=ENV, namespace=None)
    with pytest.raises(UnsupportedManifest, match="TOKEN comes from"):
        run_training_job(job, {}, tmp_path, 10)
    job = training_job(train_step("torch", 2), name="x", image="i", argv=ARGV, env=[], namespace=None)
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] = "OnFailure"
    with pytest.raises(UnsupportedManifest, match="restartPolicy Never"):
        run_training_job(job, {}, tmp_path, 10)
    with pytest.raises(UnsupportedManifest, match="kind 'TFJob'"):
        run_training_job({"kind": "TFJob"}, {}, tmp_path, 10)


def test_condition_evaluation():
    """Label-selector semantics (interpreter.condition): success = all requirements, failure = any."""
    doc = {"status": {"replicaStatuses": {"Master": {"succeeded": 1}, "Worker": {"failed": 1}},
                      "conditions": [{"type": "Created"}, {"type": "Failed"}]}}
    assert condition(doc, "status.replicaStatuses.Master.succeeded > 0", "s")
    assert not condition(doc, "status.replicaStatuses.Master.failed > 0", "s")
    assert condition(doc, "status.replicaStatuses.Worker.failed > 0, status.replicaStatuses.Master.succeeded == 1", "s")
    assert not condition(doc, "status.replicaStatuses.Master.succeeded != 1", "s")
    assert condition(doc, "status.replicaStatuses.Master.failed != 1", "s")  # != holds for a missing key
    failure = training_job_conditions("PyTorchJob")[1]
    assert condition(doc, failure, "f", any_of=True) and not condition(doc, failure, "f")  # Failed at index 1: any, not all
    with pytest.raises(Invalid, match="not a label key"):  # a gjson query cannot be written in a label selector
        condition(doc, 'status.conditions.#(type=="Failed").status == True', "f", any_of=True)


def test_the_mpi_mount_reaches_worker_pods_by_name_as_kubexec_does(tmp_path):
    """The operator's hostfile names the worker pods, and kubexec.sh runs a command in the named
    pod with its container's environment (no sshd; an unknown pod fails)."""
    import subprocess

    env = mpi_mount(tmp_path / "etc-mpi", "train-job", 1, 2, {"PATH": os.environ["PATH"], "WHO": "worker"}, tmp_path)
    assert (tmp_path / "etc-mpi" / "hostfile").read_text() == "train-job-worker-0 slots=1\ntrain-job-worker-1 slots=1\n"
    assert "localhost" not in (tmp_path / "etc-mpi" / "hostfile").read_text()
    assert env == {"OMPI_MCA_plm_rsh_agent": str(tmp_path / "etc-mpi" / "kubexec.sh"),
                   "OMPI_MCA_orte_default_hostfile": str(tmp_path / "etc-mpi" / "hostfile")}
    got = subprocess.run([env["OMPI_MCA_plm_rsh_agent"], "train-job-worker-1", "echo", "$WHO", "$(pwd)"], capture_output=True, text=True)
    assert (got.returncode, got.stdout) == (0, f"worker {tmp_path}\n"), got.stderr
    got = subprocess.run([env["OMPI_MCA_plm_rsh_agent"], "train-job-worker-2", "true"], capture_output=True, text=True)
    assert got.returncode == 1 and 'pods "train-job-worker-2" not found' in got.stderr


@pytest.mark.skipif(not horovod_available(), reason="needs horovodrun (scripts/install-horovod.sh)")
def test_horovodrun_cannot_start_in_a_v1_mpijob(tmp_path):
    """The launcher the backend used to write: horovodrun checks every host of the operator's
    hostfile over ssh, and the workers have no sshd (they run `sleep`): the job fails (the old
    stand-in wrote `localhost` into the hostfile, which skipped the check)."""
    step = train_step("horovod", 2)
    job = training_job(step, name="hvd", image="i", argv=["python", "-c", "print('rank')"], env=[], namespace=None)
    (launcher,) = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
    launcher["command"] = ["horovodrun", "-np", "2", "--hostfile", "/etc/mpi/hostfile", "python", "-c", "print('rank')"]
    status = run_training_job(job, {}, tmp_path, timeout=120)
    assert outcome(job, status) == "failed"


# --- real ranks ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pytorchjob_trains_across_processes_with_the_single_pod_metrics(tmp_path):
    data = rows()
    job_project = Project(tmp_path / "job", spec(ESTIMATOR, "{framework: torch, workers: 2}"), data)
    pod_project = Project(tmp_path / "pod", spec(ESTIMATOR, "{framework: torch, workers: 2}"), data)
    manifest = job_for(job_project)
    status = run_training_job(manifest, {"OMP_NUM_THREADS": "1"}, job_project.root, timeout=600)
    assert outcome(manifest, status) == "succeeded"
    assert status["replicaStatuses"] == {"Master": {"succeeded": 1}, "Worker": {"succeeded": 1}}
    assert [c["type"] for c in status["conditions"] if c["status"] == "True"] == ["Created", "Succeeded"]
    single = pod_project.run_in_one_pod()
    metrics = job_project.read("metrics.json")
    assert metrics == single["metrics"] and metrics["accuracy"] >= 0.8
    result = job_project.read("result.json")  # rank 0's: the only rank that writes
    assert result["metrics"] == metrics
    assert any("this is rank 0, which writes the outputs" in n for n in result["notes"])
    assert any("distributed training (torch, gloo): 2 worker(s)" in n for n in result["notes"])
    model = __import__("joblib").load(job_project.read("model.joblib"))
    assert model["estimator"].world_size_ == 2
    assert not list((job_project.store.root / ".staging").iterdir())  # rank 1's staged outputs were dropped


@pytest.mark.slow
def test_a_failing_worker_fails_the_pytorchjob(tmp_path):
    project = Project(tmp_path, spec("{entrypoint: 'dist_entry_mod:fail_on_rank_1', params: {report_dir: reports}}",
                                     "{framework: torch, workers: 2}"), rows())
    (tmp_path / "dist_entry_mod.py").write_text(ENTRYPOINTS)
    (tmp_path / "reports").mkdir()
    manifest = job_for(project)
    status = run_training_job(manifest, {"OMP_NUM_THREADS": "1", "DAGSMITH_DISTRIBUTED_COLLECTIVE_TIMEOUT": "60"},
                              tmp_path, timeout=300)
    assert outcome(manifest, status) == "failed"
    # frozen at the first failure (job.go:192-247): the failed pod is never counted, so the
    # failure condition this backend used to write (the Master's failed count) never holds: the
    # step would poll until its deadline (for ever without one)
    assert status["replicaStatuses"] == {"Master": {"active": 1}, "Worker": {"active": 1}}
    assert [c["type"] for c in status["conditions"]] == ["Created", "Running", "Failed"]
    old = ("status.replicaStatuses.Master.succeeded > 0", "status.replicaStatuses.Master.failed > 0")
    assert outcome(manifest, status, old) == "running"
    assert not (project.store.root / project.store.step_key("r1", project.train.id)).exists()
    assert not any(alive(int((tmp_path / "reports" / f"pid-{r}.txt").read_text())) for r in (0, 1))


@pytest.mark.slow
@pytest.mark.skipif(not horovod_available(), reason="horovod with its PyTorch binding is not importable "
                                                    "(scripts/install-horovod.sh)")
@pytest.mark.skipif(not __import__("shutil").which("mpirun"), reason="needs Open MPI's mpirun (and horovod built with MPI): "
                                                                     "the MPIJob's launcher runs mpirun, as on a cluster")
def test_mpijob_launcher_runs_horovod_ranks_with_the_single_pod_metrics(tmp_path):
    data = rows()
    job_project = Project(tmp_path / "job", spec(ESTIMATOR, "{framework: horovod, workers: 2}"), data)
    pod_project = Project(tmp_path / "pod", spec(ESTIMATOR, "{framework: horovod, workers: 2}"), data)
    manifest = job_for(job_project)
    status = run_training_job(manifest, {"OMP_NUM_THREADS": "1"}, job_project.root, timeout=600)
    assert outcome(manifest, status) == "succeeded", status
    assert status["replicaStatuses"]["Launcher"] == {"succeeded": 1}
    single = pod_project.run_in_one_pod()
    metrics = job_project.read("metrics.json")
    assert metrics == single["metrics"] and metrics["accuracy"] >= 0.8
    notes = job_project.read("result.json")["notes"]
    assert any("ranks launched by horovod ($HOROVOD_RANK, $HOROVOD_SIZE)" in n for n in notes)
    assert any("distributed training (horovod, gloo): 2 worker(s)" in n for n in notes)


@pytest.mark.slow
def test_a_range_of_sweep_items_in_one_pytorchjob_forms_one_group_per_item(tmp_path):
    data = rows(240)
    text = spec(ESTIMATOR, "{framework: torch, workers: 2}").replace(
        "  distributed:", "  sweep:\n    method: grid\n    parameters: {lr: [0.01, 0.03]}\n"
        "    select: {metric: accuracy, goal: max}\n  distributed:")
    assert "sweep:" in text
    job_project, pod_project = Project(tmp_path / "job", text, data), Project(tmp_path / "pod", text, data)
    manifest = training_job(job_project.train, name="sweep", image="i", env=job_project.env(), namespace=None,
                            argv=[*job_project.argv(), "--item", '{"start": 0, "stop": 2}'])
    status = run_training_job(manifest, {"OMP_NUM_THREADS": "1"}, job_project.root, timeout=600)
    assert outcome(manifest, status) == "succeeded"
    for item in (0, 1):
        trial = json.loads((job_project.store.root / job_project.store.step_key("r1", job_project.train.id, item)
                            / "trial.json").read_text())
        ctx = make_context(pod_project.ir, pod_project.train.id, pod_project.store, item,
                           environ={**RUN, "DAGSMITH_ROOT": str(pod_project.root)})
        assert trial["metrics"] == run_step(ctx)["metrics"]


@pytest.mark.skipif(not horovod_available(), reason="horovod with its PyTorch binding is not importable")
def test_a_rank_started_by_mpirun_needs_horovod_built_with_mpi(monkeypatch):
    """Under an MPIJob the launcher's mpirun starts the ranks (Open MPI's variables, no horovodrun
    rendezvous): hvd.init() can only use MPI, so a horovod built without it fails with what to do."""
    import types

    import horovod.torch as hvd

    from dagsmith.runtime import cluster, distributed
    from dagsmith.runtime.context import StepFailed

    if hvd.mpi_built():
        pytest.skip("horovod here is built with MPI")
    for key in [k for k in os.environ if k.startswith(("HOROVOD_", "PMI_", "OMPI_")) or k in ("RANK", "WORLD_SIZE", "DAGSMITH_CLUSTER")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    launched = cluster.detect()
    assert launched.kind == "horovod"
    with pytest.raises(StepFailed, match="started by mpirun .* built without MPI"):
        distributed._init_launched(types.SimpleNamespace(framework="horovod"), launched)
