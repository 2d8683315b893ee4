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
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading

TOKEN_ENV = "DAGSMITH_TASK_TOKEN"
# {ENV_NAME: Secrets Manager secret name}: secrets passed BY NAME where the service has no secret
# references of its own (a SageMaker training job's Environment); fetched here, at start.
SECRET_REFS_ENV = "DAGSMITH_SECRET_REFS"
ITEM_ENV = "DAGSMITH_ITEM"
HEARTBEAT_EVERY = 60  # seconds; the states' HeartbeatSeconds is several times this
ERROR_STEP = "dagsmith.StepFailed"
MAX_CAUSE = 32_000  # SendTaskFailure's cause is at most 32,768 characters


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


def main(args: list[str] | None = None, environ=os.environ) -> int:
    args = list(sys.argv[1:] if args is None else args)
    ranges_to_s3 = "--ranges-to-s3" in args[: args.index("--")] if "--" in args else False
    if "--" not in args or len(args) <= args.index("--") + 1:
        print("usage: python -m dagsmith.backends.stepfunctions.callback [--ranges-to-s3] -- COMMAND...", file=sys.stderr)
        return 2
    argv = args[args.index("--") + 1:]
    os.environ.update(fetch_secrets(environ))  # the command's process inherits them; nothing is written
    token = environ.get(TOKEN_ENV)
    folder = tempfile.mkdtemp(prefix="dagsmith-outcome-")
    outcome_path = os.path.join(folder, "outcome.json")
    command = argv + ["--outcome", outcome_path] + (["--item", environ[ITEM_ENV]] if environ.get(ITEM_ENV) else [])
    if not token:
        return subprocess.call(command)
    import boto3

    sfn = boto3.client("stepfunctions")
    done = threading.Event()

    def heartbeat():
        while not done.wait(HEARTBEAT_EVERY):
            try:
                sfn.send_task_heartbeat(taskToken=token)
            except Exception as exc:  # the state timed out or was stopped: nothing to keep alive
                print(f"stepfunctions_callback: heartbeat: {exc}", file=sys.stderr)
                return

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        code = subprocess.call(command)
    finally:
        done.set()
    try:
        with open(outcome_path, encoding="utf-8") as handle:
            outcome = json.load(handle)
    except (OSError, ValueError):
        outcome = None
    try:
        ok, payload = result_of(argv, code, outcome, ranges_to_s3, environ)
    except Exception as exc:  # e.g. the ranges could not be written to the store
        ok, payload = False, {"error": ERROR_STEP, "cause": f"{argv[1]}: {exc}"[:MAX_CAUSE]}
    if ok:
        sfn.send_task_success(taskToken=token, output=json.dumps(payload, sort_keys=True))
        return 0
    sfn.send_task_failure(taskToken=token, error=payload["error"], cause=payload["cause"])
    return code or 1


if __name__ == "__main__":
    sys.exit(main())
