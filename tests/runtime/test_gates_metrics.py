"""Gates and metrics real pipelines need (issue 23 item 5): a threshold from ${params.X} (the
run's value, on the local runner and through `dagsmith step`), any scikit-learn scorer or a
user function as a metric, multiclass averaging, and champion/challenger gates that compare
and print tiny differences honestly."""

from __future__ import annotations

import io
import json
import textwrap

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn import metrics as skm

from dagsmith.cli import main
from dagsmith.runner.progress import summary
from dagsmith.runtime import evaluate
from dagsmith.runtime.context import StepFailed
from dagsmith.runtime.data import training_frame
from dagsmith.runtime.store import LocalStore

from runtime_testing import Pipeline  # noqa: E402
from test_evaluate_deploy import classification_rows, spec  # noqa: E402

PARAM_GATES = """  gates:
    - {metric: roc_auc, op: ">=", value: "${params.min_auc}"}"""
PARAMS = "params:\n  min_auc: {type: number, default: 0.999}\n  max_drop: {type: number, default: 0.0}\n"


def with_params(text: str) -> str:
    return textwrap.dedent(text) + PARAMS


# --- ${params.X} thresholds -----------------------------------------------------------------

def test_a_gate_threshold_from_a_param_is_the_runs_value(tmp_path):
    p = Pipeline(tmp_path, with_params(spec(gates=PARAM_GATES)), {"rows": classification_rows()})
    assert p.ir.step("gate").config["gates"][0]["value"] == "${params.min_auc}"  # the IR keeps the reference
    p.run("train")
    p.run("evaluate")
    strict = p.run("gate")  # the default, 0.999: fails
    record = strict["gates"][0]
    assert strict["passed"] is False and record["threshold"] == 0.999
    assert record["params"] == {"value": "${params.min_auc}"}
    # the same IR, a run whose param is overridden: gates with the overridden value
    p.env = {"DAGSMITH_PARAMS": json.dumps({"min_auc": 0.5})}
    relaxed = p.run("gate")
    assert relaxed["passed"] is True and relaxed["gates"][0]["threshold"] == 0.5
    p.env = {"DAGSMITH_PARAM_min_auc": "0.6"}  # one value as text (orchestrators' form)
    assert p.run("gate")["gates"][0]["threshold"] == 0.6


def test_a_gate_delta_from_a_param_and_a_param_that_is_not_a_number(tmp_path):
    gates = """  gates:
    - {metric: roc_auc, compare_to: production, op: ">=", delta: "${params.max_drop}"}"""
    deployment = "deployment: {model_name: churn, target: local}"
    p = Pipeline(tmp_path, with_params(spec(gates=gates, deployment=deployment)), {"rows": classification_rows()})
    p.env = {"DAGSMITH_PARAMS": json.dumps({"max_drop": -0.25})}
    p.run_through("deploy")
    second = p.run_through("gate", run="r2", tables={"rows": classification_rows(seed=3)})["gate"]["gates"][0]
    assert second["delta"] == -0.25 and second["params"] == {"delta": "${params.max_drop}"}
    assert second["threshold"] == round(second["production_value"] - 0.25, 6)
    # a value that is no number at run time (a caller's JSON) fails the step, saying which
    p.env = {"DAGSMITH_PARAMS": json.dumps({"max_drop": "a lot"})}
    with pytest.raises(StepFailed, match=r"gate delta 'a lot' \(from \$\{params.max_drop\}\) is not a finite number"):
        p.run("gate", run="r2")


LOCAL_SPEC = """
dagsmith: 1
pipeline: {name: gate-params}
params:
  min_auc: {type: number, default: 0.999}
sources:
  rows: {type: csv, uri: rows.csv}
training:
  inputs: [rows]
  target: y
  split: {test_size: 0.3, seed: 5}
  model: {estimator: sklearn.linear_model.LogisticRegression}
evaluation:
  metrics: [roc_auc, balanced_accuracy, neg_log_loss]
  gates:
    - {metric: roc_auc, op: ">=", value: "${params.min_auc}"}
    - {metric: neg_log_loss, op: ">=", value: -5}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipeline.yaml").write_text(LOCAL_SPEC)
    classification_rows().to_csv(tmp_path / "rows.csv", index=False)
    return tmp_path


def _run_json(capsys, *args) -> dict:
    capsys.readouterr()
    code = main(["run", "pipeline.yaml", "--workdir", "wd", "--format", "json", "--max-parallel", "1", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_the_local_runner_gates_with_an_overridden_param(project, capsys):
    gated = _run_json(capsys)
    assert gated["status"] == "gated"
    relaxed = _run_json(capsys, "--param", "min_auc=0.5")
    assert relaxed["status"] == "succeeded"
    decision = json.loads((project / "wd" / "runs" / relaxed["run_id"] / "steps" / "gate" / "decision.json").read_text())
    assert decision["gates"][0]["threshold"] == 0.5 and decision["passed"] is True
    # a scikit-learn scorer in a gate: neg_log_loss is reported negated, as sklearn's scorer gives it
    assert -5 < decision["gates"][1]["observed"] < 0


def test_dagsmith_step_gates_with_the_params_of_the_run(project, capsys, monkeypatch):
    """The path every orchestrator takes: the compiled IR, one `dagsmith step` per task, the
    run's params in DAGSMITH_PARAMS."""
    assert main(["compile", "pipeline.yaml", "-t", "ir", "-o", "build"]) == 0
    monkeypatch.setenv("DAGSMITH_RUN_ID", "r1")
    monkeypatch.setenv("DAGSMITH_PARAMS", json.dumps({"min_auc": 0.5}))
    for step in ("rows", "train", "evaluate", "gate"):
        capsys.readouterr()
        assert main(["step", "build/gate-params.ir.json", step, "--store", "store"]) == 0, step
    gate = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert gate["passed"] is True and gate["gates"][0]["threshold"] == 0.5
    monkeypatch.setenv("DAGSMITH_PARAMS", json.dumps({"min_auc": 0.9999}))
    capsys.readouterr()
    assert main(["step", "build/gate-params.ir.json", "gate", "--store", "store", "--skip-exit-code", "99"]) == 99
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["gates"][0]["threshold"] == 0.9999
