"""Shared fixtures of the Argo backend's tests: compiling a spec to Argo documents (checked
strictly against the schemas) and the base environment of the interpreter's pods on moto's S3."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def compile_argo():
    """compile_argo(SPEC, OUT) -> {kind-suffix: document} ("workflow-template.yaml", ...) of
    `dagsmith compile SPEC --target argo -o OUT`, each document strictly valid; the IR file is
    OUT/<name>.ir.json."""
    from backend_argo import schemas
    from dagsmith.cli import main

    def compile_(spec: Path, out: Path) -> dict:
        assert main(["compile", str(spec), "--target", "argo", "-o", str(out)]) in (0, None)
        documents = {p.name.split(".", 1)[1]: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(Path(out).glob("*.yaml"))}
        for document in documents.values():
            schemas.check(document)
        return documents

    return compile_


@pytest.fixture
def argo_pod_env(aws_s3) -> dict:
    """What every pod of the interpreter starts from (interpreter.py's docstring): PATH with this
    venv's bin (the image's `dagsmith`) and moto's endpoint and credentials (the node's IAM role)."""
    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if os.environ.get("PYTHONPATH"):  # the dagsmith under test is the image's (a worktree's src, not the venv's install)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env
