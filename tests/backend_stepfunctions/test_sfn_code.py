"""Shipping the user's code on Step Functions: `dagsmith deploy` puts the spec folder's modules in
the store beside the IR, and the tasks (run by the moto hook in a working folder that does NOT
hold the spec folder) import a feature `transform:` and a custom `python:` step from it
(DAGSMITH_CODE in the task definitions). Deployed with `code: image` (no DAGSMITH_CODE) into an
image without the code, the same pipeline fails."""

from __future__ import annotations

import json

import pytest

from backend_argo.test_argo_code import shipped_spec


@pytest.mark.slow  # a deploy into moto and two executions of three tasks
def test_tasks_outside_the_spec_folder_run_the_code_deploy_put_in_the_store(moto_worker, tmp_path):
    from conformance.backend_stepfunctions import BUCKET, compile_spec

    data = tmp_path / "data" / "raw.csv"
    data.parent.mkdir()
    data.write_text("x,y\n0,a\n1,b\n2,c\n3,d\n")
    spec = shipped_spec(tmp_path / "project", data, {"stepfunctions": {"store": f"s3://{BUCKET}/shipped"}})
    ir_file = compile_spec(spec, tmp_path / "out", None)
    assert len(list((tmp_path / "out" / "code").glob("*.json"))) == 1  # compile writes the package beside the files
    workdir = tmp_path / "task-workdir"  # the image's working folder: no spec folder, no modules
    workdir.mkdir()

    def run(stack: str, options: dict) -> tuple[dict, dict]:
        deployed = moto_worker.call("deploy", ir_file=str(ir_file), stack=stack, prefix=stack, root=str(workdir),
                                    options={"state_machine_name": stack, **options}, spec_dir=str(spec.parent))
        got = moto_worker.call("run", machine=deployed["machine"], execution_input={"run_date": "2026-12-07"}, name=f"{stack}-1")
        summary = got["output"] or got["summary"]
        ir = json.loads(ir_file.read_text())
        view = moto_worker.call("view", store=f"s3://{BUCKET}/{stack}", run_id=summary["run_id"], ir=ir)
        return got, view

    got, view = run("shipped", {})
    assert got["status"] == "SUCCEEDED", got["failure"]
    assert got["output"]["steps"] == {"raw": "succeeded", "big_x": "succeeded", "hello": "succeeded"}
    assert view["rows"]["big_x"] == 2  # x > THRESHOLD: the shipped transform ran

    got, _ = run("baked", {"code": "image"})  # no DAGSMITH_CODE: the image would have to hold the code
    assert got["status"] == "FAILED" and "step 'big_x' failed" in got["failure"]["cause"]
    assert "cannot import 'shipped_feats.build'" in (moto_worker.log_dir / "tasks.log").read_text()
