"""`dagsmith deploy --target stepfunctions` in moto: dry run, create, unchanged. (Update and
failed update are not covered yet: moto 5.2.5 answered "No updates are to be performed" to a
change set whose template changed only in parameter defaults.)"""

from __future__ import annotations

import json
import os

import pytest

from dagsmith_testing import compile_path

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
    from dagsmith.backends.stepfunctions import StepFunctionsBackend
    from dagsmith.backends.stepfunctions_deploy import deploy as run

    return run(StepFunctionsBackend(), ir, {"parameters": PARAMS, **options}, DeployRequest(dry_run=dry_run, stack_name="pipe", region="us-east-1"), poll=0.01)


def definition(boto3) -> dict:
    sfn = boto3.client("stepfunctions")
    (machine,) = sfn.list_state_machines()["stateMachines"]
    return json.loads(sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])["definition"])


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



def test_deploy_refuses_other_flags(aws, in_repo):
    from dagsmith.backends import DeployRequest
    from dagsmith.backends.stepfunctions import StepFunctionsBackend
    from dagsmith.errors import UsageError

    ir = compile_path("examples/minimal/pipeline.yaml")
    with pytest.raises(UsageError, match="--dags-folder"):
        StepFunctionsBackend().deploy(ir, {}, DeployRequest(dags_folder="x"))
    with pytest.raises(UsageError, match="have no value"):
        StepFunctionsBackend().deploy(ir, {}, DeployRequest(stack_name="p", region="us-east-1"))
