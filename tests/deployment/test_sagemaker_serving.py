"""SageMaker's serving contract, run for real: `python -m dagsmith.serving.sagemaker serve` (what the
SageMaker Model's container runs) in its own process on 127.0.0.1, on the version's bundle as
SageMaker unpacks it into /opt/ml/model; its POST /invocations answers exactly what `dagsmith
serve` (another real process, on the local registry) answers on POST /predict."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request

import pytest

from deploy_testing import Pipeline, rows, spec

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, env=None):
    return subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def wait_ready(url: str, process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read())
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def post(url: str, body: bytes):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_ping_and_invocations_equal_dagsmith_serve(tmp_path):
    from dagsmith.runtime import deploy_bundle

    p = Pipeline(tmp_path, spec("  model_name: churn\n  target: local"), {"rows": rows()})
    assert p.run_through("deploy")["deploy"]["version"] == 1
    deploy_bundle.publish(p.store, "churn", 1)
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(p.store.root / deploy_bundle.bundle_key("churn", 1) / deploy_bundle.BUNDLE) as tar:
        tar.extractall(model_dir, filter="data")

    sm_port, serve_port = free_port(), free_port()
    sagemaker = start(["-m", "dagsmith.serving.sagemaker", "serve", "--model-dir", str(model_dir),
                       "--host", "127.0.0.1", "--port", str(sm_port)], env={"DAGSMITH_MODEL": "churn"})
    local = start(["-m", "dagsmith.cli", "serve", "churn", "--workdir", str(p.store.root), "--port", str(serve_port)])
    try:
        wait_ready(f"http://127.0.0.1:{sm_port}/ping", sagemaker)
        wait_ready(f"http://127.0.0.1:{serve_port}/health", local)
        with urllib.request.urlopen(f"http://127.0.0.1:{sm_port}/ping", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read())["production"] == 1
        body = json.dumps({"rows": rows(20, seed=3).drop(columns=["y"]).to_dict("records")}).encode()
        code, invoked = post(f"http://127.0.0.1:{sm_port}/invocations", body)
        assert code == 200 and len(invoked["predictions"]) == 20 and invoked["version"] == 1
        assert post(f"http://127.0.0.1:{serve_port}/predict", body) == (200, invoked)
        # a bad request is the same error as on /predict
        bad = urllib.request.Request(f"http://127.0.0.1:{sm_port}/invocations", data=b"{", method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad, timeout=5)
        assert caught.value.code == 400
    finally:
        for process in (sagemaker, local):
            process.terminate()
            process.wait(timeout=30)
