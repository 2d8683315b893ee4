"""Runtime: evaluate (metrics vs sklearn by hand), gates (absolute, compare_to production), deploy
to the local registry (versions, aliases, canary, lineage, partitions), registry helpers.

Real sklearn, real files: specs are compiled from YAML in tmp_path, and the source tables are
committed into a LocalStore by the test (no dependency on the source/feature steps).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

from dagsmith.runtime import registry
from dagsmith.runtime.data import model_input, training_frame

from runtime_testing import Pipeline  # noqa: E402


def classification_rows(n: int = 240, seed: int = 0, regions=("a", "b"), shift_b: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    region = np.array([regions[i % len(regions)] for i in range(n)])
    shift = np.where(region == regions[0], 0.0, shift_b)
    y = ((x1 + 0.5 * x2 + shift + rng.normal(scale=0.7, size=n)) > 0.5).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "plan": rng.choice(["basic", "pro"], size=n), "region": region, "y": y})


def spec(*, gates: str = "", deployment: str = "", training_extra: str = "", metrics: str = "[roc_auc, accuracy, f1, precision, recall, log_loss]") -> str:
    return f"""
dagsmith: 1
pipeline: {{name: eval-test}}
sources:
  rows: {{type: csv, uri: data/rows.csv}}
training:
  inputs: [rows]
  target: y
  split: {{test_size: 0.3, seed: 5}}
  model: {{estimator: sklearn.linear_model.LogisticRegression, params: {{max_iter: 300}}}}
{training_extra}
evaluation:
  metrics: {metrics}
{gates}
{deployment}
"""


# --- evaluate -------------------------------------------------------------------------------------

def test_evaluate_metrics_equal_sklearn_by_hand(tmp_path):
    rows = classification_rows()
    p = Pipeline(tmp_path, spec(), {"rows": rows})
    p.run("train")
    result = p.run("evaluate")
    assert p.read("evaluate", "metrics.json") == result["metrics"]

    # the split by hand: train_test_split(test_size, seed), stratified on the target
    train, test = train_test_split(rows, test_size=0.3, random_state=5, stratify=rows["y"])
    model = p.read("train", "model.joblib")
    est = model["estimator"]
    X_test = model_input(model, test)
    assert sorted(model["columns"]) == sorted(["x1", "x2", "plan=basic", "plan=pro", "region=a", "region=b"])
    pred, proba = est.predict(X_test), est.predict_proba(X_test)[:, 1]
    y = test["y"].to_numpy()
    expected = {
        "roc_auc": skm.roc_auc_score(y, proba),
        "accuracy": skm.accuracy_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "log_loss": skm.log_loss(y, est.predict_proba(X_test)),
    }
    assert result["metrics"] == {k: round(float(v), 6) for k, v in expected.items()}
    # the frame evaluate used is that split
    X_train, y_train, X_eval, y_eval, columns = training_frame(p.ctx("evaluate"))
    assert len(X_eval) == len(test) and len(X_train) == len(train)
    assert sorted(y_eval.tolist()) == sorted(y.tolist())


def test_evaluate_regression_and_multiclass(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3))
    rows = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2],
                         "y": 2 * x[:, 0] - x[:, 1] + rng.normal(scale=0.2, size=200)})
    text = spec(metrics="[r2, mean_absolute_error, mean_squared_error]").replace(
        "sklearn.linear_model.LogisticRegression, params: {max_iter: 300}", "sklearn.linear_model.Ridge")
    (tmp_path / "reg").mkdir()
    p = Pipeline(tmp_path / "reg", text, {"rows": rows})
    p.run("train")
    metrics = p.run("evaluate")["metrics"]
    _, _, X_test, y_test, _ = training_frame(p.ctx("evaluate"))
    pred = p.read("train", "model.joblib")["estimator"].predict(X_test)
    assert metrics == {
        "r2": round(skm.r2_score(y_test, pred), 6),
        "mean_absolute_error": round(skm.mean_absolute_error(y_test, pred), 6),
        "mean_squared_error": round(skm.mean_squared_error(y_test, pred), 6),
    }

    labels = np.array(["cat", "dog", "eel"])[np.argmax(x, axis=1)]
    rows3 = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": labels})
    (tmp_path / "multi").mkdir()
    p3 = Pipeline(tmp_path / "multi", spec(metrics="[roc_auc, f1, log_loss]"), {"rows": rows3})
    p3.run("train")
    metrics = p3.run("evaluate")["metrics"]
    est = p3.read("train", "model.joblib")["estimator"]
    _, _, X_test, y_test, _ = training_frame(p3.ctx("evaluate"))
    proba = est.predict_proba(X_test)
    assert metrics["roc_auc"] == round(skm.roc_auc_score(y_test, proba, multi_class="ovr"), 6)
    assert metrics["f1"] == round(skm.f1_score(y_test, est.predict(X_test), average="weighted"), 6)
    assert metrics["log_loss"] == round(skm.log_loss(y_test, proba, labels=est.classes_), 6)


# --- gates -----------------------------------------------------------------------------------------

GATES_OK = """  gates:
    - {metric: roc_auc, op: ">=", value: 0.6}
    - {metric: log_loss, op: "<", value: 5}"""
GATES_FAIL = """  gates:
    - {metric: roc_auc, op: ">=", value: 0.6}
    - {metric: accuracy, op: ">=", value: 0.999}"""
DEPLOY = "deployment: {model_name: churn, target: local, strategy: replace}"


def test_absolute_gates_pass_and_fail(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    ok = Pipeline(tmp_path / "ok", spec(gates=GATES_OK, deployment=DEPLOY), {"rows": classification_rows()})
    results = ok.run_through("gate")
    gate = results["gate"]
    assert gate["passed"] is True and gate["partitions_passed"] is None
    roc = results["evaluate"]["metrics"]["roc_auc"]
    assert gate["gates"][0] == {"metric": "roc_auc", "op": ">=", "threshold": 0.6, "observed": roc, "passed": True}
    assert ok.read("gate", "decision.json")["passed"] is True

    bad = Pipeline(tmp_path / "bad", spec(gates=GATES_FAIL, deployment=DEPLOY), {"rows": classification_rows()})
    gate = bad.run_through("gate")["gate"]  # a failed gate is a result, not an exception
    assert gate["passed"] is False
    assert [g["passed"] for g in gate["gates"]] == [True, False]
    assert gate["gates"][1]["threshold"] == 0.999
    # deploy refuses to deploy (exit 0, nothing in the registry) if a backend runs it anyway
    deployed = bad.run("deploy")
    assert deployed["deployed"] is False
    assert registry.versions(bad.store, "churn") == []


def test_compare_to_production(tmp_path):
    gates = """  gates:
    - {metric: roc_auc, compare_to: production, op: ">=", delta: 0.0}"""
    p = Pipeline(tmp_path, spec(gates=gates, deployment=DEPLOY), {"rows": classification_rows(seed=0)})
    first = p.run_through("deploy")
    record = first["gate"]["gates"][0]
    assert record["passed"] is True and record["production_version"] is None
    assert "no production model" in record["note"] and record["compare_to"] == "production"
    assert first["deploy"]["version"] == 1

    # run 2: new data; production (v1) is scored on run 2's held-out rows
    newer = classification_rows(seed=1)
    second = p.run_through("gate", run="r2", tables={"rows": newer})
    record = second["gate"]["gates"][0]
    prod = registry.load_model(p.store, "churn", 1)
    _, _, _, y_test, _ = training_frame(p.ctx("gate", run="r2"))
    X_prod = model_input(prod, _raw_test(p, "r2"))  # production's own encoding of the same rows
    expected = round(skm.roc_auc_score(y_test, prod["estimator"].predict_proba(X_prod)[:, 1]), 6)
    assert record["production_version"] == 1
    assert record["production_value"] == expected
    assert record["threshold"] == expected
    assert record["passed"] == (record["observed"] >= expected)

    # a delta nobody can meet fails the gate
    strict = spec(gates=gates.replace("delta: 0.0", "delta: 0.5"), deployment=DEPLOY)
    (tmp_path / "strict").mkdir()
    q = Pipeline(tmp_path / "strict", strict, {"rows": classification_rows(seed=0)})
    q.run_through("deploy")
    gate = q.run_through("gate", run="r2", tables={"rows": newer})["gate"]
    assert gate["passed"] is False
    assert gate["gates"][0]["threshold"] == round(gate["gates"][0]["production_value"] + 0.5, 6)


def _raw_test(p: Pipeline, run: str):
    from dagsmith.runtime.data import prepare

    return prepare(p.ctx("gate", run=run), None).test_rows


# --- deploy ----------------------------------------------------------------------------------------

def test_deploy_replace_versions_aliases_lineage(tmp_path):
    p = Pipeline(tmp_path, spec(gates=GATES_OK, deployment=DEPLOY), {"rows": classification_rows()})
    first = p.run_through("deploy")["deploy"]
    assert first["deployed"] is True and first["version"] == 1 and first["production"] == 1
    assert registry.read_aliases(p.store, "churn") == {"production": 1, "canary": None, "history": []}
    second = p.run_through("deploy", run="r2", tables={"rows": classification_rows(seed=1)})["deploy"]
    assert second["version"] == 2 and second["previous_production"] == 1
    assert registry.read_aliases(p.store, "churn") == {"production": 2, "canary": None, "history": [1]}
    assert registry.versions(p.store, "churn") == [1, 2]

    lineage = registry.read_version_json(p.store, "churn", 2, "lineage.json")
    assert lineage["run_id"] == "r2" and lineage["pipeline"] == "eval-test"
    assert lineage["spec_hash"] == p.ir.pipeline["spec_hash"]
    assert lineage["inputs"] == {"rows": p.store.manifest("runs/r2/steps/rows")["fingerprint"]}
    assert registry.read_version_json(p.store, "churn", 2, "metrics.json") == p.read("evaluate", "metrics.json", run="r2")
    model = registry.load_model(p.store, "churn", registry.resolve(p.store, "churn", "production"))
    assert model["task"] == "classifier" and hasattr(model["estimator"], "predict_proba")
    assert p.read("deploy", "deployment.json", run="r2")["version"] == 2

    # a retry of the same run reuses its version instead of registering another
    again = p.run("deploy", run="r2")
    assert again["version"] == 2 and registry.versions(p.store, "churn") == [1, 2]
    assert registry.read_aliases(p.store, "churn")["history"] == [1]


def test_deploy_canary_and_remote_targets(tmp_path):
    # (target sagemaker / kserve serve the model there too: tests/deployment)
    canary = "deployment: {model_name: churn, target: local, strategy: canary, canary: {traffic_percent: 15}}"
    p = Pipeline(tmp_path, spec(deployment=canary), {"rows": classification_rows()})
    first = p.run_through("deploy")["deploy"]
    assert first["production"] == 1 and first["canary"] is None
    assert any("became production directly" in n for n in first["notes"])
    second = p.run_through("deploy", run="r2", tables={"rows": classification_rows(seed=1)})["deploy"]
    assert second["version"] == 2 and second["production"] == 1
    assert second["canary"] == {"version": 2, "traffic_percent": 15}
    assert registry.read_aliases(p.store, "churn") == {
        "production": 1, "canary": {"version": 2, "traffic_percent": 15}, "history": []}
    assert registry.resolve(p.store, "churn", "canary") == 2
    assert registry.resolve(p.store, "churn", "latest") == 2


def test_an_unchanged_model_registers_nothing_and_keeps_the_aliases(tmp_path):
    """Re-running an unchanged pipeline: the model's fingerprint is production's (or, canary,
    the canary's): "unchanged, version N", no new version, no claim, the aliases as they were."""
    p = Pipeline(tmp_path, spec(deployment=DEPLOY), {"rows": classification_rows()})
    assert p.run_through("deploy")["deploy"]["version"] == 1
    aliases = registry.read_aliases(p.store, "churn")
    again = p.run_through("deploy", run="r2")["deploy"]  # the same rows: the same model files
    assert again["unchanged"] is True and again["deployed"] is False and again["version"] == 1
    assert again["reason"].startswith("unchanged, version 1")
    assert registry.versions(p.store, "churn") == [1] and registry.claimed(p.store, "churn") == [1]
    assert registry.read_aliases(p.store, "churn") == aliases
    assert p.read("deploy", "deployment.json", run="r2")["unchanged"] is True
    from dagsmith.runner.progress import deployment_line

    assert deployment_line(again) == "churn: unchanged, version 1 (the same model: nothing registered)"
    # other data: a new version as before
    assert p.run_through("deploy", run="r3", tables={"rows": classification_rows(seed=1)})["deploy"]["version"] == 2

    # canary: the same model as the canary is unchanged too (and as production, with no canary)
    canary = "deployment: {model_name: churn, target: local, strategy: canary, canary: {traffic_percent: 15}}"
    (tmp_path / "c").mkdir()
    q = Pipeline(tmp_path / "c", spec(deployment=canary), {"rows": classification_rows()})
    q.run_through("deploy")
    assert q.run_through("deploy", run="r2")["deploy"]["unchanged"] is True
    assert q.run_through("deploy", run="r3", tables={"rows": classification_rows(seed=1)})["deploy"]["canary"] == {
        "version": 2, "traffic_percent": 15}
    same = q.run_through("deploy", run="r4", tables={"rows": classification_rows(seed=1)})["deploy"]
    assert same["unchanged"] is True and same["version"] == 2 and registry.versions(q.store, "churn") == [1, 2]
    assert registry.read_aliases(q.store, "churn")["canary"] == {"version": 2, "traffic_percent": 15}


def test_partitioned_gates_deploy_passing_partitions_and_keep_the_rest(tmp_path):
    training = """  partition_by: region
  partitions: [a, b]
  sweep:
    method: grid
    parameters: {C: [0.01, 1.0]}
    select: {metric: roc_auc, goal: max}"""
    gates = """  gates:
    - {metric: roc_auc, op: ">=", value: 0.6}"""
    p = Pipeline(tmp_path, spec(training_extra=training, gates=gates, deployment=DEPLOY), {"rows": classification_rows()})
    results = p.run_through("deploy")
    assert set(results["evaluate"]["metrics"]) == {"a", "b"}
    assert results["gate"]["partitions_passed"] == ["a", "b"]
    assert [g["partition"] for g in results["gate"]["gates"]] == ["a", "b"]
    assert results["deploy"]["partitions"] == ["a", "b"]
    v1 = registry.version_index(p.store, "churn", 1)
    assert [m["partition"] for m in v1["models"]] == ["a", "b"]
    assert registry.load_model(p.store, "churn", 1, "b")["partition"] == "b"

    # run 2: region b's labels are noise -> b fails its gate, a passes and is deployed; the new
    # version still serves b with the production (v1) model
    noisy = classification_rows(seed=3)
    mask = noisy.region == "b"
    noisy.loc[mask, "y"] = np.random.default_rng(9).integers(0, 2, size=mask.sum())
    second = p.run_through("deploy", run="r2", tables={"rows": noisy})
    gate = second["gate"]
    assert gate["passed"] is True and gate["partitions_passed"] == ["a"] and gate["partitions_failed"] == ["b"]
    deploy = second["deploy"]
    assert deploy["version"] == 2 and deploy["partitions"] == ["a"] and deploy["inherited"] == ["b"]
    v2 = registry.version_index(p.store, "churn", 2)
    entry_b = registry.model_entry(v2, "b")
    assert entry_b["version"] == 1
    assert registry.load_model(p.store, "churn", 2, "b")["index"] == registry.load_model(p.store, "churn", 1, "b")["index"]
    assert registry.read_version_json(p.store, "churn", 2, "lineage.json")["partitions"] == ["a"]
    with pytest.raises(registry.RegistryError, match="no partition 'zz'"):
        registry.load_model(p.store, "churn", 2, "zz")


def test_registry_on_an_s3_store(tmp_path, aws_s3):
    """The registry goes through the Store API: the same deploy/gate/load on S3 (moto's server
    on 127.0.0.1, the only local stand-in for S3)."""
    from dagsmith.runtime.store import Store

    aws_s3.create_bucket(Bucket="models")
    gates = """  gates:
    - {metric: roc_auc, compare_to: production, op: ">=", delta: -1.0}"""
    text = spec(gates=gates, deployment=DEPLOY.replace("replace", "canary, canary: {traffic_percent: 5}"))
    p = Pipeline(tmp_path, text, {"rows": classification_rows()}, store=Store.open("s3://models/ml"))
    assert p.run_through("deploy")["deploy"]["production"] == 1
    second = p.run_through("deploy", run="r2", tables={"rows": classification_rows(seed=1)})
    assert second["gate"]["gates"][0]["production_version"] == 1 and second["gate"]["passed"] is True
    assert second["deploy"]["canary"] == {"version": 2, "traffic_percent": 5}
    fresh = Store.open("s3://models/ml")  # another process: nothing cached
    assert registry.versions(fresh, "churn") == [1, 2]
    assert registry.read_aliases(fresh, "churn")["production"] == 1
    assert registry.load_model(fresh, "churn", 2)["task"] == "classifier"
    keys = aws_s3.list_objects_v2(Bucket="models", Prefix="ml/registry/churn/2/")["Contents"]
    assert {k["Key"].rsplit("/", 1)[1] for k in keys} >= {"manifest.json", "model.joblib", "lineage.json", "metrics.json"}
