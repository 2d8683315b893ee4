"""training.distributed: real worker processes on CPU (torch.distributed with gloo; horovod when
it is installed), the built-in torch estimator, failures."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from runtime_testing import Pipeline

from dagsmith.estimators import TorchMLPClassifier, TorchMLPRegressor
from dagsmith.runtime.context import StepFailed
from dagsmith.runtime.distributed import horovod_available
from dagsmith.runtime.store import StoreError

PARAMS = "{hidden_layers: [16], epochs: 8, lr: 0.01, batch_size: 32, seed: 3}"


def rows(n: int = 320, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    y = (a + 0.5 * b - 0.25 * c + rng.normal(scale=0.3, size=n) > 0).astype(int)
    return pd.DataFrame({"a": a, "b": b, "c": c, "plan": rng.choice(["x", "y"], size=n), "y": y})


def spec(model: str) -> str:
    return f"""
    dagsmith: 1
    pipeline: {{name: dist}}
    sources:
      rows: {{type: csv, uri: data/rows.csv}}
    training:
      inputs: [rows]
      target: y
      split: {{test_size: 0.25, seed: 1}}
      model: {model}
    evaluation:
      metrics: [accuracy, roc_auc]
    """


def with_distributed(model: str, distributed: str) -> str:
    return spec(model).replace("    evaluation:", f"      distributed: {distributed}\n    evaluation:")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


# --- entrypoints the workers run ------------------------------------------------------------------

ENTRYPOINTS = """
import json, os
from pathlib import Path

import torch
import torch.distributed as dist
from dagsmith.estimators import TorchMLPClassifier


def report(train, test, params, context):
    # the process group is ready: an all-reduce across the workers
    total = torch.tensor([float(len(train))])
    dist.all_reduce(total)
    folder = Path(params["report_dir"])
    (folder / f"rank-{context.rank}.json").write_text(json.dumps({
        "rank": context.rank, "world_size": context.world_size, "pid": os.getpid(),
        "dist_rank": dist.get_rank(), "dist_world": dist.get_world_size(), "rows": len(train),
        "total_rows": total.item(), "test_rows": len(test), "output_dir": str(context.output_dir),
    }))
    model = TorchMLPClassifier(hidden_layers=[8], epochs=5, lr=0.01, batch_size=32, seed=1)
    model.fit(train[context.features], train[context.target])
    weights = {k: v.tolist() for k, v in model.state_dict_.items()}
    (folder / f"weights-{context.rank}.json").write_text(json.dumps(weights))
    (context.output_dir / f"from-rank-{context.rank}.txt").write_text("hello")
    return model


def fail_on_rank_1(train, test, params, context):
    if context.rank == 1:
        raise ValueError("bad shard on rank 1")
    (Path(params["report_dir"]) / f"pid-{context.rank}.txt").write_text(str(os.getpid()))
    torch.distributed.barrier()  # would wait forever for rank 1
    return None


def hang_then_fail(train, test, params, context):
    (Path(params["report_dir"]) / f"pid-{context.rank}.txt").write_text(str(os.getpid()))
    if context.rank == 0:
        import time
        time.sleep(0.5)
        os._exit(7)
    import time
    time.sleep(600)


def horovod_report(train, test, params, context):
    import horovod.torch as hvd
    folder = Path(params["report_dir"])
    model = TorchMLPClassifier(hidden_layers=[8], epochs=4, lr=0.01, batch_size=32, seed=1)
    model.fit(train[context.features], train[context.target])
    weights = {k: v.tolist() for k, v in model.state_dict_.items()}
    (folder / f"rank-{context.rank}.json").write_text(json.dumps({
        "rank": context.rank, "world_size": context.world_size, "pid": os.getpid(),
        "hvd_rank": hvd.rank(), "hvd_size": hvd.size(), "weights": weights}))
    return model


def horovod_fail_on_rank_1(train, test, params, context):
    import horovod.torch as hvd
    (Path(params["report_dir"]) / f"pid-{context.rank}.txt").write_text(str(os.getpid()))
    if context.rank == 1:
        raise ValueError("bad horovod shard")
    hvd.allreduce(torch.ones(1))  # rank 1 never joins
    return None
"""


@pytest.fixture
def entry_module(tmp_path):
    (tmp_path / "dist_entry_mod.py").write_text(ENTRYPOINTS)
    report_dir = tmp_path / "reports"
    report_dir.mkdir()
    return report_dir


def entry_spec(function: str, report_dir, workers: int = 2, framework: str = "torch") -> str:
    return with_distributed(f"{{entrypoint: 'dist_entry_mod:{function}', params: {{report_dir: '{report_dir}'}}}}",
                            f"{{framework: {framework}, workers: {workers}}}")


# --- torch.distributed ----------------------------------------------------------------------------

def test_two_workers_are_two_processes_with_ranks_shards_and_a_process_group(tmp_path, entry_module):
    p = Pipeline(tmp_path, entry_spec("report", entry_module), {"rows": rows()})
    result = p.run("train")
    reports = [json.loads((entry_module / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1] and [r["dist_rank"] for r in reports] == [0, 1]
    assert all(r["world_size"] == 2 and r["dist_world"] == 2 for r in reports)
    pids = {r["pid"] for r in reports}
    assert len(pids) == 2 and os.getpid() not in pids
    assert [r["rows"] for r in reports] == [120, 120] and all(r["total_rows"] == 240 for r in reports)
    assert all(r["test_rows"] == 80 for r in reports)
    # parameters identical across ranks after data-parallel training
    w0, w1 = (json.loads((entry_module / f"weights-{r}.json").read_text()) for r in (0, 1))
    assert w0.keys() == w1.keys() and all(np.array_equal(w0[k], w1[k]) for k in w0)
    # rank 0's model and output folder are the step's; the normal outputs are there
    model = p.read("train", "model.joblib")
    assert isinstance(model["estimator"], TorchMLPClassifier) and model["task"] == "classifier"
    assert np.array_equal(model["estimator"].state_dict_["0.weight"], np.asarray(w0["0.weight"], dtype=np.float32))
    assert p.read("train", "metrics.json") == result["metrics"] and set(result["metrics"]) == {"accuracy", "roc_auc"}
    assert (p.ctx("train").input_file("train", "output/from-rank-0.txt")).read_text() == "hello"
    with pytest.raises(StoreError):
        p.ctx("train").input_file("train", "output/from-rank-1.txt")
    assert any("distributed training (torch, gloo): 2 worker(s)" in n for n in result["notes"])
    assert not any(alive(pid) for pid in pids)


def test_builtin_estimator_two_workers_matches_one_worker(tmp_path):
    model = f"{{estimator: dagsmith.estimators.TorchMLPClassifier, params: {PARAMS}}}"
    data = {"rows": rows(400)}
    for name in ("one", "two", "plain"):
        (tmp_path / name).mkdir()
    single = Pipeline(tmp_path / "one", with_distributed(model, "{framework: torch, workers: 1}"), data)
    double = Pipeline(tmp_path / "two", with_distributed(model, "{framework: torch, workers: 2}"), data)
    plain = Pipeline(tmp_path / "plain", spec(model), data)
    one, two, local = single.run("train"), double.run("train"), plain.run("train")
    assert one["metrics"]["accuracy"] >= 0.8 and two["metrics"]["accuracy"] >= 0.8
    assert abs(one["metrics"]["accuracy"] - two["metrics"]["accuracy"]) <= 0.06
    assert abs(one["metrics"]["roc_auc"] - two["metrics"]["roc_auc"]) <= 0.03
    # one worker trains exactly as in-process training does
    assert one["metrics"] == local["metrics"]
    fitted = double.read("train", "model.joblib")["estimator"]
    assert fitted.world_size_ == 2 and fitted.get_params()["hidden_layers"] == [16]
    assert not any("does not train across workers" in n for n in two["notes"])


def test_sklearn_estimator_is_noted_as_rank_0_only(tmp_path):
    model = "{estimator: sklearn.linear_model.LogisticRegression}"
    p = Pipeline(tmp_path, with_distributed(model, "{framework: torch, workers: 2}"), {"rows": rows()})
    result = p.run("train")
    assert any("does not train across workers" in n for n in result["notes"])
    assert p.read("train", "model.joblib")["estimator"].n_features_in_ == 5


def test_a_failing_worker_fails_the_step_with_its_message_and_leaves_no_process(tmp_path, entry_module):
    p = Pipeline(tmp_path, entry_spec("fail_on_rank_1", entry_module), {"rows": rows()})
    with pytest.raises(StepFailed, match=r"worker 1 failed: entrypoint dist_entry_mod:fail_on_rank_1 raised "
                                         r"ValueError: bad shard on rank 1") as caught:
        p.run("train")
    assert "dist_entry_mod.py" in str(caught.value)  # the user's traceback
    pid = int((entry_module / "pid-0.txt").read_text())
    assert not alive(pid)


def test_a_crashing_worker_stops_the_others(tmp_path, entry_module):
    p = Pipeline(tmp_path, entry_spec("hang_then_fail", entry_module), {"rows": rows()})
    with pytest.raises(StepFailed, match="worker 0 exited with code 7"):
        p.run("train")
    pids = [int((entry_module / f"pid-{r}.txt").read_text()) for r in (0, 1)]
    assert not any(alive(pid) for pid in pids)


def test_estimator_errors_and_too_few_rows(tmp_path):
    model = "{estimator: dagsmith.estimators.TorchMLPClassifier, params: {activation: nope, epochs: 1}}"
    p = Pipeline(tmp_path, with_distributed(model, "{framework: torch, workers: 2}"), {"rows": rows()})
    with pytest.raises(StepFailed, match=r"worker \d failed: training dagsmith.estimators.TorchMLPClassifier failed: "
                                         r"ValueError: activation must be one of"):
        p.run("train")
    (tmp_path / "few").mkdir()
    few = Pipeline(tmp_path / "few", with_distributed("{estimator: dagsmith.estimators.TorchMLPClassifier}",
                                                      "{framework: torch, workers: 8}"), {"rows": rows(8)})
    with pytest.raises(StepFailed, match="8 workers needs at least 8 training rows, got 6"):
        few.run("train")


def test_distributed_sweep_then_select(tmp_path):
    model = "{estimator: dagsmith.estimators.TorchMLPRegressor, params: {epochs: 10, batch_size: 32, hidden_layers: [8]}}"
    text = with_distributed(model, "{framework: torch, workers: 2}").replace(
        "      distributed:", "      sweep:\n        method: grid\n        parameters: {lr: [0.01, 0.03]}\n        select: {metric: r2, goal: max}\n"
        "      distributed:").replace("metrics: [accuracy, roc_auc]", "metrics: [r2]")
    data = rows()
    data["y"] = data["a"] * 2 + data["b"]
    p = Pipeline(tmp_path, text, {"rows": data})
    results = p.run_through("select")
    assert results["train"]["items"] == 2
    assert all(t["metrics"]["r2"] > 0.5 for t in results["train"]["trials"])
    selected = p.read("select", "selection.json")
    assert len(selected) == 1 and selected[0]["params"]["lr"] in (0.01, 0.03)


# --- the estimators in one process ------------------------------------------------------------------

def test_estimators_are_sklearn_like_and_pickle_without_the_module(tmp_path):
    import joblib
    from sklearn.base import clone

    data = rows(300)
    X, y = data[["a", "b", "c"]], data["y"]
    model = TorchMLPClassifier(hidden_layers=(8,), epochs=5, lr=0.01, seed=2).fit(X, y)
    assert model.predict_proba(X).shape == (300, 2) and set(model.predict(X)) <= {0, 1}
    assert model.score(X, y) > 0.8
    joblib.dump(model, tmp_path / "m.joblib")
    loaded = joblib.load(tmp_path / "m.joblib")
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert "_net" not in loaded.__getstate__()
    again = clone(model).set_params(epochs=5)
    assert again.get_params() == model.get_params()
    assert np.array_equal(again.fit(X, y).predict_proba(X), model.predict_proba(X))  # same seed, same model
    reg = TorchMLPRegressor(epochs=30, lr=0.01).fit(X, data["a"] * 3 - data["c"])
    assert reg.score(X, data["a"] * 3 - data["c"]) > 0.9
    with pytest.raises(ValueError, match="missing or infinite"):
        TorchMLPClassifier().fit(X.assign(a=np.nan), y)


def test_compiler_accepts_the_builtin_estimator_path(tmp_path):
    p = Pipeline(tmp_path, with_distributed("{estimator: dagsmith.estimators.TorchMLPClassifier}",
                                            "{framework: torch, workers: 2, gpus_per_worker: 0}"), {"rows": rows()})
    config = next(s for s in p.ir.steps if s.kind == "train").config
    assert config["model"]["estimator"] == "dagsmith.estimators.TorchMLPClassifier"
    assert config["distributed"] == {"framework": "torch", "workers": 2, "gpus_per_worker": 0}
    assert torch.distributed.is_available()


# --- horovod ------------------------------------------------------------------------------------------

HOROVOD_MISSING = ("horovod (with its PyTorch binding) is not importable: build it with scripts/install-horovod.sh; "
                   "CI runs this test after that script")


@pytest.mark.skipif(not horovod_available(), reason=HOROVOD_MISSING)
def test_horovod_two_workers(tmp_path, entry_module):
    p = Pipeline(tmp_path, entry_spec("horovod_report", entry_module, framework="horovod"), {"rows": rows()})
    result = p.run("train")
    reports = [json.loads((entry_module / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["hvd_rank"], r["world_size"], r["hvd_size"]) for r in reports] == [(0, 0, 2, 2), (1, 1, 2, 2)]
    assert len({r["pid"] for r in reports}) == 2
    assert all(np.array_equal(reports[0]["weights"][k], reports[1]["weights"][k]) for k in reports[0]["weights"])
    assert result["metrics"]["accuracy"] > 0.7
    assert not any(alive(r["pid"]) for r in reports)


@pytest.mark.skipif(not horovod_available(), reason=HOROVOD_MISSING)
def test_horovod_failing_worker(tmp_path, entry_module):
    p = Pipeline(tmp_path, entry_spec("horovod_fail_on_rank_1", entry_module, framework="horovod"), {"rows": rows()})
    with pytest.raises(StepFailed, match=r"\(horovod, 2 workers\): worker 1 failed: entrypoint "
                                         r"dist_entry_mod:horovod_fail_on_rank_1 raised ValueError: bad horovod shard"):
        p.run("train")
    assert not any(alive(int((entry_module / f"pid-{r}.txt").read_text())) for r in (0, 1))


def test_horovod_missing_is_a_clear_step_failure(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_horovod(name, *args, **kwargs):
        if name == "horovod" or name.startswith("horovod."):
            raise ModuleNotFoundError("No module named 'horovod'", name="horovod")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_horovod)
    model = "{estimator: dagsmith.estimators.TorchMLPClassifier}"
    p = Pipeline(tmp_path, with_distributed(model, "{framework: horovod, workers: 2}"), {"rows": rows()})
    with pytest.raises(StepFailed, match=r"horovod .* not importable.*scripts/install-horovod\.sh"):
        p.run("train")
