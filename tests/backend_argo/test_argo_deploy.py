"""`dagsmith deploy --target argo` against a local HTTP server standing in for the Argo Server's
REST API (no cluster runs here, so no real Argo Server either: the stand-in keeps resources in
memory, answers as the Argo Server does — 404 for a missing resource, the object with a
resourceVersion — and can be told to fail one request). S3 is moto's server."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
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
        # (method, path) -> (status, content type, body or None to trickle it, whether the server acted, headers): once
        self.odd: dict[tuple[str, str], tuple[int, str, bytes | None, bool, dict]] = {}
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
                try:
                    self.wfile.write(data)
                except OSError:
                    pass  # the client stopped reading (an answer too large)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                stand_in.requests.append((self.command, self.path))
                stand_in.bodies.append(body)
                stand_in.auth.append(self.headers.get("Authorization"))
                if (self.command, self.path) in stand_in.fail:
                    status, message = stand_in.fail[(self.command, self.path)]
                    return self._answer(status, {"code": 13, "message": message})
                odd = stand_in.odd.pop((self.command, self.path), None)  # once: the next call is answered as usual
                if odd is None:
                    return self._answer(*stand_in.respond(self.command, self.path, body))
                # what a proxy in front of the server answers instead, before or after the server acted
                status, content_type, data, applied, headers = odd
                if applied:
                    stand_in.respond(self.command, self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if data is not None and not headers.get("X-No-Length"):  # without: the body runs to the close (HTTP/1.0)
                    self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if data is None:  # trickled: one byte every 0.2 s, for up to 8 s
                    end = time.monotonic() + 8
                    while time.monotonic() < end:
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.2)
                    return
                try:
                    self.wfile.write(data)
                except OSError:
                    pass  # the client stopped reading (an answer too large)

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
    code, err = deploy(capsys, churn, "--server", "https://argo.example.com/?access_token=hunter3#hunter4")
    assert code == 2 and "hunter3" not in err and "hunter4" not in err and "credentials go in the token variable" in err
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
    assert code == 2 and "nothing deployed" in err and "gave no usable answer: no complete answer within 0.5s" in err, err


# --- every unexpected answer, every stalled or oversized one (issue 22: 2, 3, 10) ---------------

from misbehaving import LOGIN_PAGE, Trickle, closed_port  # noqa: E402

HTML = "text/html"
ODD_ANSWERS = {  # name -> (status, content type, body, whether the server had acted, headers)
    "an SSO login page": (200, HTML, LOGIN_PAGE, False, {}),
    "a login page after the server acted": (200, HTML, LOGIN_PAGE, True, {}),
    "JSON of another shape": (200, "application/json", b'{"items": []}', True, {}),
    "garbage": (200, "application/octet-stream", b"\xff\xfe\x00garbage", False, {}),
    "an empty body": (200, "application/json", b"", True, {}),
    "a redirect to a login page": (302, HTML, b"", False, {"Location": "/sso/login?next=/api"}),
    "a gateway error after the server acted": (502, HTML, b"<html>502 Bad Gateway</html>", True, {}),
    "a login page with 401": (401, HTML, LOGIN_PAGE, False, {}),
    "a trickled answer after the server acted": (200, "application/json", None, True, {}),
}


WRITE_ANSWERS = ["an SSO login page", "a login page after the server acted", "JSON of another shape",
                 "a gateway error after the server acted", "a trickled answer after the server acted"]


@pytest.mark.parametrize("odd", WRITE_ANSWERS)
def test_an_unexpected_answer_to_a_write_puts_back_what_was_written(argo_server, churn, capsys, monkeypatch, odd):
    """The CronWorkflow's create gets an answer that is not the created resource: a deploy
    failure (exit 1) that deletes the WorkflowTemplate created before it, and the CronWorkflow
    too when the server did create it behind the odd answer."""
    monkeypatch.setenv("DAGSMITH_REQUEST_TIMEOUT", "1")
    argo_server.odd[("POST", "/api/v1/cron-workflows/ml")] = ODD_ANSWERS[odd]
    code, err = deploy(capsys, churn, "--server", argo_server.url)
    assert code == 1, err
    assert "deploy failed at CronWorkflow churn-model" in err and "nothing changed" in err, err
    assert "deleted WorkflowTemplate ml/churn-model" in err, err
    assert "internal error" not in err and "Traceback" not in err
    assert argo_server.resources == {}  # as before the command
    assert ("POST", "/sso/login?next=/api") not in argo_server.requests and ("GET", "/sso/login?next=/api") not in argo_server.requests


@pytest.mark.parametrize("odd, call, dry_run", [
    ("an SSO login page", ("POST", "/api/v1/cron-workflows/ml/lint"), True),
    ("JSON of another shape", ("GET", PATHS[2]), True),
    ("garbage", ("GET", PATHS[0]), False),
    ("a redirect to a login page", ("POST", "/api/v1/workflow-templates/ml/lint"), False),
])
def test_an_unexpected_answer_before_any_write_changes_nothing(argo_server, churn, capsys, odd, call, dry_run):
    """A lint or a GET that is not the Argo Server's answer: refused (exit 2), nothing written."""
    argo_server.odd = {call: ODD_ANSWERS[odd]}
    code, err = deploy(capsys, churn, "--server", argo_server.url, *(["--dry-run"] if dry_run else []))
    assert code == 2 and "nothing deployed" in err, err
    assert "internal error" not in err and "would create" not in err, err
    assert not [r for r in argo_server.requests if r[0] in ("PUT", "DELETE") or (r[0] == "POST" and not r[1].endswith("/lint"))]
    assert argo_server.resources == {}


@pytest.mark.parametrize("body, says", [
    (b"<html>404 Not Found</html>", "text/html"),  # an ingress, a wrong path
    (b'{"kind": "Status", "status": "Failure", "code": 404, "message": "the server could not find the requested resource"}', "could not find"),
])
def test_a_404_that_is_not_the_argo_servers_is_no_proof_of_absence(argo_server, churn, capsys, body, says):
    """Only the Argo Server's gRPC NOT_FOUND means "not there, create it"."""
    argo_server.odd[("GET", PATHS[0])] = (404, HTML if says == "text/html" else "application/json", body, False, {})
    code, err = deploy(capsys, churn, "--server", argo_server.url, "--dry-run")
    assert code == 2 and "404" in err and says in err and "would create" not in err, err


def test_a_rollback_that_gets_no_real_answer_is_left_for_a_person(argo_server, churn, capsys):
    argo_server.fail[("POST", "/api/v1/sensors/ml")] = (500, "etcdserver: request timed out")
    argo_server.odd[("DELETE", PATHS[1])] = ODD_ANSWERS["an SSO login page"]
    code, err = deploy(capsys, churn, "--server", argo_server.url)
    assert code == 4, err
    assert "putting back failed for: CronWorkflow ml/churn-model" in err and "text/html" in err, err
    assert "deleted EventSource ml/churn-model" in err and "deleted WorkflowTemplate ml/churn-model" in err, err
    assert sorted(argo_server.resources) == [PATHS[1]]  # what the message says is left


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "deploy"])
def test_a_trickling_server_is_bounded_per_whole_request(churn, capsys, monkeypatch, dry_run):
    """One byte every 0.2 s never trips a socket timeout: the whole request is bounded
    ($DAGSMITH_REQUEST_TIMEOUT, here 1 s), so the command ends in about that, exit 2."""
    monkeypatch.setenv("DAGSMITH_REQUEST_TIMEOUT", "1")
    trickle = Trickle(interval=0.2, duration=8)
    try:
        started = time.monotonic()
        code, err = deploy(capsys, churn, "--server", trickle.url, *(["--dry-run"] if dry_run else []))
        elapsed = time.monotonic() - started
    finally:
        trickle.close()
    assert code == 2 and "nothing deployed" in err and "no complete answer within 1s" in err, err
    assert elapsed < 4, elapsed


def test_an_unreachable_server_changes_nothing(churn, capsys, monkeypatch):
    code, err = deploy(capsys, churn, "--server", closed_port())
    assert code == 2 and "nothing deployed" in err and "cannot reach the Argo Server at http://127.0.0.1:" in err, err
    assert "internal error" not in err


def test_a_stalled_write_is_bounded_and_put_back(argo_server, churn, capsys, monkeypatch):
    monkeypatch.setenv("DAGSMITH_REQUEST_TIMEOUT", "1")
    argo_server.odd[("PUT", PATHS[1])] = ODD_ANSWERS["a trickled answer after the server acted"]
    assert deploy(capsys, churn, "--server", argo_server.url)[0] == 0
    before = json.loads(json.dumps(argo_server.resources))
    churn.write_text(churn.read_text().replace("schedule: \"0 3 * * 1\"", "schedule: \"0 4 * * 1\""))
    started = time.monotonic()
    code, err = deploy(capsys, churn, "--server", argo_server.url)
    assert time.monotonic() - started < 6
    assert code == 1 and "no complete answer within 1s" in err, err
    assert "restored CronWorkflow ml/churn-model" in err and "restored WorkflowTemplate ml/churn-model" in err, err
    assert argo_server.resources[PATHS[1]]["spec"]["schedules"] == ["0 3 * * 1"]
    assert argo_server.resources[PATHS[0]]["spec"] == before[PATHS[0]]["spec"]


def test_an_oversized_answer_is_refused(argo_server, churn, capsys):
    """A GET answering 17 MB (valid JSON: spaces, then {}) with no length given (so it cannot be
    refused on its Content-Length, as tests/backends/test_remote.py does): refused after 16 MB."""
    big = b" " * (17 * 1024 * 1024) + b"{}"
    argo_server.odd[("GET", PATHS[0])] = (200, "application/json", big, False, {"X-No-Length": "1"})
    code, err = deploy(capsys, churn, "--server", argo_server.url, "--dry-run")
    assert code == 2 and "more than the 16777216 bytes" in err, err


TOKEN = "eyJhbGciOi.s3cr3t-token-0123456789"


@pytest.mark.parametrize("where, echo", [("lint", "cut"), ("write", "html"), ("rollback", "header")])
def test_the_token_is_scrubbed_from_every_server_message(argo_server, churn, capsys, monkeypatch, where, echo):
    """The Argo Server (or a proxy) repeats the token in its error: never printed, not even in
    part (a message cut at its length limit must not leave a prefix of it)."""
    monkeypatch.setenv("ARGO_TOKEN", TOKEN)
    message = {"html": f"<html><pre>Authorization: Bearer {TOKEN}</pre></html>",
               "header": f'request headers: {{"authorization": "Bearer {TOKEN}", "accept": "application/json"}}',
               "cut": "x" * 490 + TOKEN}[echo]
    call = {"lint": ("POST", "/api/v1/workflow-templates/ml/lint"), "write": ("POST", "/api/v1/event-sources/ml"),
            "rollback": ("DELETE", PATHS[0])}[where]
    if echo == "html":
        argo_server.odd[call] = (403, HTML, message.encode(), False, {})
    else:
        argo_server.fail[call] = (403, message)
    if where == "rollback":
        argo_server.fail[("POST", "/api/v1/sensors/ml")] = (500, f"bad token {TOKEN}")
    code, err = deploy(capsys, churn, "--server", argo_server.url)
    assert code == {"lint": 2, "write": 1, "rollback": 4}[where], err
    assert set(argo_server.auth) == {f"Bearer {TOKEN}"}  # it was sent
    assert TOKEN not in err and TOKEN[:10] not in err and "s3cr3t" not in err, err
    assert "***" in err
