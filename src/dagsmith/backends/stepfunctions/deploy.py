"""`dagsmith deploy --target stepfunctions`: the template through a CloudFormation change set.

1. compile (every problem reported before anything changes) and upload the IR to the store,
   under a name of its spec's hash (the running version keeps reading its own), and the code
   package of the spec folder when its modules are shipped (`code/<sha256>.json`, by its hash);
2. create a change set (CREATE for a new stack, UPDATE otherwise) and wait for it; no changes
   -> "unchanged"; --dry-run -> print the changes, delete the change set, change nothing;
3. execute it and wait. A failed update is rolled back by CloudFormation: the previous version
   keeps serving, and the command says so with the failing resource's reason (DeployFailed,
   exit 1). A failed creation is rolled back too; the empty ROLLBACK_COMPLETE stack it leaves
   is deleted (exit 1: as before the command). Anything else (a rollback that failed, a stack
   that did not settle, an execution error after which the stack is not in a rolled-back state)
   is DeployIncomplete (exit 4): the stack's status and the error, for a person to look at.
"""

from __future__ import annotations

import time
import uuid

from ...errors import DeployFailed, DeployIncomplete, UsageError
from .. import aws
from ..aws import AwsUnavailable
from ..remote import short

try:
    from botocore.exceptions import ClientError
except ImportError:  # without boto3, deploy says what to install before anything needs it
    ClientError = aws.AwsUnavailable

CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
TEMPLATE_BODY_LIMIT = 51_200  # larger templates go through S3 (TemplateURL)
DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}


def deploy(backend, ir, options: dict, request, *, poll: float = 2.0, timeout: float = 3600.0, spec_dir: str | None = None) -> list[str]:
    request.refuse_others("stepfunctions", ("stack_name", "region"))
    try:
        import boto3
    except ImportError:
        raise UsageError("deploying to Step Functions needs boto3: pip install 'dagsmith[aws]'") from None

    package = backend.package(ir, options, spec_dir)  # the spec folder's code, when shipped (backends/code.py)
    plan, definition, template = backend.build(ir, options, package)
    body = backend.template_text(template)
    stack = request.stack_name or backend.machine_name(ir, options)
    region = request.region or options.get("region")
    session = boto3.session.Session(region_name=region) if region else boto3.session.Session()
    cfn, s3 = aws.client("cloudformation", session), aws.client("s3", session)
    try:
        existing = _stack(cfn, stack)
    except AwsUnavailable as exc:
        raise UsageError(f"stack {stack}: nothing changed: {exc}") from None
    except ClientError as exc:
        raise UsageError(f"stack {stack}: CloudFormation refused to describe it, nothing changed: {aws.message(exc)}") from None
    if existing and existing["StackStatus"] in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"):
        raise UsageError(f"stack {stack} is {existing['StackStatus']} (its creation failed): delete it, then deploy again")
    if existing and existing["StackStatus"] == "UPDATE_ROLLBACK_FAILED":
        raise UsageError(f"stack {stack} is UPDATE_ROLLBACK_FAILED (an earlier update's rollback failed): finish it with "
                         "`aws cloudformation continue-update-rollback`, then deploy again")
    if existing and existing["StackStatus"].endswith("_IN_PROGRESS"):
        raise UsageError(f"stack {stack} is {existing['StackStatus']}: wait until it settles, then deploy again")
    parameters = _parameters(template, existing)
    missing = [name for name, p in template["Parameters"].items() if "Default" not in p and not existing]
    if missing:
        raise UsageError(f"the template's parameters {', '.join(missing)} have no value: set them in "
                         "backends.stepfunctions.parameters (e.g. under environments: prod:)")
    bucket = _value(template, "ArtifactBucket", existing)
    prefix = _value(template, "StorePrefix", existing) or ""
    ir_key = "/".join(p for p in (prefix.strip("/"), backend.ir_key(ir)) if p)
    kind = "UPDATE" if existing else "CREATE"
    name = f"dagsmith-{uuid.uuid4().hex[:16]}"
    args = {"StackName": stack, "ChangeSetName": name, "ChangeSetType": kind, "Capabilities": CAPABILITIES, "Parameters": parameters,
            "Description": f"dagsmith {ir.name} {(ir.pipeline.get('spec_hash') or '')[:12]}"}
    created = False  # whether the change set exists (and must be deleted when nothing is executed)
    try:
        if len(body.encode("utf-8")) > TEMPLATE_BODY_LIMIT:
            key = "/".join(p for p in (prefix.strip("/"), "templates", f"{stack}-{(ir.pipeline.get('spec_hash') or '')[:12]}.template.yaml") if p)
            s3.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"))  # read from S3, also for a dry run
            args["TemplateURL"] = f"https://{bucket}.s3.amazonaws.com/{key}"
        else:
            args["TemplateBody"] = body
        try:
            created = True  # from here on it may exist, even when the call fails
            cfn.create_change_set(**args)
            changes = _wait_change_set(cfn, stack, name, poll, timeout)
        except ClientError as exc:
            if "No updates are to be performed" in str(exc):
                return [f"stack {stack}: unchanged"]
            raise UsageError(f"CloudFormation refused the template: {aws.message(exc)}") from None
        if changes is None:
            _discard(cfn, stack, name, kind)
            return [f"stack {stack}: unchanged"]
        lines = [f"{'would ' if request.dry_run else ''}{_verb(c)} {c.get('LogicalResourceId', '?')} ({c.get('ResourceType', '?')})" for c in changes]
        if request.dry_run:
            _discard(cfn, stack, name, kind)
            return [f"dry run: stack {stack} ({kind.lower()}), change set:"] + ["  " + line for line in lines]
        s3.put_object(Bucket=bucket, Key=ir_key, Body=ir.dumps().encode("utf-8"))
        if package:  # where the tasks' DAGSMITH_CODE points: beside the IR, before the stack names it
            s3.put_object(Bucket=bucket, Key="/".join(p for p in (prefix.strip("/"), package.key) if p), Body=package.text.encode("utf-8"))
        since = len(_events(cfn, stack))
    except (AwsUnavailable, ClientError, UsageError) as exc:  # nothing executed: the stack is as it was
        reason = str(exc) if not isinstance(exc, ClientError) else aws.message(exc)
        raise UsageError(f"stack {stack}: nothing changed: {reason}" + (_discarded(cfn, stack, name, kind) if created else "")) from None

    error = None  # the execution call's own error (AWS reports resource failures in the stack instead)
    try:
        cfn.execute_change_set(StackName=stack, ChangeSetName=name)
    except ClientError as exc:
        error = aws.message(exc)
    except AwsUnavailable as exc:  # it may have started: what the stack says decides
        error = str(exc)
    try:
        status, reason = _wait_stack(cfn, stack, poll, timeout, since=since, started=error is None)
        if error is not None or status not in DONE:
            _failed(cfn, stack, kind, status, error or reason, previous=existing["StackStatus"] if existing else None)
    except (AwsUnavailable, ClientError) as exc:
        lost = str(exc) if isinstance(exc, AwsUnavailable) else aws.message(exc)
        raise DeployIncomplete(f"stack {stack}: the change set {name} was sent for execution, then AWS could not be asked how it "
                               f"went ({lost}){f'; the execution call said: {error}' if error else ''}: look at the stack's status "
                               "and events in CloudFormation before deploying again") from None
    try:
        outputs = {o.get("OutputKey"): o.get("OutputValue") for o in (_stack(cfn, stack) or {}).get("Outputs", [])}
    except (AwsUnavailable, ClientError):
        outputs = {}  # deployed all the same: the outputs are only shown
    done = [f"stack {stack}: {'updated' if existing else 'created'}"] + ["  " + line for line in lines]
    done.append(f"  IR: s3://{bucket}/{ir_key}")
    if outputs.get("StateMachineArn"):
        done.append(f"  state machine: {outputs['StateMachineArn']}")
    return done


def _discard(cfn, stack: str, name: str, kind: str) -> None:
    """Delete a change set that will not be executed; a CREATE one's empty REVIEW_IN_PROGRESS
    stack too (a new stack's change set leaves it behind)."""
    cfn.delete_change_set(StackName=stack, ChangeSetName=name)
    if kind == "CREATE":
        try:
            cfn.delete_stack(StackName=stack)
        except ClientError:
            pass


def _discarded(cfn, stack: str, name: str, kind: str) -> str:
    """_discard when the deploy stops before executing: what the message adds ("" when done)."""
    try:
        _discard(cfn, stack, name, kind)
        return ""
    except ClientError as exc:
        if "does not exist" in aws.message(exc) or "not found" in aws.message(exc).lower():
            return ""  # never made
        return f" (the unexecuted change set {name} is left: delete it if you like: {aws.message(exc)})"
    except AwsUnavailable:
        return f" (the unexecuted change set {name} may be left; it changes nothing: delete it if you like)"


def _failed(cfn, stack: str, kind: str, status: str, reason: str, *, previous: str | None) -> None:
    """Raise what a failed execution left: rolled back (DeployFailed) or not known to be (DeployIncomplete)."""
    reason = short(reason or "no reason given")  # AWS's text, shown: scrubbed like any server's
    if kind == "UPDATE" and status == "UPDATE_ROLLBACK_COMPLETE":
        raise DeployFailed(f"stack {stack}: the update failed ({reason}); CloudFormation rolled it back "
                           "(UPDATE_ROLLBACK_COMPLETE): the previous version keeps serving")
    if kind == "CREATE" and status == "ROLLBACK_COMPLETE":
        try:  # an empty stack that blocks the next create: delete it, so all is as before
            cfn.delete_stack(StackName=stack)
            deleted, why = _wait_stack(cfn, stack, 0.5, 300)
        except ClientError as exc:
            deleted, why = "DELETE_FAILED", aws.message(exc)
        except AwsUnavailable as exc:
            deleted, why = "not known", str(exc)
        if deleted != "DELETE_COMPLETE":
            raise DeployIncomplete(f"stack {stack}: creation failed ({reason}) and was rolled back, but deleting the empty "
                                   f"stack did not succeed ({deleted}: {why}): delete it, then deploy again")
        raise DeployFailed(f"stack {stack}: creation failed ({reason}); CloudFormation rolled it back and the empty stack "
                           "was deleted: nothing is deployed")
    what = "update" if kind == "UPDATE" else "creation"
    if status == previous:
        state = f"the stack still reports {status}, with no rollback recorded: what changed is not known"
    elif status.endswith("_IN_PROGRESS"):
        state = f"the stack is still {status}"
    else:
        state = f"the stack is {status}, not rolled back"
    raise DeployIncomplete(f"stack {stack}: the {what} failed ({reason}); {state}: look at the stack's events in "
                           "CloudFormation (e.g. continue-update-rollback) before deploying again")


def _stack(cfn, name: str, *, reviewed: bool = False) -> dict | None:
    """The stack, None when there is none (deleted, or only a change set's REVIEW_IN_PROGRESS
    placeholder unless `reviewed`). Only AWS's "does not exist" means none: any other refusal
    (access denied, a proxy's page) is raised, never taken for a new stack."""
    try:
        answer = cfn.describe_stacks(StackName=name)
    except ClientError as exc:
        if "does not exist" in str((exc.response.get("Error") or {}).get("Message") or ""):
            return None
        raise
    stacks = _expect(cfn, answer, "Stacks", list, "describe_stacks")
    stack = stacks[0] if stacks else None
    if stack is not None and not (isinstance(stack, dict) and isinstance(stack.get("StackStatus"), str)):
        raise _not_aws(cfn, "describe_stacks", "a stack without a StackStatus")
    if stack is None or stack["StackStatus"] == "DELETE_COMPLETE" or (stack["StackStatus"] == "REVIEW_IN_PROGRESS" and not reviewed):
        return None
    return stack


def _expect(cfn, answer: dict, key: str, kind: type, call: str):
    """answer[key] when it is a `kind`; a parsed answer without it is not an AWS answer."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, kind):
        raise _not_aws(cfn, call, f"no {key}")
    return value


def _not_aws(cfn, call: str, what: str) -> AwsUnavailable:
    return AwsUnavailable(f"AWS cloudformation at {cfn.meta.endpoint_url} did not give an AWS answer to {call} ({what}): "
                          "a proxy or a wrong endpoint?", sent=True)


def _value(template: dict, name: str, existing: dict | None) -> str | None:
    default = template["Parameters"].get(name, {}).get("Default")
    if default is not None:
        return default
    for p in (existing or {}).get("Parameters", []):
        if p["ParameterKey"] == name:
            return p["ParameterValue"]
    return None


def _parameters(template: dict, existing: dict | None) -> list[dict]:
    """The template's defaults; a parameter without one keeps the stack's current value."""
    current = {p["ParameterKey"] for p in (existing or {}).get("Parameters", [])}
    out = []
    for name, p in sorted(template["Parameters"].items()):
        if "Default" in p:
            out.append({"ParameterKey": name, "ParameterValue": p["Default"]})
        elif name in current:
            out.append({"ParameterKey": name, "UsePreviousValue": True})
    return out


def _wait_change_set(cfn, stack: str, name: str, poll: float, timeout: float) -> list[dict] | None:
    """The change set's resource changes once created; None when it has none."""
    deadline = time.monotonic() + timeout
    while True:
        described = cfn.describe_change_set(StackName=stack, ChangeSetName=name)
        status = _expect(cfn, described, "Status", str, "describe_change_set")
        if status == "CREATE_COMPLETE":
            changes = [c.get("ResourceChange") for c in described.get("Changes") or [] if isinstance(c, dict)]
            return [c for c in changes if isinstance(c, dict)] or None
        if status == "FAILED":
            reason = short(str(described.get("StatusReason") or ""))
            if "didn't contain changes" in reason or "No updates" in reason:
                return None
            raise UsageError(f"CloudFormation could not make the change set: {reason}")
        if time.monotonic() > deadline:
            raise UsageError(f"the change set {name} was not ready within {timeout:.0f}s, so it was not executed")
        time.sleep(poll)


def _wait_stack(cfn, stack: str, poll: float, timeout: float, since: int = 0, started: bool = True) -> tuple[str, str]:
    """(status, reason) once the stack settles: the reason is the first resource that failed
    after the first `since` events (the oldest ones), else the stack's own status reason. When
    the execution call failed (`started` false), a new stack still REVIEW_IN_PROGRESS is settled:
    nothing will move it."""
    deadline = time.monotonic() + timeout
    while True:
        current = _stack(cfn, stack, reviewed=True) or {"StackStatus": "DELETE_COMPLETE"}
        status = current["StackStatus"]
        settled = not status.endswith("_IN_PROGRESS") or (not started and status == "REVIEW_IN_PROGRESS")
        if settled or time.monotonic() > deadline:
            reason = _first_failure(_events(cfn, stack)[since:]) or current.get("StackStatusReason") or ""
            return status, reason if settled else f"still {status} after {timeout:.0f}s; {reason}".rstrip("; ")
        time.sleep(poll)


def _events(cfn, stack: str) -> list[dict]:
    """The stack's events, oldest first ([] when it has none or cannot be read)."""
    events, token = [], None
    try:
        while True:
            page = cfn.describe_stack_events(StackName=stack, **({"NextToken": token} if token else {}))
            events += [e for e in page.get("StackEvents") or [] if isinstance(e, dict)]
            token = page.get("NextToken")
            if not token:
                return events[::-1]
    except (ClientError, AwsUnavailable):
        return []


def _first_failure(events: list[dict]) -> str:
    for event in events:
        if event.get("ResourceStatus", "").endswith("_FAILED"):
            return f"{event['LogicalResourceId']}: {event.get('ResourceStatusReason') or event['ResourceStatus']}"
    return ""


def _verb(change: dict) -> str:
    action = change.get("Action", "Modify")
    if action == "Modify" and change.get("Replacement") == "True":
        return "replace"
    return {"Add": "add", "Modify": "modify", "Remove": "remove"}.get(action, action.lower())

