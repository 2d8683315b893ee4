"""deployment.mlflow against a REAL MLflow tracking store: mlflow-skinny's client on a sqlite:///
backend store (tracking and Model Registry) in tmp_path. The spec names the connection; the URI
is in DAGSMITH_CONN_TRACKING, as at run time."""

from __future__ import annotations

import pytest

from deploy_testing import Pipeline, rows, spec

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow

SWEEP = """  sweep:
    method: grid
    parameters: {C: [0.01, 1.0, 10.0]}
    select: {metric: roc_auc, goal: max}"""
GATES = """  gates:
    - {metric: roc_auc, compare_to: production, op: ">=", delta: -0.5}"""
DEPLOY = """  model_name: churn
  target: local
  strategy: canary
  canary: {traffic_percent: 25}
  mlflow: {connection: tracking, experiment: churn-exp}"""


def test_trials_runs_registry_aliases_and_the_champion_gate(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("DAGSMITH_CONN_TRACKING", uri)
    monkeypatch.chdir(tmp_path)  # artifacts of a sqlite store go to ./mlruns
    p = Pipeline(tmp_path, spec(DEPLOY, gates=GATES, sweep=SWEEP), {"rows": rows()})
    first = p.run_through("deploy")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("churn-exp")
    trials = client.search_runs([experiment.experiment_id], filter_string="tags.\"dagsmith.run_id\" = 'r1'")
    by_item = {r.data.tags.get("dagsmith.item"): r for r in trials if r.data.tags.get("dagsmith.item")}
    assert sorted(by_item) == ["0", "1", "2"]
    for item, run in by_item.items():
        trial = p.read("train", "trial.json", item=int(item))
        assert run.data.params == {"C": str(trial["params"]["C"])}
        assert run.data.metrics["roc_auc"] == pytest.approx(trial["metrics"]["roc_auc"])
        assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/model.joblib"]

    deployed = first["deploy"]
    assert deployed["mlflow"]["aliases"] == {"champion": 1, "challenger": None}
    assert first["gate"]["gates"][0]["note"].startswith("no production model")  # no champion yet: passes
    mv = client.get_model_version_by_alias("churn", "champion")
    assert mv.tags["dagsmith.version"] == "1" and mv.tags["dagsmith.run_id"] == "r1"
    assert mv.tags["dagsmith.spec_hash"] == p.ir.pipeline["spec_hash"]
    assert mv.tags["dagsmith.input.rows"] == p.store.manifest("runs/r1/steps/rows")["fingerprint"]
    assert set(mv.tags["dagsmith.trial_runs"].split(",")) == {r.info.run_id for r in by_item.values()}

    # the second run: the gate reads the champion from MLflow; the new version is the challenger
    second = p.run_through("deploy", run="r2")
    gate = second["gate"]["gates"][0]
    assert gate["production_version"] == 1 and gate["production_value"] is not None
    assert second["deploy"]["mlflow"]["aliases"] == {"champion": 1, "challenger": 2}
    assert client.get_model_version_by_alias("churn", "challenger").tags["dagsmith.version"] == "2"
    # a retry of the deploy registers nothing twice
    again = p.run("deploy", run="r2")
    assert again["mlflow"]["version"] == 2 and len(client.search_model_versions("name='churn'")) == 2

    # promote and rollback move MLflow's aliases as they move the local ones
    from dagsmith.cli import main

    assert main(["promote", "churn", "--workdir", str(p.store.uri), "--mlflow", "tracking"]) == 0
    assert client.get_model_version_by_alias("churn", "champion").tags["dagsmith.version"] == "2"
    with pytest.raises(Exception):
        client.get_model_version_by_alias("churn", "challenger")  # the canary ended
    assert main(["rollback", "churn", "--workdir", str(p.store.uri), "--mlflow", "tracking"]) == 0
    assert client.get_model_version_by_alias("churn", "champion").tags["dagsmith.version"] == "1"


def test_missing_connection_is_named_not_echoed(tmp_path, monkeypatch):
    from dagsmith.runtime.context import StepFailed

    monkeypatch.delenv("DAGSMITH_CONN_TRACKING", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    p = Pipeline(tmp_path, spec(DEPLOY), {"rows": rows()})
    with pytest.raises(StepFailed, match="mlflow connection 'tracking' is not set: set DAGSMITH_CONN_TRACKING"):
        p.run_through("deploy")
    monkeypatch.setenv("DAGSMITH_CONN_TRACKING", "http://user:hunter2@127.0.0.1:9/")
    with pytest.raises(StepFailed) as caught:
        p.run_through("deploy", run="r2")
    assert "hunter2" not in str(caught.value) and "$DAGSMITH_CONN_TRACKING" in str(caught.value)
