"""training.distributed on Argo: a `resource` template creating a Kubeflow PyTorchJob (torch) or
MPIJob (horovod), strictly valid against its CRD, run end to end without a cluster: the test-only
interpreter hands the job to tests/backend_argo/training_operator.py, which plays the training
operator (each replica's container as a local process with the operator's environment), so the
ranks are real processes forming a real process group; the metrics must equal a local run's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dagsmith.backends import get
from dagsmith.compiler import compile_spec
from dagsmith.spec import load_spec

BIN = Path(sys.executable).parent


def write_pipeline(folder: Path, framework: str = "torch", sweep: bool = False) -> Path:
    rng = np.random.default_rng(0)
    n = 240
    a, b = rng.normal(size=n), rng.normal(size=n)
    (folder / "data").mkdir(parents=True)
    pd.DataFrame({"a": a, "b": b, "y": (a + 0.5 * b > 0).astype(int)}).to_csv(folder / "data" / "rows.csv", index=False)
    spec = folder / "pipeline.yaml"
    sweep_text = "  sweep: {method: grid, parameters: {lr: [0.01, 0.02]}, select: {metric: accuracy, goal: max}}\n" if sweep else ""
    spec.write_text(f"""dagsmith: 1
pipeline: {{name: dist-argo}}
defaults: {{image: 'ghcr.io/acme/dist:1', resources: {{cpu: 1, memory: 1Gi}}}}
sources:
  rows: {{type: csv, uri: data/rows.csv}}
training:
  inputs: [rows]
  target: y
  split: {{test_size: 0.25, seed: 1}}
  model:
    estimator: dagsmith.estimators.TorchMLPClassifier
    params: {{hidden_layers: [8], epochs: 4, lr: 0.01, batch_size: 32, seed: 3}}
  distributed: {{framework: {framework}, workers: 2}}
{sweep_text}evaluation:
  metrics: [accuracy, roc_auc]
backends:
  argo: {{store: 's3://acme/dagsmith'}}
""")
    return spec


def test_a_distributed_train_step_is_a_training_job_resource(tmp_path):
    from schemas import check

    spec = write_pipeline(tmp_path, sweep=True)
    spec.write_text(spec.read_text().replace("defaults: {", "params: {epochs: {type: integer, default: 4}}\ndefaults: {secrets: [HUB_TOKEN], "))
    ir = compile_spec(load_spec(str(spec)))
    files = get("argo").emit(ir, ir.backends["argo"])
    template = yaml.safe_load(files["dist-argo.workflow-template.yaml"])
    check(template)
    train = {t["name"]: t for t in template["spec"]["templates"]}["train"]
    assert set(train) == {"name", "metadata", "inputs", "resource"} | ({"retryStrategy"} & set(train))
    resource = train["resource"]
    assert resource["action"] == "create" and resource["setOwnerReference"] is True
    assert resource["successCondition"] == "status.replicaStatuses.Master.succeeded > 0"
    # the operator's Failed condition (replicaStatuses freeze at the first failure: kubernetes.py)
    assert resource["failureCondition"] == "status.conditions.1.type == Failed, status.conditions.2.type == Failed"
    job = yaml.safe_load(resource["manifest"])
    check(job)  # against the PyTorchJob CRD
    assert job["kind"] == "PyTorchJob" and job["metadata"]["generateName"] == "train-"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    (container,) = replicas["Master"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["dagsmith", "step", "{{workflow.parameters.dagsmith-store}}/ir/" + container["command"][2].rsplit("/", 1)[1]]
    assert container["command"][-2:] == ["--item", "{{inputs.parameters.item}}"]  # one job per item of the sweep
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}  # per replica, not x workers
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["DAGSMITH_RUN_ID"] == "{{workflow.name}}" and env["DAGSMITH_PARAM_epochs"] == "{{workflow.parameters.epochs}}"
    assert env["DAGSMITH_RUN_DATE"].startswith("{{=sprig.dateInZone(")  # UTC, as in container templates
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"  # a failed job's running pods are deleted
    assert env["HUB_TOKEN"] == {"secretKeyRef": {"key": "HUB_TOKEN", "name": "hub-token"}}  # the same env as a container template

    horovod = compile_spec(load_spec(str(write_pipeline(tmp_path / "hvd", framework="horovod"))))
    template = yaml.safe_load(get("argo").emit(horovod, horovod.backends["argo"])["dist-argo.workflow-template.yaml"])
    resource = {t["name"]: t for t in template["spec"]["templates"]}["train"]["resource"]
    job = yaml.safe_load(resource["manifest"])
    check(job)  # against the MPIJob CRD
    assert job["kind"] == "MPIJob" and resource["successCondition"] == "status.replicaStatuses.Launcher.succeeded > 0"
    (launcher,) = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
    assert launcher["command"][:2] == ["mpirun", "-np"] and "horovodrun" not in launcher["command"]
    exported = {launcher["command"][i + 1] for i, part in enumerate(launcher["command"]) if part == "-x"}
    assert {e["name"] for e in launcher["env"]} <= exported  # the ranks get the job's environment


@pytest.mark.slow
def test_a_pytorchjob_run_by_the_operator_stand_in_gives_the_local_runs_metrics(tmp_path):
    from conformance.adapters import Outcome
    from conformance.backend_argo import ArgoAdapter

    spec = write_pipeline(tmp_path / "pipeline")
    local = subprocess.run([str(BIN / "dagsmith"), "run", str(spec), "--workdir", str(tmp_path / "local"), "--format", "json"],
                           capture_output=True, text=True)
    assert local.returncode == 0, local.stderr[-3000:]
    import json

    expected = json.loads(local.stdout)["metrics"]
    adapter = ArgoAdapter()
    adapter.start(tmp_path / "argo-workspace")
    try:
        handle = adapter.prepare(spec, env=None, workdir=tmp_path / "argo")
        outcome: Outcome = adapter.run(handle, params={}, run_date=None, workdir=tmp_path / "argo")
    finally:
        adapter.stop()
    assert outcome.status == "succeeded", outcome.native
    assert outcome.steps["train"] == "succeeded"
    assert outcome.metrics == expected
