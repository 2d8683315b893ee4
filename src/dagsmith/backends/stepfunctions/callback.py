"""What every Step Functions task container runs: the plan's step command, then its result sent
back to the state machine through the task token (`.waitForTaskToken`).

    python -m dagsmith.backends.stepfunctions.callback [--ranges-to-s3] -- dagsmith step IR STEP ...

- The command is the execution plan's (`dagsmith step | ranges | admit`), as the ASL gives it;
  this wrapper adds `--outcome FILE` (a file of its own) and, for a fan-out's task, `--item`
  from $DAGSMITH_ITEM (the Map item, a JSON range).
- With $DAGSMITH_TASK_TOKEN set, it sends a heartbeat every HEARTBEAT_EVERY seconds while the
  command runs (the state's HeartbeatSeconds catches a container that died without a word), then
  SendTaskSuccess with a SMALL JSON result (what the state machine reads back), or
  SendTaskFailure naming the step and its error:
      step    {"status": "succeeded" | "skip"}       (skip: a gate that did not pass)
      ranges  {"ranges": [...]}, or with --ranges-to-s3 {"bucket", "key", "count"}: the list is
              written to the store for a Distributed Map's ItemReader
      admit   {"action": "admit" | "hold" | "covered", "wait_seconds": N (whole seconds)}
- Without a token (a SageMaker training job run with `.sync`), it runs the command and exits
  with its code: the job's status is the result.
- The task is over when Step Functions says so: a heartbeat answered TaskTimedOut,
  TaskDoesNotExist or InvalidToken (the state timed out, its execution was stopped, or the token
  is not one) means nobody waits for this command any more, and the state's Retry may already run
  a second copy of it. The wrapper then stops the command's whole process group (SIGTERM, then
  SIGKILL after KILL_GRACE seconds) and exits EXIT_ABANDONED, sending no result. A transient
  error (throttling, a 5xx, no connection) is retried with backoff; when no heartbeat has been
  accepted for STATE_HEARTBEAT_SECONDS (the states' HeartbeatSeconds), the state has timed out
  whatever the error said, and the command is stopped too. A SIGTERM to the wrapper (ECS
  StopTask, Batch TerminateJob) is passed on to the command's group the same way.
  https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskHeartbeat.html
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

TOKEN_ENV = "DAGSMITH_TASK_TOKEN"
# {ENV_NAME: Secrets Manager secret name}: secrets passed BY NAME where the service has no secret
# references of its own (a SageMaker training job's Environment); fetched here, at start.
SECRET_REFS_ENV = "DAGSMITH_SECRET_REFS"
ITEM_ENV = "DAGSMITH_ITEM"
HEARTBEAT_EVERY = 60  # seconds; the states' HeartbeatSeconds is several times this
ERROR_STEP = "dagsmith.StepFailed"
MAX_CAUSE = 32_000  # SendTaskFailure's cause is at most 32,768 characters
STATE_HEARTBEAT_SECONDS = 600  # asl.HEARTBEAT_SECONDS: with no beat accepted for this long, the state timed out
KILL_GRACE = 30  # seconds between SIGTERM and SIGKILL to the command's process group
EXIT_ABANDONED = 124  # the task was timed out or stopped by Step Functions: no result sent
# SendTaskHeartbeat / SendTaskSuccess / SendTaskFailure errors (the API reference's "Errors"):
# the token is dead, nothing will ever read this task's result
# https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskHeartbeat.html
TOKEN_GONE = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
# worth another try: throttling, the service's 5xx (AWS's common errors:
# https://docs.aws.amazon.com/step-functions/latest/apireference/CommonErrors.html) and the
# network (botocore's connection errors)
TRANSIENT = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
                       "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure", "InternalServerError"})


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def result_of(argv: list[str], code: int, outcome, ranges_to_s3: bool, environ=os.environ) -> tuple[bool, dict]:
    """(succeeded, payload): the payload is SendTaskSuccess's output, or {"error", "cause"}."""
    verb = argv[1] if len(argv) > 1 else "?"
    what = f"{verb} {argv[3]}" if verb in ("step", "ranges") and len(argv) > 3 else verb
    if verb == "step":
        status = (outcome or {}).get("status")
        if status in ("succeeded", "skip") and code in (0, int(_option(argv, "--skip-exit-code") or 0)):
            return True, {"status": status}
        error = (outcome or {}).get("error") or f"exited with code {code} (see the task's log)"
        return False, {"error": ERROR_STEP, "cause": f"{what}: {error}"[:MAX_CAUSE]}
    if verb == "ranges":
        if code != 0 or not isinstance(outcome, list):
            return False, {"error": ERROR_STEP, "cause": f"{what}: exited with code {code} (see the task's log)"}
        if not ranges_to_s3:
            return True, {"ranges": outcome}
        from ...runtime.s3 import client, split_uri

        store = _option(argv, "--store") or environ.get("DAGSMITH_STORE") or ""
        bucket, prefix = split_uri(store.rstrip("/"))
        key = "/".join(part for part in (prefix.strip("/"), "runs", environ.get("DAGSMITH_RUN_ID") or "adhoc",
                                         "stepfunctions", f"ranges-{argv[3]}.json") if part)
        client().put_object(Bucket=bucket, Key=key, Body=json.dumps(outcome).encode("utf-8"))
        return True, {"bucket": bucket, "key": key, "count": len(outcome)}
    if verb == "admit":
        if not isinstance(outcome, dict) or outcome.get("action") not in ("admit", "hold", "covered"):
            return False, {"error": ERROR_STEP, "cause": f"admit: exited with code {code} (see the task's log)"}
        return True, {"action": outcome["action"], "wait_seconds": max(1, math.ceil(float(outcome.get("wait_seconds") or 0)))}
    return False, {"error": ERROR_STEP, "cause": f"unknown command {verb!r}"}


def fetch_secrets(environ=os.environ) -> dict[str, str]:
    """The values of the secrets named in $DAGSMITH_SECRET_REFS, from Secrets Manager."""
    refs = json.loads(environ.get(SECRET_REFS_ENV) or "{}")
    if not refs:
        return {}
    import boto3

    secrets = boto3.client("secretsmanager")
    return {name: secrets.get_secret_value(SecretId=secret_id)["SecretString"] for name, secret_id in sorted(refs.items())}


def main(args: list[str] | None = None, environ=os.environ, sfn=None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    ranges_to_s3 = "--ranges-to-s3" in args[: args.index("--")] if "--" in args else False
    if "--" not in args or len(args) <= args.index("--") + 1:
        print("usage: python -m dagsmith.backends.stepfunctions.callback [--ranges-to-s3] -- COMMAND...", file=sys.stderr)
        return 2
    argv = args[args.index("--") + 1:]
    environ = {**environ, **fetch_secrets(environ)}  # the command's process gets them; nothing is written
    token = environ.get(TOKEN_ENV)
    folder = tempfile.mkdtemp(prefix="dagsmith-outcome-")
    outcome_path = os.path.join(folder, "outcome.json")
    command = argv + ["--outcome", outcome_path] + (["--item", environ[ITEM_ENV]] if environ.get(ITEM_ENV) else [])
    if not token:
        return subprocess.call(command, env=environ)
    if sfn is None:
        import boto3

        sfn = boto3.client("stepfunctions")
    child = subprocess.Popen(command, env=environ, start_new_session=True)  # its own process group: stopped as a whole
    done, gone = threading.Event(), threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop_group, args=(child,), daemon=True).start()) \
        if threading.current_thread() is threading.main_thread() else None

    def heartbeat():
        accepted = time.monotonic()
        while not done.wait(HEARTBEAT_EVERY):
            try:
                call_with_retries(lambda: sfn.send_task_heartbeat(taskToken=token), until=accepted + STATE_HEARTBEAT_SECONDS, stop=done)
                accepted = time.monotonic()
            except TokenGone as exc:
                print(f"stepfunctions_callback: heartbeat: {exc}: stopping the command", file=sys.stderr)
                gone.set()
                stop_group(child)
                return
            except Exception as exc:  # noqa: BLE001 - only when `done`: the command has ended
                print(f"stepfunctions_callback: heartbeat: {exc}", file=sys.stderr)

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        code = child.wait()
    finally:
        done.set()
        beat.join(KILL_GRACE + 15)  # a heartbeat stuck in a network call does not hold the result back
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if gone.is_set():
        return EXIT_ABANDONED
    try:
        with open(outcome_path, encoding="utf-8") as handle:
            outcome = json.load(handle)
    except (OSError, ValueError):
        outcome = None
    try:
        ok, payload = result_of(argv, code, outcome, ranges_to_s3, environ)
    except Exception as exc:  # e.g. the ranges could not be written to the store
        ok, payload = False, {"error": ERROR_STEP, "cause": f"{argv[1]}: {exc}"[:MAX_CAUSE]}
    until = time.monotonic() + STATE_HEARTBEAT_SECONDS
    try:
        if ok:
            call_with_retries(lambda: sfn.send_task_success(taskToken=token, output=json.dumps(payload, sort_keys=True)), until=until)
            return 0
        call_with_retries(lambda: sfn.send_task_failure(taskToken=token, error=payload["error"], cause=payload["cause"]), until=until)
    except TokenGone as exc:
        print(f"stepfunctions_callback: the result was not taken: {exc}", file=sys.stderr)
        return EXIT_ABANDONED
    return code or 1


class TokenGone(Exception):
    """Step Functions no longer waits for this task (TOKEN_GONE)."""


def error_code(exc: Exception) -> str | None:
    """The AWS error code of a botocore ClientError, "connection" for botocore's network
    errors, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
        return "ServiceUnavailable" if code not in TOKEN_GONE and int(status) >= 500 else code
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError
    except ImportError:  # pragma: no cover - boto3 is there whenever a token is
        return None
    return "connection" if isinstance(exc, (BotoConnectionError, HTTPClientError)) else None


def call_with_retries(call, *, until: float, stop: threading.Event | None = None, base: float = 1.0, cap: float = 30.0):
    """`call()`, retried with full-jitter exponential backoff while its error is transient and
    the monotonic clock is before `until`; TokenGone when AWS says the task is over (or it stayed
    unreachable until then). Other errors are raised as they are."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            code = error_code(exc)
            if code in TOKEN_GONE:
                raise TokenGone(f"{code}: {exc}") from exc
            if code not in TRANSIENT and code != "connection":
                if time.monotonic() >= until:
                    raise TokenGone(f"no heartbeat accepted for {STATE_HEARTBEAT_SECONDS} s (last: {exc})") from exc
                raise
            if time.monotonic() >= until:
                raise TokenGone(f"no answer for {STATE_HEARTBEAT_SECONDS} s (last: {exc})") from exc
            delay = min(cap, base * 2 ** attempt) * random.random()  # full jitter
            attempt += 1
            print(f"stepfunctions_callback: {code}: trying again in {delay:.1f} s", file=sys.stderr)
            if stop is not None and stop.wait(delay):
                raise
            if stop is None:
                time.sleep(delay)


def stop_group(child: subprocess.Popen) -> None:
    """SIGTERM to the command's process group, SIGKILL to what is left after KILL_GRACE seconds."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        if wait is None:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if child.poll() is not None and not group_alive(child.pid):
                return
            time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    sys.exit(main())
