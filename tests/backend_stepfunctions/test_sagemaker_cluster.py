"""Distributed training as a SageMaker training job of several instances.

There is no AWS here: sagemaker_cluster.py stands in for the job and runs each instance as a
REAL local process with its own resourceconfig.json (SageMaker's cluster description); every
instance runs the same `dagsmith step IR train` command, and the runtime forms the process group
from that file (runtime/cluster.py)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backend_stepfunctions.sagemaker_cluster import hosts, resource_config, run_sagemaker_job
from dagsmith.runtime import make_context, run_step
from dagsmith.runtime.cluster import detect
from dagsmith.runtime.distributed import horovod_available
from dagsmith.runtime.store import LocalStore

RUN = {"DAGSMITH_RUN_ID": "r1", "DAGSMITH_RUN_DATE": "2024-06-03"}
MODEL = ("{estimator: dagsmith.estimators.TorchMLPClassifier, "
         "params: {hidden_layers: [16], epochs: 6, lr: 0.01, batch_size: 32, seed: 3}}")


def rows(n: int = 320, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    y = (a + 0.5 * b - 0.25 * c + rng.normal(scale=0.3, size=n) > 0).astype(int)
    return pd.DataFrame({"a": a, "b": b, "c": c, "plan": rng.choice(["x", "y"], size=n), "y": y})


def project(folder: Path, workers: int, table: pd.DataFrame, framework: str = "torch"):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dagsmith.compiler import compile_spec
    from dagsmith.spec import load_spec

    folder.mkdir(parents=True)
    (folder / "pipeline.yaml").write_text(textwrap.dedent(f"""
    dagsmith: 1
    pipeline: {{name: dist}}
    sources:
      rows: {{type: csv, uri: data/rows.csv}}
    training:
      inputs: [rows]
      target: y
      split: {{test_size: 0.25, seed: 1}}
      model: {MODEL}
      distributed: {{framework: {framework}, workers: {workers}}}
    evaluation:
      metrics: [accuracy, roc_auc]
    """), encoding="utf-8")
    ir = compile_spec(load_spec(folder / "pipeline.yaml"))
    (folder / "ir.json").write_text(ir.dumps(), encoding="utf-8")
    store = LocalStore(folder / "store")
    staging = store.stage(store.step_key("r1", "rows"))
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), staging.path("table.parquet"))
    store.commit(staging)
    return ir, store, next(s.id for s in ir.steps if s.kind == "train")


def test_each_instance_gets_its_own_resource_config(tmp_path, monkeypatch):
    every = hosts(3)
    assert every == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    path = tmp_path / "resourceconfig.json"
    path.write_text(json.dumps(resource_config("127.0.0.3", every)))
    found = detect({"DAGSMITH_SAGEMAKER_RESOURCECONFIG": str(path), "DAGSMITH_MASTER_PORT": "4242"})
    assert (found.kind, found.rank, found.world_size, found.master_addr, found.master_port) == ("sagemaker", 2, 3, "127.0.0.1", 4242)
    assert found.torch_env()["GLOO_SOCKET_IFNAME"] == "lo"


def test_the_job_fails_with_the_first_failing_instance(tmp_path):
    script = ("import json, os, sys; c = json.load(open(os.environ['DAGSMITH_SAGEMAKER_RESOURCECONFIG']));"
              "sys.exit(0 if c['current_host'] == c['hosts'][0] else 3)")
    assert run_sagemaker_job([sys.executable, "-c", script], 2, {}, tmp_path, timeout=60) == 3
    assert run_sagemaker_job([sys.executable, "-c", "pass"], 2, {}, tmp_path, timeout=60) == 0
    with pytest.raises(TimeoutError):
        run_sagemaker_job([sys.executable, "-c", "import time; time.sleep(30)"], 1, {}, tmp_path, timeout=0.5)


@pytest.mark.slow
def test_a_sagemaker_job_of_two_instances_gives_the_single_pod_metrics(tmp_path):
    data = rows()
    ir, store, train = project(tmp_path / "job", 2, data)
    argv = ["dagsmith", "step", str(tmp_path / "job" / "ir.json"), train, "--store", str(store.root)]
    env = {**RUN, "DAGSMITH_ROOT": str(tmp_path / "job"), "OMP_NUM_THREADS": "1"}
    assert run_sagemaker_job(argv, 2, env, tmp_path / "job", timeout=600) == 0
    metrics = json.loads((store.root / store.step_key("r1", train) / "metrics.json").read_text())
    result = json.loads((store.root / store.step_key("r1", train) / "result.json").read_text())
    assert any("ranks launched by sagemaker" in n and "this is rank 0" in n for n in result["notes"])

    pod_ir, pod_store, _ = project(tmp_path / "pod", 2, data)
    single = run_step(make_context(pod_ir, train, pod_store, None, environ={**RUN, "DAGSMITH_ROOT": str(tmp_path / "pod")}))
    assert metrics == single["metrics"] and metrics["accuracy"] >= 0.8


@pytest.mark.slow
@pytest.mark.skipif(not horovod_available(), reason="horovod with its PyTorch binding is not importable "
                                                    "(scripts/install-horovod.sh)")
def test_horovod_on_sagemaker_rendezvous_at_rank_0_gives_the_single_pod_metrics(tmp_path):
    data = rows()
    ir, store, train = project(tmp_path / "job", 2, data, framework="horovod")
    argv = ["dagsmith", "step", str(tmp_path / "job" / "ir.json"), train, "--store", str(store.root)]
    env = {**RUN, "DAGSMITH_ROOT": str(tmp_path / "job"), "OMP_NUM_THREADS": "1"}
    assert run_sagemaker_job(argv, 2, env, tmp_path / "job", timeout=600) == 0
    metrics = json.loads((store.root / store.step_key("r1", train) / "metrics.json").read_text())
    pod_ir, pod_store, _ = project(tmp_path / "pod", 2, data, framework="horovod")
    single = run_step(make_context(pod_ir, train, pod_store, None, environ={**RUN, "DAGSMITH_ROOT": str(tmp_path / "pod")}))
    assert metrics == single["metrics"] and metrics["accuracy"] >= 0.8
