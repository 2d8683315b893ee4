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
    second = p.run_through("deploy", run="r2", tables={"rows": rows(seed=1)})
    gate = second["gate"]["gates"][0]
    assert gate["production_version"] == 1 and gate["production_value"] is not None
    assert second["deploy"]["mlflow"]["aliases"] == {"champion": 1, "challenger": 2}
    assert client.get_model_version_by_alias("churn", "challenger").tags["dagsmith.version"] == "2"
    # a retry of the deploy registers nothing twice: the same model as the canary, "unchanged",
    # and MLflow is not called again
    again = p.run("deploy", run="r2")
    assert again["unchanged"] is True and again["version"] == 2 and "mlflow" not in again
    assert len(client.search_model_versions("name='churn'")) == 2

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
        p.run_through("deploy", run="r2", tables={"rows": rows(seed=1)})
    assert "hunter2" not in str(caught.value) and "$DAGSMITH_CONN_TRACKING" in str(caught.value)


def test_the_churn_examples_sweep_in_mlflow(tmp_path):
    """The churn example itself, run by `dagsmith run` (the local runner's worker processes), with
    `deployment.mlflow` added: its six trials are MLflow runs with their parameters and metrics,
    the selected model is registered as the champion; a second run's champion/challenger gate
    reads that champion from MLflow and registers the new version as the challenger (canary)."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from mlflow import MlflowClient

    from dagsmith_testing import REPO

    example = tmp_path / "churn"
    example.mkdir()
    for name in ("pipeline.yaml", "make_data.py"):
        shutil.copy(REPO / "examples/churn" / name, example / name)
    text = (example / "pipeline.yaml").read_text()
    assert "  canary: {traffic_percent: 10}\n" in text
    (example / "pipeline.yaml").write_text(text.replace(
        "  canary: {traffic_percent: 10}\n", "  canary: {traffic_percent: 10}\n  mlflow: {connection: tracking, experiment: churn}\n"))
    subprocess.run([sys.executable, str(example / "make_data.py")], check=True, capture_output=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "DAGSMITH_CONN_TRACKING": uri, "GX_ANALYTICS_ENABLED": "false"}
    dagsmith = str(Path(sys.executable).with_name("dagsmith"))

    def run(*extra: str) -> dict:
        done = subprocess.run([dagsmith, "run", str(example / "pipeline.yaml"), "--workdir", str(tmp_path / "work"), "--no-cache",
                               "--format", "json", *extra], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    first = run()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("churn")
    trials = client.search_runs([experiment.experiment_id], filter_string=f"tags.\"dagsmith.run_id\" = '{first['run_id']}'")
    trials = [r for r in trials if r.data.tags.get("dagsmith.item")]
    grid = {(p["learning_rate"], p["max_depth"]) for p in (r.data.params for r in trials)}
    assert grid == {(lr, depth) for lr in ("0.05", "0.1") for depth in ("2", "3", "4")}  # the example's 2 x 3 grid
    assert all(0.5 < r.data.metrics["roc_auc"] <= 1 for r in trials)
    champion = client.get_model_version_by_alias("churn", "champion")
    assert champion.tags["dagsmith.run_id"] == first["run_id"] and champion.tags["dagsmith.version"] == "1"
    assert set(champion.tags["dagsmith.trial_runs"].split(",")) == {r.info.run_id for r in trials}

    second = run("--param", "lookback_days=29")  # another model: the same one would be "unchanged"
    gate = next(g for g in second["gates"] if g.get("compare_to") == "production" or "production_version" in g)
    assert gate["production_version"] == 1 and gate["passed"]
    challenger = client.get_model_version_by_alias("churn", "challenger")
    assert challenger.tags["dagsmith.run_id"] == second["run_id"] and challenger.tags["dagsmith.version"] == "2"
    assert client.get_model_version_by_alias("churn", "champion").version == champion.version
