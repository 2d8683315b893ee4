"""Shared fixtures. Golden files are rewritten only with `pytest --update-golden`."""

from __future__ import annotations

import os

import pytest

from dagsmith_testing import REPO


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ from the current output")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")


@pytest.fixture
def in_repo(monkeypatch):
    """Run from the repository root, as the README's commands do (spec paths stay relative)."""
    monkeypatch.chdir(REPO)
    return REPO


@pytest.fixture
def write_spec(tmp_path, monkeypatch):
    """Write YAML text to tmp_path/NAME and return its relative path (cwd is tmp_path)."""
    monkeypatch.chdir(tmp_path)

    def write(text: str, name: str = "pipeline.yaml") -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return name

    return write



@pytest.fixture(scope="session")
def s3_server():
    """S3 for tests: moto's server on 127.0.0.1 (a mock, the only local stand-in for an AWS
    endpoint). Worker processes reach it too, through AWS_ENDPOINT_URL (see `aws_s3`)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_s3(s3_server, monkeypatch):
    """A boto3 S3 client on the moto server, with the environment set for child processes."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    return boto3.client("s3")


def pytest_configure(config):
    os.environ.setdefault("PYTHONHASHSEED", "0")
