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


# --- scikit-learn scorers and user functions ----------------------------------------------------

def regression_rows(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 3))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": 2 * x[:, 0] - x[:, 1] + rng.normal(scale=0.2, size=n)})


def multiclass_rows(n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, 3))
    labels = np.array(["cat", "dog", "eel"])[np.argmax(x + rng.normal(scale=0.6, size=(n, 3)), axis=1)]
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": labels})


RIDGE = ("sklearn.linear_model.LogisticRegression, params: {max_iter: 300}", "sklearn.linear_model.Ridge")


def test_any_scikit_learn_scorer_is_a_metric_reported_as_the_scorer_gives_it(tmp_path):
    text = spec(metrics="[mean_absolute_error, neg_mean_absolute_error, neg_root_mean_squared_error, r2]").replace(*RIDGE)
    p = Pipeline(tmp_path, text, {"rows": regression_rows()})
    p.run("train")
    metrics = p.run("evaluate")["metrics"]
    _, _, X_test, y_test, _ = training_frame(p.ctx("evaluate"))
    pred = p.read("train", "model.joblib")["estimator"].predict(X_test)
    mae = round(skm.mean_absolute_error(y_test, pred), 6)
    assert metrics["mean_absolute_error"] == mae  # dagsmith's: the error itself
    assert metrics["neg_mean_absolute_error"] == -mae  # the scorer's: negated, greater is better
    assert metrics["neg_root_mean_squared_error"] == -round(skm.root_mean_squared_error(y_test, pred), 6)


def test_multiclass_averaging_of_the_builtin_metrics_and_the_scorers(tmp_path):
    names = "[roc_auc, f1, precision, recall, f1_macro, recall_micro, roc_auc_ovr_weighted, balanced_accuracy]"
    p = Pipeline(tmp_path, spec(metrics=names), {"rows": multiclass_rows()})
    p.run("train")
    metrics = p.run("evaluate")["metrics"]
    est = p.read("train", "model.joblib")["estimator"]
    _, _, X_test, y_test, _ = training_frame(p.ctx("evaluate"))
    pred, proba = est.predict(X_test), est.predict_proba(X_test)
    expected = {  # docs/model-inputs.md "Multiclass": one-vs-rest macro roc_auc, weighted f1/precision/recall
        "roc_auc": skm.roc_auc_score(y_test, proba, multi_class="ovr", average="macro"),
        "f1": skm.f1_score(y_test, pred, average="weighted"),
        "precision": skm.precision_score(y_test, pred, average="weighted", zero_division=0),
        "recall": skm.recall_score(y_test, pred, average="weighted"),
        "f1_macro": skm.f1_score(y_test, pred, average="macro"),
        "recall_micro": skm.recall_score(y_test, pred, average="micro"),
        "roc_auc_ovr_weighted": skm.roc_auc_score(y_test, proba, multi_class="ovr", average="weighted"),
        "balanced_accuracy": skm.balanced_accuracy_score(y_test, pred),
    }
    assert metrics == {k: round(float(v), 6) for k, v in expected.items()}


USER_METRICS = '''
import numpy as np

def hits(y_true, y_pred):
    return int(np.sum(np.asarray(y_true) == np.asarray(y_pred)))

def mean_proba(y_true, y_proba, scale=1.0):
    return float(np.mean(y_proba)) * scale

def broken(y_true, y_pred):
    raise ValueError("no good")

def text(y_true, y_pred):
    return "high"

def yes(y_true, y_pred):
    return np.bool_(True)
'''


def test_user_metric_functions_with_predictions_or_probabilities_and_gates_on_them(tmp_path):
    (tmp_path / "mymetrics.py").write_text(USER_METRICS)
    metrics = '''
    - roc_auc
    - "mymetrics:hits"
    - {name: mean_proba, function: "mymetrics:mean_proba", needs: proba, params: {scale: 2}}'''
    gates = '''  gates:
    - {metric: mean_proba, op: ">", value: 0}
    - {metric: "mymetrics:hits", op: ">=", value: 1000000}'''
    p = Pipeline(tmp_path, spec(metrics=metrics, gates=gates), {"rows": classification_rows()})
    assert p.ir.step("evaluate").config["metric_functions"]["mean_proba"] == {
        "function": "mymetrics:mean_proba", "needs": "proba", "params": {"scale": 2}}
    p.run("train")
    result = p.run("evaluate")["metrics"]
    est = p.read("train", "model.joblib")["estimator"]
    _, _, X_test, y_test, _ = training_frame(p.ctx("evaluate"))
    assert result["mymetrics:hits"] == float(np.sum(est.predict(X_test) == y_test.to_numpy()))
    assert result["mean_proba"] == round(2 * float(np.mean(est.predict_proba(X_test)[:, 1])), 6)  # the positive class's column
    gate = p.run("gate")
    assert [g["passed"] for g in gate["gates"]] == [True, False]

    for name, message in (("broken", r"(?s)metric broken_m \(metrics_broken:broken\) raised ValueError: no good\n.*line 11, in broken"),
                          ("text", r"metric text_m \(metrics_text:text\) returned str, not a number"),
                          ("yes", r"metric yes_m \(metrics_yes:yes\) returned bool_?, not a number")):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"metrics_{name}.py").write_text(USER_METRICS)
        q = Pipeline(tmp_path / name, spec(metrics=f'[{{name: {name}_m, function: "metrics_{name}:{name}"}}]'), {"rows": classification_rows()})
        with pytest.raises(StepFailed, match=message):
            q.run("train")  # train scores its model on evaluation.metrics too


def test_the_metric_module_is_part_of_trains_cache_key(tmp_path):
    from dagsmith.runner.cache import cache_key

    (tmp_path / "cachemetrics.py").write_text(USER_METRICS)
    p = Pipeline(tmp_path, spec(metrics='[accuracy, "cachemetrics:hits"]'), {"rows": classification_rows()})
    before = cache_key(p.ctx("train"), p.ir)
    assert cache_key(p.ctx("train"), p.ir) == before
    (tmp_path / "cachemetrics.py").write_text(USER_METRICS + "\n# changed\n")
    assert cache_key(p.ctx("train"), p.ir) != before
    # the metrics train scores on are part of it too (select reads them from the trials)
    q = Pipeline(tmp_path, spec(metrics='[accuracy]'), {"rows": classification_rows()})
    assert cache_key(q.ctx("train"), q.ir) != cache_key(p.ctx("train"), p.ir)


# --- compare_to: production, a challenger identical to production ------------------------------

CHAMPION_SPEC = LOCAL_SPEC.replace("""  gates:
    - {metric: roc_auc, op: ">=", value: "${params.min_auc}"}
    - {metric: neg_log_loss, op: ">=", value: -5}""", """  gates:
    - {metric: roc_auc, compare_to: production, op: ">=", delta: 0.0}
    - {metric: balanced_accuracy, compare_to: production, op: ">=", delta: -0.01}
    - {metric: neg_log_loss, compare_to: production, op: ">=", delta: -0.0}
deployment: {model_name: churn, target: local}""")


def test_a_challenger_identical_to_production_passes_and_prints_plainly(project, capsys):
    (project / "pipeline.yaml").write_text(CHAMPION_SPEC)
    first = _run_json(capsys)
    assert first["status"] == "succeeded"
    second = _run_json(capsys)  # same data: train is cached, the challenger IS production's model
    assert second["status"] == "succeeded"
    folder = project / "wd" / "runs" / second["run_id"] / "steps" / "gate"
    decision = json.loads((folder / "decision.json").read_text())
    result = json.loads((folder / "result.json").read_text())
    for checks in (decision["gates"], result["gates"]):
        roc, balanced, loss = checks
        for check in checks:
            assert check["passed"] is True and check["production_version"] == 1
            assert check["observed"] == check["production_value"]
            assert check["difference"] == 0.0 and str(check["difference"]) == "0.0"
        assert roc["threshold"] == roc["observed"] and roc["delta"] == 0.0
        assert balanced["threshold"] == round(balanced["production_value"] - 0.01, 6)
        assert str(loss["delta"]) == "0.0"  # delta: -0.0 as written reads 0.0
    text = (folder / "result.json").read_text() + (folder / "decision.json").read_text()
    assert "e-1" not in text and "-0.0," not in text and "-0.0}" not in text
    console = Console(file=io.StringIO(), width=200, color_system=None)
    summary(second, console, workdir=project / "wd")
    printed = console.file.getvalue()
    row = next(line for line in printed.splitlines() if "roc_auc" in line and "production" in line)
    value = f"{roc['observed']:.4f}"
    assert f"{value} (production v1 {value}, delta 0.0000)" in row and row.rstrip(" │").endswith("yes"), row
    assert "-0.0 " not in printed and "-0.0000" not in printed and "e-1" not in printed
    assert "delta -0.0100)" in printed and "gates: passed (3/3 checks passed)" in printed


def test_gate_comparisons_forgive_float_noise_only():
    ops = evaluate.OPS
    noisy = 0.1 + 0.2  # 0.30000000000000004
    assert ops[">="](0.3, noisy) and ops["<="](noisy, 0.3) and not ops[">"](noisy, 0.3) and not ops["<"](0.3, noisy)
    assert not ops[">="](0.3, 0.300001) and ops[">"](0.300001, 0.3)  # a real difference at the metrics' 6 decimals
    assert ops[">="](-1e-17, 0.0) and not ops[">="](-1e-6, 0.0)
    assert ops[">="](1e9 - 1e-2, 1e9) is False and ops[">="](1e9 - 1e-4, 1e9)  # relative to the magnitude (1e-12 x 1e9)


def test_a_threshold_from_a_param_says_so_on_the_console_and_in_the_report():
    from types import SimpleNamespace

    from dagsmith.report import sections
    from dagsmith.runner.progress import threshold_text

    absolute = {"metric": "roc_auc", "op": ">=", "observed": 0.93, "threshold": 0.5, "passed": True,
                "params": {"value": "${params.min_auc}"}}
    relative = {"metric": "roc_auc", "op": ">=", "observed": 0.93, "threshold": 0.66, "passed": True, "compare_to": "production",
                "delta": -0.25, "production_version": 1, "production_value": 0.91, "difference": 0.02,
                "params": {"delta": "${params.max_drop}"}}
    assert threshold_text(absolute) == "0.5000 (${params.min_auc})"
    assert threshold_text(relative) == "0.6600 (production v1 0.9100, delta ${params.max_drop} = -0.2500)"
    html = sections.gates_table(SimpleNamespace(decision={"gates": [absolute, relative]}, record={}, gates_passed=lambda: True))
    assert "0.5 (${params.min_auc})" in html and "delta -0.25 (${params.max_drop})" in html
    # a record from a store is not trusted: anything but a reference is not printed
    assert threshold_text(dict(absolute, params={"value": "[red]x"})) == "0.5000"


def test_a_scorer_undefined_on_the_held_out_classes_is_null_like_roc_auc():
    from sklearn.linear_model import LogisticRegression

    from dagsmith.runtime import metrics as M

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    model = LogisticRegression().fit(X, ["a", "a", "b", "b", "c", "c"])
    one_class = pd.Series(["b", "b"])
    assert M.compute(["roc_auc", "roc_auc_ovr", "accuracy"], model, X.iloc[2:4], one_class, "classifier") == {
        "roc_auc": None, "roc_auc_ovr": None, "accuracy": 1.0}
    # multiclass held-out rows that lack one of the model's classes (a rare class, a small partition)
    two_of_three = pd.Series(["a", "b", "b"])
    scores = M.compute(["roc_auc", "roc_auc_ovr", "f1_macro"], model, X.iloc[[0, 2, 3]], two_of_three, "classifier")
    assert scores["roc_auc"] is None and scores["roc_auc_ovr"] is None and scores["f1_macro"] is not None


def test_a_scorer_this_scikit_learn_lacks_fails_the_step_saying_so(monkeypatch):
    import sklearn.metrics
    from sklearn.linear_model import LogisticRegression

    from dagsmith.runtime import metrics as M

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    monkeypatch.setattr(sklearn.metrics, "get_scorer_names", lambda: ["accuracy"])  # an older scikit-learn
    with pytest.raises(StepFailed, match=r"metric f1_macro: scikit-learn .* here has no scorer 'f1_macro'"):
        M.compute(["f1_macro"], model, X, pd.Series([0, 0, 1, 1]), "classifier")
