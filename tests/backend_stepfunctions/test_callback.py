"""The callback wrapper (backends/stepfunctions/callback.py) when Step Functions gives up on a task:
the command it runs is stopped, whole process group, and no result is sent; transient errors are
retried.

The Step Functions client here is a STAND-IN at the boto3 boundary, not moto: moto never times out
a heartbeat (its SendTaskHeartbeat accepts any live token and its interpreter does not enforce
HeartbeatSeconds), so it cannot answer TaskTimedOut. The stand-in answers what the API reference
lists for SendTaskHeartbeat (TaskTimedOut, TaskDoesNotExist, InvalidToken:
https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskHeartbeat.html) and the
common errors (ThrottlingException, 5xx:
https://docs.aws.amazon.com/step-functions/latest/apireference/CommonErrors.html), raised as
botocore raises them (ClientError with the error code, EndpointConnectionError). The command is a
real child process that starts a grandchild, so stopping the group (not only the child) is tested.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

botocore = pytest.importorskip("botocore")
from botocore.exceptions import ClientError, EndpointConnectionError  # noqa: E402

from dagsmith.backends.stepfunctions import asl, callback  # noqa: E402
from dagsmith_testing import process_alive  # noqa: E402

COMMAND = """\
import json, os, signal, subprocess, sys, time
args = sys.argv[1:]
folder = os.environ["PIDS"]
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN) "
                               "if %r else None; time.sleep(60)" % bool(os.environ.get("IGNORE_TERM"))])
open(os.path.join(folder, "pids"), "w").write(f"{os.getpid()} {grandchild.pid}")
time.sleep(float(os.environ.get("RUN_FOR", "60")))
json.dump({"status": "succeeded"}, open(args[args.index("--outcome") + 1], "w"))
"""


def client_error(code: str, operation: str = "SendTaskHeartbeat", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class StandInStepFunctions:
    """SendTaskHeartbeat answers from a script (an exception to raise, or None for accepted)."""

    def __init__(self, heartbeats: list):
        self.heartbeats = list(heartbeats)
        self.calls: list = []

    def send_task_heartbeat(self, taskToken):
        self.calls.append("heartbeat")
        answer = self.heartbeats.pop(0) if self.heartbeats else None
        if answer is not None:
            raise answer
        return {}

    def send_task_success(self, taskToken, output):
        self.calls.append(("success", output))
        return {}

    def send_task_failure(self, taskToken, error, cause):
        self.calls.append(("failure", error))
        return {}


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(callback, "HEARTBEAT_EVERY", 0.2)
    monkeypatch.setattr(callback, "KILL_GRACE", 0.5)


def wrapper_args(tmp_path) -> list[str]:
    script = tmp_path / "dagsmith"
    script.write_text(f"#!{sys.executable}\n" + COMMAND, encoding="utf-8")
    script.chmod(0o755)
    return ["--", str(script), "step", "s3://b/ir.json", "train"]


def run(tmp_path, client, **env) -> tuple[int, float, list[int]]:
    environ = {**os.environ, callback.TOKEN_ENV: "token", "PIDS": str(tmp_path), **env}
    started = time.monotonic()
    code = callback.main(wrapper_args(tmp_path), environ=environ, sfn=client)
    took = time.monotonic() - started
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    return code, took, pids


def gone_soon(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_alive(pid)


@pytest.mark.parametrize("code", ["TaskTimedOut", "TaskDoesNotExist", "InvalidToken"])
def test_a_dead_token_stops_the_command_and_its_group(tmp_path, fast, code):
    client = StandInStepFunctions([None, client_error(code)])
    exit_code, took, pids = run(tmp_path, client)
    assert exit_code == callback.EXIT_ABANDONED
    assert took < 10  # not the command's 60 s
    assert all(gone_soon(pid) for pid in pids), pids
    assert client.calls == ["heartbeat", "heartbeat"]  # no result sent for a task nobody waits for


def test_a_command_ignoring_sigterm_is_killed_after_the_grace(tmp_path, fast):
    client = StandInStepFunctions([client_error("TaskTimedOut")])
    exit_code, took, pids = run(tmp_path, client, IGNORE_TERM="1")
    assert exit_code == callback.EXIT_ABANDONED and took < 10
    assert all(gone_soon(pid) for pid in pids), pids


def test_transient_heartbeat_errors_are_retried(tmp_path, fast, monkeypatch):
    monkeypatch.setattr(callback.random, "random", lambda: 0.01)  # short backoff
    transient = [client_error("ThrottlingException"), client_error("InternalFailure", status=500),
                 EndpointConnectionError(endpoint_url="https://states.us-east-1.amazonaws.com")]
    client = StandInStepFunctions(transient)
    exit_code, took, pids = run(tmp_path, client, RUN_FOR="1.5")
    assert exit_code == 0, client.calls
    assert client.calls.count("heartbeat") >= 4  # three failed tries, then accepted
    assert client.calls[-1][0] == "success"


def test_no_heartbeat_accepted_for_the_states_window_stops_the_command(tmp_path, fast, monkeypatch):
    monkeypatch.setattr(callback, "STATE_HEARTBEAT_SECONDS", 1.0)
    client = StandInStepFunctions([client_error("AccessDeniedException")] * 100)
    exit_code, took, pids = run(tmp_path, client)
    assert exit_code == callback.EXIT_ABANDONED and took < 10
    assert all(gone_soon(pid) for pid in pids)


def test_a_result_refused_as_timed_out_exits_non_zero(tmp_path, fast):
    class Late(StandInStepFunctions):
        def send_task_success(self, taskToken, output):
            raise client_error("TaskTimedOut", "SendTaskSuccess")

    exit_code, _, _ = run(tmp_path, Late([]), RUN_FOR="0")
    assert exit_code == callback.EXIT_ABANDONED


def test_the_wrapper_knows_the_states_heartbeat():
    assert callback.STATE_HEARTBEAT_SECONDS == asl.HEARTBEAT_SECONDS
    assert callback.HEARTBEAT_EVERY * 5 <= asl.HEARTBEAT_SECONDS
