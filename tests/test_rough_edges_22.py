"""Rough edges of issue 22 a new user met: numbers that hide their sign or magnitude, validation
lines broken mid-line and without the failing values, one error per step for what a container
backend needs, how to try a generated Airflow DAG, and `$${` in every text."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from rich.console import Console

from dagsmith import display
from dagsmith.cli import main
from dagsmith.report import sections
from dagsmith.runner.progress import summary, threshold_text
from dagsmith_testing import REPO


def rendered(record: dict, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    summary(record, console)
    return console.file.getvalue()


def record_of(**fields) -> dict:
    record = {"run_id": "20261125-101500-a1b2c3", "pipeline": "churn-model", "status": "gated",
              "steps": {"gate": {"state": "succeeded", "attempts": 1}}, "metrics": {}, "gates": [], "validation": {}}
    record.update(fields)
    return record


# --- gate numbers ---------------------------------------------------------------------------

TINY_DELTA = {"metric": "roc_auc", "op": ">=", "observed": 0.91 - 1e-10, "threshold": 0.91, "passed": False,
              "compare_to": "production", "delta": -1e-10, "production_version": 1, "production_value": 0.91}


def test_a_tiny_negative_delta_keeps_its_sign_and_magnitude_on_the_console():
    text = threshold_text(TINY_DELTA)
    assert "delta -1e-10" in text
    assert "- 0.0000" not in text and "-0.0000" not in text
    summary_text = rendered(record_of(gates=[TINY_DELTA]), width=200)
    assert "delta -1e-10" in summary_text
    # the check failed: observed and threshold never print as the same number
    row = next(line for line in summary_text.splitlines() if "roc_auc" in line)
    assert "0.91 " in row and "0.9099999999" in row


def test_the_html_report_formats_the_gate_with_the_same_helper():
    data = SimpleNamespace(decision={"gates": [TINY_DELTA]}, record={}, gates_passed=lambda: False)
    html = sections.gates_table(data)
    assert "delta -1e-10" in html and "0.0000" not in html
    assert "0.9099999999" in html


def test_numbers_are_honest_about_sign_and_magnitude():
    assert display.number(-1e-10) == "-1e-10"
    assert display.number(-1e-10, fixed=True) == "-1e-10"
    assert display.number(-0.0, fixed=True) == "0.0000"
    assert display.number(0.9, fixed=True) == "0.9000" and display.number(0.9) == "0.9"
    assert display.signed(0.01) == "+0.01" and display.signed(-0.01) == "-0.01" and display.signed(0.0) == "0"
    assert display.numbers(0.93, 0.9, fixed=True) == ["0.9300", "0.9000"]
    assert display.numbers(1, 0.99999999, fixed=True) == ["1", "0.99999999"]  # not 1 and 1.0000


# --- the validation summary -----------------------------------------------------------------

FAILING = {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "country", "value_set": ["fr", "de"]},
           "success": False, "unexpected_count": 12, "element_count": 40, "observed_value": None,
           "partial_unexpected_list": ["uk", "\x1b]0;owned\x07\x1b[2J", "x" * 500, None, "es\r\nFAKE: ok", "it", "nl"]}


def validation_record() -> dict:
    name = "a_rather_long_validation_name_that_makes_the_line_longer_than_eighty_columns"
    return record_of(validation={name: {"name": name, "table": "customers_with_a_long_table_name", "on_failure": "fail",
                                        "success": False, "rows": 40, "expectations": [FAILING]}})


def test_a_validation_failure_is_one_line_with_a_bounded_safe_sample_of_the_failing_values():
    text = rendered(validation_record(), width=80)
    lines = [line for line in text.splitlines() if "validation error" in line]
    assert len(lines) == 1, text  # one line, not broken at 80 columns
    line = lines[0]
    assert "12 unexpected rows of 40" in line and "failing values: 'uk'" in line
    assert "and 2 more" in line  # 7 values: 5 shown
    assert "x" * 41 not in line  # each value cut short
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text  # no control character reaches the console
    assert "\\x1b]0;owned" in line and "FAKE: ok" in line and "\\r\\n" in line
    assert not any(line.startswith("FAKE") for line in text.splitlines())


def test_markup_in_a_failing_value_is_printed_not_interpreted():
    record = validation_record()
    expectation = record["validation"][next(iter(record["validation"]))]["expectations"][0]
    expectation["partial_unexpected_list"] = ["[bold red]x[/]", "[/]"]
    text = rendered(record, width=200)
    assert "'[bold red]x[/]', '[/]'" in text


# --- what the container backends need, said once --------------------------------------------


def readme_yaml_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    spec_part = text.split("## The spec", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", spec_part, flags=re.S)


def compile_all(capsys, spec: Path, out: Path):
    code = main(["compile", str(spec), "--target", "all", "-o", str(out)])
    return code, capsys.readouterr().err


def test_the_readme_spec_gets_one_error_for_what_the_container_backends_need(capsys, tmp_path):
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(readme_yaml_blocks()[0])
    code, err = compile_all(capsys, spec, tmp_path / "build")
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith(f"{spec}:1:1: error: backends.argo: ")  # no backends key: the top of the file
    assert "set defaults.image" in errors[0] and "backends.argo.store (s3://bucket/prefix" in errors[0]
    assert not (tmp_path / "build").exists()
    # with a backends section, at its key; an Airflow kubernetes mode says the same once
    spec.write_text(readme_yaml_blocks()[0] + "backends:\n  airflow: {operator: kubernetes}\n")
    line = len(readme_yaml_blocks()[0].splitlines()) + 1
    code, err = compile_all(capsys, spec, tmp_path / "build")
    errors = [e for e in err.splitlines() if ": error: " in e]
    assert code == 2 and len(errors) == 2, err
    assert errors[0].startswith(f"{spec}:{line}:1: error: backends.argo: ")  # no argo key: at backends
    assert errors[1].startswith(f"{spec}:{line + 1}:12: error: backends.airflow: ")  # at airflow's options
    assert any("backends.airflow: operator mode kubernetes runs each step in a container" in e for e in errors)


def test_the_readme_cluster_additions_make_the_spec_compile_for_every_target(capsys, tmp_path):
    spec_text, additions = readme_yaml_blocks()[:2]
    (tmp_path / "readme.yaml").write_text(spec_text)
    spec = tmp_path / "cluster.yaml"  # the additions on top of the spec, as an include merges them
    spec.write_text("include: readme.yaml\n" + additions)
    code, err = compile_all(capsys, spec, tmp_path / "build")
    assert code == 0 and ": error: " not in err, err
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == ["airflow", "argo", "ir", "stepfunctions"]


def test_a_step_without_an_image_among_steps_with_one_is_an_error_at_that_step(capsys, tmp_path):
    spec = tmp_path / "pipeline.yaml"
    spec.write_text("dagsmith: 1\npipeline: {name: p}\n"
                    "sources:\n  a: {type: csv, uri: 's3://b/a.csv', image: 'img:1'}\n  b: {type: csv, uri: 's3://b/b.csv'}\n"
                    "backends:\n  argo: {namespace: ml}\n")
    code = main(["compile", str(spec), "--target", "argo", "-o", str(tmp_path / "o")])
    errors = [e for e in capsys.readouterr().err.splitlines() if ": error: " in e]
    assert code == 2
    assert any(e.startswith(f"{spec}:5:") and "step 'b' has none" in e for e in errors), errors
    # the missing store: at the key of its nearest parent (backends.argo, line 7), never at a neighbour's value
    assert any(e.startswith(f"{spec}:7:3: error: backends.argo.store: ") for e in errors), errors


# --- trying a generated Airflow DAG (docs/backends/airflow.md) --------------------------------


def doc_recipe() -> str:
    text = (REPO / "docs/backends/airflow.md").read_text(encoding="utf-8")
    section = text.split("## Trying a DAG on this machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]


@pytest.mark.slow
def test_the_docs_recipe_runs_a_dag_compiled_outside_any_dags_folder(tmp_path):
    """The commands of docs/backends/airflow.md as written, on a one-task pipeline (a fresh
    Airflow home is migrated, as the recipe says)."""
    pytest.importorskip("airflow")
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    (tmp_path / "pipeline.yaml").write_text("dagsmith: 1\npipeline: {name: tryme}\nsources: {a: {type: csv, uri: a.csv}}\n")
    script = "set -e\n" + doc_recipe().replace("DAG_ID", "tryme")
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "state=success" in result.stdout + result.stderr
    runs = list((tmp_path / ".airflow" / "dagsmith" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "steps" / "a").is_dir()


# --- `$${` is a literal `${` in every text ------------------------------------------------------

ESCAPES_SPEC = """\
dagsmith: 1
pipeline: {name: esc, description: "reads $${HOME}/data", owner: "o $${USER}", tags: ["t$${x}"]}
params:
  label: {type: string, default: "$${LockTable}", enum: ["$${LockTable}", b], description: "shows $${HOME}"}
defaults: {image: "ghcr.io/acme/x:1", env: {E1: "$${HOME}"}}
sources:
  a: {type: csv, uri: "s3://bkt/a-$${x}.csv", description: "$${Subnets}"}
features:
  f: {inputs: [a], sql: "SELECT *, '$${ArtifactBucket}' AS z FROM a", description: "$${SecurityGroups}"}
validation:
  - name: v
    on: f
    expectations:
      - expect_column_values_to_not_match_regex: {column: z, regex: "^[$]$${ArtifactBucket}"}
training:
  inputs: [f]
  target: y
  model: {estimator: sklearn.linear_model.LogisticRegression, params: {solver: "lbfgs$${Cluster}"}}
steps:
  s: {after: [train], run: {command: [bash, -c, "echo $${HOME} ${run.id}"]}, description: "$${JobQueue}"}
backends:
  argo: {store: "s3://bkt/p"}
  stepfunctions: {store: "s3://bkt/p"}
"""


def compile_ir(tmp_path, text: str, *params: str):
    from dagsmith.compiler import compile_spec
    from dagsmith.spec import load_spec, parse_param_overrides

    spec = tmp_path / "pipeline.yaml"
    spec.write_text(text)
    return compile_spec(load_spec(spec, params=parse_param_overrides(list(params))))


def test_an_escaped_reference_is_a_literal_in_texts_nothing_fills_in(tmp_path):
    ir = compile_ir(tmp_path, ESCAPES_SPEC)
    assert ir.pipeline["description"] == "reads ${HOME}/data"
    assert ir.pipeline["owner"] == "o ${USER}" and ir.pipeline["tags"] == ["t${x}"]
    assert ir.params["label"] == {"type": "string", "default": "${LockTable}", "required": False,
                                  "description": "shows ${HOME}", "enum": ["${LockTable}", "b"]}
    steps = {step.id: step for step in ir.steps}
    assert steps["v"].config["expectations"][0]["kwargs"]["regex"] == "^[$]${ArtifactBucket}"
    train = next(step for step in ir.steps if step.kind == "train")
    assert "lbfgs${Cluster}" in json.dumps(train.config)
    # the texts a step fills in keep `$${`: the runtime unescapes them as it fills them in
    assert steps["a"].config["uri"] == "s3://bkt/a-$${x}.csv"
    assert steps["f"].config["sql"] == "SELECT *, '$${ArtifactBucket}' AS z FROM a"
    assert steps["s"].config["command"] == ["bash", "-c", "echo $${HOME} ${run.id}"]
    assert steps["s"].env == {"E1": "$${HOME}"}


def test_every_backend_writes_the_literal_and_no_spec_text_becomes_a_reference(capsys, tmp_path):
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(ESCAPES_SPEC)
    code, err = compile_all(capsys, spec, tmp_path / "build")
    assert code == 0, err
    workflow = (tmp_path / "build/argo/esc.workflow-template.yaml").read_text()
    assert "description: reads ${HOME}/data" in workflow and "shows ${HOME}" in workflow and "$${" not in workflow
    dag = (tmp_path / "build/airflow/esc.py").read_text()
    assert "'reads ${HOME}/data'" in dag or '"reads ${HOME}/data"' in dag
    assert "$${HOME}/data" not in dag and "$${LockTable}" not in dag
    # CloudFormation's Fn::Sub: the definition refers to what dagsmith put there, nothing a spec wrote
    template = yaml.safe_load((tmp_path / "build/stepfunctions/esc.template.yaml").read_text())
    definition = next(r["Properties"]["DefinitionString"]["Fn::Sub"] for r in template["Resources"].values()
                      if r["Type"] == "AWS::StepFunctions::StateMachine")
    clean = ESCAPES_SPEC.replace("$${", "x{")
    spec.write_text(clean)
    code, err = compile_all(capsys, spec, tmp_path / "clean")
    assert code == 0, err
    clean_template = yaml.safe_load((tmp_path / "clean/stepfunctions/esc.template.yaml").read_text())
    clean_definition = next(r["Properties"]["DefinitionString"]["Fn::Sub"] for r in clean_template["Resources"].values()
                            if r["Type"] == "AWS::StepFunctions::StateMachine")
    live = re.compile(r"\$\{(?!!)[^}]*\}")
    assert sorted(live.findall(definition)) == sorted(live.findall(clean_definition))


def test_a_param_value_given_on_the_command_line_is_data(tmp_path):
    assert compile_ir(tmp_path, ESCAPES_SPEC.replace(', enum: ["$${LockTable}", b]', ""), "label=${HOME}").params["label"]["default"] == "${HOME}"
    assert compile_ir(tmp_path, ESCAPES_SPEC, "label=${LockTable}").params["label"]["default"] == "${LockTable}"  # one of the enum, as built
    assert compile_ir(tmp_path, ESCAPES_SPEC.replace(', enum: ["$${LockTable}", b]', ""), "label=$${HOME}").params["label"]["default"] == "$${HOME}"


def test_a_literal_dollar_brace_written_as_such_is_an_error_that_says_how_to_escape_it(capsys, tmp_path):
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(ESCAPES_SPEC.replace('description: "reads $${HOME}/data"', 'description: "reads ${HOME}/data"'))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:2:" in err and "unknown reference '${HOME}'" in err and "write '$${HOME}'" in err
