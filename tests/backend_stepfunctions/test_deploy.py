"""`dagsmith deploy --target stepfunctions` in moto's CloudFormation: dry run, create, unchanged,
update, and failed updates.

What moto's CloudFormation (5.2.5, moto/cloudformation/models.py) can and cannot do here:
- an UPDATE change set is "no changes" only when the template and the parameters are both equal
  (create_change_set); any change to the spec changes the definition (the IR's key has the spec
  hash), so an update is a real update, executed resource by resource;
- execute_change_set really FAILS when a resource's update raises (here: a replaced state machine
  whose role ARN moto's Step Functions refuses), but moto implements no rollback ("TODO: handle
  execution errors and implement rollback"): the error comes back from the call itself, the
  stack keeps its old status with no failure event, the resources already changed stay changed.
  test_failed_update_moto_does_not_roll_back runs that for real: deploy must not claim the
  previous version serves (exit 4, the stack's status and the error).
- CloudFormation's rollback (UPDATE_ROLLBACK_COMPLETE: the previous version keeps serving) is
  therefore INJECTED at the boto3 client boundary in test_failed_update_rolls_back: the
  cloudformation client's execute_change_set does what AWS does for an update that fails on a
  resource (status UPDATE_IN_PROGRESS -> UPDATE_ROLLBACK_IN_PROGRESS -> UPDATE_ROLLBACK_COMPLETE,
  a StateMachine UPDATE_FAILED event, the resources unchanged), everything else is moto's; the
  same for a rollback that fails (exit 4, and the next deploy refused until
  continue-update-rollback) and a failed creation (its empty stack deleted).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from dagsmith_testing import REPO, compile_path

PARAMS = {"ArtifactBucket": "deploy-bucket", "Subnets": "subnet-1", "SecurityGroups": "sg-1", "DefaultImage": "img:1"}


@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    from moto import mock_aws

    with mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="deploy-bucket")
        yield boto3


def deploy(ir, dry_run=False, **options):
    from dagsmith.backends import DeployRequest
    from dagsmith.backends.stepfunctions.backend import StepFunctionsBackend
    from dagsmith.backends.stepfunctions.deploy import deploy as run

    return run(StepFunctionsBackend(), ir, {"parameters": PARAMS, **options}, DeployRequest(dry_run=dry_run, stack_name="pipe", region="us-east-1"), poll=0.01)


def definition(boto3) -> dict:
    sfn = boto3.client("stepfunctions")
    (machine,) = sfn.list_state_machines()["stateMachines"]
    return json.loads(sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])["definition"])


def spec(folder: Path, *, retries: int | None = None, **stepfunctions) -> Path:
    """examples/minimal with its store in the test bucket (and `retries` for every step)."""
    text = (REPO / "examples" / "minimal" / "pipeline.yaml").read_text(encoding="utf-8")
    options = {"store": "s3://deploy-bucket/dagsmith", "parameters": {"Subnets": "subnet-1", "SecurityGroups": "sg-1"}, **stepfunctions}
    text = text.replace('stepfunctions: {store: "s3://acme-ml/dagsmith"}', "stepfunctions: " + json.dumps(options))
    if retries is not None:
        text = text.replace("defaults:\n", f"defaults:\n  retries: {retries}\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.yaml").write_text(text, encoding="utf-8")
    return folder / "pipeline.yaml"


def cli(capsys, path: Path, *args: str) -> tuple[int, str]:
    """`dagsmith deploy PATH --target stepfunctions --stack-name pipe --region us-east-1 ARGS`:
    (exit code, what it printed)."""
    from dagsmith.cli import main

    capsys.readouterr()
    code = main(["deploy", str(path), "--target", "stepfunctions", "--stack-name", "pipe", "--region", "us-east-1", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def retry_attempts(boto3) -> int:
    from conformance.backend_stepfunctions import all_states

    return all_states(definition(boto3))["Run_applicants"].get("Retry", [{"MaxAttempts": 0}])[0]["MaxAttempts"]


def test_dry_run_create_and_unchanged(aws, in_repo):
    ir = compile_path("examples/minimal/pipeline.yaml")
    dry = deploy(ir, dry_run=True)
    assert dry[0].startswith("dry run: stack pipe (create)") and any("would add StateMachine" in line for line in dry)
    assert aws.client("stepfunctions").list_state_machines()["stateMachines"] == []  # nothing changed

    created = deploy(ir)
    assert created[0] == "stack pipe: created" and any("add StateMachine" in line for line in created)
    assert "Run_train" in json.dumps(definition(aws))
    assert aws.client("s3").list_objects_v2(Bucket="deploy-bucket", Prefix="dagsmith/ir/")["KeyCount"] == 1

    assert deploy(ir) == ["stack pipe: unchanged"]


def test_update_through_the_command(aws, tmp_path, capsys):
    v1, v2 = spec(tmp_path / "v1", retries=1), spec(tmp_path / "v2", retries=3)
    code, said = cli(capsys, v1)
    assert code == 0 and "stack pipe: created" in said, said
    assert retry_attempts(aws) == 1

    code, said = cli(capsys, v2, "--dry-run")
    assert code == 0 and "dry run: stack pipe (update)" in said and "would modify StateMachine" in said, said
    assert retry_attempts(aws) == 1  # a dry run changes nothing

    code, said = cli(capsys, v2)
    assert code == 0 and "stack pipe: updated" in said and "modify StateMachine (AWS::StepFunctions::StateMachine)" in said, said
    assert retry_attempts(aws) == 3  # the new definition serves
    stack = aws.client("cloudformation").describe_stacks(StackName="pipe")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    # both versions' IRs stay in the store: an execution started before the update reads its own
    keys = [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket="deploy-bucket", Prefix="dagsmith/ir/")["Contents"]]
    assert len(keys) == 2 and any(key.split("/")[-1] in json.dumps(definition(aws)) for key in keys)

    code, said = cli(capsys, v2)
    assert code == 0 and "stack pipe: unchanged" in said, said


def test_failed_update_moto_does_not_roll_back(aws, tmp_path, capsys):
    """A failure moto really produces (see the module): deploy says the update failed and that
    the stack was NOT rolled back, never that the previous version serves."""
    code, said = cli(capsys, spec(tmp_path / "v1"))
    assert code == 0, said
    # a new state machine name replaces the machine; moto's Step Functions refuses the role ARN
    code, said = cli(capsys, spec(tmp_path / "v2", state_machine_name="minimal-v2", role_arn="arn:aws:iam::1:role/not-an-account"))
    assert code == 4, said
    assert "stack pipe: the update failed" in said and "Invalid Role Arn" in said, said
    assert "no rollback recorded" in said and "previous version keeps serving" not in said, said
    assert "internal error" not in said and "Traceback" not in said


class Failure:
    """The stack as CloudFormation reports it once a change set's resource failed: the statuses it
    goes through, ending in `final`, and the failing resource's event."""

    def __init__(self, final: str):
        self.final, self.calls, self.failed_at, self.kind, self.deleted = final, 0, None, None, False

    def sequence(self) -> list[str]:
        if self.kind == "CREATE":
            return ["CREATE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE"]
        return ["UPDATE_IN_PROGRESS", "UPDATE_ROLLBACK_IN_PROGRESS", self.final]


class RollingBack:
    """The cloudformation client, except execute_change_set: what AWS does when a resource of the
    change set fails (see the module), told by `failure`. Everything else is moto's."""

    def __init__(self, client, failure: Failure):
        self.client, self.failure = client, failure

    def __getattr__(self, name):
        return getattr(self.client, name)

    def execute_change_set(self, **kwargs):
        change_set = self.client.describe_change_set(**kwargs)
        assert change_set["ExecutionStatus"] == "AVAILABLE"
        status = self.client.describe_stacks(StackName=kwargs["StackName"])["Stacks"][0]["StackStatus"]
        self.failure.kind = "CREATE" if status == "REVIEW_IN_PROGRESS" else "UPDATE"
        self.failure.failed_at = dt.datetime.now(dt.timezone.utc)
        return {}  # the resources are not touched: what the rollback leaves

    def describe_stacks(self, **kwargs):
        got = self.client.describe_stacks(**kwargs)
        failure = self.failure
        if failure.failed_at is not None and not failure.deleted:
            statuses = failure.sequence()
            got["Stacks"][0]["StackStatus"] = statuses[min(failure.calls, len(statuses) - 1)]
            failure.calls += 1
        return got

    def describe_stack_events(self, **kwargs):
        got = self.client.describe_stack_events(**kwargs)
        failure = self.failure
        if failure.failed_at is not None:
            failed = {"StackName": kwargs["StackName"], "LogicalResourceId": "StateMachine", "ResourceType": "AWS::StepFunctions::StateMachine",
                      "ResourceStatus": f"{failure.kind}_FAILED", "Timestamp": failure.failed_at,
                      "ResourceStatusReason": "Invalid State Machine Definition: 'SCHEMA_VALIDATION_FAILED'"}
            got["StackEvents"] = [{**failed, "LogicalResourceId": kwargs["StackName"], "ResourceStatus": failure.sequence()[-1],
                                   "ResourceType": "AWS::CloudFormation::Stack", "ResourceStatusReason": None}, failed] + got["StackEvents"]
        return got

    def delete_stack(self, **kwargs):
        self.failure.deleted = True
        return self.client.delete_stack(**kwargs)


@pytest.fixture
def injected(aws, monkeypatch):
    """install(final) -> the Failure every cloudformation client made from then on reports
    (RollingBack); remove() puts the plain clients back."""
    import boto3.session

    original = boto3.session.Session.client

    class Injection:
        def install(self, final: str) -> Failure:
            failure = Failure(final)

            def client(session, service, *args, **kwargs):
                real = original(session, service, *args, **kwargs)
                return RollingBack(real, failure) if service == "cloudformation" else real

            monkeypatch.setattr(boto3.session.Session, "client", client)
            return failure

        def remove(self):
            monkeypatch.setattr(boto3.session.Session, "client", original)

    yield Injection()
    monkeypatch.setattr(boto3.session.Session, "client", original)


@pytest.mark.parametrize("final, code, says", [
    ("UPDATE_ROLLBACK_COMPLETE", 1, "CloudFormation rolled it back (UPDATE_ROLLBACK_COMPLETE): the previous version keeps serving"),
    ("UPDATE_ROLLBACK_FAILED", 4, "the stack is UPDATE_ROLLBACK_FAILED, not rolled back"),
])
def test_failed_update_rolls_back(aws, injected, tmp_path, capsys, final, code, says):
    """CloudFormation's rollback, injected at the boto3 client boundary (moto has none)."""
    v1, v2 = spec(tmp_path / "v1", retries=1), spec(tmp_path / "v2", retries=3)
    assert cli(capsys, v1)[0] == 0
    before = definition(aws)

    failure = injected.install(final)
    got, said = cli(capsys, v2)
    assert failure.kind == "UPDATE"  # the change set was really made, from v2, and executed
    assert got == code, said
    assert "stack pipe: the update failed (StateMachine: Invalid State Machine Definition: 'SCHEMA_VALIDATION_FAILED')" in said, said
    assert says in said, said
    assert definition(aws) == before and retry_attempts(aws) == 1  # the previous version serves

    if final == "UPDATE_ROLLBACK_COMPLETE":
        injected.remove()  # the cause fixed: the next deploy updates
        got, said = cli(capsys, v2)
        assert got == 0 and "stack pipe: updated" in said, said
        assert retry_attempts(aws) == 3
    else:  # the stack needs a person: the next deploy changes nothing and says what to do
        got, said = cli(capsys, v2)
        assert got == 2 and "continue-update-rollback" in said, said
        assert definition(aws) == before


def test_failed_create_is_rolled_back_and_removed(aws, injected, tmp_path, capsys):
    failure = injected.install("UPDATE_ROLLBACK_COMPLETE")
    got, said = cli(capsys, spec(tmp_path / "v1"))
    assert failure.kind == "CREATE" and failure.deleted
    assert got == 1 and "stack pipe: creation failed (StateMachine: Invalid State Machine Definition" in said, said
    assert "the empty stack was deleted: nothing is deployed" in said, said
    stacks = [s for s in aws.client("cloudformation").list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    assert stacks == [] and aws.client("stepfunctions").list_state_machines()["stateMachines"] == []


def test_deploy_refuses_other_flags(aws, in_repo):
    from dagsmith.backends import DeployRequest
    from dagsmith.backends.stepfunctions.backend import StepFunctionsBackend
    from dagsmith.errors import UsageError

    ir = compile_path("examples/minimal/pipeline.yaml")
    with pytest.raises(UsageError, match="--dags-folder"):
        StepFunctionsBackend().deploy(ir, {}, DeployRequest(dags_folder="x"))
    with pytest.raises(UsageError, match="have no value"):
        StepFunctionsBackend().deploy(ir, {}, DeployRequest(stack_name="p", region="us-east-1"))


# --- AWS out of reach, stalled or answering what is not AWS (issue 22: 4) ------------------------

from misbehaving import Canned, Trickle, closed_port  # noqa: E402

ENDPOINTS = {  # name -> a server standing at AWS_ENDPOINT_URL (None: a port where nothing listens)
    "unreachable": lambda: None,
    "stalled": lambda: Trickle(interval=None),
    "trickling": lambda: Trickle(interval=0.2),
    "an HTML login page": lambda: Canned(200),
    "an HTML 403": lambda: Canned(403),
    "JSON garbage": lambda: Canned(200, "application/json", b'{"Stacks": "no"}'),
    "a gateway error": lambda: Canned(502, "text/html", b"<html>502 Bad Gateway</html>"),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_aws_out_of_reach_or_not_aws_is_a_clean_refusal(tmp_path, capsys, monkeypatch, endpoint):
    """No moto here: botocore talks to a local server that misbehaves (or to nothing). Exit 2,
    "nothing changed", within about the request deadline (1 s here): never an internal error."""
    for key, value in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "t", "DAGSMITH_REQUEST_TIMEOUT": "1"}.items():
        monkeypatch.setenv(key, value)
    server = ENDPOINTS[endpoint]()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url if server else closed_port())
    try:
        started = time.monotonic()
        code, said = cli(capsys, spec(tmp_path / "v1"), *(["--dry-run"] if endpoint in ("stalled", "an HTML 403") else []))
        elapsed = time.monotonic() - started
    finally:
        if server:
            server.close()
    assert code == 2, said
    assert "stack pipe" in said and "nothing changed" in said, said
    assert "internal error" not in said and "KeyError" not in said and "Traceback" not in said, said
    assert elapsed < 6, elapsed


class LosesAws:
    """The cloudformation client (moto's), except that AWS is out of reach once the change set
    has been sent for execution."""

    def __init__(self, client):
        self.client, self.executed = client, False

    def __getattr__(self, name):
        method = getattr(self.client, name)
        if not self.executed or name == "meta":
            return method

        def unreachable(**kwargs):
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="https://cloudformation.us-east-1.amazonaws.com/")
        return unreachable

    def execute_change_set(self, **kwargs):
        self.executed = True
        return self.client.execute_change_set(**kwargs)


def test_aws_lost_after_the_execution_is_left_for_a_person(aws, tmp_path, capsys, monkeypatch):
    """Whether the change set ran is not known: exit 4 with what to look at, not "internal error"."""
    import boto3.session

    original = boto3.session.Session.client
    monkeypatch.setattr(boto3.session.Session, "client", lambda session, service, *a, **k: (
        LosesAws(original(session, service, *a, **k)) if service == "cloudformation" else original(session, service, *a, **k)))
    code, said = cli(capsys, spec(tmp_path / "v1"))
    assert code == 4, said
    assert "was sent for execution, then AWS could not be asked how it went" in said and "internal error" not in said, said
