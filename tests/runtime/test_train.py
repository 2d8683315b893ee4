"""Runtime: fan-out decoding, plan, train (single, item by item, all items), select, entrypoints.

Real sklearn, real files: specs are compiled from YAML in tmp_path, and the source tables are
committed into a LocalStore by the test (no dependency on the source/feature steps).
"""

from __future__ import annotations

import itertools
import json
import math
import textwrap

import numpy as np
import pandas as pd
import pytest

from dagsmith.ir import FanOut
from dagsmith.runtime.context import StepFailed
from dagsmith.runtime.data import training_frame
from dagsmith.runtime.fanout import decode, item_count, partitions_of
from dagsmith.runtime.train import best_trial

from runtime_testing import RUN, Pipeline  # noqa: E402


def classification_rows(n: int = 240, seed: int = 0, regions=("a", "b")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    region = np.array([regions[i % len(regions)] for i in range(n)])
    shift = np.where(region == regions[0], 0.0, 1.0)
    y = ((x1 + 0.5 * x2 + shift + rng.normal(scale=0.7, size=n)) > 0.5).astype(int)
    return pd.DataFrame({
        "id": np.arange(n), "x1": x1, "x2": x2,
        "plan": rng.choice(["basic", "pro", "team"], size=n),
        "signup": pd.date_range("2023-01-01", periods=n, freq="D"),
        "region": region, "y": y,
    })


SWEEP_SPEC = """
dagsmith: 1
pipeline: {name: sweep-test}
sources:
  rows: {type: csv, uri: data/rows.csv}
training:
  inputs: [rows]
  target: y
  split: {test_size: 0.25, seed: 3}
  model:
    estimator: sklearn.linear_model.LogisticRegression
    params: {max_iter: 500}
  sweep:
    method: grid
    parameters:
      C: [0.001, 0.1, 10.0]
      fit_intercept: [true, false]
    select: {metric: roc_auc, goal: max}
evaluation:
  metrics: [roc_auc, accuracy, log_loss]
"""


# --- decode -----------------------------------------------------------------------------------

def test_grid_decode_covers_every_combination_once_last_key_fastest():
    parameters = {"a": [1, 2], "b": ["x", "y", "z"], "c": [0.1, 0.2]}
    fan = FanOut(method="grid", parameters=parameters, trials=12, size=12)
    decoded = [decode(fan, i)[2] for i in range(12)]
    combos = [tuple(d[k] for k in "abc") for d in decoded]
    assert sorted(combos, key=str) == sorted(itertools.product(*parameters.values()), key=str)
    assert len(set(combos)) == 12
    # mixed radix: the last key varies fastest, the first slowest
    assert decoded[0] == {"a": 1, "b": "x", "c": 0.1}
    assert decoded[1] == {"a": 1, "b": "x", "c": 0.2}
    assert decoded[2] == {"a": 1, "b": "y", "c": 0.1}
    assert decoded[6] == {"a": 2, "b": "x", "c": 0.1}
    assert [decode(fan, i) for i in range(12)] == [decode(fan, i) for i in range(12)]


def test_partitioned_decode_is_partition_major():
    fan = FanOut(method="grid", parameters={"k": [1, 2, 3]}, trials=3, partition_by="r", partitions=("de", "fr"), size=6)
    assert [decode(fan, i)[:2] for i in range(6)] == [("de", 0), ("de", 1), ("de", 2), ("fr", 0), ("fr", 1), ("fr", 2)]
    assert decode(fan, 4)[2] == {"k": 2}
    # run-time partitions are passed in
    dyn = FanOut(method="single", parameters={}, trials=1, partition_by="r", items_from="plan")
    assert decode(dyn, 1, ["x", "y"]) == ("y", 0, {})
    with pytest.raises(StepFailed, match="out of range"):
        decode(fan, 6)
    with pytest.raises(StepFailed, match="found at run time"):
        decode(dyn, 0)


def test_random_decode_is_deterministic_and_in_range():
    parameters = {
        "alpha": {"low": 1e-4, "high": 1.0, "log": True},
        "depth": {"low": 2, "high": 9, "type": "int"},
        "kernel": ["rbf", "linear"],
        "ratio": {"low": 0.2, "high": 0.8},
    }
    fan = FanOut(method="random", parameters=parameters, trials=40, seed=11, samples=40,
                 partition_by="r", partitions=("a", "b"), size=80)
    first = [decode(fan, i) for i in range(80)]
    assert first == [decode(fan, i) for i in range(80)]  # same machine, same answer
    for partition, trial, params in first:
        assert 1e-4 <= params["alpha"] <= 1.0
        assert isinstance(params["depth"], int) and 2 <= params["depth"] <= 9
        assert params["kernel"] in ("rbf", "linear")
        assert 0.2 <= params["ratio"] <= 0.8
        assert list(params) == sorted(parameters)
    # the same trial has the same parameters in every partition; trials differ
    assert [p for _, _, p in first[:40]] == [p for _, _, p in first[40:]]
    assert len({json.dumps(p, sort_keys=True) for _, _, p in first[:40]}) == 40
    # log-uniform: about as many draws below the geometric middle as above it
    below = sum(p["alpha"] < math.sqrt(1e-4) * 1.0 for _, _, p in first[:40])
    assert 8 <= below <= 32
    # the seed matters
    other = FanOut(method="random", parameters=parameters, trials=40, seed=12, samples=40, size=40)
    assert decode(other, 0)[2] != decode(fan, 0)[2]
    # the known draw (pins the algorithm: Random(f"{seed}:{trial}"), keys in order)
    import random

    rng = random.Random("11:5")
    alpha = math.exp(rng.uniform(math.log(1e-4), math.log(1.0)))
    depth = int(round(rng.uniform(2, 9)))
    kernel = rng.choice(["rbf", "linear"])
    ratio = rng.uniform(0.2, 0.8)
    assert decode(fan, 5)[2] == {"alpha": alpha, "depth": depth, "kernel": kernel, "ratio": ratio}


# --- train --------------------------------------------------------------------------------------

def test_single_train_commits_model_and_metrics(tmp_path):
    spec = """
    dagsmith: 1
    pipeline: {name: single}
    sources:
      rows: {type: csv, uri: data/rows.csv}
    training:
      inputs: [rows]
      target: y
      split: {test_size: 0.25, seed: 1}
      model: {estimator: sklearn.linear_model.LogisticRegression, params: {C: 0.5}}
    evaluation:
      metrics: [accuracy, roc_auc]
    """
    p = Pipeline(tmp_path, spec, {"rows": classification_rows()})
    result = p.run("train")
    assert set(result["metrics"]) == {"accuracy", "roc_auc"}
    assert result["rows"] == {"train": 180, "test": 60}
    model = p.read("train", "model.joblib")
    assert model["task"] == "classifier" and model["target"] == "y"
    assert model["estimator"].get_params()["C"] == 0.5
    # features: id and region and y are not features... id is (no key declared), the date is dropped,
    # the text column is one-hot encoded
    assert "signup" in model["dropped"]
    assert [c for c in model["columns"] if c.startswith("plan=")] == ["plan=basic", "plan=pro", "plan=team"]
    assert "y" not in model["columns"] and "signup" not in model["columns"]
    assert p.read("train", "metrics.json") == result["metrics"]
    assert "column 'signup' dropped (not a model input): datetime column" in " ".join(result["warnings"])
    assert result["model_inputs"] == len(model["columns"])


def test_sweep_item_by_item_then_select(tmp_path):
    p = Pipeline(tmp_path, SWEEP_SPEC, {"rows": classification_rows()})
    ctx = p.ctx("train")
    assert item_count(ctx) == 6
    assert item_count(p.ir, "train", p.store, RUN) == 6
    results = [p.run("train", item=i) for i in range(6)]
    X_train, y_train, X_test, y_test, columns = training_frame(ctx)
    for i, result in enumerate(results):
        trial = p.read("train", "trial.json", item=i)
        assert trial == {k: v for k, v in json.loads(json.dumps(result)).items() if k != "seconds"}
        assert trial["params"] == decode(ctx.step.fanout, i)[2]
        model = p.read("train", "model.joblib", item=i)
        est = model["estimator"]
        assert est.get_params()["C"] == trial["params"]["C"]
        assert est.get_params()["fit_intercept"] == trial["params"]["fit_intercept"]
        assert est.get_params()["max_iter"] == 500  # model.params merged under the trial's
        assert model["index"] == i and model["trial"] == i and model["partition"] is None
        assert set(trial["metrics"]) == {"roc_auc", "accuracy", "log_loss"}
        from sklearn.metrics import roc_auc_score

        assert trial["metrics"]["roc_auc"] == round(roc_auc_score(y_test, est.predict_proba(X_test)[:, 1]), 6)

    selected = p.run("select")
    best = max(range(6), key=lambda i: (results[i]["metrics"]["roc_auc"], -i))
    assert selected["count"] == 1
    assert selected["selected"][0]["index"] == best
    selection = p.read("select", "selection.json")
    assert selection[0]["index"] == best and selection[0]["model"] == "models/0.joblib"
    copied = p.read("select", "models/0.joblib")
    assert copied["index"] == best


def test_sweep_without_item_runs_every_item_the_same(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = Pipeline(tmp_path / "one", SWEEP_SPEC, {"rows": classification_rows()})
    by_item = [one.run("train", item=i) for i in range(6)]
    two = Pipeline(tmp_path / "two", SWEEP_SPEC, {"rows": classification_rows()})
    result = two.run("train")
    assert result["items"] == 6
    for i in range(6):
        trial = two.read("train", "trial.json", item=i)
        assert trial["metrics"] == by_item[i]["metrics"] and trial["params"] == by_item[i]["params"]
        # each item also has its result, as when run with --item
        assert two.store.read_json(f"runs/{RUN}/items/train/{i}/result.json")["index"] == i


def test_select_picks_min_per_static_partition(tmp_path):
    rng = np.random.default_rng(5)
    n = 200
    region = np.where(np.arange(n) % 2 == 0, "north", "south")
    x = rng.normal(size=n)
    y = np.where(region == "north", 3 * x, -2 * x + 1) + rng.normal(scale=0.3, size=n)
    rows = pd.DataFrame({"x": x, "noise": rng.normal(size=n), "region": region, "y": y})
    spec = """
    dagsmith: 1
    pipeline: {name: regions}
    sources:
      rows: {type: csv, uri: data/rows.csv}
    training:
      inputs: [rows]
      target: y
      partition_by: region
      partitions: [north, south]
      model: {estimator: sklearn.linear_model.Ridge}
      sweep:
        method: grid
        parameters:
          alpha: [0.01, 1.0, 100.0, 10000.0]
        select: {metric: mean_absolute_error, goal: min}
    evaluation:
      metrics: [mean_absolute_error, r2]
    """
    p = Pipeline(tmp_path, spec, {"rows": rows})
    assert item_count(p.ctx("train")) == 8
    p.run("train")
    selection = p.run("select")["selected"]
    trials = [p.read("train", "trial.json", item=i) for i in range(8)]
    for position, partition in enumerate(["north", "south"]):
        mine = [t for t in trials if t["partition"] == partition]
        assert [t["index"] for t in mine] == list(range(position * 4, position * 4 + 4))
        best = min(mine, key=lambda t: (t["metrics"]["mean_absolute_error"], t["index"]))
        entry = next(e for e in selection if e["partition"] == partition)
        assert entry["index"] == best["index"]
        assert entry["params"]["alpha"] != 10000.0  # the worst one is not picked
    # each partition's model was trained on its rows only
    north = p.read("train", "model.joblib", item=0)["estimator"]
    south = p.read("train", "model.joblib", item=4)["estimator"]
    assert north.coef_[0] > 2 and south.coef_[0] < -1


def test_best_trial_ties_and_undefined():
    trials = [
        {"index": 3, "metrics": {"m": 0.9}},
        {"index": 1, "metrics": {"m": 0.9}},
        {"index": 2, "metrics": {"m": None}},
        {"index": 0, "metrics": {"m": 0.1}},
    ]
    assert best_trial(trials, "m", "max")["index"] == 1  # tie: lowest index
    assert best_trial(trials, "m", "min")["index"] == 0
    assert best_trial([{"index": 5, "metrics": {"m": None}}, {"index": 4, "metrics": {"m": None}}], "m", "max")["index"] == 4


def test_runtime_partitions_via_plan(tmp_path):
    spec = """
    dagsmith: 1
    pipeline: {name: dynamic}
    sources:
      rows: {type: csv, uri: data/rows.csv}
    training:
      inputs: [rows]
      target: y
      split: {column: split}
      partition_by: region
      model: {estimator: sklearn.tree.DecisionTreeClassifier, params: {random_state: 0}}
      sweep:
        method: grid
        parameters: {max_depth: [1, 3]}
        select: {metric: accuracy, goal: max}
    evaluation:
      metrics: [accuracy]
    """
    rows = classification_rows(300, regions=("c", "a", "b"))
    rows["split"] = np.where(np.arange(300) % 5 == 0, "test", "train")
    rows.loc[7, "region"] = None  # null partitions are never trained
    p = Pipeline(tmp_path, spec, {"rows": rows})
    with pytest.raises(StepFailed, match="run it first"):
        item_count(p.ctx("train"))
    planned = p.run("plan")
    assert planned["items"] == 6 and planned["partitions"] == 3
    assert p.read("plan", "items.json") == {"partitions": ["a", "b", "c"], "trials": 2, "count": 6}
    ctx = p.ctx("train")
    assert item_count(ctx) == 6 and partitions_of(ctx) == ["a", "b", "c"]
    for i in range(6):
        p.run("train", item=i)
    assert [p.read("train", "trial.json", item=i)["partition"] for i in range(6)] == ["a", "a", "b", "b", "c", "c"]
    # the column split: held-out rows are exactly the rows marked "test" of the partition
    X_train, y_train, X_test, y_test, _ = training_frame(p.ctx("train", item=2))
    b = rows[rows.region == "b"]
    assert len(X_test) == (b.split == "test").sum() and len(X_train) == (b.split == "train").sum()
    assert "split" not in X_train.columns and "region" not in X_train.columns
    selection = p.run("select")
    assert selection["count"] == 3
    assert [e["partition"] for e in p.read("select", "selection.json")] == ["a", "b", "c"]
    with pytest.raises(StepFailed, match="out of range"):
        p.run("train", item=6)


def test_entrypoint_model(tmp_path):
    (tmp_path / "ep_trainer_mod.py").write_text(textwrap.dedent("""
        import json
        from sklearn.linear_model import LogisticRegression

        def train(train, test, params, context):
            assert context.rank == 0 and context.world_size == 1
            X = train[context.features]
            assert context.target not in context.features and context.target in train.columns
            assert len(test) > 0
            (context.output_dir / "notes.json").write_text(json.dumps(
                {"params": params, "features": context.features, "partition": context.partition}))
            return LogisticRegression(C=params["C"]).fit(X, train[context.target])
    """))
    spec = """
    dagsmith: 1
    pipeline: {name: entry}
    sources:
      rows: {type: csv, uri: data/rows.csv}
    training:
      inputs: [rows]
      target: y
      partition_by: region
      partitions: [a, b]
      model:
        entrypoint: ep_trainer_mod:train
        params: {C: 0.3}
    evaluation:
      metrics: [roc_auc, f1]
    """
    p = Pipeline(tmp_path, spec, {"rows": classification_rows()})
    assert item_count(p.ctx("train")) == 2
    result = p.run("train", item=1)
    assert result["partition"] == "b" and set(result["metrics"]) == {"roc_auc", "f1"}
    notes = p.read("train", "output/notes.json", item=1)
    assert notes["params"] == {"C": 0.3} and notes["partition"] == "b"
    model = p.read("train", "model.joblib", item=1)
    assert model["task"] == "classifier" and model["source"] == "ep_trainer_mod:train"
    assert model["columns"] == notes["features"]


def test_entrypoint_errors_are_step_failures(tmp_path):
    (tmp_path / "ep_broken_mod.py").write_text("def train(train, test, params, context):\n    raise ValueError('bad data')\n"
                                               "def nothing(train, test, params, context):\n    return None\n")
    spec = """
    dagsmith: 1
    pipeline: {name: entry-broken}
    sources:
      rows: {type: csv, uri: data/rows.csv}
    training:
      inputs: [rows]
      target: y
      model: {entrypoint: ep_broken_mod:train}
    """
    p = Pipeline(tmp_path, spec, {"rows": classification_rows()})
    with pytest.raises(StepFailed, match="ep_broken_mod:train raised ValueError: bad data"):
        p.run("train")
    p2 = Pipeline(tmp_path, spec.replace(":train", ":nothing"), {"rows": classification_rows()})
    with pytest.raises(StepFailed, match="must return a fitted model"):
        p2.run("train")


def test_bad_estimator_param_and_missing_target(tmp_path):
    spec = SWEEP_SPEC.replace("params: {max_iter: 500}", "params: {no_such_param: 1}")
    p = Pipeline(tmp_path, spec, {"rows": classification_rows()})
    with pytest.raises(StepFailed, match="no_such_param"):
        p.run("train", item=0)
    rows = classification_rows().drop(columns=["y"])
    p = Pipeline(tmp_path, SWEEP_SPEC, {"rows": rows})
    with pytest.raises(StepFailed, match="target column 'y' is not in the training data"):
        p.run("train", item=0)


def test_several_inputs_are_joined_and_keys_excluded(tmp_path):
    rows = classification_rows()
    left = rows[["id", "x1", "plan", "y"]]
    right = rows[["id", "x2"]].iloc[::-1]  # another order: the join and the key sort fix it
    spec = """
    dagsmith: 1
    pipeline: {name: joined}
    sources:
      left: {type: csv, uri: data/left.csv}
      right: {type: csv, uri: data/right.csv}
    features:
      both:
        inputs: [left, right]
        sql: SELECT * FROM left JOIN right USING (id)
        key: id
    training:
      inputs: [left, right]
      target: y
      model: {estimator: sklearn.linear_model.LogisticRegression}
    """
    p = Pipeline(tmp_path, spec, {"left": left, "right": right})
    p.run("train")
    model = p.read("train", "model.joblib")
    assert {"x1", "x2", "id"} <= set(model["columns"])  # no key declared on these inputs: id is a column
    # a feature with `key: id` as the input: id is excluded
    spec2 = spec.replace("inputs: [left, right]\n      target", "inputs: [both]\n      target")
    p2 = Pipeline(tmp_path, spec2, {"left": left, "right": right, "both": left.merge(right, on="id")})
    assert p2.ir.step("train").config["exclude"] == ["id"]
    p2.run("train")
    assert "id" not in p2.read("train", "model.joblib")["columns"]


def test_a_saved_model_does_not_depend_on_the_machines_openmp_threads(tmp_path):
    """HistGradientBoosting records the OpenMP thread count it was fitted with; the saved model
    must not, or the same training gives another fingerprint on a bigger worker (Airflow, Argo)."""
    import io

    import joblib
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from dagsmith.runtime.train import _portable

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 4)), rng.normal(size=200)
    saved = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="openmp"):
            model = make_pipeline(StandardScaler(), HistGradientBoostingRegressor(max_iter=10, random_state=0)).fit(X, y)
        assert model[-1]._bin_mapper.n_threads == threads  # what sklearn records
        buffer = io.BytesIO()
        joblib.dump(_portable({"model": model}), buffer)
        saved.append(buffer.getvalue())
        assert np.allclose(model.predict(X), joblib.load(io.BytesIO(buffer.getvalue()))["model"].predict(X))
    assert saved[0] == saved[1]
