"""Step Functions backend: the files AWS's own validators accept (asl-validator, cfn-lint), names,
sizes, the mapping of gates / fan-outs / retries, and deploy through change sets in moto."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dagsmith_testing import EXAMPLES, REPO, compile_path

ASL_VALIDATOR = REPO / ".venv" / "node" / "node_modules" / ".bin" / "asl-validator"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"


def emit(example: str, **options) -> dict:
    from dagsmith.backends import get

    ir = compile_path(f"examples/{example}/pipeline.yaml")
    return get("stepfunctions").emit(ir, {**ir.backends.get("stepfunctions", {}), **options})


def files_of(files: dict, suffix: str) -> str:
    (name,) = [n for n in files if n.endswith(suffix)]
    return files[name]


@pytest.mark.parametrize("compute", ["ecs", "batch"])
@pytest.mark.parametrize("example", EXAMPLES)
def test_validators_accept_every_example(example, compute, in_repo, tmp_path):
    if not ASL_VALIDATOR.exists():
        pytest.fail(f"asl-validator is not installed at {ASL_VALIDATOR}: run `make test` (npm install asl-validator@4)")
    files = emit(example, compute=compute)
    asl_file, template_file = tmp_path / "machine.asl.json", tmp_path / "machine.template.yaml"
    asl_file.write_text(files_of(files, ".asl.json"), encoding="utf-8")
    template_file.write_text(files_of(files, ".template.yaml"), encoding="utf-8")
    got = subprocess.run([str(ASL_VALIDATOR), "--json-path", str(asl_file)], capture_output=True, text=True)
    assert got.returncode == 0, got.stdout + got.stderr
    lint = subprocess.run([str(CFN_LINT), "--format", "parseable", str(template_file)], capture_output=True, text=True)
    errors = [line for line in lint.stdout.splitlines() if ":E" in line or line.split(":")[-2:-1] and line.split(":")[-2].startswith("E")]
    assert lint.returncode in (0, 4, 8) and not errors, lint.stdout + lint.stderr  # 4: warnings, 8: informational


def test_definition_shape_churn(in_repo):
    files = emit("churn")
    definition = json.loads(files_of(files, ".asl.json"))
    text = json.dumps(definition)
    assert "arn:aws:states:::ecs:runTask.waitForTaskToken" in text
    states = all_states(definition)
    # the sweep is ONE Map over ranges, inline (6 trials), MaxConcurrency from max_parallel
    (mapper,) = [s for name, s in states.items() if s["Type"] == "Map"]
    assert mapper["ItemProcessor"]["ProcessorConfig"] == {"Mode": "INLINE"} and mapper["MaxConcurrency"] == 6
    # retries/retry_delay/timeout of defaults (2, 5m, 1h); the notify step's own (0 retries, 5m)
    (train,) = [s for name, s in states.items() if name == "Run_evaluate"]
    assert train["Retry"][0]["MaxAttempts"] == 2 and train["Retry"][0]["IntervalSeconds"] == 300 and train["TimeoutSeconds"] == 3600
    assert "Retry" not in states["Run_notify"] and states["Run_notify"]["TimeoutSeconds"] == 300
    # a gate's Choice, a validation's Fail naming it, min_interval's admission behind a lock
    assert states["Gate_gate"]["Choices"][0]["StringEquals"] == "skip"
    assert states["Failed_churn_features_complete"]["Error"] == "dagsmith.ValidationFailed"
    assert "churn_features_complete" in states["Failed_churn_features_complete"]["Cause"]
    assert states["Lock admission"]["Resource"] == "arn:aws:states:::dynamodb:putItem"
    assert all(len(name) <= 80 for name in states)


def all_states(definition: dict) -> dict:
    out = {}
    for name, state in definition["States"].items():
        out[name] = state
        for branch in state.get("Branches", []):
            out.update(all_states(branch))
        if "ItemProcessor" in state:
            out.update(all_states(state["ItemProcessor"]))
    return out


def test_template_churn(in_repo):
    template = yaml.safe_load(files_of(emit("churn"), ".template.yaml"))
    resources = template["Resources"]
    assert resources["Schedule"]["Properties"]["ScheduleExpression"] == "cron(0 3 ? * MON *)"  # Mondays 03:00
    (rule,) = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["Properties"]["EventPattern"]["detail-type"] == ["Object Created"]
    assert "LockTable" in resources and "StateMachineRole" not in resources  # churn names its role_arn
    # SendTask* take no resource type: "*" (an ARN there denies every callback); the token is the capability
    (callback,) = [s for s in resources["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
                   if "states:SendTaskSuccess" in s["Action"]]
    assert callback["Resource"] == "*"


def test_twenty_thousand_trials_distributed_and_small(tmp_path):
    from dagsmith_testing import benchmark_module

    big_spec_ir = benchmark_module("stepfunctions").big_spec_ir

    from dagsmith.backends import get

    files = get("stepfunctions").emit(big_spec_ir(tmp_path), {})
    text = files_of(files, ".asl.json")
    assert len(text.encode()) < 100_000
    definition = json.loads(text)
    (mapper,) = [s for s in all_states(definition).values() if s["Type"] == "Map"]
    assert mapper["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED" and "ItemReader" in mapper


def test_state_name_collision_is_a_compile_error(in_repo):
    from dagsmith.backends.stepfunctions import asl

    settings = asl.Settings(compute="ecs", inline_limit=40, ir_uri="s3://b/ir.json", task_ref={}, image_param={})
    builder = asl.Builder.__new__(asl.Builder)
    builder.settings = settings
    builder.name("Run", "a" * 100)
    with pytest.raises(asl.NameCollision):
        builder.settings.names[asl.state_name("Run", "b")] = ("Run", "other")
        builder.name("Run", "b")


def test_spec_text_cannot_become_a_reference():
    from dagsmith.backends.stepfunctions.backend import escape_sub

    assert escape_sub('{"a": "${Cluster}", "b": "${HOME}", "c": "$${x"}', {"Cluster"}) == '{"a": "${Cluster}", "b": "${!HOME}", "c": "$${!x"}'


def test_callback_results():
    from dagsmith.backends.stepfunctions.callback import result_of

    gate = ["dagsmith", "step", "s3://b/ir.json", "gate", "--skip-exit-code", "99"]
    assert result_of(gate, 99, {"status": "skip"}, False) == (True, {"status": "skip"})
    assert result_of(gate, 0, {"status": "succeeded"}, False) == (True, {"status": "succeeded"})
    ok, failure = result_of(["dagsmith", "step", "ir", "impossible"], 1, {"status": "failed", "error": "expectations failed"}, False)
    assert not ok and failure["error"] == "dagsmith.StepFailed" and "impossible" in failure["cause"] and "expectations failed" in failure["cause"]
    assert result_of(["dagsmith", "admit", "ir"], 75, {"action": "hold", "wait_seconds": 12.2}, False) == (True, {"action": "hold", "wait_seconds": 13})
    assert result_of(["dagsmith", "ranges", "ir", "train"], 0, [{"start": 0, "stop": 2}], False) == (True, {"ranges": [{"start": 0, "stop": 2}]})


def test_diff_shows_generated_files(tmp_path, in_repo):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    text = (REPO / "examples" / "minimal" / "pipeline.yaml").read_text(encoding="utf-8")
    shutil.copytree(REPO / "examples" / "minimal" / "data", tmp_path / "data", dirs_exist_ok=True) if (REPO / "examples/minimal/data").exists() else None
    old.write_text(text, encoding="utf-8")
    new.write_text(text.replace("metrics: [accuracy, roc_auc]", "metrics: [accuracy]"), encoding="utf-8")
    got = subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "diff", str(old), str(new), "--target", "stepfunctions"],
                         capture_output=True, text=True)
    assert got.returncode == 1, got.stderr
    assert ".template.yaml" in got.stdout or ".asl.json" in got.stdout or ".ir.json" in got.stdout, got.stdout


def test_size_and_history_bound_checked_at_compile(in_repo, monkeypatch):
    from dagsmith.backends.stepfunctions import asl
    from dagsmith.backends.problems import BackendProblems

    monkeypatch.setattr(asl, "MAX_DEFINITION_BYTES", 1000)
    with pytest.raises(BackendProblems, match="over Step Functions' 1 MB"):
        emit("minimal")
    monkeypatch.undo()
    # churn's 6-trial sweep as an inline Map: its iterations count in the parent's history
    ir = compile_path("examples/churn/pipeline.yaml")
    from dagsmith.backends import get

    backend = get("stepfunctions")
    plan = backend.plan(ir, ir.backends.get("stepfunctions", {}))
    inline = asl.history_bound(plan, backend.settings(plan, ir.backends.get("stepfunctions", {})))
    distributed = asl.history_bound(plan, backend.settings(plan, {**ir.backends.get("stepfunctions", {}), "inline_map_limit": 1}))
    assert distributed < inline
    monkeypatch.setattr(asl, "HISTORY_LIMIT", inline - 1)
    with pytest.raises(BackendProblems, match="history events"):
        emit("churn")
    emit("churn", inline_map_limit=1)  # as a Distributed Map, the children keep their own histories
