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



def _atomic_conditional_puts() -> None:
    """moto checks a PUT's If-None-Match / If-Match, then stores the object, with nothing between
    the two for the concurrent requests of its threaded server: two racing conditional PUTs can
    both succeed. S3 lets exactly one win (the other gets 412 PreconditionFailed, or 409
    ConditionalRequestConflict: https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html),
    so the stand-in serializes PutObject, check and store together, as S3 does per key."""
    import functools
    import threading

    from moto.s3.responses import S3Response

    if getattr(S3Response.put_object, "_dagsmith_atomic", False):
        return
    lock, put = threading.Lock(), S3Response.put_object

    @functools.wraps(put)
    def put_object(self, *args, **kwargs):
        with lock:
            return put(self, *args, **kwargs)

    put_object._dagsmith_atomic = True
    S3Response.put_object = put_object


@pytest.fixture(scope="session")
def s3_server():
    """S3 for tests: moto's server on 127.0.0.1 (a mock, the only local stand-in for an AWS
    endpoint). Worker processes reach it too, through AWS_ENDPOINT_URL (see `aws_s3`)."""
    from moto.server import ThreadedMotoServer

    _atomic_conditional_puts()
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


@pytest.fixture(scope="session")
def example_copy(tmp_path_factory):
    """example_copy(NAME) -> a copy of examples/NAME in a temporary folder, with its data made
    there by its make_data.py (once per session): tests never write into the source tree."""
    import shutil
    import subprocess
    import sys

    made: dict = {}

    def copy(name: str):
        if name not in made:
            folder = tmp_path_factory.mktemp("examples") / name
            shutil.copytree(REPO / "examples" / name, folder, ignore=shutil.ignore_patterns("data", "__pycache__"))
            subprocess.run([sys.executable, str(folder / "make_data.py")], check=True, capture_output=True)
            made[name] = folder
        return made[name]

    return copy


def _source_tree_state() -> dict:
    """What tests could write into by mistake: the examples (their data included) and the top of
    the checkout (a stray .dagsmith/ or build/)."""
    state = {p.name: None for p in REPO.iterdir()}
    for path in (REPO / "examples").rglob("*"):
        if "__pycache__" not in path.parts:
            state[str(path.relative_to(REPO))] = path.stat().st_mtime_ns if path.is_file() else None
    return state


@pytest.fixture(scope="session", autouse=True)
def source_tree_untouched():
    """Tests write only to temporary folders: the session fails if one wrote into the checkout."""
    before = _source_tree_state()
    yield
    after = _source_tree_state()
    changed = sorted(k for k in set(before) | set(after) if before.get(k, "absent") != after.get(k, "absent"))
    changed = [k for k in changed if k not in (".pytest_cache", ".hypothesis")]
    assert not changed, f"tests wrote into the source tree: {changed[:10]}"


def pytest_configure(config):
    os.environ.setdefault("PYTHONHASHSEED", "0")
