"""`dagsmith deploy --target stepfunctions`: the template through a CloudFormation change set.

1. compile (every problem reported before anything changes) and upload the IR to the store,
   under a name of its spec's hash (the running version keeps reading its own);
2. create a change set (CREATE for a new stack, UPDATE otherwise) and wait for it; no changes
   -> "unchanged"; --dry-run -> print the changes, delete the change set, change nothing;
3. execute it and wait. A failed update is rolled back by CloudFormation: the previous version
   keeps serving, and the command says so (exit 2) with the failing resource's reason.
"""

from __future__ import annotations

import time
import uuid

from ..errors import UsageError

CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
TEMPLATE_BODY_LIMIT = 51_200  # larger templates go through S3 (TemplateURL)
DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
ROLLED_BACK = {"UPDATE_ROLLBACK_COMPLETE", "ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED", "ROLLBACK_FAILED", "CREATE_FAILED", "UPDATE_FAILED"}


def deploy(backend, ir, options: dict, request, *, poll: float = 2.0, timeout: float = 3600.0) -> list[str]:
    request.refuse_others("stepfunctions", ("stack_name", "region"))
    try:
        import boto3
    except ImportError:
        raise UsageError("deploying to Step Functions needs boto3: pip install 'dagsmith[aws]'") from None
    from botocore.exceptions import ClientError

    plan, definition, template = backend.build(ir, options)
    body = backend.template_text(template)
    stack = request.stack_name or backend.machine_name(ir, options)
    region = request.region or options.get("region")
    session = boto3.session.Session(region_name=region) if region else boto3.session.Session()
    cfn = session.client("cloudformation")
    existing = _stack(cfn, stack)
    if existing and existing["StackStatus"] in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"):
        raise UsageError(f"stack {stack} is {existing['StackStatus']} (its creation failed): delete it, then deploy again")
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
    s3 = session.client("s3")
    if len(body.encode("utf-8")) > TEMPLATE_BODY_LIMIT:
        key = "/".join(p for p in (prefix.strip("/"), "templates", f"{stack}-{(ir.pipeline.get('spec_hash') or '')[:12]}.template.yaml") if p)
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"))  # read from S3, also for a dry run
        args["TemplateURL"] = f"https://{bucket}.s3.amazonaws.com/{key}"
    else:
        args["TemplateBody"] = body
    try:
        cfn.create_change_set(**args)
        changes = _wait_change_set(cfn, stack, name, poll, timeout)
    except ClientError as exc:
        if "No updates are to be performed" in str(exc):
            return [f"stack {stack}: unchanged"]
        raise UsageError(f"CloudFormation refused the template, nothing changed: {exc.response['Error'].get('Message', exc)}") from None
    if changes is None:
        cfn.delete_change_set(StackName=stack, ChangeSetName=name)
        return [f"stack {stack}: unchanged"]
    lines = [f"{'would ' if request.dry_run else ''}{_verb(c)} {c['LogicalResourceId']} ({c['ResourceType']})" for c in changes]
    if request.dry_run:
        cfn.delete_change_set(StackName=stack, ChangeSetName=name)
        if kind == "CREATE":  # a CREATE change set leaves an empty REVIEW_IN_PROGRESS stack behind
            try:
                cfn.delete_stack(StackName=stack)
            except ClientError:
                pass
        return [f"dry run: stack {stack} ({kind.lower()}), change set:"] + ["  " + line for line in lines]
    s3.put_object(Bucket=bucket, Key=ir_key, Body=ir.dumps().encode("utf-8"))
    try:
        cfn.execute_change_set(StackName=stack, ChangeSetName=name)
        status, reason = _wait_stack(cfn, stack, poll, timeout)
    except ClientError as exc:
        status, reason = "UPDATE_FAILED" if existing else "CREATE_FAILED", exc.response["Error"].get("Message", str(exc))
    if status not in DONE:
        if existing:
            raise UsageError(f"stack {stack}: the update failed ({reason}); CloudFormation rolls it back, so the previous "
                             "version keeps serving")
        raise UsageError(f"stack {stack}: creation failed ({reason}); delete the stack, fix the cause, deploy again")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (_stack(cfn, stack) or {}).get("Outputs", [])}
    done = [f"stack {stack}: {'updated' if existing else 'created'}"] + ["  " + line for line in lines]
    done.append(f"  IR: s3://{bucket}/{ir_key}")
    if outputs.get("StateMachineArn"):
        done.append(f"  state machine: {outputs['StateMachineArn']}")
    return done


def _stack(cfn, name: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError:
        return None
    stack = stacks[0] if stacks else None
    if stack is None or stack["StackStatus"] in ("DELETE_COMPLETE", "REVIEW_IN_PROGRESS"):
        return None
    return stack


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
        status = described["Status"]
        if status == "CREATE_COMPLETE":
            return [c["ResourceChange"] for c in described.get("Changes", []) if "ResourceChange" in c] or None
        if status == "FAILED":
            reason = described.get("StatusReason", "")
            if "didn't contain changes" in reason or "No updates" in reason:
                return None
            raise UsageError(f"CloudFormation could not make the change set, nothing changed: {reason}")
        if time.monotonic() > deadline:
            raise UsageError(f"the change set {name} was not ready within {timeout:.0f}s; nothing was executed")
        time.sleep(poll)


def _wait_stack(cfn, stack: str, poll: float, timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        current = _stack(cfn, stack) or {"StackStatus": "DELETE_COMPLETE"}
        status = current["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            return status, current.get("StackStatusReason") or _first_failure(cfn, stack)
        if time.monotonic() > deadline:
            return status, f"still {status} after {timeout:.0f}s"
        time.sleep(poll)


def _first_failure(cfn, stack: str) -> str:
    try:
        for event in cfn.describe_stack_events(StackName=stack)["StackEvents"]:
            if event.get("ResourceStatus", "").endswith("_FAILED"):
                return f"{event['LogicalResourceId']}: {event.get('ResourceStatusReason', '')}"
    except Exception:
        pass
    return ""


def _verb(change: dict) -> str:
    action = change.get("Action", "Modify")
    if action == "Modify" and change.get("Replacement") == "True":
        return "replace"
    return {"Add": "add", "Modify": "modify", "Remove": "remove"}.get(action, action.lower())

