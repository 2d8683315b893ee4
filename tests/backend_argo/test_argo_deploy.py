"""`dagsmith deploy --target argo` against a local HTTP server standing in for the Argo Server's
REST API (no cluster runs here, so no real Argo Server either: the stand-in keeps resources in
memory, answers as the Argo Server does — 404 for a missing resource, the object with a
resourceVersion — and can be told to fail one request). S3 is moto's server."""

from __future__ import annotations

import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dagsmith.cli import main

REPO = Path(__file__).resolve().parents[2]


class ArgoStandIn:
    def __init__(self):
        self.resources: dict[str, dict] = {}  # path of the named resource -> object
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[dict | None] = []
        self.auth: list[str | None] = []
        self.fail: dict[tuple[str, str], tuple[int, str]] = {}  # (method, path) -> (status, message)
        self.version = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                stand_in.requests.append((self.command, self.path))
                stand_in.bodies.append(body)
                stand_in.auth.append(self.headers.get("Authorization"))
                if (self.command, self.path) in stand_in.fail:
                    status, message = stand_in.fail[(self.command, self.path)]
                    return self._answer(status, {"code": 13, "message": message})
                return self._answer(*stand_in.respond(self.command, self.path, body))

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def respond(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        if path.endswith("/lint"):
            return 200, next(v for k, v in body.items() if k != "namespace")
        if method == "GET":
            return (200, self.resources[path]) if path in self.resources else (404, {"code": 5, "message": "not found"})
        if method == "DELETE":
            self.resources.pop(path, None)
            return 200, {}
        resource = json.loads(json.dumps(next(v for k, v in body.items() if k not in ("namespace", "name"))))
        named = path if method == "PUT" else f"{path}/{resource['metadata']['name']}"
        if method == "POST" and named in self.resources:
            return 409, {"code": 6, "message": "already exists"}
        self.version += 1
        resource["metadata"]["resourceVersion"] = str(self.version)
        self.resources[named] = resource
        return 200, resource

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def argo_server():
    stand_in = ArgoStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture
def churn(tmp_path, aws_s3):
    aws_s3.create_bucket(Bucket="acme-ml")
    for obj in aws_s3.list_objects_v2(Bucket="acme-ml").get("Contents", []):  # the S3 server lives for the session
        aws_s3.delete_object(Bucket="acme-ml", Key=obj["Key"])
    folder = tmp_path / "churn"
    shutil.copytree(REPO / "examples" / "churn", folder, ignore=shutil.ignore_patterns("data", "build", ".dagsmith"))
    return folder / "pipeline.yaml"


def deploy(capsys, spec, *args):
    code = main(["deploy", str(spec), "--target", "argo", *args])
    out, err = capsys.readouterr()
    return code, err


PATHS = [
    "/api/v1/workflow-templates/ml/churn-model",
    "/api/v1/cron-workflows/ml/churn-model",
    "/api/v1/event-sources/ml/churn-model",
    "/api/v1/sensors/ml/churn-model",
]


def test_lints_then_creates_every_resource_with_the_token_from_the_named_variable(argo_server, churn, capsys, monkeypatch, aws_s3):
    monkeypatch.setenv("MY_ARGO_TOKEN", "s3cr3t-token")
    code, err = deploy(capsys, churn, "--server", argo_server.url, "--token-env", "MY_ARGO_TOKEN")
    assert code == 0, err
    assert argo_server.requests == [
        ("POST", "/api/v1/workflow-templates/ml/lint"),
        ("POST", "/api/v1/cron-workflows/ml/lint"),
        *[("GET", path) for path in PATHS],
        ("POST", "/api/v1/workflow-templates/ml"),
        ("POST", "/api/v1/cron-workflows/ml"),
        ("POST", "/api/v1/event-sources/ml"),
        ("POST", "/api/v1/sensors/ml"),
    ]
    assert set(argo_server.auth) == {"Bearer s3cr3t-token"}
    assert "s3cr3t-token" not in err
    assert sorted(argo_server.resources) == sorted(PATHS)
    assert argo_server.bodies[-1]["sensor"]["kind"] == "Sensor" and argo_server.bodies[-4]["template"]["kind"] == "WorkflowTemplate"
    ir_key = next(o["Key"] for o in aws_s3.list_objects_v2(Bucket="acme-ml")["Contents"])
    assert ir_key.startswith("dagsmith/ir/churn-model-") and ir_key.endswith(".ir.json")
    assert "created WorkflowTemplate ml/churn-model" in err and "created Sensor ml/churn-model" in err

    # a second deploy updates in place, with the server's resourceVersion
    argo_server.requests.clear()
    code, err = deploy(capsys, churn, "--server", argo_server.url)
    assert code == 0, err
    puts = [(m, p) for m, p in argo_server.requests if m == "PUT"]
    assert puts == [("PUT", path) for path in PATHS]
    assert "updated CronWorkflow ml/churn-model" in err


def test_a_failure_midway_puts_back_what_was_written(argo_server, churn, capsys):
    assert deploy(capsys, churn, "--server", argo_server.url)[0] == 0
    before = json.loads(json.dumps(argo_server.resources))
    text = churn.read_text().replace("schedule: \"0 3 * * 1\"", "schedule: \"0 4 * * 1\"")
    assert text != churn.read_text()
    churn.write_text(text)
    argo_server.fail[("PUT", "/api/v1/event-sources/ml/churn-model")] = (500, "etcdserver: request timed out")
    code, err = deploy(capsys, churn, "--server", argo_server.url)
    assert code == 1, err
    assert "deploy failed at EventSource churn-model" in err and "etcdserver: request timed out" in err
    assert "restored CronWorkflow ml/churn-model" in err and "restored WorkflowTemplate ml/churn-model" in err
    after = argo_server.resources
    for path in PATHS:  # as they were, but for the server's own bookkeeping
        strip = lambda r: {**r, "metadata": {k: v for k, v in r["metadata"].items() if k != "resourceVersion"}}
        assert strip(after[path]) == strip(before[path]), path
    assert after[PATHS[1]]["spec"]["schedules"] == ["0 3 * * 1"]


def test_a_failed_create_deletes_the_resources_created_before_it(argo_server, churn, capsys):
    argo_server.fail[("POST", "/api/v1/sensors/ml")] = (403, "sensors.argoproj.io is forbidden")
    code, err = deploy(capsys, churn, "--server", argo_server.url)
    assert code == 1 and "forbidden" in err
    assert argo_server.resources == {}
    assert [r for r in argo_server.requests if r[0] == "DELETE"] == [("DELETE", path) for path in reversed(PATHS[:3])]


def test_lint_refusal_changes_nothing(argo_server, churn, capsys):
    argo_server.fail[("POST", "/api/v1/cron-workflows/ml/lint")] = (400, "invalid cron schedule")
    code, err = deploy(capsys, churn, "--server", argo_server.url)
    assert code == 2 and "refused CronWorkflow churn-model, nothing deployed" in err and "invalid cron schedule" in err
    assert [m for m, _ in argo_server.requests] == ["POST", "POST"] and argo_server.resources == {}


def test_dry_run_shows_what_would_change_and_changes_nothing(argo_server, churn, capsys, aws_s3):
    code, err = deploy(capsys, churn, "--server", argo_server.url, "--dry-run")
    assert code == 0 and err.count("would create") == 4, err
    assert argo_server.resources == {} and "Contents" not in aws_s3.list_objects_v2(Bucket="acme-ml")
    assert deploy(capsys, churn, "--server", argo_server.url)[0] == 0
    code, err = deploy(capsys, churn, "--server", argo_server.url, "--dry-run")
    assert err.count("unchanged") == 4, err
    churn.write_text(churn.read_text().replace("min_interval: 6h", "min_interval: 2h"))
    code, err = deploy(capsys, churn, "--server", argo_server.url, "--dry-run", "--namespace", "ml")
    assert code == 0
    assert "would update WorkflowTemplate ml/churn-model" in err  # and every other: their spec-hash annotation changed
    # the admission's backoff cap is a 24th of the interval: 6 h -> 15 min, 2 h -> 5 min
    assert re.search(r"^-\s+cap: 900s$", err, re.M) and re.search(r"^\+\s+cap: 300s$", err, re.M), err


def test_refused_flags_and_server_urls(argo_server, churn, capsys):
    code, err = deploy(capsys, churn, "--server", argo_server.url, "--dags-folder", "/tmp")
    assert code == 2 and "does not take --dags-folder" in err
    code, err = deploy(capsys, churn, "--server", "http://user:hunter2@argo.example.com")
    assert code == 2 and "hunter2" not in err and "credentials go in the token variable" in err
    code, err = deploy(capsys, churn)
    assert code == 2 and "needs --server URL" in err


def test_a_stalled_server_times_out_instead_of_hanging(churn, capsys, monkeypatch):
    import socket

    from dagsmith.backends.argo import deploy as argo_deploy

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection and never answers
    monkeypatch.setenv("DAGSMITH_REQUEST_TIMEOUT", "0.5")
    try:
        code, err = deploy(capsys, churn, "--server", f"http://127.0.0.1:{listener.getsockname()[1]}")
    finally:
        listener.close()
    assert code == 2 and "nothing deployed" in err and "cannot reach the Argo Server" in err
