"""Every artifact a step reads is declared in its IR `inputs`, and the runtime refuses any other
read of another step's outputs (StepContext.manifest_of), so the IR says what each step reads."""

from __future__ import annotations

import dataclasses

import pytest

from dagsmith.ir import IR
from dagsmith.runtime.context import StepFailed

from dagsmith_testing import EXAMPLES, compile_path
from runtime_testing import Pipeline
from test_evaluate_deploy import DEPLOY, GATES_OK, classification_rows, spec


def without_input(ir: IR, step_id: str, artifact: str) -> IR:
    step = ir.step(step_id)
    assert artifact in step.inputs
    changed = dataclasses.replace(step, inputs=tuple(a for a in step.inputs if a != artifact))
    return dataclasses.replace(ir, steps=tuple(changed if s.id == step_id else s for s in ir.steps))


# --- the compiler declares them ------------------------------------------------------------------

@pytest.mark.parametrize("example", EXAMPLES)
def test_each_input_is_made_upstream_by_the_step_it_names(example, in_repo):
    ir = compile_path(f"examples/{example}/pipeline.yaml")
    for step in ir.steps:
        for artifact in step.inputs:
            if artifact.startswith("registry:"):
                continue  # a registry model: no step of the run makes it
            producer = ir.producer(artifact)
            assert artifact in ir.step(producer).outputs, (step.id, artifact)
            assert step.id in ir.downstream(producer), (step.id, artifact)


def test_model_steps_declare_the_tables_and_items_they_read(in_repo):
    churn = compile_path("examples/churn/pipeline.yaml")
    # evaluate and gate re-derive the held-out split from the training tables
    assert churn.step("evaluate").inputs == ("model:select", "table:churn_features")
    assert churn.step("gate").inputs == ("metrics:evaluate", "model:select", "table:churn_features")
    # deploy records the fingerprints of every table the model comes from (lineage)
    assert churn.step("deploy").inputs == (
        "model:select", "metrics:evaluate", "gate:gate",
        "table:customers", "table:events", "table:plans", "table:customer_activity", "table:churn_features")
    forecast = compile_path("examples/forecast/pipeline.yaml")
    # partitions found at run time: train and select read the plan's items
    assert forecast.step("train").inputs == ("table:demand_features", "items:plan")
    assert forecast.step("select").inputs == ("trials:train", "items:plan")


# --- the runtime enforces them -------------------------------------------------------------------

def test_evaluate_without_its_table_input_fails_as_a_dagsmith_bug(tmp_path):
    p = Pipeline(tmp_path, spec(), {"rows": classification_rows()})
    p.run("train")
    p.ir = without_input(p.ir, "evaluate", "table:rows")
    with pytest.raises(StepFailed) as failure:
        p.run("evaluate")
    message = str(failure.value)
    assert "step 'evaluate' reads table:rows" in message
    assert "not declared in its inputs (a dagsmith bug)" in message


def test_a_local_run_of_that_ir_fails_at_evaluate_with_the_same_message(tmp_path, monkeypatch):
    from dagsmith.compiler import compile_spec
    from dagsmith.runner import start
    from dagsmith.spec import load_spec

    (tmp_path / "data").mkdir()
    classification_rows().to_csv(tmp_path / "data" / "rows.csv", index=False)
    (tmp_path / "pipeline.yaml").write_text(spec(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    ir = without_input(compile_spec(load_spec(tmp_path / "pipeline.yaml")), "evaluate", "table:rows")
    record = start(ir, tmp_path / "work", max_parallel=1, use_cache=False)
    assert record["status"] == "failed"
    assert {step: entry["state"] for step, entry in record["steps"].items()} == {
        "rows": "succeeded", "train": "succeeded", "evaluate": "failed"}
    assert "reads table:rows, which is not declared in its inputs (a dagsmith bug)" in record["steps"]["evaluate"]["error"]


def test_a_step_reads_its_own_outputs_and_only_its_declared_inputs(tmp_path):
    p = Pipeline(tmp_path, spec(gates=GATES_OK, deployment=DEPLOY), {"rows": classification_rows()})
    p.run_through("deploy")
    assert p.ctx("gate").read_json("gate", "decision.json")["passed"] is True
    assert p.ctx("gate").read_json("evaluate", "metrics.json")["roc_auc"] > 0.5
    with pytest.raises(StepFailed, match=r"step 'evaluate' reads gate:gate, which is not declared"):
        p.ctx("evaluate").read_json("gate", "decision.json")
    # with missing_ok, a declared input without outputs is None; an undeclared one fails even then
    assert p.ctx("deploy", run="r2").manifest_of("rows", missing_ok=True) is None
    with pytest.raises(StepFailed, match="not declared in its inputs"):
        p.ctx("train").manifest_of("deploy", missing_ok=True)


def test_deploy_lineage_reads_only_declared_tables(tmp_path):
    p = Pipeline(tmp_path, spec(gates=GATES_OK, deployment=DEPLOY), {"rows": classification_rows()})
    p.run_through("deploy")
    lineage = p.store.read_json("registry/churn/1/lineage.json")
    assert lineage["inputs"] == {"rows": p.store.manifest(p.store.step_key("r1", "rows"))["fingerprint"]}

    (tmp_path / "again").mkdir()
    q = Pipeline(tmp_path / "again", spec(gates=GATES_OK, deployment=DEPLOY), {"rows": classification_rows()})
    q.run_through("gate")
    q.ir = without_input(q.ir, "deploy", "table:rows")
    with pytest.raises(StepFailed, match=r"step 'deploy' reads table:rows, which is not declared in its inputs"):
        q.run("deploy")
