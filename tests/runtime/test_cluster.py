"""runtime/cluster.py: which launcher started this rank, read from its environment (no processes)."""

from __future__ import annotations

import json

import pytest
from runtime_testing import Pipeline

from dagsmith.runtime.cluster import detect
from dagsmith.runtime.context import StepFailed

PYTORCHJOB = {"MASTER_ADDR": "train-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2",
              "PET_MASTER_ADDR": "train-master-0", "PET_MASTER_PORT": "23456", "PET_NODE_RANK": "2", "PET_NNODES": "3",
              "PET_NPROC_PER_NODE": "1", "PYTHONUNBUFFERED": "1"}


def test_nothing_set_is_local():
    assert detect({}) is None
    assert detect({"RANK": "1", "WORLD_SIZE": "2"}) is None  # no rendezvous address: not a launch
    assert detect({**PYTORCHJOB, "DAGSMITH_CLUSTER": "local"}) is None


def test_pytorchjob_environment():
    found = detect(PYTORCHJOB)
    assert (found.kind, found.rank, found.world_size, found.local_rank) == ("torch", 2, 3, 0)
    assert (found.master_addr, found.master_port) == ("train-master-0", 23456)
    assert found.torch_env() == {"MASTER_ADDR": "train-master-0", "MASTER_PORT": "23456", "RANK": "2",
                                 "WORLD_SIZE": "3", "LOCAL_RANK": "0"}
    only_pet = {k: v for k, v in PYTORCHJOB.items() if k.startswith("PET_")}
    found = detect(only_pet)
    assert (found.rank, found.world_size, found.master_addr, found.master_port) == (2, 3, "train-master-0", 23456)
    assert "$PET_NODE_RANK" in found.source


def test_broken_launches_are_errors():
    with pytest.raises(StepFailed, match=r"\$MASTER_PORT not set"):
        detect({"MASTER_ADDR": "m", "RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(StepFailed, match="rank 3 is not within a world of 2"):
        detect({**PYTORCHJOB, "RANK": "3", "WORLD_SIZE": "2"})
    with pytest.raises(StepFailed, match=r"\$RANK must be a whole number"):
        detect({**PYTORCHJOB, "RANK": "two"})
    with pytest.raises(StepFailed, match="use one of local, torch, horovod, sagemaker"):
        detect({"DAGSMITH_CLUSTER": "slurm"})
    with pytest.raises(StepFailed, match="none of .*HOROVOD_RANK"):
        detect({"DAGSMITH_CLUSTER": "horovod"})
    with pytest.raises(StepFailed, match="is sagemaker, and neither"):
        detect({"DAGSMITH_CLUSTER": "sagemaker", "DAGSMITH_SAGEMAKER_RESOURCECONFIG": "/nonexistent/rc.json"})


def test_horovod_and_mpi_environments():
    found = detect({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "4", "HOROVOD_LOCAL_RANK": "1"})
    assert (found.kind, found.rank, found.world_size, found.local_rank) == ("horovod", 1, 4, 1)
    found = detect({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "0"})
    assert (found.kind, found.rank, found.world_size) == ("horovod", 3, 4)
    assert detect({"PMI_RANK": "0", "PMI_SIZE": "2"}).kind == "horovod"


def test_sagemaker_resourceconfig_and_sm_env(tmp_path):
    path = tmp_path / "resourceconfig.json"
    path.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-3", "algo-1", "algo-2"],
                                "network_interface_name": "eth0"}))
    found = detect({"DAGSMITH_SAGEMAKER_RESOURCECONFIG": str(path)})
    assert (found.kind, found.rank, found.world_size, found.master_addr, found.master_port) == ("sagemaker", 1, 3, "algo-1", 29500)
    assert found.torch_env()["NCCL_SOCKET_IFNAME"] == "eth0"
    found = detect({"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2", "DAGSMITH_MASTER_PORT": "7000"})
    assert (found.rank, found.world_size, found.master_addr, found.master_port) == (1, 2, "algo-1", 7000)
    path.write_text(json.dumps({"current_host": "algo-9", "hosts": ["algo-1"]}))
    with pytest.raises(StepFailed, match="current host 'algo-9' is not one of the hosts"):
        detect({"DAGSMITH_SAGEMAKER_RESOURCECONFIG": str(path)})
    path.write_text("{not json")
    with pytest.raises(StepFailed, match="is not a SageMaker resource config"):
        detect({"DAGSMITH_SAGEMAKER_RESOURCECONFIG": str(path)})


def test_torch_ranks_started_by_horovodrun_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HOROVOD_RANK", "0")
    monkeypatch.setenv("HOROVOD_SIZE", "2")
    spec = """
    dagsmith: 1
    pipeline: {name: dist}
    sources:
      rows: {type: csv, uri: data/rows.csv}
    training:
      inputs: [rows]
      target: y
      model: {estimator: dagsmith.estimators.TorchMLPClassifier}
      distributed: {framework: torch, workers: 2}
    """
    import pandas as pd

    p = Pipeline(tmp_path, spec, {"rows": pd.DataFrame({"a": [float(i) for i in range(20)], "y": [i % 2 for i in range(20)]})})
    with pytest.raises(StepFailed, match=r"rank 0 of 2, launched: \$HOROVOD_RANK, \$HOROVOD_SIZE\): framework torch needs"):
        p.run("train")
