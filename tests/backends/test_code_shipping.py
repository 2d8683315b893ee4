"""Shipping the user's code at compile time (backends/code.py): which targets package the spec
folder, every step's container gets DAGSMITH_CODE, `code: image` turns it off, and a reference to
user code the pods will not get is a warning at its place in the spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dagsmith.cli import main

SPEC = {
    "dagsmith": 1, "pipeline": {"name": "shipped"},
    "defaults": {"image": "dagsmith:test"},
    "sources": {"raw": {"type": "csv", "uri": "s3://data/raw.csv"}},
    "features": {"feats": {"inputs": ["raw"], "transform": "ship_feats:build"}},
    "training": {"inputs": ["feats"], "target": "y", "model": {"estimator": "sklearn.linear_model.LogisticRegression"}},
    "steps": {"hello": {"after": ["train"], "run": {"python": "ship_steps:hello"}}},
    "backends": {"argo": {"store": "s3://b/p"}, "stepfunctions": {"store": "s3://b/p"},
                 "airflow": {"operator": "kubernetes", "store": "s3://b/p"}},
}


def project(tmp_path: Path, spec: dict | None = None, modules=("ship_feats.py", "ship_steps.py")) -> Path:
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    for name in modules:
        (folder / name).write_text("def build(frames):\n    return frames['raw']\n\n\ndef hello():\n    return 1\n")
    (folder / "pipeline.yaml").write_text(json.dumps(spec or SPEC, indent=1))
    return folder / "pipeline.yaml"


def compile_(capsys, spec: Path, target: str, out: Path) -> tuple[dict, str]:
    assert main(["compile", str(spec), "--target", target, "-o", str(out)]) in (0, None)
    err = capsys.readouterr().err
    return {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}, err


@pytest.mark.parametrize("target", ["argo", "stepfunctions", "airflow"])
def test_every_target_that_runs_pods_writes_the_package_and_gives_each_step_its_uri(tmp_path, capsys, target):
    files, err = compile_(capsys, project(tmp_path), target, tmp_path / "out")
    (key,) = [name for name in files if name.startswith("code/")]
    assert json.loads(files[key])["files"] == {name: (tmp_path / "project" / name).read_text() for name in ("ship_feats.py", "ship_steps.py")}
    assert "warning" not in err.replace("is a path on this machine", "")
    text = "".join(text for name, text in files.items() if not name.startswith("code/") and not name.endswith(".ir.json"))
    store = {"argo": "{{workflow.parameters.dagsmith-store}}", "stepfunctions": "s3://${ArtifactBucket}/${StorePrefix}", "airflow": "s3://b/p"}
    assert f"{store[target]}/{key}" in text
    (ir,) = [json.loads(text) for name, text in files.items() if name.endswith(".ir.json")]
    assert text.count("DAGSMITH_CODE") == len(ir["steps"]) == 4  # raw, feats, train, hello: every step's container


def test_the_package_is_the_same_from_any_output_folder_and_leaves_outputs_out(tmp_path, capsys):
    spec = project(tmp_path)
    inside, _ = compile_(capsys, spec, "argo", spec.parent / "generated")
    (spec.parent / "generated" / "extra.py").write_text("X = 1\n")  # a file in the output folder is not the user's code
    again, _ = compile_(capsys, spec, "argo", spec.parent / "generated")
    (spec.parent / "generated" / "extra.py").unlink()
    elsewhere, _ = compile_(capsys, spec, "airflow", spec.parent / "dags")  # a generated DAG file in the spec folder
    later, _ = compile_(capsys, spec, "argo", tmp_path / "out")
    keys = {name for files in (inside, again, later) for name in files if name.startswith("code/")}
    assert len(keys) == 1 and [n for n in elsewhere if n.startswith("code/")] == list(keys)


def test_code_image_ships_nothing_and_warns_nothing(tmp_path, capsys):
    spec = dict(SPEC, backends={"argo": {"store": "s3://b/p", "code": "image"}})
    files, err = compile_(capsys, project(tmp_path, spec, modules=()), "argo", tmp_path / "out")
    assert not [n for n in files if n.startswith("code/")] and "DAGSMITH_CODE" not in "".join(files.values())
    assert "warning" not in err


def test_python_mode_airflow_and_a_spec_without_user_modules_ship_nothing(tmp_path, capsys):
    spec = dict(SPEC, backends={"airflow": {"operator": "python"}})
    files, _ = compile_(capsys, project(tmp_path, spec), "airflow", tmp_path / "out")
    assert not [n for n in files if n.startswith("code/")] and "DAGSMITH_CODE" not in "".join(files.values())
    plain = {k: v for k, v in SPEC.items() if k not in ("features", "steps")}
    plain["training"] = dict(SPEC["training"], inputs=["raw"])
    files, _ = compile_(capsys, project(tmp_path, plain), "argo", tmp_path / "out2")  # only sklearn: a library
    assert not [n for n in files if n.startswith("code/")]


def test_user_code_outside_the_spec_folder_is_a_warning_at_its_reference(tmp_path, capsys):
    spec = project(tmp_path, modules=("ship_steps.py",))  # ship_feats is nowhere
    files, err = compile_(capsys, spec, "argo", tmp_path / "out")
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "ship_feats:build" in text)
    assert f"pipeline.yaml:{line}:" in err and "warning: features.feats.transform: 'ship_feats:build': module 'ship_feats' is not in the spec folder" in err
    assert "set backends.argo.code: image" in err
    assert [n for n in files if n.startswith("code/")]  # ship_steps is still shipped


def test_a_bad_code_option_is_an_error_at_it():
    from dagsmith.backends.code import option_problems
    from dagsmith.backends.argo.backend import CAPABILITIES

    (problem,) = option_problems(CAPABILITIES, {"code": "git"})
    assert problem.level == "error" and problem.path == ("backends", "argo", "code")


def test_a_file_that_cannot_be_packaged_stops_the_compile_with_a_clear_error(tmp_path, capsys):
    spec = project(tmp_path)
    (spec.parent / "latin1.py").write_bytes(b"X = '\xe9'\n")
    assert main(["compile", str(spec), "--target", "argo", "-o", str(tmp_path / "out")]) == 2
    assert "latin1.py is not UTF-8" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_stepfunctions_task_definitions_read_the_package_through_fn_sub(tmp_path, capsys):
    files, _ = compile_(capsys, project(tmp_path), "stepfunctions", tmp_path / "out")
    template = yaml.safe_load(files["shipped.template.yaml"])
    (key,) = [n for n in files if n.startswith("code/")]
    values = [e["Value"] for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"
              for c in r["Properties"]["ContainerDefinitions"] for e in c.get("Environment", []) if e["Name"] == "DAGSMITH_CODE"]
    assert values and all(v == {"Fn::Sub": f"s3://${{ArtifactBucket}}/${{StorePrefix}}/{key}"} for v in values)
