"""Shipping the user's code on Argo: `dagsmith deploy` puts the spec folder's modules in the store
(the code package), and the pods, whose working folder does NOT hold the spec folder, import a
feature `transform:` and a custom `python:` step from it (DAGSMITH_CODE). Without DAGSMITH_CODE the
same workflow fails: the pods have no other way to the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend_argo.interpreter import Interpreter
from backend_argo.test_argo_deploy import ArgoStandIn
from dagsmith.cli import main

BUCKET = "code-shipping"
STORE = f"s3://{BUCKET}/dagsmith"


def shipped_spec(folder: Path, data: Path, backends: dict) -> Path:
    """A spec folder with user modules: a feature transform (a package) and a custom step."""
    folder.mkdir(parents=True)
    (folder / "shipped_feats").mkdir()
    (folder / "shipped_feats" / "__init__.py").write_text("")
    (folder / "shipped_feats" / "build.py").write_text(
        "from shipped_steps import THRESHOLD\n\n\ndef big(frames):\n    raw = frames['raw']\n    return raw[raw.x > THRESHOLD]\n")
    (folder / "shipped_steps.py").write_text("THRESHOLD = 1\n\n\ndef hello():\n    return 'hello from the code package'\n")
    spec = {
        "dagsmith": 1, "pipeline": {"name": "shipped-code"},
        "defaults": {"image": "dagsmith:test", "retries": 0},
        "sources": {"raw": {"type": "csv", "uri": str(data)}},  # an absolute path: the pods' folder has no data
        "features": {"big_x": {"inputs": ["raw"], "transform": "shipped_feats.build:big"}},
        "steps": {"hello": {"after": ["big_x"], "run": {"python": "shipped_steps:hello"}}},
        "backends": backends,
    }
    (folder / "pipeline.yaml").write_text(json.dumps(spec, indent=1))
    return folder / "pipeline.yaml"


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data" / "raw.csv"
    path.parent.mkdir()
    path.write_text("x,y\n0,a\n1,b\n2,c\n3,d\n")
    return path


@pytest.mark.slow  # ~7 s: a deploy and two workflows of three pods
def test_pods_outside_the_spec_folder_run_the_code_deploy_put_in_the_store(tmp_path, data, aws_s3, argo_pod_env, capsys):
    aws_s3.create_bucket(Bucket=BUCKET)
    spec = shipped_spec(tmp_path / "project", data, {"argo": {"store": STORE, "namespace": "ml"}})
    server = ArgoStandIn()
    try:
        assert main(["deploy", str(spec), "--target", "argo", "--server", server.url]) in (0, None)
        err = capsys.readouterr().err
        template = server.resources["/api/v1/workflow-templates/ml/shipped-code"]
        template["metadata"].pop("resourceVersion")  # the server's, not the template's
    finally:
        server.close()
    keys = [o["Key"] for o in aws_s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    (code_key,) = [k for k in keys if k.startswith("dagsmith/code/")]
    assert f"uploaded the code package to {STORE}/{code_key[len('dagsmith/'):]}" in err
    package = json.loads(aws_s3.get_object(Bucket=BUCKET, Key=code_key)["Body"].read())
    assert sorted(package["files"]) == ["shipped_feats/__init__.py", "shipped_feats/build.py", "shipped_steps.py"]

    pod_folder = tmp_path / "pod-workdir"  # the image's working folder: no spec folder, no modules
    pod_folder.mkdir()
    interpreter = Interpreter(base_env=argo_pod_env, cwd=pod_folder, scratch=tmp_path, max_pods=2)
    run = interpreter.submit(template)
    assert run.phase == "Succeeded", run.summary()
    (hello,) = run.of_task("hello")
    assert json.loads(hello.stdout.strip().splitlines()[-1])["returned"] == "hello from the code package"
    (feature,) = run.of_task("big-x")
    assert json.loads(feature.stdout.strip().splitlines()[-1])["rows"] == 2  # x > THRESHOLD: the shipped transform ran
    assert all(node.env.get("DAGSMITH_CODE", "").endswith(code_key[len("dagsmith/"):]) for node in (hello, feature))

    # the same workflow without DAGSMITH_CODE: the pods cannot import the user's code
    for t in template["spec"]["templates"]:
        env = (t.get("container") or {}).get("env") or []
        env[:] = [e for e in env if e["name"] != "DAGSMITH_CODE"]
    run = Interpreter(base_env=argo_pod_env, cwd=pod_folder, scratch=tmp_path, max_pods=2).submit(template)
    assert run.phase == "Failed"
    (feature,) = run.of_task("big-x")
    assert feature.phase == "Failed" and "cannot import 'shipped_feats.build'" in feature.stderr
